r"""Converts PyTorch weights into spin_jax parameters (an orbax directory).

SPIN's released regressor (its HMR weights and mean parameters):

  python experiments/convert_checkpoint.py \
      --spin_checkpoint data/model_checkpoint.pt --out weights/spin_hmr

torchvision ImageNet weights, to initialise the backbone before training:

  python experiments/convert_checkpoint.py \
      --torchvision_resnet resnet50-0676ba61.pth --out weights/resnet50_imagenet

The output is read by spin_jax.convert.load_converted_model(DIR) (a ready
HMR) or spin_jax.convert.load_pretrained(model, DIR); its layout is described
in spin_jax/convert.py. torch is needed only here, to read the files.
"""
from __future__ import annotations

import os

from absl import app
from absl import flags

from spin_jax import cli

FLAGS = flags.FLAGS


def define_flags():
  # Defined only when run as a script, so tests can import convert_files.
  flags.DEFINE_string('spin_checkpoint', None,
                      "SPIN's model_checkpoint.pt (state dict under 'model').")
  flags.DEFINE_string(
      'torchvision_resnet', None,
      'torchvision ResNet state dict (.pth), e.g. resnet50-0676ba61.pth.')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_bool('overwrite', False, 'Replace --out if it exists.')
  flags.DEFINE_bool(
      'allow_pickle', False,
      'Read files that need full unpickling (torch.load weights_only=False). '
      'Only for files you trust.')


def read_state_dict(path: str, flag: str, *, allow_pickle: bool = False,
                    model_key: str | None = None) -> dict:
  """torch file -> {key: numpy array}; model_key picks a sub-dict if present."""
  import torch
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--{flag}: {path} does not exist.')
  try:
    data = torch.load(path, map_location='cpu', weights_only=not allow_pickle)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'--{flag}: could not read {path} with torch.load '
                     f'({type(e).__name__}: {e}). If you trust the file, try '
                     '--allow_pickle.') from e
  if not isinstance(data, dict):
    raise ValueError(f'--{flag}: {path} holds a {type(data).__name__}, '
                     'expected a dict (state dict).')
  if model_key is not None and model_key in data:
    data = data[model_key]
  elif model_key is not None and 'conv1.weight' not in data and (
      'module.conv1.weight' not in data):
    raise KeyError(f'--{flag}: {path} has no {model_key!r} entry (keys: '
                   f'{sorted(data)[:10]}).')
  return {k: v.detach().cpu().float().numpy() if v.is_floating_point()
          else v.detach().cpu().numpy()
          for k, v in data.items() if isinstance(v, torch.Tensor)}


def convert_files(*, out: str, spin_checkpoint: str | None = None,
                  torchvision_resnet: str | None = None,
                  overwrite: bool = False, allow_pickle: bool = False) -> str:
  """Runs one conversion; returns a one-line summary."""
  from spin_jax import convert
  from spin_jax import models
  if (spin_checkpoint is None) == (torchvision_resnet is None):
    raise ValueError('Pass exactly one of --spin_checkpoint and '
                     '--torchvision_resnet.')
  if spin_checkpoint is not None:
    sd = read_state_dict(spin_checkpoint, 'spin_checkpoint',
                         allow_pickle=allow_pickle, model_key='model')
    model = convert.hmr_from_state_dict(sd)
    kind, source = 'hmr', os.path.abspath(spin_checkpoint)
  else:
    sd = read_state_dict(torchvision_resnet, 'torchvision_resnet',
                         allow_pickle=allow_pickle)
    backbone = convert.infer_backbone(sd)
    model = convert.empty_hmr(models.ModelConfig(backbone=backbone))
    convert.load_backbone_state_dict(model, sd)
    kind, source = 'backbone', os.path.abspath(torchvision_resnet)
  path = convert.save_converted(out, model, kind=kind, source=source,
                                overwrite=overwrite)
  return (f'converted {source} ({model.config.backbone}, {kind}, '
          f'{len(sd)} tensors) -> {path}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.out:
    raise app.UsageError('--out is required.')
  if (FLAGS.spin_checkpoint is None) == (FLAGS.torchvision_resnet is None):
    raise app.UsageError('Pass exactly one of --spin_checkpoint and '
                         '--torchvision_resnet.')
  print(convert_files(out=FLAGS.out, spin_checkpoint=FLAGS.spin_checkpoint,
                      torchvision_resnet=FLAGS.torchvision_resnet,
                      overwrite=FLAGS.overwrite,
                      allow_pickle=FLAGS.allow_pickle))


if __name__ == '__main__':
  define_flags()
  cli.run(main)
