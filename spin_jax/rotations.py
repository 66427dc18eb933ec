"""Rotation conversions: axis-angle, matrices, quaternions and SPIN's 6D layout.

All functions take arrays with arbitrary leading dimensions, work under
jit/vmap/grad in float32 and float64, and are smooth where the underlying map
is smooth:

* axis-angle -> matrix/quaternion uses Taylor series near zero, so values and
  gradients are exact at the identity (no ``+ 1e-8`` fudge as in SMPL/SPIN).
* matrix -> quaternion uses Shepperd's method (branch on the largest of
  ``1 + trace`` and the diagonal terms), so it is stable near 180 degrees.
* quaternion -> axis-angle uses ``atan2`` with a series near zero.

Quaternions are ``(w, x, y, z)`` with the scalar first.
"""
from __future__ import annotations

import jax.numpy as jnp

from spin_jax import constants

# Below this squared angle the series are exact to float64 rounding.
_SMALL_ANGLE_SQ = 1e-6


def _safe_norm_sq(v):
  return jnp.sum(v * v, axis=-1)


def skew(v):
  """Cross-product matrices: skew(v) @ u == cross(v, u). (...,3) -> (...,3,3)."""
  x, y, z = v[..., 0], v[..., 1], v[..., 2]
  o = jnp.zeros_like(x)
  return jnp.stack([
      jnp.stack([o, -z, y], -1),
      jnp.stack([z, o, -x], -1),
      jnp.stack([-y, x, o], -1)], -2)


def _sinc_and_cosc(theta_sq):
  """sin(t)/t and (1-cos t)/t^2 of t = sqrt(theta_sq), smooth at t = 0."""
  small = theta_sq < _SMALL_ANGLE_SQ
  t2 = jnp.where(small, jnp.ones_like(theta_sq), theta_sq)  # keeps grads finite
  t = jnp.sqrt(t2)
  a = jnp.where(small, 1.0 - theta_sq / 6.0 + theta_sq**2 / 120.0,
                jnp.sin(t) / t)
  b = jnp.where(small, 0.5 - theta_sq / 24.0 + theta_sq**2 / 720.0,
                (1.0 - jnp.cos(t)) / t2)
  return a, b


def axis_angle_to_matrix(aa):
  """Rodrigues' formula. (...,3) -> (...,3,3)."""
  a, b = _sinc_and_cosc(_safe_norm_sq(aa))
  k = skew(aa)
  eye = jnp.eye(3, dtype=aa.dtype)
  return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def axis_angle_to_quaternion(aa):
  """(...,3) -> (...,4) unit quaternion (w, x, y, z)."""
  theta_sq = _safe_norm_sq(aa)
  small = theta_sq < _SMALL_ANGLE_SQ
  t2 = jnp.where(small, jnp.ones_like(theta_sq), theta_sq)
  t = jnp.sqrt(t2)
  # sin(t/2)/t and cos(t/2), with their series near zero.
  s = jnp.where(small, 0.5 - theta_sq / 48.0 + theta_sq**2 / 3840.0,
                jnp.sin(0.5 * t) / t)
  w = jnp.where(small, 1.0 - theta_sq / 8.0 + theta_sq**2 / 384.0,
                jnp.cos(0.5 * t))
  return jnp.concatenate([w[..., None], aa * s[..., None]], axis=-1)


def quaternion_to_matrix(q):
  """(...,4) (w, x, y, z), any non-zero norm -> (...,3,3)."""
  w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
  s = 2.0 / jnp.sum(q * q, axis=-1)
  xx, yy, zz = x * x * s, y * y * s, z * z * s
  xy, xz, yz = x * y * s, x * z * s, y * z * s
  wx, wy, wz = w * x * s, w * y * s, w * z * s
  return jnp.stack([
      jnp.stack([1.0 - yy - zz, xy - wz, xz + wy], -1),
      jnp.stack([xy + wz, 1.0 - xx - zz, yz - wx], -1),
      jnp.stack([xz - wy, yz + wx, 1.0 - xx - yy], -1)], -2)


def matrix_to_quaternion(rot):
  """Shepperd's method. (...,3,3) -> (...,4) unit quaternion with w >= 0."""
  r = rot
  m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
  # 4*q_i^2 for i = w, x, y, z; the largest is >= 1, so its sqrt is safe.
  cands = jnp.stack([1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22,
                     1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], -1)
  d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
  s21, s02, s10 = r[..., 2, 1] + r[..., 1, 2], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 0] + r[..., 0, 1]
  # Row i: 4*q_i*(w, x, y, z), each computed from the off-diagonal terms.
  rows = jnp.stack([
      jnp.stack([cands[..., 0], d21, d02, d10], -1),
      jnp.stack([d21, cands[..., 1], s10, s02], -1),
      jnp.stack([d02, s10, cands[..., 2], s21], -1),
      jnp.stack([d10, s02, s21, cands[..., 3]], -1)], -2)
  best = jnp.argmax(cands, axis=-1)
  row = jnp.take_along_axis(rows, best[..., None, None], axis=-2)[..., 0, :]
  denom = jnp.take_along_axis(cands, best[..., None], axis=-1)
  q = row / (2.0 * jnp.sqrt(jnp.maximum(denom, 0.25)))
  return q * jnp.where(q[..., :1] < 0, -1.0, 1.0)


def quaternion_to_axis_angle(q):
  """(...,4) (w, x, y, z), any non-zero norm -> (...,3), angle in [0, pi]."""
  q = q * jnp.where(q[..., :1] < 0, -1.0, 1.0)  # same rotation, w >= 0
  w, v = q[..., 0], q[..., 1:]
  n_sq = _safe_norm_sq(v)
  small = n_sq < _SMALL_ANGLE_SQ * jnp.maximum(w * w, 1e-30)
  n = jnp.sqrt(jnp.where(small, jnp.ones_like(n_sq), n_sq))
  # angle / |v| = 2 atan2(n, w) / n; near n = 0 its series in n/w.
  w_safe = jnp.where(small, w, jnp.ones_like(w))
  ratio = jnp.where(small,
                    2.0 / w_safe - (2.0 / 3.0) * n_sq / w_safe**3,
                    2.0 * jnp.arctan2(n, w) / n)
  return v * ratio[..., None]


def matrix_to_axis_angle(rot):
  """(...,3,3) -> (...,3), robust at 0 and near pi (via quaternions)."""
  return quaternion_to_axis_angle(matrix_to_quaternion(rot))


def rot6d_to_matrix(x):
  """SPIN's 6D rotation: (...,6) -> (...,3,3).

  The 6 numbers are a 3x2 matrix in row-major order (column 1 = elements 0, 2,
  4; column 2 = 1, 3, 5); Gram-Schmidt gives b1, b2, then b3 = b1 x b2; the
  result has columns (b1, b2, b3). This layout loads the released checkpoint.
  """
  m = x.reshape(x.shape[:-1] + (3, 2))
  a1, a2 = m[..., 0], m[..., 1]
  eps = 1e-12  # as torch.nn.functional.normalize
  b1 = a1 / jnp.maximum(jnp.linalg.norm(a1, axis=-1, keepdims=True), eps)
  a2 = a2 - jnp.sum(b1 * a2, axis=-1, keepdims=True) * b1
  b2 = a2 / jnp.maximum(jnp.linalg.norm(a2, axis=-1, keepdims=True), eps)
  b3 = jnp.cross(b1, b2)
  return jnp.stack([b1, b2, b3], axis=-1)


def matrix_to_rot6d(rot):
  """Inverse layout of rot6d_to_matrix: (...,3,3) -> (...,6)."""
  return rot[..., :, :2].reshape(rot.shape[:-2] + (6,))


def flip_pose(pose):
  """SPIN's horizontal pose flip: (...,72) -> (...,72).

  Swaps left/right joints and negates the y and z axis-angle components (a
  mirror in x). Applying it twice is the identity.
  """
  pose = jnp.asarray(pose)
  if pose.shape[-1] != 72:
    raise ValueError(f'flip_pose expects (..., 72) axis-angle, got {pose.shape}')
  flipped = pose[..., jnp.asarray(constants.SMPL_POSE_FLIP_PERM)]
  sign = jnp.tile(jnp.asarray([1.0, -1.0, -1.0], pose.dtype), 24)
  return flipped * sign


def rot_z(angle):
  """Rotation about z by `angle` radians: (...) -> (...,3,3)."""
  angle = jnp.asarray(angle)
  c, s = jnp.cos(angle), jnp.sin(angle)
  o, i = jnp.zeros_like(c), jnp.ones_like(c)
  return jnp.stack([jnp.stack([c, -s, o], -1),
                    jnp.stack([s, c, o], -1),
                    jnp.stack([o, o, i], -1)], -2)


def rotate_global_orient(global_orient, angle):
  """Axis-angle of Rz(angle) @ R(global_orient): (...,3), (...) -> (...,3).

  SPIN's in-plane rotation augmentation by `rot` degrees uses
  ``angle = -deg2rad(rot)``.
  """
  rot = rot_z(angle).astype(global_orient.dtype) @ axis_angle_to_matrix(global_orient)
  return matrix_to_axis_angle(rot)
