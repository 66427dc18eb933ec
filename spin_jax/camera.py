"""Perspective crop camera: projection, weak-perspective conversion, and the
least-squares camera translation SPIN estimates from 3D and 2D joints.

Camera frame is OpenCV's: x right, y down, z forward. SPIN's crop camera has
focal length 5000 px and its principal point at the centre of the 224 crop.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from spin_jax import constants

# A person filling the crop has weak-perspective scale ~0.9 (SPIN's mean
# camera); its depth 2f / (img_res * s) is the default prior of the damping.
_PRIOR_SCALE = 0.9
# The 24 ground-truth joints of the 49; SPIN estimates the camera from these.
GT_JOINT_IDS = tuple(range(constants.NUM_OPENPOSE_JOINTS, constants.NUM_JOINTS))


def perspective_projection(points, translation, focal_length, camera_center,
                           rotation=None):
  """Projects camera-frame points to pixels.

  Args:
    points: (B, N, 3) points in the body frame.
    translation: (B, 3) camera translation (added after the rotation).
    focal_length: scalar, (B,) or (B, 2) focal length(s) in pixels.
    camera_center: (2,) or (B, 2) principal point in pixels.
    rotation: optional (B, 3, 3) camera rotation; identity when None.

  Returns:
    (B, N, 2) pixel coordinates.
  """
  if rotation is not None:
    points = jnp.einsum('bij,bnj->bni', rotation, points)
  points = points + translation[:, None, :]  # (B, N, 3)
  xy = points[..., :2] / points[..., 2:3]  # (B, N, 2)
  f = jnp.asarray(focal_length, dtype=xy.dtype)
  if f.ndim == 1:
    f = f[:, None, None]  # (B,) -> per sample
  elif f.ndim == 2:
    f = f[:, None, :]  # (B, 2) -> per sample and axis
  c = jnp.asarray(camera_center, dtype=xy.dtype)
  c = c[:, None, :] if c.ndim == 2 else c
  return f * xy + c


def weak_perspective_to_translation(cam, focal_length=constants.FOCAL_LENGTH,
                                    img_res=constants.IMG_RES):
  """HMR/SPIN weak-perspective camera (s, tx, ty) -> translation (B, 3).

  Depth follows from matching the perspective scale f / t_z to the weak
  scale s * img_res / 2: t_z = 2 f / (img_res * s).
  """
  s, tx, ty = cam[..., 0], cam[..., 1], cam[..., 2]
  tz = 2.0 * focal_length / (img_res * s + 1e-9)
  return jnp.stack([tx, ty, tz], axis=-1)


def estimate_translation(joints_3d, keypoints_2d,
                         focal_length=constants.FOCAL_LENGTH,
                         img_size=constants.IMG_RES, damping=1e-3,
                         prior_translation=None,
                         joint_ids: Sequence[int] | None = None):
  """Camera translation making 3D joints project onto 2D keypoints.

  For each joint with pixel (u, v), confidence c and 3D position (X, Y, Z),
  the projection equations multiplied out by the depth are linear in t:
    f (X + t_x) - (u - c_x) (Z + t_z) = 0,   f (Y + t_y) - (v - c_y) (Z + t_z) = 0.
  Each row is weighted by sqrt(c) and the weighted least-squares problem is
  solved in closed form (normal equations), as in SPIN.

  Damping: with fewer than two visible joints the system is singular (with
  none, anything goes; with one, the depth is free). We add the Tikhonov term
    damping * [f^2 (t_x - p_x)^2 + f^2 (t_y - p_y)^2 + (img_size/2)^2 (t_z - p_z)^2]
  towards a prior translation p. The per-axis scales make the term equal to
  `damping` times the squared residual change of one fully visible joint at the
  crop border, i.e. `damping` is the weight of a pseudo-observation in units of
  joints: the default 1e-3 biases a fit with many visible joints by ~1e-4
  relative, and with 0 visible joints returns p. Pass damping=0 for SPIN's
  undamped solution (singular systems then give non-finite values).

  Args:
    joints_3d: (B, N, 3) joints in the body frame (no translation).
    keypoints_2d: (B, N, 3) pixels of the crop + confidence.
    focal_length: focal length in pixels.
    img_size: crop side in pixels; the principal point is its centre.
    damping: Tikhonov weight (see above).
    prior_translation: (B, 3) or (3,) damping target; default (0, 0, depth of
      a person filling the crop, 2 f / (0.9 img_size)).
    joint_ids: joints to use. Default: with N == 49 (SPIN's joint set) the 24
      ground-truth joints 25..48, as SPIN does; otherwise all N joints.

  Returns:
    (B, 3) translation, same dtype as joints_3d.
  """
  n = joints_3d.shape[1]
  if keypoints_2d.shape[1] != n or keypoints_2d.shape[-1] != 3:
    raise ValueError(
        f'estimate_translation: keypoints_2d must be (B, {n}, 3) (x, y, conf) '
        f'to match joints_3d {joints_3d.shape}; got {keypoints_2d.shape}.')
  if joint_ids is None and n == constants.NUM_JOINTS:
    joint_ids = GT_JOINT_IDS
  if joint_ids is not None:
    idx = jnp.asarray(joint_ids)
    joints_3d, keypoints_2d = joints_3d[:, idx], keypoints_2d[:, idx]
  dtype = joints_3d.dtype
  keypoints_2d = keypoints_2d.astype(dtype)
  f = jnp.asarray(focal_length, dtype)
  centre = jnp.asarray(img_size, dtype) / 2.0
  uv = keypoints_2d[..., :2] - centre  # (B, N, 2) centred pixels
  w = jnp.maximum(keypoints_2d[..., 2], 0.0)  # (B, N) = sqrt(c)^2
  xy, z = joints_3d[..., :2], joints_3d[..., 2:3]  # (B, N, 2), (B, N, 1)

  # Rows for the x (resp. y) equations: [f, 0, -u] t = u Z - f X.
  b = uv.shape[0]
  zeros = jnp.zeros_like(uv[..., 0])
  fcol = jnp.full_like(uv[..., 0], f)
  rows_x = jnp.stack([fcol, zeros, -uv[..., 0]], -1)  # (B, N, 3)
  rows_y = jnp.stack([zeros, fcol, -uv[..., 1]], -1)  # (B, N, 3)
  q = jnp.concatenate([rows_x, rows_y], 1)  # (B, 2N, 3)
  rhs = jnp.concatenate([uv[..., 0:1] * z - f * xy[..., 0:1],
                         uv[..., 1:2] * z - f * xy[..., 1:2]], 1)[..., 0]
  ww = jnp.concatenate([w, w], 1)  # (B, 2N)
  a = jnp.einsum('bri,br,brj->bij', q, ww, q)  # (B, 3, 3)
  rhs = jnp.einsum('bri,br,br->bi', q, ww, rhs)  # (B, 3)

  if prior_translation is None:
    prior = jnp.stack([0.0, 0.0, 2.0 * f / (_PRIOR_SCALE * img_size)]).astype(dtype)
  else:
    prior = jnp.asarray(prior_translation, dtype)
  prior = jnp.broadcast_to(prior, (b, 3))
  reg = damping * jnp.stack([f**2, f**2, centre**2]).astype(dtype)  # (3,)
  a = a + jnp.eye(3, dtype=dtype) * reg
  rhs = rhs + reg * prior

  # Jacobi scaling: the t_x/t_y and t_z columns differ by ~f/pixels in scale,
  # which costs float32 digits in a plain solve.
  d = 1.0 / jnp.sqrt(jnp.maximum(jnp.diagonal(a, axis1=1, axis2=2),
                                 jnp.finfo(dtype).tiny))  # (B, 3)
  a_s = a * d[:, :, None] * d[:, None, :]
  y = jnp.linalg.solve(a_s, (rhs * d)[..., None])[..., 0]
  return y * d
