"""Trains SPIN's regressor with SMPLify in the loop.

  python experiments/train.py --flagfile=experiments/flagfiles/quickstart.flags \
      --workdir=runs/quickstart

Any configuration field can be set with --config.FIELD=VALUE (see
experiments/configs/default.py); a flagfile is just a list of such flags.
Re-running with the same --workdir resumes from its last checkpoint.
Multi-host: pass --coordinator_address, --num_processes and --process_id
(or let jax.distributed detect them on a cluster: --distributed).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax

from spin_jax import cli
from spin_jax import parallel
from spin_jax import train

try:  # config_flags reads the command line (and flagfiles) right here
  _CONFIG = config_flags.DEFINE_config_file(
      'config', os.path.join(os.path.dirname(__file__), 'configs', 'default.py'),
      'Training configuration file (":tiny" suffix for the test setting).',
      lock_config=True)
except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
  # A misspelt or ill-typed --config.FIELD fails here, before app.run.
  cli.config_flag_error(e)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, logs, fits.',
                               required=True)
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Call jax.distributed.initialize() with cluster '
    'auto-detection (SLURM, TPU pods, ...).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes (multi-process).')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process (multi-process).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _DISTRIBUTED.value or _COORDINATOR.value:
    if _COORDINATOR.value:
      parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                      _PROCESS_ID.value)
    else:
      jax.distributed.initialize()
  config = _CONFIG.value
  logging.info('Config:\n%s', config)
  result = train.train_and_evaluate(config, _WORKDIR.value)
  summary = ', '.join(f'{k}={v:.4g}' for k, v in sorted(result.items())
                      if k.startswith(('eval', 'loss/total', 'fits/')))
  print(f'Finished at step {result.get("step")}: {summary}')
  print(f'wrote {os.path.abspath(_WORKDIR.value)} (checkpoints, fits, tensorboard)')


if __name__ == '__main__':
  cli.run(main)
