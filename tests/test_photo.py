"""Photo -> 3D body: SMPLify on detected keypoints, video, the images dataset,
and demo.py / fit.py end to end on a real photo."""
import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from spin_jax import constants
from spin_jax import crops
from spin_jax import detector as detector_lib
from spin_jax import inference
from spin_jax import keypoints
from spin_jax import photo
from spin_jax import priors
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax import video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASTRONAUT = os.path.join(detector_lib.ASSETS_DIR, 'astronaut.jpg')


@pytest.fixture(scope='module')
def detector():
  return detector_lib.PoseDetector()


@pytest.fixture(scope='module')
def astronaut():
  return crops.read_image(ASTRONAUT)


@pytest.fixture(scope='module')
def body():
  return smpl_io.resolve_body_model('default-low')


@pytest.fixture(scope='module')
def prior():
  return priors.default_pose_prior()


@pytest.fixture(scope='module')
def astronaut_fit(detector, astronaut, body, prior):
  return photo.reconstruct(astronaut, body, prior, detector=detector)


def _reprojection_px(joints, cam_t, focal, center, kp):
  """Mean image-pixel distance of the fitted joints to the confident keypoints
  (SMPLify's ignored joints left out), by a plain pinhole projection."""
  p = joints + cam_t
  uv = focal * p[:, :2] / p[:, 2:] + center
  ok = kp[:, 2] > photo.KEYPOINT_THRESHOLD
  ok[list(constants.SMPLIFY_IGNORED_JOINT_IDS)] = False
  return float(np.linalg.norm(uv[ok] - kp[ok, :2], axis=-1).mean()), int(ok.sum())


def test_smplify_fits_the_detected_keypoints(astronaut_fit, body):
  rec = astronaut_fit
  assert rec.num_people == 1 and rec.fitted
  assert rec.init_source[0] in ('mean', 'mean_back') and rec.improved[0]
  cam = rec.camera
  err, n = _reprojection_px(rec.joints[0], cam['translation'][0],
                            cam['focal_length'][0], cam['camera_center'],
                            rec.keypoints[0])
  side = rec.boxes[0].side
  assert n >= 10  # face, shoulders, elbows, wrists, mid-hip
  # A few percent of the person's box (about 500 px): 2.5% = 12 px.
  assert err < 0.025 * side, (err, side)
  # The start (mean pose, least-squares camera) was far worse: the fit did it.
  start = photo.mean_init(body, photo.people_boxes(rec.keypoints)[1])
  box = rec.boxes[0]
  k = box.side / constants.IMG_RES
  t0 = np.asarray(start.camera_translation[0], np.float64)
  joints0 = np.asarray(smpl.joints_forward(
      body, start.betas[:1], start.body_pose[:1], start.global_orient[:1]))[0]
  # Crop camera -> image pixels: u = k (f X / Z + 112 - 112) + box centre.
  uv0 = (constants.FOCAL_LENGTH * (joints0 + t0)[:, :2] / (joints0 + t0)[:, 2:]) * k
  uv0 += np.asarray(box.center)
  ok = rec.keypoints[0, :, 2] > photo.KEYPOINT_THRESHOLD
  ok[list(constants.SMPLIFY_IGNORED_JOINT_IDS)] = False
  err0 = np.linalg.norm(uv0[ok] - rec.keypoints[0, ok, :2], axis=-1).mean()
  assert err0 > 2 * err, (err0, err)
  # The body is in front of the camera, its pelvis inside the picture's width.
  assert cam['translation'][0, 2] > 1.0


def test_no_person_raises_a_clear_error(detector, body, prior):
  noise = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
  with pytest.raises(photo.NoPersonError, match='noise.png: no person found'):
    photo.reconstruct(noise, body, prior, detector=detector, name='noise.png')
  few = np.zeros((1, 49, 3), np.float32)
  few[0, :3] = [[10, 10, 1], [20, 20, 1], [30, 30, 1]]
  with pytest.raises(photo.NoPersonError, match='1 detection.*at least 4'):
    photo.reconstruct(noise, body, prior, keypoints=few)


def test_write_outputs(astronaut_fit, astronaut, body, tmp_path):
  files = photo.write_outputs(astronaut_fit, astronaut, str(tmp_path), 'a',
                              body.faces)
  names = sorted(os.listdir(tmp_path))
  assert names == ['a_keypoints.png', 'a_overlay.png', 'a_params.npz',
                   'a_person0.obj', 'a_side.png']
  assert len(files) == 5
  p = np.load(tmp_path / 'a_params.npz')
  assert p['keypoints'].shape == (1, 49, 3) and p['pose'].shape == (1, 72)
  assert p['vertices'].shape == (1, body.num_vertices, 3)
  np.testing.assert_allclose(p['camera_center'], [256, 256])
  # The overlay differs from the photo where the body is, not in the corner.
  overlay = crops.read_image(str(tmp_path / 'a_overlay.png'))
  diff = np.any(overlay != astronaut, -1)
  assert diff[200:400, 150:300].mean() > 0.5 and not diff[:40, :40].any()


def test_tracks_and_smoothing():
  box = lambda x: crops.Box((x, 100.0), 0.5)
  frames = [[box(100), box(400)], [box(405), box(102)], [], [box(110)]]
  ids = video.assign_tracks(frames)
  assert [list(i) for i in ids] == [[0, 1], [1, 0], [], [0]]
  rng = np.random.default_rng(0)
  t = np.array([0, 1, 2, 3, 5, 6])
  pose = np.zeros((6, 72))
  pose[:, 0] = np.pi / 2 + rng.normal(0, 0.05, 6)
  trans = np.array([0.0, 0, 5]) + rng.normal(0, 0.1, (6, 3))
  betas = rng.normal(0, 1, (6, 10))
  sp, sb, st = video.smooth_track(t, pose, betas, trans, sigma=2.0)
  assert np.std(sp[:, 0]) < np.std(pose[:, 0])
  assert np.all(np.std(st, 0) < np.std(trans, 0))
  np.testing.assert_allclose(sp[:, 1:3], 0, atol=1e-5)  # same axis kept
  np.testing.assert_allclose(sb.mean(0), betas.mean(0), atol=0.3)
  same = video.smooth_track(t, pose, betas, trans, sigma=0.0)
  assert same[0] is pose


def test_video_with_smoothing(astronaut, body, prior, detector, tmp_path):
  path = str(tmp_path / 'clip.mp4')
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), 10, (256, 256))
  for t in range(5):
    m = np.float32([[0.45, 0, 10 + 6 * t], [0, 0.45, 20]])
    writer.write(cv2.warpAffine(astronaut[..., ::-1], m, (256, 256)))
  writer.release()
  fn = lambda image, name: photo.reconstruct(image, body, prior, detector=detector,
                                             name=name)
  out = video.process_video(path, str(tmp_path / 'out'), fn, body.faces, body,
                            smooth_sigma=1.0, progress=False)
  assert out['frames'] == 5 and out['frames_with_people'] == 5
  assert out['tracks'] == 1
  names = sorted(os.listdir(tmp_path / 'out'))
  assert names == [f'clip_frame{t:06d}_params.npz' for t in range(5)] + [
      'clip_overlay.mp4']
  cap = cv2.VideoCapture(str(tmp_path / 'out' / 'clip_overlay.mp4'))
  assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
  p = [np.load(tmp_path / 'out' / f'clip_frame{t:06d}_params.npz') for t in range(5)]
  assert all(q['track_id'].tolist() == [0] for q in p)
  # The person moves 6 px a frame to the right: so does the keypoint nose.
  nose = np.array([q['keypoints'][0, 0, 0] for q in p])
  np.testing.assert_allclose(np.diff(nose), 6.0, atol=2.5)
  # One focal length per track once smoothed; depth jitter reduced.
  f = np.array([q['smoothed_focal_length'][0] for q in p])
  np.testing.assert_allclose(f, f[0])
  raw_z = np.array([q['cam_t'][0, 2] * f[0] / q['focal_length'][0] for q in p])
  smooth_z = np.array([q['smoothed_cam_t'][0, 2] for q in p])
  assert np.std(smooth_z) <= np.std(raw_z) + 1e-9


def test_images_dataset_build(tmp_path, astronaut, detector):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from spin_jax import datasets  # pylint: disable=g-import-not-at-top
  from spin_jax.datasets import builders, images  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()
  folder = tmp_path / 'photos'
  folder.mkdir()
  cv2.imwrite(str(folder / 'a.jpg'), astronaut[..., ::-1])
  cv2.imwrite(str(folder / 'b_two.png'),
              np.concatenate([astronaut, astronaut[:, ::-1]], 1)[..., ::-1])
  cv2.imwrite(str(folder / 'c_nobody.png'), np.full((64, 64, 3), 127, np.uint8))
  (folder / 'notes.txt').write_text('not an image')
  data_dir = str(tmp_path / 'tfds')
  source = functools.partial(images.read_images, str(folder), detector,
                             progress=False)
  builders.prepare('images', data_dir, source=source, progress=False)
  src = datasets.data_source('images', data_dir)
  assert len(src) == 3
  names = [src[i]['imgname'].decode() for i in range(3)]
  assert names == ['a.jpg', 'b_two.png', 'b_two.png#1']
  ex = src[0]
  assert ex['has_smpl'] == 0 and ex['has_pose_3d'] == 0
  j = {n: i for i, n in enumerate(constants.GT_JOINT_NAMES)}
  for name in ('Right Shoulder', 'Left Shoulder', 'Nose'):
    assert ex['part'][j[name], 2] > 0.5, name
  for name in ('Right Ankle', 'Top of Head (LSP)', 'Pelvis (MPII)'):
    assert ex['part'][j[name], 2] == 0, name
  # The stored keypoints are in crop pixels: both shoulders inside the crop,
  # the person's right one on the crop's left.
  size = ex['image'].shape[0]
  rs, ls = ex['part'][j['Right Shoulder'], :2], ex['part'][j['Left Shoulder'], :2]
  assert 0 < rs[0] < ls[0] < size
  assert ex['openpose'][1, 2] > 0.5  # OP Neck
  table = np.load(datasets.fits_table_path('images', data_dir))
  assert table.shape == (3, 82)


def _run(script, *args, cache):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', script), *args,
       f'--compilation_cache={cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp('jax_cache'))


def test_demo_cli_on_a_real_photo(tmp_path, cache):
  out = tmp_path / 'out'
  r = _run('demo.py', f'--img={ASTRONAUT}', f'--out={out}',
           '--body_model=default-low', cache=cache)
  assert r.returncode == 0, r.stderr[-3000:]
  names = sorted(os.listdir(out))
  assert names == ['astronaut_keypoints.json', 'astronaut_keypoints.png',
                   'astronaut_overlay.png', 'astronaut_params.npz',
                   'astronaut_person0.obj', 'astronaut_side.png']
  summary = json.loads(r.stdout.strip().splitlines()[-1])
  assert summary['people'] == 1 and len(summary['files']) == 6
  p = np.load(out / 'astronaut_params.npz')
  assert p['keypoints'].shape == (1, 49, 3) and p['fitted']
  kp, fmt = keypoints.read_keypoints_file(str(out / 'astronaut_keypoints.json'))
  np.testing.assert_allclose(kp, p['keypoints'], atol=1e-3)
  # fit.py on the detector's file (COCO and OpenPose readers: test_keypoints).
  r = _run('fit.py', f'--keypoints={out / "astronaut_keypoints.json"}',
           f'--img={ASTRONAUT}', f'--out={tmp_path / "fit"}', '--mode=fast',
           '--body_model=default-low', cache=cache)
  assert r.returncode == 0, r.stderr[-3000:]
  f = np.load(tmp_path / 'fit' / 'astronaut_keypoints_params.npz')
  assert str(f['keypoints_format']) == keypoints.DETECTOR_NAME
  assert f['loss'][0] < 10 and f['valid'][0]


def test_demo_cli_no_person(tmp_path, cache):
  img = tmp_path / 'empty_room.png'
  cv2.imwrite(str(img), np.full((200, 300, 3), 180, np.uint8))
  out = tmp_path / 'out'
  r = _run('demo.py', f'--img={img}', f'--out={out}', '--body_model=default-low',
           cache=cache)
  assert r.returncode == 3, r.stderr[-2000:]
  assert 'no person found' in r.stderr and 'Traceback' not in r.stderr
  assert not out.exists() or not os.listdir(out)
  r = _run('demo.py', f'--img={tmp_path / "missing.jpg"}', f'--out={out}',
           cache=cache)
  assert r.returncode != 0 and 'missing.jpg' in r.stderr


def test_refine_from_a_regressor(astronaut, body, prior, detector, tmp_path):
  from spin_jax import convert, models  # pylint: disable=g-import-not-at-top
  cfg = models.ModelConfig(backbone='resnet18', img_res=32, hidden_dim=32)
  path = str(tmp_path / 'converted')
  convert.save_converted(path, models.create_model(cfg, seed=0), source='test')
  loaded = inference.load_model(path, body_model='default-low')
  predictor = inference.Predictor(loaded.model, loaded.body_model)
  people = detector(astronaut)
  kp = detector_lib.people_keypoints(people)
  plain = photo.reconstruct(astronaut, body, prior, keypoints=kp,
                            predictor=predictor, refine=False)
  assert not plain.fitted and list(plain.init_source) == ['regressor']
  assert np.isnan(plain.loss).all()
  refined = photo.reconstruct(astronaut, body, prior, keypoints=kp,
                              predictor=predictor, refine=True)
  assert refined.fitted and refined.init_source[0] in ('regressor', 'mean', 'mean_back')
  # The untrained regressor's body is far off; the refined one fits.
  cam = refined.camera
  err, _ = _reprojection_px(refined.joints[0], cam['translation'][0],
                            cam['focal_length'][0], cam['camera_center'], kp[0])
  cam0 = plain.camera
  err0, _ = _reprojection_px(plain.joints[0], cam0['translation'][0],
                             cam0['focal_length'][0], cam0['camera_center'], kp[0])
  assert err < 0.025 * refined.boxes[0].side < err0, (err, err0)
  # The regressor's start alone (no mean starts) is SMPLify from the prediction.
  only = photo.fit_people(body, prior, photo.people_boxes(kp)[1],
                          regressor=photo.regressor_init(
                              predictor.predict_boxes(astronaut, refined.boxes)),
                          mean_starts=False)
  assert list(only.init_source) == ['regressor']


def test_demo_on_a_48_megapixel_photo_stays_in_bounded_memory(tmp_path, cache):
  """An 8000x6000 photo (the astronaut scaled up) goes through detection,
  SMPLify and the full-size overlay with the peak memory of a 512 px photo
  plus a few copies of the image (measured here: 1.66 GB, against 1.37 GB
  for the 512 px original; float64 or per-pixel candidate arrays at this size
  would each add over 1 GB)."""
  big = cv2.resize(cv2.imread(ASTRONAUT), (8000, 6000), interpolation=cv2.INTER_LINEAR)
  path = tmp_path / 'big.jpg'
  cv2.imwrite(str(path), big, [cv2.IMWRITE_JPEG_QUALITY, 80])
  del big
  # A fresh parent process: its RUSAGE_CHILDREN peak is the demo's alone.
  measure = ('import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); '
             'print("maxrss_kb", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); '
             'sys.exit(r.returncode)')
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHONPATH=ROOT)
  r = subprocess.run(
      [sys.executable, '-c', measure, sys.executable,
       os.path.join(ROOT, 'experiments', 'demo.py'), f'--img={path}', f'--out={out}',
       '--body_model=default-low', f'--compilation_cache={cache}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
  assert r.returncode == 0, r.stderr[-3000:]
  maxrss_gb = int(r.stdout.split('maxrss_kb')[-1].split()[0]) / 2**20
  assert maxrss_gb < 2.0, maxrss_gb  # the bound of issue #15
  overlay = cv2.imread(str(out / 'big_overlay.png'))
  side = inference.OVERLAY_MAX_SIDE  # overlays of huge photos are scaled down
  assert overlay.shape == (round(6000 * side / 8000), side, 3)
  p = np.load(out / 'big_params.npz')
  assert p['keypoints'].shape == (1, 49, 3) and p['fitted']
