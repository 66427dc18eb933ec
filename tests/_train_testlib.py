"""Small, fast stand-ins shared by the training tests (not a test module).

A random SMPL-layout body model with few vertices, a random GMM pose prior and
batches whose keypoints are exact projections of random bodies: enough to run
the real training step in seconds on CPU.
"""
from __future__ import annotations

import importlib.util
import os

import numpy as np

from spin_jax import checkpoint as ckpt_lib
from spin_jax import constants
from spin_jax import fits as fits_lib
from spin_jax import function_data
from spin_jax import models
from spin_jax import parallel
from spin_jax import priors
from spin_jax import smpl
from spin_jax import step as step_lib
from spin_jax import train

# The tiny config's backbone: the ResNet stem alone (no residual stages).
models.RESNET_LAYOUTS.setdefault('stem', ((0, 0, 0, 0), False))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(mode: str = 'tiny'):
  path = os.path.join(REPO, 'experiments', 'configs', 'default.py')
  spec = importlib.util.spec_from_file_location('spin_default_config', path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(mode)


def random_body_model(seed: int = 0, nv: int = 64) -> smpl.BodyModel:
  """SMPL layout, nv vertices around a 1.7 m tall skeleton-ish cloud."""
  rng = np.random.default_rng(seed)
  v = rng.normal(size=(nv, 3)) * np.array([0.2, 0.5, 0.1])
  weights = rng.random((nv, 24)) ** 8
  weights /= weights.sum(1, keepdims=True)

  def regressor(rows):
    r = np.zeros((rows, nv))
    for j in range(rows):
      ids = rng.choice(nv, 3, replace=False)
      r[j, ids] = 1.0 / 3
    return r

  return smpl.make_body_model(
      v_template=v, shapedirs=rng.normal(size=(nv, 3, 10)) * 0.01,
      posedirs=rng.normal(size=(nv, 3, 207)) * 1e-3,
      J_regressor=regressor(24), weights=weights,
      parents=np.asarray(constants.SMPL_PARENTS),
      faces=rng.integers(0, nv, size=(32, 3)),
      keypoint_vertex_ids=rng.choice(nv, 11, replace=False),
      J_regressor_extra=regressor(9), J_regressor_h36m=regressor(17))


def random_prior(seed: int = 0) -> priors.GaussianMixturePrior:
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(8, 69, 69)) * 0.1
  covars = a @ np.swapaxes(a, 1, 2) + 0.05 * np.eye(69)
  return priors.gmm_prior_from_arrays(rng.normal(size=(8, 69)) * 0.1, covars,
                                      np.full(8, 1 / 8))


def synthetic_batch(body_model, batch_size: int, img_res: int, num_rows: int,
                    seed: int) -> dict:
  """Numpy batch in the pipeline's schema; keypoints project exactly."""
  import jax.numpy as jnp
  from spin_jax import camera
  rng = np.random.default_rng(seed)
  b = batch_size
  pose = (rng.normal(size=(b, 72)) * 0.2).astype(np.float32)
  pose[:, 0] += np.pi  # upright in the OpenCV camera frame (y down)
  betas = (rng.normal(size=(b, 10)) * 0.5).astype(np.float32)
  out = smpl.forward(body_model, jnp.asarray(betas), jnp.asarray(pose[:, 3:]),
                     jnp.asarray(pose[:, :3]))
  joints = np.asarray(out.joints)
  transl = np.stack([rng.normal(size=b) * 0.05, rng.normal(size=b) * 0.05,
                     np.full(b, 40.0)], -1).astype(np.float32)
  px = np.asarray(camera.perspective_projection(
      jnp.asarray(joints), jnp.asarray(transl), constants.FOCAL_LENGTH,
      jnp.full((2,), constants.IMG_RES / 2.0)))
  conf = np.ones((b, 49, 1), np.float32)
  conf[:, :25] = rng.random((b, 25, 1)) * 0.9
  kp = np.concatenate([2 * px / constants.IMG_RES - 1, conf], -1)
  gt = joints[:, 25:] - joints[:, 25 + 14:25 + 15]
  pose_3d = np.concatenate([gt, np.ones((b, 24, 1))], -1)
  rot = rng.uniform(-30, 30, size=b) * (rng.random(b) < 0.6)
  return dict(
      image=rng.normal(size=(b, img_res, img_res, 3)).astype(np.float32),
      keypoints=kp.astype(np.float32), pose_3d=pose_3d.astype(np.float32),
      pose=pose, betas=betas,
      has_smpl=(rng.random(b) < 0.3).astype(np.float32),
      has_pose_3d=(rng.random(b) < 0.5).astype(np.float32),
      index=rng.permutation(num_rows)[:b].astype(np.int32),
      dataset_id=np.zeros(b, np.int32),
      is_flipped=(rng.random(b) < 0.5).astype(np.float32),
      rot_angle=rot.astype(np.float32),
      scale=np.ones(b, np.float32), center=np.full((b, 2), 112, np.float32),
      gender=np.full(b, -1, np.int32))


NUM_ROWS = 12  # fits-table rows of the stand-in dataset (batches repeat samples)


def enable_compile_cache():
  """Identical jitted programs compile once per test session (also across files)."""
  import tempfile
  import jax
  path = os.environ.get('SPIN_TEST_JIT_CACHE') or os.path.join(
      tempfile.gettempdir(), f'spin_jax_test_jit_cache_{os.getuid()}')
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return path


def _reference_cache_key(cfg) -> str:
  """Digest of everything the one-device reference run depends on.

  The config, the code (spin_jax/, this file, the experiment configs), the
  numerics libraries' versions and the XLA/JAX environment: a cached result
  is never reused after any of them changes.
  """
  import hashlib
  import importlib.metadata
  h = hashlib.sha256(cfg.to_json_best_effort(sort_keys=True).encode())
  roots = [os.path.join(REPO, 'spin_jax'),
           os.path.join(REPO, 'experiments', 'configs')]
  files = [os.path.abspath(__file__)]
  for root in roots:
    for d, subdirs, names in os.walk(root):
      subdirs[:] = sorted(x for x in subdirs if x != '__pycache__')
      files += [os.path.join(d, n) for n in sorted(names)
                if not n.endswith('.pyc')]
  for f in files:
    h.update(os.path.relpath(f, REPO).encode() + b'\0')
    with open(f, 'rb') as fh:
      h.update(hashlib.sha256(fh.read()).digest())
  for dist in ('jax', 'jaxlib', 'flax', 'optax', 'numpy'):
    try:
      h.update(f'{dist}={importlib.metadata.version(dist)};'.encode())
    except importlib.metadata.PackageNotFoundError:
      pass
  for k in sorted(os.environ):
    if k.startswith(('JAX_', 'XLA_')):
      h.update(f'{k}={os.environ[k]};'.encode())
  return h.hexdigest()[:32]


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:  # exists, owned by someone else
    return True
  return True


def parallel_and_one_device(tmp_path, tag: str, *, nproc: int,
                            host_devices: int, steps: int = 3):
  """(final arrays of `nproc` processes x `host_devices` devices, of 1 device).

  The parallel run's arrays carry 'num_devices'; the one-device run is the
  shared reference of `one_device_reference`.
  """
  want, got = one_device_reference(
      str(tmp_path / 'one'), steps,
      meanwhile=lambda: run_subprocesses(
          str(tmp_path / tag), str(tmp_path / f'{tag}.npz'), steps,
          nproc=nproc, host_devices=host_devices))
  return got, want


def one_device_reference(workdir: str, steps: int, meanwhile=None):
  """(`final_arrays` of the tiny run on one device, `meanwhile()`).

  test_multidevice and test_distributed both compare against this run; with
  pytest-xdist they may run at the same time in different workers, so the
  result is shared through a file keyed by `_reference_cache_key`. One worker
  takes a lock file and trains; another finding the lock runs `meanwhile`
  (its own multi-device run) first and then reads the file, or trains itself
  if the lock's owner died without writing it. The file is written to a
  temporary name and os.replace'd, so a reader never sees half a file.
  """
  import tempfile
  import time
  import uuid
  import zipfile
  meanwhile = meanwhile or (lambda: None)
  cfg, bm, prior = tiny_setup(num_train_steps=steps, checkpoint_every=0)
  cache_dir = os.environ.get('SPIN_TEST_REFERENCE_CACHE') or os.path.join(
      tempfile.gettempdir(), f'spin_jax_test_reference_cache_{os.getuid()}')
  os.makedirs(cache_dir, exist_ok=True)
  path = os.path.join(cache_dir, f'one_device_{_reference_cache_key(cfg)}.npz')
  lock = path + '.lock'

  def read():
    try:
      with np.load(path) as f:
        return dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
      return None  # absent (or unreadable)

  def try_lock():
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'w') as f:
      f.write(str(os.getpid()))
    return True

  def lock_owner_alive():
    try:
      with open(lock) as f:
        # Empty: the owner has not written its pid yet, so it is alive.
        return _pid_alive(int(f.read().strip() or 0) or os.getpid())
    except (OSError, ValueError):
      return False

  def compute():
    train.train_and_evaluate(cfg, workdir, body_model=bm, prior=prior,
                             train_data=make_data(cfg, bm))
    out = final_arrays(workdir)
    tmp = f'{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp'
    try:
      with open(tmp, 'wb') as f:
        np.savez(f, **out)
      os.replace(tmp, path)
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    return out

  out = read()
  if out is not None:
    return out, meanwhile()
  if not try_lock():
    other = meanwhile()
    while (out := read()) is None and os.path.exists(lock) and lock_owner_alive():
      time.sleep(0.5)
    return (out if out is not None else compute()), other
  try:
    out = compute()
  finally:
    os.remove(lock)
  return out, meanwhile()


def tiny_setup(**overrides):
  """(config, body_model, prior) for the tiny in-loop run."""
  cfg = load_config('tiny')
  cfg.eval_every = 0
  cfg.render_every = 0
  cfg.num_train_steps = 4
  cfg.checkpoint_every = 2
  for k, v in overrides.items():
    node = cfg
    *parents, leaf = k.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = v
  return cfg, random_body_model(), random_prior()


def make_data(cfg, body_model, fail_at: int | None = None, nan_at: int | None = None):
  """FunctionData over exact synthetic batches; this process's slice of each.

  fail_at: raise KeyboardInterrupt when batch `fail_at` is requested (a kill).
  nan_at: batch `nan_at` has NaN images (a non-finite step).
  """
  import jax

  def batch_fn(i):
    if fail_at is not None and i == fail_at:
      raise KeyboardInterrupt('simulated kill')
    b = synthetic_batch(body_model, cfg.batch_size, cfg.model.img_res,
                        NUM_ROWS, seed=1000 + i)
    if nan_at is not None and i == nan_at:
      b['image'][:] = np.nan
    n = cfg.batch_size // jax.process_count()
    p = jax.process_index()
    return {k: v[p * n:(p + 1) * n] for k, v in b.items()}

  return function_data.FunctionData(batch_fn, NUM_ROWS, [('synthetic', 0, NUM_ROWS)])


def final_arrays(workdir: str) -> dict:
  """Params (flattened) and fits of the latest checkpoint in workdir, numpy."""
  import jax
  cfg = ckpt_lib.Checkpointer(workdir, read_only=True).restore_config()
  model = step_lib.create_model(cfg)
  table = fits_lib.init_table(NUM_ROWS, np.zeros(82, np.float32), True)
  _, state = step_lib.create_train_state(cfg, model, table,
                                      step_lib.make_optimizer(cfg))
  state = parallel.replicate(state, parallel.make_mesh())
  state, _ = ckpt_lib.restore_state(
      ckpt_lib.Checkpointer(workdir, read_only=True), state)
  host = parallel.to_host((state.params, ckpt_lib.key_data(state.model_state), state.fits.params,
                           state.fits.loss, state.step))
  params, mstate, fits_p, fits_l, step = host
  flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in
          jax.tree_util.tree_flatten_with_path(params)[0]}
  flat.update({'bn' + jax.tree_util.keystr(k): np.asarray(v) for k, v in
               jax.tree_util.tree_flatten_with_path(mstate)[0]
               if np.asarray(v).dtype.kind == 'f'})
  flat['fits'] = np.asarray(fits_p)
  flat['fits_loss'] = np.asarray(fits_l)
  flat['step'] = np.asarray(step)
  return flat


def assert_same(a: dict, b: dict, rtol=1e-5, atol=1e-6):
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=atol, err_msg=k)


RUNNER = r'''
import sys
sys.path.insert(0, {tests!r})
import numpy as np
import jax
from spin_jax import parallel
if {nproc} > 1:
  parallel.initialize_distributed({addr!r}, {nproc}, {pid})
import _train_testlib as tl
tl.enable_compile_cache()
from spin_jax import train
cfg, bm, prior = tl.tiny_setup(num_train_steps={steps}, checkpoint_every=0)
train.train_and_evaluate(cfg, {workdir!r}, body_model=bm, prior=prior,
                         train_data=tl.make_data(cfg, bm))
out = tl.final_arrays({workdir!r})  # every process: the restore is collective
if jax.process_index() == 0:
  out['num_devices'] = np.asarray(jax.device_count())
  np.savez({out!r}, **out)
'''


def run_subprocesses(workdir: str, out: str, steps: int, nproc: int = 1,
                     host_devices: int = 1, timeout: float = 600) -> dict:
  """Runs the tiny training in `nproc` fresh processes; returns process 0's arrays."""
  import socket
  import subprocess
  import sys
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={host_devices}')
  procs = []
  for pid in range(nproc):
    code = RUNNER.format(tests=os.path.join(REPO, 'tests'), nproc=nproc,
                         addr=f'localhost:{port}', pid=pid, steps=steps,
                         workdir=workdir, out=out)
    procs.append(subprocess.Popen([sys.executable, '-c', code], env=env,
                                  cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
  logs = []
  for p in procs:
    try:
      logs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
  for p, log in zip(procs, logs):
    if p.returncode != 0:
      raise AssertionError(f'subprocess failed ({p.returncode}):\n{log[-4000:]}')
  with np.load(out) as f:
    return dict(f)
