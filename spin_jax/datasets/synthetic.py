"""The embedded synthetic dataset: the default body model rendered in sampled scenes.

Every example is one person rendered with spin_jax.render over a random
background, in the schema of spin_jax/datasets/schema.py, with EXACT labels:
2D keypoints are the projections of the body model's 49 joints, S its 24 GT
joints in the camera frame, pose/shape the SMPL parameters of the rendered body.

Scene sampling (per example, seeded by (seed, split, example index)):
- body pose: the default GMM pose prior (spin_jax/assets/pose_prior_gmm08.npz)
  when present, else a simple anatomical sampler (`simple_pose_sampler`);
- betas ~ N(0, 1) clipped to [-2.5, 2.5] (the default model's betas are unit
  variance);
- global orientation in the OpenCV camera frame (x right, y down, z forward):
  Rx(180 deg) (the body model is y-up and faces +z) @ Ry(yaw) @ small tilts,
  yaw mostly frontal (70 %: N(0, 45 deg), 30 %: uniform);
- camera: focal length U(1.2, 2.5) x image size, principal point at the image
  centre, the body's height 50-80 % of the image, centred with jitter;
- appearance: skin / shirt / trousers colours per body part, Lambertian light
  from a random frontal direction, background = colour gradient, smooth noise or
  random patches (+ pixel noise), JPEG.

Easy settings (for the CPU quickstart; every preset of SIZES keeps the
defaults, and the config name records any change):
- appearance='parts': every face takes the fixed colour of its dominant
  skinning bone (PART_PALETTE, 24 colours; left and right limbs differ), with
  a random brightness and the same lighting. The default clothing is left/right
  symmetric, so a small network trained briefly cannot tell left from right (or
  front from back) limbs; with fixed bone colours it can. Flipping such images
  in training swaps which side carries which colour: train without flips
  (--config.data.flip_prob=0) and with little colour noise.
- pose_scale < 1: each GMM sample's deviation from its mixture component's
  mean is multiplied by pose_scale (poses gather around the prior's 8 modes;
  the simple sampler scales around its mean pose). The mean-pose baseline
  error drops with it.

Domains (SyntheticConfig.domains), for the SPIN-effect experiment
(experiments/spin_effect.py), chosen once and not tuned to its results:
- 'same' (the default): every split is drawn from one scene, `Scene()` with
  the config's pose_scale: the sampling described above.
- 'studio_wild': SPIN's data situation. 'train_3d' is a STUDIO (like Human3.6M
  / MPI-INF-3DHP): poses from 3 of the prior's 8 modes (the heaviest:
  standing, walking, sitting) at 0.6 of their spread, mostly frontal views
  (yaw U(-45, 45) deg), 5 fixed body shapes (subjects), plain backgrounds, no
  truncation. 'train_2d' and 'test' are IN THE WILD (like LSP / MPII / COCO
  and 3DPW): the full prior, all viewpoints, a new body shape per person,
  varied backgrounds, and 25 % of the people placed partly outside the frame
  (the middle of the body 0.3-0.5 image sizes off-centre).
  See `Scene`, `STUDIO` and `WILD`.

Splits (mimicking SPIN's mix):
- 'train_3d': full labels (has_smpl = 1, has_pose_3d = 1), like H36M / 3DHP;
- 'train_2d': in-the-wild style: has_smpl = 0, has_pose_3d = 0 (pose, shape and S
  are still stored, for evaluation, but flagged absent); part = exact
  projections, openpose = projections + N(0, 1.5 px x size/160) noise with scores
  U(0.5, 1);
- 'test': full labels.
In every split `part` holds the 24 GT joints (conf 1 inside the image, else 0),
`openpose` the 25 OpenPose joints (noisy, as above), the box is the tight box of
the visible GT joints x 1.2 (SPIN's LSP/3DHP rule), gender -1 (neutral model),
index = position in the split, fit = the mean-parameter fit (has_fit 0).
The stored image is the full rendered frame (crop_origin 0, crop_zoom 1).

Storage: a TFDS dataset (array_record, example order = index) at
<data_dir>/spin_synthetic/<config name>/1.0.0, the config name spelling out
sizes, image size, seed and body model so several builds coexist. Rendering runs
in a process pool (numpy + OpenCV only); body-model forward passes run batched
in the parent with JAX.

    from spin_jax.datasets import synthetic
    path = synthetic.build_synthetic(data_dir, size='quickstart')
    train = synthetic.sources(data_dir, 'train', size='quickstart')  # [(name, src)]
    test = synthetic.data_source(data_dir, 'test', size='quickstart')
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import logging
import multiprocessing
import os
from typing import Any, Iterator

import cv2
import jax
import numpy as np
from scipy.spatial.transform import Rotation
import tqdm

from spin_jax import constants
from spin_jax import render
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax.datasets import schema
from spin_jax.datasets import static_fits

TFDS_NAME = 'spin_synthetic'
_DESCRIPTION = ('spin_jax synthetic set: the default body model rendered in '
                'sampled poses, shapes, cameras and backgrounds, exact labels.')
VERSION = '1.0.0'
SPLITS = ('train_3d', 'train_2d', 'test')
# Names used in the input pipeline / fits table, and their splits.
DATASET_SPLITS = {'synthetic-3d': 'train_3d', 'synthetic-2d': 'train_2d',
                  'synthetic-test': 'test'}
TRAIN_DATASETS = ('synthetic-3d', 'synthetic-2d')
# Mixing shares in the spirit of SPIN (3D-labelled sets 0.4, in-the-wild 0.6).
MIXING_GROUPS = ((('synthetic-3d',), 0.4), (('synthetic-2d',), 0.6))
SIZES = {
    'tiny': dict(num_train_3d=24, num_train_2d=40, num_test=16, image_size=96),
    'quickstart': dict(num_train_3d=800, num_train_2d=1200, num_test=500,
                       image_size=160),
    'small': dict(num_train_3d=8000, num_train_2d=12000, num_test=2000,
                  image_size=224),
    'large': dict(num_train_3d=40000, num_train_2d=60000, num_test=5000,
                  image_size=256),
}
APPEARANCES = ('clothes', 'parts')
DOMAINS = ('same', 'studio_wild')


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
_SPLIT_IDS = {s: k for k, s in enumerate(SPLITS)}
_CHUNK = 64  # examples per body-model forward pass / per pool task batch


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  num_train_3d: int = 800
  num_train_2d: int = 1200
  num_test: int = 500
  image_size: int = 160
  seed: int = 0
  body_model: str = 'default'   # 'default', 'default-low' or a model path
  supersample: int = 1          # anti-aliasing factor of the renderer
  # 'clothes': skin / shirt / trousers in random colours (the default);
  # 'parts': a fixed colour per skinning bone (PART_PALETTE), see the docstring.
  appearance: str = 'clothes'
  pose_scale: float = 1.0       # pose spread around the prior's modes (1 = the prior)
  domains: str = 'same'         # 'same' or 'studio_wild' (see the module docstring)

  def scene(self, split: str) -> Scene:
    """The scene `split` is drawn from."""
    if self.domains == 'studio_wild':
      return STUDIO if split == 'train_3d' else WILD
    return Scene(pose_scale=self.pose_scale)

  @property
  def name(self) -> str:
    bm = self.body_model if self.body_model.startswith('default') else (
        'bm' + hashlib.sha1(os.path.abspath(self.body_model).encode()).hexdigest()[:8])
    return (f'n{self.num_train_3d}_{self.num_train_2d}_{self.num_test}'
            f'_px{self.image_size}_seed{self.seed}_{bm}'
            + (f'_ss{self.supersample}' if self.supersample != 1 else '')
            + (f'_{self.appearance}' if self.appearance != 'clothes' else '')
            + (f'_ps{self.pose_scale:g}' if self.pose_scale != 1.0 else '')
            + ('_studio_wild' if self.domains == 'studio_wild' else ''))

  def num_examples(self, split: str) -> int:
    return dict(train_3d=self.num_train_3d, train_2d=self.num_train_2d,
                test=self.num_test)[split]


def make_config(size: str | None = None, **overrides) -> SyntheticConfig:
  """A size preset ('tiny', 'quickstart', 'small', 'large') with overrides."""
  base = {}
  if size is not None:
    if size not in SIZES:
      raise ValueError(f'synthetic size {size!r}: expected one of {sorted(SIZES)}')
    base = dict(SIZES[size])
  base.update({k: v for k, v in overrides.items() if v is not None})
  cfg = SyntheticConfig(**base)
  for split in SPLITS:
    if cfg.num_examples(split) < 0:
      raise ValueError(f'number of {split} examples must be >= 0, got '
                       f'{cfg.num_examples(split)}')
  if cfg.image_size < 32:
    raise ValueError(f'image_size must be >= 32, got {cfg.image_size}')
  if not 0.0 <= cfg.pose_scale <= 1.0:
    raise ValueError(f'pose_scale must lie in [0, 1], got {cfg.pose_scale}')
  if cfg.appearance not in APPEARANCES:
    raise ValueError(f'appearance {cfg.appearance!r}: expected one of {APPEARANCES}')
  if cfg.domains not in DOMAINS:
    raise ValueError(f'domains {cfg.domains!r}: expected one of {DOMAINS}')
  if cfg.domains != 'same' and cfg.pose_scale != 1.0:
    raise ValueError(f'pose_scale {cfg.pose_scale} applies to domains=same only; '
                     f'{cfg.domains!r} fixes each split\'s scene (synthetic.STUDIO / WILD)')
  return cfg


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
def _gmm_prior():
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'assets',
                      'pose_prior_gmm08.npz')
  if not os.path.isfile(path):
    return None
  with np.load(path) as f:
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
  gmm = _gmm_prior()
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
  gmm = _gmm_prior()
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


def _init_worker(faces, face_parts, face_bones=None):
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


def _render_job(job) -> bytes:
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


# ------------------------------------------------------------ examples
def _load_body_model(spec):
  model = (smpl_io.resolve_body_model(spec) if isinstance(spec, str) else spec)
  if model.num_betas < constants.NUM_BETAS:  # the schema stores 10 betas
    raise ValueError(f'body model {getattr(model, "name", spec)!r} has '
                     f'{model.num_betas} shape components; the synthetic dataset '
                     f'needs {constants.NUM_BETAS}.')
  return model


@functools.lru_cache(maxsize=1)
def _forward_fn():

  @jax.jit
  def fwd(model, pose, betas):
    out = smpl.forward(model, betas, pose[:, 3:], pose[:, :3])
    # Mesh bounds here: numpy reductions over (B, V, 3) axis 1 are slow.
    return out.vertices, out.joints, out.vertices.min(1), out.vertices.max(1)
  return fwd


def _place(rng, lo, hi, size, truncation: float = 0.0):
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


def _project(points, focal, center):
  return focal[:, None, None] * points[..., :2] / points[..., 2:3] + center


def _examples_for_chunk(split, cfg, start, n, model, fwd, mean_fit):
  """Scene parameters, labels and render jobs of examples start .. start+n-1."""
  rng = np.random.default_rng([cfg.seed, _SPLIT_IDS[split], start])
  scene = cfg.scene(split)
  pose, betas = sample_bodies(rng, n, model.num_betas, scene=scene, seed=cfg.seed)
  pad = _CHUNK - n  # one compiled batch shape for every chunk
  verts, joints, lo, hi = (np.asarray(a)[:n] for a in fwd(
      model, np.pad(pose, ((0, pad), (0, 0))), np.pad(betas, ((0, pad), (0, 0)))))
  size = cfg.image_size
  focal, center, transl = _place(rng, lo.astype(np.float64), hi.astype(np.float64),
                                 size, scene.truncation)
  joints = joints.astype(np.float64) + transl[:, None]
  kp = _project(joints, focal, center)  # (n, 49, 2)
  inside = np.all((kp > -0.5) & (kp < size - 0.5), -1) & (joints[..., 2] > 0)
  gt = joints[:, constants.NUM_OPENPOSE_JOINTS:]  # (n, 24, 3) GT joints
  s3d = gt - gt[:, 14:15]  # root-centred on Pelvis (MPII), as SPIN's S
  noise = 1.5 * size / 160.0
  examples, jobs = [], []
  for k in range(n):
    idx = start + k
    part = np.concatenate([kp[k, 25:], inside[k, 25:, None]], 1)
    part[~inside[k, 25:]] = 0
    op_xy = kp[k, :25] + rng.normal(0, noise, (25, 2))
    op = np.concatenate([op_xy, rng.uniform(0.5, 1.0, (25, 1))], 1)
    op[~inside[k, :25]] = 0
    vis = part[part[:, 2] > 0, :2]
    if len(vis) < 2:  # body out of view: box from all joints
      vis = kp[k, 25:]
    lo, hi = vis.min(0), vis.max(0)
    box_center = 0.5 * (lo + hi)
    box_scale = max(float((hi - lo).max()), 8.0) * 1.2 / schema.BOX_SCALE_UNIT
    full = split != 'train_2d'
    ex = schema.default_example()
    ex.update(
        imgname=f'{split}/{idx:07d}.jpg', index=np.int64(idx),
        center=box_center.astype(np.float32), scale=np.float32(box_scale),
        part=part.astype(np.float32), openpose=op.astype(np.float32),
        S=np.concatenate([s3d[k], np.ones((24, 1))], 1).astype(np.float32),
        pose=pose[k].astype(np.float32), shape=betas[k].astype(np.float32),
        has_smpl=np.float32(full), has_pose_3d=np.float32(full),
        gender=np.int32(-1), fit=mean_fit, has_fit=np.float32(0),
        orig_center=box_center.astype(np.float32), orig_scale=np.float32(box_scale),
        orig_size=np.array([size, size], np.int32),
        crop_origin=np.zeros(2, np.float32), crop_zoom=np.float32(1))
    examples.append(ex)
    seed = int(rng.integers(2**63))
    jobs.append((verts[k], transl[k], float(focal[k]), center, size, seed,
                 cfg.supersample, cfg.appearance, scene.background))
  return examples, jobs


def _face_parts(model) -> np.ndarray:
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
    self.face_parts = _face_parts(model)
    self.face_bones = face_bones(model)
    self.num_workers = (os.cpu_count() or 1) if num_workers is None else int(num_workers)
    self._pool = None
    if self.num_workers > 0:
      ctx = multiprocessing.get_context('spawn')
      self._pool = ctx.Pool(self.num_workers, initializer=_init_worker,
                            initargs=(self.faces, self.face_parts, self.face_bones))

  def submit(self, jobs):
    """Starts rendering; returns something `collect` turns into JPEG bytes."""
    if self._pool is None:
      _init_worker(self.faces, self.face_parts, self.face_bones)
      return [_render_job(j) for j in jobs]
    return self._pool.map_async(
        _render_job, jobs, chunksize=max(1, len(jobs) // (2 * self.num_workers)))

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


@functools.lru_cache(maxsize=1)
def _mean_fit():
  return static_fits.mean_params_fit().astype(np.float32)


def generate_examples(split: str, cfg: SyntheticConfig, model=None,
                      num_workers: int | None = None, progress: bool = False,
                      pool: RenderPool | None = None) -> Iterator[dict]:
  """Yields the examples of `split` in index order (image = JPEG bytes).

  Renders with `pool` if given, else with a pool of `num_workers` processes.
  """
  if split not in SPLITS:
    raise ValueError(f'split {split!r}: expected one of {SPLITS}')
  model = _load_body_model(cfg.body_model if model is None else model)
  fwd = _forward_fn()
  total = cfg.num_examples(split)
  bar = None
  if progress:
    bar = tqdm.tqdm(total=total, unit='img', desc=f'synthetic {split}')
  own_pool = pool is None
  if own_pool:
    pool = RenderPool(model, num_workers)
  try:
    pending = None  # the pool renders chunk k while the parent prepares k + 1
    for start in range(0, total, _CHUNK):
      n = min(_CHUNK, total - start)
      examples, jobs = _examples_for_chunk(split, cfg, start, n, model, fwd,
                                           _mean_fit())
      result = pool.submit(jobs)
      if pending is not None:
        yield from _finish(*pending, bar)
      pending = (examples, result)
    if pending is not None:
      yield from _finish(*pending, bar)
  finally:
    if own_pool:
      pool.close()
    if bar is not None:
      bar.close()


def _finish(examples, result, bar):
  images = RenderPool.collect(result)
  for ex, img in zip(examples, images):
    ex['image'] = img
    if bar is not None:
      bar.update(1)
    yield ex


# ------------------------------------------------------------ TFDS
@functools.lru_cache(maxsize=1)
def _builder_class():
  # TensorFlow (slow to import) only when the dataset is built or read.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class SpinSynthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """spin_jax's synthetic dataset (see spin_jax/datasets/synthetic.py)."""

    name = TFDS_NAME
    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): 'Default body model in sampled scenes, schema 1.0.0.'}

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):  # pylint: disable=no-self-argument
      return epath.Path(__file__)

    def __init__(self, *, synthetic_config: SyntheticConfig, body_model=None,
                 num_workers: int | None = None, **kwargs):
      kwargs.setdefault('file_format', 'array_record')
      kwargs['config'] = tfds.core.BuilderConfig(
          name=synthetic_config.name, version=VERSION,
          description=json.dumps(dataclasses.asdict(synthetic_config)))
      self._synthetic_config = synthetic_config
      self._body_model = body_model
      self._num_workers = num_workers
      super().__init__(**kwargs)

    def _info(self):
      return self.dataset_info_from_configs(
          description=_DESCRIPTION,
          features=schema.features(),
          supervised_keys=None,
          disable_shuffling=True,  # source[i]['index'] == i
          metadata=tfds.core.MetadataDict(
              synthetic_config=json.dumps(dataclasses.asdict(self._synthetic_config)),
              scenes=json.dumps({sp: dataclasses.asdict(self._synthetic_config.scene(sp))
                                 for sp in SPLITS}),
              pose_sampler='gmm' if _gmm_prior() is not None else 'simple'),
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      self._model = _load_body_model(
          self._synthetic_config.body_model if self._body_model is None
          else self._body_model)
      self._pool = RenderPool(self._model, self._num_workers)  # all splits
      return {s: self._generate_examples(s) for s in SPLITS
              if self._synthetic_config.num_examples(s) > 0}

    def _generate_examples(self, split):  # pylint: disable=arguments-differ
      # TFDS shows its own per-split progress bar.
      for ex in generate_examples(split, self._synthetic_config, self._model,
                                  pool=self._pool):
        ex['image'] = io.BytesIO(ex['image'])
        yield int(ex['index']), ex

  return SpinSynthetic


def build_kwargs(train_size: int, test_size: int, img_res: int, seed: int = 0,
                 body_model: str = 'default', appearance: str = 'clothes',
                 pose_scale: float = 1.0, domains: str = 'same') -> dict:
  """The build settings a training config implies (one canonical mapping).

  40 % of `train_size` get full 3D labels, the rest 2D only (SPIN's
  3D / in-the-wild ratio); images are rendered at max(96, img_res) pixels.
  Pass the result to `sources`, `data_source` or `build_synthetic`.
  """
  n3d = int(0.4 * int(train_size))
  return dict(size=None, num_train_3d=n3d, num_train_2d=int(train_size) - n3d,
              num_test=int(test_size), image_size=max(96, int(img_res)),
              seed=int(seed), body_model=body_model, appearance=appearance,
              pose_scale=float(pose_scale), domains=domains)


def build_kwargs_from_config(config) -> dict:
  """`build_kwargs` of a training config (experiments/configs/default.py): the
  synthetic set that config trains and validates on."""
  d = config.data
  return build_kwargs(d.synthetic_train_size, d.synthetic_test_size,
                      config.model.img_res, seed=config.seed,
                      body_model=config.body_model,
                      appearance=d.get('synthetic_appearance', 'clothes'),
                      pose_scale=d.get('synthetic_pose_scale', 1.0),
                      domains=d.get('synthetic_domains', 'same'))


def dataset_dir(data_dir: str, cfg: SyntheticConfig) -> str:
  return os.path.join(data_dir, TFDS_NAME, cfg.name, VERSION)


def build_synthetic(data_dir: str, num_train_3d: int | None = None,
                    num_train_2d: int | None = None, num_test: int | None = None,
                    image_size: int | None = None, seed: int | None = None,
                    body_model: Any = None, *, size: str | None = 'quickstart',
                    num_workers: int | None = None, supersample: int | None = None,
                    appearance: str | None = None, pose_scale: float | None = None,
                    domains: str | None = None, progress: bool = True) -> str:
  """Builds (or finds) the synthetic TFDS dataset; returns its directory.

  Args:
    data_dir: TFDS data dir; the dataset goes to `dataset_dir(data_dir, cfg)`.
    num_train_3d, num_train_2d, num_test, image_size, seed: override the preset.
    body_model: 'default' | 'default-low' | a model path, or a loaded
      smpl.BodyModel (then its `name` must identify it; pass the spec string
      when you can, it becomes part of the dataset name).
    size: preset of SIZES ('tiny', 'quickstart', 'small', 'large') or None.
    num_workers: rendering processes (default: all cores; 0 = in-process).
  """
  spec = body_model if isinstance(body_model, str) or body_model is None else (
      getattr(body_model, 'name', None) or 'custom')
  cfg = make_config(size, num_train_3d=num_train_3d, num_train_2d=num_train_2d,
                    num_test=num_test, image_size=image_size, seed=seed,
                    body_model=spec, supersample=supersample,
                    appearance=appearance, pose_scale=pose_scale, domains=domains)
  path = dataset_dir(data_dir, cfg)
  if os.path.isfile(os.path.join(path, 'dataset_info.json')):
    return path
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  model = body_model if body_model is not None and not isinstance(body_model, str) else None
  builder = _builder_class()(data_dir=data_dir, synthetic_config=cfg,
                             body_model=model, num_workers=num_workers)
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
  bars = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(bars and progress)  # TFDS's own bars follow `progress`
  try:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False))
  finally:
    tfds.display_progress_bar(bars)
    pool = getattr(builder, '_pool', None)
    if pool is not None:
      pool.close()
  logging.info('synthetic dataset written to %s', path)
  return path


def data_source(data_dir: str, split: str, *, build: bool = True, **build_kwargs):
  """Random-access source of one split ('train_3d', 'train_2d', 'test', or a
  name of DATASET_SPLITS); builds the dataset first if missing (build=True)."""
  split = DATASET_SPLITS.get(split, split)
  if split not in SPLITS:
    raise ValueError(f'split {split!r}: expected one of {SPLITS} or {list(DATASET_SPLITS)}')
  build_kwargs.setdefault('progress', False)
  if build:
    path = build_synthetic(data_dir, **build_kwargs)
  else:
    kw = {k: v for k, v in build_kwargs.items()
          if k in ('num_train_3d', 'num_train_2d', 'num_test', 'image_size', 'seed',
                   'supersample', 'appearance', 'pose_scale', 'domains')}
    path = dataset_dir(data_dir, make_config(build_kwargs.get('size', 'quickstart'),
                                             body_model=build_kwargs.get('body_model'), **kw))
    if not os.path.isdir(path):
      raise FileNotFoundError(f'synthetic dataset not built: no {path} '
                              '(python data_prep/build.py --dataset synthetic)')
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds.builder_from_directory(path).as_data_source(split=split)


def sources(data_dir: str, split: str = 'train', **build_kwargs
            ) -> list[tuple[str, Any]]:
  """(name, source) pairs for InputPipeline: 'train' -> synthetic-3d and
  synthetic-2d (mix with `MIXING_GROUPS`, the default), 'test' -> synthetic-test."""
  if split == 'train':
    names = TRAIN_DATASETS
  elif split == 'test':
    names = ('synthetic-test',)
  else:
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  return [(n, data_source(data_dir, n, **build_kwargs)) for n in names]
