"""Bundled person and 2D body-keypoint detector: BlazePose, run by LiteRT.

Finds every person in an RGB image and their 33 BlazePose landmarks with
confidences (spin_jax.keypoints maps them onto SPIN's 49 joints). The two
networks ship in spin_jax/assets/ (Apache-2.0, from the mediapipe 0.10.21
wheel; see assets/LICENSES.md); nothing is downloaded. They run on `ai-edge-litert`'s
interpreter (no TensorFlow, no mediapipe). The pre- and post-processing below
is ours, written from the public description of mediapipe's pose graphs:

1. Person detection (`pose_detection.tflite`, 224x224 RGB in [-1, 1]). The
   image is letterboxed (aspect ratio kept, zero padding, centred). The
   network scores 2,254 SSD anchors: the grid centres of a 28x28 (stride 8),
   14x14 (16) and 7x7 (32) map, 2, 2 and 6 anchors per cell, all of unit size.
   Each anchor regresses a face box and 4 points, as offsets in tensor pixels
   from its centre: point 0 the mid-hip, point 1 a point whose distance from
   the mid-hip gives the body's size and whose direction its rotation (points
   2, 3: the same for the upper body, unused). Scores are logits (clipped to
   +-100). Ours: an image that is not square is also searched in square tiles
   of its short side (`PoseDetector.detect`). Overlapping detections (IoU of
   the face boxes > 0.3) are merged by score-weighted averaging (mediapipe's
   "weighted" non-maximum suppression).
2. Region of interest per detection: a square centred on the mid-hip, side
   2 * |p1 - p0| * 1.25, turned so that p0 -> p1 points up in the crop.
3. Landmarks (`pose_landmark_full.tflite`, the ROI resampled to 256x256 RGB in
   [0, 1]): 39 points x (x, y, z, visibility logit, presence logit) in crop
   pixels (33 body landmarks + 6 auxiliary ones, unused), a pose-presence
   probability, and 64x64 heatmaps. Each landmark is refined by the
   heatmap-weighted mean position in the 7x7 heatmap window around it when that
   window's peak (sigmoid) reaches 0.5. Landmarks go back to image pixels
   through the ROI's similarity transform. Ours: when the visible landmarks
   fill much less than the region (a person cut off by the border), the face
   landmarks come from a second pass on the square around them
   (`PoseDetector.roi_from_landmarks`).

Coordinates: image pixels with pixel centres at integers (OpenCV; the same as
spin_jax.crops). Confidence of a landmark = its visibility (sigmoid), set to
0 for landmarks more than `outside_margin` of the image size outside the image.
A person is kept when the detector's score >= min_detection_score and the
landmark network's presence >= min_presence; people whose landmark boxes
overlap by IoU > 0.6 are the same person detected twice (the better one stays).

Kept whole (about 530 lines): one pipeline, whose three stages share their
warps, regions and decoding constants.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from typing import Any, Sequence

import cv2
import numpy as np
from ai_edge_litert import interpreter as litert

from spin_jax import constants
from spin_jax import crops
from spin_jax import fileio
from spin_jax import keypoints

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
DETECTION_MODEL = os.path.join(ASSETS_DIR, 'pose_detection.tflite')
LANDMARK_MODEL = os.path.join(ASSETS_DIR, 'pose_landmark_full.tflite')

# Network input sizes and the decoding constants of the two models.
_DET_SIZE = 224
_DET_STRIDES = (8, 16, 32)
_DET_ANCHORS_PER_CELL = (2, 2, 6)  # 1, 1 and 3 SSD layers of 2 anchors each
_DET_SCORE_CLIP = 100.0
_TILE_MIN_ASPECT = 1.2  # tiles for images longer than this x their short side
_TILE_STEP = 0.5  # of the tile side
_NMS_IOU = 0.3
_ROI_SCALE = 1.25
_LMK_SIZE = 256
_LMK_NUM_OUTPUTS = 39  # 33 landmarks + 6 auxiliary points
_HEATMAP_KERNEL = 7
_HEATMAP_MIN_PEAK = 0.5
_DUPLICATE_IOU = 0.6
_NUM_FACE_LANDMARKS = 11  # nose .. mouth_right
_FACE_PASS_MAX_SHIFT = 0.1  # of the second region's side


# ---------------------------------------------------------------------------
# Geometry helpers.


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def detector_anchors() -> np.ndarray:
  """(2254, 2) anchor centres, normalised to the 224x224 detector input."""
  centres = []
  for stride, per_cell in zip(_DET_STRIDES, _DET_ANCHORS_PER_CELL):
    n = int(np.ceil(_DET_SIZE / stride))
    g = (np.arange(n) + 0.5) / n
    yy, xx = np.meshgrid(g, g, indexing='ij')  # row-major: y outer, x inner
    cell = np.stack([xx.ravel(), yy.ravel()], -1)
    centres.append(np.repeat(cell, per_cell, axis=0))
  return np.concatenate(centres).astype(np.float64)


def _as_rgb_uint8(image, what: str = 'image') -> np.ndarray:
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'{what}: expected a uint8 RGB image, got dtype {image.dtype}.')
  if image.ndim == 2:
    image = np.repeat(image[..., None], 3, -1)
  if image.ndim != 3 or image.shape[2] not in (3, 4):
    raise ValueError(f'{what}: expected (H, W, 3) RGB (or gray / RGBA), got '
                     f'shape {image.shape}.')
  if image.shape[0] < 1 or image.shape[1] < 1:
    raise ValueError(f'{what}: empty image {image.shape}.')
  return np.ascontiguousarray(image[..., :3])


def _warp(image: np.ndarray, to_image: np.ndarray, size: int) -> np.ndarray:
  """(size, size, 3) samples of image at to_image @ [j, i, 1] (OpenCV pixels).

  to_image maps output pixels to image pixels (a similarity). When it shrinks
  the image by more than 1.5x, the region it reads is first area-downsampled
  (anti-aliasing, and much less work than blurring the whole image).
  """
  m = np.asarray(to_image, np.float64)
  k = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # image px per output px
  if k > 1.5:
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]],
                       np.float64) - [0.5, 0.5, 0]
    pts = corners @ m.T
    h, w = image.shape[:2]
    x0 = int(np.clip(np.floor(pts[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(pts[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(pts[:, 0].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(pts[:, 1].max()) + 3, y0 + 1, h))
    region = image[y0:y1, x0:x1]
    nw = max(1, int(round((x1 - x0) / k)))
    nh = max(1, int(round((y1 - y0) / k)))
    small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
    # small pixel q <-> region pixel (q + .5) * s - .5, per axis.
    sx, sy = (x1 - x0) / nw, (y1 - y0) / nh
    to_small = np.array([[1 / sx, 0, (0.5 - x0) / sx - 0.5],
                         [0, 1 / sy, (0.5 - y0) / sy - 0.5]])
    m = np.concatenate([to_small[:, :2] @ m[:, :2],
                        (to_small[:, :2] @ m[:, 2] + to_small[:, 2])[:, None]], 1)
    image = small
  return cv2.warpAffine(image, m, (size, size),
                        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)

def weighted_nms(boxes: np.ndarray, points: np.ndarray, scores: np.ndarray,
                 iou_threshold: float = _NMS_IOU):
  """Merges overlapping detections by score-weighted averaging.

  Repeatedly takes the best remaining detection and every remaining one that
  overlaps it by IoU > iou_threshold, replaces them by their score-weighted
  mean box and points, and keeps the best one's score.

  Returns (boxes (K, 4), points (K, ...), scores (K,)), best first.
  """
  order = np.argsort(-scores, kind='stable')
  boxes, points, scores = boxes[order], points[order], scores[order]
  alive = np.ones(len(scores), bool)
  out_b, out_p, out_s = [], [], []
  for i in range(len(scores)):
    if not alive[i]:
      continue
    group = alive & (crops.box_iou(boxes, boxes[i]) > iou_threshold)
    group[i] = True
    w = scores[group] / scores[group].sum()
    out_b.append(np.tensordot(w, boxes[group], 1))
    out_p.append(np.tensordot(w, points[group], 1))
    out_s.append(scores[i])
    alive &= ~group
  if not out_s:
    return (np.zeros((0, 4)), np.zeros((0,) + points.shape[1:]), np.zeros(0))
  return np.stack(out_b), np.stack(out_p), np.asarray(out_s)


# ---------------------------------------------------------------------------
# The detector.


@dataclasses.dataclass(frozen=True)
class Roi:
  """A square region of interest in image pixels: centre (x, y), side, and
  rotation (radians). Crop point (u, v) in [0, 1]^2 is the image point
  centre + side * R(rotation) @ (u - 1/2, v - 1/2), R the 2D rotation
  [[cos, -sin], [sin, cos]] (image y points down, so a positive rotation
  turns the crop's up towards the image's right)."""
  center: tuple[float, float]
  side: float
  rotation: float

  def crop_to_image(self, size: int) -> np.ndarray:
    """(2, 3) affine: crop pixel (j, i) of a size x size crop -> image pixel."""
    c, s = np.cos(self.rotation), np.sin(self.rotation)
    r = np.array([[c, -s], [s, c]]) * (self.side / size)
    t = np.asarray(self.center, np.float64) + r @ np.full(2, 0.5 - size / 2.0)
    return np.concatenate([r, t[:, None]], 1)


@dataclasses.dataclass
class Person:
  """One detected person.

  score: the person detector's score (sigmoid).
  presence: the landmark network's pose-presence probability.
  landmarks: (33, 4) x, y (image pixels), visibility, presence (sigmoids), in
    keypoints.LANDMARK_NAMES order; visibility is 0 outside the image (module doc).
  roi: the region the landmarks were read from.
  """
  score: float
  presence: float
  landmarks: np.ndarray
  roi: Roi

  @property
  def keypoints(self) -> np.ndarray:
    """(49, 3) SPIN joints: x, y in image pixels, confidence."""
    return keypoints.to_spin49(self.landmarks[:, :3])

  def box(self, threshold: float = 0.5) -> np.ndarray | None:
    """x0, y0, x1, y1 of the landmarks with visibility > threshold."""
    good = self.landmarks[:, 2] > threshold
    if good.sum() < 2:
      return None
    pts = self.landmarks[good, :2]
    return np.concatenate([pts.min(0), pts.max(0)])


@contextlib.contextmanager
def _stderr_silenced():
  """Discards what C++ code writes to file descriptor 2 meanwhile (errors
  still raise in Python)."""
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, 'w') as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class PoseDetector:
  """Every person's 33 BlazePose landmarks in an RGB uint8 image.

    pose_detector = detector.PoseDetector()
    people = pose_detector(image)           # list[Person], left to right
    kp = detector.people_keypoints(people)  # (P, 49, 3) SPIN joints

  Args:
    min_detection_score: keep detections scoring at least this (sigmoid).
    min_presence: keep people whose landmark presence is at least this.
    max_people: at most this many people per image (best detections first).
    outside_margin: landmarks further than this fraction of the image size
      outside the image get visibility 0.
    face_pass: take the 11 face landmarks from a second pass on the square
      around the first pass's visible landmarks (`roi_from_landmarks`) when
      that square is much smaller than the detector's region.
    num_threads: interpreter threads (default: the CPUs, at most 4).
  """

  def __init__(self, *, min_detection_score: float = 0.5,
               min_presence: float = 0.5, max_people: int = 20,
               outside_margin: float = 0.02, face_pass: bool = True,
               num_threads: int | None = None,
               detection_model: str = DETECTION_MODEL,
               landmark_model: str = LANDMARK_MODEL):
    for path in (detection_model, landmark_model):
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'pose model {path!r} is missing: it ships with spin_jax in '
            f'spin_jax/assets/ (reinstall spin_jax or check out the file).')
    if num_threads is None:
      num_threads = max(1, min(os.cpu_count() or 1, 4))
    self.min_detection_score = float(min_detection_score)
    self.min_presence = float(min_presence)
    self.max_people = int(max_people)
    self.outside_margin = float(outside_margin)
    self.face_pass = bool(face_pass)
    with _stderr_silenced():  # LiteRT prints an INFO line about XNNPACK
      self._det = litert.Interpreter(model_path=detection_model,
                                     num_threads=num_threads)
      self._lmk = litert.Interpreter(model_path=landmark_model,
                                     num_threads=num_threads)
      self._det.allocate_tensors()
      self._lmk.allocate_tensors()
    self._det_in = self._det.get_input_details()[0]['index']
    det_out = {d['shape'][-1]: d['index'] for d in self._det.get_output_details()}
    self._det_regress, self._det_score = det_out[12], det_out[1]
    self._lmk_in = self._lmk.get_input_details()[0]['index']
    outs = {tuple(d['shape'][1:]): d['index']
            for d in self._lmk.get_output_details()}
    self._lmk_points = outs[(_LMK_NUM_OUTPUTS * 5,)]
    self._lmk_flag = outs[(1,)]
    self._lmk_heatmap = outs[(64, 64, _LMK_NUM_OUTPUTS)]
    self._anchors = detector_anchors()

  # -- stage 1: person detection ------------------------------------------

  def detect(self, image: np.ndarray) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Person detections: (score, face box x0 y0 x1 y1, points (4, 2)), pixels.

    The detector sees the whole image letterboxed to 224x224 and, when the
    image is not square, also square tiles of its short side sliding along
    the long side (half a tile apart): in a wide group photo each person is
    then twice as large as in the letterboxed view, where this detector
    misses small people. All detections are merged by weighted NMS.
    """
    image = _as_rgb_uint8(image)
    h, w = image.shape[:2]
    short, long_ = min(h, w), max(h, w)
    # Each view: (scale s, offset o) with image pixel = u * 224 / s - 1/2 + o
    # for a normalised detector coordinate u.
    s = _DET_SIZE / long_
    views = [(s, -(np.array([_DET_SIZE - w * s, _DET_SIZE - h * s]) / 2.0) / s)]
    if long_ > _TILE_MIN_ASPECT * short:
      n = int(np.ceil((long_ - short) / (_TILE_STEP * short))) + 1
      for start in np.linspace(0.0, long_ - short, n):
        offset = np.array([start, 0.0]) if w > h else np.array([0.0, start])
        views.append((_DET_SIZE / short, offset))
    boxes, points, scores = [], [], []
    for scale, offset in views:
      b, p, sc = self._detect_view(image, scale, offset)
      boxes.append(b); points.append(p); scores.append(sc)
    boxes, points, scores = (np.concatenate(boxes), np.concatenate(points),
                             np.concatenate(scores))
    if not len(scores):
      return []
    boxes, points, scores = weighted_nms(boxes, points, scores)
    return [(float(scores[k]), boxes[k], points[k])
            for k in range(min(len(scores), self.max_people))]

  def _detect_view(self, image, scale, offset):
    """Detections of one letterboxed / tiled view, in image pixels."""
    to_px = lambda u: u * (_DET_SIZE / scale) - 0.5 + offset
    # Tensor pixel t (centres at integers) has u = (t + 1/2) / 224.
    to_image = np.array([[1 / scale, 0, 0.5 / scale - 0.5 + offset[0]],
                         [0, 1 / scale, 0.5 / scale - 0.5 + offset[1]]])
    tensor = _warp(image, to_image, _DET_SIZE).astype(np.float32) / 127.5 - 1.0
    self._det.set_tensor(self._det_in, tensor[None])
    self._det.invoke()
    raw = self._det.get_tensor(self._det_regress)[0].astype(np.float64)
    logit = self._det.get_tensor(self._det_score)[0, :, 0].astype(np.float64)
    scores = _sigmoid(np.clip(logit, -_DET_SCORE_CLIP, _DET_SCORE_CLIP))
    keep = scores >= self.min_detection_score
    raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
    # Offsets in tensor pixels from the anchor centre (unit-size anchors).
    centre = raw[:, :2] / _DET_SIZE + anchors
    half = raw[:, 2:4] / _DET_SIZE / 2.0
    boxes = np.concatenate([to_px(centre - half), to_px(centre + half)], -1)
    points = to_px(raw[:, 4:12].reshape(-1, 4, 2) / _DET_SIZE + anchors[:, None])
    return boxes, points, scores

  @staticmethod
  def roi_from_points(p_hip: np.ndarray, p_size: np.ndarray) -> Roi:
    """Stage 2: the square region from the mid-hip and the size point."""
    d = np.asarray(p_size, np.float64) - np.asarray(p_hip, np.float64)
    side = 2.0 * float(np.hypot(*d)) * _ROI_SCALE
    # Turn so that hip -> size point is the crop's up (90 degrees, y up).
    rotation = np.pi / 2 - np.arctan2(-d[1], d[0])
    rotation = (rotation + np.pi) % (2 * np.pi) - np.pi
    return Roi((float(p_hip[0]), float(p_hip[1])), max(side, 1.0), float(rotation))

  @staticmethod
  def roi_from_landmarks(landmarks: np.ndarray, rotation: float,
                         threshold: float = 0.5) -> Roi | None:
    """The square around the visible landmarks, x1.25, turned by rotation.

    The detector's region is sized for the whole body, so a person cut off by
    the image border (a portrait, a half-body shot) fills a small part of it
    and the face is a few heatmap cells wide. A second pass on this tighter
    region places the face much better (astronaut photo: the eyes, nose and
    mouth move by about 15 px onto the features), but the network, trained
    on whole-body regions, then also squeezes a whole body into it (hips
    and knees move up the torso): only the face is taken from it.
    """
    good = landmarks[:, 2] > threshold
    if good.sum() < 3:
      return None
    c, s = np.cos(rotation), np.sin(rotation)
    r = np.array([[c, -s], [s, c]])
    local = landmarks[good, :2] @ r  # into the region's turned frame
    lo, hi = local.min(0), local.max(0)
    side = float(np.max(hi - lo)) * _ROI_SCALE
    if side < 4.0:
      return None
    center = r @ ((lo + hi) / 2.0)
    return Roi((float(center[0]), float(center[1])), side, float(rotation))

  def _refine_face(self, image, lmk, roi):
    """Face landmarks (0-10) from a second pass on the visible body."""
    tight = self.roi_from_landmarks(lmk, roi.rotation)
    if tight is None or tight.side >= 0.8 * roi.side:
      return lmk  # the person already fills the region: nothing to gain
    presence, lmk2 = self.landmarks(image, tight)
    face = slice(0, _NUM_FACE_LANDMARKS)
    shift = np.median(np.linalg.norm(lmk2[face, :2] - lmk[face, :2], axis=-1))
    if presence < self.min_presence or shift > _FACE_PASS_MAX_SHIFT * tight.side:
      return lmk
    out = lmk.copy()
    out[face] = lmk2[face]
    return out

  # -- stage 3: landmarks ---------------------------------------------------

  def landmarks(self, image: np.ndarray, roi: Roi) -> tuple[float, np.ndarray]:
    """(presence, (33, 4) landmarks) of the person in roi (see Person)."""
    image = _as_rgb_uint8(image)
    to_image = roi.crop_to_image(_LMK_SIZE)
    tensor = _warp(image, to_image, _LMK_SIZE).astype(np.float32) / 255.0
    self._lmk.set_tensor(self._lmk_in, tensor[None])
    self._lmk.invoke()
    raw = self._lmk.get_tensor(self._lmk_points)[0].reshape(_LMK_NUM_OUTPUTS, 5)
    flag = float(self._lmk.get_tensor(self._lmk_flag).reshape(()))
    heat = self._lmk.get_tensor(self._lmk_heatmap)[0]
    uv = refine_with_heatmap(raw[:, :2].astype(np.float64) / _LMK_SIZE, heat)
    # Normalised crop coordinates -> crop pixels (centres at integers) -> image.
    crop_px = uv * _LMK_SIZE - 0.5
    xy = crop_px @ to_image[:, :2].T + to_image[:, 2]
    vis = _sigmoid(raw[:, 3])
    pres = _sigmoid(raw[:, 4])
    h, w = image.shape[:2]
    m = self.outside_margin * max(h, w)
    inside = ((xy[:, 0] >= -m) & (xy[:, 0] <= w - 1 + m)
              & (xy[:, 1] >= -m) & (xy[:, 1] <= h - 1 + m))
    vis = np.where(inside, vis, 0.0)
    out = np.concatenate([xy, vis[:, None], pres[:, None]], -1)
    return flag, out[:keypoints.NUM_LANDMARKS].astype(np.float32)

  def __call__(self, image: np.ndarray) -> list[Person]:
    """Every person found, left to right (by the mid-hip of its region)."""
    image = _as_rgb_uint8(image)
    people = []
    for score, _, points in self.detect(image):
      roi = self.roi_from_points(points[0], points[1])
      presence, lmk = self.landmarks(image, roi)
      if presence < self.min_presence:
        continue
      if self.face_pass:
        lmk = self._refine_face(image, lmk, roi)
      people.append(Person(score, presence, lmk, roi))
    people = _drop_duplicates(people)
    people.sort(key=lambda p: p.roi.center[0])
    return people


def refine_with_heatmap(uv: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
  """Landmarks (N, 2) normalised to the crop, refined on (H, W, >=N) heatmaps.

  Each landmark moves to the sigmoid-weighted mean cell of the kernel x kernel
  window around its cell, when that window's peak reaches _HEATMAP_MIN_PEAK;
  otherwise it stays. Cell (row, col) stands for the normalised point
  (col / W, row / H): with that reading the refined points agree with the
  network's regressed ones on average (mean shift within 0.16 cells on our
  test photos; reading cell centres, (col + 1/2) / W, shifts them by +0.4).
  """
  hh, hw = heatmap.shape[:2]
  r = _HEATMAP_KERNEL // 2
  out = np.array(uv, np.float64)
  for k in range(min(len(uv), heatmap.shape[2])):
    col, row = int(uv[k, 0] * hw), int(uv[k, 1] * hh)
    if not (0 <= col < hw and 0 <= row < hh):
      continue
    r0, r1 = max(0, row - r), min(hh, row + r + 1)
    c0, c1 = max(0, col - r), min(hw, col + r + 1)
    conf = _sigmoid(heatmap[r0:r1, c0:c1, k])
    total = conf.sum()
    if conf.max() < _HEATMAP_MIN_PEAK or total <= 0:
      continue
    rows, cols = np.mgrid[r0:r1, c0:c1]
    out[k, 0] = (cols * conf).sum() / total / hw
    out[k, 1] = (rows * conf).sum() / total / hh
  return out


def _drop_duplicates(people: list[Person]) -> list[Person]:
  """Keeps the better of two people whose landmark boxes overlap > 0.6 IoU."""
  people = sorted(people, key=lambda p: -p.score * p.presence)
  kept, boxes = [], []
  for p in people:
    box = p.box()
    if box is None:
      continue
    if boxes and np.any(crops.box_iou(np.stack(boxes), box) > _DUPLICATE_IOU):
      continue
    kept.append(p)
    boxes.append(box)
  return kept


def people_keypoints(people: Sequence[Person]) -> np.ndarray:
  """(P, 49, 3) SPIN joints of the people (x, y image pixels, confidence)."""
  if not people:
    return np.zeros((0, constants.NUM_JOINTS, 3), np.float32)
  return np.stack([p.keypoints for p in people])


# ---------------------------------------------------------------------------
# The detector's own JSON file.


def detections_dict(people: Sequence[Person],
                    image_size: Sequence[int]) -> dict[str, Any]:
  """The detector's output as JSON-ready data (keypoints.DETECTIONS_FORMAT):

    {"format": "spin_jax.keypoints/1", "detector": "blazepose_full",
     "image_size": [H, W], "landmark_names": [33 names],
     "people": [{"score", "presence",
                 "landmarks": 33 x [x, y, visibility, presence],
                 "keypoints_spin49": 49 x [x, y, confidence]}]}
  Image pixels, centres at integers. keypoints.read_keypoints_file reads it
  back.
  """
  return dict(
      format=keypoints.DETECTIONS_FORMAT, detector=keypoints.DETECTOR_NAME,
      image_size=[int(image_size[0]), int(image_size[1])],
      landmark_names=list(keypoints.LANDMARK_NAMES),
      people=[dict(score=round(float(p.score), 4),
                   presence=round(float(p.presence), 4),
                   landmarks=np.round(p.landmarks.astype(np.float64), 3).tolist(),
                   keypoints_spin49=np.round(p.keypoints.astype(np.float64), 3).tolist())
              for p in people])


def write_detections(path: str, people: Sequence[Person],
                     image_size: Sequence[int]) -> None:
  """Writes detections_dict as JSON, atomically."""
  fileio.atomic_write_json(path, detections_dict(people, image_size))
