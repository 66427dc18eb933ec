r"""SMPL forward throughput: spin_jax (full mesh, joints-only) vs smplx (torch).

    python experiments/benchmarks/smpl_forward.py --json /tmp/smpl_forward.json

Measures meshes/s at each batch size for
  ours_full    spin_jax.smpl.forward (vertices + 49 joints), jit
  ours_joints  spin_jax.smpl.joints_forward (the exact 49 SPIN joints), jit
  smplx        smplx.SMPL forward (vertices + its 45 joints), torch CPU, no_grad
  body_models  the `body_models` package (JAX backend) when importable, else null
and at each --grad_batch_sizes (64) forward+backward w.r.t. the pose
(`ours_full_grad`, `smplx_grad`, loss = sum of squared vertices and joints).
On a GPU/TPU `ours_full_chunked` also times the XLA:CPU form (skinning in
chunks, smpl.MESH_CHUNK_BACKENDS), to check the per-backend choice.
--torch_device=cuda runs smplx on the GPU (a torch CUDA build). --json is
rewritten after each batch size ("partial": true until the last).

All methods run in one process on the same inputs; timings interleave the
methods round by round and keep each method's best round, so load from other
processes on a shared machine biases no method. By default the body model is a
SMPL-sized random model (6890 vertices, 207 pose correctives), the workload the
targets are about; --model=default times the shipped default model instead
(12k vertices, zero pose correctives, which our forward skips but smplx
multiplies). The "model" field of the JSON says which. The JSON is the last
stdout line.
"""
from __future__ import annotations

import os
import platform
import sys
import time

from absl import app
from absl import flags

_JSON = flags.DEFINE_string('json', None, 'Write the results here too.')
_BATCHES = flags.DEFINE_list('batch_sizes', ['1', '64', '512'],
                             'Batch sizes to measure.')
_ROUNDS = flags.DEFINE_integer('rounds', 5, 'Interleaved timing rounds.')
_ROUND_TIME = flags.DEFINE_float('round_time', 0.4,
                                 'Seconds per method per round (at least).')
_MODEL = flags.DEFINE_string(
    'model', 'random', "'random': a random SMPL-sized model (6890 vertices, "
    "with pose correctives: the workload of SMPL itself); 'default': the "
    "shipped default model (12k vertices, no pose correctives, which our "
    "forward skips); or a path for spin_jax.smpl_io.load_body_model.")
_GRAD_BATCHES = flags.DEFINE_list('grad_batch_sizes', ['64'],
                                   'Batch sizes also timed forward+backward.')
_TORCH_DEVICE = flags.DEFINE_string('torch_device', 'cpu',
                                    "smplx's torch device: 'cpu' or 'cuda'.")


def _random_smpl_arrays(nv=6890, seed=0):
  """An SMPL-sized random model with SMPL's sparsity.

  Each vertex belongs to a bone and is skinned to it and its parent and
  child (<= 4 weights, as in SMPL); each regressor row reads vertices of one
  body part, as SMPL's joint and extra regressors do.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from spin_jax import constants  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  parents = np.asarray(constants.SMPL_PARENTS)
  child = np.array([list(parents).index(j) if j in parents else j
                    for j in range(24)])
  bone = rng.integers(0, 24, nv)
  rows = np.arange(nv)
  weights = np.zeros((nv, 24))
  weights[rows, bone] = 1.0
  np.add.at(weights, (rows, np.maximum(parents, 0)[bone]), rng.uniform(0, .4, nv))
  np.add.at(weights, (rows, child[bone]), rng.uniform(0, .4, nv))
  weights /= weights.sum(1, keepdims=True)

  def regressor(num_rows, per_row):
    reg = np.zeros((num_rows, nv))
    for r in range(num_rows):
      part = np.flatnonzero(bone == rng.integers(0, 24))
      cols = rng.choice(part, min(per_row, part.size), replace=False)
      reg[r, cols] = rng.uniform(0.5, 1.0, cols.size)
      reg[r] /= reg[r].sum()
    return reg

  kintree = np.stack([parents, np.arange(24)])
  kintree[0, 0] = 4294967295
  return dict(
      v_template=rng.normal(0, 0.3, (nv, 3)),
      shapedirs=rng.normal(0, 0.01, (nv, 3, 10)),
      posedirs=rng.normal(0, 0.002, (nv, 3, 207)),
      J_regressor=regressor(24, 20), weights=weights, kintree_table=kintree,
      f=rng.integers(0, nv, (13776, 3)).astype(np.uint32),
      J_regressor_extra=regressor(9, 30), J_regressor_h36m=regressor(17, 80),
      keypoint_vertex_ids=np.asarray(constants.SMPL_KEYPOINT_VERTEX_IDS))


def _load_arrays():
  """(numpy arrays in SMPL layout, description of the model)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from spin_jax import constants  # pylint: disable=g-import-not-at-top
  from spin_jax import smpl_io  # pylint: disable=g-import-not-at-top
  if _MODEL.value == 'random':
    return _random_smpl_arrays(), 'random 6890-vertex model'
  path = _MODEL.value
  if path == 'default':
    path = os.path.join(smpl_io.ASSETS_DIR, smpl_io.DEFAULT_MODEL_FILES['full'])
    if not os.path.isfile(path):
      return _random_smpl_arrays(), ('random 6890-vertex model (default model '
                                     'not built)')
  # Raw SMPL-layout arrays (our npz carries the regressors and keypoint ids).
  load = smpl_io._load_npz if path.endswith('.npz') else smpl_io._load_pickle  # pylint: disable=protected-access
  arrays = load(path)
  nv = arrays['v_template'].shape[0]
  if 'keypoint_vertex_ids' not in arrays:
    arrays['keypoint_vertex_ids'] = np.asarray(
        constants.SMPL_KEYPOINT_VERTEX_IDS)
  for key in ('J_regressor_extra', 'J_regressor_h36m'):
    arrays.setdefault(key, _random_smpl_arrays(nv)[key])
  return arrays, f'{path} ({nv} vertices)'


def _time_rounds(fns, rounds, round_time, setups=None):
  """Best seconds per call of each fn, interleaving fns round by round.

  setups: optional {name: callable} run before timing that fn in each round.
  """
  setups = setups or {}
  best = {k: float('inf') for k in fns}
  for name, fn in fns.items():  # warm-up (compile) outside the timing
    setups.get(name, lambda: None)()
    fn()
    fn()
  for _ in range(rounds):
    for name, fn in fns.items():
      setups.get(name, lambda: None)()
      n, start = 0, time.perf_counter()
      while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= round_time and n >= 3:
          break
      best[name] = min(best[name], elapsed / n)
  return best


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  from spin_jax import smpl  # pylint: disable=g-import-not-at-top

  arrays, model_desc = _load_arrays()
  model = smpl.make_body_model(
      v_template=arrays['v_template'], shapedirs=arrays['shapedirs'],
      posedirs=arrays['posedirs'], J_regressor=arrays['J_regressor'],
      weights=arrays['weights'], parents=arrays['kintree_table'],
      faces=arrays['f'], keypoint_vertex_ids=arrays['keypoint_vertex_ids'],
      J_regressor_extra=arrays['J_regressor_extra'],
      J_regressor_h36m=arrays['J_regressor_h36m'])

  try:
    import smplx  # pylint: disable=g-import-not-at-top
    from smplx.utils import Struct  # pylint: disable=g-import-not-at-top
    ref = smplx.SMPL('unused', data_struct=Struct(**arrays), create_transl=False)
    ref.eval().to(_TORCH_DEVICE.value)
  except ImportError:
    ref = None
  try:
    import body_models  # pylint: disable=g-import-not-at-top,unused-import
    body_models_note = 'importable, but no adapter written'
  except ImportError:
    body_models_note = 'not installed'

  torch_threads = torch.get_num_threads()
  fwd = jax.jit(smpl.forward)
  joints_fwd = jax.jit(smpl.joints_forward)
  on_cpu = jax.default_backend() == 'cpu'
  on_gpu = _TORCH_DEVICE.value != 'cpu'
  def torch_sync(x):  # CUDA runs asynchronously: time the finished work
    if on_gpu:
      torch.cuda.synchronize()
    return x

  def chunked_forward(*args):  # the XLA:CPU form, traced on this backend
    backends = smpl.MESH_CHUNK_BACKENDS
    smpl.MESH_CHUNK_BACKENDS = (jax.default_backend(),)
    try:
      return smpl.forward(*args)
    finally:
      smpl.MESH_CHUNK_BACKENDS = backends
  chunked_fwd = jax.jit(chunked_forward)

  def loss(body_pose, betas, go):
    out = smpl.forward(model, betas, body_pose, go)
    return jnp.sum(out.vertices ** 2) + jnp.sum(out.joints ** 2)
  grad_fn = jax.jit(jax.grad(loss))

  results = {}
  rng = np.random.default_rng(0)
  for b in [int(x) for x in _BATCHES.value]:
    betas = rng.normal(0, 1, (b, 10)).astype(np.float32)
    pose = rng.normal(0, 0.3, (b, 69)).astype(np.float32)
    go = rng.normal(0, 0.5, (b, 3)).astype(np.float32)
    jb, jp, jg = map(jnp.asarray, (betas, pose, go))
    fns = {
        'ours_full': lambda: jax.block_until_ready(fwd(model, jb, jp, jg)),
        'ours_joints': lambda: jax.block_until_ready(
            joints_fwd(model, jb, jp, jg)),
    }
    if not on_cpu:
      fns['ours_full_chunked'] = lambda: jax.block_until_ready(
          chunked_fwd(model, jb, jp, jg))
    setups = {}
    if ref is not None:
      tb, tp, tg = (torch.from_numpy(x).to(_TORCH_DEVICE.value)
                    for x in (betas, pose, go))
      def smplx_fwd(tb=tb, tp=tp, tg=tg):
        with torch.no_grad():
          return torch_sync(ref(betas=tb, body_pose=tp, global_orient=tg))
      # torch's default thread pool collapses when the CPU is oversubscribed
      # (spin-waiting threads), so smplx also runs single-threaded and its
      # better setting counts.
      fns['smplx'] = smplx_fwd
      setups['smplx'] = lambda: torch.set_num_threads(torch_threads)
      if not on_gpu:
        fns['smplx@1thread'] = smplx_fwd
        setups['smplx@1thread'] = lambda: torch.set_num_threads(1)
    if str(b) in _GRAD_BATCHES.value:
      fns['ours_full_grad'] = lambda: jax.block_until_ready(
          grad_fn(jp, jb, jg))
      if ref is not None:
        def smplx_grad(tb=tb, tp=tp, tg=tg):
          p = tp.clone().requires_grad_(True)
          out = ref(betas=tb, body_pose=p, global_orient=tg)
          (out.vertices.pow(2).sum() + out.joints.pow(2).sum()).backward()
          return torch_sync(p.grad)
        fns['smplx_grad'] = smplx_grad
        setups['smplx_grad'] = setups['smplx']
        if not on_gpu:
          fns['smplx_grad@1thread'] = smplx_grad
          setups['smplx_grad@1thread'] = setups['smplx@1thread']
    best = _time_rounds(fns, _ROUNDS.value, _ROUND_TIME.value, setups)
    torch.set_num_threads(torch_threads)
    res = {k: round(b / t, 1) for k, t in best.items()}
    for k in ('smplx', 'smplx_grad'):  # the better thread setting
      if k + '@1thread' in res:
        res[k] = max(res[k], res.pop(k + '@1thread'))
        res[k + '_threads_used'] = (
            torch_threads if best[k] <= best[k + '@1thread'] else 1)
    res.setdefault('smplx', None)
    res['body_models'] = None
    results[str(b)] = res
    print(f'batch {b}: ' + ', '.join(f'{k} {v}' for k, v in res.items()),
          file=sys.stderr, flush=True)
    if _JSON.value:
      from spin_jax import fileio  # pylint: disable=g-import-not-at-top
      fileio.atomic_write_json(_JSON.value, dict(results, partial=True))

  def ratio(b, num, den):
    r = results.get(str(b), {})
    if r.get(num) and r.get(den):
      return round(r[num] / r[den], 2)
    return None
  results['ratios'] = {
      'b64_full_vs_smplx': ratio(64, 'ours_full', 'smplx'),
      'b64_grad_vs_smplx_grad': ratio(64, 'ours_full_grad', 'smplx_grad'),
      'b1_full_vs_smplx': ratio(1, 'ours_full', 'smplx'),
      'b64_joints_vs_full': ratio(64, 'ours_joints', 'ours_full'),
  }
  results['meta'] = {
      'unit': 'meshes per second (best of interleaved rounds)',
      'model': model_desc,
      'pose_correctives': model.has_pose_correctives,
      'joint_point_bone_pairs': model.joint_points.num_pairs,
      'machine': f'{platform.processor() or platform.machine()}, '
                 f'{os.cpu_count()} CPUs',
      'jax': jax.__version__, 'torch': torch.__version__,
      'torch_threads': f'{torch_threads} and 1, the better per entry',
      'torch_device': _TORCH_DEVICE.value,
      'backend': jax.default_backend(),
      'device': str(jax.devices()[0].device_kind),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
      'body_models': body_models_note,
      'rounds': _ROUNDS.value, 'round_time_s': _ROUND_TIME.value,
  }
  from spin_jax import fileio  # pylint: disable=g-import-not-at-top
  fileio.print_json_line(dict(results, partial=False), _JSON.value)


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  app.run(main)
