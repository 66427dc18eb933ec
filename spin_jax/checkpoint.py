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
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = 'checkpoints'
ITEMS = ('model', 'train', 'data', 'config')


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
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=not read_only, read_only=read_only,
        enable_async_checkpointing=False)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, model: Any, train: Any, data_state: dict | None,
           config: ml_collections.ConfigDict | dict | None) -> None:
    """Blocking, atomic save of everything at `step` (overwrites nothing)."""
    if step in self.manager.all_steps():
      return  # already saved (e.g. periodic save followed by the final one)
    cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else (
        config or {})
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

    Returns dict(model=..., train=... (if asked), data=dict, config=dict, step=int).
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    items = dict(model=ocp.args.StandardRestore(_abstract(abstract_model)),
                 data=ocp.args.JsonRestore(), config=ocp.args.JsonRestore())
    if abstract_train is not None:
      items['train'] = ocp.args.StandardRestore(_abstract(abstract_train))
    out = self.manager.restore(step, args=ocp.args.Composite(**items))
    res = {k: out[k] for k in items}
    res['step'] = step
    return res

  def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    out = self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
    return ml_collections.ConfigDict(out['config'])

  def close(self) -> None:
    self.manager.close()


def _abstract(tree: Any) -> Any:
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
