"""SPIN's regressor: a torchvision-layout ResNet and the HMR head, in Flax NNX.

HMR (Kanazawa et al. 2018) with SPIN's 6D rotation output: a ResNet feature
(global average pool) is refined by iterative error feedback (IEF), starting
from the mean SMPL parameters. Images are NHWC, float32, normalised with
ImageNet statistics (constants.IMG_NORM_MEAN / IMG_NORM_STD).

The module tree mirrors the PyTorch names (conv1, bn1, layer1..4, fc1, fc2,
decpose, decshape, deccam), so spin_jax.convert maps SPIN's released
checkpoint and torchvision ImageNet weights one key to one leaf.

Build with `create_model(config, mean_params=None, seed=0)` (one jitted
initialisation; `HMR(config, mean, rngs=...)` works too but compiles one RNG
kernel per parameter shape), `tiny_config()` for CPU tests and quickstart.
`body_outputs(pred, body_model)` adds the posed body, its 49 joints, the
camera translation and the projected 2D keypoints.

Differences from the original, by design:
- Global average pooling is a mean over H, W (SPIN uses a fixed 7x7 pool,
  which equals the mean at 224 px), so other input sizes work too.
- The stem's max pool is written as a max of strided slices (same values),
  whose gradient is much faster on XLA:CPU (see max_pool_3x3_s2).
- flax's BatchNorm updates its running variance with the biased batch
  variance; PyTorch uses the unbiased one. The factor n / (n - 1) with
  n = batch x H x W is below 1.003 for every layer at batch 16, 224 px.

Mixed precision (`ModelConfig.dtype='bfloat16'`, --config.model.dtype): convs
and dense layers compute in bfloat16; parameters, BatchNorm statistics (flax
reduces them in float32) and so the optimiser state stay float32, and the
outputs are cast to float32, so the body model, SMPLify and the losses never
see bfloat16.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spin_jax import camera
from spin_jax import constants
from spin_jax import layers
from spin_jax import smpl
from spin_jax.rotations import rot6d_to_matrix

NUM_POSE6D = 6 * constants.NUM_SMPL_JOINTS  # 144
NUM_CAM = 3

DEFAULT_MEAN_PARAMS = os.path.join(os.path.dirname(__file__), 'assets',
                                   'mean_params_default.npz')

# Blocks per stage, and whether the stage uses bottleneck blocks.
RESNET_LAYOUTS = {
    'resnet18': ((2, 2, 2, 2), False),
    'resnet34': ((3, 4, 6, 3), False),
    'resnet50': ((3, 4, 6, 3), True),
    'resnet101': ((3, 4, 23, 3), True),
    'resnet152': ((3, 8, 36, 3), True),
    # Tests and smoke runs only: the stem (conv, BN, ReLU, max pool) and the
    # mean pool, 64 features. Compiles in a fraction of ResNet-18's time.
    'stem': ((0, 0, 0, 0), False),
}


COMPUTE_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
                  'float64': jnp.float64}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Regressor settings.

  Attributes:
    backbone: one of RESNET_LAYOUTS ('resnet50' is SPIN's).
    img_res: side of the square input crop in pixels. Only the input size
      depends on it: the predicted camera always refers to SPIN's 224-px crop
      camera (focal length 5000), so outputs are comparable across sizes.
    dropout: dropout rate after fc1 and fc2 of the head.
    num_iterations: IEF iterations.
    hidden_dim: width of fc1 and fc2.
    dtype: compute dtype: 'float32', 'bfloat16' (parameters stay float32)
      or 'float64' (parameters too; needs jax_enable_x64).
    layers: 'auto' (spin_jax.layers' hand-written gradients in training on
      the backends where they are faster: XLA:CPU), 'fast' or 'native'
      (autodiff of flax's Conv and BatchNorm). Same function either way.
  """
  backbone: str = 'resnet50'
  img_res: int = constants.IMG_RES
  dropout: float = 0.5
  num_iterations: int = 3
  hidden_dim: int = 1024
  dtype: str = 'float32'
  layers: str = 'auto'

  def __post_init__(self):
    if self.backbone not in RESNET_LAYOUTS:
      raise ValueError(f'ModelConfig.backbone={self.backbone!r}: expected one '
                       f'of {sorted(RESNET_LAYOUTS)}.')
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f'ModelConfig.dropout={self.dropout}: expected [0, 1).')
    if self.num_iterations < 1 or self.img_res < 32:
      raise ValueError(f'ModelConfig: num_iterations={self.num_iterations} '
                       f'must be >= 1 and img_res={self.img_res} >= 32.')
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f'--config.model.dtype={self.dtype!r}: expected one of '
                       f'{sorted(COMPUTE_DTYPES)}.')
    if self.dtype == 'float64' and not jax.config.jax_enable_x64:
      raise ValueError("--config.model.dtype='float64' needs 64-bit jax: set "
                       'JAX_ENABLE_X64=1 (or jax_enable_x64) first.')
    layers.use_fast_layers(self.layers)  # validates the choice

  @property
  def compute_dtype(self):
    return COMPUTE_DTYPES[self.dtype]

  @property
  def param_dtype(self):
    return jnp.float64 if self.dtype == 'float64' else jnp.float32

  @classmethod
  def create(cls, config: Any = None) -> 'ModelConfig':
    """From a ModelConfig, an ml_collections ConfigDict or a mapping."""
    if config is None:
      return cls()
    if isinstance(config, cls):
      return config
    if hasattr(config, 'to_dict'):  # ml_collections.ConfigDict
      config = config.to_dict()
    if not isinstance(config, Mapping):
      raise TypeError(f'Model config: expected ModelConfig, ConfigDict or '
                      f'dict, got {type(config).__name__}.')
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - names)
    if unknown:
      raise ValueError(f'Model config: unknown keys {unknown}; '
                       f'valid keys are {sorted(names)}.')
    return cls(**config)


def tiny_config() -> ModelConfig:
  """ResNet-18 at 64 px: for CPU tests and the quickstart."""
  return ModelConfig(backbone='resnet18', img_res=64)


# ---------------------------------------------------------------------------
# Mean parameters.


def load_mean_params(path: str | None = None) -> dict[str, np.ndarray]:
  """Mean SMPL parameters that the IEF loop starts from.

  Args:
    path: SPIN's smpl_mean_params.npz (keys pose (144,) in SPIN's 6D layout,
      shape (10,), cam (3,)), or None for the shipped default
      (spin_jax/assets/mean_params_default.npz, same keys; see
      data_prep/make_mean_params.py for how it is made).
  Returns:
    dict(pose6d (144,), betas (10,), cam (3,)) float32 numpy arrays.
  """
  path = DEFAULT_MEAN_PARAMS if path is None else os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'Mean parameters file not found: {path}')
  with np.load(path, allow_pickle=False) as data:
    expected = {'pose': NUM_POSE6D, 'shape': constants.NUM_BETAS,
                'cam': NUM_CAM}
    out = {}
    for key, size in expected.items():
      if key not in data:
        raise KeyError(f'{path}: missing key {key!r}; expected keys '
                       f'pose (144,), shape (10,), cam (3,), found '
                       f'{sorted(data.files)}.')
      value = np.asarray(data[key], np.float32).reshape(-1)
      if value.shape != (size,):
        raise ValueError(f'{path}: key {key!r} has {value.size} values, '
                         f'expected {size}.')
      if not np.all(np.isfinite(value)):
        raise ValueError(f'{path}: key {key!r} has non-finite values.')
      out[key] = value
  return dict(pose6d=out['pose'], betas=out['shape'], cam=out['cam'])


class MeanParam(nnx.Variable):
  """Non-trainable state (SPIN's init_pose/init_shape/init_cam buffers)."""


# ---------------------------------------------------------------------------
# ResNet (torchvision v1.5 layout).

# torchvision's conv init: kaiming normal, fan_out, ReLU gain.
_conv_init = nnx.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def _param_dtype(dtype):
  # float64 networks hold float64 parameters; the others float32.
  return jnp.float64 if dtype == jnp.float64 else jnp.float32


def _conv(cin, cout, kernel, stride, padding, rngs, dtype=jnp.float32):
  pad = ((padding, padding), (padding, padding))
  return nnx.Conv(cin, cout, (kernel, kernel), strides=(stride, stride),
                  padding=pad, use_bias=False, kernel_init=_conv_init,
                  dtype=dtype, param_dtype=_param_dtype(dtype), rngs=rngs)


def _bn(features, rngs, dtype=jnp.float32):
  # PyTorch momentum 0.1 == flax momentum 0.9; eps 1e-5 as in PyTorch. With a
  # bfloat16 dtype, flax still reduces the statistics in float32.
  return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, dtype=dtype,
                       param_dtype=_param_dtype(dtype), rngs=rngs)


def conv_apply(conv: nnx.Conv, x, fast: bool):
  """conv(x), through spin_jax.layers' gradients when `fast`."""
  if not fast:
    return conv(x)
  kernel = conv.kernel[...].astype(conv.dtype)
  return layers.conv2d(x.astype(conv.dtype), kernel, conv.strides[0],
                       conv.padding[0][0])


def bn_apply(bn: nnx.BatchNorm, x, fast: bool):
  """bn(x), through spin_jax.layers' gradients when `fast` and training.

  Updates the running statistics exactly as flax's BatchNorm does.
  """
  if not fast or bn.use_running_average:
    return bn(x)
  dtype = bn.dtype
  # flax casts the affine parameters to the compute dtype first.
  scale, bias = bn.scale[...].astype(dtype), bn.bias[...].astype(dtype)
  y, mean, var = layers.batch_norm_train(x.astype(dtype), scale, bias,
                                         bn.epsilon)
  m = bn.momentum
  for stat, batch in ((bn.mean, mean), (bn.var, var)):
    running = stat[...]
    stat[...] = jax.lax.stop_gradient(
        m * running + (1 - m) * batch).astype(running.dtype)
  return y


class BasicBlock(nnx.Module):
  """Two 3x3 convs (ResNet-18/34)."""
  expansion = 1

  def __init__(self, cin: int, width: int, stride: int, *,
               rngs: nnx.Rngs, dtype=jnp.float32):
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 3, stride, 1, rngs, dtype)
    self.bn1 = _bn(width, rngs, dtype)
    self.conv2 = _conv(width, cout, 3, 1, 1, rngs, dtype)
    self.bn2 = _bn(cout, rngs, dtype)
    self._init_shortcut(cin, cout, stride, rngs, dtype)

  def _init_shortcut(self, cin, cout, stride, rngs, dtype):
    # Projection (1x1 conv + BN) when the shape changes, identity otherwise.
    if stride != 1 or cin != cout:
      self.downsample_conv = _conv(cin, cout, 1, stride, 0, rngs, dtype)
      self.downsample_bn = _bn(cout, rngs, dtype)
    else:
      self.downsample_conv = self.downsample_bn = None

  def _conv_bn(self, conv, bn, x, fast):
    return bn_apply(bn, conv_apply(conv, x, fast), fast)

  def _shortcut(self, x, fast):
    if self.downsample_conv is None:
      return x
    return self._conv_bn(self.downsample_conv, self.downsample_bn, x, fast)

  def __call__(self, x, fast: bool = False):
    y = nnx.relu(self._conv_bn(self.conv1, self.bn1, x, fast))
    y = self._conv_bn(self.conv2, self.bn2, y, fast)
    return nnx.relu(y + self._shortcut(x, fast))


class Bottleneck(BasicBlock):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 (ResNet-50 and up)."""
  expansion = 4

  def __init__(self, cin: int, width: int, stride: int, *,
               rngs: nnx.Rngs, dtype=jnp.float32):
    cout = width * self.expansion
    self.conv1 = _conv(cin, width, 1, 1, 0, rngs, dtype)
    self.bn1 = _bn(width, rngs, dtype)
    self.conv2 = _conv(width, width, 3, stride, 1, rngs, dtype)
    self.bn2 = _bn(width, rngs, dtype)
    self.conv3 = _conv(width, cout, 1, 1, 0, rngs, dtype)
    self.bn3 = _bn(cout, rngs, dtype)
    self._init_shortcut(cin, cout, stride, rngs, dtype)

  def __call__(self, x, fast: bool = False):
    y = nnx.relu(self._conv_bn(self.conv1, self.bn1, x, fast))
    y = nnx.relu(self._conv_bn(self.conv2, self.bn2, y, fast))
    y = self._conv_bn(self.conv3, self.bn3, y, fast)
    return nnx.relu(y + self._shortcut(x, fast))


# Backends on which the stem's max pool is 9 strided slices (XLA:CPU, where
# reduce_window's gradient is slow); the others get lax.reduce_window, the
# form GPU/TPU compilers are built for. Chosen when tracing.
SLICE_MAX_POOL_BACKENDS = ('cpu',)


def max_pool_3x3_s2(x):
  """3x3 max pool, stride 2, padding 1 (-inf), as torchvision's stem.

  On XLA:CPU the max of 9 strided slices: same values as lax.reduce_window,
  and its gradient (elementwise selects) runs ~5x faster there than
  reduce_window's select_and_scatter. Ties split the gradient where PyTorch
  picks one element; after the ReLU ties are zeros, whose gradient is 0.
  (In training with the fast layers, layers.max_pool_3x3_s2 instead.)
  """
  if jax.default_backend() not in SLICE_MAX_POOL_BACKENDS:
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                                 (1, 3, 3, 1), (1, 2, 2, 1), pad)
  return functools.reduce(jnp.maximum, layers.pool_windows(x))


class ResNet(nnx.Module):
  """torchvision ResNet without the classifier: (B,H,W,3) -> (B,C) features.

  `layers` ('auto', 'fast', 'native'): see ModelConfig.layers.
  """

  def __init__(self, name: str = 'resnet50', *, rngs: nnx.Rngs,
               dtype=jnp.float32, layers: str = 'auto'):
    if name not in RESNET_LAYOUTS:
      raise ValueError(f'backbone {name!r}: expected one of '
                       f'{sorted(RESNET_LAYOUTS)}.')
    depths, bottleneck = RESNET_LAYOUTS[name]
    block = Bottleneck if bottleneck else BasicBlock
    self.layers = layers
    self.conv1 = _conv(3, 64, 7, 2, 3, rngs, dtype)
    self.bn1 = _bn(64, rngs, dtype)
    cin = 64
    for stage, (depth, width) in enumerate(zip(depths, (64, 128, 256, 512))):
      blocks = []
      for i in range(depth):
        stride = 2 if (i == 0 and stage > 0) else 1
        blocks.append(block(cin, width, stride, rngs=rngs, dtype=dtype))
        cin = width * block.expansion
      setattr(self, f'layer{stage + 1}', nnx.List(blocks))
    self.num_features = cin

  def __call__(self, x):  # (B,H,W,3) -> (B,C)
    # The hand-written gradients only where they pay: training (inference
    # keeps XLA's native forms), on the backends chosen by `layers`.
    fast = (not self.bn1.use_running_average and
            layers.use_fast_layers(self.layers))
    x = x.astype(self.conv1.dtype)
    x = nnx.relu(bn_apply(self.bn1, conv_apply(self.conv1, x, fast), fast))
    x = layers.max_pool_3x3_s2(x) if fast else max_pool_3x3_s2(x)
    for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
      for blk in stage:
        x = blk(x, fast)
    return jnp.mean(x, axis=(1, 2), dtype=jnp.promote_types(x.dtype,
                                                            jnp.float32))


# ---------------------------------------------------------------------------
# HMR head.


def _torch_linear(fin, fout, rngs, *, kernel_init=None, dtype=jnp.float32):
  """nnx.Linear with PyTorch's default init (kaiming-uniform a=sqrt(5)).

  Weights and biases are both U(+-1/sqrt(fan_in)).
  """
  bound = 1.0 / np.sqrt(fin)

  def bias_init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  if kernel_init is None:
    kernel_init = nnx.initializers.variance_scaling(1.0 / 3.0, 'fan_in',
                                                    'uniform')
  return nnx.Linear(fin, fout, kernel_init=kernel_init, bias_init=bias_init,
                    dtype=dtype, param_dtype=_param_dtype(dtype), rngs=rngs)


# Xavier-uniform with gain 0.01: bound 0.01 * sqrt(6 / (fan_in + fan_out)).
_head_init = nnx.initializers.variance_scaling(1e-4, 'fan_avg', 'uniform')


class HMR(nnx.Module):
  """SPIN's regressor: ResNet features + IEF head with 6D rotations.

  Usage::

    model = HMR(ModelConfig(), load_mean_params(), rngs=nnx.Rngs(0))
    model.eval()                       # BN running stats, no dropout
    out = model(images)                # images (B,H,W,3) normalised NHWC
    out['rotmat']  # (B,24,3,3)  out['betas'] (B,10)  out['cam'] (B,3)

  `model.train()` switches to batch statistics and dropout (which draws from
  rngs' 'dropout' stream, else 'default').
  """

  def __init__(self, config: Any = None,
               mean_params: Mapping[str, Any] | None = None, *,
               rngs: nnx.Rngs):
    self.config = config = ModelConfig.create(config)
    if mean_params is None:
      mean_params = load_mean_params()
    dtype = config.compute_dtype
    self.backbone = ResNet(config.backbone, rngs=rngs, dtype=dtype,
                           layers=config.layers)
    nfeat = self.backbone.num_features
    hidden = config.hidden_dim
    nin = nfeat + NUM_POSE6D + constants.NUM_BETAS + NUM_CAM
    self.fc1 = _torch_linear(nin, hidden, rngs, dtype=dtype)
    self.drop1 = nnx.Dropout(config.dropout, rngs=rngs)
    self.fc2 = _torch_linear(hidden, hidden, rngs, dtype=dtype)
    self.drop2 = nnx.Dropout(config.dropout, rngs=rngs)
    self.decpose = _torch_linear(hidden, NUM_POSE6D, rngs, dtype=dtype,
                                 kernel_init=_head_init)
    self.decshape = _torch_linear(hidden, constants.NUM_BETAS, rngs,
                                  dtype=dtype, kernel_init=_head_init)
    self.deccam = _torch_linear(hidden, NUM_CAM, rngs, dtype=dtype,
                                kernel_init=_head_init)
    sizes = dict(pose6d=NUM_POSE6D, betas=constants.NUM_BETAS, cam=NUM_CAM)
    for key, size in sizes.items():
      if key not in mean_params:
        raise KeyError(f'mean_params: missing {key!r}; expected keys '
                       f'{sorted(sizes)} (see load_mean_params).')
      value = jnp.asarray(mean_params[key],
                          config.param_dtype).reshape(-1)
      if value.shape != (size,):
        raise ValueError(f'mean_params[{key!r}]: {value.size} values, '
                         f'expected {size}.')
      setattr(self, f'init_{key}', MeanParam(value))

  def regress(self, features):
    """IEF from the mean parameters. features (B,C) -> (pose6d, betas, cam)."""
    b = features.shape[0]
    pose = jnp.broadcast_to(self.init_pose6d[...], (b, NUM_POSE6D))
    betas = jnp.broadcast_to(self.init_betas[...], (b, constants.NUM_BETAS))
    cam = jnp.broadcast_to(self.init_cam[...], (b, NUM_CAM))
    for _ in range(self.config.num_iterations):
      x = jnp.concatenate([features, pose, betas, cam], axis=-1)  # (B,2205)
      # No nonlinearity between fc1 and fc2, as in SPIN.
      x = self.drop1(self.fc1(x))
      x = self.drop2(self.fc2(x))
      # The estimates accumulate in float32 (the mean parameters' dtype),
      # also when the layers compute in bfloat16.
      pose = pose + self.decpose(x).astype(pose.dtype)
      betas = betas + self.decshape(x).astype(betas.dtype)
      cam = cam + self.deccam(x).astype(cam.dtype)
    return pose, betas, cam

  def __call__(self, images) -> dict[str, jax.Array]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'HMR expects images (B,H,W,3) NHWC, got shape '
                       f'{images.shape}.')
    features = self.backbone(images)  # (B,C)
    pose6d, betas, cam = self.regress(features)
    b = pose6d.shape[0]
    rotmat = rot6d_to_matrix(pose6d.reshape(b, constants.NUM_SMPL_JOINTS, 6))
    return dict(rotmat=rotmat, betas=betas, cam=cam, pose6d=pose6d)


def create_model(config: Any = None, mean_params: str | Mapping | None = None,
                 seed: int = 0) -> HMR:
  """HMR from a config and a mean-params path/dict (None: shipped default).

  Faster to build than `HMR(config, mean, rngs=nnx.Rngs(seed))` (same
  distributions, other random values): the initialisers run in one jitted
  program with XLA's RngBitGenerator ('unsafe_rbg' keys), instead of one
  threefry kernel compiled per parameter shape. Dropout keeps a threefry
  stream from `seed`.
  """
  config = ModelConfig.create(config)
  if mean_params is None or isinstance(mean_params, (str, os.PathLike)):
    mean_params = load_mean_params(mean_params)
  mean_params = {k: np.asarray(v, np.float32) for k, v in mean_params.items()}

  def build():
    rngs = nnx.Rngs(params=jax.random.key(seed, impl='unsafe_rbg'),
                    dropout=seed)
    return HMR(config, mean_params, rngs=rngs)

  return nnx.jit(build)()


# ---------------------------------------------------------------------------
# From the regressed parameters to the body and the image.


def body_outputs(pred: Mapping[str, jax.Array], body_model, *,
                 vertices: bool = True,
                 focal_length: float = constants.FOCAL_LENGTH,
                 img_res: int = constants.IMG_RES) -> dict[str, jax.Array]:
  """Adds the posed body and its projection to the regressor's output.

  Args:
    pred: HMR output (rotmat (B,24,3,3), betas (B,10), cam (B,3)).
    body_model: spin_jax.smpl.BodyModel (a pytree argument, so jit-able).
    vertices: False takes the joints-only path (no (B,V,3) mesh).
  Returns:
    pred plus joints (B,49,3), keypoints_2d (B,49,2) in [-1,1] of the
    224-px crop camera, cam_t (B,3), and vertices (B,V,3) if asked.
  """
  rotmat, betas = pred['rotmat'], pred['betas']
  out = dict(pred)
  if vertices:
    body = smpl.forward(body_model, betas, rotmat[:, 1:], rotmat[:, :1])
    out['vertices'] = body.vertices
    joints = body.joints
  else:
    joints = smpl.joints_forward(body_model, betas, rotmat[:, 1:],
                                 rotmat[:, :1])
  cam_t = camera.weak_perspective_to_translation(pred['cam'], focal_length,
                                                 img_res)
  # SPIN projects with principal point 0 and divides by res/2: the same as
  # principal point res/2 followed by 2 * px / res - 1.
  kp2d = camera.perspective_projection(joints, cam_t, focal_length,
                                       jnp.zeros(2, joints.dtype))
  out.update(joints=joints, cam_t=cam_t, keypoints_2d=kp2d / (img_res / 2.0))
  return out
