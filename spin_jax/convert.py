"""PyTorch weights (SPIN's HMR, torchvision ResNets) -> our NNX HMR. Torch-free.

A state dict here is a mapping from PyTorch key names to numpy arrays (the
experiments/convert_checkpoint.py script reads the .pt/.pth files with torch
and hands them over as numpy). Keys follow SPIN's hmr.py, which embeds the
torchvision ResNet names:

  conv1.weight, bn1.{weight,bias,running_mean,running_var}, layerS.I.convK.weight,
  layerS.I.bnK.*, layerS.I.downsample.{0.weight, 1.*}, fc1, fc2, decpose,
  decshape, deccam (.weight/.bias), buffers init_pose (144), init_shape (10),
  init_cam (3).

torchvision ImageNet files have the same backbone keys plus the classifier
fc.{weight,bias}, which is dropped. A 'module.' prefix (DataParallel) is
stripped; num_batches_tracked buffers are ignored.

Converted weights live in a directory written by `save_converted`:

  DIR/params/               orbax StandardCheckpointer, a flat dict
                            {'backbone.layer1.0.conv1.kernel': array, ...}
                            (our NNX paths joined by '.', arrays in our layout)
  DIR/mean_params.npz       SPIN's smpl_mean_params layout (pose, shape, cam);
                            only for kind 'hmr'
  DIR/conversion.json       {"kind": "hmr"|"backbone", "backbone": "resnet50",
                            "source": ..., "format_version": 1,
                            "model_config": {backbone, img_res, dropout,
                                             num_iterations, hidden_dim}}

Use `load_converted_model(DIR)` for a ready HMR (kind 'hmr'), or
`load_pretrained(model, DIR)` to copy the weights into an existing model (for
kind 'backbone' only the ResNet is replaced: the ImageNet initialisation).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx
import numpy as np
import orbax.checkpoint as ocp

from spin_jax import models

FORMAT_VERSION = 1
KINDS = ('hmr', 'backbone')

_BN_NAMES = {'weight': 'scale', 'bias': 'bias', 'running_mean': 'mean',
             'running_var': 'var'}
_HEAD_LINEARS = ('fc1', 'fc2', 'decpose', 'decshape', 'deccam')
_MEAN_BUFFERS = {'init_pose': 'init_pose6d', 'init_shape': 'init_betas',
                 'init_cam': 'init_cam'}
_IGNORED = re.compile(r'(.*\.)?num_batches_tracked$')


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
  out = {}
  for key, value in state_dict.items():
    if key.startswith('module.'):
      key = key[len('module.'):]
    out[key] = np.asarray(value)
  return out


def _backbone_leaf(key: str) -> tuple[tuple, str] | None:
  """torch backbone key -> (our path, 'conv'|'bn'), or None if not backbone."""
  m = re.fullmatch(r'(conv1|bn1)\.(\w+)', key)
  if m:
    kind = 'conv' if m[1] == 'conv1' else 'bn'
    return (('backbone', m[1], 'kernel' if kind == 'conv' else
             _BN_NAMES.get(m[2], m[2])), kind)
  m = re.fullmatch(r'layer([1-4])\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(\w+)',
                   key)
  if not m:
    return None
  layer, block, module, leaf = f'layer{m[1]}', int(m[2]), m[3], m[4]
  if module == 'downsample.0':
    module = 'downsample_conv'
  elif module == 'downsample.1':
    module = 'downsample_bn'
  kind = 'conv' if 'conv' in module else 'bn'
  name = 'kernel' if kind == 'conv' else _BN_NAMES.get(leaf, leaf)
  return ('backbone', layer, block, module, name), kind


def torch_to_flat(state_dict: Mapping[str, Any], *, backbone_only: bool = False
                  ) -> dict[tuple, np.ndarray]:
  """Maps a PyTorch state dict to {our NNX path: array in our layout}.

  Raises ValueError naming every key it does not know.
  """
  sd = _strip_prefix(state_dict)
  flat, unknown = {}, []
  for key, value in sd.items():
    if _IGNORED.fullmatch(key):
      continue
    leaf = _backbone_leaf(key)
    if leaf is not None:
      path, kind = leaf
      if kind == 'conv':
        if key.endswith('.bias') or value.ndim != 4:
          unknown.append(key)
          continue
        value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      elif path[-1] not in _BN_NAMES.values():
        unknown.append(key)
        continue
      flat[path] = value
      continue
    head, _, leaf_name = key.partition('.')
    if backbone_only:
      if head == 'fc' and leaf_name in ('weight', 'bias'):
        continue  # torchvision's ImageNet classifier
      unknown.append(key)
    elif head in _HEAD_LINEARS and leaf_name in ('weight', 'bias'):
      flat[(head, 'kernel' if leaf_name == 'weight' else 'bias')] = (
          value.T if leaf_name == 'weight' else value)
    elif key in _MEAN_BUFFERS:
      flat[(_MEAN_BUFFERS[key],)] = value.reshape(-1)
    else:
      unknown.append(key)
  if unknown:
    raise ValueError(f'Unexpected keys in the state dict (expected '
                     f'{"a torchvision ResNet" if backbone_only else "SPIN HMR"}'
                     f' names): {sorted(unknown)[:20]}'
                     f'{" ..." if len(unknown) > 20 else ""}')
  return {p: np.asarray(v, np.float32) for p, v in flat.items()}


def infer_backbone(state_dict: Mapping[str, Any]) -> str:
  """'resnet18'|'resnet34'|'resnet50'|... from the block counts and types."""
  sd = _strip_prefix(state_dict)
  depths = []
  for layer in range(1, 5):
    blocks = {int(m[1]) for k in sd
              if (m := re.match(rf'layer{layer}\.(\d+)\.', k))}
    depths.append(len(blocks))
  bottleneck = any(re.match(r'layer1\.0\.conv3\.', k) for k in sd)
  for name, layout in models.RESNET_LAYOUTS.items():
    if layout == (tuple(depths), bottleneck):
      return name
  raise ValueError(f'State dict is not a known ResNet: blocks per layer '
                   f'{depths}, bottleneck={bottleneck}; known: '
                   f'{sorted(models.RESNET_LAYOUTS)}.')


# What a checkpoint holds: weights, BN statistics, mean parameters (not the
# dropout RNG state).
WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat, models.MeanParam)


def _model_flat(model: nnx.Module) -> dict[tuple, nnx.Variable]:
  return dict(nnx.to_flat_state(nnx.state(model, WEIGHTS)))


def assign_flat(model: models.HMR, flat: Mapping[tuple, np.ndarray], *,
                backbone_only: bool = False) -> None:
  """Writes {path: array} into the model; every target leaf must be covered."""
  targets = _model_flat(model)
  if backbone_only:
    targets = {p: v for p, v in targets.items() if p[0] == 'backbone'}
  missing = sorted('.'.join(map(str, p)) for p in targets if p not in flat)
  extra = sorted('.'.join(map(str, p)) for p in flat if p not in targets)
  if missing or extra:
    raise ValueError(
        f'Weights do not match the {model.config.backbone} model: missing '
        f'{missing[:10]}{" ..." if len(missing) > 10 else ""}, unexpected '
        f'{extra[:10]}{" ..." if len(extra) > 10 else ""}.')
  for path, var in targets.items():
    value = np.asarray(flat[path])
    expected = var.get_value()
    if value.shape != expected.shape:
      raise ValueError(f'{".".join(map(str, path))}: shape {value.shape}, '
                       f'model expects {expected.shape}.')
  # Set through the live module (nnx.state shares the Variable objects).
  for path, var in targets.items():
    var.set_value(jnp.asarray(flat[path], var.get_value().dtype))


def empty_hmr(config: Any = None, *, seed: int = 0) -> models.HMR:
  """An HMR whose weights are shapes only, to be filled by assign_flat.

  Skips the random initialisation (seconds of compilation on CPU). Only the
  dropout RNG streams are real.
  """
  config = models.ModelConfig.create(config)
  zeros = dict(pose6d=np.zeros(models.NUM_POSE6D, np.float32),
               betas=np.zeros(10, np.float32), cam=np.zeros(3, np.float32))
  model = nnx.eval_shape(
      lambda: models.HMR(config, zeros, rngs=nnx.Rngs(seed)))
  rngs = nnx.Rngs(seed)
  model.drop1 = nnx.Dropout(config.dropout, rngs=rngs)
  model.drop2 = nnx.Dropout(config.dropout, rngs=rngs)
  return model


def hmr_from_state_dict(state_dict: Mapping[str, Any], config: Any = None,
                        *, seed: int = 0) -> models.HMR:
  """An HMR holding SPIN's weights and mean parameters.

  backbone and hidden_dim come from the state dict; other settings from
  `config`. Call model.eval() for inference.
  """
  flat = torch_to_flat(state_dict)
  backbone = infer_backbone(state_dict)
  hidden = flat[('fc2', 'bias')].shape[0] if ('fc2', 'bias') in flat else 1024
  config = dataclasses.replace(models.ModelConfig.create(config),
                               backbone=backbone, hidden_dim=hidden)
  model = empty_hmr(config, seed=seed)
  assign_flat(model, flat)
  return model


def load_backbone_state_dict(model: models.HMR,
                             state_dict: Mapping[str, Any]) -> None:
  """Copies torchvision ImageNet weights into model.backbone."""
  backbone = infer_backbone(state_dict)
  if backbone != model.config.backbone:
    raise ValueError(f'ImageNet weights are a {backbone}, the model is a '
                     f'{model.config.backbone} (config backbone).')
  assign_flat(model, torch_to_flat(state_dict, backbone_only=True),
              backbone_only=True)


# ---------------------------------------------------------------------------
# On-disk format.


@dataclasses.dataclass
class Converted:
  kind: str  # 'hmr' | 'backbone'
  backbone: str
  source: str
  flat: dict[tuple, np.ndarray]
  mean_params: dict[str, np.ndarray] | None
  config: models.ModelConfig  # the converted model's settings


def _path_key(path: tuple) -> str:
  return '.'.join(map(str, path))


def _key_path(key: str) -> tuple:
  return tuple(int(p) if p.isdigit() else p for p in key.split('.'))


def save_converted(directory: str, model: models.HMR, *, kind: str = 'hmr',
                   source: str = '', overwrite: bool = False) -> str:
  """Writes the model's weights (kind 'hmr') or its backbone ('backbone').

  The directory appears complete or not at all (written aside, then renamed).
  """
  if kind not in KINDS:
    raise ValueError(f'kind={kind!r}: expected one of {KINDS}.')
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(directory) and not overwrite:
    raise FileExistsError(f'{directory} exists (use overwrite / --overwrite).')
  flat = {_path_key(p): np.asarray(v[...]) for p, v in
          _model_flat(model).items()
          if kind == 'hmr' or p[0] == 'backbone'}
  tmp = f'{directory}.tmp-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  try:
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(tmp, 'params'), flat)
    ckptr.wait_until_finished()
    if kind == 'hmr':
      np.savez(os.path.join(tmp, 'mean_params.npz'),
               pose=flat['init_pose6d'], shape=flat['init_betas'],
               cam=flat['init_cam'])
    meta = dict(kind=kind, backbone=model.config.backbone, source=source,
                format_version=FORMAT_VERSION,
                model_config=dataclasses.asdict(model.config))
    with open(os.path.join(tmp, 'conversion.json'), 'w') as f:
      json.dump(meta, f, indent=2)
    if os.path.exists(directory):
      old = f'{directory}.old-{os.getpid()}'
      os.replace(directory, old)
      os.replace(tmp, directory)
      shutil.rmtree(old)
    else:
      os.replace(tmp, directory)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return directory


def load_converted(directory: str) -> Converted:
  """Reads a directory written by save_converted (numpy arrays)."""
  directory = os.path.abspath(os.fspath(directory))
  meta_path = os.path.join(directory, 'conversion.json')
  if not os.path.exists(meta_path):
    raise FileNotFoundError(
        f'{meta_path} not found: {directory} is not a directory written by '
        'experiments/convert_checkpoint.py.')
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get('format_version') != FORMAT_VERSION or meta.get('kind') not in KINDS:
    raise ValueError(f'{meta_path}: unsupported kind/format_version '
                     f'{meta.get("kind")!r}/{meta.get("format_version")!r}.')
  raw = ocp.StandardCheckpointer().restore(os.path.join(directory, 'params'))
  flat = {_key_path(k): np.asarray(v) for k, v in raw.items()}
  mean = None
  if meta['kind'] == 'hmr':
    mean = models.load_mean_params(os.path.join(directory, 'mean_params.npz'))
  config = meta.get('model_config', {'backbone': meta['backbone']})
  return Converted(kind=meta['kind'], backbone=meta['backbone'],
                   source=meta.get('source', ''), flat=flat, mean_params=mean,
                   config=models.ModelConfig.create(config))


def load_pretrained(model: models.HMR, directory: str) -> Converted:
  """Copies converted weights into `model` (all of it, or just the backbone)."""
  conv = load_converted(directory)
  if conv.backbone != model.config.backbone:
    raise ValueError(f'{directory} holds a {conv.backbone}; the model is a '
                     f'{model.config.backbone} (config backbone).')
  assign_flat(model, conv.flat, backbone_only=conv.kind == 'backbone')
  return conv


def load_converted_model(directory: str, config: Any = None, *,
                         seed: int = 0) -> models.HMR:
  """An HMR with the converted SPIN weights and mean parameters (kind 'hmr').

  The model settings are the saved ones (conversion.json); `config` may
  override those that do not change the weights' shapes (img_res, dropout,
  num_iterations).
  """
  conv = load_converted(directory)
  if conv.kind != 'hmr':
    raise ValueError(f'{directory} holds only a backbone ({conv.kind}); use '
                     'load_pretrained(model, directory).')
  config = conv.config if config is None else models.ModelConfig.create(config)
  for field in ('backbone', 'hidden_dim'):
    if getattr(config, field) != getattr(conv.config, field):
      raise ValueError(f'{directory} holds {field}={getattr(conv.config, field)!r}'
                       f', the config asks for {getattr(config, field)!r}.')
  model = empty_hmr(config, seed=seed)
  assign_flat(model, conv.flat)
  return model
