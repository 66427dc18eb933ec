"""SPIN training: the regressor with SMPLify in the loop.

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

Data parallel: the batch is sharded over a ('data',) mesh, everything else is
replicated (see parallel.py and the fits-table note in `_state_shardings`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

from absl import logging
import flax
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from spin_jax import camera
from spin_jax import checkpoint as ckpt_lib
from spin_jax import constants
from spin_jax import fits as fits_lib
from spin_jax import losses as losses_lib
from spin_jax import metrics
from spin_jax import models
from spin_jax import parallel
from spin_jax import priors
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax import smplify as smplify_lib


class NonFiniteError(FloatingPointError):
  """Raised when the loss or the parameters stop being finite."""


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


def _finite_mean(x):
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
      'fits/kept_loss': _finite_mean(stats['fit_loss']),
      'fits/stored_loss': _finite_mean(stats['old_fit_loss']),
      'fits/smplify_loss': _finite_mean(stats['new_fit_loss']),
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


# ------------------------------------------------------------------ fits init
def init_fits_table(config, num_rows: int, layout, model_mean_params=None
                    ) -> tuple[fits_lib.FitsTable, str]:
  """The initial table and a sentence saying where it came from.

  config.fits_init: 'static' (SPIN's <dataset>_fits.npy from
  config.static_fits_dir; datasets without a file start from the mean
  parameters, SPIN_DETAILS D3), 'mean' (mean parameters, scored like any fit),
  'smplify' (no fit yet: the first finite SMPLify result is taken), or 'auto'
  (static if a folder is given, else smplify when SMPLify runs, else mean).
  """
  mean = model_mean_params or models.load_mean_params(config.mean_params or None)
  row = fits_lib.mean_params_row(mean)
  mode = config.fits_init
  if mode == 'auto':
    mode = ('static' if config.static_fits_dir else
            'smplify' if config.run_smplify else 'mean')
  if mode == 'static':
    if not config.static_fits_dir:
      raise ValueError('--config.fits_init=static needs --config.static_fits_dir '
                       '(a folder with <dataset>_fits.npy files).')
    table, missing = fits_lib.load_static_fits(config.static_fits_dir, layout, row)
    if table.num_rows != num_rows:
      raise ValueError(f'static fits cover {table.num_rows} rows, the training '
                       f'data has {num_rows}.')
    msg = f'static fits from {config.static_fits_dir}'
    if missing:
      msg += f' (mean parameters for {", ".join(missing)}: no file)'
    return table, msg
  if mode == 'mean':
    return fits_lib.init_table(num_rows, row, has_fit=True), 'mean parameters'
  if mode == 'smplify':
    if not config.run_smplify:
      raise ValueError('--config.fits_init=smplify needs --config.run_smplify=True.')
    return fits_lib.init_table(num_rows, row, has_fit=False), 'first SMPLify'
  raise ValueError(f'--config.fits_init={config.fits_init!r}: expected one of '
                   'static, mean, smplify, auto.')


# ------------------------------------------------------------ checkpointing
def _key_data(tree):
  """Typed PRNG keys (nnx dropout streams) -> raw uint32, for orbax."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x)
      if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def _wrap_keys(tree, like):
  return jax.tree.map(
      lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if jnp.issubdtype(t.dtype, jax.dtypes.prng_key) else x, tree, like)


def _ckpt_items(state: TrainState):
  model = dict(params=state.params, model_state=_key_data(state.model_state))
  train = dict(step=state.step, opt_state=state.opt_state, fits=state.fits,
               rng=state.rng)
  return model, train


def save_checkpoint(ckpt: ckpt_lib.Checkpointer, state: TrainState,
                    data_state, config) -> int:
  step = int(jax.device_get(state.step))
  model, train = _ckpt_items(state)
  ckpt.save(step, model, train, data_state, config)
  return step


def restore_checkpoint(ckpt: ckpt_lib.Checkpointer, state: TrainState,
                       step: int | None = None):
  """Restores onto `state`'s structure and shardings -> (state, data_state)."""
  model, train = _ckpt_items(state)
  out = ckpt.restore(model, train, step=step)
  m, t = out['model'], out['train']
  state = TrainState(step=t['step'], params=m['params'],
                     model_state=_wrap_keys(m['model_state'], state.model_state),
                     opt_state=t['opt_state'], fits=t['fits'], rng=t['rng'])
  return state, out['data']


def load_for_inference(path: str, step: int | None = None):
  """A trained regressor from a workdir (or its checkpoints folder).

  Returns (model: models.HMR in eval mode, config: ConfigDict). The body model
  is `smpl_io.resolve_body_model(config.body_model)`.
  """
  ckpt = ckpt_lib.Checkpointer(path, max_to_keep=None, read_only=True)
  config = ckpt.restore_config(step)
  model = create_model(config)
  graphdef, params, model_state = split_model(model)
  out = ckpt.restore(dict(params=params, model_state=_key_data(model_state)),
                     step=step)
  ms = _wrap_keys(out['model']['model_state'], model_state)
  model = nnx.merge(graphdef, out['model']['params'], ms)
  model.eval()
  return model, config


# ------------------------------------------------------------------- eval
def centred_j14(body_model, betas, rotmats_or_pose):
  """SPIN's evaluation joints: (J14 (B,14,3), vertices (B,V,3)), both centred
  on the pelvis of the H36M regressor (its joint 0).

  rotmats_or_pose: rotation matrices (B,24,3,3) or axis-angle (B,72).
  """
  if rotmats_or_pose.ndim == 4:
    body = smpl.forward(body_model, betas, rotmats_or_pose[:, 1:],
                        rotmats_or_pose[:, :1])
  else:
    body = smpl.forward(body_model, betas, rotmats_or_pose[:, 3:],
                        rotmats_or_pose[:, :3])
  joints = smpl.h36m_joints(body_model, body.vertices)    # (B,17,3)
  pelvis = joints[:, :1]
  return (joints - pelvis)[:, jnp.asarray(constants.H36M_TO_J14)], body.vertices - pelvis


def make_eval_fn(graphdef):
  """Jitted eval forward -> (pred J14, GT J14, pred vertices, GT vertices).

  SPIN's 3DPW protocol: joints from the H36M regressor on the neutral mesh,
  centred on its joint 0, 14 joints; GT from the GT SMPL parameters through
  the same body model. Vertices are centred on the same pelvis (for PVE).
  """
  def fn(params, model_state, images, pose, betas, body_model):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    model.eval()
    pred = model(images)
    pj, pv = centred_j14(body_model, pred['betas'], pred['rotmat'])
    gj, gv = centred_j14(body_model, betas, pose)
    return pj, gj, pv, gv

  return jax.jit(fn)


def evaluate(eval_fn, state: TrainState, eval_batches, body_model, mesh,
             max_samples: int | None = None) -> dict[str, float]:
  """Mean MPJPE, PA-MPJPE and PVE (mm) over the validation batches."""
  n_dev = mesh.devices.size
  per = {'mpjpe': [], 'pa_mpjpe': [], 'pve': []}
  seen = 0
  for batch in eval_batches:
    b = batch['image'].shape[0]
    pad = (-b) % n_dev  # pad to the device count, drop the padding after
    arrays = [batch['image'], batch['pose'], batch['betas']]
    keep = np.asarray(batch.get('valid', np.ones(b))) > 0  # eval padding
    if pad:
      arrays = [np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in arrays]
    arrays = parallel.shard_batch(tuple(arrays), mesh)
    pj, gj, pv, gv = parallel.to_host(
        eval_fn(state.params, state.model_state, *arrays, body_model))
    pj, gj, pv, gv = (x[:b][keep] for x in (pj, gj, pv, gv))
    per['mpjpe'].append(metrics.MM * metrics.mpjpe(pj, gj))
    per['pa_mpjpe'].append(metrics.MM * metrics.pa_mpjpe(pj, gj))
    per['pve'].append(metrics.MM * metrics.pve(pv, gv))
    seen += int(keep.sum())
    if max_samples and seen >= max_samples:
      break
  if not seen:
    return {}
  return {k: float(np.mean(np.concatenate(v))) for k, v in per.items()}


# ------------------------------------------------------------------ overlays
def make_visual_fn(graphdef):
  """Jitted: first samples' predicted mesh (eval mode) and kept-fit mesh."""

  def fn(params, model_state, fits_table, batch, body_model):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    model.eval()
    pred = models.body_outputs(model(batch['image']), body_model)
    kp_px = fits_lib.keypoints_to_pixels(batch['keypoints'])
    pose, betas, _ = fits_lib.lookup(fits_table, batch['index'],
                                     batch['rot_angle'], batch['is_flipped'])
    cam_t, loss = fits_lib.score_fit(body_model, pose, betas, kp_px)
    fit_v = smpl.forward(body_model, betas, pose[:, 3:], pose[:, :3]).vertices
    return pred['vertices'], pred['cam_t'], fit_v, cam_t, loss

  return jax.jit(fn)


def render_overlays(visual_fn, state, batch, body_model, n: int = 4) -> np.ndarray:
  """(H, n*3*W, 3) uint8: per sample, the crop | prediction | kept fit."""
  from spin_jax import augment
  from spin_jax import render
  small = jax.tree.map(lambda x: np.asarray(x)[:n], batch)
  pv, pt, fv, ft, floss = jax.device_get(visual_fn(
      state.params, state.model_state, state.fits, small, body_model))
  res = constants.IMG_RES
  faces = np.asarray(body_model.faces)
  centre = (res / 2.0, res / 2.0)
  tiles = []
  for i in range(pv.shape[0]):
    img = augment.denormalize_image(small['image'][i])
    if img.shape[0] != res:
      import cv2
      img = cv2.resize(img, (res, res), interpolation=cv2.INTER_LINEAR)
    pred = render.render_mesh(pv[i], faces, constants.FOCAL_LENGTH, centre,
                              (res, res), image=img, translation=pt[i],
                              color=(0.65, 0.74, 0.86))
    fit = render.render_mesh(fv[i], faces, constants.FOCAL_LENGTH, centre,
                             (res, res), image=img, translation=ft[i],
                             color=(0.86, 0.74, 0.65))
    tiles.append(np.concatenate([img, pred, fit], axis=1))
  return np.concatenate(tiles, axis=1)


# --------------------------------------------------------------------- data
class FunctionData:
  """Training batches from a deterministic function of the batch number.

  A minimal stand-in for the input pipeline (tests, benchmarks): `batch_fn(i)`
  returns the process-local numpy batch number i. Position = i.
  """

  def __init__(self, batch_fn: Callable[[int], dict], num_rows: int,
               layout=None, steps_per_epoch: int = 1000):
    self.batch_fn = batch_fn
    self.num_rows = num_rows
    self.layout = layout or [('data', 0, num_rows)]
    self.steps_per_epoch = steps_per_epoch
    self._pos = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    batch = self.batch_fn(self._pos)
    self._pos += 1
    return batch

  def get_state(self) -> dict:
    return {'position': self._pos}

  def set_state(self, state: dict) -> None:
    self._pos = int(state['position'])


def _load_prior(config):
  if config.pose_prior == 'default':
    return priors.default_pose_prior()
  return priors.load_gmm_prior(config.pose_prior)


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in parallel.to_host(metrics).items()}


def export_fits(state: TrainState, layout, out_dir: str) -> None:
  """Writes the table as SPIN's `<dataset>_fits.npy` files (atomic)."""
  table = np.asarray(parallel.to_host(state.fits.params))
  os.makedirs(out_dir, exist_ok=True)
  for name, off, n in layout:
    path = os.path.join(out_dir, f'{name}_fits.npy')
    tmp = path + '.tmp.npy'
    np.save(tmp, table[off:off + n])
    os.replace(tmp, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       body_model=None, prior=None, train_data=None,
                       eval_data=None, eval_hooks=()) -> dict[str, float]:
  """Trains (resuming from workdir's last checkpoint) and evaluates.

  Args:
    config: experiments/configs/default.py's ConfigDict.
    workdir: checkpoints, TensorBoard logs, exported fits and data go here.
    body_model, prior: override config.body_model / config.pose_prior.
    train_data: override the input pipeline: an iterator of process-local
      numpy batches with get_state()/set_state(), `num_rows`, `layout`
      ([(dataset, table offset, size)]) and `steps_per_epoch`.
    eval_data: override the validation data: a callable returning an
      iterable of numpy batches (image, pose, betas), or None to skip.
    eval_hooks: callables `hook(step, state, body_model) -> dict | None` run
      with every evaluation (step 0, every config.eval_every steps, the last
      step, and the step a run resumes at); their scalars are logged with
      the evaluation's (e.g. experiments/spin_effect.py measures the fits).
  Returns:
    The last logged training metrics and the last evaluation (eval/...).
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  lead = jax.process_index() == 0

  if body_model is None:
    body_model = smpl_io.resolve_body_model(config.body_model)
  if prior is None:
    prior = _load_prior(config)
  if train_data is None:
    train_data = _make_train_data(config, workdir)
  if eval_data is None:
    eval_data = _make_eval_data(config, workdir)

  model = create_model(config)
  if config.init_checkpoint:
    from spin_jax import convert
    convert.load_pretrained(model, config.init_checkpoint)
  num_steps = (config.num_train_steps if config.num_train_steps > 0 else
               config.num_epochs * train_data.steps_per_epoch)
  tx = make_optimizer(config, num_steps)
  lr_at = learning_rate_schedule(config, num_steps)
  table, fits_msg = init_fits_table(config, train_data.num_rows, train_data.layout)
  graphdef, state = create_train_state(config, model, table, tx)
  del model
  state = parallel.replicate(state, mesh)
  body_model = parallel.replicate(body_model, mesh)
  prior = parallel.replicate(prior, mesh)

  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, data_state = restore_checkpoint(ckpt, state)
    if data_state:
      train_data.set_state(data_state)
    logging.info('Resumed from %s at step %d.', ckpt.directory,
                 int(jax.device_get(state.step)))
  else:
    logging.info('Fits table: %d rows from %s.', train_data.num_rows, fits_msg)

  step_fn = make_train_step(config, graphdef, tx, mesh)
  eval_fn = make_eval_fn(graphdef) if eval_data is not None else None
  # Overlays render on one host from its local batch: single-process runs only.
  visual_fn = (make_visual_fn(graphdef)
               if config.render_every > 0 and jax.process_count() == 1 else None)

  writer = None
  if lead:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(os.path.join(workdir, 'tensorboard'))
  step = int(jax.device_get(state.step))
  bar = None
  if lead and config.progress_bar:
    from tqdm import tqdm
    bar = tqdm(total=num_steps, initial=step, desc='train', unit='step',
               dynamic_ncols=True)

  evaluated = []  # steps evaluated in this call

  def do_eval(step):
    evaluated.append(step)
    res = {}
    if eval_fn is not None:
      res = evaluate(eval_fn, state, eval_data(), body_model, mesh,
                     config.data.eval_size)
      res = {f'eval/{k}': v for k, v in res.items()}
    for hook in eval_hooks:
      res.update({f'eval/{k}': v for k, v in (hook(step, state, body_model)
                                               or {}).items()})
    if not res:
      return res
    if writer:
      for k, v in res.items():
        writer.add_scalar(k, v, step)
    logging.info('step %d: %s', step, res)
    return res

  last, last_eval, first_eval = {}, {}, {}
  evaluates = eval_fn is not None or bool(eval_hooks)
  if step == 0 and evaluates:
    # Where training starts from, so the logs show what it changed.
    first_eval = {k.replace('eval/', 'eval_start/'): v
                  for k, v in do_eval(0).items()}
  elif evaluates and config.eval_every > 0 and (
      step % config.eval_every == 0 or step == num_steps):
    # Resumed at an evaluation step: a kill between the checkpoint and the
    # evaluation must not lose that evaluation.
    last_eval = do_eval(step)
  window_t, window_steps = time.time(), 0
  data_state = train_data.get_state()
  try:
    while step < num_steps:
      prev_data_state = data_state
      batch = next(train_data)
      next_data_state = train_data.get_state()
      gbatch = parallel.shard_batch(batch, mesh)
      # (state, data_state) always change together, so an interrupt anywhere
      # saves a consistent pair.
      state, metrics, data_state = (
          *step_fn(state, gbatch, body_model, prior), next_data_state)
      if not bool(parallel.to_host(metrics['finite'])):
        # The step left the state as it was: that is the last good one, and
        # it pairs with the pipeline position before this batch.
        if config.stop_on_nonfinite:
          saved = save_checkpoint(ckpt, state, prev_data_state, config)
          m = _host_metrics(metrics)
          raise NonFiniteError(
              f'Non-finite loss or parameters at step {step + 1} '
              f'(loss/total={m.get("loss/total")}, '
              f'grad_norm={m.get("train/grad_norm")}). The last good state is '
              f'saved as step {saved} in {ckpt.directory}; lower '
              '--config.learning_rate or inspect that batch.')
        logging.warning('Non-finite step %d skipped (its batch is dropped).',
                        step + 1)
        continue
      step += 1
      window_steps += 1
      if bar is not None:
        bar.update(1)
      if step % config.log_every == 0 or step == num_steps:
        last = _host_metrics(metrics)
        dt = time.time() - window_t
        last['train/steps_per_s'] = window_steps / max(dt, 1e-9)
        last['train/images_per_s'] = last['train/steps_per_s'] * config.batch_size
        last['train/learning_rate'] = float(lr_at(step - 1))
        last['fits/table_mean_loss'] = float(_finite_mean(
            parallel.to_host(state.fits.loss)))
        window_t, window_steps = time.time(), 0
        if writer:
          for k, v in last.items():
            if k != 'finite':
              writer.add_scalar(k, v, step)
        if bar is not None:
          bar.set_postfix(loss=f'{last["loss/total"]:.3g}',
                          fit_upd=f'{last["fits/update_rate"]:.2f}')
      if visual_fn is not None and lead and step % config.render_every == 0:
        img = render_overlays(visual_fn, state, batch, body_model)
        writer.add_image('overlay/input_pred_fit', img, step, dataformats='HWC')
      if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
        save_checkpoint(ckpt, state, data_state, config)
      if config.eval_every > 0 and step % config.eval_every == 0:
        last_eval = do_eval(step)
  except KeyboardInterrupt:
    # Never lose the fits: save where we are (consistent state + position).
    try:
      save_checkpoint(ckpt, state, data_state, config)
    except Exception as e:  # e.g. interrupted while the step held the buffers
      logging.error('Could not save on interrupt (%s); the last periodic '
                    'checkpoint in %s stands.', e, ckpt.directory)
    raise
  finally:
    if bar is not None:
      bar.close()

  save_checkpoint(ckpt, state, data_state, config)
  if lead:
    export_fits(state, train_data.layout, os.path.join(workdir, 'fits'))
  if evaluates and step not in evaluated:
    last_eval = do_eval(step)
  if writer:
    writer.close()
  ckpt.close()
  out = dict(last)
  out.update(first_eval)
  out.update(last_eval)
  out['step'] = step
  return out


# ------------------------------------------------------------ input pipeline
def _dataset_names(config) -> list[str]:
  names = [n.strip() for n in str(config.data.datasets).split(',') if n.strip()]
  if names == ['spin']:
    names = list(constants.TRAIN_DATASETS)
  if not names:
    raise ValueError('--config.data.datasets is empty: give "synthetic", "spin" '
                     'or a comma-separated list of dataset names.')
  return names


def _data_dir(config, workdir: str) -> str:
  return config.data.data_dir or os.path.join(workdir, 'data')


def data_sources(config, workdir: str, names, split: str):
  """(name, random-access source) pairs; the synthetic set is built if missing.

  names: ['synthetic'] (split 'train' or 'test', sized by config.data.*) or
  SPIN dataset names (built TFDS datasets in the data dir; `split` unused).
  """
  data_dir = _data_dir(config, workdir)
  if names == ['synthetic']:
    # Rendered from the configured body model; built into data_dir if missing.
    from spin_jax.datasets import synthetic
    kwargs = synthetic.build_kwargs(
        config.data.synthetic_train_size, config.data.synthetic_test_size,
        config.model.img_res, seed=config.seed, body_model=config.body_model,
        appearance=config.data.get('synthetic_appearance', 'clothes'),
        pose_scale=config.data.get('synthetic_pose_scale', 1.0),
        domains=config.data.get('synthetic_domains', 'same'))
    return synthetic.sources(data_dir, split, **kwargs)
  from spin_jax import datasets
  return [(n, datasets.data_source(n, data_dir)) for n in names]


def _make_train_data(config, workdir: str):
  from spin_jax import augment
  from spin_jax import input_pipeline
  names = _dataset_names(config)
  sources = data_sources(config, workdir, names, 'train')
  weights = None
  if config.data.mixing == 'uniform':
    weights = {n: 1.0 for n, _ in sources}
  elif config.data.mixing != 'spin':
    raise ValueError(f'--config.data.mixing={config.data.mixing!r}: expected '
                     '"spin" or "uniform".')
  pipe = input_pipeline.InputPipeline(
      sources, batch_size=config.batch_size, weights=weights, seed=config.seed,
      train=True, augment_config=augment.AugmentConfig(
          img_res=config.model.img_res,
          flip_prob=float(config.data.get('flip_prob', 0.5)),
          noise_factor=float(config.data.get('noise_factor', 0.4))),
      num_workers=config.data.num_workers, ignore_3d=config.data.ignore_3d)
  pipe.num_rows = pipe.num_fits_rows
  pipe.layout = [(n, pipe.dataset_offsets[n], s)
                 for n, s in zip(pipe.names, pipe.sizes)]
  return pipe


def _make_eval_data(config, workdir: str):
  """A callable giving one pass over the validation split, or None."""
  split = config.data.eval_split
  if not split or config.eval_every <= 0:
    return None
  from spin_jax import augment
  from spin_jax import input_pipeline
  if split == 'synthetic_test':
    sources = data_sources(config, workdir, ['synthetic'], 'test')
  else:
    from spin_jax import datasets
    sources = [(split, datasets.data_source(split, _data_dir(config, workdir)))]

  def batches():
    return input_pipeline.InputPipeline(
        sources, batch_size=config.batch_size, train=False,
        augment_config=augment.AugmentConfig(img_res=config.model.img_res))

  return batches
