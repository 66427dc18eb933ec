"""SMPLify: hand-computed losses, stage-1 joint choice, recovery in both modes.

Compiles three configurations (faithful, fast, and a camera-only faithful
stage shared by the small tests) on a small random body model.
"""
import numpy as np
import jax
import jax.numpy as jnp
import pytest
from scipy import stats

import body_fixtures
from spin_jax import camera
from spin_jax import constants
from spin_jax import priors
from spin_jax import smpl
from spin_jax import smplify

_C = jnp.array([112.0, 112.0])
_IDS = np.asarray(constants.ANGLE_PRIOR_POSE_IDS)
_SIGNS = np.asarray(constants.ANGLE_PRIOR_SIGNS)
# Natural elbow/knee bends; the test prior's first component is centred there,
# so the synthetic truth is (nearly) the minimiser of the full objective.
_MU = np.zeros(69)
_MU[_IDS] = -_SIGNS * 1.5
_COVS = np.stack([np.eye(69) * 0.15**2, np.eye(69) * 0.3**2])
_WEIGHTS = np.array([0.7, 0.3])
_STAGE1 = smplify.SMPLifyConfig(mode='faithful', body_iterations=0)


@pytest.fixture(scope='module')
def model():
  return body_fixtures.random_body_model(num_vertices=240)


@pytest.fixture(scope='module')
def prior():
  return priors.gmm_prior_from_arrays(np.stack([_MU, np.zeros(69)]), _COVS, _WEIGHTS)


def _f32(x):
  return jnp.asarray(x, jnp.float32)


def _scene(model, b, seed=0):
  """Truth params, noise-free keypoints (B, 49, 3), and a network-like init."""
  rng = np.random.default_rng(seed)
  truth = smplify.FitParams(
      global_orient=_f32(np.array([np.pi, 0, 0]) + rng.normal(0, 0.2, (b, 3))),
      body_pose=_f32(_MU + rng.normal(0, 0.05, (b, 69))),
      betas=_f32(rng.normal(0, 0.05, (b, 10))),
      camera_translation=_f32(np.stack([rng.normal(0, .05, b), rng.normal(.1, .05, b),
                                        rng.uniform(40, 50, b)], -1)))
  px = _project(model, truth)
  keypoints = jnp.concatenate([px, jnp.ones((b, 49, 1))], -1)
  init = smplify.FitParams(
      global_orient=truth.global_orient + _f32(rng.normal(0, 0.1, (b, 3))),
      body_pose=truth.body_pose + _f32(rng.normal(0, 0.15, (b, 69))),
      betas=jnp.zeros_like(truth.betas),
      camera_translation=truth.camera_translation + _f32([0.03, -0.03, 0.2]))
  return truth, keypoints, init


def _project(model, p):
  joints = smpl.joints_forward(model, p.betas, p.body_pose, p.global_orient)
  return camera.perspective_projection(joints, p.camera_translation, 5000.0, _C)


def _gmof(x):
  return 1e4 * x**2 / (1e4 + x**2)


def test_losses_by_hand(model, prior):
  truth, keypoints, _ = _scene(model, 2, seed=1)
  kp = np.array(keypoints)
  kp[:, 0, :2] += [3.0, -4.0]  # OP Nose, conf 0.5
  kp[:, 0, 2] = 0.5
  kp[:, 1, :2] += [50.0, 0.0]  # OP Neck: ignored by SMPLify
  kp[:, 30, :2] += [0.0, 200.0]  # a GT joint, far off: GMoF saturates
  kp_before = kp.copy()
  per_joint = smplify.reprojection_loss(
      model, truth.global_orient, truth.body_pose, truth.betas,
      truth.camera_translation, jnp.asarray(kp))
  want = np.zeros((2, 49))
  want[:, 0] = 0.25 * (_gmof(3.0) + _gmof(4.0))
  want[:, 30] = _gmof(200.0)  # = 8000
  np.testing.assert_allclose(per_joint, want, rtol=1e-3, atol=2e-3)

  # The full stage-2 objective at the init, against scipy's Gaussian density.
  res = smplify.smplify(model, prior, truth, jnp.asarray(kp), _STAGE1)
  pose = np.asarray(truth.body_pose, np.float64)
  logdet_min = np.linalg.slogdet(_COVS)[1].min()
  gmm = np.min([-stats.multivariate_normal(m, c).logpdf(pose) - np.log(w)
                - 0.5 * logdet_min for m, c, w in zip([_MU, np.zeros(69)], _COVS, _WEIGHTS)], 0)
  angle = np.sum(np.exp(pose[:, _IDS] * _SIGNS)**2, -1)
  shape = np.sum(np.asarray(truth.betas, np.float64)**2, -1)
  objective = want.sum(-1) + 4.78**2 * gmm + 15.2**2 * angle + 5.0**2 * shape
  np.testing.assert_allclose(res.init_objective, objective, rtol=1e-4)
  np.testing.assert_array_equal(kp, kp_before)  # the caller's keypoints untouched


@pytest.mark.parametrize('openpose_confident', [True, False])
def test_stage1_torso_choice(model, prior, openpose_confident):
  truth, keypoints, _ = _scene(model, 2, seed=2)
  kp = np.array(keypoints)
  gt_torso = list(constants.GT_TORSO_JOINT_IDS)
  op_torso = list(constants.OP_TORSO_JOINT_IDS)
  kp[:, gt_torso, 0] += 8.0  # the GT torso disagrees with the OpenPose one
  if not openpose_confident:
    kp[:, 9, 2] = 0.0  # OP RHip missing -> the GT hips/shoulders are used
  res = smplify.smplify(model, prior, truth, jnp.asarray(kp), _STAGE1)
  err = np.linalg.norm(_project(model, res.params) - kp[..., :2], axis=-1)
  used, other = (op_torso, gt_torso) if openpose_confident else (gt_torso, op_torso)
  assert np.all(err[:, used].mean(-1) < 1.0), err[:, used]
  assert np.all(err[:, other].mean(-1) > 6.0), err[:, other]
  # The depth term holds t_z at its initial value.
  np.testing.assert_allclose(res.params.camera_translation[:, 2],
                             truth.camera_translation[:, 2], atol=0.05)


def test_stage1_ignores_absent_torso_joints(model, prior):
  # Keypoints from a detector: an OpenPose hip missing and no GT joints at all.
  # Stage 1 has no torso data then (the depth term only), so the camera and
  # the orientation stay at the start instead of being pulled to pixel (0, 0).
  truth, keypoints, _ = _scene(model, 2, seed=4)
  kp = np.array(keypoints)
  kp[:, constants.NUM_OPENPOSE_JOINTS:, :] = 0.0
  kp[:, 12, 2] = 0.0  # OP LHip
  res = smplify.smplify(model, prior, truth, jnp.asarray(kp), _STAGE1)
  np.testing.assert_allclose(res.params.camera_translation,
                             truth.camera_translation, atol=1e-4)
  np.testing.assert_allclose(res.params.global_orient, truth.global_orient,
                             atol=1e-4)


def test_rigid_root_rotation_is_exact(model):
  rng = np.random.default_rng(3)
  pose, betas = _f32(rng.normal(0, 0.3, (1, 69))), _f32(rng.normal(0, 1, (1, 10)))
  go = _f32(rng.normal(0, 1.0, (1, 3)))

  @jax.jit
  def both(model, go):
    direct = smpl.joints_forward(model, betas, pose, go)[0]
    rest = smpl.joints_forward(model, betas, pose, jnp.zeros_like(go))[0]
    return direct, smplify._rotate_about_root(rest, go[0])  # pylint: disable=protected-access

  direct, rotated = both(model, go)
  np.testing.assert_allclose(rotated, direct, atol=1e-5)


@pytest.mark.parametrize('mode,solver', [('faithful', None),
                                         ('fast', None),  # our dense LM
                                         # matrix-free: needs more steps
                                         ('fast', 'levenberg_marquardt_cg'),
                                         ('fast', 'levenberg_marquardt')])  # jaxopt
def test_recovery_and_failure_flag(model, prior, mode, solver):
  b = 5
  truth, keypoints, init = _scene(model, b)
  keypoints = keypoints.at[b - 1, 3, 0].set(jnp.nan)  # one broken sample
  extra = {'lsq_solver': solver} if solver else {}
  if solver == 'levenberg_marquardt_cg':
    extra['body_iterations'] = 6
  config = smplify.SMPLifyConfig(mode=mode, **extra)
  res = smplify.smplify(model, prior, init, keypoints, config)
  ok = slice(0, b - 1)
  assert np.all(np.asarray(res.valid[ok]))
  used = np.ones(49, bool)
  used[list(constants.SMPLIFY_IGNORED_JOINT_IDS)] = False
  px = _project(model, truth)
  err2d = lambda p: np.linalg.norm(_project(model, p) - px, axis=-1)[:, used].mean(-1)
  before, after = err2d(init)[ok], err2d(res.params)[ok]
  assert np.all(before > 5.0) and np.all(after < 2.0), (before, after)
  pose_err = lambda p: np.abs(np.asarray(p.body_pose - truth.body_pose)).mean(-1)[ok]
  assert np.all(pose_err(res.params) < 0.6 * pose_err(init)), (pose_err(init), pose_err(res.params))
  assert np.all(np.asarray(res.objective[ok]) < np.asarray(res.init_objective[ok]))
  np.testing.assert_allclose(res.loss, np.asarray(res.joint_loss).mean(-1), rtol=1e-6)
  # The broken sample: flagged, init returned, never "better" than anything.
  assert not bool(res.valid[b - 1])
  for got, want in zip(jax.tree.leaves(res.params), jax.tree.leaves(init)):
    np.testing.assert_array_equal(got[b - 1], want[b - 1])
  assert np.isinf(float(res.loss[b - 1]))


def test_config_and_input_errors(model, prior):
  with pytest.raises(ValueError, match='mode'):
    smplify.SMPLifyConfig(mode='slow')
  with pytest.raises(ValueError, match='body_iterations'):
    smplify.SMPLifyConfig(body_iterations=-1)
  with pytest.raises(ValueError, match='cg_iterations'):
    smplify.SMPLifyConfig(mode='fast', cg_iterations=0)
  with pytest.raises(ValueError, match='lsq_solver'):
    smplify.SMPLifyConfig(mode='fast', lsq_solver='adam')
  assert smplify.SMPLifyConfig().iterations == (100, 100)
  assert smplify.SMPLifyConfig(mode='fast').iterations == (5, 4)
  assert smplify.SMPLifyConfig(mode='fast', lsq_solver='levenberg_marquardt').iterations == (5, 4)
  assert smplify.SMPLifyConfig(mode='fast', lsq_solver='levenberg_marquardt_cg').iterations == (5, 3)
  _, keypoints, init = _scene(model, 2)
  with pytest.raises(ValueError, match='keypoints_2d'):
    smplify.smplify(model, prior, init, keypoints[:, :24], _STAGE1)


def test_history_and_public_losses_agree_with_the_result(model, prior):
  """The loss curve the notebook plots: per-iteration objectives of both
  stages; their last body value is the result's objective, and the public
  loss functions recompute the stage objectives from the parameters."""
  _, keypoints, init = _scene(model, 4, seed=3)
  for cfg in (smplify.SMPLifyConfig(mode='faithful', camera_iterations=6,
                                    body_iterations=8, return_history=True),
              smplify.SMPLifyConfig(mode='fast', return_history=True)):
    res = smplify.smplify(model, prior, init, keypoints, cfg)
    n1, n2 = cfg.iterations
    assert res.history['camera'].shape == (4, n1 + 1)
    assert res.history['body'].shape == (4, n2 + 1)
    body = smplify.body_fitting_loss(model, prior, res.params, keypoints, cfg)
    np.testing.assert_allclose(res.history['body'][:, -1], body, rtol=1e-4)
    np.testing.assert_allclose(res.objective, body, rtol=1e-4)
    # The body stage starts where the camera stage ended (same parameters,
    # other objective), so check its start against the public function.
    start = smplify.FitParams(init.global_orient, init.body_pose, init.betas,
                              init.camera_translation)
    cam0 = smplify.camera_fitting_loss(model, start, keypoints,
                                       init.camera_translation[:, 2], cfg)
    np.testing.assert_allclose(res.history['camera'][:, 0], cam0, rtol=1e-4)
    assert np.all(res.history['body'][:, -1] < res.history['body'][:, 0])
    if cfg.mode == 'fast':  # LM accepts only improving steps
      assert np.all(np.diff(np.asarray(res.history['body']), axis=1) <= 0)
  with pytest.raises(ValueError, match='return_history'):
    smplify.SMPLifyConfig(mode='fast', lsq_solver='gauss_newton',
                          return_history=True)


def test_body_behind_the_camera_is_never_valid(model, prior):
  _, keypoints, init = _scene(model, 2, seed=4)
  behind = init.replace(camera_translation=init.camera_translation.at[1, 2].set(-45.0))
  cfg = smplify.SMPLifyConfig(mode='faithful', camera_iterations=0, body_iterations=0)
  res = smplify.smplify(model, prior, behind, keypoints, cfg)
  assert np.isfinite(np.asarray(res.objective)).all()
  assert bool(res.valid[0]) and not bool(res.valid[1])
