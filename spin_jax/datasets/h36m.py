"""Human3.6M: train (S1, S5-S8), protocol 1 (S9, S11, all cameras) and protocol 2
(S9, S11, camera 60457274) test sets, every 5th frame.

Raw format. The official D3_Positions_mono files are CDF (needing a CDF
library); we read instead the per-sequence HDF5 extraction of the widely used
h36m-fetch tool (github.com/anibali/h36m-fetch), which converts those CDF files
and extracts the video frames:
    h36m/S{1,5,6,7,8,9,11}/<Action>-<subaction>/annot.h5
        pose/2d (N, 32, 2) pixels, pose/3d (N, 32, 3) camera frame in mm
        (D2_Positions / D3_Positions_mono), camera (N,) camera id,
        frame (N,) 1-based frame number
    h36m/S*/<Action>-<subaction>/imageSequence/<camera>/img_%06d.jpg
(h36m/processed/S* is accepted too.) SPIN's own npz files
(h36m_valid_protocol{1,2}.npz, h36m_train.npz) import with spin_npz.py.

17 joints from the 32: raw RAW_JOINTS to J24 slots J17_TO_J24; metres,
root-centred on raw joint 11 (pelvis). Frames with (frame - 1) % 5 == 0.
Difference from SPIN: SPIN's box comes from the background-subtraction masks
(longest side x 0.9), which h36m-fetch does not extract; we use the tight box of
the 17 2D joints x 1.2, as for the other datasets. Train examples carry part
(the 17 2D joints); the test sets carry only S, as SPIN's test npz files.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from spin_jax.datasets import common

RAW_JOINTS = (11, 6, 7, 8, 1, 2, 3, 12, 24, 14, 15, 17, 18, 19, 25, 26, 27)
J17_TO_J24 = (14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6)
TRAIN_SUBJECTS = (1, 5, 6, 7, 8)
TEST_SUBJECTS = (9, 11)
PROTOCOL2_CAMERA = 60457274
FRAME_STEP = 5


def _root(manual_dir: str) -> str:
  root = os.path.join(manual_dir, 'h36m')
  if os.path.isdir(os.path.join(root, 'processed')):
    root = os.path.join(root, 'processed')
  return common.require_dir(root, 'Human3.6M in the h36m-fetch layout '
                            '(S*/<Action>-<sub>/annot.h5, imageSequence/)')


def read_h36m(manual_dir: str, split: str) -> list[dict]:
  """split: 'train', 'p1' or 'p2'."""
  if split not in ('train', 'p1', 'p2'):
    raise ValueError(f"split must be 'train', 'p1' or 'p2', got {split!r}")
  root = _root(manual_dir)
  subjects = TRAIN_SUBJECTS if split == 'train' else TEST_SUBJECTS
  records = []
  for subject in subjects:
    subject_dir = common.require_dir(os.path.join(root, f'S{subject}'),
                                     f'Human3.6M subject S{subject}')
    seqs = sorted(glob.glob(os.path.join(subject_dir, '*', 'annot.h5')))
    if not seqs:
      raise common.DatasetFormatError(f'no */annot.h5 in {subject_dir}')
    for path in seqs:
      seq_dir = os.path.dirname(path)
      if '_ALL' in os.path.basename(seq_dir):
        continue
      with common.open_h5(path, ('pose/2d', 'pose/3d', 'camera', 'frame'),
                          written_by='as written by h36m-fetch') as f:
        p2 = common.check_shape(f['pose/2d'][()], (None, 32, 2), path, 'pose/2d')
        n = len(p2)
        p3 = common.check_shape(f['pose/3d'][()], (n, 32, 3), path, 'pose/3d')
        cams = common.check_shape(f['camera'][()].reshape(-1), (n,), path,
                                  'camera')
        frames = common.check_shape(f['frame'][()].reshape(-1), (n,), path,
                                    'frame')
      for i in range(n):
        if (int(frames[i]) - 1) % FRAME_STEP:
          continue
        if split == 'p2' and int(cams[i]) != PROTOCOL2_CAMERA:
          continue
        xy = p2[i, list(RAW_JOINTS)].astype(np.float64)
        xyz = p3[i, list(RAW_JOINTS)].astype(np.float64) / 1000.0
        s = np.zeros((24, 4), np.float32)
        s[list(J17_TO_J24), :3] = xyz - xyz[0]
        s[list(J17_TO_J24), 3] = 1
        center, scale = common.tight_box(xy)
        imgname = os.path.relpath(
            os.path.join(seq_dir, 'imageSequence', str(int(cams[i])),
                         f'img_{int(frames[i]):06d}.jpg'), root)
        r = dict(imgname=imgname, image_path=os.path.join(root, imgname),
                 center=center, scale=scale, S=s)
        if split == 'train':
          part = np.zeros((24, 3), np.float32)
          part[list(J17_TO_J24), :2] = xy
          part[list(J17_TO_J24), 2] = 1
          r['part'] = part
        records.append(r)
  return records
