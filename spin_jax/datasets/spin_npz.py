"""Importer of SPIN's released dataset npz files (data/dataset_extras/*.npz).

Keys (SPIN_FACTS "Dataset npz schema"; only imgname, center, scale are in every
file): imgname (N,), center (N, 2), scale (N,), and optionally part (N, 24, 3),
openpose (N, 25, 3), S (N, 24, 4), pose (N, 72), shape (N, 10), has_smpl (N,),
gender (N,) 'm'/'f', maskname (N,), partname (N,). Images are found at
image_dir/imgname; LSP masks at mask_dir/maskname (UPi-S1h root).
Defaults for absent keys are SPIN's (SPIN_DETAILS D2, see schema.py).
"""
from __future__ import annotations

import os

import numpy as np

from spin_jax import safe_pickle
from spin_jax.datasets import common

_SHAPES = dict(center=(2,), part=(24, 3), openpose=(25, 3), S=(24, 4),
               pose=(72,), shape=(10,))


def read_spin_npz(path: str, image_dir: str, mask_dir: str | None = None
                  ) -> list[dict]:
  common.require_file(path, "SPIN's dataset npz (imgname, center, scale, ...)")
  try:  # string columns are plain arrays; an object one is read as data only
    data = safe_pickle.load_npz(path, "SPIN's dataset npz")
  except safe_pickle.UnsafePickleError as e:  # names the file and the global
    raise common.DatasetFormatError(str(e)) from None
  except Exception as e:
    raise common.DatasetFormatError(f'cannot read {path} as .npz: {e}') from e
  for k in ('imgname', 'center', 'scale'):
    if k not in data:
      raise common.DatasetFormatError(
          f'{path}: no key {k!r} (every SPIN npz has imgname, center, scale; '
          f'found {sorted(data)})')
  names = [str(x) for x in data['imgname']]
  n = len(names)
  cols = {'scale': common.check_shape(
      np.reshape(data['scale'], (-1,)), (n,), path, 'scale')}
  for k, shp in _SHAPES.items():
    if k in data:
      cols[k] = common.check_shape(data[k], (n,) + shp, path, k)
  for k in ('has_smpl', 'gender', 'maskname', 'partname'):
    if k in data:
      cols[k] = common.check_shape(np.reshape(data[k], (-1,)), (n,), path, k)
  labels = ('part', 'openpose', 'S', 'pose', 'maskname', 'partname')
  if not any(k in cols for k in labels):
    raise common.DatasetFormatError(
        f'{path}: no labels at all (none of {", ".join(labels)}); a SPIN dataset '
        'needs 2D keypoints, 3D joints, SMPL parameters or masks to train or '
        'evaluate on.')
  if ('maskname' in cols or 'partname' in cols) and mask_dir is None:
    raise common.DatasetFormatError(
        f'{path} has maskname/partname: pass the UPi-S1h folder as mask_dir '
        '(--mask_dir)')
  records = []
  for i, name in enumerate(names):
    r = dict(imgname=name, image_path=os.path.join(image_dir, name))
    for k, col in cols.items():
      r[k] = col[i]
    if 'pose' in cols and 'has_smpl' not in cols:
      r['has_smpl'] = 1.0
    if 'gender' in cols:  # SPIN: 'm' -> 0, anything else -> 1
      r['gender'] = 0 if str(r['gender']) == 'm' else 1
    for k, pk in (('maskname', 'mask_path'), ('partname', 'part_path')):
      if k in r:
        r[k] = str(r[k])
        r[pk] = os.path.join(mask_dir, r[k])
    records.append(r)
  return records
