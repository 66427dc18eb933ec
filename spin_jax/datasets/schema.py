"""The per-example feature schema shared by every spin_jax dataset.

One example = one person in one image, in the fields of SPIN's dataset npz files
(SPIN_FACTS "Dataset npz schema", defaults of SPIN_DETAILS D2), plus what a
random-access, exactly-augmentable store needs.

Storage policy (why the image is not the full frame)
-----------------------------------------------------
Full frames are large (H36M 1000x1000, COCO 640x480 with several people), and
SPIN only ever looks at a square box of side 200*scale around `center`, scaled
by at most 1.25 and rotated by at most 60 degrees. We therefore store a square
*margin crop*: side 200*scale*CROP_MARGIN in original pixels with
CROP_MARGIN = 1.25*sqrt(2), which contains every rotated, scaled box the
augmentation can ask for, so augmenting the stored crop is pixel-for-pixel the
same as augmenting the full frame (outside the frame the crop is black, which is
SPIN's padding too). The crop is downsampled to at most MAX_CROP_SIDE pixels
(never upsampled), with a Gaussian anti-aliasing blur when shrinking.

Coordinates. Pixel centres sit at integer coordinates (OpenCV's warpAffine
convention). The stored crop relates to the original image by
    x_crop = crop_zoom * (x_orig - crop_origin)            (both axes)
and `center`, `scale`, `part`, `openpose` are expressed in the stored crop's
pixel frame (scale in crop pixels / 200). The original frame's box and size
are kept (`orig_center`, `orig_scale`, `orig_size`) for evaluation that needs
the uncropped geometry (LSP segmentation).

Fields (shape, dtype):
    image            (H, W, 3) uint8, JPEG   margin crop, H == W <= MAX_CROP_SIDE
    imgname          str                     image path relative to the dataset
                                             root, exactly as in SPIN's npz
    index            () int64                row in SPIN's npz order, = row of
                                             <dataset>_fits.npy
    center           (2,) f32                box centre (x, y), crop pixels
    scale            () f32                  box side / 200, crop pixels
    part             (24, 3) f32             x, y crop pixels, conf 0/1
    openpose         (25, 3) f32             x, y crop pixels, OpenPose score
    S                (24, 4) f32             x, y, z metres root-centred, conf
    pose             (72,) f32               SMPL axis-angle (0 when absent)
    shape            (10,) f32               SMPL betas (0 when absent)
    has_smpl         () f32                  1 where pose/shape are GT
    has_pose_3d      () f32                  1 where S is GT
    gender           () int32                0 male, 1 female, -1 unknown
    fit              (82,) f32               static fit: 72 pose + 10 betas
    has_fit          () f32                  1 when `fit` came from a fits file
    maskname         str                     '' when absent (LSP test only)
    partname         str                     '' when absent (LSP test only)
    orig_center      (2,) f32                box centre, original pixels
    orig_scale       () f32                  box side / 200, original pixels
    orig_size        (2,) int32              original image (height, width)
    crop_origin      (2,) f32                original pixel at crop pixel (0, 0)
    crop_zoom        () f32                  crop pixels per original pixel
With segmentation (LSP test, `features(segmentation=True)`), original frame:
    mask             (h, w, 1) uint8, PNG    UP-3D silhouette (fg where > 0)
    part_segmentation (h, w, 1) uint8, PNG   UP-3D parts 0..6, 255 = ignore

This module needs numpy and OpenCV only; `features()` imports TFDS lazily.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

SCHEMA_VERSION = '1.0.0'
# Largest scale augmentation (1.25) times the diagonal factor for rotations.
CROP_MARGIN = 1.25 * math.sqrt(2.0)
MAX_CROP_SIDE = 512
JPEG_QUALITY = 95
BOX_SCALE_UNIT = 200.0

NUM_PART = 24
NUM_OPENPOSE = 25
NUM_POSE = 72
NUM_BETAS = 10
NUM_FIT = NUM_POSE + NUM_BETAS

# Keypoint-like fields that live in the stored crop's pixel frame.
CROP_FRAME_KEYPOINTS = ('part', 'openpose')

GENDER_CODES = {'m': 0, 'male': 0, 'f': 1, 'female': 1}


def gender_code(g) -> int:
  """SPIN's gender code: 'm' -> 0, any other string -> 1, missing -> -1."""
  if g is None:
    return -1
  if isinstance(g, bytes):
    g = g.decode('latin1')
  if isinstance(g, (int, np.integer)):
    if int(g) not in (-1, 0, 1):
      raise ValueError(f'gender code must be -1, 0 or 1, got {g}')
    return int(g)
  g = str(g).strip().lower()
  if not g:
    return -1
  return 0 if g in ('m', 'male') else 1


def default_example() -> dict:
  """SPIN's defaults (SPIN_DETAILS D2) for every numeric label field."""
  return dict(
      part=np.zeros((NUM_PART, 3), np.float32),
      openpose=np.zeros((NUM_OPENPOSE, 3), np.float32),
      S=np.zeros((NUM_PART, 4), np.float32),
      pose=np.zeros((NUM_POSE,), np.float32),
      shape=np.zeros((NUM_BETAS,), np.float32),
      has_smpl=np.float32(0),
      has_pose_3d=np.float32(0),
      gender=np.int32(-1),
      fit=np.zeros((NUM_FIT,), np.float32),
      has_fit=np.float32(0),
      maskname='',
      partname='',
  )


def features(segmentation: bool = False):
  """The tfds.features.FeaturesDict of one example (see the module docstring)."""
  import tensorflow_datasets as tfds  # slow import (TensorFlow): keep it lazy
  f32, i32 = np.float32, np.int32
  t = tfds.features.Tensor
  spec = dict(
      image=tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      imgname=tfds.features.Text(),
      index=t(shape=(), dtype=np.int64),
      center=t(shape=(2,), dtype=f32),
      scale=t(shape=(), dtype=f32),
      part=t(shape=(NUM_PART, 3), dtype=f32),
      openpose=t(shape=(NUM_OPENPOSE, 3), dtype=f32),
      S=t(shape=(NUM_PART, 4), dtype=f32),
      pose=t(shape=(NUM_POSE,), dtype=f32),
      shape=t(shape=(NUM_BETAS,), dtype=f32),
      has_smpl=t(shape=(), dtype=f32),
      has_pose_3d=t(shape=(), dtype=f32),
      gender=t(shape=(), dtype=i32),
      fit=t(shape=(NUM_FIT,), dtype=f32),
      has_fit=t(shape=(), dtype=f32),
      maskname=tfds.features.Text(),
      partname=tfds.features.Text(),
      orig_center=t(shape=(2,), dtype=f32),
      orig_scale=t(shape=(), dtype=f32),
      orig_size=t(shape=(2,), dtype=i32),
      crop_origin=t(shape=(2,), dtype=f32),
      crop_zoom=t(shape=(), dtype=f32),
  )
  if segmentation:
    spec['mask'] = tfds.features.Image(shape=(None, None, 1),
                                       encoding_format='png')
    spec['part_segmentation'] = tfds.features.Image(shape=(None, None, 1),
                                                    encoding_format='png')
  return tfds.features.FeaturesDict(spec)


@dataclasses.dataclass(frozen=True)
class CropGeometry:
  """x_crop = zoom * (x_orig - origin); the stored crop is side x side."""
  origin: np.ndarray  # (2,) f64, integer-valued original pixel (x, y)
  zoom: float         # <= 1
  side: int           # stored crop side in pixels

  def to_crop(self, xy: np.ndarray) -> np.ndarray:
    """Original-image pixels (..., 2) -> stored-crop pixels."""
    return (np.asarray(xy, np.float64) - self.origin) * self.zoom

  def to_orig(self, xy: np.ndarray) -> np.ndarray:
    """Stored-crop pixels (..., 2) -> original-image pixels."""
    return np.asarray(xy, np.float64) / self.zoom + self.origin


def crop_geometry(center, scale, max_side: int = MAX_CROP_SIDE,
                  margin: float = CROP_MARGIN) -> CropGeometry:
  """The margin crop for a box (centre in original pixels, scale = side/200).

  The origin is integer so that an unscaled crop (zoom 1) is an exact pixel
  copy. A 2-pixel border keeps the whole requested square between the first
  and last pixel centres, so bilinear sampling inside it never reaches past
  the crop.
  """
  center = np.asarray(center, np.float64).reshape(2)
  scale = float(scale)
  if not (np.all(np.isfinite(center)) and math.isfinite(scale) and scale > 0):
    raise ValueError(f'bad box: center={center.tolist()} scale={scale} '
                     '(expected finite centre and scale > 0)')
  half = 0.5 * BOX_SCALE_UNIT * scale * margin
  side_orig = int(math.ceil(2 * half)) + 4
  zoom = min(1.0, (max_side - 1) / (side_orig - 1))
  side = min(max_side, int(round((side_orig - 1) * zoom)) + 1)
  # Centre the square: origin + (side - 1) / (2 zoom) ~ center.
  origin = np.floor(center - (side - 1) / (2 * zoom))
  return CropGeometry(origin=origin, zoom=zoom, side=max(side, 1))


def warp_to_crop(image: np.ndarray, geom: CropGeometry,
                 reduction: int = 1) -> np.ndarray:
  """Resamples `image` (H, W, C) into the stored crop; black outside the frame.

  Shrinking blurs first (sigma = (1/zoom - 1)/2, as scikit-image's
  anti-aliasing) so a large box does not alias; the blur is centred, so the
  geometry stays exactly x_crop = zoom * (x_orig - origin).
  reduction: `image` is the original decoded at 1/reduction (JPEG DCT scaling:
  pixel i averages original pixels [r i, r i + r), centre r i + (r - 1) / 2);
  requires zoom * reduction <= 1.
  """
  if image.ndim == 2:
    image = image[..., None]
  h, w = image.shape[:2]
  r = int(reduction)
  z = geom.zoom * r
  if z > 1 + 1e-9:
    raise ValueError(f'reduction {r} too large for zoom {geom.zoom}')
  # Crop origin in the (reduced) image's pixels.
  ox, oy = (geom.origin - (r - 1) / 2) / r
  out_shape = (geom.side, geom.side, image.shape[2])
  if z == 1.0 and r == 1:  # integer origin: an exact pixel copy
    ox, oy = int(ox), int(oy)
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + geom.side, w), min(oy + geom.side, h)
    out = np.zeros(out_shape, image.dtype)
    if x1 > x0 and y1 > y0:
      out[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = image[y0:y1, x0:x1]
    return out
  # Region of the image that the crop can sample (+2 px for bilinear and the
  # blur's support); everything else is black padding.
  pad = 2 + int(math.ceil(3 * (1 / z - 1) / 2))
  x0, y0 = max(int(math.floor(ox)) - pad, 0), max(int(math.floor(oy)) - pad, 0)
  x1 = min(int(math.ceil(ox + geom.side / z)) + pad, w)
  y1 = min(int(math.ceil(oy + geom.side / z)) + pad, h)
  if x1 <= x0 or y1 <= y0:
    return np.zeros(out_shape, image.dtype)
  roi = np.ascontiguousarray(image[y0:y1, x0:x1])
  if z < 1:
    sigma = (1 / z - 1) / 2
    roi = cv2.GaussianBlur(roi, (0, 0), sigmaX=sigma, sigmaY=sigma,
                           borderType=cv2.BORDER_REPLICATE)
  # dst(u) = roi(u / z + origin - roi_offset)
  m = np.array([[z, 0, -z * (ox - x0)], [0, z, -z * (oy - y0)]], np.float64)
  out = cv2.warpAffine(roi, m, (geom.side, geom.side), flags=cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
  return out.reshape(out_shape)
