r"""The accelerator check: tests that matter on a GPU and the GPU figures, in one run.

  bash experiments/device_check.sh [OUT_DIR]        # on one NVIDIA GPU, ~6 min
  bash experiments/device_check.sh --dry-run DIR    # tiny sizes on CPU, < 3 min
  make device-check [ARGS=...]

Writes two files to OUT_DIR (default $OUT, else a new folder under the
system's temporary directory, spin_device_check_out_*, never the repository;
the path is printed; a relative OUT_DIR is taken from where you called it):
  device_check.json  every part's status, wall time, figures and full result;
                     rewritten after each part, so a killed run keeps the rest;
  device_check.log   every part's output.
Parts, each a subprocess with its own time limit, cut to what is left of
--budget_s (330 s; leaves room for start-up within 6 minutes):
  env           versions, devices, which optional packages import;
  tests         body layer parity (smplx), SMPLify, train step, bfloat16,
                per-backend choices, multi-device (the GPU run against 4
                forced CPU devices), via pytest -v;
  smpl_forward  meshes/s at batch 64/512/4096, full mesh and joints-only, and
                forward+backward; smplx on the same GPU as the peer;
  smplify       per batch 64/512/4096: faithful (joints path), faithful on the
                full mesh, fast; time and final objective of each;
  regressor     ResNet-50 HMR at 224 px, inference at batch 64 and 256 and the
                training step at 64: ours float32 and bfloat16 against torch
                (channels_last, and autocast bfloat16) on the same GPU;
  train_step    the training step at batch 64: plain, SMPLify in the loop
                (faithful, fast), waiting per step and not.
Each part reuses experiments/benchmarks/*.py with sizes from flags.

No TensorFlow, TFDS or grain: batches are synthetic, made in memory. Stubs of
those packages go first on the path of every part; an import of one fails
and is listed in the JSON ("blocked_imports", empty when all is well).

Wheels. The GPU machine (Python 3.12, jax CUDA, flax, optax, orbax, chex,
torch, torchvision; no network) lacks these pure-Python packages:
  jaxopt==0.8.5          fast_jaxopt SMPLify and tests/test_jaxopt_compat.py
  ml_collections         the training config (step, train_step, tests)
  smplx==0.1.28          the body-model peer and the parity tests
  tensorboardX, tqdm     the training loop (tests/test_train.py)
  pytest, pluggy, iniconfig   the tests part
Fetch them on a machine with network into wheels/ at the repository root
(untracked, it travels with the working tree; a few MB):
  pip download --only-binary=:all: --no-deps --python-version 3.12 \
      --platform manylinux2014_x86_64 -d wheels/ jaxopt==0.8.5 ml_collections \
      smplx==0.1.28 tensorboardX tqdm pytest pluggy iniconfig
The check installs every wheel of wheels/ whose package is not already
installed into a private folder (pip install --no-index --no-deps
--find-links wheels --target ...), put on the parts' PYTHONPATH; nothing is
installed into the machine's Python. Missing packages only skip what needs
them (smplx: the peer and the parity tests; pytest: the tests part).
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, 'experiments', 'benchmarks')
BLOCKED = ('tensorflow', 'tensorflow_datasets', 'grain')
OPTIONAL = ('smplx', 'jaxopt', 'ml_collections', 'tensorboardX', 'tqdm',
            'pytest', 'cv2', 'torchvision')

TESTS_FULL = [
    'tests/test_smpl.py', 'tests/test_smplify.py',
    'tests/test_train.py::test_fits_only_improve_and_are_stored_unaugmented',
    'tests/test_train.py::test_nonfinite_step_stops_with_last_good_checkpoint',
    'tests/test_train.py::test_nonfinite_steps_without_per_step_sync',
    'tests/test_mixed_precision.py', 'tests/test_backend_choices.py',
    'tests/test_layers.py',
    'tests/test_multidevice.py',
]
TESTS_DRY = [
    'tests/test_smpl.py::test_joints_only_path_equals_full_path',
    'tests/test_backend_choices.py::test_cpu_xla_flags_only_without_an_accelerator',
]

ENV_CODE = r'''
import importlib.metadata, importlib.util, json, sys
import jax
out = dict(python=sys.version.split()[0], jax=jax.__version__,
           backend=jax.default_backend(), devices=len(jax.devices()),
           device_kind=jax.devices()[0].device_kind)
try:
  import torch
  out.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available())
except ImportError:
  out.update(torch=None, torch_cuda=False)
def have(name):
  if name in {blocked!r}:
    try:
      importlib.metadata.distribution(name)
      return True
    except importlib.metadata.PackageNotFoundError:
      return False
  return importlib.util.find_spec(name) is not None
out['importable'] = {{n: have(n) for n in {names!r}}}
json.dump(out, open(sys.argv[1], 'w'))
print(json.dumps(out))
'''

BLOCKER = '''raise ImportError(  # spin_jax device check: must not be needed
    __import__('spin_jax_device_check_log').record(__name__))
'''
BLOCKER_LOG = '''import os, traceback
def record(name):
  caller = [f for f in traceback.extract_stack()[:-2]
            if '<frozen' not in f.filename][-1:]
  where = f'{caller[0].filename}:{caller[0].lineno}' if caller else '?'
  with open(os.environ['SPIN_BLOCKED_IMPORTS_LOG'], 'a') as f:
    f.write(f'{name} <- {where}\\n')
  return f'{name} is not available on the accelerator (device check stub)'
'''


# ------------------------------------------------------------------ parts
def _bench(script, *flags_):
  return [sys.executable, os.path.join(BENCH, script), *flags_]


def part_commands(dry: bool, cuda_torch: bool, json_path) -> dict:
  """{part: (command, time limit s)}; json_path(part) is where it writes."""
  torch_dev = 'cuda' if cuda_torch else 'cpu'
  if dry:
    sizes = dict(
        smpl_forward=['--batch_sizes=2,4', '--grad_batch_sizes=2',
                      '--rounds=1', '--round_time=0.02'],
        smplify=['--batch_sizes=2', '--repeats=1', '--body_model=default-low'],
        regressor=['--backbone=stem', '--img_res=32', '--batch=2,4',
                   '--train_batch=2', '--iters=1', '--train_iters=1'],
        train_step=['--backbone=stem', '--img_res=32', '--batch_size=2',
                    '--body_model=default-low', '--steps=2',
                    '--smplify_iterations=3', '--variants=plain,inloop_fast'])
  else:
    sizes = dict(
        smpl_forward=['--batch_sizes=64,512,4096',
                      '--grad_batch_sizes=64,512,4096', '--rounds=3',
                      '--round_time=0.2'],
        smplify=['--batch_sizes=64,512,4096', '--repeats=2'],
        regressor=['--batch=64,256', '--train_batch=64', '--iters=5',
                   '--train_iters=5', '--xla_preset=default', '--max_diff=0.05',
                   # Both training forms: the native ops (what 'auto' picks
                   # off XLA:CPU) and spin_jax.layers' backward passes.
                   '--train_layers=auto,fast'],
        train_step=['--batch_size=64', '--steps=5'])
  tests = TESTS_DRY if dry else TESTS_FULL
  return {
      'env': ([sys.executable, '-c', ENV_CODE.format(
          blocked=BLOCKED, names=BLOCKED + OPTIONAL), json_path('env')], 60),
      'tests': ([sys.executable, '-m', 'pytest', '-v', '-p', 'no:cacheprovider',
                 *tests], 90),
      'smpl_forward': (_bench('smpl_forward.py', *sizes['smpl_forward'],
                              f'--torch_device={torch_dev}'), 50),
      'smplify': (_bench('smplify.py', *sizes['smplify'],
                         '--modes=faithful,faithful_full_mesh,fast'), 80),
      'regressor': (_bench('regressor.py', *sizes['regressor'],
                           '--dtypes=float32,bfloat16', '--torch_channels_last',
                           '--torch_amp', f'--torch_device={torch_dev}'), 100),
      'train_step': (_bench('train_step.py', *sizes['train_step']), 110),
  }


def _numbers(tree, prefix=''):
  """Flattens the numeric leaves of a JSON tree: {'a/b': 1.0}."""
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_numbers(v, f'{prefix}{k}/'))
    return out
  if isinstance(tree, (int, float)) and not isinstance(tree, bool):
    return {prefix[:-1]: tree}
  return {}


# The headline numbers of each part (all should be finite and > 0).
_FIGURES = {
    'env': lambda r: {'devices': r.get('devices')},
    'tests': lambda r: {'passed': r.get('passed')},
    'smpl_forward': lambda r: {
        k: v for k, v in _numbers({b: r[b] for b in r if b.isdigit()}).items()
        if '_threads_used' not in k},
    'smplify': lambda r: {
        k: v for k, v in _numbers(r.get('batches', {})).items()
        if re.search(r'/(faithful|faithful_full_mesh|fast)_(s|loss)$', k)},
    'regressor': lambda r: _numbers({'inference': r.get('inference', {}),
                                     'train': r.get('train', {})}),
    'train_step': lambda r: {k: v for k, v in r.items()
                             if k.endswith('steps_per_s')},
}


def _test_counts(text: str) -> dict:
  """pytest -v lines 'tests/x.py::name PASSED' -> counts and failed names."""
  found = re.findall(r'^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)',
                     text, re.M)
  out = {k: 0 for k in ('passed', 'failed', 'error', 'skipped', 'xfail', 'xpass')}
  for _, status in found:
    out[status.lower()] += 1
  out['not_passed'] = [n for n, s in found if s in ('FAILED', 'ERROR')]
  out['skipped_tests'] = [n for n, s in found if s == 'SKIPPED']
  return out


# ------------------------------------------------------------------ runner
class Check:
  """Runs the parts one by one and keeps device_check.json up to date."""

  def __init__(self, out_dir, dry, budget_s):
    self.out_dir = os.path.abspath(out_dir)
    os.makedirs(self.out_dir, exist_ok=True)
    self.json_path = os.path.join(self.out_dir, 'device_check.json')
    self.log_path = os.path.join(self.out_dir, 'device_check.log')
    self.scratch = tempfile.mkdtemp(prefix='spin_device_check_')
    self.t0 = time.monotonic()
    self.deadline = self.t0 + budget_s
    self.result = dict(meta=dict(
        dry_run=dry, budget_s=budget_s, started=time.strftime('%Y-%m-%d %H:%M:%S'),
        python=sys.version.split()[0], repo=REPO), parts={}, blocked_imports=[])
    with open(self.log_path, 'w') as f:
      f.write(f'spin_jax device check, dry_run={dry}, budget {budget_s} s\n')
    self.env = self._environment(dry)
    self.save()

  def _environment(self, dry):
    blocked_dir = os.path.join(self.scratch, 'blocked')
    for name in BLOCKED:
      os.makedirs(os.path.join(blocked_dir, name))
      with open(os.path.join(blocked_dir, name, '__init__.py'), 'w') as f:
        f.write(BLOCKER)
    with open(os.path.join(blocked_dir, 'spin_jax_device_check_log.py'), 'w') as f:
      f.write(BLOCKER_LOG)
    self.blocked_log = os.path.join(self.scratch, 'blocked_imports.log')
    paths = [REPO, blocked_dir] + self._install_wheels()
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        paths + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])
    env['SPIN_BLOCKED_IMPORTS_LOG'] = self.blocked_log
    env.setdefault('JAX_PLATFORMS', 'cpu' if dry else 'cuda')
    # JAX and torch share the GPU inside the regressor and smplx parts.
    env.setdefault('XLA_PYTHON_CLIENT_MEM_FRACTION', '0.45')
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    if dry:  # CI: reruns reuse the compiled programs (the tests' cache)
      env.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
          tempfile.gettempdir(), f'spin_jax_test_jit_cache_{os.getuid()}'))
      env.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
    env['PYTHONUNBUFFERED'] = '1'
    self.result['meta'].update(jax_platforms=env['JAX_PLATFORMS'],
                               mem_fraction=env['XLA_PYTHON_CLIENT_MEM_FRACTION'])
    return env

  def _install_wheels(self) -> list[str]:
    """Wheels in <repo>/wheels whose package is missing -> a private folder."""
    import importlib.metadata  # pylint: disable=g-import-not-at-top
    wheels = sorted(glob.glob(os.path.join(REPO, 'wheels', '*.whl')))
    missing = []
    for w in wheels:
      dist = os.path.basename(w).split('-')[0]
      try:
        importlib.metadata.distribution(dist)
      except importlib.metadata.PackageNotFoundError:
        missing.append(w)
    self.result['meta']['wheels'] = [os.path.basename(w) for w in missing]
    if not missing:
      return []
    target = os.path.join(self.scratch, 'site')
    cmd = [sys.executable, '-m', 'pip', 'install', '--no-index', '--no-deps',
           '--find-links', os.path.join(REPO, 'wheels'), '--target', target,
           '--quiet', *missing]
    with open(self.log_path, 'a') as log:
      log.write('$ ' + ' '.join(cmd) + '\n')
      log.flush()
      rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    self.result['meta']['wheels_rc'] = rc
    return [target]

  def save(self):
    self.result['meta']['wall_s'] = round(time.monotonic() - self.t0, 1)
    if os.path.exists(self.blocked_log):
      with open(self.blocked_log) as f:
        self.result['blocked_imports'] = sorted(set(f.read().splitlines()))
    tmp = self.json_path + '.tmp'
    with open(tmp, 'w') as f:
      json.dump(self.result, f, indent=1, default=str)
    os.replace(tmp, self.json_path)

  def part_json(self, name):
    return os.path.join(self.scratch, f'{name}.json')

  def run(self, name, cmd, limit_s):
    left = self.deadline - time.monotonic()
    limit = min(limit_s, left)
    entry = self.result['parts'].setdefault(name, {})
    if limit < 15:
      entry.update(status='skipped', reason=f'{left:.0f} s of --budget_s left')
      self.save()
      return
    if '--json' not in ' '.join(cmd) and name not in ('env', 'tests'):
      cmd = cmd + [f'--json={self.part_json(name)}']
    with open(self.log_path, 'a') as log:
      log.write(f'\n===== {name} (limit {limit:.0f} s)\n$ {" ".join(cmd)}\n')
      log.flush()
      start = log.tell()
      t0 = time.monotonic()
      proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
      try:
        rc, status = proc.wait(timeout=limit), None
      except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the part and its children
        rc, status = proc.wait(), 'timeout'
      wall = time.monotonic() - t0
    status = status or ('ok' if rc == 0 else 'failed')
    entry.update(status=status, returncode=rc, wall_s=round(wall, 1),
                 limit_s=round(limit))
    entry['result'] = self._part_result(name, start)
    entry['figures'] = _FIGURES[name](entry['result'] or {})
    self.save()
    print(f'{name}: {status} in {wall:.0f} s', flush=True)

  def _part_result(self, name, log_offset):
    if name == 'tests':
      with open(self.log_path) as f:
        f.seek(log_offset)
        return _test_counts(f.read())
    try:
      with open(self.part_json(name)) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def close(self):
    self.save()
    shutil.rmtree(self.scratch, ignore_errors=True)


def _all_good(result) -> bool:
  for part in result['parts'].values():
    figs = part.get('figures') or {}
    if part.get('status') != 'ok' or not figs or not all(
        isinstance(v, (int, float)) and math.isfinite(v) and v > 0
        for v in figs.values()):
      return False
  return not result['blocked_imports']


def out_dir_of(given: str | None) -> str:
  """The output folder: OUT_DIR as given (relative to the caller's folder,
  which device_check.sh passes on), else $OUT, else a fresh temporary folder
  outside the repository."""
  if given:
    return os.path.join(os.environ.get('SPIN_DEVICE_CHECK_CWD') or os.getcwd(),
                        given)
  if os.environ.get('OUT'):
    return os.environ['OUT']
  return tempfile.mkdtemp(prefix='spin_device_check_out_')


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('out_dir', nargs='?', default=None,
                      help='Output folder (default $OUT, else a new temporary one).')
  parser.add_argument('--dry-run', action='store_true',
                      help='Tiny sizes on the CPU (CI): checks the script runs.')
  parser.add_argument('--budget_s', type=float, default=None,
                      help='Wall-time budget of all parts (330; dry run 600).')
  parser.add_argument('--parts', default='',
                      help='Comma-separated subset of the parts (default all).')
  args = parser.parse_args(argv)
  budget = args.budget_s or (600.0 if args.dry_run else 330.0)
  check = Check(out_dir_of(args.out_dir), args.dry_run, budget)
  print(f'writing {check.json_path} and {check.log_path}', flush=True)
  try:
    check.run('env', *part_commands(args.dry_run, False, check.part_json)['env'])
    env = (check.result['parts']['env'].get('result') or {})
    commands = part_commands(args.dry_run, bool(env.get('torch_cuda')),
                             check.part_json)
    wanted = [p for p in args.parts.split(',') if p] or list(commands)
    unknown = sorted(set(wanted) - set(commands))
    if unknown:
      raise SystemExit(f'--parts: unknown {unknown}; expected {list(commands)}')
    for name in wanted:
      if name != 'env':
        check.run(name, *commands[name])
  finally:
    check.close()
  print(f'wrote {check.json_path} and {check.log_path}')
  return 0 if _all_good(check.result) else 1


if __name__ == '__main__':
  sys.exit(main())
