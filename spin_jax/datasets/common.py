"""Shared pieces of the raw-format readers: records, boxes, file checks, encoding.

A reader turns one dataset's files into a list of *records*, one per example,
in SPIN's npz row order. A record is a dict with, in ORIGINAL image pixels:
    imgname (str, relative to the dataset root, as in SPIN's npz),
    image_path (str, absolute), center (2,), scale,
and optionally part (24,3), openpose (25,3), S (24,4), pose (72,), shape (10,),
has_smpl, gender, maskname, partname, mask_path, part_path.
`make_example` turns a record into the stored example of schema.py. It needs
numpy and OpenCV only, so it can run in worker processes without TensorFlow.
"""
from __future__ import annotations

import os

import cv2
import h5py
import numpy as np
from PIL import Image
import scipy.io

from spin_jax.datasets import schema

BBOX_SCALE_FACTOR = 1.2  # tight joint box x 1.2 (LSP, LSPET, 3DPW, 3DHP, COCO)


class DatasetFormatError(ValueError):
  """A dataset file is missing or does not hold what its format promises."""


def require_file(path: str, what: str) -> str:
  if not os.path.isfile(path):
    raise DatasetFormatError(f'missing file {path}: expected {what}')
  return path


def require_dir(path: str, what: str) -> str:
  if not os.path.isdir(path):
    raise DatasetFormatError(f'missing directory {path}: expected {what}')
  return path


def check_shape(arr, shape, path: str, key: str) -> np.ndarray:
  """Checks arr's shape against `shape` (None = any) naming file and key."""
  arr = np.asarray(arr)
  ok = arr.ndim == len(shape) and all(
      s is None or s == a for s, a in zip(shape, arr.shape))
  if not ok:
    want = '(' + ', '.join('N' if s is None else str(s) for s in shape) + ')'
    raise DatasetFormatError(
        f'{path}: key {key!r} has shape {arr.shape}, expected {want}')
  return arr


def load_mat(path: str, what: str) -> dict:
  """A MATLAB v5 .mat file (scipy); v7.3 files are HDF5 and read with h5py."""
  require_file(path, what)
  try:
    return scipy.io.loadmat(path)
  except Exception as e:  # scipy raises several types for bad files
    raise DatasetFormatError(f'cannot read {path} as a MATLAB v5 .mat file '
                             f'({what}): {e}') from e


def open_h5(path: str, keys, what: str = 'HDF5', written_by: str = ''):
  """An open h5py.File (use it in `with`) that holds every one of `keys`.

  Errors name the file and the first missing key; `written_by` is appended to
  the expected-keys list (e.g. 'as written by h36m-fetch').
  """
  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise DatasetFormatError(f'cannot read {path} as {what}: {e}') from e
  missing = [k for k in keys if k not in f]
  if missing:
    f.close()
    expected = ', '.join(keys) + (f' {written_by}' if written_by else '')
    raise DatasetFormatError(f'{path}: no key {missing[0]!r} (expected {expected})')
  return f


def tight_box(xy: np.ndarray, factor: float = BBOX_SCALE_FACTOR):
  """SPIN's box: centre of the tight box of points (N,2), scale = factor*side/200."""
  xy = np.asarray(xy, np.float64)
  lo, hi = xy.min(0), xy.max(0)
  center = (lo + hi) / 2
  scale = factor * float(np.max(hi - lo)) / schema.BOX_SCALE_UNIT
  return center.astype(np.float32), np.float32(scale)


def read_image(path: str) -> np.ndarray:
  """RGB uint8 (H, W, 3); an error names the file."""
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  if img is None:
    if not os.path.isfile(path):
      raise DatasetFormatError(f'missing image {path}')
    raise DatasetFormatError(f'cannot decode image {path} (expected JPEG/PNG)')
  return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


_REDUCED_FLAGS = {8: cv2.IMREAD_REDUCED_COLOR_8, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  2: cv2.IMREAD_REDUCED_COLOR_2}


def read_image_reduced(path: str, zoom: float):
  """(RGB image, original (h, w), reduction): a JPEG that the crop shrinks by
  2x or more is decoded at 1/2, 1/4 or 1/8 (libjpeg's DCT scaling, several
  times faster for 2048 px 3DHP frames); everything else at full size."""
  r = next((k for k in (8, 4, 2) if k * zoom <= 1), 1)
  if r > 1 and os.path.splitext(path)[1].lower() in ('.jpg', '.jpeg'):
    try:
      with Image.open(path) as im:
        w, h = im.size
    except Exception:  # pylint: disable=broad-except
      w = h = None
    img = cv2.imread(path, _REDUCED_FLAGS[r])
    if img is not None and w and img.shape[:2] == (-(-h // r), -(-w // r)):
      return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (h, w), r
  img = read_image(path)
  return img, img.shape[:2], 1


def read_label_image(path: str) -> np.ndarray:
  """Single-channel uint8 label image (H, W, 1), e.g. UP-3D masks."""
  img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
  if img is None:
    raise DatasetFormatError(f'missing or unreadable label image {path} '
                             '(expected a single-channel PNG)')
  if img.ndim == 3:  # saved as RGB: labels are in every channel
    img = img[..., 0]
  if img.dtype != np.uint8:
    raise DatasetFormatError(f'{path}: expected uint8 labels, got {img.dtype}')
  return img[..., None]


def _to_crop_keypoints(kp: np.ndarray, geom: schema.CropGeometry) -> np.ndarray:
  out = np.zeros_like(kp, dtype=np.float32)
  seen = kp[:, 2] > 0
  out[seen, :2] = geom.to_crop(kp[seen, :2])
  out[seen, 2] = kp[seen, 2]
  return out


def _encode(img: np.ndarray, ext: str) -> bytes:
  if ext == '.jpg':
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode('.jpg', bgr,
                           [cv2.IMWRITE_JPEG_QUALITY, schema.JPEG_QUALITY])
  else:
    ok, buf = cv2.imencode('.png', img)
  if not ok:
    raise RuntimeError(f'OpenCV could not encode an image as {ext}')
  return buf.tobytes()


def make_example(record: dict, index: int, fit=None, has_fit: bool = False,
                 max_side: int = schema.MAX_CROP_SIDE) -> dict:
  """A record (original frame) -> the stored example (crop frame), images encoded.

  Images come back as bytes (JPEG crop, PNG masks); pass them to TFDS wrapped
  in io.BytesIO so they are stored without re-encoding.
  """
  ex = schema.default_example()
  for k in ('part', 'openpose', 'S', 'pose', 'shape'):
    if record.get(k) is not None:
      ex[k] = np.asarray(record[k], np.float32).reshape(ex[k].shape)
  if record.get('pose') is not None:  # SPIN: a pose without has_smpl is GT
    ex['has_smpl'] = np.float32(record.get('has_smpl', 1.0))
  ex['has_pose_3d'] = np.float32(record.get('has_pose_3d',
                                            record.get('S') is not None))
  ex['gender'] = np.int32(schema.gender_code(record.get('gender')))
  ex['maskname'] = record.get('maskname') or ''
  ex['partname'] = record.get('partname') or ''
  if fit is not None:
    ex['fit'] = np.asarray(fit, np.float32).reshape(schema.NUM_FIT)
    ex['has_fit'] = np.float32(has_fit)

  center = np.asarray(record['center'], np.float64).reshape(2)
  scale = float(record['scale'])
  try:
    geom = schema.crop_geometry(center, scale, max_side=max_side)
  except ValueError as e:
    raise DatasetFormatError(f'{record["imgname"]}: {e}') from e
  image, size, reduction = read_image_reduced(record['image_path'], geom.zoom)
  ex['image'] = _encode(schema.warp_to_crop(image, geom, reduction), '.jpg')
  ex['imgname'] = record['imgname']
  ex['index'] = np.int64(index)
  ex['center'] = geom.to_crop(center).astype(np.float32)
  ex['scale'] = np.float32(scale * geom.zoom)
  for k in schema.CROP_FRAME_KEYPOINTS:
    ex[k] = _to_crop_keypoints(ex[k], geom)
  ex['orig_center'] = center.astype(np.float32)
  ex['orig_scale'] = np.float32(scale)
  ex['orig_size'] = np.array(size, np.int32)
  ex['crop_origin'] = geom.origin.astype(np.float32)
  ex['crop_zoom'] = np.float32(geom.zoom)
  if record.get('mask_path'):
    ex['mask'] = _encode(read_label_image(record['mask_path']), '.png')
  if record.get('part_path'):
    ex['part_segmentation'] = _encode(read_label_image(record['part_path']),
                                      '.png')
  return ex


def make_example_job(args: tuple) -> dict:
  """make_example(*args) for process pools (lives here: no TensorFlow import)."""
  return make_example(*args)


def run_batch(fn, batch: list) -> list:
  """[fn(job) for job in batch], for process pools (no TensorFlow import here)."""
  return [fn(job) for job in batch]
