"""The fits table: per training sample, the best SMPL fit found so far.

Rows are 82 numbers (72 axis-angle pose + 10 betas) in the sample's original,
un-augmented frame, indexed by `batch['index']` (dataset offset + sample index,
the order of the datasets' training npz files, as SPIN's `<dataset>_fits.npy`).

Per step (SPIN_DETAILS, "Training loop details"): look rows up, move them into
the augmented frame (Rz(-rot), then flip), score them with the least-squares
camera, compare with the new SMPLify fit, keep the better one, and store it
after undoing the augmentation (flip, then Rz(+rot)). A row only ever changes
to a fit that is finite and strictly better in that step's frame.
"""
from __future__ import annotations

import os
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import camera
from spin_jax import constants
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smplify

NUM_FIT_PARAMS = 82  # 72 axis-angle pose + 10 betas


@flax.struct.dataclass
class FitsTable:
  """Device-resident table; a pytree so it lives in the train state."""
  params: jax.Array    # (N, 82) best fit, un-augmented frame
  loss: jax.Array      # (N,) loss of the kept fit when last visited (inf: never)
  has_fit: jax.Array   # (N,) bool; False: no fit yet, the first finite one wins

  @property
  def num_rows(self) -> int:
    return self.params.shape[0]


# ----------------------------------------------------------------- initialisation
def mean_params_row(mean_params: dict) -> np.ndarray:
  """SPIN mean parameters (6D pose, betas) -> one (82,) axis-angle fit row."""
  rotmat = rotations.rot6d_to_matrix(
      jnp.asarray(mean_params['pose6d'], jnp.float32).reshape(24, 6))
  pose = rotations.matrix_to_axis_angle(rotmat).reshape(72)
  pose = jnp.where(jnp.isfinite(pose), pose, 0.0)
  return np.concatenate([np.asarray(pose),
                         np.asarray(mean_params['betas'], np.float32)[:10]])


def init_table(num_rows: int, row: np.ndarray, has_fit: bool) -> FitsTable:
  """Every row set to `row` (e.g. the mean parameters)."""
  params = np.broadcast_to(np.asarray(row, np.float32), (num_rows, NUM_FIT_PARAMS))
  return FitsTable(params=jnp.array(params),
                   loss=jnp.full((num_rows,), jnp.inf, jnp.float32),
                   has_fit=jnp.full((num_rows,), has_fit, bool))


def load_static_fits(static_dir: str, datasets: Sequence[tuple[str, int, int]],
                     fallback_row: np.ndarray) -> tuple[FitsTable, list[str]]:
  """Builds the table from SPIN's `<name>_fits.npy` files.

  Args:
    static_dir: folder holding `<name>_fits.npy`, (N_name, 82) each.
    datasets: (name, offset, size) per training dataset, offsets into the table.
    fallback_row: row for datasets without a file (SPIN has none for h36m;
      SPIN_DETAILS D3: initialise from the mean parameters).
  Returns:
    The table and the names that fell back to `fallback_row`.
  """
  num_rows = max((off + n for _, off, n in datasets), default=0)
  params = np.broadcast_to(np.asarray(fallback_row, np.float32),
                           (num_rows, NUM_FIT_PARAMS)).copy()
  missing = []
  for name, off, n in datasets:
    path = os.path.join(static_dir, f'{name}_fits.npy')
    if not os.path.exists(path):
      missing.append(name)
      continue
    fits = np.load(path, allow_pickle=False)
    if fits.shape != (n, NUM_FIT_PARAMS):
      raise ValueError(
          f'{path}: expected shape ({n}, {NUM_FIT_PARAMS}) (one row of 72 pose + '
          f'10 betas per sample of dataset {name!r}), got {fits.shape}.')
    if not np.all(np.isfinite(fits)):
      raise ValueError(f'{path}: contains non-finite values.')
    params[off:off + n] = fits
  table = FitsTable(params=jnp.asarray(params),
                    loss=jnp.full((num_rows,), jnp.inf, jnp.float32),
                    has_fit=jnp.ones((num_rows,), bool))
  return table, missing


# ------------------------------------------------------------ frame conversion
def to_augmented(pose: jax.Array, rot_deg: jax.Array,
                 is_flipped: jax.Array) -> jax.Array:
  """Original frame -> augmented: global orient Rz(-rot), then flip. (B,72)."""
  go = rotations.rotate_global_orient(pose[..., :3], -jnp.deg2rad(rot_deg))
  pose = jnp.concatenate([go, pose[..., 3:]], axis=-1)
  flipped = rotations.flip_pose(pose)
  return jnp.where(is_flipped[..., None] > 0, flipped, pose)


def from_augmented(pose: jax.Array, rot_deg: jax.Array,
                   is_flipped: jax.Array) -> jax.Array:
  """Inverse of to_augmented: flip again (its own inverse), then Rz(+rot)."""
  pose = jnp.where(is_flipped[..., None] > 0, rotations.flip_pose(pose), pose)
  go = rotations.rotate_global_orient(pose[..., :3], jnp.deg2rad(rot_deg))
  return jnp.concatenate([go, pose[..., 3:]], axis=-1)


def lookup(table: FitsTable, index: jax.Array, rot_deg: jax.Array,
           is_flipped: jax.Array):
  """Rows for a batch, in the augmented frame: (pose (B,72), betas (B,10), has_fit)."""
  row = table.params[index]                                    # (B, 82)
  pose = to_augmented(row[:, :72], rot_deg, is_flipped)
  return pose, row[:, 72:], table.has_fit[index]


# ----------------------------------------------------------------- scoring
def keypoints_to_pixels(keypoints: jax.Array) -> jax.Array:
  """Batch keypoints in [-1, 1] -> pixels of the 224 crop, confidence kept."""
  half = constants.IMG_RES / 2.0
  return jnp.concatenate([(keypoints[..., :2] + 1.0) * half, keypoints[..., 2:]],
                         axis=-1)


def score_fit(body_model, pose: jax.Array, betas: jax.Array,
              keypoints_px: jax.Array):
  """SPIN's stored-fit score: least-squares camera, then per-joint loss.

  The camera comes from the 24 GT joints (25..48) with all their
  confidences (SPIN_DETAILS step 3); the loss ignores the five SMPLify joints.
  Returns (camera_translation (B,3), per-sample loss (B,) = mean over 49).
  """
  joints = smpl.joints_forward(body_model, betas, pose[:, 3:], pose[:, :3])  # (B,49,3)
  cam_t = camera.estimate_translation(
      joints[:, 25:], keypoints_px[:, 25:],
      focal_length=constants.FOCAL_LENGTH, img_size=constants.IMG_RES)
  joint_loss = smplify.reprojection_loss(body_model, pose[:, :3], pose[:, 3:],
                                         betas, cam_t, keypoints_px)   # (B,49)
  return cam_t, jnp.mean(joint_loss, axis=-1)


# ------------------------------------------------------------------ update
def is_better(old_loss: jax.Array, old_has_fit: jax.Array, new_loss: jax.Array,
              new_finite: jax.Array) -> jax.Array:
  """True where the new fit replaces the old: finite and strictly lower.

  An old fit whose loss is not finite (or that does not exist) loses to any
  finite new fit; a non-finite new fit never wins.
  """
  old = jnp.where(old_has_fit & jnp.isfinite(old_loss), old_loss, jnp.inf)
  return new_finite & jnp.isfinite(new_loss) & (new_loss < old)


def _winners(index: jax.Array, key: jax.Array) -> jax.Array:
  """(B,) bool: the one entry per distinct index with the smallest key.

  Batches may repeat a sample (SPIN draws datasets at random); scattering
  duplicates would leave the result to the backend's order, so exactly one
  entry per row writes: lowest key, then lowest position. O(B^2), B is small.
  """
  b = index.shape[0]
  pos = jnp.arange(b)
  same = index[:, None] == index[None, :]                          # (B, B)
  key = jnp.where(jnp.isnan(key), jnp.inf, key)
  beats = (key[None, :] < key[:, None]) | (
      (key[None, :] == key[:, None]) & (pos[None, :] < pos[:, None]))
  return ~jnp.any(same & beats, axis=1)


def update(table: FitsTable, index: jax.Array, kept_params_unaug: jax.Array,
           kept_loss: jax.Array, replaced: jax.Array) -> FitsTable:
  """Writes a batch's kept fits back (rows in the un-augmented frame).

  Only `replaced` entries with all-finite parameters change `params`; every
  visited row records its kept loss. Duplicate indices resolve to the entry
  with the lowest kept loss.
  """
  n = table.num_rows
  replaced = replaced & jnp.all(jnp.isfinite(kept_params_unaug), axis=-1)
  win = _winners(index, kept_loss)
  drop = jnp.full_like(index, n)  # out of range: mode='drop' skips it
  p_idx = jnp.where(win & replaced, index, drop)
  v_idx = jnp.where(win, index, drop)
  params = table.params.at[p_idx].set(
      kept_params_unaug.astype(table.params.dtype), mode='drop')
  loss = table.loss.at[v_idx].set(kept_loss.astype(table.loss.dtype), mode='drop')
  has_fit = table.has_fit.at[p_idx].set(True, mode='drop')
  return FitsTable(params=params, loss=loss, has_fit=has_fit)
