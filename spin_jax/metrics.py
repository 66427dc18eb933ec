"""Joint and vertex metrics of 3D human pose and shape (numpy, float64).

All in millimetres unless stated:
  * MPJPE: mean joint distance after centring both sides on their pelvis.
  * PA-MPJPE: MPJPE after a per-sample similarity Procrustes alignment (scale,
    rotation with the reflection fixed, translation), SPIN's "reconstruction
    error".
  * PVE: mean vertex distance, both meshes centred on their pelvis (joint 0 of
    the H36M regressor), where ground-truth meshes exist.
  * 3DHP PCK (150 mm) and AUC (PCK averaged over thresholds 0, 5, ..., 150 mm),
    plain and after Procrustes alignment ("rigid aligned" in the paper). A joint
    counts as correct when its error is strictly below the threshold, as in the
    benchmark's MATLAB code.
"""
from __future__ import annotations

import numpy as np

MM = 1000.0  # metres -> millimetres
PCK_THRESHOLD_MM = 150.0
AUC_THRESHOLDS_MM = tuple(float(t) for t in np.arange(0.0, 151.0, 5.0))  # 31


# ---------------------------------------------------------------------------
# Joint and vertex metrics (numpy, float64; inputs may be any array type).


def _as_f64(x) -> np.ndarray:
  return np.asarray(x, dtype=np.float64)


def _check_pair(pred: np.ndarray, gt: np.ndarray, what: str) -> None:
  if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 3:
    raise ValueError(
        f'{what}: expected prediction and ground truth of the same shape '
        f'(B, N, 3), got {pred.shape} and {gt.shape}.')


def procrustes_align(pred, gt) -> np.ndarray:
  """Similarity-aligns each predicted point set to its ground truth.

  Finds per sample the scale s, proper rotation R (det +1: a reflection is not
  allowed) and translation t minimising sum_i ||s R p_i + t - g_i||^2.

  Args:
    pred: (B, N, 3) predicted points.
    gt: (B, N, 3) ground-truth points.

  Returns:
    (B, N, 3) the aligned prediction s R p + t.
  """
  pred, gt = _as_f64(pred), _as_f64(gt)
  _check_pair(pred, gt, 'procrustes_align')
  mu_p = pred.mean(axis=1, keepdims=True)  # (B, 1, 3)
  mu_g = gt.mean(axis=1, keepdims=True)
  p, g = pred - mu_p, gt - mu_g  # (B, N, 3)
  # Cross-covariance K = sum_i p_i g_i^T; the best R maximises tr(R K).
  k = np.einsum('bni,bnj->bij', p, g)  # (B, 3, 3)
  u, _, vt = np.linalg.svd(k)
  v = np.swapaxes(vt, -1, -2)
  ut = np.swapaxes(u, -1, -2)
  # Flip the axis of the smallest singular value when V U^T is a reflection.
  d = np.sign(np.linalg.det(v @ ut))
  d = np.where(d == 0, 1.0, d)
  z = np.broadcast_to(np.eye(3), k.shape).copy()
  z[:, 2, 2] = d
  r = v @ z @ ut  # (B, 3, 3)
  var_p = np.sum(p**2, axis=(1, 2))  # (B,)
  scale = np.einsum('bii->b', r @ k) / np.maximum(var_p, 1e-300)
  aligned = scale[:, None, None] * np.einsum('bij,bnj->bni', r, p)
  return aligned + mu_g


def joint_errors(pred, gt) -> np.ndarray:
  """(B, N) Euclidean distance per joint, in the units of the inputs."""
  pred, gt = _as_f64(pred), _as_f64(gt)
  _check_pair(pred, gt, 'joint_errors')
  return np.linalg.norm(pred - gt, axis=-1)


def mpjpe(pred, gt) -> np.ndarray:
  """(B,) mean per-joint position error (inputs already centred)."""
  return joint_errors(pred, gt).mean(axis=-1)


def pa_mpjpe(pred, gt) -> np.ndarray:
  """(B,) MPJPE after per-sample similarity Procrustes alignment."""
  return mpjpe(procrustes_align(pred, gt), gt)


def pve(pred_vertices, gt_vertices, pred_pelvis=None, gt_pelvis=None):
  """(B,) mean per-vertex error, each mesh centred on its pelvis when given."""
  pred_v, gt_v = _as_f64(pred_vertices), _as_f64(gt_vertices)
  if pred_pelvis is not None:
    pred_v = pred_v - _as_f64(pred_pelvis)[:, None, :]
  if gt_pelvis is not None:
    gt_v = gt_v - _as_f64(gt_pelvis)[:, None, :]
  return mpjpe(pred_v, gt_v)


def pck(errors, threshold) -> np.ndarray:
  """(B,) fraction of joints whose error is strictly below threshold."""
  return (np.asarray(errors) < threshold).mean(axis=-1)


def auc(errors, thresholds=AUC_THRESHOLDS_MM) -> np.ndarray:
  """(B,) PCK averaged over the thresholds (3DHP: 0, 5, ..., 150 mm)."""
  errors = np.asarray(errors)
  return np.mean([pck(errors, t) for t in thresholds], axis=0)


def pose_metrics(pred_joints, gt_joints, *, with_pck: bool = False):
  """Per-sample joint metrics in mm from joints in metres.

  Args:
    pred_joints: (B, N, 3) predicted joints, metres, pelvis-centred.
    gt_joints: (B, N, 3) ground-truth joints, metres, pelvis-centred.
    with_pck: also return 3DHP PCK/AUC, plain and Procrustes-aligned (%).

  Returns:
    dict name -> (B,) array.
  """
  pred = _as_f64(pred_joints) * MM
  gt = _as_f64(gt_joints) * MM
  err = joint_errors(pred, gt)
  err_pa = joint_errors(procrustes_align(pred, gt), gt)
  out = dict(mpjpe=err.mean(-1), pa_mpjpe=err_pa.mean(-1))
  if with_pck:
    out.update(
        pck=100.0 * pck(err, PCK_THRESHOLD_MM),
        auc=100.0 * auc(err),
        pck_pa=100.0 * pck(err_pa, PCK_THRESHOLD_MM),
        auc_pa=100.0 * auc(err_pa))
  return out
