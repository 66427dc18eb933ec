"""experiments/device_check.sh --dry-run: every part runs (tiny sizes, CPU) and
reports finite positive figures, with a log, and nothing imports TensorFlow."""
import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ('env', 'tests', 'smpl_forward', 'smplify', 'regressor', 'train_step')


@pytest.mark.slow
def test_dry_run(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  env.pop('JAX_PLATFORMS', None)  # the dry run picks the CPU itself
  proc = subprocess.run(
      ['bash', os.path.join(REPO, 'experiments', 'device_check.sh'),
       '--dry-run', str(tmp_path)], env=env, cwd=REPO, capture_output=True,
      text=True, timeout=600)
  assert os.path.getsize(tmp_path / 'device_check.log') > 0
  with open(tmp_path / 'device_check.json') as f:
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
