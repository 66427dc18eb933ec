"""Training batches from a function of the batch number: the input pipeline's
stand-in for tests and benchmarks, importable without grain, TFDS or OpenCV
(spin_jax.input_pipeline re-exports it)."""
from __future__ import annotations

from typing import Callable


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
