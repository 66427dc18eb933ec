"""Person boxes and crops, and the checks on the photos, boxes and keypoints
people give.

Box convention (SPIN's): a person box is a square of side `200 * scale` pixels
centred on `center` (x, y). A box from `--bbox x,y,w,h` or from OpenPose
keypoints is enlarged by `rescale` (1.2, as SPIN's demo) around its centre.

Crop convention: original pixel u maps to crop pixel
    u_crop = k * (u - center) + res / 2,   k = res / (200 * scale),
(pixel centres at integers, OpenCV), so the box centre lands on the crop
camera's principal point (res/2, res/2). When the box is bigger than the crop
the image is blurred first (anti-aliasing), as a resize would.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import PIL.Image

from spin_jax import constants

DEFAULT_RESCALE = 1.2
OPENPOSE_DETECTION_THRESHOLD = 0.2


# ---------------------------------------------------------------------------
# Boxes.


@dataclass(frozen=True)
class Box:
  """A square person box: centre (x, y) and scale = side / 200, in pixels."""
  center: tuple[float, float]
  scale: float

  @property
  def side(self) -> float:
    return self.scale * constants.BOX_SCALE_UNIT


def box_from_xywh(bbox: Sequence[float], rescale: float = DEFAULT_RESCALE
                  ) -> Box:
  """Box from (x, y, w, h) of the top-left corner and size, in pixels."""
  if len(bbox) != 4:
    raise ValueError(f'bbox: expected x,y,w,h (4 numbers), got {bbox!r}.')
  x, y, w, h = (float(v) for v in bbox)
  if not np.all(np.isfinite([x, y, w, h])):
    raise ValueError(f'bbox {bbox!r}: x, y, w, h must be finite numbers.')
  if w <= 0 or h <= 0:
    raise ValueError(f'bbox {bbox!r}: width and height must be > 0.')
  return Box((x + w / 2.0, y + h / 2.0),
             max(w, h) * rescale / constants.BOX_SCALE_UNIT)


def parse_bbox_flag(text: str, rescale: float = DEFAULT_RESCALE) -> list[Box]:
  """'x,y,w,h' or several separated by ';' -> boxes."""
  boxes = []
  for part in text.split(';'):
    part = part.strip()
    if not part:
      continue
    try:
      values = [float(v) for v in part.split(',')]
    except ValueError as e:
      raise ValueError(f'--bbox {text!r}: expected numbers x,y,w,h '
                       f'(several boxes separated by ";").') from e
    try:
      boxes.append(box_from_xywh(values, rescale))
    except ValueError as e:
      raise ValueError(f'--{e}') from e
  if not boxes:
    raise ValueError(f'--bbox {text!r}: no box given.')
  return boxes


def boxes_from_openpose(path: str, rescale: float = DEFAULT_RESCALE,
                        threshold: float = OPENPOSE_DETECTION_THRESHOLD
                        ) -> tuple[list[Box], list[np.ndarray]]:
  """One box per person of an OpenPose JSON (BODY_25 `pose_keypoints_2d`).

  The box is the tight square around the keypoints with confidence above
  threshold, enlarged by rescale (SPIN's demo). People with fewer than two such
  keypoints are skipped.

  Returns:
    (boxes, keypoints) with keypoints (25, 3) per kept person.
  """
  try:
    with open(path) as f:
      data = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f'--openpose {path!r} does not exist.') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'--openpose {path!r} is not valid JSON: {e}') from e
  people = data.get('people') if isinstance(data, dict) else None
  if not isinstance(people, list):
    raise ValueError(f'--openpose {path!r}: expected an OpenPose JSON with a '
                     f'"people" list.')
  boxes, keypoints = [], []
  for i, person in enumerate(people):
    kp = np.asarray(person.get('pose_keypoints_2d', []), np.float64)
    if kp.size % 3 or kp.size == 0:
      raise ValueError(f'--openpose {path!r}: people[{i}].pose_keypoints_2d '
                       f'must hold x, y, c triplets, got {kp.size} values.')
    kp = kp.reshape(-1, 3)
    valid = kp[kp[:, 2] > threshold, :2]
    if len(valid) < 2:
      continue
    lo, hi = valid.min(0), valid.max(0)
    center = (lo + hi) / 2.0
    side = float(np.max(hi - lo))
    if side <= 0:
      continue
    boxes.append(Box((float(center[0]), float(center[1])),
                     side * rescale / constants.BOX_SCALE_UNIT))
    keypoints.append(kp)
  if not boxes:
    raise ValueError(f'--openpose {path!r}: no person with at least two '
                     f'keypoints above confidence {threshold}.')
  return boxes, keypoints


def whole_image_box(image_shape: Sequence[int]) -> Box:
  """The square box around the whole image (no box given)."""
  h, w = int(image_shape[0]), int(image_shape[1])
  return Box((w / 2.0, h / 2.0), max(h, w) / constants.BOX_SCALE_UNIT)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes (N, 4) x0 y0 x1 y1 with one box b (4,)."""
  lo = np.maximum(a[:, :2], b[:2])
  hi = np.minimum(a[:, 2:], b[2:])
  inter = np.prod(np.clip(hi - lo, 0, None), -1)
  area = lambda x: np.prod(np.clip(x[..., 2:] - x[..., :2], 0, None), -1)
  return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


# ---------------------------------------------------------------------------
# Crops.


def crop_matrix(box: Box, res: int) -> np.ndarray:
  """(2, 3) affine map from original to crop pixels (see module doc)."""
  k = res / box.side
  cx, cy = box.center
  return np.array([[k, 0.0, res / 2.0 - k * cx], [0.0, k, res / 2.0 - k * cy]])


def crop(image: np.ndarray, box: Box, res: int) -> np.ndarray:
  """(res, res, C) crop of the box; black outside the image.

  Only the box's neighbourhood is read (and blurred when shrinking), so the
  cost does not grow with the image.
  """
  image = np.asarray(image)
  k = res / box.side
  sigma = 0.5 * (1.0 / k - 1.0) if k < 1.0 else 0.0
  # The box plus a margin the blur and the bilinear lookup can reach.
  margin = int(np.ceil(4 * sigma)) + 2
  half = box.side / 2.0
  x0 = int(max(np.floor(box.center[0] - half) - margin, 0))
  y0 = int(max(np.floor(box.center[1] - half) - margin, 0))
  x1 = int(min(np.ceil(box.center[0] + half) + margin, image.shape[1]))
  y1 = int(min(np.ceil(box.center[1] + half) + margin, image.shape[0]))
  m = crop_matrix(box, res)
  if x1 <= x0 or y1 <= y0:  # the box misses the image
    return np.zeros((res, res) + image.shape[2:], image.dtype)
  region = image[y0:y1, x0:x1]
  if sigma > 0:  # shrinking: blur so the bilinear sampling does not alias
    region = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, sigmaY=sigma)
  m[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # region pixel -> crop
  return cv2.warpAffine(region, m, (res, res), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def normalize_images(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 RGB (..., 3) -> float32 ImageNet-normalised."""
  x = np.asarray(images_uint8, np.float32) / 255.0
  mean = np.asarray(constants.IMG_NORM_MEAN, np.float32)
  std = np.asarray(constants.IMG_NORM_STD, np.float32)
  return (x - mean) / std


# ---------------------------------------------------------------------------
# What people give: photos, boxes, keypoints.


MIN_IMAGE_SIDE = 16  # pixels; smaller "photos" hold no person to fit


def read_image(path: str, flag: str = '--img') -> np.ndarray:
  """RGB uint8 (H, W, 3), fully decoded.

  A missing, unreadable or truncated file (a JPEG cut short decodes as a grey
  lower half, silently, in OpenCV) and images under MIN_IMAGE_SIDE pixels are
  errors naming the file.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{flag} {path!r} does not exist.')
  problem = _incomplete(path)
  if problem:
    raise ValueError(f'{flag} {path!r}: not a complete image file ({problem}).')
  image = cv2.imread(path, cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied
  if image is None:
    raise ValueError(f'{flag} {path!r}: OpenCV cannot read this image.')
  if min(image.shape[:2]) < MIN_IMAGE_SIDE:
    raise ValueError(f'{flag} {path!r}: the image is {image.shape[1]}x{image.shape[0]} '
                     f'pixels; at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} expected.')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)  # in place: no copy


def _incomplete(path: str) -> str | None:
  """Why the image file is cut short, or None. JPEG and PNG are checked by
  their end markers (no second decode of a large photo); other formats by a
  full decode with PIL."""
  with open(path, 'rb') as f:
    head = f.read(8)
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4096))
    tail = f.read().rstrip(b'\0\r\n \t')
  if head.startswith(b'\xff\xd8'):  # JPEG: ends with the EOI marker
    return None if tail.endswith(b'\xff\xd9') else 'no JPEG end marker: truncated'
  if head.startswith(b'\x89PNG'):  # PNG: ends with the IEND chunk
    return None if b'IEND' in tail[-12:] else 'no PNG end chunk: truncated'
  try:
    with PIL.Image.open(path) as im:
      im.load()  # decodes everything: a truncated file raises here
  except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
    return str(e)
  return None


def check_boxes(boxes: Sequence[Box], image_shape: Sequence[int],
                source: str = '--bbox') -> None:
  """Boxes must be finite, of positive size and overlap the image."""
  h, w = int(image_shape[0]), int(image_shape[1])
  for i, b in enumerate(boxes):
    cx, cy = b.center
    if not np.all(np.isfinite([cx, cy, b.scale])) or b.scale <= 0:
      raise ValueError(f'{source}: box {i} (centre {cx}, {cy}, side {b.side}) '
                       'must be finite with a positive size.')
    half = b.side / 2.0
    if cx + half < 0 or cy + half < 0 or cx - half > w or cy - half > h:
      raise ValueError(f'{source}: box {i} (centre {cx:.0f}, {cy:.0f}, side '
                       f'{b.side:.0f}) lies outside the {w}x{h} image.')


def check_keypoints(keypoints: np.ndarray, source: str,
                    image_shape: Sequence[int] | None = None) -> np.ndarray:
  """(P, J, 3) x, y, confidence in image pixels, checked; a cleaned copy.

  Refused: confidences that are not finite or outside [0, 1]; non-finite
  coordinates of a joint with confidence > 0; coordinates more than one image
  size outside the image (or beyond 1e5 px without an image). A joint with
  confidence 0 is missing: its coordinates are set to 0.
  """
  kp = np.array(keypoints, np.float64, copy=True)
  if kp.ndim != 3 or kp.shape[-1] != 3:
    raise ValueError(f'{source}: keypoints must be (people, joints, 3) = x, y, '
                     f'confidence; got shape {kp.shape}.')
  conf = kp[..., 2]
  bad = ~np.isfinite(conf) | (conf < 0) | (conf > 1)
  if bad.any():
    p, j = np.argwhere(bad)[0]
    raise ValueError(f'{source}: person {p} joint {j} has confidence {conf[p, j]}; '
                     'confidences must lie in [0, 1].')
  used = conf > 0
  bad = used & ~np.all(np.isfinite(kp[..., :2]), -1)
  if bad.any():
    p, j = np.argwhere(bad)[0]
    raise ValueError(f'{source}: person {p} joint {j} (confidence {conf[p, j]:.2f}) '
                     f'has non-finite coordinates {kp[p, j, :2].tolist()}.')
  if image_shape is not None:
    h, w = float(image_shape[0]), float(image_shape[1])
    lo, hi = np.array([-w, -h]), np.array([2 * w, 2 * h])
    where = f'within one image size of the {w:.0f}x{h:.0f} image'
  else:
    lo, hi = np.full(2, -1e5), np.full(2, 1e5)
    where = 'within 1e5 pixels'
  bad = used & np.any((kp[..., :2] < lo) | (kp[..., :2] > hi), -1)
  if bad.any():
    p, j = np.argwhere(bad)[0]
    raise ValueError(f'{source}: person {p} joint {j} at {kp[p, j, :2].tolist()} '
                     f'(confidence {conf[p, j]:.2f}); keypoints must lie {where}.')
  kp[~used] = 0.0
  return kp.astype(np.float32)
