"""Fits table: frame round trips, guarded per-sample updates, initialisation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spin_jax import augment
from spin_jax import fits


def _poses(n, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(n, 72)) * 0.5).astype(np.float32)


def test_to_augmented_matches_pipeline_transform():
  """Our jitted transform equals the input pipeline's numpy one (rotate, flip)."""
  pose = _poses(6)
  rot = np.array([0.0, 30.0, -45.0, 60.0, 10.0, -5.0], np.float32)
  flip = np.array([0, 1, 0, 1, 1, 0], np.float32)
  got = np.asarray(jax.jit(fits.to_augmented)(pose, rot, flip))
  want = np.stack([augment.transform_pose(p, r, bool(f))
                   for p, r, f in zip(pose, rot, flip)])
  np.testing.assert_allclose(got, want, atol=2e-5)


def test_from_augmented_inverts_and_matches_pipeline():
  pose = _poses(6, seed=1)
  rot = np.array([0.0, 30.0, -45.0, 60.0, 10.0, -5.0], np.float32)
  flip = np.array([1, 1, 0, 0, 1, 0], np.float32)
  aug = fits.to_augmented(pose, rot, flip)
  back = np.asarray(fits.from_augmented(aug, rot, flip))
  # Compare rotations (axis-angle is unique here: angles < pi).
  np.testing.assert_allclose(back, pose, atol=2e-5)
  want = np.stack([augment.untransform_pose(p, r, bool(f))
                   for p, r, f in zip(np.asarray(aug), rot, flip)])
  np.testing.assert_allclose(back, want, atol=2e-5)


def test_is_better_rules():
  old = jnp.array([10.0, 10.0, 10.0, jnp.nan, 10.0, 10.0])
  has = jnp.array([True, True, True, True, False, True])
  new = jnp.array([9.0, 10.0, 11.0, 50.0, 80.0, jnp.inf])
  ok = jnp.array([True, True, True, True, True, True])
  got = fits.is_better(old, has, new, ok)
  # strictly lower; equal is not better; NaN old loses; no old fit loses;
  # a non-finite new loss never wins.
  np.testing.assert_array_equal(got, [True, False, False, True, True, False])
  got = fits.is_better(old, has, new, ~ok)
  assert not np.any(got)


def test_update_writes_only_replaced_finite_rows_and_resolves_duplicates():
  n = 5
  table = fits.init_table(n, np.zeros(82, np.float32), has_fit=True)
  index = jnp.array([1, 3, 3, 4, 0])
  rows = jnp.arange(5, dtype=jnp.float32)[:, None] + jnp.ones((5, 82))
  rows = rows.at[3, 7].set(jnp.nan)          # non-finite: never stored
  loss = jnp.array([1.0, 5.0, 2.0, 1.0, 3.0])
  replaced = jnp.array([True, True, True, True, False])
  new = jax.jit(fits.update)(table, index, rows, loss, replaced)
  p = np.asarray(new.params)
  np.testing.assert_array_equal(p[1], 1.0)     # row 1 <- entry 0
  np.testing.assert_array_equal(p[3], 3.0)     # duplicate: entry 2 (lower loss)
  np.testing.assert_array_equal(p[4], 0.0)     # NaN entry dropped
  np.testing.assert_array_equal(p[0], 0.0)     # not replaced
  np.testing.assert_array_equal(p[2], 0.0)     # not visited
  np.testing.assert_allclose(np.asarray(new.loss), [3.0, 1.0, np.inf, 2.0, 1.0])


def test_mean_params_row_and_init():
  from spin_jax import models
  from spin_jax import rotations
  mp = models.load_mean_params()
  row = fits.mean_params_row(mp)
  assert row.shape == (82,) and np.all(np.isfinite(row))
  # Axis-angle of the row reproduces the mean 6D rotations.
  r = np.asarray(rotations.axis_angle_to_matrix(jnp.asarray(row[:72]).reshape(24, 3)))
  want = np.asarray(rotations.rot6d_to_matrix(jnp.asarray(mp['pose6d']).reshape(24, 6)))
  np.testing.assert_allclose(r, want, atol=1e-5)
  np.testing.assert_array_equal(row[72:], mp['betas'])
  t = fits.init_table(3, row, has_fit=False)
  assert t.params.shape == (3, 82) and not np.any(np.asarray(t.has_fit))


def test_load_static_fits(tmp_path):
  a = np.random.default_rng(0).normal(size=(4, 82)).astype(np.float32)
  np.save(tmp_path / 'lsp-orig_fits.npy', a)
  fallback = np.full(82, 7.0, np.float32)
  table, missing = fits.load_static_fits(
      str(tmp_path), [('h36m', 0, 2), ('lsp-orig', 2, 4)], fallback)
  assert missing == ['h36m']
  np.testing.assert_array_equal(np.asarray(table.params[:2]), 7.0)
  np.testing.assert_array_equal(np.asarray(table.params[2:]), a)
  np.save(tmp_path / 'mpii_fits.npy', a[:, :80])
  with pytest.raises(ValueError, match=r'mpii_fits.npy.*\(3, 82\)'):
    fits.load_static_fits(str(tmp_path), [('mpii', 0, 3)], fallback)
