"""spin_jax.layers (hand-written backward passes) against autodiff of the
native ops: lax.conv_general_dilated, flax's BatchNorm, lax.reduce_window.

In float64 the two forms agree to rounding (1e-10 relative), which pins the
formulas; in float32 the whole network's gradients agree to 1e-4 relative.
"""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from spin_jax import layers
from spin_jax import models


@contextlib.contextmanager
def _x64():
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  try:
    yield
  finally:
    jax.config.update('jax_enable_x64', previous)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _native_conv(stride, padding):
  return lambda x, w: lax.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding), (padding, padding)),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@pytest.mark.parametrize('k,stride,padding,size', [
    (3, 1, 1, 8), (3, 2, 1, 8), (3, 2, 1, 7), (1, 1, 0, 6), (1, 2, 0, 8),
    (7, 2, 3, 12)])
def test_conv2d_value_and_gradients_equal_autodiff_of_lax_conv(
    k, stride, padding, size):
  with _x64():
    rng = np.random.default_rng(k * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, size, size, 3)))
    w = jnp.asarray(rng.normal(size=(k, k, 3, 5)))
    ref, ref_vjp = jax.vjp(_native_conv(stride, padding), x, w)
    out, vjp = jax.vjp(
        jax.jit(lambda x, w: layers.conv2d(x, w, stride, padding)), x, w)
    g = jnp.asarray(rng.normal(size=ref.shape))
    assert out.shape == ref.shape
    assert _rel(out, ref) < 1e-12
    for got, want in zip(vjp(g), ref_vjp(g)):
      assert _rel(got, want) < 1e-12


def test_conv2d_weight_gradient_is_nan_only_for_a_nan_kernel():
  # The weight gradient runs behind a conditional on w[0] == w[0].
  x = jnp.ones((1, 4, 4, 2))
  w = jnp.ones((3, 3, 2, 2)).at[0, 0, 0, 0].set(jnp.nan)
  _, vjp = jax.vjp(lambda w: layers.conv2d(x, w, 1, 1), w)
  assert np.all(np.isnan(vjp(jnp.ones((1, 4, 4, 2)))[0]))


def test_batch_norm_train_equals_flax_batchnorm():
  with _x64():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, 5, 4, 6)) * 2.0 + 0.5)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, size=6))
    bias = jnp.asarray(rng.normal(size=6))
    bn = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-5, dtype=jnp.float64,
                       param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(bn)
    paths, treedef = jax.tree_util.tree_flatten_with_path(state)

    def flax_bn(x, scale, bias):
      values = {'scale': scale, 'bias': bias}
      leaves = [values.get(getattr(p[0], 'key', None), v) for p, v in paths]
      m = nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, leaves))
      y = m(x, use_running_average=False)
      return y, m.mean[...], m.var[...]

    (ref, ref_mean, ref_var), ref_vjp = jax.vjp(flax_bn, x, scale, bias)
    (out, mean, var), vjp = jax.vjp(
        lambda *a: layers.batch_norm_train(*a, 1e-5), x, scale, bias)
    assert _rel(out, ref) < 1e-12
    # flax stores 0.9 * running + 0.1 * batch (running mean 0, var 1), in
    # float32 variables.
    assert _rel(0.1 * mean, ref_mean) < 1e-6
    assert _rel(0.9 + 0.1 * var, ref_var) < 1e-6
    g = jnp.asarray(rng.normal(size=x.shape))
    zeros, zeros32 = jnp.zeros(6), jnp.zeros(6, jnp.float32)
    for got, want in zip(vjp((g, zeros, zeros)),
                         ref_vjp((g, zeros32, zeros32))):
      assert _rel(got, want) < 1e-10


def test_max_pool_equals_reduce_window_and_routes_to_the_first_maximum():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 9, 8, 3)), jnp.float32)
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  ref, ref_vjp = jax.vjp(
      lambda v: lax.reduce_window(v, -jnp.inf, lax.max, (1, 3, 3, 1),
                                  (1, 2, 2, 1), pad), x)
  out, vjp = jax.vjp(layers.max_pool_3x3_s2, x)
  g = jnp.asarray(rng.normal(size=ref.shape), jnp.float32)
  np.testing.assert_array_equal(out, ref)
  np.testing.assert_allclose(vjp(g)[0], ref_vjp(g)[0], atol=1e-6)
  # A tie: the whole gradient goes to the window's first maximum (PyTorch).
  tie = jnp.zeros((1, 3, 3, 1))
  (dx,) = jax.vjp(layers.max_pool_3x3_s2, tie)[1](jnp.ones((1, 2, 2, 1)))
  assert float(dx.sum()) == 4.0
  assert float(dx[0, 0, 0, 0]) == 1.0  # first of the (0,0) window's 4


@pytest.fixture
def _tiny_bottleneck(monkeypatch):
  monkeypatch.setitem(models.RESNET_LAYOUTS, 'bottleneck_tiny',
                      ((1, 1, 1, 1), True))


def _loss(model, x):
  out = model(x)
  return (jnp.mean(out['rotmat'] ** 2) + jnp.mean(out['betas'] ** 2)
          + jnp.mean(out['cam'] ** 2))


def _train_outputs(backbone, form, dtype, x):
  model = models.create_model(models.ModelConfig(
      backbone=backbone, img_res=x.shape[1], dropout=0.0, hidden_dim=64,
      layers=form, dtype=dtype))
  model.train()

  @nnx.jit
  def run(model, x):
    out = model(x)
    grads = nnx.grad(_loss)(model, x)
    return out, grads

  out, grads = run(model, x)
  stats = nnx.state(model, nnx.BatchStat)  # updated by the forward above
  leaves = lambda t: [np.asarray(v) for v in jax.tree.leaves(t)]  # noqa: E731
  return leaves(out), leaves(grads), leaves(stats)


@pytest.mark.parametrize('backbone', ['resnet18', 'bottleneck_tiny'])
def test_network_fast_form_equals_native_form(backbone, _tiny_bottleneck):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(4, 64, 64, 3))
  native = _train_outputs(backbone, 'native', 'float32',
                          jnp.asarray(x, jnp.float32))
  fast = _train_outputs(backbone, 'fast', 'float32',
                        jnp.asarray(x, jnp.float32))
  for got, want in zip(fast[0], native[0]):  # forward outputs
    assert _rel(got, want) < 1e-5
  # Gradients: the whole gradient vector to 1e-3 relative, and every
  # parameter to 1e-3 of the largest gradient entry. That is float32
  # rounding: with jax's default XLA:CPU flags (the test process's) YNNPACK
  # fusions alone move the native form's gradient by 3.6e-4 here; with the
  # entry points' flags (cli.CPU_XLA_FLAGS) the two forms agree to 9e-7.
  # Float64 below pins the formulas to rounding.
  flat_fast = np.concatenate([g.ravel() for g in fast[1]]).astype(np.float64)
  flat_native = np.concatenate([g.ravel() for g in native[1]]).astype(
      np.float64)
  global_rel = (np.linalg.norm(flat_fast - flat_native)
                / np.linalg.norm(flat_native))
  assert global_rel < 1e-3, global_rel
  scale = np.max(np.abs(flat_native))
  assert np.max(np.abs(flat_fast - flat_native)) < 1e-3 * scale
  for got, want in zip(fast[2], native[2]):  # running statistics
    assert _rel(got, want) < 1e-4
  with _x64():  # the same in float64: the forms agree to rounding
    native = _train_outputs(backbone, 'native', 'float64', jnp.asarray(x))
    fast = _train_outputs(backbone, 'fast', 'float64', jnp.asarray(x))
  assert fast[1][0].dtype == np.float64
  assert max(_rel(g, w) for g, w in zip(fast[1], native[1])) < 1e-10
  assert max(_rel(g, w) for g, w in zip(fast[0], native[0])) < 1e-12


def test_layers_choice_is_checked():
  assert layers.use_fast_layers('fast') and not layers.use_fast_layers('native')
  assert layers.use_fast_layers('auto') == (jax.default_backend() == 'cpu')
  with pytest.raises(ValueError, match=r"--config.model.layers='quick'"):
    models.ModelConfig(layers='quick')


def test_float64_needs_x64():
  if jax.config.jax_enable_x64:
    pytest.skip('64-bit jax already on')
  with pytest.raises(ValueError, match='JAX_ENABLE_X64'):
    models.ModelConfig(dtype='float64')
