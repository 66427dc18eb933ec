"""experiments/spin_effect.py: the tiny preset end to end, its resume /
summary path, where it writes (never into the committed results), and the
fits' error against hand-known cases."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from experiments import spin_effect  # pylint: disable=g-import-not-at-top,wrong-import-position
from spin_jax import smpl_io  # pylint: disable=g-import-not-at-top,wrong-import-position


RESULTS = os.path.join(ROOT, 'experiments', 'results')


def _results_hashes() -> dict:
  """{path under experiments/results/: sha256} of every file there."""
  out = {}
  for folder, _, files in os.walk(RESULTS):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, RESULTS)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _run(*args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      [sys.executable, os.path.join(ROOT, 'experiments', 'spin_effect.py'),
       '--preset=tiny', *args], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=1200, check=False)


@pytest.mark.slow
def test_tiny_experiment_writes_every_number_and_resumes(tmp_path):
  """Every setting and regime, one seed: the JSON of issue #13's shape. None
  of these calls changes a byte under experiments/results/."""
  committed = _results_hashes()
  assert 'spin_effect.json' in committed and 'spin_effect.png' in committed
  wd, out, fig = tmp_path / 'wd', tmp_path / 'out.json', tmp_path / 'out.png'
  r = _run(f'--workdir={wd}', f'--out={out}', f'--figure={fig}')
  assert r.returncode == 0, r.stderr[-3000:]
  res = json.loads(out.read_text())
  assert res['complete'] and fig.stat().st_size > 0
  assert np.isfinite(res['fits_floor_pa_mpjpe']) and res['settings'] and res['machine']
  steps = spin_effect.PRESETS['tiny']['num_train_steps']
  for setting in spin_effect.SETTINGS:
    for regime in spin_effect.REGIMES:
      e = res[setting][regime]
      assert e['seeds'] == [0] and len(e['pa_mpjpe_seeds']) == 1
      assert e['pa_mpjpe_std'] == 0.0
      assert 0 < e['pa_mpjpe'] < e['mpjpe'] < 1000 and 0 < e['pve'] < 1000
      assert e['curve']['step'] == list(range(steps + 1))  # eval_every = 1
      for key in spin_effect.CURVE_KEYS:
        assert np.all(np.isfinite(e['curve'][key])), (setting, regime, key)
    # Without SMPLify no fit is ever valid supervision; the fit regimes start
    # from the same static table.
    curves = {g: res[setting][g]['curve'] for g in spin_effect.REGIMES}
    assert curves['2d_only']['valid_fraction'][-1] == 0
    assert curves['static']['valid_fraction'][0] > 0
    assert (curves['static']['fits_pa_mpjpe'][0] == curves['inloop']['fits_pa_mpjpe'][0]
            == curves['inloop_fast']['fits_pa_mpjpe'][0])
    assert set(res[setting]['differences']) == {
        f'{a}-{b}' for a, b in spin_effect.DIFFERENCES
        if a in spin_effect.REGIMES and b in spin_effect.REGIMES}
  # Re-running trains nothing: the finished runs are read back, same numbers.
  again = tmp_path / 'again.json'
  r = _run(f'--workdir={wd}', f'--out={again}', '--figure=', '--summarise_only')
  assert r.returncode == 0, r.stderr[-3000:]
  res2 = json.loads(again.read_text())
  assert res2['complete']
  # Both paths describe the same settings and count the same 8 runs.
  assert res2['settings']['data'] == res['settings']['data']
  runs = res2['settings']['runs']
  assert runs == res['settings']['runs'] and runs['count'] == 8
  assert runs['wall_s_min'] <= runs['total_wall_s'] / 8 <= runs['wall_s_max']
  for setting in spin_effect.SETTINGS:
    for regime in spin_effect.REGIMES:
      assert res2[setting][regime]['pa_mpjpe'] == res[setting][regime]['pa_mpjpe']
  r = _run(f'--workdir={tmp_path / "empty"}', f'--out={tmp_path / "x.json"}',
           '--summarise_only')
  assert r.returncode == 2 and 'no finished run' in r.stderr
  r = _run(f'--workdir={tmp_path / "empty"}', f'--out={tmp_path / "x.json"}',
           '--regimes=static_loopfits')
  assert r.returncode == 2 and 'needs the finished inloop run' in r.stderr
  r = _run(f'--workdir={tmp_path / "empty"}', f'--out={tmp_path / "x.json"}',
           '--regimes=inloop,bogus')
  assert r.returncode == 2 and "--regimes: unknown ['bogus']" in r.stderr
  assert not (tmp_path / 'empty').exists() and not (tmp_path / 'x.json').exists()

  # Asked to publish, the tiny preset refuses before it builds anything.
  for args in (['--publish'], [f'--out={RESULTS}/spin_effect.json'],
               [f'--figure={RESULTS}/spin_effect.png'],
               [f'--workdir={RESULTS}/spin_effect_runs']):
    if not args[0].startswith('--workdir'):
      args.append(f'--workdir={tmp_path / "empty"}')
    r = _run(*args, '--summarise_only')
    assert r.returncode == 2, (args, r.stderr[-3000:])
    assert r.stderr.strip().splitlines()[-1].startswith(
        'error: --preset=tiny never writes into experiments/results/'), r.stderr
  assert not (tmp_path / 'empty').exists()

  # The diagnostic: static, frozen at the inloop run's final table. Its
  # table at step 0 is that table, measured the same way; the JSON keeps
  # every earlier run and stays complete. Without --out / --figure the JSON
  # and the figure go into the workdir.
  r = _run(f'--workdir={wd}', '--settings=paired', '--regimes=static_loopfits')
  assert r.returncode == 0, r.stderr[-3000:]
  res3 = json.loads((wd / 'spin_effect.json').read_text())
  assert (wd / 'spin_effect.png').stat().st_size > 0
  assert res3['complete'] and res3['settings']['runs']['count'] == 9
  loop = res3['paired']['static_loopfits']['curve']
  inloop = res3['paired']['inloop']['curve']
  np.testing.assert_allclose(loop['fits_pa_mpjpe'][0], inloop['fits_pa_mpjpe'][-1],
                             rtol=1e-4)
  assert len(set(loop['fits_pa_mpjpe'])) == 1  # frozen
  assert 'static_loopfits-inloop' in res3['paired']['differences']
  assert 'static_loopfits' not in res3['unpaired']
  assert res3['unpaired']['inloop']['pa_mpjpe'] == res['unpaired']['inloop']['pa_mpjpe']
  assert _results_hashes() == committed  # experiments/results/ byte-identical


def test_outputs_default_to_the_workdir_and_tiny_never_publishes(tmp_path):
  """The rule of the module docstring, without running anything."""
  wd = str(tmp_path / 'wd')
  for preset in spin_effect.PRESETS:
    assert spin_effect.output_paths(preset, wd) == (
        os.path.join(wd, 'spin_effect.json'), os.path.join(wd, 'spin_effect.png'))
    assert spin_effect.output_paths(preset, wd, 'a.json', '') == ('a.json', '')
  for preset in ('cpu', 'gpu'):
    assert spin_effect.output_paths(preset, wd, publish=True) == (
        os.path.join(RESULTS, 'spin_effect.json'),
        os.path.join(RESULTS, 'spin_effect.png'))
    assert spin_effect.output_paths(
        preset, os.path.join(RESULTS, 'spin_effect_runs'), publish=True)[0] == (
            os.path.join(RESULTS, 'spin_effect.json'))
  with pytest.raises(ValueError, match='without --out'):
    spin_effect.output_paths('cpu', wd, out='a.json', publish=True)
  with pytest.raises(ValueError, match='--out'):
    spin_effect.output_paths('tiny', wd, publish=True)
  with pytest.raises(ValueError, match='--figure'):
    spin_effect.output_paths('tiny', wd, figure=os.path.join(RESULTS, 'x', 'y.png'))
  with pytest.raises(ValueError, match='--workdir'):
    spin_effect.output_paths('tiny', os.path.join(RESULTS, 'spin_effect_runs'))
  # A relative path, and one that reaches the folder through a link, count too.
  cwd = os.getcwd()
  try:
    os.chdir(ROOT)
    with pytest.raises(ValueError, match='--out'):
      spin_effect.output_paths('tiny', wd, out='experiments/results/spin_effect.json')
  finally:
    os.chdir(cwd)
  os.symlink(RESULTS, tmp_path / 'link')
  with pytest.raises(ValueError, match='--out'):
    spin_effect.output_paths('tiny', wd, out=str(tmp_path / 'link' / 'a.json'))
  assert not spin_effect.in_results(os.path.join(ROOT, 'experiments', 'results2'))


def test_fits_error_known_cases():
  bm = smpl_io.resolve_body_model('default-low')
  rng = np.random.default_rng(0)
  n = 5
  pose = rng.normal(0, 0.3, (n, 72)).astype(np.float32)
  betas = rng.normal(0, 1, (n, 10)).astype(np.float32)
  truth = np.concatenate([pose, betas], -1)
  pa, mp = spin_effect.fits_error(bm, truth, pose, betas, chunk=4)
  np.testing.assert_allclose(pa, 0, atol=1e-3)
  np.testing.assert_allclose(mp, 0, atol=1e-3)
  # A global rotation of the body: MPJPE sees it, Procrustes removes it.
  turned = truth.copy()
  turned[:, :3] = (Rotation.from_euler('y', 90, degrees=True)
                   * Rotation.from_rotvec(pose[:, :3])).as_rotvec()
  pa, mp = spin_effect.fits_error(bm, turned, pose, betas, chunk=4)
  np.testing.assert_allclose(pa, 0, atol=1e-2)
  assert np.all(mp > 100)  # a quarter turn moves the limbs by decimetres


def test_seed_differences_pair_seeds():
  runs = {'static': {0: {'pa_mpjpe': 100.0}, 1: {'pa_mpjpe': 110.0}},
          'inloop': {0: {'pa_mpjpe': 97.0}, 1: {'pa_mpjpe': 105.0},
                     2: {'pa_mpjpe': 50.0}}}
  d = spin_effect.seed_differences(runs)
  assert list(d) == ['inloop-static']
  assert d['inloop-static']['seeds'] == [0, 1]
  assert d['inloop-static']['per_seed'] == [-3.0, -5.0]
  assert d['inloop-static']['mean'] == -4.0
  np.testing.assert_allclose(d['inloop-static']['std'], np.sqrt(2))
