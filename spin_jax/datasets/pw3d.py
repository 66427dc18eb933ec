"""3DPW (test; train and validation too), from the released sequence pickles.

manual_dir layout (3DPW as released):
    3dpw/sequenceFiles/{test,train,validation}/<sequence>.pkl
        python-2 pickles (read with encoding='latin1', as data only:
        spin_jax.safe_pickle); per sequence:
        sequence (str), genders (P,) 'm'/'f', poses (P, F, 72), betas (P, >=10),
        poses2d (P, F, 3, 18), cam_poses (F, 4, 4), campose_valid (P, F),
        and more keys we do not use (img_frame_ids, trans, jointPositions, ...).
    3dpw/imageFiles/<sequence>/image_%05d.jpg
Per person, every frame with campose_valid; the global orientation is rotated
into the camera frame (R_cam @ R_global); betas are the first 10; the box is the
tight box of the 2D keypoints with confidence > 0, x 1.2. Sequences in sorted
file order, then persons, then frames. No part/S keys (SPIN's 3dpw_test.npz).
"""
from __future__ import annotations

import glob
import os

import cv2
import numpy as np

from spin_jax import safe_pickle
from spin_jax.datasets import common

_KEYS = ('genders', 'poses', 'betas', 'poses2d', 'cam_poses', 'campose_valid')


def load_sequence(path: str) -> dict:
  try:
    seq = safe_pickle.load(path, 'a 3DPW sequence file')  # data only
  except safe_pickle.UnsafePickleError as e:  # names the file and the global
    raise common.DatasetFormatError(str(e)) from None
  except Exception as e:
    raise common.DatasetFormatError(
        f'cannot unpickle {path} (expected a 3DPW sequence file): {e}') from e
  if not isinstance(seq, dict):
    raise common.DatasetFormatError(f'{path}: expected a dict, got {type(seq)}')
  missing = [k for k in _KEYS if k not in seq]
  if missing:
    raise common.DatasetFormatError(f'{path}: missing keys {missing} (a 3DPW '
                                    f'sequence file has {list(_KEYS)})')
  return seq


def _rotate_global(pose: np.ndarray, r_cam: np.ndarray) -> np.ndarray:
  pose = np.array(pose, np.float64)
  r_global, _ = cv2.Rodrigues(pose[:3].reshape(3, 1))
  pose[:3] = cv2.Rodrigues(r_cam @ r_global)[0].reshape(3)
  return pose


def read_3dpw(manual_dir: str, split: str = 'test') -> list[dict]:
  root = common.require_dir(os.path.join(manual_dir, '3dpw'),
                            '3DPW (sequenceFiles/, imageFiles/)')
  seq_dir = common.require_dir(os.path.join(root, 'sequenceFiles', split),
                               f'the 3DPW {split} sequence pickles')
  files = sorted(glob.glob(os.path.join(seq_dir, '*.pkl')))
  if not files:
    raise common.DatasetFormatError(f'no *.pkl sequence files in {seq_dir}')
  records = []
  for path in files:
    seq = load_sequence(path)
    name = seq.get('sequence') or os.path.splitext(os.path.basename(path))[0]
    cam_poses = np.asarray(seq['cam_poses'], np.float64)
    n_frames = cam_poses.shape[0]
    common.check_shape(cam_poses, (n_frames, 4, 4), path, 'cam_poses')
    for p, gender in enumerate(seq['genders']):
      poses = common.check_shape(seq['poses'][p], (n_frames, 72), path,
                                 f'poses[{p}]')
      kp2d = common.check_shape(seq['poses2d'][p], (n_frames, 3, 18), path,
                                f'poses2d[{p}]')
      betas = np.asarray(seq['betas'][p], np.float64).reshape(-1)
      if betas.size < 10:
        raise common.DatasetFormatError(
            f'{path}: betas[{p}] has {betas.size} values, expected >= 10')
      valid = np.asarray(seq['campose_valid'][p]).astype(bool).reshape(-1)
      common.check_shape(valid, (n_frames,), path, f'campose_valid[{p}]')
      for f in np.flatnonzero(valid):
        kp = kp2d[f].T  # (18, 3)
        kp = kp[kp[:, 2] > 0]
        if len(kp) == 0:
          continue
        center, scale = common.tight_box(kp[:, :2])
        imgname = f'imageFiles/{name}/image_{f:05d}.jpg'  # frame f, as SPIN
        records.append(dict(
            imgname=imgname, image_path=os.path.join(root, imgname),
            center=center, scale=scale,
            pose=_rotate_global(poses[f], cam_poses[f, :3, :3]),
            shape=betas[:10], gender=gender))
  return records
