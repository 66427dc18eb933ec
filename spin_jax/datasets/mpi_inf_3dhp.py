"""MPI-INF-3DHP train (S1-S8) and test (TS1-TS6).

manual_dir layout (the release, frames extracted from the videos):
    mpi_inf_3dhp/S{1..8}/Seq{1,2}/annot.mat          MATLAB v5: 'annot2' and
        'annot3' cells (14 cameras, 1) of (F, 56) / (F, 84) (28 joints, mm)
    mpi_inf_3dhp/S{1..8}/Seq{1,2}/imageFrames/video_{cam}/frame_%06d.jpg  (1-based)
    mpi_inf_3dhp/mpi-inf-3dhp_mview_fits.npz          optional (SPIN's static
        data): pose (N, 72), shape (N, 10), has_smpl (N,)
    mpi_inf_3dhp/mpi_inf_3dhp_test_set/TS{1..6}/annot_data.mat   MATLAB v7.3
        (HDF5): annot2 (F, 1, 17, 2), univ_annot3 (F, 1, 17, 3), valid_frame (F, 1)
    mpi_inf_3dhp/mpi_inf_3dhp_test_set/TS{1..6}/imageSequence/img_%06d.jpg

Train (SPIN_DETAILS D4): cameras 0,1,2,4,5,6,7,8; a frame is valid when its 17
joints lie inside the 2048x2048 image; a running counter over valid frames
keeps counter % 10 == 1. The frame list is SORTED and each frame's annotation
row is taken from its file number (the original indexed an unsorted glob by
position: SPIN issues #114/#115). 3D = annot3 / 1000, root-centred on the pelvis.
The multi-view fits are attached only when their row count equals the number
of frames kept; SPIN's released fits (96,507 rows) match only the released
mpi_inf_3dhp_train.npz, so to use them import that npz (spin_npz.py).
Test: frames with valid_frame and all 17 joints inside the image
(TS1-4 2048x2048, TS5-6 1920x1080); 3D = univ_annot3 / 1000, root-centred.
"""
from __future__ import annotations

import glob
import logging
import os
import re

import numpy as np

from spin_jax.datasets import common

TRAIN_CAMERAS = (0, 1, 2, 4, 5, 6, 7, 8)
TRAIN_JOINTS = (4, 18, 19, 20, 23, 24, 25, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16)
TEST_JOINTS = (14, 11, 12, 13, 8, 9, 10, 15, 1, 16, 0, 5, 6, 7, 2, 3, 4)
J17_TO_J24 = (14, 3, 4, 5, 2, 1, 0, 16, 12, 17, 18, 9, 10, 11, 8, 7, 6)
TEST_IMAGE_SIZE = {1: (2048, 2048), 2: (2048, 2048), 3: (2048, 2048),
                   4: (2048, 2048), 5: (1920, 1080), 6: (1920, 1080)}  # (w, h)
_FRAME_RE = re.compile(r'frame_(\d+)\.jpg$')


def _labels(xy: np.ndarray, xyz: np.ndarray):
  """17 joints (2D pixels, 3D metres) -> part (24,3), S (24,4), root-centred."""
  part = np.zeros((24, 3), np.float32)
  part[list(J17_TO_J24), :2] = xy
  part[list(J17_TO_J24), 2] = 1
  s = np.zeros((24, 4), np.float32)
  s[list(J17_TO_J24), :3] = xyz - xyz[0]
  s[list(J17_TO_J24), 3] = 1
  return part, s


def _inside(xy: np.ndarray, w: int, h: int) -> bool:
  return bool(np.all((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0)
                     & (xy[:, 1] < h)))


def _camera_cell(mat: dict, key: str, cam: int, width: int, path: str):
  if key not in mat:
    raise common.DatasetFormatError(f'{path}: no key {key!r} (expected a '
                                    '(14, 1) cell of per-camera arrays)')
  cell = mat[key]
  if cell.dtype != object or cell.size < 14:
    raise common.DatasetFormatError(
        f'{path}: {key!r} is {cell.dtype} {cell.shape}, expected a (14, 1) cell')
  arr = np.asarray(cell.reshape(-1)[cam], np.float64)
  return common.check_shape(arr, (None, width), path, f'{key}[{cam}]')


def read_train(manual_dir: str) -> list[dict]:
  root = common.require_dir(os.path.join(manual_dir, 'mpi_inf_3dhp'),
                            'MPI-INF-3DHP (S1..S8/Seq1..2/)')
  records, counter = [], 0
  for subject in range(1, 9):
    for seq in (1, 2):
      seq_dir = os.path.join(f'S{subject}', f'Seq{seq}')
      mat_path = os.path.join(root, seq_dir, 'annot.mat')
      mat = common.load_mat(mat_path, "'annot2', 'annot3' camera cells")
      for cam in TRAIN_CAMERAS:
        a2 = _camera_cell(mat, 'annot2', cam, 56, mat_path)
        a3 = _camera_cell(mat, 'annot3', cam, 84, mat_path)
        frame_dir = os.path.join(root, seq_dir, 'imageFrames', f'video_{cam}')
        frames = sorted(glob.glob(os.path.join(frame_dir, 'frame_*.jpg')))
        if not frames:
          raise common.DatasetFormatError(
              f'no frame_%06d.jpg frames in {frame_dir} (extract them from '
              f'imageSequence/video_{cam}.avi)')
        for frame in frames:
          row = int(_FRAME_RE.search(frame).group(1)) - 1
          if not 0 <= row < len(a2):
            raise common.DatasetFormatError(
                f'{frame}: frame number {row + 1} but {mat_path} annotates '
                f'{len(a2)} frames of camera {cam}')
          xy = a2[row].reshape(28, 2)[list(TRAIN_JOINTS)]
          if not _inside(xy, 2048, 2048):
            continue
          counter += 1
          if counter % 10 != 1:
            continue
          xyz = a3[row].reshape(28, 3)[list(TRAIN_JOINTS)] / 1000.0
          part, s = _labels(xy, xyz)
          center, scale = common.tight_box(xy)
          imgname = os.path.relpath(frame, root)
          records.append(dict(imgname=imgname, image_path=frame, center=center,
                              scale=scale, part=part, S=s))
  _attach_mview_fits(os.path.join(root, 'mpi-inf-3dhp_mview_fits.npz'),
                     records)
  return records


def _attach_mview_fits(path: str, records: list[dict]) -> None:
  if not os.path.isfile(path):
    return
  fits = np.load(path, allow_pickle=False)
  for k in ('pose', 'shape', 'has_smpl'):
    if k not in fits:
      raise common.DatasetFormatError(f'{path}: no key {k!r} (expected pose, '
                                      'shape, has_smpl)')
  if len(fits['pose']) != len(records):
    logging.warning(
        '%s has %d rows but %d frames were kept: not attaching the multi-view '
        'fits (they align only with the released mpi_inf_3dhp_train.npz; '
        'import that file instead)', path, len(fits['pose']), len(records))
    return
  for r, pose, shape, has in zip(records, fits['pose'], fits['shape'],
                                 fits['has_smpl']):
    r.update(pose=pose, shape=shape, has_smpl=float(has))


def read_test(manual_dir: str) -> list[dict]:
  root = common.require_dir(os.path.join(manual_dir, 'mpi_inf_3dhp'),
                            'MPI-INF-3DHP (mpi_inf_3dhp_test_set/TS1..6/)')
  records = []
  for ts in range(1, 7):
    seq_dir = os.path.join('mpi_inf_3dhp_test_set', f'TS{ts}')
    path = common.require_file(os.path.join(root, seq_dir, 'annot_data.mat'),
                               'MATLAB v7.3 annot2, univ_annot3, valid_frame')
    with common.open_h5(path, ('annot2', 'univ_annot3', 'valid_frame'),
                        what='a MATLAB v7.3 (HDF5) file') as f:
      a2 = common.check_shape(f['annot2'][()], (None, 1, 17, 2), path, 'annot2')
      a3 = common.check_shape(f['univ_annot3'][()], (len(a2), 1, 17, 3), path,
                              'univ_annot3')
      valid = np.reshape(f['valid_frame'][()], (-1,))
      common.check_shape(valid, (len(a2),), path, 'valid_frame')
    w, h = TEST_IMAGE_SIZE[ts]
    for i in np.flatnonzero(valid):
      xy = a2[i, 0][list(TEST_JOINTS)].astype(np.float64)
      if not _inside(xy, w, h):
        continue
      part, s = _labels(xy, a3[i, 0][list(TEST_JOINTS)] / 1000.0)
      center, scale = common.tight_box(xy)
      imgname = os.path.join(seq_dir, 'imageSequence', f'img_{i + 1:06d}.jpg')
      records.append(dict(imgname=imgname,
                          image_path=os.path.join(root, imgname),
                          center=center, scale=scale, part=part, S=s))
  return records
