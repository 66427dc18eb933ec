"""SMPLify as SPIN runs it in the loop, as one jit-compiled, vmapped function.

Two stages, each a fixed number of iterations inside the compiled program:
  1. camera: global orientation + camera translation fit the torso (hips and
     shoulders) with a depth term keeping t_z near its initial value;
  2. body: body pose, betas and global orientation (camera frozen) fit all 49
     keypoints with the robust data term and the pose, angle and shape priors.

Modes (SMPLifyConfig.mode):
  'faithful': SPIN's Adam, lr 1e-2, 100 + 100 iterations. SPIN sums the loss
    over the batch with one Adam; Adam is elementwise and the samples do not
    interact, so a per-sample Adam vmapped over the batch is the same thing.
  'fast': the objective is a sum of squares, so it is written as residuals and
    minimised per sample by Levenberg-Marquardt (spin_jax.optim_lsq), which
    accepts only steps that lower the objective. Default lsq_solver
    'levenberg_marquardt_dense' (ours): stage 1 (6 parameters, no body model
    per step) takes 5 damped steps; stage 2 takes 4 steps, each one Cholesky
    solve of the (82, 82) damped normal equations with the Jacobian in closed
    form (spin_jax.joints_jacobian: the pose columns along the kinematic
    chain, priors written down), residuals and Jacobian from one pass. On the
    benchmark (experiments/benchmarks/smplify.py, 2-core CPU, default body
    model) that reaches a lower objective than 'faithful' in about a fifth of
    its time; on an SMPL-sized model with pose correctives 5 + 4 steps can end
    above it (README, Known gaps). Also:
    'levenberg_marquardt' / 'gauss_newton' (jaxopt, the same analytic
    Jacobian; jaxopt evaluates residuals and Jacobian separately, ~1.5x
    slower) and 'levenberg_marquardt_cg' (matrix-free: conjugate gradients on
    Jacobian-vector products; no closed form needed, 5 + 3 steps by default,
    slower and less accurate here).

Every iteration runs the joints-only body path (smpl.joints_forward): SMPLify
never needs the mesh. `full_mesh=True` runs smpl.forward instead, as the
original does (for benchmarks).

All keypoints are pixels of the 224 crop (focal 5000, principal point 112).

Kept whole (about 520 lines): both stages, their residuals and the solver
choice form one compiled program; the solvers are in optim_lsq.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax

from spin_jax import camera
from spin_jax import constants
from spin_jax import joints_jacobian
from spin_jax import optim_lsq
from spin_jax import priors
from spin_jax import rotations
from spin_jax import smpl

MODES = ('faithful', 'fast')
# Output joint 8 (OP MidHip) is SMPL joint 0, the root (JOINTS_49_FROM_54).
_PELVIS = constants.JOINTS_49_FROM_54.index(0)
_DEFAULT_ITERATIONS = {'faithful': (100, 100), 'fast': (5, 4),
                       'fast_cg': (5, 3)}
_JAXOPT_SOLVERS = ('levenberg_marquardt', 'gauss_newton')
# Preconditioner of the matrix-free stage 2: the data rows' share of J^T J per
# parameter, roughly (f / t_z)^2 * lever^2 = (5000 / 45)^2 * 0.3^2 ~ 1e3 px^2
# per radian^2 and keypoint, stands in as a multiple of the identity.
_DATA_CURVATURE = 1e3


@dataclasses.dataclass(frozen=True)
class SMPLifyConfig:
  """SMPLify settings (hashable: passed to jit as a static argument).

  camera_iterations / body_iterations default per mode: faithful 100 / 100
  Adam steps (SPIN); fast 5 / 4 Levenberg-Marquardt steps, or 5 / 3 with
  lsq_solver 'levenberg_marquardt_cg' (cg_iterations CG iterations per
  stage-2 step).
  """
  mode: str = 'faithful'
  camera_iterations: int | None = None
  body_iterations: int | None = None
  learning_rate: float = 1e-2  # faithful (Adam, betas 0.9/0.999 as torch)
  lsq_solver: str = 'levenberg_marquardt_dense'  # fast; see the module doc
  cg_iterations: int = 6  # fast with levenberg_marquardt_cg: per stage-2 step
  camera_damping: float = 0.1  # fast, stage 1 (ours): initial relative damping
  focal_length: float = constants.FOCAL_LENGTH
  img_res: int = constants.IMG_RES
  sigma: float = constants.SMPLIFY_SIGMA
  pose_prior_weight: float = constants.SMPLIFY_POSE_PRIOR_WEIGHT
  angle_prior_weight: float = constants.SMPLIFY_ANGLE_PRIOR_WEIGHT
  shape_prior_weight: float = constants.SMPLIFY_SHAPE_PRIOR_WEIGHT
  depth_loss_weight: float = constants.SMPLIFY_DEPTH_LOSS_WEIGHT
  full_mesh: bool = False
  # Also return each stage's objective per iteration (SMPLifyResult.history);
  # not with jaxopt's solvers, which do not expose their iterations.
  return_history: bool = False

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f'SMPLifyConfig.mode must be one of {MODES}; got {self.mode!r}.')
    if self.lsq_solver not in optim_lsq.SOLVERS:
      raise ValueError(f'SMPLifyConfig.lsq_solver must be one of '
                       f'{optim_lsq.SOLVERS}; got {self.lsq_solver!r}.')
    for name in ('camera_iterations', 'body_iterations'):
      n = getattr(self, name)
      if n is not None and (not isinstance(n, int) or n < 0):
        raise ValueError(f'SMPLifyConfig.{name} must be an int >= 0; got {n!r}.')
    if (self.full_mesh and self.mode == 'fast'
        and self.lsq_solver != 'levenberg_marquardt_cg'):
      raise ValueError('SMPLifyConfig: full_mesh=True (the original\'s way, for '
                       'benchmarks) needs mode faithful or lsq_solver '
                       'levenberg_marquardt_cg; the other fast solvers use the '
                       'closed-form joints Jacobian.')
    if not self.camera_damping > 0:
      raise ValueError(f'SMPLifyConfig.camera_damping must be > 0; '
                       f'got {self.camera_damping!r}.')
    if (self.return_history and self.mode == 'fast'
        and self.lsq_solver in _JAXOPT_SOLVERS):
      raise ValueError(f'SMPLifyConfig: return_history needs mode faithful or '
                       f'one of our lsq_solvers, not jaxopt\'s '
                       f'{self.lsq_solver!r}.')
    if not isinstance(self.cg_iterations, int) or self.cg_iterations < 1:
      raise ValueError(f'SMPLifyConfig.cg_iterations must be an int >= 1; '
                       f'got {self.cg_iterations!r}.')

  @property
  def iterations(self) -> tuple[int, int]:
    """(stage 1, stage 2) iteration counts after mode defaults."""
    key = self.mode
    if key == 'fast' and self.lsq_solver == 'levenberg_marquardt_cg':
      key = 'fast_cg'
    d1, d2 = _DEFAULT_ITERATIONS[key]
    return (d1 if self.camera_iterations is None else self.camera_iterations,
            d2 if self.body_iterations is None else self.body_iterations)


@flax.struct.dataclass
class FitParams:
  global_orient: jax.Array  # (B, 3) axis-angle
  body_pose: jax.Array  # (B, 69) axis-angle
  betas: jax.Array  # (B, NB)
  camera_translation: jax.Array  # (B, 3) crop camera, OpenCV frame


@flax.struct.dataclass
class SMPLifyResult:
  """SMPLify output. Per-sample failure never passes as an improvement:

  valid = result finite, its objective not above the initial one, and the
  body in front of the camera (translation z > 0).
  A non-finite sample returns the init parameters (and camera); a finite but
  worse one returns the result as SPIN would. joint_loss/loss always belong to
  the returned params (inf where those are non-finite), so they are never
  better than the returned parameters really are.
  """
  params: FitParams
  joint_loss: jax.Array  # (B, 49) conf^2 [GMoF(du) + GMoF(dv)], ignored joints 0
  loss: jax.Array  # (B,) mean of joint_loss over the 49 joints
  valid: jax.Array  # (B,) bool
  objective: jax.Array  # (B,) final stage-2 objective (data + priors)
  init_objective: jax.Array  # (B,) same objective at the init params/camera
  # With SMPLifyConfig.return_history: each stage's objective at its start and
  # after every iteration, (B, n1 + 1) camera stage and (B, n2 + 1) body
  # stage (for a loss curve); None otherwise.
  history: dict[str, jax.Array] | None = None


# ---------------------------------------------------------------- per sample

def _joints(model, global_orient, body_pose, betas, config):
  """(49, 3) SPIN joints of one sample (no translation)."""
  args = (model, betas[None], body_pose[None], global_orient[None])
  if config.full_mesh:
    out = smpl.forward(*args)
    # Keep the whole mesh live, forwards and backwards, as the original
    # evaluates it (XLA would otherwise compute only the vertices joints read).
    return out.joints[0] + 0.0 * jnp.mean(out.vertices)
  return smpl.joints_forward(*args)[0]


def _rotate_about_root(rest_joints, global_orient):
  """(49, 3) joints for global_orient from those at zero global_orient.

  In SMPL the root rotation acts last, about the root joint (which it does not
  move), and pose blend shapes ignore it, so every joint (regressed or vertex
  keypoint) moves rigidly: J(R) = R (J(I) - J_root) + J_root. Stage 1 then
  needs no body-model evaluation per iteration.
  """
  root = rest_joints[_PELVIS]
  rot = rotations.axis_angle_to_matrix(global_orient)  # (3, 3)
  return (rest_joints - root) @ rot.T + root


def _project(joints, translation, config):
  """(N, 3) joints -> (N, 2) crop pixels."""
  c = jnp.full((2,), config.img_res / 2.0, joints.dtype)
  return camera.perspective_projection(joints[None], translation[None],
                                       config.focal_length, c)[0]


def _fitting_confidence(keypoints):
  """(49,) confidences with SMPLify's ignored joints zeroed (a copy)."""
  ids = jnp.asarray(constants.SMPLIFY_IGNORED_JOINT_IDS)
  return keypoints[:, 2].at[ids].set(0.0)


def _camera_residuals(params, joints, keypoints, use_openpose, depth_init, config):
  """Stage 1: (9,) torso reprojection residuals (4 joints x 2) + depth term.

  Unweighted, as SPIN's, except that a torso joint with confidence 0 counts 0
  (ours): SPIN's GT branch would pull an absent joint's projection to its
  stored (0, 0). With all four present (every SPIN training set) the term is
  SPIN's; keypoints from a detector can lack a hip (e.g. cut off by the
  image border) and then have no GT torso at all.
  """
  global_orient, translation = params
  proj = _project(joints(global_orient), translation, config)  # (49, 2)
  op = jnp.asarray(constants.OP_TORSO_JOINT_IDS)
  gt = jnp.asarray(constants.GT_TORSO_JOINT_IDS)
  present = lambda ids: (keypoints[ids, 2:] > 0).astype(proj.dtype)
  r_op = ((keypoints[op, :2] - proj[op]) * present(op)).reshape(-1)
  r_gt = ((keypoints[gt, :2] - proj[gt]) * present(gt)).reshape(-1)
  r = jnp.where(use_openpose, r_op, r_gt)  # (8,)
  depth = config.depth_loss_weight * (translation[2] - depth_init)
  return jnp.concatenate([r, depth[None]])


def _stage2_residuals(r_data, r_gmm, body_pose, betas, config):
  """(98 + 70 + 4 + NB,) weighted stage-2 residuals from the data (49, 2) and
  GMM (70,) parts; sum of squares = SPIN's loss."""
  r_angle = priors.angle_prior_residuals(body_pose[None])[0]  # (4,)
  return jnp.concatenate([
      r_data.reshape(-1), config.pose_prior_weight * r_gmm,
      config.angle_prior_weight * r_angle, config.shape_prior_weight * betas])


def _body_residuals(params, translation, model, prior, keypoints, conf, config):
  """Stage 2: (98 + 70 + 4 + NB,) residuals; sum of squares = SPIN's loss."""
  global_orient, body_pose, betas = params
  proj = _project(_joints(model, global_orient, body_pose, betas, config),
                  translation, config)  # (49, 2)
  r_data = conf[:, None] * priors.gmof_residual(keypoints[:, :2] - proj,
                                                config.sigma)  # (49, 2)
  r_gmm = priors.gmm_residuals(prior, body_pose[None])[0]  # (70,)
  return _stage2_residuals(r_data, r_gmm, body_pose, betas, config)


def _body_residuals_and_jacobian(params, translation, model, prior, keypoints,
                                 conf, config):
  """Stage-2 residuals (R,) and Jacobian (R, 3 + 69 + NB), ravel order
  (orient, pose, betas), from one pass of the body model.

  The joints' Jacobian comes in closed form along the kinematic chain
  (spin_jax.joints_jacobian), chained per joint with the projection and the
  robust residual (a 3 -> 2 map each). The prior rows are written down: GMM =
  sqrt(0.5) w W_k on the pose columns for the winning component k (its
  constant row is 0), angle = diagonal, shape = w I.
  """
  global_orient, body_pose, betas = params
  nb = betas.shape[0]
  jj = joints_jacobian.joints_with_jacobian(
      model, betas[None], body_pose[None], global_orient[None])
  d_joints = jnp.concatenate([jj.d_pose[0], jj.d_betas[0]], -1)  # (49, 3, P)

  def joint_residual(x, kp, c):  # (3,) joint -> (2,) robust residual
    proj = _project(x[None], translation, config)[0]
    return c * priors.gmof_residual(kp - proj, config.sigma)

  r_data, d_res = jax.vmap(
      lambda *a: (joint_residual(*a), jax.jacfwd(joint_residual)(*a)))(
          jj.joints[0], keypoints[:, :2], conf)  # (49, 2), (49, 2, 3)
  j_data = jnp.einsum('jrc,jcp->jrp', d_res, d_joints).reshape(
      2 * constants.NUM_JOINTS, -1)  # (98, P)
  dtype = j_data.dtype
  r_gmm, k = priors.gmm_residuals_and_component(prior, body_pose[None])
  residuals = _stage2_residuals(r_data, r_gmm[0], body_pose, betas, config)

  j_gmm = config.pose_prior_weight * jnp.sqrt(0.5) * prior.whitening[k[0]]  # (69, 69)
  ids = jnp.asarray(constants.ANGLE_PRIOR_POSE_IDS)
  signs = jnp.asarray(constants.ANGLE_PRIOR_SIGNS, dtype)
  d_angle = config.angle_prior_weight * signs * jnp.exp(body_pose[ids] * signs)
  j_angle = jnp.zeros((4, 69), dtype).at[jnp.arange(4), ids].set(d_angle)
  z = lambda r, c: jnp.zeros((r, c), dtype)
  jacobian = jnp.concatenate([
      j_data,
      jnp.concatenate([z(69, 3), j_gmm.astype(dtype), z(69, nb)], 1),
      z(1, 72 + nb),  # GMM constant
      jnp.concatenate([z(4, 3), j_angle, z(4, nb)], 1),
      jnp.concatenate([z(nb, 72), config.shape_prior_weight * jnp.eye(nb, dtype=dtype)], 1),
  ])
  return residuals, jacobian


def _body_preconditioner(body_pose, num_betas, prior, config):
  """(P, P) SPD stand-in for the stage-2 J^T J at `body_pose`, P = 72 + NB.

  Ravel order (orient, pose, betas).
  Exact for the prior rows (GMM whitening of the winning component, shape
  weight; the small angle-prior rows are left out) plus _DATA_CURVATURE * I
  for the data rows, which only the body model knows.
  """
  dtype = body_pose.dtype
  k = priors.gmm_residuals_and_component(prior, body_pose[None])[1][0]
  w = prior.whitening[k].astype(dtype)  # (69, 69)
  nb, p = num_betas, 72 + num_betas
  gram = jnp.zeros((p, p), dtype)
  gram = gram.at[3:72, 3:72].set(0.5 * config.pose_prior_weight**2 * w.T @ w)
  gram = gram.at[72:, 72:].set(config.shape_prior_weight**2 * jnp.eye(nb, dtype=dtype))
  return gram + _DATA_CURVATURE * jnp.eye(p, dtype=dtype)


def _adam(loss_fn, params, iterations, learning_rate):
  """`iterations` Adam steps (torch defaults) in a scan -> (params, the
  objective at the start and after each step (iterations + 1,))."""
  opt = optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
  value_and_grad = jax.value_and_grad(loss_fn)

  def step(carry, _):
    p, s = carry
    value, grad = value_and_grad(p)
    updates, s = opt.update(grad, s, p)
    return (optax.apply_updates(p, updates), s), value

  (params, _), values = jax.lax.scan(step, (params, opt.init(params)),
                                     length=iterations)
  return params, jnp.concatenate([values, loss_fn(params)[None]])


def _minimise(residual_fn, params, iterations, config, value_and_jac_fn=None,
              preconditioner=None):
  """Runs the configured optimiser. value_and_jac_fn=None marks stage 1.

  Returns (params, objective per iteration (iterations + 1,) or None).
  """
  if iterations == 0:
    return params, jnp.sum(residual_fn(params)**2)[None]
  if config.mode == 'faithful':
    # (Unless the caller returns it, XLA drops the history's extra work.)
    return _adam(lambda p: jnp.sum(residual_fn(p)**2), params, iterations,
                 config.learning_rate)
  out = _least_squares(residual_fn, params, iterations, config,
                       value_and_jac_fn, preconditioner)
  return out if config.return_history else (out, None)


def _least_squares(residual_fn, params, iterations, config, value_and_jac_fn,
                   preconditioner):
  """The fast mode's solver call (with history if the config asks)."""
  history = dict(return_history=True) if config.return_history else {}
  if value_and_jac_fn is None:  # stage 1: 6 parameters, J is cheap to form
    if config.lsq_solver in _JAXOPT_SOLVERS:
      return optim_lsq.least_squares(residual_fn, params, maxiter=iterations,
                                     solver='levenberg_marquardt')
    # Damped well above Gauss-Newton: four torso points barely pin the
    # rotation about the body's long axis, and an undamped first step can
    # leap to a mirrored torso that stage 2 then has to undo.
    return optim_lsq.least_squares(residual_fn, params, maxiter=iterations,
                                   solver='levenberg_marquardt_dense',
                                   damping=config.camera_damping, **history)
  solver = config.lsq_solver
  if solver == 'levenberg_marquardt_cg':
    return optim_lsq.least_squares(residual_fn, params, maxiter=iterations,
                                   solver=solver,
                                   cg_iterations=config.cg_iterations,
                                   preconditioner=preconditioner, **history)
  return optim_lsq.least_squares(
      residual_fn, params, maxiter=iterations, solver=solver,
      jac_fn=lambda p: value_and_jac_fn(p)[1], value_and_jac_fn=value_and_jac_fn,
      **history)


def _fit_one(model, prior, init: FitParams, keypoints, config):
  """SMPLify on one sample (unbatched FitParams leaves)."""
  n_cam, n_body = config.iterations
  keypoints = keypoints.astype(init.body_pose.dtype)
  conf = _fitting_confidence(keypoints)

  # Stage 1. The OpenPose torso is used when all four of its joints are
  # confident (the original's in-place zeroing hid the OP hips; we do not).
  use_openpose = jnp.all(keypoints[jnp.asarray(constants.OP_TORSO_JOINT_IDS), 2] > 0)
  if config.full_mesh:  # as the original: a full forward per iteration
    joints_of = lambda go: _joints(model, go, init.body_pose, init.betas, config)
  else:  # exact shortcut: global_orient rigidly rotates the body about the root
    joints_of = functools.partial(
        _rotate_about_root,
        _joints(model, jnp.zeros_like(init.global_orient), init.body_pose,
                init.betas, config))
  cam_fn = functools.partial(
      _camera_residuals, joints=joints_of, keypoints=keypoints,
      use_openpose=use_openpose, depth_init=init.camera_translation[2],
      config=config)
  (global_orient, translation), cam_history = _minimise(
      cam_fn, (init.global_orient, init.camera_translation), n_cam, config)

  # Stage 2, camera frozen.
  body_fn = lambda p, t: _body_residuals(p, t, model, prior, keypoints, conf, config)
  value_and_jac_fn = lambda p: _body_residuals_and_jacobian(
      p, translation, model, prior, keypoints, conf, config)
  (global_orient, body_pose, betas), body_history = _minimise(
      lambda p: body_fn(p, translation), (global_orient, init.body_pose, init.betas),
      n_body, config, value_and_jac_fn=value_and_jac_fn,
      preconditioner=_body_preconditioner(init.body_pose, init.betas.shape[0],
                                          prior, config))

  # Evaluate the final and the initial point in one pass (one trace of the
  # body model): stage-2 objective and per-joint reprojection loss of each.
  out = FitParams(global_orient, body_pose, betas, translation)
  both = jax.tree.map(lambda a, b: jnp.stack([a, b]), out, init)
  r = jax.vmap(lambda p: body_fn((p.global_orient, p.body_pose, p.betas),
                                 p.camera_translation))(both)  # (2, R)
  objective = jnp.sum(r**2, -1)  # (2,)
  joint_loss = jnp.sum(r[:, :2 * constants.NUM_JOINTS].reshape(2, -1, 2)**2, -1)
  history = (dict(camera=cam_history, body=body_history)
             if config.return_history else None)
  return out, objective, joint_loss, history  # (2,), (2, 49): [final, init]


# ------------------------------------------------------------------ batched

def reprojection_loss(model, global_orient, body_pose, betas, camera_translation,
                      keypoints_2d, *, focal_length=constants.FOCAL_LENGTH,
                      img_res=constants.IMG_RES, sigma=constants.SMPLIFY_SIGMA):
  """SPIN's per-joint fitting loss (B, 49): conf^2 [GMoF(du) + GMoF(dv)].

  Residuals in crop pixels; the 5 joints SMPLify ignores count 0 (the
  caller's keypoints are not modified). The per-sample criterion of the fits
  table is its mean over the 49 joints.
  """
  joints = smpl.joints_forward(model, betas, body_pose, global_orient)  # (B, 49, 3)
  c = jnp.full((2,), img_res / 2.0, joints.dtype)
  proj = camera.perspective_projection(joints, camera_translation, focal_length, c)
  keypoints_2d = keypoints_2d.astype(joints.dtype)
  conf = jax.vmap(_fitting_confidence)(keypoints_2d)  # (B, 49)
  return conf**2 * priors.gmof(keypoints_2d[..., :2] - proj, sigma).sum(-1)


def camera_fitting_loss(model, params: FitParams, keypoints_2d, depth_init,
                        config: SMPLifyConfig = SMPLifyConfig()) -> jax.Array:
  """SMPLify's stage-1 objective per sample (B,): squared torso reprojection
  error (the OpenPose torso where all 4 joints are confident, else the GT
  torso) + (depth_loss_weight * (t_z - depth_init))^2, as SPIN's
  camera_fitting_loss. keypoints_2d: (B, 49, 3) crop pixels + confidence;
  depth_init: (B,) the initial camera depth."""
  def one(p, kp, d):
    use_openpose = jnp.all(kp[jnp.asarray(constants.OP_TORSO_JOINT_IDS), 2] > 0)
    joints = lambda go: _joints(model, go, p.body_pose, p.betas, config)
    r = _camera_residuals((p.global_orient, p.camera_translation), joints, kp,
                          use_openpose, d, config)
    return jnp.sum(r**2)
  return jax.vmap(one)(params, keypoints_2d, depth_init)


def body_fitting_loss(model, prior, params: FitParams, keypoints_2d,
                      config: SMPLifyConfig = SMPLifyConfig()) -> jax.Array:
  """SMPLify's stage-2 objective per sample (B,): the robust (GMoF) data term
  with confidences squared plus the GMM pose, angle and shape priors, as
  SPIN's body_fitting_loss (the value SMPLifyResult.objective reports)."""
  def one(p, kp):
    conf = _fitting_confidence(kp)
    r = _body_residuals((p.global_orient, p.body_pose, p.betas),
                        p.camera_translation, model, prior, kp, conf, config)
    return jnp.sum(r**2)
  return jax.vmap(one)(params, keypoints_2d)


def _check_inputs(init: FitParams, keypoints_2d):
  b = init.body_pose.shape[0]
  expect = {'global_orient': (b, 3), 'body_pose': (b, 69),
            'camera_translation': (b, 3)}
  for name, shape in expect.items():
    got = getattr(init, name).shape
    if got != shape:
      raise ValueError(f'smplify: init.{name} must be {shape}; got {got}.')
  if init.betas.ndim != 2 or init.betas.shape[0] != b:
    raise ValueError(f'smplify: init.betas must be ({b}, NB); got {init.betas.shape}.')
  if keypoints_2d.shape != (b, constants.NUM_JOINTS, 3):
    raise ValueError(f'smplify: keypoints_2d must be ({b}, 49, 3) crop pixels + '
                     f'conf; got {keypoints_2d.shape}.')


@functools.partial(jax.jit, static_argnames=('config',))
def _smplify(model, prior, init, keypoints_2d, config):
  fit = jax.vmap(_fit_one, in_axes=(None, None, 0, 0, None))
  params, objective, joint_loss, history = fit(model, prior, init, keypoints_2d,
                                               config)

  finite = jnp.isfinite(objective[:, 0])
  for leaf in jax.tree.leaves(params):
    finite &= jnp.all(jnp.isfinite(leaf), axis=-1)
  # Non-finite samples fall back to the init (params and camera).
  params = jax.tree.map(lambda new, old: jnp.where(finite[:, None], new, old),
                        params, init)
  pick = lambda x: jnp.where(finite.reshape((-1,) + (1,) * (x.ndim - 2)),
                             x[:, 0], x[:, 1])
  init_objective = objective[:, 1]
  objective, joint_loss = pick(objective), pick(joint_loss)
  joint_loss = jnp.where(jnp.isfinite(joint_loss), joint_loss, jnp.inf)
  # "Worse" compares like with like: a NaN init never makes a result worse.
  worse = objective > init_objective * (1 + 1e-5) + 1e-6
  in_front = params.camera_translation[:, 2] > 0
  return SMPLifyResult(params=params, joint_loss=joint_loss,
                       loss=jnp.mean(joint_loss, -1),
                       valid=finite & ~worse & in_front,
                       objective=objective, init_objective=init_objective,
                       history=history)


def smplify(model, prior, init: FitParams, keypoints_2d,
            config: SMPLifyConfig = SMPLifyConfig()) -> SMPLifyResult:
  """Fits SMPL to 2D keypoints, per sample, from `init`.

  Args:
    model: smpl.BodyModel (pytree argument, not closed over).
    prior: priors.GaussianMixturePrior on the body pose.
    init: FitParams, e.g. the network's prediction with its camera
      translation [tx, ty, 2f/(224 s)] (camera.weak_perspective_to_translation).
    keypoints_2d: (B, 49, 3) pixels of the 224 crop + confidence. Never
      modified; the ignored joints are zeroed on a copy.
    config: SMPLifyConfig (static; one compile per config and shape).

  Returns:
    SMPLifyResult; see its docstring for the per-sample validity rules.
  """
  _check_inputs(init, keypoints_2d)
  return _smplify(model, prior, init, keypoints_2d, config)
