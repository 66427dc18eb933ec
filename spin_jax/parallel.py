"""Data parallelism: one ('data',) mesh over all devices of all processes.

The same code runs on one CPU, on N local devices and on several hosts: the
batch is sharded along 'data' (each process feeds its local slice), everything
else in the training state is replicated. Under jax.jit, XLA inserts the
gradient all-reduce, the BatchNorm statistics reduction over the global batch
and the gathers of the fits-table updates.
"""
from __future__ import annotations

import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None,
                           local_device_ids: Any = None) -> None:
  """Starts jax.distributed when more than one process takes part.

  Arguments default to JAX's own environment detection (SLURM, TPU pods, ...);
  for a few CPU processes on one machine pass them explicitly. On CPU the
  cross-process collectives go through gloo.
  """
  if coordinator_address is None and (num_processes or 1) <= 1:
    return  # single process: nothing to start
  # Cross-process collectives on CPU need an implementation; gloo ships with jaxlib.
  if os.environ.get('JAX_PLATFORMS', '') in ('', 'cpu'):
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes,
                             process_id=process_id,
                             local_device_ids=local_device_ids)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named 'data' over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data', other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> int:
  """Returns the per-process batch size; errors name the flag to change."""
  n_dev = mesh.devices.size
  if global_batch_size < 1:
    raise ValueError(f'--config.batch_size={global_batch_size}: must be >= 1.')
  if global_batch_size % n_dev:
    raise ValueError(
        f'--config.batch_size={global_batch_size} must be a multiple of the '
        f'number of devices ({n_dev}).')
  return global_batch_size // jax.process_count()


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch (this process's slice) -> global sharded arrays."""
  sharding = data_sharded(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      batch)


def replicate(tree: Any, mesh: Mesh) -> Any:
  """Puts a pytree (identical on every process) on all devices, replicated."""
  sharding = replicated(mesh)

  def put(x):
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
      # Typed PRNG keys (nnx rng streams) travel as their raw key data.
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    if jax.process_count() == 1:
      return jax.device_put(x, sharding)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
  """Fully replicated (or single-process) arrays -> numpy on every process."""

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(get, tree)
