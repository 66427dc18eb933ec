"""Orbax checkpoints of the whole training run.

A checkpoint directory `<workdir>/checkpoints/<step>/` holds four items:
  model   params + other model state (BatchNorm statistics, rng counters)
  train   optimiser state, fits table, rng, step
  data    the input pipeline's position (JSON), for an exact resume
  config  the training configuration (JSON), so evaluation and the demo can
          rebuild the regressor from the directory alone
Orbax writes each step into a temporary folder and renames it when complete,
so a run killed at any moment leaves only whole checkpoints. Unlike SPIN,
which saved its fits table only on a timed exit, the table is in every one.

Restoring falls back: a step that cannot be read (a truncated file, a
missing item) is reported and skipped, and the newest readable step is used.
A writable Checkpointer (training) moves the unreadable step aside into
`<workdir>/checkpoints_unreadable/` (never deletes it), so that training can
save that step number again; a read-only one (evaluation, demo, export)
leaves the directory untouched.
"""
from __future__ import annotations

import gc
import json
import logging as py_logging
import os
import shutil
import sys
import threading
import time
import traceback
from typing import Any

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = 'checkpoints'
UNREADABLE_SUBDIR = 'checkpoints_unreadable'
ITEMS = ('model', 'train', 'data', 'config')


class CheckpointError(RuntimeError):
  """No readable checkpoint, or a save that failed (disk full, read-only)."""


def checkpoint_dir(workdir: str) -> str:
  """`workdir/checkpoints`, or `workdir` itself if it already is one."""
  workdir = os.path.abspath(workdir)
  sub = os.path.join(workdir, CHECKPOINT_SUBDIR)
  if os.path.isdir(sub) or not _has_steps(workdir):
    return sub
  return workdir


def _has_steps(path: str) -> bool:
  return os.path.isdir(path) and any(
      d.isdigit() for d in os.listdir(path))


class Checkpointer:
  """Saves and restores (model, train, data, config) at integer steps."""

  def __init__(self, workdir: str, max_to_keep: int | None = 3,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(
          f'{workdir}: no checkpoints (expected a training workdir holding '
          f'{CHECKPOINT_SUBDIR}/<step>/ folders).')
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False)
    # Handlers given up front, so item_metadata can read a step's shapes.
    handlers = dict(model=ocp.StandardCheckpointHandler(),
                    train=ocp.StandardCheckpointHandler(),
                    data=ocp.JsonCheckpointHandler(),
                    config=ocp.JsonCheckpointHandler())
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_handlers=handlers)
    self._skipped: set[int] = set()  # unreadable steps (read-only mode)

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  def all_steps(self) -> list[int]:
    return sorted(s for s in self.manager.all_steps() if s not in self._skipped)

  def save(self, step: int, model: Any, train: Any, data_state: dict | None,
           config: ml_collections.ConfigDict | dict | None) -> None:
    """Blocking, atomic save of everything at `step` (overwrites nothing).

    Raises CheckpointError if the write fails; the earlier checkpoints stay.
    """
    if step in self.manager.all_steps():
      return  # already saved (e.g. periodic save followed by the final one)
    cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else (
        config or {})
    try:
      with _HoldBackgroundOutput() as held:
        self._save(step, model, train, data_state, cfg)
    except Exception as e:  # orbax wraps OSErrors in several layers
      error = CheckpointError(
          f'could not save step {step} in {self.directory} ({_root_cause(e)}); '
          f'the previous checkpoint (step {self.latest_step()}) is kept.')
      error.background_output = held.text
      raise error from e

  def _save(self, step, model, train, data_state, cfg) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(model),
        train=ocp.args.StandardSave(train),
        data=ocp.args.JsonSave(data_state or {}),
        config=ocp.args.JsonSave(json.loads(json.dumps(cfg, default=str)))),
        force=True)
    self.manager.wait_until_finished()

  def restore(self, abstract_model: Any, abstract_train: Any | None = None,
              step: int | None = None) -> dict:
    """Restores onto the structure (and shardings) of the given targets.

    step None: the newest readable step (unreadable ones are skipped, see the
    module doc). An explicit step must exist and be readable.
    Returns dict(model=..., train=... (if asked), data=dict, config=dict, step=int).
    """
    targets = dict(model=_abstract(abstract_model))
    if abstract_train is not None:
      targets['train'] = _abstract(abstract_train)
    items = {k: ocp.args.StandardRestore(v) for k, v in targets.items()}
    items.update(data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
    out, step = self._restore(items, step, targets)
    res = {k: out[k] for k in items}
    res['step'] = step
    return res

  def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
    out, _ = self._restore(dict(config=ocp.args.JsonRestore()), step)
    if not out['config']:
      raise CheckpointError(f'{self.directory}: step {step} holds an empty config.')
    return ml_collections.ConfigDict(out['config'])

  def _restore(self, items: dict, step: int | None, targets: dict | None = None):
    """(restored items, step): `step`, or the newest readable one if None.

    Reading a damaged step makes tensorstore's futures fail in bulk: their
    tracebacks (from its threads, from garbage-collected coroutines) would
    bury the one warning, so they are held back (_HoldBackgroundOutput) and
    shown only with --verbose: logged at INFO after a fallback, or carried by
    the error as `background_output` (printed by spin_jax.cli).
    """
    held = _HoldBackgroundOutput()
    try:
      with held:
        out = self._restore_held(items, step, targets or {}, held)
    except Exception as e:
      e.background_output = held.text
      raise
    if held.failed and held.text:
      logging.info('Held back while reading %s:\n%s', self.directory, held.text)
    return out

  def _restore_held(self, items, step, targets, held):
    if step is not None:
      if step not in self.manager.all_steps():
        raise FileNotFoundError(
            f'{self.directory}: no checkpoint at step {step}; steps present: '
            f'{self.all_steps() or "none"}.')
      self._check_structure(step, targets)
      out, why = self._read(step, items, held)
      if why is not None:
        raise CheckpointError(f'{self.directory}: step {step} cannot be read '
                              f'({why}).')
      return out, step
    skipped = []  # (step, why, where): one warning each once a step reads
    while True:
      step = self.latest_step()
      if step is None:
        why = '; '.join(f'step {s}: {w}' + ('' if self.read_only else f', {where}')
                        for s, w, where in skipped)
        raise FileNotFoundError(f'No readable checkpoint in {self.directory}'
                                + (f' ({why})' if why else '') + '.')
      # Another configuration is the user's error, not a damaged step: it
      # must never send the checkpoints aside.
      self._check_structure(step, targets)
      out, why = self._read(step, items, held)
      if why is None:
        for s, w, where in skipped:
          logging.warning('Checkpoint step %d in %s cannot be read (%s); %s. '
                          'Using the newest readable step (%d) instead.', s,
                          self.directory, w, where, step)
        return out, step
      skipped.append((step, why, self._skip(step)))

  def _read(self, step: int, items: dict, held: '_HoldBackgroundOutput'):
    """(restored items, None), or (None, why) if the step cannot be read (a
    truncated or missing file, bad JSON, ...); the failure's traceback goes
    to `held` and its leftovers are let out while held (held.settle)."""
    try:
      return self.manager.restore(step, args=ocp.args.Composite(**items)), None
    except Exception as e:  # pylint: disable=broad-except
      why = _root_cause(e)
      held.keep(''.join(traceback.format_exception(e)))
    # `e` is gone now, and with it the last references to the failed reads.
    held.settle()
    return None, why

  def _check_structure(self, step: int, targets: dict) -> None:
    """Raises CheckpointError if `step` stores arrays of other shapes than
    the targets (a checkpoint of another configuration); says nothing when
    the metadata itself cannot be read (that is a damaged step)."""
    if not targets:
      return
    try:
      metadata = self.manager.item_metadata(step)
    except Exception:  # pylint: disable=broad-except
      return
    for name, target in targets.items():
      stored = metadata.get(name) if metadata is not None else None
      if stored is None:
        continue
      have = sorted(_shape_key(x) for x in jax.tree.leaves(stored))
      want = sorted(_shape_key(x) for x in jax.tree.leaves(target))
      if have != want:
        extra = sorted(set(have) - set(want))[:2]
        missing = sorted(set(want) - set(have))[:2]
        raise CheckpointError(
            f'{self.directory}: step {step} was written with another '
            f'configuration ({name}: {len(have)} arrays stored, {len(want)} '
            f'expected; e.g. stored {extra or "-"} vs expected {missing or "-"}). '
            f'Use a new --workdir, or the configuration it was trained with '
            f'(e.g. --config.model.backbone, the datasets).')

  def _skip(self, step: int) -> str:
    """Sets an unreadable step aside (see the module doc); says where."""
    if self.read_only:
      self._skipped.add(step)
      return 'left in place (read-only)'
    aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_SUBDIR,
                         f'{step}-{time.strftime("%Y%m%d-%H%M%S")}')
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), aside)
    self.manager.reload()
    return f'moved to {aside}'

  def close(self) -> None:
    self.manager.close()


class _HoldBackgroundOutput:
  """Holds back the output of tensorstore's failing futures while a save or
  a restore runs: what other threads write to sys.stderr, the exceptions
  Python reports as unraisable (coroutines garbage-collected with an error:
  'Exception ignored in: <coroutine ...>', from any thread) and asyncio's
  'Future exception was never retrieved'.

  When one read or write of a checkpoint fails, orbax gives up on the others
  and closes its event loop while they are in flight; their callbacks then
  print tracebacks ('Event loop is closed', 'OUT_OF_RANGE ... OCDBT') by the
  dozen around our one line. So: the calling thread writes through; the rest
  is held, written out after a success, and after a failure (`settle`: a
  moment for it to arrive, and a garbage collection) kept in `text` for
  --verbose.
  """
  GRACE_S = 0.5

  def __init__(self):
    self._owner = threading.get_ident()
    self._held: list[str] = []
    self._lock = threading.Lock()
    self.failed = False
    self.text = ''

  def __enter__(self):
    self._real = sys.stderr
    sys.stderr = self
    self._unraisablehook = sys.unraisablehook
    sys.unraisablehook = self._hold_unraisable
    py_logging.getLogger('asyncio').addFilter(self._hold_record)
    return self

  def write(self, text: str) -> int:
    if threading.get_ident() == self._owner:
      return self._real.write(text)
    self._append(text)
    return len(text)

  def flush(self) -> None:
    self._real.flush()

  def __getattr__(self, name):
    return getattr(self._real, name)

  def keep(self, text: str) -> None:
    """Adds text for --verbose; what is held is no longer written out."""
    self.failed = True
    self._append(text)

  def settle(self) -> None:
    """After a failure: lets the failed futures report (and be collected)
    while held; nothing held is written out."""
    self.failed = True
    time.sleep(self.GRACE_S)
    gc.collect()

  def _append(self, text: str) -> None:
    with self._lock:
      self._held.append(text)

  def _hold_unraisable(self, unraisable) -> None:
    head = unraisable.err_msg or 'Exception ignored in'
    self._append(f'{head}: {unraisable.object!r}\n' + ''.join(
        traceback.format_exception(unraisable.exc_type, unraisable.exc_value,
                                   unraisable.exc_traceback)))

  def _hold_record(self, record: py_logging.LogRecord) -> bool:
    self._append(py_logging.Formatter().format(record) + '\n')
    return False

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is not None:
      self.settle()
    if sys.stderr is self:
      sys.stderr = self._real
    sys.unraisablehook = self._unraisablehook
    py_logging.getLogger('asyncio').removeFilter(self._hold_record)
    with self._lock:
      self.text = ''.join(self._held)
    if not self.failed and self.text:
      self._real.write(self.text)
    return False


def _root_cause(e: BaseException) -> str:
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  return f'{type(e).__name__}: {e}'.strip()[:300]


def _shape_key(x) -> tuple:
  return tuple(int(d) for d in x.shape), str(x.dtype)


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


# ---------------------------------------------------------------------------
# Typed PRNG keys (nnx dropout streams) are stored as raw uint32.


def key_data(tree):
  """Typed PRNG keys -> raw uint32 data, for orbax."""
  return jax.tree.map(
      lambda x: jax.random.key_data(x)
      if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x, tree)


def wrap_keys(tree, like):
  """Inverse of key_data, with the key implementations of `like`."""
  return jax.tree.map(
      lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t))
      if jnp.issubdtype(t.dtype, jax.dtypes.prng_key) else x, tree, like)


# ---------------------------------------------------------------------------
# The train state (spin_jax.step.TrainState) and the regressor alone.


def _state_items(state):
  model = dict(params=state.params, model_state=key_data(state.model_state))
  train = dict(step=state.step, opt_state=state.opt_state, fits=state.fits,
               rng=state.rng)
  return model, train


def save_state(ckpt: Checkpointer, state, data_state, config) -> int:
  """Saves a TrainState with the input pipeline's position; returns the step."""
  step = int(jax.device_get(state.step))
  model, train = _state_items(state)
  ckpt.save(step, model, train, data_state, config)
  return step


def restore_state(ckpt: Checkpointer, state, step: int | None = None):
  """Restores onto `state`'s structure and shardings -> (state, data_state)."""
  model, train = _state_items(state)
  out = ckpt.restore(model, train, step=step)
  m, t = out['model'], out['train']
  state = state.replace(step=t['step'], params=m['params'],
                        model_state=wrap_keys(m['model_state'], state.model_state),
                        opt_state=t['opt_state'], fits=t['fits'], rng=t['rng'])
  return state, out['data']


def restore_model(ckpt: Checkpointer, model: nnx.Module,
                  step: int | None = None) -> nnx.Module:
  """The regressor's params and model state of a checkpoint, merged into a
  model built with the checkpoint's own config (eval mode)."""
  graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
  out = ckpt.restore(dict(params=params, model_state=key_data(model_state)),
                     step=step)
  restored = nnx.merge(graphdef, out['model']['params'],
                       wrap_keys(out['model']['model_state'], model_state))
  restored.eval()
  return restored
