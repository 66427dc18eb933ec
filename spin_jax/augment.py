"""SPIN's data augmentation with exact float transforms (numpy + OpenCV, per sample).

One affine map takes original-image pixels to crop pixels; the image is warped
with it (bilinear, black outside) and keypoints are mapped by the very same
float matrix, so image and keypoints never disagree (SPIN truncated keypoints to
integers and rounded crop corners; see SPIN_FACTS "Do better").

Pixel convention: pixel centres sit at integer coordinates (OpenCV's
warpAffine), in the original image and in the crop. The crop map is

    q = 112 + k * R2(-rot) @ (p - c),   k = 224 / (200 * scale * sc)

so the box [c - 100 s sc, c + 100 s sc] spans the crop's [0, 224] and its centre
lands on crop coordinate 112 = the crop camera's principal point, which is also
the point that normalised keypoints 2 q / 224 - 1 put at 0. (The pixel grid of
the crop covers [-0.5, 223.5], half a pixel off the box; what matters is that
image content and keypoints share one map, and that holds exactly.) A flip mirrors the
crop about that same point, q_x -> 224 - q_x, which is exactly a negation of
normalised x and of the camera-frame x of 3D points (principal point 112), so the
flipped image, keypoints, 3D joints and pose stay consistent to float precision.

Augmented frame = flip(rotate(original)) (SPIN_DETAILS): 3D joints and the SMPL
global orientation are rotated by Rz(-rot) about the camera z axis, then the
flip negates x (3D joints; the y and z axis-angle components for poses) and
swaps left and right (the permutations in spin_jax.constants).
"""
from __future__ import annotations

import dataclasses

import numpy as np
from scipy.spatial.transform import Rotation

from spin_jax import constants

J49_FLIP_PERM = np.asarray(constants.J49_FLIP_PERM)
J24_FLIP_PERM = np.asarray(constants.J24_FLIP_PERM)
SMPL_POSE_FLIP_PERM = np.asarray(constants.SMPL_POSE_FLIP_PERM)
IMG_MEAN = np.asarray(constants.IMG_NORM_MEAN, np.float32) * 255.0
IMG_STD = np.asarray(constants.IMG_NORM_STD, np.float32) * 255.0


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """SPIN's augmentation settings (train_options.py defaults)."""
  img_res: int = constants.IMG_RES
  flip_prob: float = 0.5
  rot_factor: float = 30.0      # rot = clip(N(0,1) * factor, -2 factor, 2 factor)
  rot_zero_prob: float = 0.6    # ... and 0 with this probability
  scale_factor: float = 0.25    # sc = clip(N(0,1) * factor + 1, 1 - factor, 1 + factor)
  noise_factor: float = 0.4     # per-channel pixel multiplier U[1 - f, 1 + f]


@dataclasses.dataclass(frozen=True)
class AugmentParams:
  flip: bool = False
  rot: float = 0.0              # degrees, counter-clockwise in the image
  sc: float = 1.0               # box scale multiplier (larger = more context)
  pn: tuple = (1.0, 1.0, 1.0)   # per-channel pixel multipliers (RGB)


def sample_params(rng: np.random.Generator, config: AugmentConfig = AugmentConfig()
                  ) -> AugmentParams:
  """SPIN's random augmentation for one training sample."""
  flip = bool(rng.uniform() < config.flip_prob)
  f = config.noise_factor
  pn = tuple(float(x) for x in rng.uniform(1 - f, 1 + f, size=3))
  rf = config.rot_factor
  rot = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf))
  if rng.uniform() < config.rot_zero_prob:
    rot = 0.0
  sf = config.scale_factor
  sc = float(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
  return AugmentParams(flip=flip, rot=rot, sc=sc, pn=pn)


# ---------------------------------------------------------------- rotations
def rot_z(angle_deg: float) -> np.ndarray:
  """Rotation (3, 3) about the camera z axis by `angle_deg` (x right, y down)."""
  a = np.deg2rad(angle_deg)
  c, s = np.cos(a), np.sin(a)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------- transforms
def crop_matrix(center, scale: float, res: int = constants.IMG_RES,
                rot: float = 0.0, flip: bool = False) -> np.ndarray:
  """Affine (2, 3) float64 from image pixels to crop pixels (module docstring).

  Args:
    center: (2,) box centre (x, y), image pixels.
    scale: box side / 200 (already multiplied by the augmentation's sc).
    res: crop side in pixels.
    rot: degrees; positive turns the image content counter-clockwise.
    flip: mirror the crop about its centre res / 2.
  """
  center = np.asarray(center, np.float64).reshape(2)
  k = res / (constants.BOX_SCALE_UNIT * float(scale))
  a = k * rot_z(-rot)[:2, :2]
  if flip:
    a = np.diag([-1.0, 1.0]) @ a
  b = res / 2 - a @ center
  return np.concatenate([a, b[:, None]], 1)


def invert_affine(m) -> np.ndarray:
  a, b = m[:, :2], m[:, 2]
  ai = np.linalg.inv(a)
  return np.concatenate([ai, -(ai @ b)[:, None]], 1)


def warp_image(image: np.ndarray, m: np.ndarray, res: int = constants.IMG_RES
               ) -> np.ndarray:
  """Crop (res, res, C) of `image` by the affine `m`; bilinear, black outside."""
  import cv2  # pylint: disable=g-import-not-at-top  # data path only
  return cv2.warpAffine(image, m, (res, res), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def transform_keypoints(kp, m, flip: bool, flip_perm=J49_FLIP_PERM) -> np.ndarray:
  """(N, 3) x, y, conf image pixels -> crop pixels (float64); conf kept.

  A flip (already inside `m`) also swaps left and right joints.
  """
  kp = np.asarray(kp, np.float64)
  out = kp.copy()
  out[:, :2] = kp[:, :2] @ m[:, :2].T + m[:, 2]
  if flip:
    out = out[np.asarray(flip_perm)]
  return out


def untransform_keypoints(kp, m, flip: bool, flip_perm=J49_FLIP_PERM) -> np.ndarray:
  """Inverse of `transform_keypoints` (the flip permutations are involutions)."""
  kp = np.asarray(kp, np.float64)
  if flip:
    kp = kp[np.asarray(flip_perm)]
  return transform_keypoints(kp, invert_affine(m), False)


def transform_joints_3d(s, rot: float, flip: bool) -> np.ndarray:
  """(24, 4) x, y, z, conf: rotate by Rz(-rot), then flip (negate x, permute)."""
  s = np.asarray(s, np.float64)
  out = s.copy()
  out[:, :3] = s[:, :3] @ rot_z(-rot).T
  if flip:
    out = out[J24_FLIP_PERM]
    out[:, 0] = -out[:, 0]
  return out


def flip_pose(pose) -> np.ndarray:
  """SPIN pose flip (72,): swap left/right joints, negate axis-angle y and z."""
  pose = np.asarray(pose, np.float64)[SMPL_POSE_FLIP_PERM].copy()
  pose[1::3] *= -1
  pose[2::3] *= -1
  return pose


def rotate_global_orient(pose, rot: float) -> np.ndarray:
  """Left-multiplies the global orientation of a (72,) pose by Rz(-rot)."""
  pose = np.asarray(pose, np.float64).copy()
  if rot != 0.0:
    pose[:3] = (Rotation.from_matrix(rot_z(-rot))
                * Rotation.from_rotvec(pose[:3])).as_rotvec()
  return pose


def transform_pose(pose, rot: float, flip: bool) -> np.ndarray:
  """(72,) axis-angle into the augmented frame: rotate, then flip."""
  pose = rotate_global_orient(pose, rot)
  return flip_pose(pose) if flip else pose


def untransform_pose(pose, rot: float, flip: bool) -> np.ndarray:
  """(72,) augmented frame -> original frame (flip is its own inverse)."""
  pose = flip_pose(pose) if flip else np.asarray(pose, np.float64)
  return rotate_global_orient(pose, -rot)


def normalize_image(image: np.ndarray, pn=(1.0, 1.0, 1.0)) -> np.ndarray:
  """uint8 RGB (H, W, 3) -> float32 normalised, after the pixel multiplier.

  SPIN: x * pn per channel, clip to [0, 255], / 255, (x - mean) / std.
  """
  x = image.astype(np.float32)
  if tuple(pn) != (1.0, 1.0, 1.0):
    x = np.clip(x * np.asarray(pn, np.float32), 0.0, 255.0)
  return (x - IMG_MEAN) / IMG_STD


def denormalize_image(x: np.ndarray) -> np.ndarray:
  """Inverse of `normalize_image` (pn = 1) -> uint8 RGB, for viewing."""
  return np.clip(np.rint(np.asarray(x) * IMG_STD + IMG_MEAN), 0, 255).astype(np.uint8)


def normalize_keypoints(kp_px, res: int = constants.IMG_RES) -> np.ndarray:
  """Crop pixels (N, 3) -> [-1, 1] x, y (2 q / res - 1), conf kept."""
  out = np.array(kp_px, np.float64)
  out[:, :2] = 2.0 * out[:, :2] / res - 1.0
  return out


def augment_example(example: dict, params: AugmentParams,
                    res: int = constants.IMG_RES) -> dict:
  """One example (schema fields, decoded image) -> the model-input fields.

  Needs image, center, scale; part, openpose, S, pose, shape default to zeros.

  Returns image (res, res, 3) f32 normalised, keypoints (49, 3) f32 in [-1, 1],
  pose_3d (24, 4) f32, pose (72,) f32, betas (10,) f32, plus the crop matrix
  `crop_matrix` (2, 3) f64 (image pixels -> crop pixels) for callers that need it.
  """
  image = np.asarray(example['image'])
  if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
    raise ValueError(f"example['image'] must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
  scale = float(example['scale']) * params.sc
  if not scale > 0:
    raise ValueError(f"example['scale'] must be > 0, got {example['scale']}")
  m = crop_matrix(example['center'], scale, res, params.rot, params.flip)
  crop = warp_image(image, m, res)
  field = lambda k, shape: _field(example, k, shape)
  kp = np.concatenate([field('openpose', (25, 3)), field('part', (24, 3))])
  kp = transform_keypoints(kp, m, params.flip)
  return dict(
      image=normalize_image(crop, params.pn),
      keypoints=normalize_keypoints(kp, res).astype(np.float32),
      pose_3d=transform_joints_3d(field('S', (24, 4)), params.rot,
                                  params.flip).astype(np.float32),
      pose=transform_pose(field('pose', (72,)), params.rot,
                          params.flip).astype(np.float32),
      betas=field('shape', (10,)).astype(np.float32),
      crop_matrix=m,
  )


def _field(example: dict, key: str, shape: tuple) -> np.ndarray:
  """A label field as float64 of `shape`; zeros (SPIN's default) when absent."""
  if key not in example:
    return np.zeros(shape)
  x = np.asarray(example[key], np.float64)
  if x.size != int(np.prod(shape)):
    raise ValueError(f'example[{key!r}] must have shape {shape}, got {x.shape}')
  return x.reshape(shape)
