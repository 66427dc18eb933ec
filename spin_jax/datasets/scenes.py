"""What a synthetic scene looks like: people, cameras, appearance, rendering.

spin_jax/datasets/synthetic.py turns these scenes into a labelled dataset.
Per example (seeded by the dataset's (seed, split, example index)):
- body pose: the default GMM pose prior (spin_jax/assets/pose_prior_gmm08.npz)
  when present, else a simple anatomical sampler (`simple_pose_sampler`);
- betas ~ N(0, 1) clipped to [-2.5, 2.5] (the default model's betas are unit
  variance), or one of a few fixed subjects (`Scene.num_subjects`);
- global orientation in the OpenCV camera frame (x right, y down, z forward):
  Rx(180 deg) (the body model is y-up and faces +z) @ Ry(yaw) @ small tilts,
  yaw mostly frontal (70 %: N(0, 45 deg), 30 %: uniform) or within +-45 deg;
- camera: focal length U(1.2, 2.5) x image size, principal point at the image
  centre, the body's height 50-80 % of the image, centred with jitter (or,
  for a `Scene.truncation` share, 0.3-0.5 image sizes off-centre);
- appearance: skin / shirt / trousers colours per body part, or one fixed
  colour per skinning bone (PART_PALETTE); Lambertian light from a random
  frontal direction; background = colour gradient, smooth noise or random
  patches (+ pixel noise), or one plain colour; JPEG.
Rendering runs in worker processes (`RenderPool`; numpy + OpenCV).
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from spin_jax import render
from spin_jax.datasets import schema


@dataclasses.dataclass(frozen=True)
class Scene:
  """How the people, cameras and backgrounds of one split are drawn.

  pose_scale: deviation from each GMM sample's component mean x this.
  pose_modes: GMM components drawn from (renormalised weights); () = all.
  yaw: 'any' (70 % N(0, 45 deg), 30 % uniform) or 'front' (U(-45, 45) deg).
  num_subjects: 0 = betas ~ N(0, 1) per person; k = one of k fixed shapes.
  background: 'random' (gradients, noise, patches) or 'plain' (one colour).
  truncation: fraction of people placed partly outside the frame.
  """
  pose_scale: float = 1.0
  pose_modes: tuple[int, ...] = ()
  yaw: str = 'any'
  num_subjects: int = 0
  background: str = 'random'
  truncation: float = 0.0


# The 'studio_wild' domains (module docstring). Chosen before any result.
STUDIO = Scene(pose_scale=0.6, pose_modes=(0, 1, 2), yaw='front',
               num_subjects=5, background='plain')
WILD = Scene(truncation=0.25)


# ------------------------------------------------------------ scene sampling
def _rot(axis: str, angle):
  """Batched rotation matrices (n, 3, 3) about a coordinate axis."""
  angle = np.asarray(angle, np.float64)
  c, s = np.cos(angle), np.sin(angle)
  o, z = np.ones_like(angle), np.zeros_like(angle)
  rows = dict(x=[[o, z, z], [z, c, -s], [z, s, c]],
              y=[[c, z, s], [z, o, z], [-s, z, c]],
              z=[[c, -s, z], [s, c, z], [z, z, o]])[axis]
  return np.moveaxis(np.array(rows), (0, 1), (-2, -1))


def _matrix_to_axis_angle(r) -> np.ndarray:
  return Rotation.from_matrix(r).as_rotvec()


def simple_pose_sampler(rng: np.random.Generator, n: int) -> np.ndarray:
  """(n, 69) plausible body poses: joint-wise Gaussians with natural bends.

  Used when the default GMM pose prior asset is absent. Knees bend forward
  (+x rotation), elbows bend inwards (left -y, right +y, SPIN's angle-prior
  signs), shoulders swing and lower the arms from the T-pose.
  """
  pose = rng.normal(size=(n, 23, 3)) * 0.08
  j = lambda joint: joint - 1  # SMPL joint id -> body-pose row
  for hip in (1, 2):
    pose[:, j(hip), 0] += rng.normal(-0.2, 0.45, n)  # flex / extend
    pose[:, j(hip), 2] += rng.normal(0, 0.15, n) * (1 if hip == 1 else -1)
  for knee in (4, 5):
    pose[:, j(knee), 0] = np.abs(rng.normal(0.3, 0.5, n))
  for spine in (3, 6, 9):
    pose[:, j(spine)] += rng.normal(0, [0.12, 0.08, 0.08], (n, 3))
  # Shoulders: lower the T-pose arms by 40-80 deg, swing forward/back.
  down = rng.uniform(0.7, 1.4, n)
  pose[:, j(16), 2] -= down * rng.choice([1, 1, 1, 0.2], n)
  pose[:, j(17), 2] += down * rng.choice([1, 1, 1, 0.2], n)
  pose[:, j(16), 1] += rng.normal(0, 0.4, n)
  pose[:, j(17), 1] += rng.normal(0, 0.4, n)
  pose[:, j(18), 1] = -np.abs(rng.normal(0.4, 0.6, n))
  pose[:, j(19), 1] = np.abs(rng.normal(0.4, 0.6, n))
  pose[:, j(15)] += rng.normal(0, 0.15, (n, 3))  # head
  return pose.reshape(n, 69)


@functools.lru_cache(maxsize=1)
def gmm_prior():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets',
                      'pose_prior_gmm08.npz')
  if not os.path.isfile(path):
    return None
  with np.load(path, allow_pickle=False) as f:
    means = f['means'].astype(np.float64)
    chol = np.linalg.cholesky(f['covars'].astype(np.float64))
    weights = f['weights'].astype(np.float64)
  return means, chol, weights / weights.sum()


def gmm_pose_sampler(rng: np.random.Generator, n: int, scale: float = 1.0,
                     modes: tuple[int, ...] = ()) -> np.ndarray | None:
  """(n, 69) samples of the default GMM pose prior, or None without the asset.

  scale multiplies each sample's deviation from its mixture component's mean
  (the components' covariances by scale**2): < 1 concentrates the poses around
  the prior's 8 modes, 1 samples the prior itself. modes: the components to
  draw from (their weights renormalised); () = all.
  """
  gmm = gmm_prior()
  if gmm is None:
    return None
  means, chol, weights = gmm
  if modes:
    if not all(0 <= m < len(weights) for m in modes):
      raise ValueError(f'pose modes {modes}: the prior has {len(weights)} components')
    weights = np.zeros_like(weights)
    weights[list(modes)] = gmm[2][list(modes)]
    weights = weights / weights.sum()
  k = rng.choice(len(weights), size=n, p=weights)
  z = rng.standard_normal((n, means.shape[1]))
  return means[k] + float(scale) * np.einsum('nij,nj->ni', chol[k], z)


@functools.lru_cache(maxsize=1)
def mean_body_pose() -> np.ndarray:
  """(69,) the pose samplers' mean body pose: the GMM's weighted mean (equal
  to the regressor's shipped mean pose), else the simple sampler's mean."""
  gmm = gmm_prior()
  if gmm is None:
    return simple_pose_sampler(np.random.default_rng(0), 20000).mean(0)
  means, _, weights = gmm
  return weights @ means


def subject_betas(seed: int, num_subjects: int, num_betas: int) -> np.ndarray:
  """(num_subjects, num_betas) the fixed body shapes of a scene's subjects."""
  rng = np.random.default_rng([seed, 7919])
  return np.clip(rng.standard_normal((num_subjects, num_betas)), -2.5, 2.5)


def sample_bodies(rng: np.random.Generator, n: int, num_betas: int = 10,
                  pose_scale: float = 1.0, scene: Scene | None = None,
                  seed: int = 0):
  """SMPL parameters of n people in the camera frame: (pose (n, 72), betas).

  pose_scale: < 1 gives an easier pose distribution (1 = the prior itself):
  the GMM sampler's deviations from each sample's mixture mean (so the poses
  gather around the prior's 8 modes), or the simple sampler's deviations from
  its mean pose, are multiplied by it. scene (default: Scene(pose_scale))
  also sets the pose modes, the yaw range and fixed subjects (their shapes
  follow `seed`).
  """
  scene = Scene(pose_scale=pose_scale) if scene is None else scene
  body_pose = gmm_pose_sampler(rng, n, scene.pose_scale, scene.pose_modes)
  if body_pose is None:
    body_pose = simple_pose_sampler(rng, n)
    if scene.pose_scale != 1.0:
      anchor = mean_body_pose()
      body_pose = anchor + float(scene.pose_scale) * (body_pose - anchor)
  if scene.yaw == 'front':
    yaw = rng.uniform(-np.pi / 4, np.pi / 4, n)
  elif scene.yaw == 'any':
    frontal = rng.uniform(size=n) < 0.7
    yaw = np.where(frontal, rng.normal(0, np.deg2rad(45), n),
                   rng.uniform(-np.pi, np.pi, n))
  else:
    raise ValueError(f"Scene.yaw {scene.yaw!r}: expected 'any' or 'front'")
  pitch = rng.normal(0, np.deg2rad(8), n)
  roll = rng.normal(0, np.deg2rad(6), n)
  r = (_rot('x', np.full(n, np.pi)) @ _rot('y', yaw) @ _rot('x', pitch)
       @ _rot('z', roll))
  pose = np.concatenate([_matrix_to_axis_angle(r), body_pose], 1)
  if scene.num_subjects:
    shapes = subject_betas(seed, scene.num_subjects, num_betas)
    betas = shapes[rng.integers(scene.num_subjects, size=n)]
  else:
    betas = np.clip(rng.standard_normal((n, num_betas)), -2.5, 2.5)
  return pose.astype(np.float32), betas.astype(np.float32)


# ------------------------------------------------------------ rendering (workers)
_SKIN = np.array([[255, 224, 196], [234, 192, 160], [198, 146, 110],
                  [160, 110, 75], [110, 75, 50]], np.float64) / 255.0
_WORKER: dict = {}


def _part_palette() -> np.ndarray:
  """(24, 3) RGB in [0, 1]: one fixed colour per SMPL skinning bone.

  Hues step by the golden ratio over the joint index, so every left/right pair
  (consecutive SMPL indices: hips 1/2, knees 4/5, ... hands 22/23) is 137 deg
  of hue apart and parent / child bones of a limb differ too; saturation and
  value alternate to separate bones whose hues come close.
  """
  j = np.arange(24)
  hue = (j * 0.6180339887) % 1.0
  sat = np.where(j % 3 == 0, 0.55, 0.85)
  val = np.where(j % 2 == 0, 0.95, 0.75)
  hsv = np.stack([hue * 180, sat * 255, val * 255], -1).astype(np.uint8)[None]
  return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64) / 255.0


PART_PALETTE = _part_palette()


def init_worker(faces, face_parts, face_bones=None):
  _WORKER['faces'] = faces
  _WORKER['face_parts'] = face_parts
  _WORKER['face_bones'] = face_bones


def _background(rng: np.random.Generator, h: int, w: int,
                kind: str = 'random') -> np.ndarray:
  if kind == 'plain':  # a studio wall: one muted colour
    grey = rng.uniform(60, 200)
    img = np.empty((h, w, 3))
    img[:] = grey + rng.uniform(-20, 20, 3)
    img = img + rng.normal(0, 3.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
  kind = rng.integers(3)
  if kind == 0:  # linear gradient between two colours
    c0, c1 = rng.uniform(0, 255, (2, 3))
    a = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    t = (np.cos(a) * xx / w + np.sin(a) * yy / h)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 + t[..., None] * (c1 - c0)
  elif kind == 1:  # smooth colour noise
    g = int(rng.integers(3, 12))
    img = cv2.resize(rng.uniform(0, 255, (g, g, 3)), (w, h),
                     interpolation=cv2.INTER_CUBIC)
  else:  # random patches
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(0, 255, 3)
    for _ in range(int(rng.integers(4, 16))):
      col = tuple(float(c) for c in rng.uniform(0, 255, 3))
      x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
      sx, sy = (int(v) for v in rng.integers(w // 12 + 1, w // 2 + 2, 2))
      if rng.uniform() < 0.5:
        cv2.rectangle(img, (x0, y0), (x0 + sx, y0 + sy), col, -1)
      else:
        cv2.ellipse(img, (x0, y0), (sx // 2, sy // 2), float(rng.uniform(0, 180)),
                    0, 360, col, -1)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
  img = img + rng.normal(0, 3.0, img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def render_job(job) -> bytes:
  """(vertices (V,3), translation, focal, center, size, seed, supersample,
  appearance, background) -> JPEG."""
  (vertices, transl, focal, center, size, seed, supersample, appearance,
   background) = job
  vertices = vertices.astype(np.float64) + transl
  faces, face_parts = _WORKER['faces'], _WORKER['face_parts']
  rng = np.random.default_rng(seed)
  h = w = int(size)
  bg = _background(rng, h, w, background)
  skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.1)
  shirt, trousers = rng.uniform(0.05, 0.95, (2, 3))
  part_colors = np.stack([skin, skin, shirt, shirt, shirt, trousers, trousers])
  if rng.uniform() < 0.5:  # short sleeves: bare arms
    part_colors[[render.LEFT_ARM, render.RIGHT_ARM]] = skin
  face_colors = part_colors[face_parts]
  if appearance == 'parts':  # fixed bone colours, brightness jitter only
    face_colors = PART_PALETTE[_WORKER['face_bones']] * rng.uniform(0.85, 1.1)
  light = np.array([rng.normal(0, 0.5), rng.normal(-0.3, 0.4), -1.0])
  img = render.render_mesh(
      vertices, faces, focal, center, (h, w), bg,
      face_colors=np.clip(face_colors, 0, 1),
      ambient=float(rng.uniform(0.25, 0.5)), diffuse=float(rng.uniform(0.5, 0.8)),
      light_dir=light, supersample=supersample, smooth=False)
  ok, buf = cv2.imencode('.jpg', img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                   schema.JPEG_QUALITY])
  if not ok:
    raise RuntimeError('JPEG encoding failed')
  return buf.tobytes()


def place_bodies(rng, lo, hi, size, truncation: float = 0.0):
  """Camera intrinsics and translation putting each body in view.

  lo, hi: (n, 3) bounds of the untranslated meshes. A `truncation` fraction
  of the bodies is moved 0.3-0.5 image sizes off-centre, partly out of frame.
  """
  n = len(lo)
  focal = rng.uniform(1.2, 2.5, n) * size
  frac = rng.uniform(0.5, 0.8, n)  # body height / image height
  height = np.maximum(hi[:, 1] - lo[:, 1], 0.3)
  mid = 0.5 * (lo + hi)
  depth = focal * height / (frac * size)  # of the body's middle
  c = (size - 1) / 2.0
  target = c + rng.uniform(-0.08, 0.08, (n, 2)) * size  # pixel of the middle
  if truncation > 0:
    cut = rng.uniform(size=n) < truncation
    angle = rng.uniform(0, 2 * np.pi, n)
    shift = rng.uniform(0.3, 0.5, n) * size
    off = shift[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    target = np.where(cut[:, None], c + off, target)
  tz = depth - mid[:, 2]
  txy = (target - c) * depth[:, None] / focal[:, None] - mid[:, :2]
  transl = np.concatenate([txy, tz[:, None]], 1)
  return focal, np.array([c, c]), transl


def project(points, focal, center):
  return focal[:, None, None] * points[..., :2] / points[..., 2:3] + center


def face_coarse_parts(model) -> np.ndarray:
  vparts = render.vertex_part_labels(np.asarray(model.lbs_weights))
  return render.face_part_labels(model.faces, vparts)


def face_bones(model) -> np.ndarray:
  """(F,) SMPL joint 0..23 of each face: its vertices' dominant skinning bone."""
  vbones = np.argmax(np.asarray(model.lbs_weights), axis=1).astype(np.uint8)
  return render.face_part_labels(model.faces, vbones)


class RenderPool:
  """Rendering processes (spawned: no fork after JAX) for one body model."""

  def __init__(self, model, num_workers: int | None = None):
    self.faces = np.asarray(model.faces, np.int32)
    self.face_parts = face_coarse_parts(model)
    self.face_bones = face_bones(model)
    self.num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    self._pool = None
    if self.num_workers > 0:
      ctx = multiprocessing.get_context('spawn')
      self._pool = ctx.Pool(self.num_workers, initializer=init_worker,
                            initargs=(self.faces, self.face_parts, self.face_bones))

  def submit(self, jobs):
    """Starts rendering; returns something `collect` turns into JPEG bytes."""
    if self._pool is None:
      init_worker(self.faces, self.face_parts, self.face_bones)
      return [render_job(j) for j in jobs]
    return self._pool.map_async(
        render_job, jobs, chunksize=max(1, len(jobs) // (2 * self.num_workers)))

  @staticmethod
  def collect(result) -> list[bytes]:
    return result if isinstance(result, list) else result.get()

  def close(self):
    if self._pool is not None:
      self._pool.terminate()
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
