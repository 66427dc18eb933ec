"""The regressor's layers with backward passes written for XLA:CPU.

Same functions as flax's Conv (lax.conv_general_dilated), BatchNorm in
training mode and the stem's 3x3/2 max pool, with `jax.custom_vjp` backward
passes that avoid what made autodiff of the native ops slow on XLA:CPU.
Where the time went (ResNet-50, 224 px, batch 16, float32, one training step
of the regressor, 2-core AMD EPYC VM, jax 0.10.2, from jax.profiler traces
of the compiled step and XLA's optimised HLO; convolutions run
asynchronously, so their share is the step minus the rest):

| form                                   | step  | what dominated                         |
|----------------------------------------|-------|----------------------------------------|
| native (autodiff of flax's Conv and    | 7.6 s | BatchNorm statistics: XLA's own column |
| BatchNorm), the entry points' flags    |       | reductions, 113 ms for the sum and sum |
| (no YNNPACK fusions)                   |       | of squares of one 56x56x256 map; and   |
|                                        |       | 154 transposes, 2.4 s (below)          |
| native, YNNPACK 'reduce' fusions       | 5.6 s | the transposes: the 1x1 convs' weight  |
| (BN statistics 13 ms; but SMPLify      |       | gradients transpose activations, and   |
| 1.2-1.4x slower, so not used)          |       | XLA fuses the residual stream (3       |
|                                        |       | blocks of BN, adds, ReLUs) into each   |
|                                        |       | transpose, recomputed in cache-hostile |
|                                        |       | order: 420 ms for one 56x56x256 map,   |
|                                        |       | against 23 for a plain transpose       |
| these layers, no YNNPACK (the default) | 3.8 s | elementwise passes (~20 ms per 56x56   |
|                                        |       | x256 map, memory-bound), convolutions  |

What these layers do:
- weight gradients run behind a conditional (`_stored`): its operands are
  stored arrays, so XLA's transposes read memory instead of recomputing the
  network (an optimisation barrier does not do this: XLA:CPU expands it
  before fusion). Putting the whole gradient inside the conditional was 20x
  slower (the dot then ran outside XLA's threaded runtime paths).
- 1x1 convolutions are matrix products forward and backward.
- stride-2 kxk input gradients: one stride-1 convolution per input phase
  instead of XLA's input-dilated convolution (~5 % of the step).
- BatchNorm: flax's formula (statistics max(0, E[x^2] - E[x]^2) in at
  least float32) with the closed-form backward: two sums, one elementwise
  pass; every per-channel sum a matrix-vector product (6.5 ms for a 56x56x256
  map, XLA's reduction 40).
- max pool: the first maximum's tap kept as int8, one select per tap back.
Tried and dropped: weight gradients of the 3x3 convs as 9 tap-slice matrix
products (the slices' copies cost more than XLA's convolution).

`models` uses these only in training and on FAST_BACKWARD_BACKENDS
(`ModelConfig.layers='auto'`); inference and GPU/TPU keep the native ops.
Forward values equal the native ops' (the same XLA convolutions; BatchNorm
the same formula); gradients agree with autodiff of the native form to float
rounding (tests/test_layers.py, also in float64). NHWC activations, HWIO
kernels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# Backends on which models use these layers ('auto'); see the module doc.
FAST_BACKWARD_BACKENDS = ('cpu',)
_DIMS = ('NHWC', 'HWIO', 'NHWC')


def use_fast_layers(choice: str) -> bool:
  """'auto' (by backend), 'fast' or 'native' -> whether to use this module."""
  if choice == 'auto':
    return jax.default_backend() in FAST_BACKWARD_BACKENDS
  if choice not in ('fast', 'native'):
    raise ValueError(f'--config.model.layers={choice!r}: expected one of '
                     "'auto', 'fast', 'native'.")
  return choice == 'fast'


# ---------------------------------------------------------------------------
# Convolution.


def _native_conv(x, w, stride, padding):
  return lax.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding), (padding, padding)),
      dimension_numbers=_DIMS)


def _output_size(size, k, stride, padding):
  return (size + 2 * padding - k) // stride + 1


def _is_pointwise(w, padding):
  return w.shape[0] == 1 and padding == 0


def _subsample(x, stride):  # (B,H,W,C) -> every stride-th row and column
  return x[:, ::stride, ::stride, :] if stride > 1 else x


def _phase_taps(k, stride, padding, a, size_out, size_in):
  """One input phase of a strided conv, along one axis.

  Input index r = stride*m + a meets output y = m + d through tap
  i = a + padding - stride*d. Returns the taps in ascending d and the
  (low, high) padding of the output gradient for the stride-1 correlation
  dx_a[m] = sum_t gpad[m + t] * w[taps[t]].
  """
  ds = [d for d in range(-k, k + 1) if 0 <= a + padding - stride * d < k]
  taps = [a + padding - stride * d for d in ds]
  rows = -(-(size_in - a) // stride)  # input indices in this phase
  return taps, (-ds[0], rows + ds[-1] - size_out)


def _phase_input_grad(g, w, stride, padding, h, wd):
  """dL/dx (B,H,W,Ci) of a strided conv: one stride-1 conv per input phase.

  g (B,Ho,Wo,Co), w (k,k,Ci,Co); H and W are multiples of the stride. XLA:CPU
  would lower this gradient to an input-dilated convolution instead.
  """
  k, b, cin = w.shape[0], g.shape[0], w.shape[2]
  _, ho, wo, _ = g.shape
  rows = []
  for a in range(stride):
    rt, rpad = _phase_taps(k, stride, padding, a, ho, h)
    row = []
    for c in range(stride):
      ct, cpad = _phase_taps(k, stride, padding, c, wo, wd)
      sub = jnp.swapaxes(w[np.array(rt)][:, np.array(ct)], 2, 3)  # (kr,kc,Co,Ci)
      row.append(lax.conv_general_dilated(g, sub, (1, 1), (rpad, cpad),
                                          dimension_numbers=_DIMS))
    rows.append(jnp.stack(row, axis=3))  # (B,H/s,W/s,s,Ci)
  return jnp.stack(rows, axis=2).reshape(b, h, wd, cin)  # (B,H/s,s,W/s,s,Ci)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x, w, stride: int, padding: int):
  """lax.conv_general_dilated NHWC/HWIO, square kernel, symmetric padding.

  x (B,H,W,Ci), w (k,k,Ci,Co) -> (B,Ho,Wo,Co). 1x1 kernels are matrix
  products; others XLA's convolution. Gradients: see the module doc.
  """
  return _conv_forward(x, w, stride, padding)


def _conv_forward(x, w, stride, padding):
  if _is_pointwise(w, padding):
    return jnp.einsum('bhwi,io->bhwo', _subsample(x, stride), w[0, 0])
  return _native_conv(x, w, stride, padding)


def _conv_fwd(x, w, stride, padding):
  return _conv_forward(x, w, stride, padding), (x, w)


def _conv_bwd(stride, padding, res, g):
  x, w = res
  _, h, wd, _ = x.shape
  dw = _weight_grad(*_stored(x, g, w), w, stride, padding)
  if _is_pointwise(w, padding):
    dxs = jnp.einsum('bhwo,io->bhwi', g, w[0, 0])
    if stride == 1:
      return dxs, dw
    return jnp.zeros_like(x).at[:, ::stride, ::stride, :].set(dxs), dw
  if stride > 1 and not (h % stride or wd % stride):
    dx = _phase_input_grad(g, w, stride, padding, h, wd)
  else:
    _, vjp = jax.vjp(lambda x_: _native_conv(x_, w, stride, padding), x)
    (dx,) = vjp(g)
  return dx.astype(x.dtype), dw


def _weight_grad(x, g, w, stride, padding):
  """dL/dw (k,k,Ci,Co) from x (B,H,W,Ci) and g = dL/dout (B,Ho,Wo,Co)."""
  if _is_pointwise(w, padding):
    dw = jnp.einsum('bhwi,bhwo->io', _subsample(x, stride), g)
    return dw[None, None].astype(w.dtype)
  _, vjp = jax.vjp(lambda w_: _native_conv(x, w_, stride, padding), w)
  return vjp(g)[0]


def _stored(x, g, w):
  """x and g passed through a conditional XLA cannot fold.

  A weight gradient contracts over batch and positions, so XLA:CPU
  transposes x or g for it, and fuses the elementwise ops that produced them
  (BatchNorm, ReLU, residual adds: a whole residual stream, recomputed) into
  that transpose, whose cache-hostile order then costs ~10x a plain
  transpose. A conditional's operands are stored arrays: inside it the
  transpose reads memory. The predicate is true unless w holds a NaN (the
  step is then non-finite anyway, and dw NaN).
  """
  pred = w.reshape(-1)[0] == w.reshape(-1)[0]
  nan = lambda v: v * jnp.nan  # noqa: E731
  return tuple(lax.cond(pred, lambda v: v, nan, v) for v in (x, g))


conv2d.defvjp(_conv_fwd, _conv_bwd)


# ---------------------------------------------------------------------------
# BatchNorm, training mode.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm_train(x, scale, bias, epsilon: float):
  """flax BatchNorm in training mode: (y, batch mean, batch variance).

  x (B,H,W,C) in the compute dtype; statistics in at least float32 with
  flax's fast variance max(0, E[x^2] - E[x]^2); y in x's dtype. The mean and
  variance outputs carry no gradient (they update the running averages).
  """
  y, mean, var, _ = _bn_forward(x, scale, bias, epsilon)
  return y, mean, var


def _channel_sum(v):
  """(B,H,W,C) -> (C,) sum, as a matrix-vector product: XLA:CPU's own
  column reductions are ~6x slower (40 vs 6.5 ms for a 56x56x256 map)."""
  flat = v.reshape(-1, v.shape[-1])
  return jnp.ones((flat.shape[0],), v.dtype) @ flat


def _bn_forward(x, scale, bias, epsilon):
  acc = jnp.promote_types(x.dtype, jnp.float32)
  xf = x.astype(acc)
  n = x.shape[0] * x.shape[1] * x.shape[2]
  mean = _channel_sum(xf) / n
  mean2 = _channel_sum(jnp.square(xf)) / n
  var = jnp.maximum(0.0, mean2 - jnp.square(mean))
  rstd = lax.rsqrt(var + epsilon)
  y = (xf - mean) * (rstd * scale.astype(acc)) + bias.astype(acc)
  return y.astype(x.dtype), mean, var, rstd


def _bn_fwd(x, scale, bias, epsilon):
  y, mean, var, rstd = _bn_forward(x, scale, bias, epsilon)
  return (y, mean, var), (x, scale, mean, rstd)


def _bn_bwd(epsilon, res, cotangents):
  del epsilon
  x, scale, mean, rstd = res
  gy = cotangents[0]
  acc = mean.dtype
  n = x.shape[0] * x.shape[1] * x.shape[2]
  xhat = (x.astype(acc) - mean) * rstd
  gyf = gy.astype(acc)
  dbias = _channel_sum(gyf)
  dscale = _channel_sum(gyf * xhat)
  k = scale.astype(acc) * rstd
  dx = k * (gyf - (dbias + xhat * dscale) / n)
  return (dx.astype(x.dtype), dscale.astype(scale.dtype),
          dbias.astype(scale.dtype))


batch_norm_train.defvjp(_bn_fwd, _bn_bwd)


# ---------------------------------------------------------------------------
# Max pool 3x3, stride 2, padding 1.


@jax.custom_vjp
def max_pool_3x3_s2(x):
  """torchvision's stem pool: (B,H,W,C) -> (B,Ho,Wo,C), -inf padding.

  The gradient goes to the first maximum of each window in row-major order
  (PyTorch's choice; autodiff of nested maxima splits ties instead).
  """
  return _pool_forward(x)[0]


def pool_windows(x):
  """The 9 views (B,Ho,Wo,C) of a 3x3/2 pool over x (B,H,W,C), -inf padded
  by 1, in row-major tap order: view t=(i,j) holds xpad[:, 2y+i, 2x+j]."""
  _, h, w, _ = x.shape
  ho, wo = _output_size(h, 3, 2, 1), _output_size(w, 3, 2, 1)
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  return [xp[:, i:i + 2 * ho - 1:2, j:j + 2 * wo - 1:2, :]
          for i in range(3) for j in range(3)]


def _pool_forward(x):
  out = arg = None
  for t, s in enumerate(pool_windows(x)):
    if out is None:
      out, arg = s, jnp.zeros(s.shape, jnp.int8)
    else:
      better = s > out
      out = jnp.where(better, s, out)
      arg = jnp.where(better, jnp.int8(t), arg)
  return out, arg


def _pool_fwd(x):
  out, arg = _pool_forward(x)
  return out, (arg, x.shape)


def _pool_bwd(res, g):
  arg, shape = res
  _, h, w, _ = shape
  dxp = None
  for t in range(9):
    i, j = divmod(t, 3)
    part = jnp.where(arg == t, g, jnp.zeros((), g.dtype))
    # Back to padded-input positions 2*y + i, 2*x + j (interior padding 1).
    cfg = ((0, 0, 0), (i, h + 2 - i - (2 * part.shape[1] - 1), 1),
           (j, w + 2 - j - (2 * part.shape[2] - 1), 1), (0, 0, 0))
    placed = lax.pad(part, jnp.zeros((), g.dtype), cfg)
    dxp = placed if dxp is None else dxp + placed
  return (dxp[:, 1:h + 1, 1:w + 1, :],)


max_pool_3x3_s2.defvjp(_pool_fwd, _pool_bwd)
