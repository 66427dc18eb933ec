"""SPIN training: the loop around spin_jax.step.

`train_and_evaluate(config, workdir)` builds the regressor, the fits table and
the input pipeline, restores the newest readable checkpoint, then runs the
jitted step (spin_jax/step.py), logs, validates (spin_jax/validation.py),
renders overlays and saves checkpoints (spin_jax/checkpoint.py) until
config.num_train_steps (or num_epochs). Re-running with the same workdir
resumes exactly: params, optimiser, fits table, rng and the pipeline position.
"""
from __future__ import annotations

import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from spin_jax import checkpoint as ckpt_lib
from spin_jax import constants
from spin_jax import convert
from spin_jax import fits as fits_lib
from spin_jax import models
from spin_jax import parallel
from spin_jax import priors
from spin_jax import smpl_io
from spin_jax import step as step_lib
from spin_jax import validation


class NonFiniteError(FloatingPointError):
  """Raised when the loss or the parameters stop being finite."""


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


def load_prior(config):
  """config.pose_prior: 'default' (embedded) or a path to gmm_08.pkl / our npz."""
  if config.pose_prior == 'default':
    return priors.default_pose_prior()
  return priors.load_gmm_prior(config.pose_prior)


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in parallel.to_host(metrics).items()}


def export_fits(state: step_lib.TrainState, layout, out_dir: str) -> None:
  """Writes the table as SPIN's `<dataset>_fits.npy` files (atomic)."""
  table = np.asarray(parallel.to_host(state.fits.params))
  os.makedirs(out_dir, exist_ok=True)
  for name, off, n in layout:
    path = os.path.join(out_dir, f'{name}_fits.npy')
    tmp = path + '.tmp.npy'
    np.save(tmp, table[off:off + n])
    os.replace(tmp, path)


def _read_batch(train_data, mesh):
  """(device batch, host batch, pipeline position after it). Called right
  after a step is dispatched, so reading and transferring the next batch
  overlaps the step; the position is taken when the batch is read, so a
  checkpoint pairs the state with the position of the last batch it used."""
  batch = next(train_data)
  return parallel.shard_batch(batch, mesh), batch, train_data.get_state()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       body_model=None, prior=None, train_data=None,
                       eval_data=None, eval_hooks=()) -> dict[str, float]:
  """Trains (resuming from workdir's newest readable checkpoint) and evaluates.

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

  The host never waits for a step to finish before dispatching the next: it
  reads the step counter back at each log, evaluation and checkpoint. A
  non-finite step leaves the state unchanged (spin_jax.step.train_step), so
  no checkpoint can hold one; it is found at the next read-back, and then
  training stops (config.stop_on_nonfinite) or goes on, its batch dropped.
  """
  workdir = os.path.abspath(workdir)
  models.ModelConfig.create(config.model)  # a bad --config.model.* fails here
  os.makedirs(workdir, exist_ok=True)
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.batch_size, mesh)
  lead = jax.process_index() == 0

  if body_model is None:
    body_model = smpl_io.resolve_body_model(
        config.body_model, min_betas=constants.NUM_BETAS)
  if prior is None:
    prior = load_prior(config)
  if train_data is None or eval_data is None:
    # Here, not at the top: training from given batches (tests, the device
    # check) needs neither grain nor TFDS nor OpenCV.
    from spin_jax import input_pipeline  # pylint: disable=g-import-not-at-top
    if train_data is None:
      train_data = input_pipeline.training_data(config, workdir)
    if eval_data is None:
      eval_data = input_pipeline.validation_data(config, workdir)

  model = step_lib.create_model(config)
  if config.init_checkpoint:
    convert.load_pretrained(model, config.init_checkpoint)
  num_steps = (config.num_train_steps if config.num_train_steps > 0 else
               config.num_epochs * train_data.steps_per_epoch)
  tx = step_lib.make_optimizer(config, num_steps)
  lr_at = step_lib.learning_rate_schedule(config, num_steps)
  table, fits_msg = init_fits_table(config, train_data.num_rows, train_data.layout)
  graphdef, state = step_lib.create_train_state(config, model, table, tx)
  del model
  state = parallel.replicate(state, mesh)
  body_model = parallel.replicate(body_model, mesh)
  prior = parallel.replicate(prior, mesh)

  ckpt = ckpt_lib.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt_lib.restore_state(ckpt, state)
    if data_state:
      train_data.set_state(data_state)
    logging.info('Resumed from %s at step %d.', ckpt.directory,
                 int(jax.device_get(state.step)))
  else:
    logging.info('Fits table: %d rows from %s.', train_data.num_rows, fits_msg)

  step_fn = step_lib.make_train_step(config, graphdef, tx, mesh)
  eval_fn = validation.make_eval_fn(graphdef) if eval_data is not None else None
  # Overlays render on one host from its local batch: single-process runs only.
  visual_fn = (validation.make_visual_fn(graphdef)
               if config.render_every > 0 and jax.process_count() == 1 else None)

  # Imported here: the step's helpers above (benchmarks) need neither.
  from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  writer = SummaryWriter(os.path.join(workdir, 'tensorboard')) if lead else None
  step = int(jax.device_get(state.step))
  bar = (tqdm(total=num_steps, initial=step, desc='train', unit='step',
              dynamic_ncols=True) if lead and config.progress_bar else None)
  evaluated = []  # steps evaluated in this call

  def do_eval(step):
    evaluated.append(step)
    res = {}
    if eval_fn is not None:
      res = validation.validate(eval_fn, state, eval_data(), body_model, mesh,
                                config.data.eval_size)
      res = {f'eval/{k}': v for k, v in res.items()}
    for hook in eval_hooks:
      res.update({f'eval/{k}': v for k, v in (hook(step, state, body_model)
                                               or {}).items()})
    if res and writer:
      for k, v in res.items():
        writer.add_scalar(k, v, step)
    if res and lead:
      line = f'step {step}: ' + ', '.join(f'{k[5:]} {v:.4g}' for k, v in res.items())
      if bar is not None:
        bar.write(line)  # one line per evaluation above the progress bar
      else:
        logging.info(line)
    return res

  def save():
    return ckpt_lib.save_state(ckpt, state, data_state, config)

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
  upcoming = None
  skipped = 0
  try:
    while step < num_steps:
      gbatch, batch, next_data_state = upcoming or _read_batch(train_data, mesh)
      # (state, data_state) always change together, so an interrupt anywhere
      # saves a consistent pair.
      state, metrics, data_state = (
          *step_fn(state, gbatch, body_model, prior), next_data_state)
      upcoming = None
      step += 1
      if step < num_steps:  # prefetch while the step runs
        upcoming = _read_batch(train_data, mesh)
      window_steps += 1
      is_log = step % config.log_every == 0 or step == num_steps
      is_ckpt = config.checkpoint_every > 0 and step % config.checkpoint_every == 0
      is_eval = config.eval_every > 0 and step % config.eval_every == 0
      is_render = (visual_fn is not None and lead
                   and step % config.render_every == 0)
      synced = is_log or is_ckpt or is_eval or is_render or step == num_steps
      if synced:
        applied = int(jax.device_get(state.step))  # the read-back
        if applied != step:  # non-finite steps left the state unchanged
          skipped += step - applied
          if config.stop_on_nonfinite:
            saved = save()
            m = _host_metrics(metrics)
            raise NonFiniteError(
                f'{step - applied} non-finite step(s) before step {step} '
                f'(last loss/total={m.get("loss/total")}, '
                f'grad_norm={m.get("train/grad_norm")}); they changed nothing. '
                f'The state is saved as step {saved} in {ckpt.directory}; '
                'lower --config.learning_rate or inspect the data.')
          logging.warning('%d non-finite step(s) skipped (their batches are '
                          'dropped).', step - applied)
          window_steps -= step - applied
          step = applied
          if bar is not None:
            bar.n = step
          continue
      if bar is not None and synced:
        # Steps are dispatched ahead of the device; the bar moves only when
        # they are done (at read-backs), so its rate and remaining time are
        # measured over whole intervals, not dispatch bursts.
        bar.update(step - bar.n)
      if is_log:
        last = _host_metrics(metrics)
        dt = time.time() - window_t
        last['train/steps_per_s'] = window_steps / max(dt, 1e-9)
        last['train/images_per_s'] = last['train/steps_per_s'] * config.batch_size
        last['train/learning_rate'] = float(lr_at(step - 1))
        last['train/skipped_steps'] = float(skipped)
        last['fits/table_mean_loss'] = float(step_lib.finite_mean(
            parallel.to_host(state.fits.loss)))
        window_t, window_steps = time.time(), 0
        if writer:
          for k, v in last.items():
            if k != 'finite':
              writer.add_scalar(k, v, step)
        if bar is not None:
          bar.set_postfix(loss=f'{last["loss/total"]:.3g}',
                          fit_upd=f'{last["fits/update_rate"]:.2f}')
      if is_render:
        img = validation.render_overlays(visual_fn, state, batch, body_model)
        writer.add_image('overlay/input_pred_fit', img, step, dataformats='HWC')
      if is_ckpt:
        save()
      if is_eval:
        last_eval = do_eval(step)
  except KeyboardInterrupt:
    # Never lose the fits: save where we are (consistent state + position).
    try:
      save()
    except Exception as e:  # e.g. interrupted while the step held the buffers
      logging.error('Could not save on interrupt (%s); the last periodic '
                    'checkpoint in %s stands.', e, ckpt.directory)
    raise
  except BaseException:
    if writer:
      try:
        writer.close()
      except OSError:  # e.g. the disk that failed the save is full
        pass
    raise
  finally:
    if bar is not None:
      bar.close()

  save()
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
