r"""SMPLify benchmark: faithful (joints-only), faithful (full mesh), fast, fast via jaxopt.

  python experiments/benchmarks/smplify.py --json /tmp/smplify.json

One process, one batch (synthetic people on the default body model, a
network-like initialisation: truth plus noise). Times are wall seconds per call
after compilation: the minimum over --repeats interleaved rounds (medians
too), so load on a shared machine disturbs all modes alike. The last stdout line is the JSON.

--batch_sizes=64,512,4096 runs several batches in one process: the JSON then
holds one such result per batch under "batches" (and is rewritten after each
batch, with "partial": true until the last). --modes picks the modes.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import fileio
from spin_jax import camera
from spin_jax import constants
from spin_jax import priors
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax import smplify

_BATCH = flags.DEFINE_integer('batch', 64, 'People per batch.')
_BODY_MODEL = flags.DEFINE_string(
    'body_model', 'default', "'default', 'default-low', a path, or "
    "'random-smpl': a random SMPL-sized model (6890 vertices, 207 pose "
    'correctives like SMPL; the default model has none) from tests/body_fixtures.')
_PRIOR = flags.DEFINE_string('prior', None, 'GMM prior (.pkl/.npz); default: embedded.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed rounds (full mesh: 1 call).')
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_FAST_ITERATIONS = flags.DEFINE_string(
    'fast_iterations', None, 'Fast mode "camera,body" LM iterations; default: '
    "SMPLifyConfig's.")
_FAST_SOLVER = flags.DEFINE_string(
    'fast_solver', None, "Fast mode's stage-2 lsq_solver (e.g. "
    "'levenberg_marquardt' for the materialised Jacobian); default: SMPLifyConfig's.")
_JSON = flags.DEFINE_string('json', None, 'Also write the result JSON here.')
_BATCH_SIZES = flags.DEFINE_list(
    'batch_sizes', None, 'Several batch sizes in one process (overrides --batch).')
MODES = ('faithful', 'faithful_full_mesh', 'fast', 'fast_jaxopt')
_MODES = flags.DEFINE_list('modes', list(MODES), f'Which of {list(MODES)} to run '
                           "(fast_jaxopt needs jaxopt).")


def _synthetic_batch(model, batch, seed):
  """Ground-truth people, their keypoints, and a noisy init (like a network)."""
  rng = np.random.default_rng(seed)
  f32 = lambda x: jnp.asarray(x, jnp.float32)
  # Upright, facing the camera (SMPL y up -> camera y down: pi about x).
  go = f32(np.array([np.pi, 0.0, 0.0]) + rng.normal(0, 0.15, (batch, 3)))
  pose = rng.normal(0, 0.15, (batch, 69))
  ids = np.asarray(constants.ANGLE_PRIOR_POSE_IDS)
  signs = np.asarray(constants.ANGLE_PRIOR_SIGNS)
  pose[:, ids] = -signs * np.abs(rng.normal(0.4, 0.3, (batch, 4)))  # natural bends
  pose = f32(pose)
  betas = f32(rng.normal(0, 0.5, (batch, 10)))
  transl = f32(np.stack([rng.normal(0, 0.05, batch), rng.normal(0.1, 0.05, batch),
                         rng.uniform(40, 55, batch)], -1))
  joints = smpl.joints_forward(model, betas, pose, go)
  c = jnp.full((2,), constants.IMG_RES / 2.0)
  px = camera.perspective_projection(joints, transl, constants.FOCAL_LENGTH, c)
  px = px + f32(rng.normal(0, 1.0, px.shape))  # detector noise, pixels
  conf = rng.uniform(0.4, 1.0, (batch, constants.NUM_JOINTS))
  conf[rng.uniform(size=conf.shape) < 0.1] = 0.0  # missing joints
  keypoints = jnp.concatenate([px, f32(conf)[..., None]], -1)
  init = smplify.FitParams(
      global_orient=go + f32(rng.normal(0, 0.1, (batch, 3))),
      body_pose=pose + f32(rng.normal(0, 0.15, (batch, 69))),
      betas=jnp.zeros_like(betas),
      camera_translation=transl * f32(rng.uniform(0.9, 1.1, (batch, 1)))
      + f32(rng.normal(0, 0.03, (batch, 3))))
  return init, keypoints


def _fast_iterations():
  if not _FAST_ITERATIONS.value:
    return {}
  try:
    cam, body = (int(v) for v in _FAST_ITERATIONS.value.split(','))
  except ValueError:
    raise app.UsageError('--fast_iterations must be "CAMERA,BODY", e.g. "8,3"; '
                         f'got {_FAST_ITERATIONS.value!r}.') from None
  return dict(camera_iterations=cam, body_iterations=body)


def _timed(fn):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - t0


def _body_model_and_prior(notes):
  def random_smpl():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'tests'))
    import body_fixtures  # pylint: disable=import-outside-toplevel
    return body_fixtures.random_body_model(num_vertices=6890)

  if _BODY_MODEL.value == 'random-smpl':
    model, model_name = random_smpl(), 'random-smpl-6890'
  else:
    try:
      model = smpl_io.resolve_body_model(_BODY_MODEL.value)
      model_name = _BODY_MODEL.value
    except FileNotFoundError as e:
      model, model_name = random_smpl(), 'random-smpl-6890'
      notes.append(f'body model missing ({e}); used a random 6890-vertex model')
  if _PRIOR.value:
    prior, prior_name = priors.load_gmm_prior(_PRIOR.value), _PRIOR.value
  else:
    try:
      prior, prior_name = priors.default_pose_prior(), 'default'
    except FileNotFoundError:
      rng = np.random.default_rng(1)
      a = rng.normal(0, 0.1, (8, 69, 69))
      prior = priors.gmm_prior_from_arrays(
          rng.normal(0, 0.1, (8, 69)), a @ a.transpose(0, 2, 1) / 69 + 0.03 * np.eye(69),
          np.full(8, 1 / 8))
      prior_name = 'synthetic-gmm8'
      notes.append('default pose prior missing; used a synthetic 8-component GMM')
  return model, model_name, prior, prior_name


def _mode_configs():
  runs = {
      'faithful': smplify.SMPLifyConfig(mode='faithful'),
      'faithful_full_mesh': smplify.SMPLifyConfig(mode='faithful', full_mesh=True),
      'fast': smplify.SMPLifyConfig(
          mode='fast', **_fast_iterations(),
          **({'lsq_solver': _FAST_SOLVER.value} if _FAST_SOLVER.value else {})),
      # The same steps through jaxopt's LevenbergMarquardt, for comparison.
      'fast_jaxopt': smplify.SMPLifyConfig(
          mode='fast', lsq_solver='levenberg_marquardt', **_fast_iterations()),
  }
  unknown = sorted(set(_MODES.value) - set(runs))
  if unknown:
    raise app.UsageError(f'--modes: unknown {unknown}; expected some of {list(MODES)}.')
  return {name: runs[name] for name in _MODES.value}


def _run_batch(model, prior, runs, batch):
  """One batch, every mode: {<mode>_s, <mode>_loss, ...} (see the module doc)."""
  init, keypoints = _synthetic_batch(model, batch, _SEED.value)
  calls = {name: (lambda cfg=cfg: smplify.smplify(model, prior, init, keypoints, cfg))
           for name, cfg in runs.items()}
  first, outs, times = {}, {}, {name: [] for name in runs}
  for name, fn in calls.items():  # compile + first run
    outs[name], first[name] = _timed(fn)
  # Timed rounds interleave the modes, so load on a shared machine hits all
  # alike; we report the minimum (least disturbed) and the median per mode.
  for r in range(_REPEATS.value):
    for name, fn in calls.items():
      if runs[name].full_mesh and r > 0:
        continue  # ~100x slower; one timed call is plenty
      times[name].append(_timed(fn)[1])
  result, compile_s = {}, {}
  for name, out in outs.items():
    run_s = min(times[name] or [first[name]])
    compile_s[name] = round(max(first[name] - run_s, 0.0), 2)
    result[f'{name}_s'] = round(run_s, 4)
    result[f'{name}_median_s'] = round(statistics.median(times[name] or [run_s]), 4)
    result[f'{name}_loss'] = float(jnp.mean(out.objective))
    result[f'{name}_reprojection'] = float(jnp.mean(out.loss))
    result[f'{name}_valid'] = float(jnp.mean(out.valid))
    print(f'batch {batch}, {name}: {run_s:.3f} s/call (compile '
          f'{compile_s[name]:.1f} s), objective {result[f"{name}_loss"]:.1f}, '
          f'mean joint loss {result[f"{name}_reprojection"]:.2f}', flush=True)
  result['init_loss'] = float(jnp.mean(out.init_objective))
  result['compile_s'] = round(sum(compile_s.values()), 2)
  result['compile_s_per_mode'] = compile_s
  if 'faithful_full_mesh_s' in result and 'faithful_s' in result:
    result['speedup_joints_vs_full_mesh'] = round(
        result['faithful_full_mesh_s'] / result['faithful_s'], 2)
  for name in ('fast', 'fast_jaxopt'):
    if f'{name}_s' in result and 'faithful_s' in result:
      result[f'{name}_time_fraction'] = round(
          result[f'{name}_s'] / result['faithful_s'], 3)
  return result


def main(argv):
  del argv
  notes = []
  model, model_name, prior, prior_name = _body_model_and_prior(notes)
  runs = _mode_configs()
  meta = dict(
      body_model=model_name, num_vertices=model.num_vertices,
      pose_correctives=bool(getattr(model, 'has_pose_correctives', True)),
      prior=prior_name,
      fast_solver=runs['fast'].lsq_solver if 'fast' in runs else None,
      iterations={k: list(c.iterations) for k, c in runs.items()},
      backend=jax.default_backend(), device=str(jax.devices()[0].device_kind),
      cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
      notes=notes)
  if not _BATCH_SIZES.value:
    result = _run_batch(model, prior, runs, _BATCH.value)
    fileio.print_json_line(dict(result, batch=_BATCH.value, **meta), _JSON.value)
    return
  out = dict(meta, batches={}, partial=True)
  for b in (int(x) for x in _BATCH_SIZES.value):
    out['batches'][str(b)] = _run_batch(model, prior, runs, b)
    if _JSON.value:
      fileio.atomic_write_json(_JSON.value, out)
  out['partial'] = False
  fileio.print_json_line(out, _JSON.value)


if __name__ == '__main__':
  app.run(main)
