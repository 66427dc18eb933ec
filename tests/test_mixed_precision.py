"""--config.model.dtype=bfloat16: bfloat16 compute, float32 everything else.

Tolerance (stated in README, "On an accelerator"): with the same weights, a
ResNet-18 regressor in bfloat16 predicts the 6D pose, betas and camera within
3% of the largest float32 value (measured ~1%), and rotation-matrix entries
within 0.15 (Gram-Schmidt amplifies small 6D errors; measured ~0.07).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import _train_testlib as tl
from spin_jax import fits as fits_lib
from spin_jax import models
from spin_jax import parallel
from spin_jax import step as step_lib

tl.enable_compile_cache()

REL_TOL = 0.03      # pose6d, betas, cam: fraction of the largest |float32 value|
ROTMAT_ATOL = 0.15  # rotation-matrix entries


def _eval_outputs(dtype):
  cfg = models.ModelConfig(backbone='resnet18', img_res=32, hidden_dim=64,
                           dtype=dtype)
  model = models.create_model(cfg, seed=0)
  # Larger heads than SPIN's init, so the outputs depend on the features.
  for head in (model.decpose, model.decshape, model.deccam):
    head.kernel[...] = head.kernel[...] * 100.0
  model.eval()
  images = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  out = nnx.jit(lambda m, x: m(x))(model, images)
  return out, nnx.state(model, nnx.Param)


def test_bfloat16_predictions_match_float32():
  ref, ref_params = _eval_outputs('float32')
  out, params = _eval_outputs('bfloat16')
  for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)):
    assert b.dtype == jnp.float32  # parameters stay float32: same weights
    np.testing.assert_array_equal(a, b)
  for key in ('pose6d', 'betas', 'cam', 'rotmat'):
    assert out[key].dtype == jnp.float32, key  # body model & losses: float32
    a, b = np.asarray(ref[key]), np.asarray(out[key])
    tol = ROTMAT_ATOL if key == 'rotmat' else REL_TOL * np.abs(a).max()
    np.testing.assert_allclose(b, a, rtol=0, atol=tol, err_msg=key)
    # ... and the outputs really differ between images (not a trivial match).
    assert np.abs(a - a.mean(0)).max() > 5 * np.abs(a - b).max(), key


def test_bfloat16_train_step_keeps_float32_state():
  cfg, bm, prior = tl.tiny_setup(**{'model.dtype': 'bfloat16'})
  model = step_lib.create_model(cfg)
  tx = step_lib.make_optimizer(cfg)
  row = fits_lib.mean_params_row(models.load_mean_params())
  table = fits_lib.init_table(tl.NUM_ROWS, row, has_fit=True)
  graphdef, state = step_lib.create_train_state(cfg, model, table, tx)
  mesh = parallel.make_mesh()
  state = parallel.replicate(state, mesh)
  before = jax.device_get(state.params)
  batch = parallel.shard_batch(tl.synthetic_batch(
      bm, cfg.batch_size, cfg.model.img_res, tl.NUM_ROWS, seed=0), mesh)
  step = step_lib.make_train_step(cfg, graphdef, tx, mesh)
  state, metrics = step(state, batch, parallel.replicate(bm, mesh),
                        parallel.replicate(prior, mesh))
  assert bool(metrics['finite']) and int(state.step) == 1
  for part in (state.params, state.model_state, state.opt_state, state.fits):
    for leaf in jax.tree.leaves(part):
      if jnp.issubdtype(leaf.dtype, jnp.floating):
        assert leaf.dtype == jnp.float32
  changed = jax.tree.map(lambda a, b: bool(np.any(a != np.asarray(b))),
                         before, jax.device_get(state.params))
  assert any(jax.tree.leaves(changed))  # the step trained


def test_unknown_dtype_names_the_flag():
  with pytest.raises(ValueError, match='--config.model.dtype'):
    models.ModelConfig(dtype='float16')
