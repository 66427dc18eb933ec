"""Keypoints in SPIN's 49-joint order: the mappings from other joint sets and
the keypoint files people bring.

Joint sets mapped onto SPIN's 49 joints (25 OpenPose BODY_25 slots, then 24
ground-truth slots; spin_jax.constants.JOINT_NAMES):
- BlazePose's 33 landmarks (the bundled detector, spin_jax.detector):
  `SPIN49_FROM_BLAZEPOSE` fills the 25 OpenPose slots that BlazePose has
  (OpenPose's neck and mid-hip are the mid-shoulder and mid-hip points, its
  big toes BlazePose's foot index); the small toes and the 24 ground-truth
  slots get confidence 0.
- OpenPose BODY_25: the same 25 first slots.
- COCO-17: SPIN's ground-truth slots, as SPIN's COCO loader (`COCO17_TO_J24`).

`read_keypoints_file` reads any of them from JSON (OpenPose, COCO annotations
or results, the detector's own `DETECTIONS_FORMAT`) or .npy, recognised by
content. All coordinates are image pixels with pixel centres at integers.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from spin_jax import constants

# The bundled detector's landmarks, as a keypoint format's name.
DETECTOR_NAME = 'blazepose_full'

LANDMARK_NAMES = (
    'nose', 'left_eye_inner', 'left_eye', 'left_eye_outer', 'right_eye_inner',
    'right_eye', 'right_eye_outer', 'left_ear', 'right_ear', 'mouth_left',
    'mouth_right', 'left_shoulder', 'right_shoulder', 'left_elbow',
    'right_elbow', 'left_wrist', 'right_wrist', 'left_pinky', 'right_pinky',
    'left_index', 'right_index', 'left_thumb', 'right_thumb', 'left_hip',
    'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle',
    'left_heel', 'right_heel', 'left_foot_index', 'right_foot_index')
NUM_LANDMARKS = len(LANDMARK_NAMES)  # 33

# SPIN joint <- BlazePose landmark(s): position = mean of the landmarks,
# confidence = the smallest of theirs. Every other SPIN joint: confidence 0.
SPIN49_FROM_BLAZEPOSE = (
    ('OP Nose', ('nose',)),
    ('OP Neck', ('left_shoulder', 'right_shoulder')),
    ('OP RShoulder', ('right_shoulder',)),
    ('OP RElbow', ('right_elbow',)),
    ('OP RWrist', ('right_wrist',)),
    ('OP LShoulder', ('left_shoulder',)),
    ('OP LElbow', ('left_elbow',)),
    ('OP LWrist', ('left_wrist',)),
    ('OP MidHip', ('left_hip', 'right_hip')),
    ('OP RHip', ('right_hip',)),
    ('OP RKnee', ('right_knee',)),
    ('OP RAnkle', ('right_ankle',)),
    ('OP LHip', ('left_hip',)),
    ('OP LKnee', ('left_knee',)),
    ('OP LAnkle', ('left_ankle',)),
    ('OP REye', ('right_eye',)),
    ('OP LEye', ('left_eye',)),
    ('OP REar', ('right_ear',)),
    ('OP LEar', ('left_ear',)),
    ('OP LBigToe', ('left_foot_index',)),
    ('OP LHeel', ('left_heel',)),
    ('OP RBigToe', ('right_foot_index',)),
    ('OP RHeel', ('right_heel',)),
)


def _spin49_table() -> tuple[tuple[int, tuple[int, ...]], ...]:
  names = {n: i for i, n in enumerate(LANDMARK_NAMES)}
  joints = {n: i for i, n in enumerate(constants.JOINT_NAMES)}
  return tuple((joints[j], tuple(names[n] for n in src))
               for j, src in SPIN49_FROM_BLAZEPOSE)


_SPIN49 = _spin49_table()


def to_spin49(landmarks: np.ndarray) -> np.ndarray:
  """(..., 33, 3) landmarks (x, y, conf) -> (..., 49, 3) SPIN joints."""
  landmarks = np.asarray(landmarks, np.float32)
  if landmarks.shape[-2:] != (NUM_LANDMARKS, 3):
    raise ValueError(f'to_spin49: expected (..., {NUM_LANDMARKS}, 3) landmarks '
                     f'(x, y, conf), got {landmarks.shape}.')
  out = np.zeros(landmarks.shape[:-2] + (constants.NUM_JOINTS, 3), np.float32)
  for joint, src in _SPIN49:
    pts = landmarks[..., src, :]
    out[..., joint, :2] = pts[..., :2].mean(-2)
    out[..., joint, 2] = pts[..., 2].min(-1)
  return out


# ---------------------------------------------------------------------------
# Keypoint files: OpenPose BODY_25, COCO-17, the detector's JSON, SPIN arrays.

DETECTIONS_FORMAT = 'spin_jax.keypoints/1'
# SPIN's slots (among the 24 ground-truth joints, 25..48 of the 49) for the
# 17 COCO keypoints in COCO order (nose, eyes, ears, shoulders, elbows,
# wrists, hips, knees, ankles; left before right), as SPIN's COCO loader.
COCO17_TO_J24 = (19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)
NUM_COCO_KEYPOINTS = 17
KEYPOINT_FILE_FORMATS = ('openpose_body25', 'coco17', DETECTOR_NAME, 'spin49')


def coco17_to_spin49(kp: np.ndarray) -> np.ndarray:
  """(..., 17, 3) COCO keypoints (x, y, conf) -> (..., 49, 3) SPIN joints."""
  kp = np.asarray(kp, np.float32)
  out = np.zeros(kp.shape[:-2] + (constants.NUM_JOINTS, 3), np.float32)
  out[..., [constants.NUM_OPENPOSE_JOINTS + j for j in COCO17_TO_J24], :] = kp
  return out


def body25_to_spin49(kp: np.ndarray) -> np.ndarray:
  """(..., 25, 3) OpenPose BODY_25 -> (..., 49, 3): the same 25 first slots."""
  kp = np.asarray(kp, np.float32)
  out = np.zeros(kp.shape[:-2] + (constants.NUM_JOINTS, 3), np.float32)
  out[..., :constants.NUM_OPENPOSE_JOINTS, :] = kp
  return out


def _coco_rows(values, where: str, *, visibility_flags: bool) -> np.ndarray:
  kp = np.asarray(values, np.float32)
  if kp.size != 3 * NUM_COCO_KEYPOINTS:
    raise ValueError(f'{where}: "keypoints" must hold 17 x, y, v triplets '
                     f'(COCO-17), got {kp.size} values.')
  kp = kp.reshape(NUM_COCO_KEYPOINTS, 3)
  if visibility_flags:  # COCO annotations: v = 0 unlabelled, 1 or 2 labelled
    kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
  return kp


def _parse_json(data: Any, where: str, image_name: str | None):
  """(P, 49, 3) and the format name from a parsed keypoint JSON."""
  if isinstance(data, dict) and data.get('format') == DETECTIONS_FORMAT:
    people = data.get('people')
    if not isinstance(people, list):
      raise ValueError(f'{where}: a {DETECTIONS_FORMAT} file needs a "people" list.')
    rows = []
    for i, person in enumerate(people):
      kp = np.asarray(person.get('keypoints_spin49', []), np.float32)
      if kp.shape != (constants.NUM_JOINTS, 3):
        raise ValueError(f'{where}: people[{i}].keypoints_spin49 must be 49 '
                         f'[x, y, conf] rows, got shape {kp.shape}.')
      rows.append(kp)
    return _stack49(rows), DETECTOR_NAME
  if isinstance(data, dict) and isinstance(data.get('people'), list):
    rows = []
    for i, person in enumerate(data['people']):
      kp = np.asarray(person.get('pose_keypoints_2d', []), np.float32)
      if kp.size != 3 * constants.NUM_OPENPOSE_JOINTS:
        raise ValueError(
            f'{where}: people[{i}].pose_keypoints_2d must hold 25 x, y, c '
            f'triplets (OpenPose BODY_25), got {kp.size} values.')
      rows.append(body25_to_spin49(kp.reshape(-1, 3)))
    return _stack49(rows), 'openpose_body25'
  if isinstance(data, dict) and isinstance(data.get('annotations'), list):
    anns = data['annotations']
    images = data.get('images') or []
    ids = {a.get('image_id') for a in anns}
    if image_name is not None and images:
      wanted = {im.get('id') for im in images
                if os.path.basename(str(im.get('file_name', ''))) == image_name}
      if not wanted:
        raise ValueError(f'{where}: no image named {image_name!r} in "images".')
      anns = [a for a in anns if a.get('image_id') in wanted]
    elif len(ids) > 1:
      raise ValueError(f'{where}: COCO annotations of {len(ids)} images; give '
                       '--img to pick one (matched by file name).')
    rows = [coco17_to_spin49(_coco_rows(a.get('keypoints', []),
                                        f'{where}: annotation {a.get("id")}',
                                        visibility_flags=True))
            for a in anns if a.get('num_keypoints', 1) and 'keypoints' in a]
    return _stack49(rows), 'coco17'
  if isinstance(data, list) and all(isinstance(d, dict) and 'keypoints' in d
                                    for d in data):
    ids = {d.get('image_id') for d in data}
    if len(ids) > 1:
      raise ValueError(f'{where}: COCO-style results of {len(ids)} images; give '
                       'a file with one image\'s people.')
    rows = [coco17_to_spin49(_coco_rows(d['keypoints'], f'{where}: [{i}]',
                                        visibility_flags=False))
            for i, d in enumerate(data)]
    return _stack49(rows), 'coco17'
  raise ValueError(
      f'{where}: unrecognised keypoint JSON; expected OpenPose ({{"people": '
      f'[{{"pose_keypoints_2d": ...}}]}}), COCO annotations ({{"annotations": '
      f'[{{"keypoints": ...}}]}}), COCO-style results ([{{"keypoints": ...}}]) '
      f'or {DETECTIONS_FORMAT} (demo.py\'s NAME_keypoints.json).')


def _stack49(rows) -> np.ndarray:
  if not rows:
    return np.zeros((0, constants.NUM_JOINTS, 3), np.float32)
  return np.stack(rows).astype(np.float32)


def read_keypoints_file(path: str, *, flag: str = '--keypoints',
                        image_name: str | None = None
                        ) -> tuple[np.ndarray, str]:
  """Keypoints of every person in a file, recognised by its content.

  JSON: OpenPose BODY_25 ("people"[i]."pose_keypoints_2d"), COCO-17
  annotations ("annotations"[i]."keypoints", visibility 0 -> confidence 0,
  1 or 2 -> 1; with several images, the one whose file name is image_name),
  COCO-17 results (a list of {"keypoints": 51 values, "score"}: the third
  value is the confidence; e.g. a top-down detector's output), or the bundled
  detector's format (`DETECTIONS_FORMAT`, spin_jax.detector.write_detections).
  NumPy .npy: (P, 49, 3) / (49, 3) SPIN joints, (P, 25, 3) BODY_25, (P, 17, 3)
  COCO-17, (P, 33, 3 or 4) BlazePose landmarks (x, y, visibility[, presence]).
  All in image pixels.

  Mapping to SPIN's 49: BODY_25 and BlazePose fill the OpenPose slots (0-24),
  COCO-17 fills SPIN's ground-truth slots as SPIN's COCO loader does
  (`COCO17_TO_J24`).

  Returns:
    ((P, 49, 3) float32, format name in KEYPOINT_FILE_FORMATS).
  """
  where = f'{flag} {path!r}'
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{where} does not exist.')
  if path.lower().endswith('.json'):
    try:
      with open(path) as f:
        data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ValueError(f'{where} is not valid JSON: {e}') from e
    return _parse_json(data, where, image_name)
  if path.lower().endswith('.npy'):
    try:
      kp = np.load(path, allow_pickle=False)
    except ValueError as e:
      raise ValueError(f'{where}: not a plain numeric .npy array ({e}).') from e
    kp = np.asarray(kp, np.float32)
    if kp.ndim == 2:
      kp = kp[None]
    shape = kp.shape[1:] if kp.ndim == 3 else None
    if shape == (constants.NUM_JOINTS, 3):
      return kp, 'spin49'
    if shape == (constants.NUM_OPENPOSE_JOINTS, 3):
      return body25_to_spin49(kp), 'openpose_body25'
    if shape == (NUM_COCO_KEYPOINTS, 3):
      return coco17_to_spin49(kp), 'coco17'
    if shape in ((NUM_LANDMARKS, 3), (NUM_LANDMARKS, 4)):
      return to_spin49(kp[..., :3]), DETECTOR_NAME
    raise ValueError(f'{where}: array of shape {np.shape(kp)}; expected (P, J, 3) '
                     f'or (J, 3) with J = 49 (SPIN), 25 (OpenPose BODY_25), 17 '
                     f'(COCO) or 33 (BlazePose; 3 or 4 columns).')
  raise ValueError(f'{where}: expected a .json (OpenPose, COCO or '
                   f'{DETECTIONS_FORMAT}) or a .npy array.')

