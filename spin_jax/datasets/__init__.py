"""spin_jax datasets: SPIN's datasets as TFDS (array_record) datasets.

Registry of SPIN's dataset splits (names as in SPIN: 'h36m', 'lsp-orig', ...).
Every entry is one TFDS dataset with one split, built from the raw release
(`reader`) or imported from SPIN's npz (`spin_npz`). This module is light
(no TensorFlow); builders live in spin_jax.datasets.builders.

    from spin_jax import datasets
    source = datasets.data_source('lsp-orig', data_dir)   # random access
    example = source[0]                                     # dict of numpy
"""
from __future__ import annotations

import dataclasses
import importlib
import os

from spin_jax.datasets import openpose
from spin_jax.datasets.schema import SCHEMA_VERSION


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  name: str            # SPIN's name
  builder: str         # TFDS dataset name
  split: str           # the one TFDS split
  reader: str          # 'module:function[:arg]' in spin_jax.datasets
  spin_npz: str        # SPIN's file in data/dataset_extras/
  segmentation: bool = False
  fits: str | None = None  # SPIN's static fits file in data/static_fits/


_SPECS = (
    DatasetSpec('h36m', 'spin_h36m', 'train', 'h36m:read_h36m:train',
                'h36m_train.npz', fits='h36m_fits.npy'),
    DatasetSpec('h36m-p1', 'spin_h36m_p1', 'test', 'h36m:read_h36m:p1',
                'h36m_valid_protocol1.npz'),
    DatasetSpec('h36m-p2', 'spin_h36m_p2', 'test', 'h36m:read_h36m:p2',
                'h36m_valid_protocol2.npz'),
    DatasetSpec('lsp', 'spin_lsp', 'test', 'lsp:read_lsp_test',
                'lsp_dataset_test.npz', segmentation=True),
    DatasetSpec('lsp-orig', 'spin_lsp_orig', 'train', 'lsp:read_lsp_orig_train',
                'lsp_dataset_original_train.npz', fits='lsp-orig_fits.npy'),
    DatasetSpec('lspet', 'spin_lspet', 'train', 'lsp:read_lspet_train',
                'hr-lspet_train.npz', fits='lspet_fits.npy'),
    DatasetSpec('mpii', 'spin_mpii', 'train', 'mpii:read_mpii_train',
                'mpii_train.npz', fits='mpii_fits.npy'),
    DatasetSpec('coco', 'spin_coco', 'train', 'coco:read_coco_train',
                'coco_2014_train.npz', fits='coco_fits.npy'),
    DatasetSpec('mpi-inf-3dhp', 'spin_mpi_inf_3dhp', 'train',
                'mpi_inf_3dhp:read_train', 'mpi_inf_3dhp_train.npz',
                fits='mpi-inf-3dhp_fits.npy'),
    DatasetSpec('mpi-inf-3dhp-test', 'spin_mpi_inf_3dhp_test', 'test',
                'mpi_inf_3dhp:read_test', 'mpi_inf_3dhp_test.npz'),
    DatasetSpec('3dpw', 'spin_3dpw', 'test', 'pw3d:read_3dpw:test',
                '3dpw_test.npz'),
    DatasetSpec('3dpw-train', 'spin_3dpw_train', 'train',
                'pw3d:read_3dpw:train', '3dpw_train.npz'),
    # Not SPIN's: your own photos, keypoints from the bundled detector
    # (spin_jax/datasets/images.py; manual_dir = the folder of images).
    DatasetSpec('images', 'spin_images', 'train', 'images:read_images', ''),
)
SPIN_DATASETS = {s.name: s for s in _SPECS}
# SPIN's training set names, in the order of constants.TRAIN_DATASETS.
TRAIN_DATASETS = ('h36m', 'lsp-orig', 'mpii', 'lspet', 'coco', 'mpi-inf-3dhp')
EVAL_DATASETS = ('h36m-p1', 'h36m-p2', 'mpi-inf-3dhp-test', '3dpw', 'lsp')


def spec(name: str) -> DatasetSpec:
  if name not in SPIN_DATASETS:
    raise ValueError(f'unknown dataset {name!r}; expected one of '
                     f'{sorted(SPIN_DATASETS)}')
  return SPIN_DATASETS[name]


def read_raw(name: str, manual_dir: str) -> list[dict]:
  """Records (original frame, SPIN row order) of dataset `name` from its release.

  OpenPose detections are attached when manual_dir/openpose/ holds SPIN's json
  folders (see openpose.py); otherwise openpose stays zeros.
  """
  module, fn, *args = spec(name).reader.split(':')
  mod = importlib.import_module(f'spin_jax.datasets.{module}')
  records = getattr(mod, fn)(manual_dir, *args)
  op_dir = os.path.join(manual_dir, 'openpose')
  if name in openpose.OPENPOSE_FILES and os.path.isdir(
      os.path.join(op_dir, openpose.OPENPOSE_FILES[name][0])):
    openpose.attach(records, op_dir, name)
  return records


def dataset_dir(name: str, data_dir: str) -> str:
  """Where the built TFDS dataset lives: data_dir/<builder>/<version>."""
  return os.path.join(data_dir, spec(name).builder, SCHEMA_VERSION)


def fits_table_path(name: str, data_dir: str) -> str:
  """The (N, 82) static-fits table written next to the datasets by build.py."""
  return os.path.join(data_dir, 'static_fits', f'{name}_fits.npy')


def data_source(name: str, data_dir: str):
  """Random-access source (len, __getitem__ -> dict of numpy) of a built dataset."""
  # TensorFlow (slow to import, the [data] extra) only where a dataset is read.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  path = dataset_dir(name, data_dir)
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'dataset {name!r} is not built: no {path} (run python data_prep/build.py '
        f'--dataset {name} --manual_dir ... --data_dir {data_dir})')
  builder = tfds.builder_from_directory(path)
  return builder.as_data_source(split=spec(name).split)
