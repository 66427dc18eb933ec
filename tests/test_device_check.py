"""experiments/device_check.sh --dry-run: every part runs (tiny sizes, CPU) and
reports finite positive figures, with a log, and nothing imports TensorFlow;
its output never lands in the repository unless named there."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from experiments import device_check  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ('env', 'tests', 'smpl_forward', 'smplify', 'regressor', 'train_step')


def test_out_dir_defaults_outside_the_repository(tmp_path, monkeypatch):
  monkeypatch.delenv('OUT', raising=False)
  monkeypatch.delenv('SPIN_DEVICE_CHECK_CWD', raising=False)
  monkeypatch.setattr(device_check.tempfile, 'tempdir', str(tmp_path))
  out = device_check.out_dir_of(None)
  assert os.path.isdir(out) and os.path.dirname(out) == str(tmp_path)
  assert os.path.basename(out).startswith('spin_device_check_out_')
  monkeypatch.setenv('OUT', '/some/out')
  assert device_check.out_dir_of(None) == '/some/out'
  assert device_check.out_dir_of('/abs/dir') == '/abs/dir'
  monkeypatch.setenv('SPIN_DEVICE_CHECK_CWD', str(tmp_path))  # device_check.sh
  assert device_check.out_dir_of('rel') == str(tmp_path / 'rel')


@pytest.mark.slow
def test_dry_run(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop('JAX_PLATFORMS', None)  # the dry run picks the CPU itself
  root_before = set(os.listdir(REPO))
  # A relative OUT_DIR is the caller's (the script itself runs from REPO).
  proc = subprocess.run(
      ['bash', os.path.join(REPO, 'experiments', 'device_check.sh'),
       '--dry-run', 'out'], env=env, cwd=tmp_path, capture_output=True,
      text=True, timeout=600)
  # Nothing new in the repository's root (caches aside).
  assert set(os.listdir(REPO)) - root_before <= {'.pytest_cache', '__pycache__'}
  out = tmp_path / 'out'
  assert os.path.getsize(out / 'device_check.log') > 0
  with open(out / 'device_check.json') as f:
    result = json.load(f)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert result['meta']['dry_run'] and result['meta']['jax_platforms'] == 'cpu'
  assert result['blocked_imports'] == []  # no TensorFlow, TFDS or grain
  assert set(result['parts']) == set(PARTS)
  for name, part in result['parts'].items():
    assert part['status'] == 'ok', (name, part)
    assert part['figures'], name
    for key, value in part['figures'].items():
      assert math.isfinite(value) and value > 0, (name, key, value)
  assert result['parts']['tests']['result']['failed'] == 0
