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
              convolutions go to XLA's own Eigen kernels) - the fastest here;
  custom      --xla_flags verbatim.
An XLA_FLAGS already in the environment is kept and the preset appended.

Findings (2-core CPU shared with other jobs, jax 0.10.2, torch 2.13 CPU):
- YNNPACK fusions (jax's default) slow this network down: a single run at
  load ~10 gave ours 2.1 images/s with the default flags and 3.8-8.5 with
  `no_ynn` (torch 1.1-2.5 in the same runs). `no_ynn` is the default preset.
- Training: XLA:CPU lowers the max-pool gradient to select_and_scatter,
  5.7x slower than the gradient of the same max taken over 9 strided slices
  (batch 16, 112x112x64: 774 -> 136 ms forward+backward), so the model uses
  the latter (models.max_pool_3x3_s2). Per-op micro-benchmarks put XLA's
  3x3 convolution forward/backward on par with torch's oneDNN and its
  training-mode BatchNorm ahead. What remains is in the strided
  convolutions' backward: XLA lowers it to dilated convolutions fed by
  layout transposes (~580 copies in the compiled step) that oneDNN avoids.
- Compile time: ~10-35 s for inference and ~65 s for the training step.
Ratios from one run are what to compare: absolute numbers move with load.

The last stdout line is JSON with ours_images_per_s, torch_images_per_s,
ours_train_images_per_s, torch_train_images_per_s (images/s from the median
step time), the max output difference and the settings.
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
}

_JSON = flags.DEFINE_string('json', None, 'Write the result JSON here too.')
_BACKBONE = flags.DEFINE_string('backbone', 'resnet50', 'ResNet depth.')
_BATCH = flags.DEFINE_integer('batch', 64, 'Inference batch size.')
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


def main(argv):
  del argv
  xla_flags = _set_xla_flags()
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  import torch
  from flax import nnx
  from spin_jax import convert
  from spin_jax import models

  threads = _THREADS.value or os.cpu_count()
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  mean = models.load_mean_params()
  tnet = _torch_hmr(_BACKBONE.value, mean).eval()
  with torch.no_grad():  # larger heads: the output check then sees features
    for head in (tnet.decpose, tnet.decshape, tnet.deccam):
      head.weight.mul_(100.0)
  ours = convert.hmr_from_state_dict(
      {k: v.numpy() for k, v in tnet.state_dict().items()})
  ours.eval()
  fmt = torch.channels_last if _CHANNELS_LAST.value else torch.contiguous_format
  tnet = tnet.to(memory_format=fmt)

  rng = np.random.default_rng(0)
  res, batch = _IMG_RES.value, _BATCH.value
  images = rng.normal(size=(batch, res, res, 3)).astype(np.float32)
  x_ours = jnp.asarray(images)
  x_torch = torch.from_numpy(images.transpose(0, 3, 1, 2).copy()).contiguous(
      memory_format=fmt)

  @nnx.jit
  def infer(model, x):
    out = model(x)
    return out['rotmat'], out['betas'], out['cam']

  t0 = time.perf_counter()
  ref = jax.block_until_ready(infer(ours, x_ours))
  compile_s = time.perf_counter() - t0
  with torch.inference_mode():
    tout = tnet(x_torch)
  max_diff = max(float(np.abs(np.asarray(a) - b.numpy()).max())
                 for a, b in zip(ref, tout))
  print(f'eval outputs, max |ours - torch| = {max_diff:.2e} '
        f'(compile {compile_s:.1f} s)', flush=True)
  if max_diff > 1e-3:
    raise SystemExit(f'Outputs differ by {max_diff}: not the same network.')

  t_ours, t_torch = [], []
  for _ in range(_ITERS.value):  # interleaved: same load for both
    t0 = time.perf_counter()
    jax.block_until_ready(infer(ours, x_ours))
    t_ours.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with torch.inference_mode():
      tnet(x_torch)
    t_torch.append(time.perf_counter() - t0)
    print(f'infer step: ours {t_ours[-1]:.2f} s, torch {t_torch[-1]:.2f} s',
          flush=True)
  result = dict(
      ours_images_per_s=_median_rate(t_ours, batch),
      torch_images_per_s=_median_rate(t_torch, batch),
      max_abs_output_diff=max_diff, ours_compile_s=compile_s)

  if _TRAIN_ITERS.value:
    tb = _TRAIN_BATCH.value
    xt_ours, xt_torch = x_ours[:tb], x_torch[:tb]
    targets = dict(rotmat=jnp.asarray(ref[0][:tb]) * 0.9,
                   betas=jnp.ones((tb, 10)), cam=jnp.ones((tb, 3)))
    ttargets = {k: torch.from_numpy(np.array(v)) for k, v in targets.items()}

    ours.train()
    opt = nnx.Optimizer(ours, optax.adam(5e-5), wrt=nnx.Param)

    def loss_fn(model, x):
      out = model(x)
      return sum(jnp.mean(jnp.square(out[k] - targets[k])) for k in targets)

    @nnx.jit(donate_argnums=(0, 1))
    def train_step(model, opt, x):
      loss, grads = nnx.value_and_grad(loss_fn)(model, x)
      opt.update(model, grads)
      return loss

    tnet.train()
    topt = torch.optim.Adam(tnet.parameters(), lr=5e-5)

    def torch_step():
      topt.zero_grad(set_to_none=True)
      r, b, c = tnet(xt_torch)
      loss = sum(torch.mean(torch.square(o - ttargets[k]))
                 for o, k in ((r, 'rotmat'), (b, 'betas'), (c, 'cam')))
      loss.backward()
      topt.step()
      return loss

    t0 = time.perf_counter()
    jax.block_until_ready(train_step(ours, opt, xt_ours))
    result['ours_train_compile_s'] = time.perf_counter() - t0
    torch_step()
    tt_ours, tt_torch = [], []
    for _ in range(_TRAIN_ITERS.value):
      t0 = time.perf_counter()
      jax.block_until_ready(train_step(ours, opt, xt_ours))
      tt_ours.append(time.perf_counter() - t0)
      t0 = time.perf_counter()
      torch_step()
      tt_torch.append(time.perf_counter() - t0)
      print(f'train step: ours {tt_ours[-1]:.2f} s, torch '
            f'{tt_torch[-1]:.2f} s', flush=True)
    result.update(ours_train_images_per_s=_median_rate(tt_ours, tb),
                  torch_train_images_per_s=_median_rate(tt_torch, tb))

  result.update(
      inference_ratio=result['ours_images_per_s'] / result['torch_images_per_s'],
      backbone=_BACKBONE.value, batch=batch, train_batch=_TRAIN_BATCH.value,
      img_res=res, xla_preset=_PRESET.value, xla_flags=xla_flags,
      torch_threads=threads, torch_channels_last=_CHANNELS_LAST.value,
      device=str(jax.devices()[0].device_kind), cpu_count=os.cpu_count(),
      jax=jax.__version__, torch=torch.__version__,
      load_average_1min=os.getloadavg()[0])
  if 'ours_train_images_per_s' in result:
    result['train_ratio'] = (result['ours_train_images_per_s'] /
                             result['torch_train_images_per_s'])
  from spin_jax import fileio  # pylint: disable=g-import-not-at-top
  fileio.print_json_line(result, _JSON.value)


if __name__ == '__main__':
  app.run(main)
