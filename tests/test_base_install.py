"""The base install (`pip install spin_jax`, no extras) in a fresh virtualenv.

The package is built from a copy of its sources (a wheel, not an editable
install, so the bundled assets must come through package_data), and
experiments/fit.py and experiments/demo.py run from that virtualenv on the
bundled photo, outside the repository. Neither may import TensorFlow,
tensorflow-datasets or grain (the [data] extra), and the base requirements
must not pull them, nor torch, in. pip reuses its cache and the machine's
configured indexes; a first run downloads the base requirements.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the wheel is built from: nothing else of the repository is copied, so
# the scripts can only import the installed package.
SOURCES = ('spin_jax', 'setup.cfg', 'pyproject.toml', 'README.md')
SCRIPTS = ('fit.py', 'demo.py')
FORBIDDEN = ('tensorflow', 'tensorflow_datasets', 'grain')
NEVER_INSTALLED = FORBIDDEN + ('torch',)
INSTALL_TIMEOUT_S = 1200
RUN_TIMEOUT_S = 600

# Runs a script as __main__ and, however it exits, records the modules it
# imported and where spin_jax came from (RECORD names the JSON file).
_RECORDER = """\
import json, os, runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
try:
  runpy.run_path(script, run_name='__main__')
finally:
  spin_jax = sys.modules.get('spin_jax')
  with open(os.environ['RECORD'], 'w') as f:
    json.dump(dict(modules=sorted(sys.modules),
                   spin_jax=getattr(spin_jax, '__file__', None)), f)
"""


def _env():
  env = dict(os.environ)
  env.pop('PYTHONPATH', None)  # the repository must not shadow the install
  env.pop('PYTHONHOME', None)
  return env


def _check(cmd, cwd, timeout, env=None):
  r = subprocess.run(cmd, cwd=cwd, env=env or _env(), capture_output=True,
                     text=True, timeout=timeout)
  assert r.returncode == 0, (
      f'{" ".join(map(str, cmd))} exited {r.returncode}:\n'
      f'{r.stdout[-3000:]}\n{r.stderr[-5000:]}')
  return r


@pytest.fixture(scope='module')
def venv(tmp_path_factory):
  """(python, site-packages spin_jax dir, scripts dir) of a fresh base install."""
  root = tmp_path_factory.mktemp('base_install')
  src = root / 'src'
  ignore = shutil.ignore_patterns('__pycache__', '*.egg-info', '*.pyc')
  for name in SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=ignore)
    else:
      shutil.copy2(path, src / name)
  scripts = root / 'scripts' / 'experiments'  # their sys.path entry: no package
  scripts.mkdir(parents=True)
  for name in SCRIPTS:
    shutil.copy2(os.path.join(REPO, 'experiments', name), scripts / name)
  start = time.perf_counter()
  _check([sys.executable, '-m', 'venv', str(root / 'venv')], root, 300)
  python = str(root / 'venv' / 'bin' / 'python')
  # --no-compile: bytecode is written on first import; compiling every
  # installed module up front doubled the install time.
  _check([python, '-m', 'pip', 'install', '--quiet', '--no-compile',
          '--disable-pip-version-check', str(src)], root, INSTALL_TIMEOUT_S)
  print(f'base install: {time.perf_counter() - start:.0f} s')
  r = _check([python, '-c', 'import os, spin_jax; '
              'print(os.path.dirname(spin_jax.__file__))'], root, 120)
  return python, r.stdout.strip(), str(scripts)


def test_base_requirements_leave_out_the_extras(venv):
  python, package, _ = venv
  assert 'site-packages' in package, package  # installed, not the checkout
  r = _check([python, '-c',
              'import importlib.util, json, sys; print(json.dumps('
              '[m for m in sys.argv[1:] if importlib.util.find_spec(m)]))',
              *NEVER_INSTALLED], os.path.dirname(python), 120)
  assert json.loads(r.stdout) == []
  for asset in ('astronaut.jpg', 'pose_detection.tflite',
                'pose_landmark_full.tflite', 'body_model_default_low.npz',
                'pose_prior_gmm08.npz'):
    assert os.path.isfile(os.path.join(package, 'assets', asset)), asset


def _run_script(venv, tmp_path, script, *args):
  """Runs an installed-package script in tmp_path; returns what it imported."""
  python, package, scripts = venv
  record = tmp_path / 'record.json'
  env = dict(_env(), RECORD=str(record))
  _check([python, '-c', _RECORDER, os.path.join(scripts, script), *args],
         tmp_path, RUN_TIMEOUT_S, env)
  seen = json.loads(record.read_text())
  assert seen['spin_jax'].startswith(package), seen['spin_jax']
  imported = [m for m in seen['modules'] if m.split('.')[0] in FORBIDDEN]
  assert not imported, imported
  return seen


def _photo(venv):
  return os.path.join(venv[1], 'assets', 'astronaut.jpg')


def test_fit_py_on_the_bundled_photo(venv, tmp_path):
  _run_script(venv, tmp_path, 'fit.py', f'--img={_photo(venv)}',
              '--body_model=default-low', '--mode=fast', '--out=out',
              '--compilation_cache=')
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'astronaut_keypoints.json', 'astronaut_overlay.png',
      'astronaut_params.npz', 'astronaut_person0.obj']


def test_demo_py_on_the_bundled_photo(venv, tmp_path):
  _run_script(venv, tmp_path, 'demo.py', f'--img={_photo(venv)}',
              '--body_model=default-low', '--out=out', '--compilation_cache=')
  assert sorted(os.listdir(tmp_path / 'out')) == [
      'astronaut_keypoints.json', 'astronaut_keypoints.png',
      'astronaut_overlay.png', 'astronaut_params.npz',
      'astronaut_person0.obj', 'astronaut_side.png']
