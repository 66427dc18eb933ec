"""SPIN's training loss: every term, its weight, and per-sample values.

total = overall * (vertices * L_vert + keypoints_2d * L_2d + keypoints_3d * L_3d
                   + pose * L_pose + betas * L_betas + cam * L_cam)
with the weights of constants.LOSS_WEIGHTS (0, 5, 5, 1, 0.001, 1, overall 60).

Each term function returns (value, per_sample): `value` is SPIN's batch
reduction and `per_sample` (B,) the same quantity for each sample, zero where
the sample does not take part (no 3D GT, invalid fit). For terms averaged over
all samples, value = mean(per_sample); for gated ones,
value = sum(per_sample) / max(number of participating samples, 1), so a batch
without any participant contributes exactly 0 (as SPIN's empty-batch branch).

All functions are pure jnp and jit-able; shapes are static, gating is by
masks (no boolean indexing).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from spin_jax import constants
from spin_jax import rotations

# The 24 GT joints sit after the 25 OpenPose joints in the 49-joint set.
_GT_JOINTS = slice(constants.NUM_OPENPOSE_JOINTS, constants.NUM_JOINTS)
# Right Hip, Left Hip among the 24 GT joints: their midpoint is the pelvis.
_HIP_IDS = (2, 3)

DEFAULT_WEIGHTS = dict(constants.LOSS_WEIGHTS,
                       openpose=constants.OPENPOSE_KEYPOINT_WEIGHT,
                       gt_keypoints=constants.GT_KEYPOINT_WEIGHT)


def _masked_mean(per_sample, mask):
  """sum(per_sample * mask) / max(sum(mask), 1): 0 when no sample counts."""
  mask = mask.astype(per_sample.dtype)
  per_sample = per_sample * mask
  return jnp.sum(per_sample) / jnp.maximum(jnp.sum(mask), 1.0), per_sample


def keypoint_2d_loss(pred_keypoints_2d, gt_keypoints_2d,
                     openpose_weight=constants.OPENPOSE_KEYPOINT_WEIGHT,
                     gt_weight=constants.GT_KEYPOINT_WEIGHT):
  """Confidence-weighted squared error of the 49 projected joints.

  Args:
    pred_keypoints_2d: (B,49,2) in [-1,1] crop coordinates.
    gt_keypoints_2d: (B,49,3) x, y in [-1,1] and confidence.
    openpose_weight, gt_weight: multiply the confidence of joints 0..24 and
      25..48 (SPIN: 0 and 1).
  Returns:
    (mean over B x 49 x 2, per-sample mean over 49 x 2 (B,)).
  """
  n_op = constants.NUM_OPENPOSE_JOINTS
  joint_w = jnp.concatenate([
      jnp.full((n_op,), openpose_weight, pred_keypoints_2d.dtype),
      jnp.full((gt_keypoints_2d.shape[1] - n_op,), gt_weight,
               pred_keypoints_2d.dtype)])
  conf = gt_keypoints_2d[..., 2] * joint_w  # (B,49)
  sq = jnp.square(pred_keypoints_2d - gt_keypoints_2d[..., :2])  # (B,49,2)
  per_sample = jnp.mean(conf[..., None] * sq, axis=(1, 2))  # (B,)
  return jnp.mean(per_sample), per_sample


def _centre_on_hips(joints):  # (B,24,3) -> (B,24,3)
  pelvis = 0.5 * (joints[:, _HIP_IDS[0]] + joints[:, _HIP_IDS[1]])
  return joints - pelvis[:, None, :]


def keypoint_3d_loss(pred_joints, gt_joints_3d, has_pose_3d):
  """Confidence-weighted squared error of the 24 GT joints, hip-centred.

  Args:
    pred_joints: (B,49,3) model joints (GT joints 25..48 are used) or (B,24,3);
      no camera translation (centring removes it anyway).
    gt_joints_3d: (B,24,4) metres + confidence.
    has_pose_3d: (B,) 1 where 3D ground truth exists.
  Returns:
    (mean over N_3d x 24 x 3, per-sample mean over 24 x 3 (B,), 0 without GT).
  """
  if pred_joints.shape[1] == constants.NUM_JOINTS:
    pred_joints = pred_joints[:, _GT_JOINTS]
  conf = gt_joints_3d[..., 3:]  # (B,24,1)
  diff = _centre_on_hips(pred_joints) - _centre_on_hips(gt_joints_3d[..., :3])
  per_sample = jnp.mean(conf * jnp.square(diff), axis=(1, 2))  # (B,)
  return _masked_mean(per_sample, has_pose_3d)


def _target_rotmat(pose):
  """(B,72) axis-angle or (B,24,3,3) -> (B,24,3,3)."""
  if pose.ndim == 4:
    return pose
  return rotations.axis_angle_to_matrix(
      pose.reshape(pose.shape[0], constants.NUM_SMPL_JOINTS, 3))


def smpl_losses(pred_rotmat, pred_betas, gt_pose, gt_betas, valid):
  """MSE of rotation matrices and of betas where the target is valid.

  Args:
    pred_rotmat: (B,24,3,3); pred_betas: (B,10).
    gt_pose: (B,72) axis-angle or (B,24,3,3); gt_betas: (B,10) (already
      clipped, see clip_betas).
    valid: (B,) 1 where the fit is valid or SMPL GT exists.
  Returns:
    ((pose value, pose per-sample), (betas value, betas per-sample)): means
    over N_valid x 24 x 3 x 3 and N_valid x 10, 0 when nothing is valid.
  """
  gt_rotmat = _target_rotmat(gt_pose).astype(pred_rotmat.dtype)
  pose_ps = jnp.mean(jnp.square(pred_rotmat - gt_rotmat), axis=(1, 2, 3))
  betas_ps = jnp.mean(jnp.square(pred_betas - gt_betas), axis=1)
  return _masked_mean(pose_ps, valid), _masked_mean(betas_ps, valid)


def vertex_loss(pred_vertices, gt_vertices, valid):
  """L1 of the vertices (SPIN's 'shape' loss; weight 0 by default).

  Returns (mean over N_valid x V x 3, per-sample (B,)).
  """
  per_sample = jnp.mean(jnp.abs(pred_vertices - gt_vertices), axis=(1, 2))
  return _masked_mean(per_sample, valid)


def camera_loss(pred_cam):
  """exp(-10 s)^2: keeps the weak-perspective scale s positive.

  Returns (batch mean, per-sample (B,)).
  """
  per_sample = jnp.square(jnp.exp(-10.0 * pred_cam[:, 0]))
  return jnp.mean(per_sample), per_sample


def clip_betas(betas, limit=constants.BETAS_SUPERVISION_LIMIT):
  """Zeroes the betas of samples with any |beta| > limit (B,10) -> (B,10).

  SPIN applies it to the fits' betas before SMPL GT replaces them, for
  supervision only (the fits table keeps the raw values).
  """
  bad = jnp.any(jnp.abs(betas) > limit, axis=-1, keepdims=True)
  return jnp.where(bad, jnp.zeros_like(betas), betas)


def supervision_targets(fit_pose, fit_betas, fit_loss, gt_pose, gt_betas,
                        has_smpl,
                        threshold=constants.FIT_VALIDITY_THRESHOLD):
  """Pose/betas targets and their validity, in SPIN's order.

  Clip the fit's betas, replace fit by SMPL GT where has_smpl, and mark valid
  where has_smpl or the fit's per-sample reprojection loss < threshold.

  Args:
    fit_pose, gt_pose: (B,72) axis-angle; fit_betas, gt_betas: (B,10);
    fit_loss: (B,) mean per-joint reprojection loss of the kept fit;
    has_smpl: (B,).
  Returns:
    pose (B,72), betas (B,10), valid_fit (B,) bool.
  """
  has = has_smpl.astype(bool)
  pose = jnp.where(has[:, None], gt_pose, fit_pose)
  betas = jnp.where(has[:, None], gt_betas, clip_betas(fit_betas))
  return pose, betas, has | (fit_loss < threshold)


TERMS = ('keypoints_2d', 'keypoints_3d', 'pose', 'betas', 'vertices', 'cam')


def _weights(weights: Mapping[str, float] | None) -> dict[str, float]:
  if weights is None:
    return dict(DEFAULT_WEIGHTS)
  if hasattr(weights, 'to_dict'):
    weights = weights.to_dict()
  unknown = sorted(set(weights) - set(DEFAULT_WEIGHTS))
  if unknown:
    raise ValueError(f'loss weights: unknown keys {unknown}; valid keys are '
                     f'{sorted(DEFAULT_WEIGHTS)}.')
  return dict(DEFAULT_WEIGHTS, **weights)


def spin_loss_terms(pred: Mapping[str, jax.Array],
                    target: Mapping[str, jax.Array],
                    weights: Mapping[str, float] | None = None
                    ) -> dict[str, tuple[jax.Array, jax.Array]]:
  """Every term as (value, per_sample (B,)), unweighted.

  Args:
    pred: models.body_outputs(...) dict: rotmat (B,24,3,3), betas (B,10),
      cam (B,3), keypoints_2d (B,49,2) in [-1,1], joints (B,49,3), and
      vertices (B,V,3) when the vertex weight is nonzero.
    target: keypoints (B,49,3) in [-1,1] + conf, pose_3d (B,24,4),
      has_pose_3d (B,), pose (B,72) or (B,24,3,3), betas (B,10) (the
      supervision targets: see supervision_targets), valid_fit (B,), and
      vertices (B,V,3) when the vertex weight is nonzero.
    weights: overrides of DEFAULT_WEIGHTS (openpose and gt_keypoints weight
      the 2D joints; a zero vertex weight skips the vertex term).
  """
  w = _weights(weights)
  for key in ('keypoints', 'pose_3d', 'has_pose_3d', 'pose', 'betas',
              'valid_fit'):
    if key not in target:
      raise KeyError(f'spin_losses: target has no {key!r} (has '
                     f'{sorted(target)}).')
  valid = target['valid_fit']
  terms = {}
  terms['keypoints_2d'] = keypoint_2d_loss(
      pred['keypoints_2d'], target['keypoints'], w['openpose'],
      w['gt_keypoints'])
  terms['keypoints_3d'] = keypoint_3d_loss(pred['joints'], target['pose_3d'],
                                           target['has_pose_3d'])
  terms['pose'], terms['betas'] = smpl_losses(
      pred['rotmat'], pred['betas'], target['pose'], target['betas'], valid)
  if w['vertices']:
    if 'vertices' not in pred or 'vertices' not in target:
      raise KeyError('spin_losses: the vertex weight is nonzero but pred or '
                     'target has no "vertices".')
    terms['vertices'] = vertex_loss(pred['vertices'], target['vertices'],
                                    valid)
  else:
    zero = jnp.zeros_like(pred['cam'][:, 0])
    terms['vertices'] = (jnp.sum(zero), zero)
  terms['cam'] = camera_loss(pred['cam'])
  return terms


def spin_losses(pred: Mapping[str, jax.Array], target: Mapping[str, jax.Array],
                weights: Mapping[str, float] | None = None, *,
                per_sample: bool = False) -> Any:
  """SPIN's total loss.

  Returns:
    (total, terms) where terms maps each name of TERMS to its unweighted
    scalar value, plus 'total'. With per_sample=True also a third dict,
    name -> (B,) weighted per-sample values (overall * weight * per_sample,
    zero where the sample does not take part in that term).
  """
  w = _weights(weights)
  raw = spin_loss_terms(pred, target, w)
  total = w['overall'] * sum(w[k] * raw[k][0] for k in TERMS)
  terms = {k: raw[k][0] for k in TERMS}
  terms['total'] = total
  if not per_sample:
    return total, terms
  contributions = {k: w['overall'] * w[k] * raw[k][1] for k in TERMS}
  return total, terms, contributions
