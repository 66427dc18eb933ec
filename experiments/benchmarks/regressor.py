r"""Regressor throughput: our NNX HMR against the same network in PyTorch.

  python experiments/benchmarks/regressor.py --json /tmp/regressor.json

Both networks hold the same weights (a random PyTorch HMR, the reference in
tests/torch_reference.py shared with tests/test_convert.py, converted with
spin_jax.convert); the benchmark first checks that their eval outputs agree.
Then, on the same CPU in the same process, interleaving the two so both see
the same load:
- inference: eval mode, batch --batch (64) at --img_res (224), ResNet-50;
- training step: forward, backward and Adam (lr 5e-5) in train mode (batch
  statistics, dropout) at batch --train_batch (16), with an MSE loss on the
  rotation matrices, betas and camera (the regressor's share of a SPIN step).

XLA's CPU flags are set from --xla_preset before jax is imported:
  default     whatever jax ships with;
  no_ynn      --xla_cpu_experimental_ynn_fusion_type= (no YNNPACK fusions:
              convolutions go to XLA's own Eigen kernels) - the default, and
              what the entry points set (spin_jax.cli);
  ynn_reduce  --xla_cpu_experimental_ynn_fusion_type=reduce (YNNPACK for
              reductions only: flax's BatchNorm statistics 8x faster, but
              SMPLify 1.2-1.4x slower);
  custom      --xla_flags verbatim.
An XLA_FLAGS already in the environment is kept and the preset appended.

Findings (2-core CPU shared with other jobs, jax 0.10.2, torch 2.13 CPU):
- YNNPACK fusions (jax's default) slow this network down: a single run at
  load ~10 gave ours 2.1 images/s with the default flags and 3.8-8.5 with
  `no_ynn` (torch 1.1-2.5 in the same runs). `no_ynn` is the default preset.
- Training (2026-12, AMD EPYC with AVX-512): spin_jax.layers' backward
  passes (--train_layers=auto on CPU) against XLA's autodiff of the native
  ops (ours_<dtype>_native): see spin_jax/layers.py for the profile.
- Training: XLA:CPU lowers the max-pool gradient to select_and_scatter,
  5.7x slower than the gradient of the same max taken over 9 strided slices
  (batch 16, 112x112x64: 774 -> 136 ms forward+backward), so the model uses
  the latter (models.max_pool_3x3_s2). Per-op micro-benchmarks put XLA's
  convolutions forward/backward on par with torch's oneDNN one at a time.
  The whole step lost in the composition: XLA's column reductions for
  BatchNorm's statistics, and the residual stream recomputed inside the
  transposes of the 1x1 convolutions' weight gradients (the profile, and
  the fix, in spin_jax/layers.py: 0.48x -> 0.87x torch at ResNet-50).
- Compile time: ~10-35 s for inference and ~65 s for the training step.
Ratios from one run are what to compare: absolute numbers move with load.

The last stdout line is JSON with ours_images_per_s, torch_images_per_s,
ours_train_images_per_s, torch_train_images_per_s (images/s from the median
step time; the first --batch, float32), the max output difference and the
settings; "inference" and "train" hold every variant per batch size:
ours_<dtype> for each --dtypes (bfloat16: --config.model.dtype=bfloat16),
torch, and torch_bf16_autocast with --torch_amp. On a GPU: --torch_device=cuda
--torch_channels_last --torch_amp --xla_preset=default --max_diff=0.05 (cuDNN
and XLA may use TF32 for float32 convolutions). --json is rewritten after each
part ("partial": true until the end).
"""
from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app
from absl import flags

XLA_PRESETS = {
    'default': '',
    'no_ynn': '--xla_cpu_experimental_ynn_fusion_type=',
    'ynn_reduce': '--xla_cpu_experimental_ynn_fusion_type=reduce',
}

_JSON = flags.DEFINE_string('json', None, 'Write the result JSON here too.')
_BACKBONE = flags.DEFINE_string('backbone', 'resnet50', 'ResNet depth.')
_BATCH = flags.DEFINE_list('batch', ['64'], 'Inference batch sizes.')
_TRAIN_BATCH = flags.DEFINE_integer('train_batch', 16, 'Training batch size.')
_IMG_RES = flags.DEFINE_integer('img_res', 224, 'Input side in pixels.')
_ITERS = flags.DEFINE_integer('iters', 5, 'Timed steps per benchmark.')
_TRAIN_ITERS = flags.DEFINE_integer('train_iters', 5,
                                    'Timed training steps (0: skip training).')
_PRESET = flags.DEFINE_enum('xla_preset', 'no_ynn',
                            list(XLA_PRESETS) + ['custom'],
                            'XLA CPU flag preset (see the module doc).')
_XLA_FLAGS = flags.DEFINE_string('xla_flags', '',
                                 'XLA_FLAGS for --xla_preset=custom.')
_THREADS = flags.DEFINE_integer('torch_threads', 0,
                                'torch threads (0: number of CPUs).')
_CHANNELS_LAST = flags.DEFINE_bool(
    'torch_channels_last', False, 'Run torch in channels_last memory format.')
_DTYPES = flags.DEFINE_list('dtypes', ['float32'],
                            'Our compute dtypes (float32, bfloat16).')
_TORCH_DEVICE = flags.DEFINE_string('torch_device', 'cpu', "'cpu' or 'cuda'.")
_TORCH_AMP = flags.DEFINE_bool(
    'torch_amp', False, 'Also time torch under autocast(bfloat16).')
_TRAIN_LAYERS = flags.DEFINE_list(
    'train_layers', ['auto', 'native'],
    "Training forms to time (--config.model.layers): 'auto' (the default: "
    "spin_jax.layers on XLA:CPU) is reported as ours_<dtype>, the others as "
    'ours_<dtype>_<form>.')
_MAX_DIFF = flags.DEFINE_float(
    'max_diff', 1e-3, 'Largest |ours - torch| eval output (float32) accepted '
    'as the same network.')


def _set_xla_flags() -> str:
  if 'jax' in sys.modules:
    raise RuntimeError('jax was imported before the XLA flags were set.')
  extra = (_XLA_FLAGS.value if _PRESET.value == 'custom'
           else XLA_PRESETS[_PRESET.value])
  merged = ' '.join(s for s in (os.environ.get('XLA_FLAGS', ''), extra) if s)
  os.environ['XLA_FLAGS'] = merged
  return merged


def _torch_hmr(backbone: str, mean: dict):
  """SPIN's HMR in plain PyTorch (tests/torch_reference.py), small IEF heads."""
  from torch import nn
  from spin_jax import models
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..',
                                  'tests'))
  import torch_reference  # pylint: disable=import-outside-toplevel

  depths, bottleneck = models.RESNET_LAYOUTS[backbone]
  net = torch_reference.TorchHMR(depths, bottleneck, mean)
  for head in (net.decpose, net.decshape, net.deccam):
    nn.init.xavier_uniform_(head.weight, gain=0.01)
  return net


def _median_rate(times, batch):
  return batch / statistics.median(times)


class _Runner:
  """Both networks, their inputs and jitted steps; every call blocks until done."""

  def __init__(self, images):
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from spin_jax import convert
    from spin_jax import models
    self.jax, self.torch = jax, torch
    torch.manual_seed(0)
    self.dev = torch.device(_TORCH_DEVICE.value)
    tnet = _torch_hmr(_BACKBONE.value, models.load_mean_params()).eval()
    with torch.no_grad():  # larger heads: the output check then sees features
      for head in (tnet.decpose, tnet.decshape, tnet.deccam):
        head.weight.mul_(100.0)
    state = {k: v.numpy() for k, v in tnet.state_dict().items()}
    self.ours = {dt: convert.hmr_from_state_dict(state, {'dtype': dt})
                 for dt in _DTYPES.value}
    # Training forms (ModelConfig.layers): 'auto' is what users get.
    self.train_models = {
        (dt, form): convert.hmr_from_state_dict(state, {'dtype': dt,
                                                        'layers': form})
        for dt in _DTYPES.value for form in _TRAIN_LAYERS.value}
    for model in self.ours.values():
      model.eval()
    self.fmt = (torch.channels_last if _CHANNELS_LAST.value
                else torch.contiguous_format)
    self.tnet = tnet.to(self.dev, memory_format=self.fmt)
    self.x_ours = jnp.asarray(images)
    self.x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).to(
        self.dev).contiguous(memory_format=self.fmt)
    self.infer = nnx.jit(
        lambda model, x: (lambda o: (o['rotmat'], o['betas'], o['cam']))(model(x)))

  def sync(self, out):
    if self.dev.type == 'cuda':
      self.torch.cuda.synchronize()
    return out

  def ours_infer(self, dtype, b):
    return self.jax.block_until_ready(self.infer(self.ours[dtype], self.x_ours[:b]))

  def torch_infer(self, b, amp=False):
    with self.torch.inference_mode(), self.torch.autocast(
        self.dev.type, self.torch.bfloat16, enabled=amp):
      return self.sync(self.tnet(self.x_torch[:b]))


def _interleaved(fns, iters):
  """{name: median seconds per call}; a warm-up call first (compiles)."""
  first = {}
  for name, fn in fns.items():
    t0 = time.perf_counter()
    fn()
    first[name] = time.perf_counter() - t0
  times = {name: [] for name in fns}
  for _ in range(iters):  # interleaved: the same load for all
    for name, fn in fns.items():
      t0 = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - t0)
    print('  ' + ', '.join(f'{k} {v[-1]:.3f} s' for k, v in times.items()),
          flush=True)
  return {k: statistics.median(v) for k, v in times.items()}, first


def _check_outputs(r, batch):
  """Max |ours - torch| of the eval outputs (float32), and per dtype vs ours."""
  import numpy as np
  ref = r.ours_infer('float32', batch) if 'float32' in r.ours else None
  tout = [t.float().cpu().numpy() for t in r.torch_infer(batch)]
  diffs = {}
  for dt in r.ours:
    out = ref if dt == 'float32' else r.ours_infer(dt, batch)
    diffs[dt] = max(float(np.abs(np.asarray(a) - b).max())
                    for a, b in zip(out, tout))
  print(f'eval outputs, max |ours - torch| = {diffs}', flush=True)
  if diffs.get('float32', 0.0) > _MAX_DIFF.value:
    raise SystemExit(f'Outputs differ by {diffs["float32"]} > --max_diff='
                     f'{_MAX_DIFF.value}: not the same network.')
  return diffs


def _inference(r, b):
  fns = {f'ours_{dt}': (lambda dt=dt: r.ours_infer(dt, b)) for dt in r.ours}
  fns['torch'] = lambda: r.torch_infer(b)
  if _TORCH_AMP.value:
    fns['torch_bf16_autocast'] = lambda: r.torch_infer(b, amp=True)
  med, first = _interleaved(fns, _ITERS.value)
  return {k: b / t for k, t in med.items()}, first


def _train_fns(r, tb):
  """{name: one training step} for ours per dtype and torch (fp32, amp)."""
  import jax.numpy as jnp
  import numpy as np
  import optax
  from flax import nnx
  torch = r.torch
  ref = r.ours_infer(next(iter(r.ours)), tb)
  targets = dict(rotmat=jnp.asarray(ref[0]) * 0.9, betas=jnp.ones((tb, 10)),
                 cam=jnp.ones((tb, 3)))
  ttargets = {k: torch.from_numpy(np.array(v)).to(r.dev)
              for k, v in targets.items()}

  def loss_fn(model, x):
    out = model(x)
    return sum(jnp.mean(jnp.square(out[k] - targets[k])) for k in targets)

  @nnx.jit(donate_argnums=(0, 1))
  def train_step(model, opt, x):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x)
    opt.update(model, grads)
    return loss

  fns = {}
  for (dt, form), model in r.train_models.items():
    model.train()
    opt = nnx.Optimizer(model, optax.adam(5e-5), wrt=nnx.Param)
    name = f'ours_{dt}' if form == 'auto' else f'ours_{dt}_{form}'
    fns[name] = (lambda m=model, o=opt: r.jax.block_until_ready(
        train_step(m, o, r.x_ours[:tb])))
  r.tnet.train()
  topt = torch.optim.Adam(r.tnet.parameters(), lr=5e-5)

  def torch_step(amp=False):
    topt.zero_grad(set_to_none=True)
    with torch.autocast(r.dev.type, torch.bfloat16, enabled=amp):
      outs = r.tnet(r.x_torch[:tb])
    loss = sum(torch.mean(torch.square(o.float() - ttargets[k]))
               for o, k in zip(outs, ('rotmat', 'betas', 'cam')))
    loss.backward()
    topt.step()
    return r.sync(loss)

  fns['torch'] = torch_step
  if _TORCH_AMP.value:
    fns['torch_bf16_autocast'] = lambda: torch_step(amp=True)
  return fns


def main(argv):
  del argv
  xla_flags = _set_xla_flags()
  import jax
  import numpy as np
  import torch
  from spin_jax import fileio

  threads = _THREADS.value or os.cpu_count()
  torch.set_num_threads(threads)
  batches = [int(b) for b in _BATCH.value]
  res, tb = _IMG_RES.value, _TRAIN_BATCH.value
  rng = np.random.default_rng(0)
  images = rng.normal(size=(max(batches + [tb]), res, res, 3)).astype(np.float32)
  r = _Runner(images)
  result = dict(
      backbone=_BACKBONE.value, batch=batches, train_batch=tb, img_res=res,
      dtypes=list(r.ours), xla_preset=_PRESET.value, xla_flags=xla_flags,
      torch_threads=threads, torch_channels_last=_CHANNELS_LAST.value,
      torch_device=_TORCH_DEVICE.value, torch_amp=_TORCH_AMP.value,
      device=str(jax.devices()[0].device_kind), backend=jax.default_backend(),
      cpu_count=os.cpu_count(), jax=jax.__version__, torch=torch.__version__,
      inference={}, train={}, compile_s={}, partial=True)
  diffs = _check_outputs(r, batches[0])
  result['max_abs_output_diff'] = diffs.get('float32')
  result['max_abs_output_diff_per_dtype'] = diffs

  def save():
    if _JSON.value:
      fileio.atomic_write_json(_JSON.value, result)

  for b in batches:
    rates, first = _inference(r, b)
    result['inference'][str(b)] = rates
    result['compile_s'][f'infer_{b}'] = first
    save()
  if _TRAIN_ITERS.value:
    med, first = _interleaved(_train_fns(r, tb), _TRAIN_ITERS.value)
    result['train'][str(tb)] = {k: tb / t for k, t in med.items()}
    result['compile_s'][f'train_{tb}'] = first
  _legacy_keys(result, batches[0], tb)
  result.update(partial=False, load_average_1min=os.getloadavg()[0])
  fileio.print_json_line(result, _JSON.value)


def _legacy_keys(result, b, tb):
  """The flat keys of earlier versions (first batch, float32 where run)."""
  ours = f'ours_{result["dtypes"][0]}'
  inf = result['inference'][str(b)]
  result.update(ours_images_per_s=inf[ours], torch_images_per_s=inf['torch'],
                inference_ratio=inf[ours] / inf['torch'])
  if result['train']:
    tr = result['train'][str(tb)]
    result.update(ours_train_images_per_s=tr[ours],
                  torch_train_images_per_s=tr['torch'],
                  train_ratio=tr[ours] / tr['torch'])


if __name__ == '__main__':
  app.run(main)
