"""SPIN's static fits (<dataset>_fits.npy, (N, 82) = 72 pose + 10 betas) and the
mean-parameter table used where no file exists (H36M, SPIN_DETAILS D3)."""
from __future__ import annotations

import os

import cv2
import numpy as np

from spin_jax.datasets import common, schema


def load_static_fits(path: str, num_rows: int | None = None) -> np.ndarray:
  """(N, 82) float32; rows must match the dataset's npz order and count."""
  common.require_file(path, '(N, 82) static fits = 72 pose + 10 betas')
  try:
    fits = np.load(path, allow_pickle=False)
  except Exception as e:
    raise common.DatasetFormatError(f'cannot read {path} as .npy: {e}') from e
  if fits.ndim != 2 or fits.shape[1] != schema.NUM_FIT:
    raise common.DatasetFormatError(
        f'{path}: shape {fits.shape}, expected (N, {schema.NUM_FIT}) '
        '= 72 pose + 10 betas')
  if num_rows is not None and len(fits) != num_rows:
    raise common.DatasetFormatError(
        f'{path}: {len(fits)} rows but the dataset has {num_rows} examples '
        '(fits rows follow the dataset npz order one to one)')
  if not np.all(np.isfinite(fits)):
    raise common.DatasetFormatError(f'{path}: non-finite values')
  return fits.astype(np.float32)


def rot6d_to_axis_angle(x: np.ndarray) -> np.ndarray:
  """SPIN's 6D layout (..., 6) -> axis-angle (..., 3), numpy (float64 inside)."""
  a = np.asarray(x, np.float64).reshape(-1, 3, 2)
  b1 = a[:, :, 0] / np.linalg.norm(a[:, :, 0], axis=-1, keepdims=True)
  a2 = a[:, :, 1]
  b2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
  b2 /= np.linalg.norm(b2, axis=-1, keepdims=True)
  rot = np.stack([b1, b2, np.cross(b1, b2)], axis=-1)  # columns
  aa = np.stack([cv2.Rodrigues(r)[0].reshape(3) for r in rot])
  return aa.reshape(np.shape(x)[:-1] + (3,))


def mean_params_fit(path: str | None = None) -> np.ndarray:
  """(82,) = mean pose (24 x 6D -> axis-angle) + mean betas (SPIN issue #48).

  path: SPIN's smpl_mean_params.npz, or None for spin_jax's shipped default.
  """
  if path is None:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets',
                        'mean_params_default.npz')
  common.require_file(path, 'mean parameters npz (pose (144,), shape (10,))')
  with np.load(path, allow_pickle=False) as d:
    if 'pose' not in d or 'shape' not in d:
      raise common.DatasetFormatError(
          f'{path}: expected keys pose (144,) and shape (10,), found {d.files}')
    pose6d = np.asarray(d['pose'], np.float64).reshape(24, 6)
    betas = np.asarray(d['shape'], np.float64).reshape(-1)[:schema.NUM_BETAS]
  pose = rot6d_to_axis_angle(pose6d).reshape(schema.NUM_POSE)
  return np.concatenate([pose, betas]).astype(np.float32)


def save_table(path: str, table: np.ndarray) -> None:
  """Atomically writes an (N, 82) table as .npy."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp.npy'
  np.save(tmp, np.asarray(table, np.float32))
  os.replace(tmp, path)
