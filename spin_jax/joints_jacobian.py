"""SPIN's 49 joints and their exact Jacobian, written along the kinematic chain.

Second-order SMPLify (spin_jax.smplify, mode 'fast') needs d joints / d params
for ~80 parameters per sample. Forward-mode autodiff would push 80 tangents
through every step of the body model; here the pose block comes in closed
form from quantities one forward pass already has:

Rotating joint p by a small world-frame angle w moves every point that p
carries about p's posed position P_p: dx = w x (x - P_p). A joint's axis-angle
theta_p enters as R_p(theta + d) = R_p(theta) exp([J_r(theta) d]x) (J_r: the
right Jacobian of SO(3)), i.e. w = Rw_p J_r(theta_p) d with Rw_p the world
rotation of p. A skinned (regressed) point is a sum over (point, bone) pairs
of affine terms c_l = R_k y_l + w_l t_k; each moves with every ancestor-or-self
p of its bone k, and by linearity
    d x / d theta_p = -[ sum_l (c_l - w_l P_p) ]x  Rw_p J_r(theta_p),
summing the pairs below p. SMPL's own joints are the same with one pair (y =
rest joint, w = 1) that its own rotation does not move. Pose correctives add
R_k d(posedirs_l . vec(R_p - I)) / d theta_p for p >= 1. The betas block is
linear algebra on the same quantities (see _betas_jacobian).

Exact (to float rounding) against jax.jacfwd of smpl.joints_forward:
tests/test_joints_jacobian.py.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import rotations
from spin_jax import smpl


@flax.struct.dataclass
class JointsWithJacobian:
  joints: jax.Array  # (B, 49, 3) as smpl.joints_forward (no translation)
  d_pose: jax.Array  # (B, 49, 3, 72): d joints / d [global_orient, body_pose]
  d_betas: jax.Array  # (B, 49, 3, NB)


def _right_jacobian(aa):
  """J_r(theta) of SO(3)'s exponential map, (..., 3) -> (..., 3, 3).

  R(theta + d) = R(theta) exp([J_r d]x) to first order;
  J_r = I - (1 - cos t)/t^2 [theta]x + (t - sin t)/t^3 [theta]x^2, t = |theta|,
  with series near t = 0.
  """
  t2 = jnp.sum(aa * aa, -1)
  small = t2 < 1e-6
  safe = jnp.where(small, 1.0, t2)
  t = jnp.sqrt(safe)
  b = jnp.where(small, 0.5 - t2 / 24.0, (1.0 - jnp.cos(t)) / safe)
  c = jnp.where(small, 1.0 / 6.0 - t2 / 120.0, (t - jnp.sin(t)) / (safe * t))
  k = rotations.skew(aa)
  eye = jnp.eye(3, dtype=aa.dtype)
  return eye - b[..., None, None] * k + c[..., None, None] * (k @ k)


@functools.lru_cache(maxsize=None)
def _ancestor_masks(parents):
  """(24, 24) masks [k, p]: p is an ancestor-or-self / a strict ancestor of k."""
  n = len(parents)
  self_or_anc = np.eye(n)
  for k in range(n):
    p = parents[k]
    while p >= 0:
      self_or_anc[k, p] = 1.0
      p = parents[p]
  return self_or_anc, self_or_anc - np.eye(n)


def _candidates_and_levers(model, betas, rotmats, pose_feature):
  """Posed candidate points and the vectors V of the module docstring.

  Returns cand (B, 44, 3), lever (B, 44, 24, 3) = sum over the candidate's
  pairs below p of (c_l - w_l P_p), posed joints P (B, 24, 3), world rotations
  (B, 24, 3, 3) and the pair terms c (B, L, 3) rotated per bone.
  """
  batch = betas.shape[0]
  rest = smpl._rest_joints(model, betas)  # pylint: disable=protected-access
  posed, transforms = smpl._kinematics(rotmats, rest, model.parents)  # pylint: disable=protected-access
  world_rot = transforms[..., :9].reshape(batch, -1, 3, 3)  # (B, 24, 3, 3)
  pts = model.joint_points
  bones = np.asarray(pts.bones, np.int32)
  c = smpl._pair_terms(model, pts, betas, pose_feature, transforms)  # pylint: disable=protected-access
  self_or_anc, strict = _ancestor_masks(model.parents)
  below = pts.rows[:, :, None] * jnp.asarray(self_or_anc[bones], c.dtype)  # (R, L, 24)
  # Regressed points: sum_l below[r,l,p] (c_l - w_l P_p).
  lever_pts = (jnp.einsum('rlp,blc->brpc', below, c)
               - jnp.einsum('rlp,l,bpc->brpc', below, pts.weight, posed))
  # SMPL joints: (P_k - P_p) for strict ancestors p of k.
  strict = jnp.asarray(strict, c.dtype)
  lever_joints = strict[None, :, :, None] * (posed[:, :, None] - posed[:, None])
  cand = jnp.concatenate([posed, jnp.einsum('rl,blc->brc', pts.rows, c)], 1)
  lever = jnp.concatenate([lever_joints, lever_pts], 1)  # (B, 44, 24, 3)
  return cand, lever, world_rot, bones


def _pose_corrective_term(model, rotmats, jr, world_rot, bones):
  """(B, 20, 3, 23, 3): d regressed points / d body pose via posedirs."""
  pts = model.joint_points
  num_pairs = len(pts.bones)
  # d vec(R_p) / d theta_p, column i: R_p [J_r e_i]x, row-major vec.
  d_rot = rotmats[:, 1:, None] @ rotations.skew(jnp.swapaxes(jr[:, 1:], -1, -2))
  d_rot = d_rot.reshape(d_rot.shape[:3] + (9,))  # (B, 23, 3 i, 9 e)
  pd = pts.posedirs.reshape(23, 9, num_pairs, 3)  # [p, e, l, c]
  dy = jnp.einsum('pelc,bpie->blcpi', pd, d_rot)  # (B, L, 3, 23, 3)
  dc = jnp.einsum('blxc,blcpi->blxpi', world_rot[:, bones], dy)
  return jnp.einsum('rl,blxpi->brxpi', pts.rows, dc)


def joints_with_jacobian(model: smpl.BodyModel, betas, body_pose,
                         global_orient) -> JointsWithJacobian:
  """SPIN's joints (B, 49, 3) and their Jacobian in pose and shape.

  Args:
    model: smpl.BodyModel.
    betas: (B, NB') shape coefficients.
    body_pose: (B, 69) axis-angle.
    global_orient: (B, 3) axis-angle.

  Returns:
    JointsWithJacobian; d_pose columns are [global_orient (3), body_pose (69)].
  """
  if body_pose.ndim != 2 or body_pose.shape[-1] != 69 or global_orient.shape[-1:] != (3,):
    raise ValueError('joints_with_jacobian: body_pose must be (B, 69) and '
                     f'global_orient (B, 3) axis-angle; got {body_pose.shape}, '
                     f'{global_orient.shape}.')
  betas, rotmats, pose_feature = smpl._prepare(model, betas, body_pose, global_orient)  # pylint: disable=protected-access
  batch = betas.shape[0]
  aa = jnp.concatenate([global_orient.reshape(batch, 1, 3),
                        body_pose.reshape(batch, 23, 3)], 1).astype(betas.dtype)
  jr = _right_jacobian(aa)  # (B, 24, 3, 3)
  cand, lever, world_rot, bones = _candidates_and_levers(
      model, betas, rotmats, pose_feature)
  m = world_rot @ jr  # (B, 24, 3, 3): world angle per unit theta_p
  # dx = w x lever for w = m[:, p] d: column i of block p is m[:, p, :, i] x lever.
  d = jnp.cross(jnp.swapaxes(m, -1, -2)[:, None], lever[:, :, :, None])  # (B, 44, 24, 3 i, 3 c)
  d = jnp.swapaxes(d, -1, -2)  # (B, 44, 24, 3 c, 3 i)
  if model.has_pose_correctives:
    extra = _pose_corrective_term(model, rotmats, jr, world_rot, bones)
    extra = jnp.moveaxis(extra, 2, 3)  # (B, 20, 23, 3 c, 3 i)
    d = d.at[:, smpl.NUM_JOINTS:, 1:].add(extra)
  d = jnp.moveaxis(d, 3, 2).reshape(batch, -1, 3, 72)  # (B, 44, 3, 72)
  sel = np.asarray(smpl.JOINTS_49_FROM_CANDIDATES)
  d_betas = _betas_jacobian(model, betas.shape[1], world_rot, bones)
  return JointsWithJacobian(joints=cand[:, sel], d_pose=d[:, sel],
                            d_betas=d_betas[:, sel])


def _betas_jacobian(model, nb, world_rot, bones):
  """(B, 44, 3, NB): d candidates / d betas at fixed rotations.

  Posed joints are linear in the rest joints J: P_k = sum over a in
  ancestors-or-self(k) of Rw_parent(a) (J_a - J_parent(a)); skinning
  translations are t_k = P_k - Rw_k J_k; a pair term c_l = Rw_k y_l + w_l t_k
  with y_l linear in betas.
  """
  parents = np.asarray(model.parents)
  self_or_anc, _ = _ancestor_masks(model.parents)
  js = model.J_shapedirs[..., :nb]  # (24, 3, NB)
  rel = js - jnp.where((parents < 0)[:, None, None], 0.0,
                       js[np.maximum(parents, 0)])
  eye = jnp.broadcast_to(jnp.eye(3, dtype=js.dtype), world_rot[:, :1].shape)
  parent_rot = jnp.concatenate([world_rot, eye], 1)[:, np.where(parents < 0, len(parents), parents)]
  d_posed = jnp.einsum('ka,baxy,ayn->bkxn', jnp.asarray(self_or_anc, js.dtype),
                       parent_rot, rel)  # (B, 24, 3, NB)
  d_trans = d_posed - jnp.einsum('bkxy,kyn->bkxn', world_rot, js)
  pts = model.joint_points
  d_pairs = (jnp.einsum('blxy,lyn->blxn', world_rot[:, bones], pts.shapedirs[..., :nb])
             + pts.weight[:, None, None] * d_trans[:, bones])  # (B, L, 3, NB)
  return jnp.concatenate(
      [d_posed, jnp.einsum('rl,blxn->brxn', pts.rows, d_pairs)], 1)
