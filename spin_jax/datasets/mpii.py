"""MPII Human Pose, training set in the Stacked-Hourglass annotation (SPIN's source).

manual_dir layout:
    mpii/annot/train.h5   (or mpii/train.h5) from the Stacked-Hourglass repo:
                          'imgname' (N,) strings (or (N, L) character codes),
                          'center' (N, 2), 'scale' (N,), 'part' (N, 16, 2)
    mpii/images/<imgname>.jpg
Keeps the samples whose 16 joints all have positive coordinates; centre and
scale are used unchanged; the joints go to J24 slots MPII_TO_J24 with conf 1.
"""
from __future__ import annotations

import os

import numpy as np

from spin_jax.datasets import common

MPII_TO_J24 = (0, 1, 2, 3, 4, 5, 14, 15, 12, 13, 6, 7, 8, 9, 10, 11)


def _names(raw, path: str) -> list[str]:
  raw = np.asarray(raw)
  if raw.dtype.kind in 'SOU' and raw.ndim == 1:
    return [x.decode('utf-8') if isinstance(x, bytes) else str(x) for x in raw]
  if raw.dtype.kind in 'iuf' and raw.ndim == 2:  # character codes, 0-padded
    return [''.join(chr(int(c)) for c in row if c > 0) for row in raw]
  raise common.DatasetFormatError(
      f"{path}: key 'imgname' has dtype {raw.dtype} shape {raw.shape}, expected "
      '(N,) strings or (N, L) character codes')


def read_mpii_train(manual_dir: str) -> list[dict]:
  root = common.require_dir(os.path.join(manual_dir, 'mpii'),
                            'MPII (images/ and annot/train.h5)')
  path = os.path.join(root, 'annot', 'train.h5')
  if not os.path.isfile(path):
    path = os.path.join(root, 'train.h5')
  common.require_file(path, 'the Stacked-Hourglass MPII annotation '
                      "(keys imgname, center, scale, part)")
  with common.open_h5(path, ('imgname', 'center', 'scale', 'part')) as f:
    names = _names(f['imgname'][()], path)
    n = len(names)
    center = common.check_shape(f['center'][()], (n, 2), path, 'center')
    scale = common.check_shape(np.reshape(f['scale'][()], (-1,)), (n,), path,
                               'scale')
    parts = common.check_shape(f['part'][()], (n, 16, 2), path, 'part')
  records = []
  for name, c, s, p in zip(names, center, scale, parts):
    if not np.all(p > 0):
      continue
    part = np.zeros((24, 3), np.float32)
    part[list(MPII_TO_J24), :2] = p
    part[list(MPII_TO_J24), 2] = 1
    imgname = os.path.join('images', name)
    records.append(dict(imgname=imgname, image_path=os.path.join(root, imgname),
                        center=np.float32(c), scale=np.float32(s), part=part))
  return records
