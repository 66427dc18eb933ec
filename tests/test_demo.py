"""Demo: boxes, crops, the full-image camera, and the end-to-end script."""
import json
import os

import numpy as np
import pytest

from spin_jax import crops
from spin_jax import inference


def test_box_from_xywh_and_flag():
  box = crops.box_from_xywh((10, 20, 100, 50), rescale=1.2)
  assert box.center == (60.0, 45.0)
  assert box.side == pytest.approx(120.0)
  boxes = crops.parse_bbox_flag('10,20,100,50; 0,0,4,8')
  assert len(boxes) == 2 and boxes[1].center == (2.0, 4.0)
  with pytest.raises(ValueError, match='x,y,w,h'):
    crops.parse_bbox_flag('1,2,3')
  with pytest.raises(ValueError, match='numbers'):
    crops.parse_bbox_flag('a,b,c,d')


def test_boxes_from_openpose(tmp_path):
  kp1 = np.zeros((25, 3))
  kp1[:3] = [[10, 20, 0.9], [50, 100, 0.8], [30, 60, 0.1]]  # 3rd below 0.2
  kp2 = np.zeros((25, 3))
  kp2[0] = [5, 5, 0.9]  # one keypoint only: skipped
  path = tmp_path / 'op.json'
  path.write_text(json.dumps({'people': [
      {'pose_keypoints_2d': kp1.ravel().tolist()},
      {'pose_keypoints_2d': kp2.ravel().tolist()}]}))
  boxes, kps = crops.boxes_from_openpose(str(path))
  assert len(boxes) == 1 and kps[0].shape == (25, 3)
  assert boxes[0].center == (30.0, 60.0)
  assert boxes[0].side == pytest.approx(80 * 1.2)
  path.write_text('{"people": 3}')
  with pytest.raises(ValueError, match='people'):
    crops.boxes_from_openpose(str(path))
  with pytest.raises(FileNotFoundError, match='missing.json'):
    crops.boxes_from_openpose(str(tmp_path / 'missing.json'))


def test_crop_maps_box_centre_to_crop_centre():
  img = np.zeros((100, 200, 3), np.uint8)
  img[40, 150] = 255  # a dot at (x=150, y=40)
  box = crops.Box((150.0, 40.0), 0.32)  # side 64 px
  c = crops.crop(img, box, 64)  # k = 1: no resampling
  assert c.shape == (64, 64, 3)
  assert tuple(np.argwhere(c[..., 0] == 255)[0]) == (32, 32)
  m = crops.crop_matrix(box, 224)
  np.testing.assert_allclose(m @ [150.0, 40.0, 1.0], [112.0, 112.0])


def _project(points, f, c, t):
  p = points + t
  return f * p[:, :2] / p[:, 2:3] + c


def test_full_image_camera_matches_the_crop_camera():
  rng = np.random.default_rng(0)
  pts = rng.normal(scale=0.3, size=(50, 3))  # a body-sized point cloud
  box = crops.Box((400.0, 150.0), 1.5)  # side 300 px, off-centre
  shape = (480, 640)
  cam = np.array([[0.9, 0.05, -0.1]])
  full = inference.full_image_camera(cam, [box], shape)
  k = 224.0 / box.side
  # The crop camera's projection, mapped back to original pixels.
  t_crop = full['crop_translation'][0]
  uv_crop = _project(pts, 5000.0, 112.0, t_crop)
  uv_orig = (uv_crop - 112.0) / k + np.array(box.center)
  uv_full = _project(pts, full['focal_length'][0], full['camera_center'],
                     full['translation'][0])
  np.testing.assert_allclose(full['focal_length'], [5000.0 * 300 / 224])
  np.testing.assert_allclose(full['camera_center'], [320.0, 240.0])
  np.testing.assert_allclose(t_crop[2], 2 * 5000 / (224 * 0.9))
  # The body origin projects exactly where the crop camera puts it ...
  np.testing.assert_allclose(
      _project(np.zeros((1, 3)), full['focal_length'][0],
               full['camera_center'], full['translation'][0]),
      ((_project(np.zeros((1, 3)), 5000.0, 112.0, t_crop) - 112.0) / k
       + np.array(box.center)), atol=1e-9)
  # ... and the rest within a small fraction of the box size.
  assert np.max(np.abs(uv_full - uv_orig)) < 0.01 * box.side


ASSET_IMAGE = os.path.join(os.path.dirname(inference.__file__), 'assets',
                           'demo.png')


@pytest.fixture(scope='module')
def converted_checkpoint(tmp_path_factory):
  from spin_jax import convert, models
  # The saved config (conversion.json) rebuilds this small head and input.
  cfg = models.ModelConfig(backbone='resnet18', img_res=32, hidden_dim=32)
  model = models.create_model(cfg, seed=0)
  path = str(tmp_path_factory.mktemp('ckpt') / 'converted')
  convert.save_converted(path, model, source='test')
  return path


def test_demo_on_two_people_with_a_converted_checkpoint(converted_checkpoint,
                                                        tmp_path):
  import trimesh
  loaded = inference.load_model(converted_checkpoint, body_model='default-low')
  assert loaded.kind == 'converted' and loaded.model.config.img_res == 32
  predictor = inference.Predictor(loaded.model, loaded.body_model)
  image = crops.read_image(ASSET_IMAGE)
  h, w = image.shape[:2]
  boxes = crops.parse_bbox_flag('20,30,100,200;120,40,100,220')
  out = inference.run_on_image(predictor, image, boxes, str(tmp_path), 'demo')
  names = sorted(os.listdir(tmp_path))
  assert names == ['demo_overlay.png', 'demo_params.npz', 'demo_person0.obj',
                   'demo_person1.obj', 'demo_side.png']
  params = np.load(tmp_path / 'demo_params.npz')
  nv = loaded.body_model.num_vertices
  for key, shape in dict(pose=(2, 72), rotmat=(2, 24, 3, 3), betas=(2, 10),
                         crop_cam=(2, 3), cam_t=(2, 3), focal_length=(2,),
                         camera_center=(2,), box_center=(2, 2),
                         joints=(2, 49, 3), vertices=(2, nv, 3)).items():
    assert params[key].shape == shape, key
  np.testing.assert_allclose(params['camera_center'], [w / 2, h / 2])
  # The obj is the mesh in the full image's camera frame.
  mesh = trimesh.load(str(tmp_path / 'demo_person1.obj'), process=False)
  np.testing.assert_allclose(mesh.vertices,
                             params['vertices'][1] + params['cam_t'][1],
                             atol=1e-5)
  assert len(mesh.faces) == len(loaded.body_model.faces)
  # The person's pelvis (joint 8 of 49) lands inside its box in the image.
  for i, box in enumerate(boxes):
    p = params['joints'][i, 8] + params['cam_t'][i]
    uv = params['focal_length'][i] * p[:2] / p[2] + params['camera_center']
    assert np.all(np.abs(uv - box.center) < box.side / 2), (i, uv)
  overlay = crops.read_image(str(tmp_path / 'demo_overlay.png'))
  assert overlay.shape == image.shape and np.any(overlay != image)
  assert out['files'][0].endswith('demo_overlay.png')
  # No box: the whole image.
  out = inference.run_on_image(
      predictor, image, [crops.whole_image_box(image.shape)],
      str(tmp_path / 'whole'), 'demo', render=False)
  assert out['cam_t'].shape == (1, 3)
  with pytest.raises(FileNotFoundError, match='not a directory'):
    inference.load_model(str(tmp_path / 'missing'))
