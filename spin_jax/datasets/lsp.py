"""LSP (test, with UP-3D masks), LSP-original (train) and HR-LSPET (train).

manual_dir layout (the archives unpacked as released):
    lsp_dataset/joints.mat            'joints' (3, 14, 2000): x, y, visibility
    lsp_dataset/images/im%04d.jpg     low-resolution LSP (test: 1001-2000)
    upi-s1h/data/lsp/im%04d_segmentation.png, im%04d_part_segmentation.png
    lsp_dataset_original/joints.mat   'joints' (3, 14, 2000)
    lsp_dataset_original/images/im%04d.jpg  (train: 1-1000)
    hr-lspet/joints.mat               'joints' (14, 3, 10000)
    hr-lspet/im%05d.png
The 14 joints go to J24 slots 0..13 with conf 1; the visibility column is
ignored (as SPIN). Box: tight box of the 14 joints x 1.2.
"""
from __future__ import annotations

import os

import numpy as np

from spin_jax.datasets import common


def _joints(path: str, layout: str, n: int) -> np.ndarray:
  """joints.mat -> (n, 14, 2) x, y."""
  mat = common.load_mat(path, f"'joints' {layout}")
  if 'joints' not in mat:
    raise common.DatasetFormatError(f"{path}: no key 'joints' (expected "
                                    f'{layout})')
  j = np.asarray(mat['joints'], np.float64)
  if layout == '(3, 14, N)':
    j = common.check_shape(j, (3, 14, n), path, 'joints').transpose(2, 1, 0)
  else:  # (14, 3, N)
    j = common.check_shape(j, (14, 3, n), path, 'joints').transpose(2, 0, 1)
  return j[..., :2]


def _record(root: str, imgname: str, xy: np.ndarray) -> dict:
  part = np.zeros((24, 3), np.float32)
  part[:14, :2] = xy
  part[:14, 2] = 1
  center, scale = common.tight_box(xy)
  return dict(imgname=imgname, image_path=os.path.join(root, imgname),
              center=center, scale=scale, part=part)


def read_lsp_test(manual_dir: str) -> list[dict]:
  """LSP test: images 1001-2000 of lsp_dataset, with UP-3D segmentations."""
  root = common.require_dir(os.path.join(manual_dir, 'lsp_dataset'),
                            'the LSP release (joints.mat, images/)')
  upi = common.require_dir(os.path.join(manual_dir, 'upi-s1h'),
                           'the UPi-S1h release (data/lsp/*_segmentation.png)')
  joints = _joints(os.path.join(root, 'joints.mat'), '(3, 14, N)', 2000)
  records = []
  for i in range(1000, 2000):
    r = _record(root, f'images/im{i + 1:04d}.jpg', joints[i])
    r['maskname'] = f'data/lsp/im{i + 1:04d}_segmentation.png'
    r['partname'] = f'data/lsp/im{i + 1:04d}_part_segmentation.png'
    r['mask_path'] = os.path.join(upi, r['maskname'])
    r['part_path'] = os.path.join(upi, r['partname'])
    records.append(r)
  return records


def read_lsp_orig_train(manual_dir: str) -> list[dict]:
  """LSP original (high resolution): training images 1-1000."""
  root = common.require_dir(os.path.join(manual_dir, 'lsp_dataset_original'),
                            'the LSP original release (joints.mat, images/)')
  joints = _joints(os.path.join(root, 'joints.mat'), '(3, 14, N)', 2000)
  return [_record(root, f'images/im{i + 1:04d}.jpg', joints[i])
          for i in range(1000)]


def read_lspet_train(manual_dir: str) -> list[dict]:
  """HR-LSPET: all 10,000 PNG images in order."""
  root = common.require_dir(os.path.join(manual_dir, 'hr-lspet'),
                            'the HR-LSPET release (joints.mat, im%05d.png)')
  joints = _joints(os.path.join(root, 'joints.mat'), '(14, 3, N)', 10000)
  return [_record(root, f'im{i + 1:05d}.png', joints[i]) for i in range(10000)]
