"""Validation while training: SPIN's evaluation joints on a held-out split,
and overlays of the prediction and the kept fit for TensorBoard.

The full evaluation protocols (per dataset, segmentation, PCK) are in
spin_jax/evaluate.py; this module scores the train state directly, jitted
and sharded like the training step.
"""
from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import augment
from spin_jax import constants
from spin_jax import fits as fits_lib
from spin_jax import metrics
from spin_jax import models
from spin_jax import parallel
from spin_jax import render
from spin_jax import smpl


def centred_j14(body_model, betas, rotmats_or_pose):
  """SPIN's evaluation joints: (J14 (B,14,3), vertices (B,V,3)), both centred
  on the pelvis of the H36M regressor (its joint 0).

  rotmats_or_pose: rotation matrices (B,24,3,3) or axis-angle (B,72).
  """
  if rotmats_or_pose.ndim == 4:
    body = smpl.forward(body_model, betas, rotmats_or_pose[:, 1:],
                        rotmats_or_pose[:, :1])
  else:
    body = smpl.forward(body_model, betas, rotmats_or_pose[:, 3:],
                        rotmats_or_pose[:, :3])
  joints = smpl.h36m_joints(body_model, body.vertices)    # (B,17,3)
  pelvis = joints[:, :1]
  return (joints - pelvis)[:, jnp.asarray(constants.H36M_TO_J14)], body.vertices - pelvis


def make_eval_fn(graphdef):
  """Jitted eval forward -> (pred J14, GT J14, pred vertices, GT vertices).

  SPIN's 3DPW protocol: joints from the H36M regressor on the neutral mesh,
  centred on its joint 0, 14 joints; GT from the GT SMPL parameters through
  the same body model. Vertices are centred on the same pelvis (for PVE).
  """
  def fn(params, model_state, images, pose, betas, body_model):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    model.eval()
    pred = model(images)
    pj, pv = centred_j14(body_model, pred['betas'], pred['rotmat'])
    gj, gv = centred_j14(body_model, betas, pose)
    return pj, gj, pv, gv

  return jax.jit(fn)


def validate(eval_fn, state, eval_batches, body_model, mesh,
             max_samples: int | None = None) -> dict[str, float]:
  """Mean MPJPE, PA-MPJPE and PVE (mm) over the validation batches."""
  n_dev = mesh.devices.size
  per = {'mpjpe': [], 'pa_mpjpe': [], 'pve': []}
  seen = 0
  for batch in eval_batches:
    b = batch['image'].shape[0]
    pad = (-b) % n_dev  # pad to the device count, drop the padding after
    arrays = [batch['image'], batch['pose'], batch['betas']]
    keep = np.asarray(batch.get('valid', np.ones(b))) > 0  # eval padding
    if pad:
      arrays = [np.concatenate([a, np.repeat(a[-1:], pad, 0)]) for a in arrays]
    arrays = parallel.shard_batch(tuple(arrays), mesh)
    pj, gj, pv, gv = parallel.to_host(
        eval_fn(state.params, state.model_state, *arrays, body_model))
    pj, gj, pv, gv = (x[:b][keep] for x in (pj, gj, pv, gv))
    per['mpjpe'].append(metrics.MM * metrics.mpjpe(pj, gj))
    per['pa_mpjpe'].append(metrics.MM * metrics.pa_mpjpe(pj, gj))
    per['pve'].append(metrics.MM * metrics.pve(pv, gv))
    seen += int(keep.sum())
    if max_samples and seen >= max_samples:
      break
  if not seen:
    return {}
  return {k: float(np.mean(np.concatenate(v))) for k, v in per.items()}


# ------------------------------------------------------------------ overlays
def make_visual_fn(graphdef):
  """Jitted: first samples' predicted mesh (eval mode) and kept-fit mesh."""

  def fn(params, model_state, fits_table, batch, body_model):
    model = nnx.merge(graphdef, params, model_state, copy=True)
    model.eval()
    pred = models.body_outputs(model(batch['image']), body_model)
    kp_px = fits_lib.keypoints_to_pixels(batch['keypoints'])
    pose, betas, _ = fits_lib.lookup(fits_table, batch['index'],
                                     batch['rot_angle'], batch['is_flipped'])
    cam_t, loss = fits_lib.score_fit(body_model, pose, betas, kp_px)
    fit_v = smpl.forward(body_model, betas, pose[:, 3:], pose[:, :3]).vertices
    return pred['vertices'], pred['cam_t'], fit_v, cam_t, loss

  return jax.jit(fn)


def render_overlays(visual_fn, state, batch, body_model, n: int = 4) -> np.ndarray:
  """(H, n*3*W, 3) uint8: per sample, the crop | prediction | kept fit."""
  small = jax.tree.map(lambda x: np.asarray(x)[:n], batch)
  pv, pt, fv, ft, floss = jax.device_get(visual_fn(
      state.params, state.model_state, state.fits, small, body_model))
  res = constants.IMG_RES
  faces = np.asarray(body_model.faces)
  centre = (res / 2.0, res / 2.0)
  tiles = []
  for i in range(pv.shape[0]):
    img = augment.denormalize_image(small['image'][i])
    if img.shape[0] != res:
      import cv2  # pylint: disable=g-import-not-at-top  # overlays only
      img = cv2.resize(img, (res, res), interpolation=cv2.INTER_LINEAR)
    pred = render.render_mesh(pv[i], faces, constants.FOCAL_LENGTH, centre,
                              (res, res), image=img, translation=pt[i],
                              color=(0.65, 0.74, 0.86))
    fit = render.render_mesh(fv[i], faces, constants.FOCAL_LENGTH, centre,
                             (res, res), image=img, translation=ft[i],
                             color=(0.86, 0.74, 0.65))
    tiles.append(np.concatenate([img, pred, fit], axis=1))
  return np.concatenate(tiles, axis=1)

