"""Training-step throughput: plain regressor step vs SMPLify in the loop.

  python experiments/benchmarks/train_step.py --json OUT.json

Runs, in one process on the same batch, the paper's architecture (ResNet-50,
224 px; batch 16 on CPU, 64 on an accelerator) with the default body model:
  plain     the regressor step with the stored fits as targets (no SMPLify,
            i.e. SPIN without --run_smplify: table lookup, LSQ camera, loss)
  faithful  the in-loop step with SPIN's SMPLify (Adam, 100 + 100 iterations)
  fast      the in-loop step with the least-squares SMPLify (LM, 5 + 4)
Prints steps/s of each (after compilation) and, last, one JSON line with
<variant>_steps_per_s (the host waits for each step, median) and
<variant>_async_steps_per_s (--steps steps dispatched back to back, one wait at
the end: what the training loop does, which reads the device back only at
log, evaluation and checkpoint steps). --json is rewritten after each variant
(with "partial": true until the last), so a killed run still leaves figures.
"""
import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

# name -> (SMPLify in the loop, its mode)
VARIANTS = {'plain': (False, 'faithful'), 'inloop_faithful': (True, 'faithful'),
            'inloop_fast': (True, 'fast')}

_JSON = flags.DEFINE_string('json', None, 'Write the results here too.')
_BATCH = flags.DEFINE_integer('batch_size', 0, '0: 16 on CPU, 64 otherwise.')
_BACKBONE = flags.DEFINE_string('backbone', 'resnet50', 'Regressor backbone.')
_IMG_RES = flags.DEFINE_integer('img_res', 224, 'Input size.')
_BODY = flags.DEFINE_string('body_model', 'default', 'Body model spec.')
_STEPS = flags.DEFINE_integer('steps', 3, 'Timed steps per variant.')
_VARIANTS = flags.DEFINE_list('variants', list(VARIANTS),
                              f'Which of {list(VARIANTS)} to run.')
_SMPLIFY_ITERATIONS = flags.DEFINE_integer(
    'smplify_iterations', -1, 'SMPLify iterations per stage (-1: the mode\'s).')
_DTYPE = flags.DEFINE_enum('dtype', 'float32', ['float32', 'bfloat16'],
                           'Regressor compute dtype (--config.model.dtype).')
_LAYERS = flags.DEFINE_enum('layers', 'auto', ['auto', 'fast', 'native'],
                            'Backward form (--config.model.layers).')


def make_batch(body_model, b, img_res, num_rows, seed=0):
  """Random images; keypoints are exact projections of random bodies."""
  import jax.numpy as jnp
  import numpy as np
  from spin_jax import camera, constants, smpl
  rng = np.random.default_rng(seed)
  pose = (rng.normal(size=(b, 72)) * 0.2).astype(np.float32)
  pose[:, 0] += np.pi
  betas = (rng.normal(size=(b, 10)) * 0.5).astype(np.float32)
  joints = np.asarray(smpl.joints_forward(body_model, jnp.asarray(betas),
                                          jnp.asarray(pose[:, 3:]),
                                          jnp.asarray(pose[:, :3])))
  t = np.stack([np.zeros(b), np.zeros(b), np.full(b, 40.0)], -1)
  px = np.asarray(camera.perspective_projection(
      jnp.asarray(joints), jnp.asarray(t, jnp.float32), constants.FOCAL_LENGTH,
      jnp.full((2,), constants.IMG_RES / 2.0)))
  kp = np.concatenate([2 * px / constants.IMG_RES - 1, np.ones((b, 49, 1))], -1)
  gt = joints[:, 25:] - joints[:, 39:40]
  return dict(
      image=rng.normal(size=(b, img_res, img_res, 3)).astype(np.float32),
      keypoints=kp.astype(np.float32),
      pose_3d=np.concatenate([gt, np.ones((b, 24, 1))], -1).astype(np.float32),
      pose=pose, betas=betas, has_smpl=np.zeros(b, np.float32),
      has_pose_3d=np.ones(b, np.float32),
      index=np.arange(b, dtype=np.int32), dataset_id=np.zeros(b, np.int32),
      is_flipped=(np.arange(b) % 2).astype(np.int32),
      rot_angle=np.zeros(b, np.float32), scale=np.ones(b, np.float32),
      center=np.full((b, 2), 112.0, np.float32), gender=np.full(b, -1, np.int32))


def _config(default, name, b):
  """The experiment config for one variant (SPIN's, with the flags' sizes)."""
  run, mode = VARIANTS[name]
  cfg = default.get_config()
  cfg.body_model = _BODY.value
  cfg.model.backbone = _BACKBONE.value
  cfg.model.img_res = _IMG_RES.value
  cfg.model.dtype = _DTYPE.value
  cfg.model.layers = _LAYERS.value
  cfg.batch_size = b
  cfg.run_smplify = run
  cfg.fits_init = 'mean'
  cfg.smplify.mode = mode
  cfg.smplify.iterations = _SMPLIFY_ITERATIONS.value
  return cfg


def _time_variant(cfg, body_model, mesh):
  """(steps/s waiting on each step, steps/s dispatching all, first step s, metrics)."""
  import jax
  import numpy as np
  from spin_jax import parallel, step as step_lib, train
  b = cfg.batch_size
  model = step_lib.create_model(cfg)
  tx = step_lib.make_optimizer(cfg)
  table, _ = train.init_fits_table(cfg, b, [('bench', 0, b)])
  graphdef, state = step_lib.create_train_state(cfg, model, table, tx)
  state = parallel.replicate(state, mesh)
  prior = parallel.replicate(train.load_prior(cfg), mesh)
  bm = parallel.replicate(body_model, mesh)
  batch = parallel.shard_batch(make_batch(body_model, b, cfg.model.img_res, b),
                               mesh)
  step = step_lib.make_train_step(cfg, graphdef, tx, mesh)
  t0 = time.perf_counter()
  state, m = jax.block_until_ready(step(state, batch, bm, prior))
  first_s = time.perf_counter() - t0
  times = []
  for _ in range(_STEPS.value):  # the host waits for every step
    t0 = time.perf_counter()
    state, m = jax.block_until_ready(step(state, batch, bm, prior))
    times.append(time.perf_counter() - t0)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):  # dispatched back to back, as the loop does
    state, m = step(state, batch, bm, prior)
  jax.block_until_ready((state, m))
  async_sps = _STEPS.value / (time.perf_counter() - t0)
  return 1.0 / float(np.median(times)), async_sps, first_s, m


def main(argv):
  del argv
  from spin_jax import cli
  cli.configure_xla()  # the entry points' XLA:CPU flags, before jax starts
  import jax
  from spin_jax import fileio, parallel, smpl_io
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
  from configs import default
  unknown = sorted(set(_VARIANTS.value) - set(VARIANTS))
  if unknown:
    raise app.UsageError(f'--variants: unknown {unknown}; expected some of '
                         f'{list(VARIANTS)}.')
  on_cpu = jax.default_backend() == 'cpu'
  b = _BATCH.value or (16 if on_cpu else 64)
  body_model = smpl_io.resolve_body_model(_BODY.value)
  mesh = parallel.make_mesh()
  out = dict(batch_size=b, backbone=_BACKBONE.value, img_res=_IMG_RES.value,
             dtype=_DTYPE.value, layers=_LAYERS.value,
             smplify_iterations=_SMPLIFY_ITERATIONS.value,
             steps=_STEPS.value, device=str(jax.devices()[0].device_kind),
             backend=jax.default_backend(), num_devices=jax.device_count(),
             xla_flags=os.environ.get('XLA_FLAGS', ''),
             first_step_s={}, partial=True)
  for name in _VARIANTS.value:
    sps, async_sps, first_s, m = _time_variant(_config(default, name, b),
                                               body_model, mesh)
    out[f'{name}_steps_per_s'] = sps
    out[f'{name}_async_steps_per_s'] = async_sps
    out['first_step_s'][name] = first_s
    print(f'{name}: {sps:.3f} steps/s ({sps * b:.1f} images/s), '
          f'{async_sps:.3f} without waiting per step, first step '
          f'{first_s:.1f} s, loss {float(m["loss/total"]):.3f}, '
          f'fit update rate {float(m["fits/update_rate"]):.2f}', flush=True)
    if _JSON.value:
      fileio.atomic_write_json(_JSON.value, out)
  if 'plain' in _VARIANTS.value and 'inloop_fast' in _VARIANTS.value:
    out['fast_over_plain'] = (out['inloop_fast_steps_per_s'] /
                              out['plain_steps_per_s'])
  out['partial'] = False
  fileio.print_json_line(out, _JSON.value)


if __name__ == '__main__':
  app.run(main)
