"""What every entry point shares: one line per error, quiet logs, CPU flags.

    from spin_jax import cli
    ...
    if __name__ == '__main__':
      cli.run(main)

- Errors: a bad flag, a missing or unreadable file, a wrong shape, a failed
  checkpoint save... are printed as ONE line, `error: <message>`, on stderr,
  with exit code 2 (the messages name the file, key or flag and what was
  expected). The traceback only with --verbose or SPIN_JAX_VERBOSE=1.
  Ctrl-C exits 130 after the library's own clean-up (training saves).
- Logs: library INFO logs (absl, orbax, jax) only with --verbose (or absl's
  own --verbosity / --logtostderr); warnings and errors always. What the
  entry point prints itself (progress bar, evaluations, written paths) stays.
- XLA on the CPU: the flags measured best there (CPU_XLA_FLAGS) are added to
  XLA_FLAGS before any backend starts, unless an accelerator plugin is
  installed or the user already set them. `enable_compilation_cache` keeps
  compiled programs between runs.
"""
from __future__ import annotations

import importlib.metadata
import logging as py_logging
import os
import sys
import threading
import traceback
import warnings
from typing import Callable

from absl import app
from absl import flags
from absl import logging
import jax

_VERBOSE = flags.DEFINE_bool(
    'verbose', False, 'Library INFO logs, and tracebacks with errors.')

EXIT_ERROR = 2
# What bad input raises (messages name the file, key or flag); anything else
# is a bug, reported with a hint to rerun with --verbose.
_USER_ERRORS = (ValueError, OSError, KeyError, LookupError, app.UsageError,
                FloatingPointError, RuntimeError)
EXIT_INTERRUPTED = 130
# XLA:CPU flags the entry points set (experiments/benchmarks/regressor.py):
# without YNNPACK fusions, ResNet-50 inference ran 3.1x torch's speed on the
# 2-core development CPU, against 1.8x with jax's defaults. YNNPACK for
# reductions only ('reduce') would speed up BatchNorm's statistics but slows
# SMPLify 1.2-1.4x; spin_jax.layers computes those sums as matrix products
# instead, as fast in the training step.
CPU_XLA_FLAGS = ('--xla_cpu_experimental_ynn_fusion_type=',)
# Distributions whose presence means jax will run on an accelerator.
_ACCELERATOR_PLUGINS = ('jax-cuda12-plugin', 'jax-cuda13-plugin', 'jax-rocm',
                        'jax-rocm60-plugin', 'jax-rocm7-plugin', 'libtpu',
                        'libtpu-nightly')
DEFAULT_COMPILATION_CACHE = os.path.join('~', '.cache', 'spin_jax', 'jax')


def verbose() -> bool:
  env = os.environ.get('SPIN_JAX_VERBOSE', '').lower() in ('1', 'true', 'yes')
  return env or (flags.FLAGS.is_parsed() and _VERBOSE.value)


def accelerator_installed() -> bool:
  """True if jax has a GPU/TPU plugin or JAX_PLATFORMS names a non-CPU one."""
  platforms = os.environ.get('JAX_PLATFORMS', '').lower()
  if platforms:
    return any(p.strip() not in ('', 'cpu') for p in platforms.split(','))
  for name in _ACCELERATOR_PLUGINS:
    try:
      importlib.metadata.distribution(name)
      return True
    except importlib.metadata.PackageNotFoundError:
      pass
  return False


def configure_xla() -> None:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS on CPU-only installs (before any backend
  starts; flags the user set win)."""
  if accelerator_installed():
    return
  current = os.environ.get('XLA_FLAGS', '')
  extra = [f for f in CPU_XLA_FLAGS if f.split('=')[0] not in current]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([current] + extra).strip()


def enable_compilation_cache(path: str | None = DEFAULT_COMPILATION_CACHE) -> None:
  """Keeps compiled programs in `path` (jax's persistent cache) so that the
  next run skips compiling SMPLify (tens of seconds on a small CPU);
  '' or None leaves jax's settings alone."""
  if not path:
    return
  path = os.path.expanduser(path)
  os.makedirs(path, exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)


def quiet_logs() -> None:
  """Library INFO logs off, unless --verbose / absl's own verbosity flags."""
  if verbose():
    logging.set_verbosity(logging.INFO)
    return
  if flags.FLAGS['verbosity'].present or flags.FLAGS['v'].present:
    return  # the user chose
  logging.set_verbosity(logging.WARNING)
  py_logging.getLogger().setLevel(py_logging.WARNING)
  # Orbax logs the failures of its worker threads (with tracebacks) and then
  # raises them in the caller, which reports them: once is enough.
  logging.get_absl_handler().addFilter(
      lambda record: '/orbax/' not in record.pathname.replace(os.sep, '/'))
  threading.excepthook = lambda args: None  # raised again where it matters
  # Third-party deprecation notices are for library authors, not users.
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  warnings.filterwarnings('ignore', category=FutureWarning)


def error_line(e: BaseException) -> str:
  """`error: <message>` for an exception, on one line."""
  msg = str(e).strip() or type(e).__name__
  if isinstance(e, (OSError, KeyError)) and not isinstance(e, FileNotFoundError):
    msg = f'{type(e).__name__}: {msg}'
  return 'error: ' + ' '.join(msg.split())


def _background_output(e: BaseException | None) -> str:
  """What the library held back while the error happened (e.g. tensorstore's
  tracebacks of a failed checkpoint read), found along the cause chain."""
  while e is not None:
    if getattr(e, 'background_output', ''):
      return e.background_output
    e = e.__cause__ or e.__context__
  return ''


def flag_error(e: Exception):
  """Exits with one line for a flags error (a bad flag, a missing flagfile)."""
  sys.stderr.write(error_line(e) + ' (see --helpshort)\n')
  sys.exit(EXIT_ERROR)


def config_flag_error(e: Exception):
  """Exits with one line for a bad --config.FIELD override (ml_collections
  raises it while the flag is defined, as an AttributeError around a KeyError
  whose text holds its 'Did you mean ...?')."""
  while isinstance(e, Exception) and e.args and isinstance(e.args[0], Exception):
    e = e.args[0]
  text = str(e.args[0]) if e.args else str(e)
  text = text.replace('\\n', ' ').replace('\\\'', "'").strip('\'" ')
  if 'Did you mean' in text:
    field, _, hint = text.partition('Did you mean')
    field = field.strip().strip('\'"')
    text = f"--config: no field '{field}'. Did you mean{hint}"
  else:
    text = f'--config: {text}'
  flag_error(ValueError(text))


def _parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    flag_error(e)


def run(main: Callable[[list[str]], int | None]) -> None:
  """absl's app.run with the behaviour of the module doc."""

  def wrapped(argv):
    configure_xla()
    quiet_logs()
    try:
      return main(argv)
    except KeyboardInterrupt:
      sys.stderr.write('interrupted\n')
      sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
      raise
    except Exception as e:  # pylint: disable=broad-except
      if verbose():
        traceback.print_exc()
        sys.stderr.write(_background_output(e))
      line = error_line(e)
      if not isinstance(e, _USER_ERRORS) and not verbose():
        line += ' (an internal error: please report it with the output of --verbose)'
      sys.stderr.write(line + '\n')
      sys.stderr.flush()
      if not verbose():
        # Library threads left failing (e.g. after a failed checkpoint save)
        # would print on their way out: the line above said it all.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
      sys.exit(EXIT_ERROR)

  app.run(wrapped, flags_parser=_parse_flags)
