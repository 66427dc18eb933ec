r"""Builds spin_jax's TFDS datasets (array_record) from SPIN's datasets.

From a dataset's release, unpacked in --manual_dir (layouts: the docstrings of
spin_jax/datasets/<module>.py):
  python data_prep/build.py --dataset lsp-orig --manual_dir ~/datasets \
      --data_dir ~/tensorflow_datasets [--static_fits data/static_fits/lsp-orig_fits.npy]

From SPIN's released npz (data/dataset_extras) and the image folder:
  python data_prep/build.py --dataset lsp-orig \
      --from_spin_npz data/dataset_extras/lsp_dataset_original_train.npz \
      --image_dir ~/datasets/lsp_dataset_original \
      --static_fits data/static_fits/lsp-orig_fits.npy --data_dir ~/tensorflow_datasets

Your own photos (in-the-wild, 2D keypoints from the bundled detector, no 3D;
trains like LSP: spin_jax/datasets/images.py):
  python data_prep/build.py --dataset images --image_dir ~/photos --data_dir DIR

The embedded synthetic dataset:  --dataset synthetic --data_dir DIR
  [--synthetic_size large] [--synthetic_appearance parts --synthetic_pose_scale 0.5]
  [--synthetic_domains studio_wild].
Datasets: h36m, h36m-p1, h36m-p2, lsp, lsp-orig, lspet, mpii, coco,
mpi-inf-3dhp, mpi-inf-3dhp-test, 3dpw, 3dpw-train, images, synthetic (comma-separated
for several raw builds). Training sets also get <data_dir>/static_fits/
<name>_fits.npy, the (N, 82) table the training loop starts from (SPIN's fits
when given, else the mean parameters, as SPIN_DETAILS D3 for H36M).
"""
from __future__ import annotations

import functools
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from spin_jax.datasets import images  # pylint: disable=g-import-not-at-top,wrong-import-position

_DATASET = flags.DEFINE_string('dataset', None, 'Dataset name(s), comma-separated.',
                               required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data_dir to write to.',
                                required=True)
_MANUAL_DIR = flags.DEFINE_string('manual_dir', None,
                                  'Folder with the unpacked dataset releases.')
_FROM_SPIN_NPZ = flags.DEFINE_string(
    'from_spin_npz', None, "SPIN's dataset npz (data/dataset_extras/*.npz).")
_IMAGE_DIR = flags.DEFINE_string(
    'image_dir', None, 'With --from_spin_npz: the folder imgname is relative '
    'to; with --dataset images: the folder of photos.')
_MASK_DIR = flags.DEFINE_string(
    'mask_dir', None, 'With --from_spin_npz for lsp: the UPi-S1h folder '
    '(maskname/partname are relative to it).')
_STATIC_FITS = flags.DEFINE_string(
    'static_fits', None, "SPIN's <dataset>_fits.npy ((N, 82), npz row order).")
_STATIC_FITS_DIR = flags.DEFINE_string(
    'static_fits_dir', None, "SPIN's data/static_fits folder: each training set "
    'takes its <name>_fits.npy from it (h36m has none: mean parameters).')
_MEAN_PARAMS = flags.DEFINE_string(
    'mean_params', None, 'smpl_mean_params.npz for rows without a static fit '
    "(default: spin_jax's shipped mean parameters).")
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', None,
                                     'Keep only the first N examples.')
_NUM_WORKERS = flags.DEFINE_integer(
    'num_workers', min(8, os.cpu_count() or 1),
    'Processes decoding/cropping images (0: in-process).')
_MAX_CROP_SIDE = flags.DEFINE_integer('max_crop_side', 512,
                                      'Largest stored crop side in pixels.')
_SYNTHETIC_SIZE = flags.DEFINE_enum(
    'synthetic_size', 'quickstart', ['tiny', 'quickstart', 'small', 'large'],
    'With --dataset synthetic: its size preset.')
_BODY_MODEL = flags.DEFINE_string(
    'body_model', 'default', "With --dataset synthetic: 'default', "
    "'default-low' or a body model path.")
_SYNTHETIC_APPEARANCE = flags.DEFINE_enum(
    'synthetic_appearance', 'clothes', ['clothes', 'parts'],
    "With --dataset synthetic: 'clothes' (random skin and clothing colours) or "
    "'parts' (one colour per skinning bone: the quickstart's easy setting).")
_SYNTHETIC_POSE_SCALE = flags.DEFINE_float(
    'synthetic_pose_scale', 1.0,
    'With --dataset synthetic: pose spread around the pose prior\'s modes, in '
    '[0, 1] (1 = the prior; the quickstart uses 0.5).')
_SYNTHETIC_DOMAINS = flags.DEFINE_enum(
    'synthetic_domains', 'same', ['same', 'studio_wild'],
    "With --dataset synthetic: 'same' (one scene for every split) or "
    "'studio_wild' (a narrow 3D-labelled studio split, in-the-wild 2D-only "
    "and test splits: SPIN's data situation, spin_jax/datasets/synthetic.py).")
flags.register_validator('synthetic_pose_scale', lambda v: 0.0 <= v <= 1.0,
                         message='--synthetic_pose_scale must lie in [0, 1].')


def _build_synthetic(data_dir: str) -> None:
  try:
    from spin_jax.datasets.synthetic import build_synthetic
  except ImportError as e:
    raise app.UsageError(f'the synthetic dataset is unavailable: {e}') from e
  path = build_synthetic(data_dir=data_dir, size=_SYNTHETIC_SIZE.value,
                         body_model=_BODY_MODEL.value,
                         num_workers=_NUM_WORKERS.value,
                         appearance=_SYNTHETIC_APPEARANCE.value,
                         pose_scale=_SYNTHETIC_POSE_SCALE.value,
                         domains=_SYNTHETIC_DOMAINS.value)
  print(f'synthetic ({_SYNTHETIC_SIZE.value}): {path}')


def _fits_from_dir(spec) -> str | None:
  """<static_fits_dir>/<name>_fits.npy of a training set; SPIN ships none for
  h36m, which then starts from the mean parameters unless you made one."""
  if not _STATIC_FITS_DIR.value or spec.fits is None:
    return None
  path = os.path.join(_STATIC_FITS_DIR.value, spec.fits)
  if os.path.isfile(path):
    return path
  if spec.name == 'h36m':
    return None
  raise FileNotFoundError(f'building {spec.name}: missing file {path} (expected '
                          "SPIN's static fits for it in --static_fits_dir)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  from spin_jax import datasets
  from spin_jax.datasets import common, spin_npz
  names = [n.strip() for n in _DATASET.value.split(',') if n.strip()]
  if names == ['synthetic']:
    return _build_synthetic(_DATA_DIR.value)
  for name in names:
    if name not in datasets.SPIN_DATASETS:
      raise app.UsageError(f'--dataset: unknown {name!r}; expected one of '
                           f'{sorted(datasets.SPIN_DATASETS) + ["synthetic"]}')
  source = None
  if 'images' in names:
    if names != ['images'] or _FROM_SPIN_NPZ.value:
      raise app.UsageError('--dataset images builds alone, from --image_dir')
    if not (_IMAGE_DIR.value or _MANUAL_DIR.value):
      raise app.UsageError('--dataset images needs --image_dir (a folder of '
                           'photos)')
    folder = _IMAGE_DIR.value or _MANUAL_DIR.value
    source = functools.partial(images.read_images, folder)
  elif _FROM_SPIN_NPZ.value:
    if len(names) != 1:
      raise app.UsageError('--from_spin_npz imports one dataset at a time')
    if not _IMAGE_DIR.value:
      raise app.UsageError('--from_spin_npz needs --image_dir (the folder that '
                           "the npz's imgname paths are relative to)")
    source = functools.partial(spin_npz.read_spin_npz, _FROM_SPIN_NPZ.value,
                               _IMAGE_DIR.value, _MASK_DIR.value)
  elif not _MANUAL_DIR.value:
    raise app.UsageError('give --manual_dir (raw release) or --from_spin_npz')
  elif not os.path.isdir(_MANUAL_DIR.value):
    raise FileNotFoundError(f'--manual_dir {_MANUAL_DIR.value!r} is not a folder '
                            '(the raw release, see spin_jax/datasets/README.md).')
  if _STATIC_FITS.value and len(names) != 1:
    raise app.UsageError('--static_fits applies to one dataset at a time; '
                         'use --static_fits_dir for several')
  if _STATIC_FITS.value and _STATIC_FITS_DIR.value:
    raise app.UsageError('give --static_fits or --static_fits_dir, not both')

  from spin_jax.datasets import builders  # imports TensorFlow: after the checks
  import tensorflow_datasets as tfds
  tfds.disable_progress_bar()  # ours (tqdm, per image) is more informative
  for name in names:
    fits = _STATIC_FITS.value or _fits_from_dir(datasets.spec(name))
    try:
      builder = builders.prepare(
          name, _DATA_DIR.value, _MANUAL_DIR.value, source=source,
          static_fits=fits, mean_params=_MEAN_PARAMS.value,
          max_examples=_MAX_EXAMPLES.value, num_workers=_NUM_WORKERS.value,
          max_crop_side=_MAX_CROP_SIDE.value)
    except common.DatasetFormatError as e:
      raise ValueError(f'building {name}: {e}') from e
    spec = datasets.spec(name)
    n = builder.info.splits[spec.split].num_examples
    path = datasets.dataset_dir(name, _DATA_DIR.value)
    if builder.fits_table is None:
      print(f'{name}: already built ({n} examples in {path}); delete that '
            'folder to rebuild')
      continue
    print(f'{name}: {n} examples in {path} (split {spec.split!r})')
    if spec.split == 'train':
      print(f'  fits table: {datasets.fits_table_path(name, _DATA_DIR.value)} '
            f"({fits or 'mean parameters'})")


if __name__ == '__main__':
  cli.run(main)
