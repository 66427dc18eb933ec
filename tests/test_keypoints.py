"""The bundled person / keypoint detector on real photos, and keypoint files."""
import json
import os

import cv2
import numpy as np
import pytest

from spin_jax import constants
from spin_jax import crops
from spin_jax import detector as detector_lib
from spin_jax import keypoints

ASTRONAUT = os.path.join(detector_lib.ASSETS_DIR, 'astronaut.jpg')
J = {n: i for i, n in enumerate(constants.JOINT_NAMES)}
L = {n: i for i, n in enumerate(keypoints.LANDMARK_NAMES)}

# Regions of the astronaut photo (512 x 512), read off the picture by eye:
# the face (hairline to chin, cheek to cheek) and the two shoulders of the
# space suit. The person faces the camera: her right is on the image's left.
FACE = (180, 80, 270, 160)  # x0, y0, x1, y1
RIGHT_SHOULDER = (60, 180, 170, 290)
LEFT_SHOULDER = (250, 190, 360, 300)


@pytest.fixture(scope='module')
def detector():
  return detector_lib.PoseDetector()


@pytest.fixture(scope='module')
def astronaut():
  return crops.read_image(ASTRONAUT)


def _inside(xy, box):
  return box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3]


def test_keypoints_land_on_the_astronaut(detector, astronaut):
  people = detector(astronaut)
  assert len(people) == 1
  p = people[0]
  assert p.score > 0.5 and p.presence > 0.5
  kp = p.keypoints
  for name in ('OP Nose', 'OP REye', 'OP LEye'):
    assert kp[J[name], 2] > 0.9, name
    assert _inside(kp[J[name], :2], FACE), (name, kp[J[name]])
  assert _inside(kp[J['OP RShoulder'], :2], RIGHT_SHOULDER), kp[J['OP RShoulder']]
  assert _inside(kp[J['OP LShoulder'], :2], LEFT_SHOULDER), kp[J['OP LShoulder']]
  # Not swapped: facing the camera, her right eye/shoulder/ear is on the left.
  for side in ('Eye', 'Shoulder', 'Ear'):
    assert kp[J[f'OP R{side}'], 0] < kp[J[f'OP L{side}'], 0] - 20, side
  # The eyes sit above the nose, the nose above the neck (mid-shoulders).
  assert kp[J['OP REye'], 1] < kp[J['OP Nose'], 1] < kp[J['OP Neck'], 1]
  # Knees and ankles are below the picture: confidence 0, not guessed.
  for name in ('OP RKnee', 'OP LKnee', 'OP RAnkle', 'OP LAnkle'):
    assert kp[J[name], 2] == 0.0, name
  # Only the OpenPose slots are filled.
  assert np.all(kp[constants.NUM_OPENPOSE_JOINTS:] == 0)


def test_mirrored_photo_gives_mirrored_keypoints(detector, astronaut):
  # An independent check of the geometry (letterbox, region, rotation, heatmap
  # refinement): mirroring the photo mirrors the landmarks. A mirrored frontal
  # person is still a frontal person, so her right eye is found where the
  # left one was.
  w = astronaut.shape[1]
  a = detector(astronaut)[0].landmarks
  b = detector(np.ascontiguousarray(astronaut[:, ::-1]))[0].landmarks
  mirror = lambda xy: np.array([w - 1 - xy[0], xy[1]])
  for left, right, tol in (('nose', 'nose', 6), ('left_eye', 'right_eye', 6),
                           ('left_shoulder', 'right_shoulder', 15)):
    d = np.linalg.norm(mirror(b[L[right], :2]) - a[L[left], :2])
    assert d < tol, (left, d)


def test_two_people_found_left_to_right(detector, astronaut):
  # Two real photos side by side (the second one mirrored, at 3/4 size).
  small = cv2.resize(astronaut[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA)
  right = np.full_like(astronaut, 200)
  right[64:448, 64:448] = small
  image = np.concatenate([astronaut, right], 1)
  people = detector(image)
  assert len(people) == 2
  noses = [p.keypoints[J['OP Nose']] for p in people]
  assert noses[0][0] < 512 < noses[1][0]
  # The second nose is the first one's, mirrored and scaled into the tile.
  expect = np.array([512 + 64 + (511 - noses[0][0]) * 0.75, 64 + noses[0][1] * 0.75])
  assert np.linalg.norm(noses[1][:2] - expect) < 8, (noses, expect)


@pytest.mark.parametrize('kind', ['noise', 'flat', 'tiny', 'one_pixel', 'gray'])
def test_no_person_and_tiny_images(detector, kind):
  rng = np.random.default_rng(0)
  image = {'noise': rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
           'flat': np.full((300, 200, 3), 128, np.uint8),
           'tiny': rng.integers(0, 256, (8, 6, 3), dtype=np.uint8),
           'one_pixel': np.zeros((1, 1, 3), np.uint8),
           'gray': rng.integers(0, 256, (64, 64), dtype=np.uint8)}[kind]
  assert detector(image) == []
  assert detector_lib.people_keypoints([]).shape == (0, 49, 3)


def test_bad_images_are_rejected(detector):
  with pytest.raises(ValueError, match='uint8'):
    detector(np.zeros((32, 32, 3), np.float32))
  with pytest.raises(ValueError, match='empty'):
    detector(np.zeros((0, 5, 3), np.uint8))
  with pytest.raises(ValueError, match=r'\(H, W, 3\)'):
    detector(np.zeros((4, 4, 2), np.uint8))


def test_spin49_table():
  lmk = np.zeros((33, 3), np.float32)
  lmk[:, 0] = np.arange(33)
  lmk[:, 1] = 100 + np.arange(33)
  lmk[:, 2] = np.linspace(0.1, 0.9, 33)
  kp = keypoints.to_spin49(lmk)
  # Neck = mid-shoulders (11, 12), the lower confidence; MidHip = mid-hips.
  np.testing.assert_allclose(kp[J['OP Neck']], [11.5, 111.5, lmk[11, 2]])
  np.testing.assert_allclose(kp[J['OP MidHip']], [23.5, 123.5, lmk[23, 2]])
  # Person's right = BlazePose's right.
  np.testing.assert_allclose(kp[J['OP RWrist']], lmk[16])
  np.testing.assert_allclose(kp[J['OP LAnkle']], lmk[27])
  np.testing.assert_allclose(kp[J['OP REar']], lmk[8])
  np.testing.assert_allclose(kp[J['OP LBigToe']], lmk[31])
  # No BlazePose small toes, no ground-truth slots.
  for name in ('OP LSmallToe', 'OP RSmallToe'):
    assert kp[J[name], 2] == 0
  assert np.all(kp[25:] == 0)
  assert len(keypoints.SPIN49_FROM_BLAZEPOSE) == 23


def test_anchors_and_weighted_nms():
  a = detector_lib.detector_anchors()
  assert a.shape == (2254, 2)
  np.testing.assert_allclose(a[0], [0.5 / 28, 0.5 / 28])
  np.testing.assert_allclose(a[1], a[0])  # 2 anchors per cell at stride 8
  np.testing.assert_allclose(a[-1], [6.5 / 7, 6.5 / 7])
  boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60.]])
  points = np.array([[[0., 0.]], [[3., 3.]], [[9., 9.]]])
  scores = np.array([0.6, 0.9, 0.7])
  b, p, s = detector_lib.weighted_nms(boxes, points, scores)
  np.testing.assert_allclose(s, [0.9, 0.7])
  np.testing.assert_allclose(b[0], [0.6, 0, 10.6, 10])  # (0.6 * 0 + 0.9 * 1) / 1.5
  np.testing.assert_allclose(p[0, 0], [1.8, 1.8])
  np.testing.assert_allclose(b[1], boxes[2])


# ---------------------------------------------------------------------------
# Keypoint files.


def _write(tmp_path, name, data):
  path = tmp_path / name
  if name.endswith('.npy'):
    np.save(path, data)
  else:
    path.write_text(json.dumps(data))
  return str(path)


def test_read_openpose_body25(tmp_path):
  kp = np.arange(75, dtype=np.float32).reshape(25, 3)
  path = _write(tmp_path, 'op.json', {'people': [{'pose_keypoints_2d': kp.ravel().tolist()}]})
  out, fmt = keypoints.read_keypoints_file(path)
  assert fmt == 'openpose_body25' and out.shape == (1, 49, 3)
  np.testing.assert_array_equal(out[0, :25], kp)
  assert np.all(out[0, 25:] == 0)
  bad = _write(tmp_path, 'bad.json', {'people': [{'pose_keypoints_2d': [1, 2, 3]}]})
  with pytest.raises(ValueError, match=r"--keypoints '.*bad.json'.*25 x, y, c"):
    keypoints.read_keypoints_file(bad)


def test_read_coco17_annotations_and_results(tmp_path):
  kp = np.zeros((17, 3))
  kp[:, 0], kp[:, 1], kp[:, 2] = np.arange(17), 50 + np.arange(17), 2
  kp[3, 2] = 0  # left ear unlabelled
  ann = {'images': [{'id': 7, 'file_name': 'train/a.jpg'}, {'id': 8, 'file_name': 'b.jpg'}],
         'annotations': [{'id': 1, 'image_id': 7, 'keypoints': kp.ravel().tolist(),
                          'num_keypoints': 16},
                         {'id': 2, 'image_id': 8, 'keypoints': kp.ravel().tolist(),
                          'num_keypoints': 16}]}
  path = _write(tmp_path, 'coco.json', ann)
  out, fmt = keypoints.read_keypoints_file(path, image_name='a.jpg')
  assert fmt == 'coco17' and out.shape == (1, 49, 3)
  # SPIN's COCO slots: nose -> 'Nose' (GT 19), left shoulder -> GT 9, right
  # ankle -> GT 0; visibility 2 -> 1, 0 -> 0.
  np.testing.assert_array_equal(out[0, J['Nose']], [0, 50, 1])
  np.testing.assert_array_equal(out[0, J['Left Shoulder']], [5, 55, 1])
  np.testing.assert_array_equal(out[0, J['Right Ankle']], [16, 66, 1])
  assert out[0, J['Left Ear'], 2] == 0
  assert np.all(out[0, :25] == 0)
  with pytest.raises(ValueError, match='2 images; give --img'):
    keypoints.read_keypoints_file(path)
  res = [{'image_id': 3, 'keypoints': (kp * [1, 1, 0.35]).ravel().tolist(), 'score': 0.9}] * 2
  out, fmt = keypoints.read_keypoints_file(_write(tmp_path, 'res.json', res))
  assert fmt == 'coco17' and out.shape == (2, 49, 3)
  np.testing.assert_allclose(out[1, J['Left Wrist']], [9, 59, 0.7])


def test_read_detector_format_and_arrays(tmp_path, detector, astronaut):
  people = detector(astronaut)
  path = str(tmp_path / 'astronaut_keypoints.json')
  detector_lib.write_detections(path, people, astronaut.shape[:2])
  out, fmt = keypoints.read_keypoints_file(path)
  assert fmt == keypoints.DETECTOR_NAME
  np.testing.assert_allclose(out, detector_lib.people_keypoints(people), atol=1e-3)
  spin = np.random.default_rng(0).random((2, 49, 3)).astype(np.float32)
  for arr, want_fmt in ((spin, 'spin49'), (spin[0], 'spin49'),
                        (spin[:, :25], 'openpose_body25'),
                        (spin[:, :17], 'coco17'),
                        (people[0].landmarks, keypoints.DETECTOR_NAME)):
    out, fmt = keypoints.read_keypoints_file(_write(tmp_path, 'a.npy', arr))
    assert fmt == want_fmt and out.shape[1:] == (49, 3), want_fmt
  np.testing.assert_allclose(
      keypoints.read_keypoints_file(_write(tmp_path, 'b.npy', people[0].landmarks))[0][0],
      people[0].keypoints, atol=1e-6)
  with pytest.raises(ValueError, match=r'shape \(2, 7, 3\)'):
    keypoints.read_keypoints_file(_write(tmp_path, 'c.npy', spin[:, :7]))
  with pytest.raises(FileNotFoundError, match="--openpose '.*missing.json' does not exist"):
    keypoints.read_keypoints_file(str(tmp_path / 'missing.json'), flag='--openpose')
  (tmp_path / 'broken.json').write_text('{"people": [')
  with pytest.raises(ValueError, match='not valid JSON'):
    keypoints.read_keypoints_file(str(tmp_path / 'broken.json'))
  with pytest.raises(ValueError, match='unrecognised keypoint JSON'):
    keypoints.read_keypoints_file(_write(tmp_path, 'other.json', {'x': 1}))
  with pytest.raises(ValueError, match=r'expected a \.json'):
    keypoints.read_keypoints_file(_write(tmp_path, 'kp.txt', {'x': 1}))
