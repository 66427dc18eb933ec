"""A truncated checkpoint step costs each entry point one line of stderr.

One tiny training run (experiments/train.py, the tiny config) saves steps 2
and 4; step 4 is truncated. Evaluation, the demo and export (read-only) and
training (which moves the step aside) then each print the one warning and go
on, without tensorstore's tracebacks of the failed read; with every step
truncated, the one error. Entry points run one at a time, as a user would.
"""
import os
import re
import shutil

import pytest

from test_bad_inputs import ASSET_IMAGE, assert_one_line_error, run, script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = '--config=' + os.path.join(REPO, 'experiments', 'configs', 'default.py') + ':tiny'
NOISE = ('Traceback', 'Exception ignored', 'Event loop is closed',
         'never retrieved', 'OCDBT database at local file')  # the last: twice
PROGRESS = re.compile(r'\|\s*\d+/\d+ \[')  # tqdm's lines (eval.py)


def _truncate_step(workdir, step):
  """Halves the largest file of each array item of `step` (a cut-off copy)."""
  for item in ('model', 'train'):
    folder = os.path.join(workdir, 'checkpoints', str(step), item)
    files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
    victim = max(files, key=os.path.getsize)
    with open(victim, 'r+b') as f:
      f.truncate(os.path.getsize(victim) // 2)


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny workdir with steps 2 and 4 (intact: copy it before damaging)."""
  wd = tmp_path_factory.mktemp('ckpt') / 'wd'
  res = run([script('train.py'), TINY, f'--workdir={wd}'], REPO)
  assert res.returncode == 0, res.stderr[-3000:]
  assert sorted(os.listdir(wd / 'checkpoints')) == ['2', '4']
  return wd


def _damaged_copy(trained, tmp_path, steps):
  wd = tmp_path / 'wd'
  shutil.copytree(trained, wd)
  for step in steps:
    _truncate_step(wd, step)
  return wd


def _assert_one_warning(res, workdir):
  assert res.returncode == 0, res.stderr[-3000:]
  lines = [l for l in res.stderr.splitlines()
           if l.strip() and not PROGRESS.search(l)]
  warnings = [l for l in lines if 'Checkpoint step 4' in l]
  assert len(warnings) == 1, res.stderr[-3000:]
  assert 'cannot be read' in warnings[0] and 'step (2) instead' in warnings[0]
  assert str(workdir) in warnings[0]
  assert len(lines) <= 3, res.stderr[-3000:]
  text = res.stderr.replace(warnings[0], '')
  assert not [n for n in NOISE if n in text], res.stderr[-3000:]


def test_every_entry_point_reads_past_a_truncated_step(trained, tmp_path):
  wd = _damaged_copy(trained, tmp_path, [4])
  out = tmp_path / 'out'
  read_only = [
      [script('eval.py'), f'--checkpoint={wd}', '--dataset=synthetic',
       f'--results_file={out / "eval.npz"}'],
      [script('demo.py'), f'--checkpoint={wd}', f'--img={ASSET_IMAGE}',
       f'--out={out / "demo"}'],
      [script('export.py'), f'--checkpoint={wd}', f'--out={out / "m.jaxexport"}'],
  ]
  for args in read_only:
    _assert_one_warning(run(args, str(tmp_path)), wd / 'checkpoints')
  assert sorted(os.listdir(wd / 'checkpoints')) == ['2', '4']  # untouched
  assert (out / 'eval.npz').is_file() and (out / 'm.jaxexport').is_file()
  assert any((out / 'demo').iterdir())

  res = run([script('train.py'), TINY, f'--workdir={wd}'], str(tmp_path))
  _assert_one_warning(res, wd / 'checkpoints')
  assert 'moved to' in res.stderr and 'Finished at step 4' in res.stdout
  aside = os.listdir(wd / 'checkpoints_unreadable')
  assert len(aside) == 1 and aside[0].startswith('4-')


def test_verbose_shows_what_was_held_back(trained, tmp_path):
  wd = _damaged_copy(trained, tmp_path, [4])
  res = run([script('export.py'), f'--checkpoint={wd}',
             f'--out={tmp_path / "m.jaxexport"}', '--verbose'], str(tmp_path))
  assert res.returncode == 0, res.stderr[-3000:]
  assert 'Held back while reading' in res.stderr and 'Traceback' in res.stderr


def test_no_readable_step_is_one_error(trained, tmp_path):
  wd = _damaged_copy(trained, tmp_path, [2, 4])
  res = run([script('eval.py'), f'--checkpoint={wd}', '--dataset=synthetic'],
            str(tmp_path))
  assert_one_line_error(res, 'No readable checkpoint', 'step 4: ', 'step 2: ')
  res = run([script('train.py'), TINY, f'--workdir={wd}'], str(tmp_path))
  assert_one_line_error(res, 'No readable checkpoint', 'moved to')
