"""PyTorch SPIN HMR -> our NNX HMR: same outputs on the same input.

The reference (tests/torch_reference.py, shared with the regressor benchmark)
is an independent PyTorch re-statement of SPIN's hmr.py architecture
(torchvision ResNet names, IEF head, 6D layout), built only to produce state
dicts with the original key names and reference outputs.
"""
import functools
import importlib.util
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip('torch')
from torch import nn  # noqa: E402
from torch_reference import TorchHMR  # noqa: E402

from spin_jax import convert  # noqa: E402
from spin_jax import models  # noqa: E402

# A bottleneck ResNet with one block per stage: every ResNet-50 key kind
# (conv3/bn3, downsample.0/.1) at a fraction of the cost.
TINY_BOTTLENECK = 'resnet_bottleneck_tiny'


@pytest.fixture(autouse=True)
def _tiny_bottleneck_layout(monkeypatch):
  monkeypatch.setitem(models.RESNET_LAYOUTS, TINY_BOTTLENECK,
                      ((1, 1, 1, 1), True))


def _random_torch_hmr(depths, bottleneck, seed=0):
  torch.manual_seed(seed)
  mean = models.load_mean_params()
  net = TorchHMR(depths, bottleneck, mean)
  with torch.no_grad():  # non-trivial BN statistics and affine parameters
    for m in net.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
    for head in (net.decpose, net.decshape, net.deccam):
      head.weight.mul_(10.0)  # make the IEF residuals matter
  return net.eval()


def _state_dict_numpy(net, prefix=''):
  return {prefix + k: v.detach().numpy() for k, v in net.state_dict().items()}


def _images(n=2, res=64, seed=1):
  return np.random.default_rng(seed).normal(size=(n, res, res, 3)).astype(
      np.float32)


def _torch_outputs(net, images):
  with torch.no_grad():
    return [t.numpy() for t in net(torch.from_numpy(images.transpose(0, 3, 1, 2)))]


@functools.cache
def _convert_script():  # once: the script defines absl flags
  path = os.path.join(os.path.dirname(__file__), '..', 'experiments',
                      'convert_checkpoint.py')
  spec = importlib.util.spec_from_file_location('convert_checkpoint', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize('backbone,depths,bottleneck,prefix', [
    ('resnet18', (2, 2, 2, 2), False, ''),
    (TINY_BOTTLENECK, (1, 1, 1, 1), True, 'module.'),  # DataParallel names
])
def test_converted_checkpoint_matches_torch(backbone, depths, bottleneck,
                                            prefix, tmp_path):
  net = _random_torch_hmr(depths, bottleneck)
  # SPIN's checkpoint layout: the state dict under 'model', plus extras.
  ckpt = tmp_path / 'model_checkpoint.pt'
  torch.save({'model': {prefix + k: v for k, v in net.state_dict().items()},
              'optimizer': torch.optim.Adam(net.parameters()).state_dict(),
              'epoch': 3, 'total_step_count': 1000,
              'dataset_perm': torch.arange(10)}, ckpt)
  summary = _convert_script().convert_files(
      out=str(tmp_path / 'spin'), spin_checkpoint=str(ckpt))
  assert backbone in summary
  assert sorted(os.listdir(tmp_path)) == ['model_checkpoint.pt', 'spin']

  images = _images()
  ref_rotmat, ref_betas, ref_cam = _torch_outputs(net, images)
  assert np.abs(ref_betas).max() > 0.05  # the heads move off the mean
  model = convert.load_converted_model(str(tmp_path / 'spin'))
  assert model.config == models.ModelConfig(backbone=backbone)
  model.eval()
  out = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images))
  np.testing.assert_allclose(out['rotmat'], ref_rotmat, atol=1e-4)
  np.testing.assert_allclose(out['betas'], ref_betas, atol=1e-4)
  np.testing.assert_allclose(out['cam'], ref_cam, atol=1e-4)
  np.testing.assert_allclose(model.init_pose6d.get_value(),
                             net.init_pose.numpy()[0])


def test_torchvision_backbone_only(tmp_path):
  net = _random_torch_hmr((2, 2, 2, 2), False, seed=3)
  sd = {k: v for k, v in _state_dict_numpy(net).items()
        if k.split('.')[0] in ('conv1', 'bn1', 'layer1', 'layer2', 'layer3',
                               'layer4')}
  sd['fc.weight'] = np.zeros((1000, 512), np.float32)  # ImageNet classifier
  sd['fc.bias'] = np.zeros((1000,), np.float32)
  model = models.create_model(models.tiny_config())
  head_before = np.asarray(model.fc1.kernel[...])
  convert.load_backbone_state_dict(model, sd)
  np.testing.assert_array_equal(model.fc1.kernel[...], head_before)
  np.testing.assert_array_equal(
      model.backbone.layer2[0].downsample_conv.kernel[...],
      sd['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0))
  # The converted backbone features equal torch's pooled features.
  model.eval()
  images = _images(res=64, seed=4)
  with torch.no_grad():
    ref = net.features(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  features = nnx.jit(lambda m, x: m.backbone(x))(model, jnp.asarray(images))
  np.testing.assert_allclose(features, ref.numpy(), atol=1e-4)

  convert.save_converted(str(tmp_path / 'imagenet'), model, kind='backbone')
  fresh = convert.empty_hmr(models.tiny_config())
  conv = convert.load_pretrained(fresh, str(tmp_path / 'imagenet'))
  assert conv.kind == 'backbone' and conv.mean_params is None
  np.testing.assert_array_equal(fresh.backbone.conv1.kernel[...],
                                model.backbone.conv1.kernel[...])


def test_resnet50_key_names_map_to_our_model():
  # Shapes only: every ResNet-50 key lands on a leaf of the same shape.
  model = nnx.eval_shape(lambda: models.HMR(models.ModelConfig(),
                                            models.load_mean_params(),
                                            rngs=nnx.Rngs(0)))
  ours = {p: v.get_value().shape
          for p, v in nnx.to_flat_state(nnx.state(model))}
  keys = {'conv1.weight': (64, 3, 7, 7),
          'layer1.0.conv3.weight': (256, 64, 1, 1),
          'layer1.0.bn3.running_var': (256,),
          'layer2.0.conv2.weight': (128, 128, 3, 3),
          'layer4.0.downsample.0.weight': (2048, 1024, 1, 1),
          'layer4.0.downsample.1.num_batches_tracked': (),
          'layer4.2.bn3.weight': (2048,),
          'fc1.weight': (1024, 2205), 'decpose.bias': (144,),
          'init_pose': (1, 144)}
  flat = convert.torch_to_flat({k: np.zeros(s, np.float32)
                                for k, s in keys.items()})
  assert len(flat) == len(keys) - 1  # num_batches_tracked is dropped
  for path, value in flat.items():
    assert path in ours, path
    assert ours[path] == value.shape, path
  assert ('backbone', 'layer4', 0, 'downsample_conv', 'kernel') in flat


def test_bad_state_dicts_name_the_problem():
  net = _random_torch_hmr((2, 2, 2, 2), False)
  sd = _state_dict_numpy(net)
  with pytest.raises(ValueError, match='deconv.weight'):
    convert.torch_to_flat(dict(sd, **{'deconv.weight': np.zeros(3)}))
  del sd['layer3.1.bn2.running_var']
  with pytest.raises(ValueError, match='layer3.1.bn2.var'):
    convert.hmr_from_state_dict(sd)
  sd = _state_dict_numpy(net)
  sd['fc1.weight'] = sd['fc1.weight'][:, :100]
  with pytest.raises(ValueError, match='fc1.kernel'):
    convert.hmr_from_state_dict(sd)
  with pytest.raises(ValueError, match='is not a known ResNet'):
    convert.infer_backbone({'layer1.0.conv1.weight': np.zeros(1)})
  with pytest.raises(FileNotFoundError, match='conversion.json'):
    convert.load_converted('/nonexistent/dir')


def test_float64_network_matches_torch_float64_to_1e10(monkeypatch):
  """--config.model.dtype=float64: parameters and compute in float64, so the
  converted network reproduces PyTorch's float64 outputs to rounding."""
  import jax  # pylint: disable=import-outside-toplevel
  previous = jax.config.jax_enable_x64
  jax.config.update('jax_enable_x64', True)
  try:
    net = _random_torch_hmr((1, 1, 1, 1), True).double()
    monkeypatch.setitem(models.RESNET_LAYOUTS, TINY_BOTTLENECK,
                        ((1, 1, 1, 1), True))
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    model = convert.hmr_from_state_dict(state, {'dtype': 'float64'})
    model.eval()
    assert model.backbone.conv1.kernel[...].dtype == jnp.float64
    images = _images().astype(np.float64)
    with torch.no_grad():
      ref = [t.numpy() for t in net(torch.from_numpy(
          images.transpose(0, 3, 1, 2)))]
    out = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(images))
    assert out['rotmat'].dtype == jnp.float64
    for key, want in zip(('rotmat', 'betas', 'cam'), ref):
      np.testing.assert_allclose(np.asarray(out[key]), want, rtol=0,
                                 atol=1e-10)
  finally:
    jax.config.update('jax_enable_x64', previous)
