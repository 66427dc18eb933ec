"""SPIN's training step: the regressor with SMPLify in the loop, as pure functions.

One jitted function takes the whole state (params, BatchNorm statistics,
optimiser state, fits table, rng, step) and a batch, and does all of SPIN's
step (SPIN_DETAILS, "Training loop details"):

  1. forward the regressor once (train mode);
  2. look each sample's stored fit up, move it into the augmented frame and
     score it (least-squares camera, per-joint reprojection loss);
  3. run SMPLify from the network's detached prediction;
  4. keep the better fit per sample (finite, strictly lower loss) and write it
     back un-augmented;
  5. supervise with the kept fits (betas clipped, ground-truth SMPL overrides,
     pose/shape only where the fit is valid) and take an Adam step.

The network runs once: its output is both supervised and SMPLify's start, so
the backward pass goes through jax.vjp of that single forward.

Data parallel: the batch is sharded over a ('data',) mesh, the state is
replicated (see parallel.py and the fits-table note in `make_train_step`).
The loop around the step is spin_jax.train.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from spin_jax import camera
from spin_jax import fits as fits_lib
from spin_jax import losses as losses_lib
from spin_jax import models
from spin_jax import parallel
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smplify as smplify_lib


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree (graphdef kept apart)."""
  step: jax.Array              # () int32
  params: nnx.State            # trainable nnx.Param leaves
  model_state: nnx.State       # BatchNorm statistics, dropout rng, mean params
  opt_state: optax.OptState
  fits: fits_lib.FitsTable     # (N, 82) best fits, un-augmented
  rng: jax.Array               # (2,) uint32, reserved for step-level randomness


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """The static (hashable) part of the configuration the step depends on."""
  run_smplify: bool
  smplify: smplify_lib.SMPLifyConfig
  loss_weights: tuple[tuple[str, float], ...]
  fit_threshold: float
  ignore_3d: bool

  @classmethod
  def create(cls, config: ml_collections.ConfigDict) -> 'StepConfig':
    return cls(run_smplify=bool(config.run_smplify),
               smplify=smplify_config(config),
               loss_weights=tuple(sorted(config.loss.to_dict().items())),
               fit_threshold=float(config.fit_threshold),
               ignore_3d=bool(config.data.ignore_3d))

  @property
  def weights(self) -> dict[str, float]:
    return dict(self.loss_weights)


def smplify_config(config: ml_collections.ConfigDict) -> smplify_lib.SMPLifyConfig:
  """config.smplify -> SMPLifyConfig; iterations < 0 = the mode's default."""
  s = config.smplify
  its = int(s.iterations)
  its = None if its < 0 else its
  return smplify_lib.SMPLifyConfig(mode=s.mode, camera_iterations=its,
                                   body_iterations=its,
                                   learning_rate=float(s.lr))


# --------------------------------------------------------------------- model
def create_model(config: ml_collections.ConfigDict) -> models.HMR:
  """The regressor of config.model, from config.mean_params ('' = shipped)."""
  return models.create_model(config.model, config.mean_params or None,
                             seed=config.seed)


def split_model(model: nnx.Module):
  """-> (graphdef, params, model_state); model_state holds all non-Param state."""
  return nnx.split(model, nnx.Param, ...)


def learning_rate_schedule(config: ml_collections.ConfigDict, num_steps: int):
  """step -> learning rate. 'constant' (SPIN, the default) or 'cosine': linear
  warmup over config.warmup_steps, then cosine decay to 0 at num_steps."""
  kind = config.get('lr_schedule', 'constant')
  lr = float(config.learning_rate)
  if kind == 'constant':
    return optax.constant_schedule(lr)
  if kind == 'cosine':
    warmup = int(config.get('warmup_steps', 0))
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(int(num_steps), warmup + 1))
  raise ValueError(f'--config.lr_schedule={kind!r}: expected "constant" or "cosine".')


def make_optimizer(config: ml_collections.ConfigDict,
                   num_steps: int | None = None) -> optax.GradientTransformation:
  # SPIN: Adam, lr 5e-5, no weight decay, no schedule (lr_schedule 'constant').
  if config.get('lr_schedule', 'constant') == 'constant':
    return optax.adam(config.learning_rate)
  if num_steps is None:
    raise ValueError('a learning-rate schedule needs the number of steps')
  return optax.adam(learning_rate_schedule(config, num_steps))


# ---------------------------------------------------------------- the step
def _stop(x):
  return jax.lax.stop_gradient(x)


def smplify_from_prediction(pred, keypoints_px, body_model, prior,
                            config: smplify_lib.SMPLifyConfig
                            ) -> smplify_lib.SMPLifyResult:
  """SMPLify started from the regressor's (detached) prediction, as SPIN.

  pred: the regressor's rotmat (B,24,3,3), betas (B,10), cam (B,3);
  keypoints_px: (B,49,3) pixels of the 224 crop with confidences.
  """
  b = pred['rotmat'].shape[0]
  aa = rotations.matrix_to_axis_angle(_stop(pred['rotmat'])).reshape(b, 72)
  aa = jnp.where(jnp.isfinite(aa), aa, 0.0)
  init = smplify_lib.FitParams(
      global_orient=aa[:, :3], body_pose=aa[:, 3:], betas=_stop(pred['betas']),
      camera_translation=camera.weak_perspective_to_translation(
          _stop(pred['cam'])))
  return smplify_lib.smplify(body_model, prior, init, keypoints_px, config)


def compute_targets(pred, batch, fits_table, body_model, prior, cfg: StepConfig):
  """Steps 2-4 and 7-8 of SPIN's loop: fits in, better fits out, targets.

  Args:
    pred: the regressor's output (treated as constant here).
  Returns:
    (targets dict for the losses, new fits table, per-sample stats dict).
  """
  kp_px = fits_lib.keypoints_to_pixels(batch['keypoints'])          # (B,49,3)
  rot, flip, index = batch['rot_angle'], batch['is_flipped'], batch['index']

  # Stored fits, in this step's augmented frame, scored with the LSQ camera.
  old_pose, old_betas, old_has = fits_lib.lookup(fits_table, index, rot, flip)
  old_cam_t, old_loss = fits_lib.score_fit(body_model, old_pose, old_betas, kp_px)
  old_loss = jnp.where(old_has & jnp.isfinite(old_loss), old_loss, jnp.inf)

  if cfg.run_smplify:
    res = smplify_from_prediction(pred, kp_px, body_model, prior, cfg.smplify)
    new_pose = jnp.concatenate([res.params.global_orient, res.params.body_pose], -1)
    new_betas = res.params.betas
    new_finite = (jnp.all(jnp.isfinite(new_pose), -1)
                  & jnp.all(jnp.isfinite(new_betas), -1))
    better = fits_lib.is_better(old_loss, old_has, res.loss, new_finite)
    opt_pose = jnp.where(better[:, None], new_pose, old_pose)
    opt_betas = jnp.where(better[:, None], new_betas, old_betas)
    opt_loss = jnp.where(better, res.loss, old_loss)
    opt_cam_t = jnp.where(better[:, None], res.params.camera_translation, old_cam_t)
    new_loss = res.loss
  else:
    better = jnp.zeros_like(old_has)
    opt_pose, opt_betas, opt_loss, opt_cam_t = old_pose, old_betas, old_loss, old_cam_t
    new_loss = old_loss

  # Store the kept fits in the original frame (only rows that improved change).
  kept = jnp.concatenate([fits_lib.from_augmented(opt_pose, rot, flip), opt_betas], -1)
  new_table = fits_lib.update(fits_table, index, kept, opt_loss, better)

  # Supervision: implausible betas zeroed (supervision only), GT SMPL wins,
  # pose/shape only where the kept fit is valid (SPIN_DETAILS D1).
  has_smpl = batch['has_smpl'] > 0
  has_pose_3d = batch['has_pose_3d'] > 0
  if cfg.ignore_3d:  # the "unpaired" setting
    has_smpl = jnp.zeros_like(has_smpl)
    has_pose_3d = jnp.zeros_like(has_pose_3d)
  target_pose, target_betas, valid_fit = losses_lib.supervision_targets(
      opt_pose, opt_betas, opt_loss, batch['pose'], batch['betas'], has_smpl,
      threshold=cfg.fit_threshold)
  targets = dict(
      keypoints=batch['keypoints'], pose_3d=batch['pose_3d'],
      has_pose_3d=has_pose_3d.astype(jnp.float32),
      pose=target_pose, betas=target_betas,
      valid_fit=valid_fit.astype(jnp.float32))
  if cfg.weights.get('vertices', 0.0) > 0:
    # SPIN's opt_vertices come from the unclipped betas; GT overrides them.
    vb = jnp.where(has_smpl[:, None], batch['betas'], opt_betas)
    targets['vertices'] = smpl.forward(body_model, vb, target_pose[:, 3:],
                                       target_pose[:, :3]).vertices
  stats = dict(old_fit_loss=old_loss, new_fit_loss=new_loss, fit_loss=opt_loss,
               fit_updated=better, valid_fit=valid_fit, opt_pose=opt_pose,
               opt_betas=opt_betas, opt_cam_t=opt_cam_t)
  return targets, new_table, stats


def finite_mean(x):
  ok = jnp.isfinite(x)
  return jnp.sum(jnp.where(ok, x, 0.0)) / jnp.maximum(jnp.sum(ok), 1)


def train_step(state: TrainState, batch: dict, body_model, prior, *,
               graphdef, tx: optax.GradientTransformation, cfg: StepConfig):
  """One SPIN step. Returns (new state, metrics); pure, jit it with cfg static.

  If the loss, the gradients or the new parameters are not finite, the state
  comes back unchanged and metrics['finite'] is False (the caller stops).
  """
  def forward(params):
    model = nnx.merge(graphdef, params, state.model_state, copy=True)
    model.train()
    pred = model(batch['image'])
    return pred, nnx.state(model, nnx.Not(nnx.Param))

  pred, pull_back, new_model_state = jax.vjp(forward, state.params, has_aux=True)

  targets, new_table, stats = compute_targets(
      jax.tree.map(_stop, pred), batch, state.fits, body_model, prior, cfg)

  def loss_of_pred(p):
    out = models.body_outputs(p, body_model,
                              vertices=cfg.weights.get('vertices', 0.0) > 0)
    return losses_lib.spin_losses(out, targets, cfg.weights)

  (loss, terms), g_pred = jax.value_and_grad(loss_of_pred, has_aux=True)(pred)
  (grads,) = pull_back(g_pred)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)

  grad_norm = optax.tree.norm(grads)
  finite = (jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            & jnp.isfinite(optax.tree.norm(params)))
  new_state = state.replace(step=state.step + 1, params=params,
                            model_state=new_model_state, opt_state=opt_state,
                            fits=new_table)
  # Guarded: a non-finite step leaves everything (fits included) as it was.
  new_state = jax.lax.cond(finite, lambda: new_state, lambda: state)

  metrics = {f'loss/{k}': jnp.mean(v) for k, v in _scalar_terms(terms).items()}
  metrics.update({
      'loss/total': loss,
      'fits/update_rate': jnp.mean(stats['fit_updated'].astype(jnp.float32)),
      'fits/valid_rate': jnp.mean(stats['valid_fit'].astype(jnp.float32)),
      'fits/kept_loss': finite_mean(stats['fit_loss']),
      'fits/stored_loss': finite_mean(stats['old_fit_loss']),
      'fits/smplify_loss': finite_mean(stats['new_fit_loss']),
      'train/grad_norm': grad_norm,
      'finite': finite,
  })
  return new_state, metrics


def _scalar_terms(terms) -> dict:
  out = {}
  for k, v in terms.items():
    if isinstance(v, dict):
      out.update({f'{k}/{kk}': vv for kk, vv in _scalar_terms(v).items()})
    else:
      out[k] = v
  return out


def make_train_step(config: ml_collections.ConfigDict, graphdef, tx, mesh):
  """The jitted step: state replicated in and out, batch sharded, state donated.

  The fits table is replicated like the parameters. It is small next to the
  activations (SPIN's six training sets: ~460k rows x 82 floats = 150 MB),
  each step gathers B rows and scatters B rows, and replication turns the
  scatter into an all-gather of the batch's B x 82 updates, with no lookup of
  rows owned by another device. Sharding it over 'data' would only pay off
  beyond tens of millions of rows.
  """
  cfg = StepConfig.create(config)
  step = functools.partial(train_step, graphdef=graphdef, tx=tx, cfg=cfg)
  repl = parallel.replicated(mesh)
  return jax.jit(step, in_shardings=(repl, parallel.data_sharded(mesh), repl, repl),
                 out_shardings=(repl, repl), donate_argnums=(0,))


# ------------------------------------------------------------------- state
def create_train_state(config, model, fits_table: fits_lib.FitsTable,
                       tx) -> tuple[Any, TrainState]:
  graphdef, params, model_state = split_model(model)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     model_state=model_state, opt_state=tx.init(params),
                     fits=fits_table,
                     rng=jax.random.key_data(jax.random.PRNGKey(config.seed)))
  return graphdef, state

