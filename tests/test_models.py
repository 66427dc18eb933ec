"""HMR regressor: architecture sizes, initialisation, IEF, BatchNorm modes."""
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from spin_jax import models
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smpl_io
from tests import body_fixtures

_forward = nnx.jit(lambda model, x: model(x))


@pytest.fixture(scope='module')
def tiny():
  return models.create_model(models.tiny_config(), seed=0)


def _count(model, var_type=nnx.Param):
  return sum(int(np.prod(v.get_value().shape))
             for _, v in nnx.to_flat_state(nnx.state(model, var_type)))


@pytest.mark.parametrize('backbone,torchvision_params,fc_params', [
    # torchvision's parameter counts, less the 1000-way classifier.
    ('resnet18', 11_689_512, 512 * 1000 + 1000),
    ('resnet34', 21_797_672, 512 * 1000 + 1000),
    ('resnet50', 25_557_032, 2048 * 1000 + 1000),
])
def test_backbone_sizes_match_torchvision(backbone, torchvision_params,
                                          fc_params):
  model = nnx.eval_shape(lambda: models.HMR(
      models.ModelConfig(backbone=backbone), models.load_mean_params(),
      rngs=nnx.Rngs(0)))
  assert _count(model.backbone) == torchvision_params - fc_params
  nfeat = model.backbone.num_features
  # SPIN's head: 2205 (for ResNet-50) -> 1024 -> 1024 -> 144 / 10 / 3.
  nin = nfeat + 157
  head = (nin * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 144 + 144) + (
      1024 * 10 + 10) + (1024 * 3 + 3)
  assert _count(model) == torchvision_params - fc_params + head
  if backbone == 'resnet50':
    assert nin == 2205 and _count(model) == 26_977_501


def test_stem_backbone_for_smoke_tests():
  model = nnx.eval_shape(lambda: models.HMR(
      models.ModelConfig(backbone='stem', img_res=32, hidden_dim=32),
      models.load_mean_params(), rngs=nnx.Rngs(0)))
  assert model.backbone.num_features == 64
  assert _count(model.backbone) == 7 * 7 * 3 * 64 + 2 * 64


def test_initialisation_follows_spin(tiny):
  def bound(v):
    return float(np.abs(np.asarray(v.get_value())).max())
  # Heads: xavier-uniform gain 0.01 weights; PyTorch-default biases.
  for name, fout in (('decpose', 144), ('decshape', 10), ('deccam', 3)):
    layer = getattr(tiny, name)
    limit = 0.01 * math.sqrt(6.0 / (1024 + fout))
    assert 0.8 * limit < bound(layer.kernel) <= limit
    assert 0.5 / 32 < bound(layer.bias) <= 1 / 32
  # fc1/fc2: PyTorch default, U(+-1/sqrt(fan_in)) for weights and biases.
  fan_in = tiny.backbone.num_features + 157
  for layer, fin in ((tiny.fc1, fan_in), (tiny.fc2, 1024)):
    w = np.asarray(layer.kernel.get_value())
    assert 0.99 / math.sqrt(fin) < np.abs(w).max() <= 1 / math.sqrt(fin)
    np.testing.assert_allclose(w.std(), 1 / math.sqrt(3 * fin), rtol=0.01)
  # Backbone: kaiming normal (fan_out), BN scale 1 / bias 0.
  w = np.asarray(tiny.backbone.layer3[0].conv2.kernel.get_value())
  np.testing.assert_allclose(w.std(), math.sqrt(2 / (3 * 3 * 256)), rtol=0.02)
  np.testing.assert_array_equal(tiny.backbone.bn1.scale.get_value(), 1.0)


def test_forward_contract_and_ief_from_mean(tiny):
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)),
                       jnp.float32)
  tiny.eval()
  out = _forward(tiny, images)
  assert out['rotmat'].shape == (2, 24, 3, 3) and out['betas'].shape == (2, 10)
  assert out['cam'].shape == (2, 3) and out['pose6d'].shape == (2, 144)
  assert all(v.dtype == jnp.float32 for v in out.values())
  r = np.asarray(out['rotmat'], np.float64)
  np.testing.assert_allclose(r @ np.swapaxes(r, -1, -2), np.broadcast_to(
      np.eye(3), r.shape), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
  np.testing.assert_array_equal(out['rotmat'], _forward(tiny, images)['rotmat'])

  # With silent heads, 3 IEF iterations leave the mean parameters unchanged.
  zeroed = nnx.clone(tiny)
  for name in ('decpose', 'decshape', 'deccam'):
    layer = getattr(zeroed, name)
    layer.kernel.set_value(jnp.zeros_like(layer.kernel.get_value()))
    layer.bias.set_value(jnp.zeros_like(layer.bias.get_value()))
  out0 = _forward(zeroed, images)
  mean = models.load_mean_params()
  np.testing.assert_allclose(out0['pose6d'], np.broadcast_to(
      mean['pose6d'], (2, 144)), atol=1e-6)
  np.testing.assert_allclose(out0['betas'][1], mean['betas'], atol=1e-6)
  np.testing.assert_allclose(out0['cam'][0], mean['cam'], atol=1e-6)
  np.testing.assert_allclose(out0['rotmat'][0], rotations.rot6d_to_matrix(
      jnp.asarray(mean['pose6d']).reshape(24, 6)), atol=1e-6)

  # Only the deccam bias moves: each IEF iteration adds it once.
  bias = np.array([0.01, -0.02, 0.03], np.float32)
  zeroed.deccam.bias.set_value(jnp.asarray(bias))
  np.testing.assert_allclose(_forward(zeroed, images)['cam'][0],
                             mean['cam'] + 3 * bias, atol=1e-6)


def test_batchnorm_and_dropout_modes(tiny):
  model = nnx.clone(tiny)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(4, 64, 64, 3)),
                       jnp.float32)
  model.train()
  train_step = nnx.jit(lambda m, x: m(x))
  a = train_step(model, images)
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic.
  conv1 = np.asarray(model.backbone.conv1(images))  # (4,32,32,64)
  np.testing.assert_allclose(model.backbone.bn1.mean.get_value(),
                             0.1 * conv1.mean(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(model.backbone.bn1.var.get_value(),
                             0.9 + 0.1 * conv1.var(axis=(0, 1, 2)), rtol=1e-4)
  b = train_step(model, images)
  # Dropout draws new masks each call.
  assert not np.allclose(a['betas'], b['betas'])
  model.eval()
  assert model.drop1.deterministic and model.backbone.bn1.use_running_average
  c = _forward(model, images)
  np.testing.assert_array_equal(c['betas'], _forward(model, images)['betas'])


def test_default_mean_params_stand_upright_facing_the_camera():
  mean = models.load_mean_params()
  np.testing.assert_array_equal(mean['betas'], 0.0)
  np.testing.assert_allclose(mean['cam'], [0.9, 0.0, 0.0])
  rot = rotations.rot6d_to_matrix(jnp.asarray(mean['pose6d']).reshape(24, 6))
  # Global orientation: 180 degrees about x.
  np.testing.assert_allclose(rot[0], np.diag([1.0, -1.0, -1.0]), atol=1e-6)
  # Every 6D block is an exact rotation (round trip is the identity).
  np.testing.assert_allclose(rotations.matrix_to_rot6d(rot).reshape(-1),
                             mean['pose6d'], atol=1e-6)
  body = smpl_io.default_body_model('low')
  joints = jax.jit(smpl.forward)(body, jnp.asarray(mean['betas'])[None],
                                 rot[None, 1:], rot[None, :1]).smpl_joints[0]
  # Camera frame is y down: the head (15) is above (smaller y) the ankles
  # (7, 8); the body faces the camera: its left hip (1) is on the image's
  # right (+x), as for a person looking at the camera.
  assert joints[15, 1] < joints[7, 1] - 1.0
  assert joints[15, 1] < joints[8, 1] - 1.0
  assert joints[1, 0] > joints[2, 0]


def test_default_mean_params_are_reproducible():
  path = os.path.join(os.path.dirname(__file__), '..', 'data_prep',
                      'make_mean_params.py')
  spec = importlib.util.spec_from_file_location('make_mean_params', path)
  script = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(script)
  prior = os.path.join(os.path.dirname(models.__file__), 'assets',
                       'pose_prior_gmm08.npz')
  body_pose, _ = script.mean_body_pose(prior)
  made = script.make_mean_params(body_pose)
  shipped = models.load_mean_params()
  np.testing.assert_allclose(made['pose'], shipped['pose6d'], atol=1e-6)
  np.testing.assert_array_equal(made['shape'], shipped['betas'])
  np.testing.assert_array_equal(made['cam'], shipped['cam'])


def test_body_outputs_project_with_spin_camera():
  body = body_fixtures.random_body_model(num_vertices=200)
  rng = np.random.default_rng(2)
  aa = rng.normal(scale=0.3, size=(2, 24, 3)).astype(np.float32)
  pred = dict(rotmat=rotations.axis_angle_to_matrix(jnp.asarray(aa)),
              betas=jnp.asarray(rng.normal(size=(2, 10)), jnp.float32),
              cam=jnp.asarray([[0.9, 0.1, -0.2], [1.2, 0.0, 0.05]],
                              jnp.float32))
  body_outputs = jax.jit(models.body_outputs, static_argnames='vertices')
  out = body_outputs(pred, body)
  ref = jax.jit(smpl.forward)(body, pred['betas'], aa[:, 1:], aa[:, 0])
  np.testing.assert_allclose(out['joints'], ref.joints, atol=1e-5)
  np.testing.assert_allclose(out['vertices'], ref.vertices, atol=1e-5)
  tz = 2 * 5000 / (224 * np.array([0.9, 1.2]))
  np.testing.assert_allclose(out['cam_t'][:, 2], tz, rtol=1e-6)
  # Hand-computed pinhole projection, then pixels -> [-1,1].
  p = np.asarray(ref.joints) + np.asarray(out['cam_t'])[:, None]
  px = 5000 * p[..., :2] / p[..., 2:] + 112
  np.testing.assert_allclose(out['keypoints_2d'], px / 112 - 1, atol=1e-5)
  joints_only = body_outputs(pred, body, vertices=False)
  assert 'vertices' not in joints_only
  np.testing.assert_allclose(joints_only['keypoints_2d'], out['keypoints_2d'],
                             atol=1e-5)


def test_configs_and_bad_inputs(tiny, tmp_path):
  cfg = ml_collections.ConfigDict(dict(backbone='resnet34', img_res=128,
                                       dropout=0.3))
  assert models.ModelConfig.create(cfg) == models.ModelConfig(
      backbone='resnet34', img_res=128, dropout=0.3)
  with pytest.raises(ValueError, match="unknown keys \\['depth'\\]"):
    models.ModelConfig.create(dict(depth=50))
  with pytest.raises(ValueError, match='resnet51'):
    models.ModelConfig(backbone='resnet51')
  path = tmp_path / 'smpl_mean_params.npz'
  np.savez(path, pose=np.zeros(144), shape=np.zeros(10))
  with pytest.raises(KeyError, match="missing key 'cam'"):
    models.load_mean_params(path)
  np.savez(path, pose=np.zeros(72), shape=np.zeros(10), cam=np.zeros(3))
  with pytest.raises(ValueError, match="'pose' has 72 values, expected 144"):
    models.load_mean_params(path)
  # SPIN's file layout (float64 pose (144,)) loads as float32.
  np.savez(path, pose=np.ones(144), shape=np.zeros(10), cam=[0.9, 0, 0])
  mean = models.load_mean_params(path)
  assert mean['pose6d'].dtype == np.float32 and mean['cam'][0] == np.float32(0.9)
  with pytest.raises(FileNotFoundError, match='nope.npz'):
    models.load_mean_params(tmp_path / 'nope.npz')
  with pytest.raises(ValueError, match=r'\(B,H,W,3\)'):
    tiny(jnp.zeros((1, 3, 64, 64)))
