r"""Fits SMPL to 2D keypoints with SMPLify (no network), one or many people.

  python experiments/fit.py --keypoints=im_keypoints.json --img=im.jpg --out=out/
  python experiments/fit.py --keypoints=people.npy --mode=fast --body_model=default-low

Keypoints, in pixels of the original image:
  * OpenPose BODY_25 JSON: people[i].pose_keypoints_2d (25 x, y, c triplets);
  * SPIN-style .npy: (N, 49, 3) or (49, 3), x, y, conf in SPIN's 49-joint order.
Each person's box is the tight square around its confident keypoints, enlarged
1.2x (SPIN's demo; spin_jax.inference conventions), and the keypoints are mapped
to its 224 crop, where SMPLify runs (f = 5000, principal point 112). The fit
starts from the mean pose, facing the camera and facing away; the better of the
two (lower reprojection loss) is kept.

Outputs in --out, for input NAME:
  NAME_params.npz   per person (P = people): pose (P,72) axis-angle, betas
                    (P,10), crop_translation (P,3) (224 crop camera),
                    translation (P,3), focal_length (P,), camera_center (P,2):
                    the full-image pinhole (see spin_jax/inference.py), box
                    center (P,2) / scale (P,), keypoints_crop (P,49,3), loss (P,)
                    (mean per-joint SMPLify loss), valid (P,), objective (P,).
  NAME_person{i}.obj the mesh in the full image's camera frame (metres).
  NAME_overlay.png  with --img: the meshes over the image.
Without --img the image size is unknown: each person's principal point is then
its box centre (exact for the crop camera).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp

from spin_jax import camera
from spin_jax import constants
from spin_jax import inference
from spin_jax import models
from spin_jax import priors
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax import smplify

_KEYPOINTS = flags.DEFINE_string('keypoints', None, 'OpenPose BODY_25 .json or '
                                 'SPIN-style (N,49,3)/(49,3) .npy, image pixels.')
_IMG = flags.DEFINE_string('img', None, 'Optional image for the overlay.')
_BODY_MODEL = flags.DEFINE_string('body_model', 'default',
                                  "'default', 'default-low' or a path.")
_PRIOR = flags.DEFINE_string('prior', None, "Pose prior (SMPLify's gmm_08.pkl or "
                             '.npz); default: the embedded one.')
_MODE = flags.DEFINE_enum('mode', 'faithful', smplify.MODES, 'SMPLify mode.')
_OUT = flags.DEFINE_string('out', 'fit_out', 'Output directory.')
_THRESHOLD = flags.DEFINE_float('threshold', inference.OPENPOSE_DETECTION_THRESHOLD,
                                'Keypoints above this confidence define the box.')

_MIN_KEYPOINTS = 4  # fewer confident keypoints: the fit is meaningless


def read_keypoints(path: str) -> np.ndarray:
  """(P, 49, 3) keypoints in image pixels from a BODY_25 JSON or a .npy."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'--keypoints {path!r} does not exist.')
  if path.endswith('.json'):
    try:
      with open(path) as f:
        data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'--keypoints {path!r} is not valid JSON: {e}') from e
    people = data.get('people') if isinstance(data, dict) else None
    if not isinstance(people, list):
      raise ValueError(f'--keypoints {path!r}: expected an OpenPose JSON with a '
                       '"people" list.')
    out = np.zeros((len(people), constants.NUM_JOINTS, 3), np.float32)
    for i, person in enumerate(people):
      kp = np.asarray(person.get('pose_keypoints_2d', []), np.float32)
      if kp.size != 3 * constants.NUM_OPENPOSE_JOINTS:
        raise ValueError(f'--keypoints {path!r}: people[{i}].pose_keypoints_2d '
                         f'must hold 25 x, y, c triplets (BODY_25), got {kp.size} '
                         'values.')
      out[i, :constants.NUM_OPENPOSE_JOINTS] = kp.reshape(-1, 3)  # same order
    return out
  if path.endswith('.npy'):
    kp = np.load(path, allow_pickle=False).astype(np.float32)
    if kp.shape == (constants.NUM_JOINTS, 3):
      kp = kp[None]
    if kp.ndim != 3 or kp.shape[1:] != (constants.NUM_JOINTS, 3):
      raise ValueError(f'--keypoints {path!r}: expected (N, 49, 3) or (49, 3) '
                       f'(x, y, conf in SPIN joint order), got {kp.shape}.')
    return kp
  raise ValueError(f'--keypoints {path!r}: expected a .json (OpenPose) or .npy.')


def crop_people(keypoints: np.ndarray, threshold: float):
  """Boxes and 224-crop keypoints of the people with enough keypoints."""
  boxes, crops, kept = [], [], []
  res = constants.IMG_RES
  for i, kp in enumerate(keypoints):
    good = (kp[:, 2] > threshold) & np.all(np.isfinite(kp), -1)
    if good.sum() < _MIN_KEYPOINTS:
      logging.warning('person %d: only %d keypoints above %.2f; skipped.', i,
                      good.sum(), threshold)
      continue
    lo, hi = kp[good, :2].min(0), kp[good, :2].max(0)
    side = float(np.max(hi - lo)) * inference.DEFAULT_RESCALE
    box = inference.Box(tuple(float(c) for c in (lo + hi) / 2.0),
                        max(side, 1.0) / constants.BOX_SCALE_UNIT)
    m = inference.crop_matrix(box, res)  # (2, 3)
    crop = np.zeros_like(kp)
    crop[:, :2] = kp[:, :2] @ m[:, :2].T + m[:, 2]
    crop[:, 2] = np.where(good, kp[:, 2], 0.0)  # unreliable joints do not count
    boxes.append(box)
    crops.append(crop)
    kept.append(i)
  return boxes, np.stack(crops) if crops else None, kept


def mean_pose_init(model, keypoints_crop: np.ndarray) -> smplify.FitParams:
  """Two inits per person (facing the camera, facing away), camera by LSQ."""
  p = len(keypoints_crop)
  mean = models.load_mean_params()
  rotmat = rotations.rot6d_to_matrix(jnp.asarray(mean['pose6d']).reshape(24, 6))
  aa = rotations.matrix_to_axis_angle(rotmat).reshape(-1)  # (72,)
  turn = rotations.axis_angle_to_matrix(jnp.array([0.0, jnp.pi, 0.0]))
  back = rotations.matrix_to_axis_angle(turn @ rotmat[0])  # about camera y
  global_orient = jnp.concatenate([jnp.tile(aa[:3], (p, 1)), jnp.tile(back, (p, 1))])
  body_pose = jnp.tile(aa[3:], (2 * p, 1))
  betas = jnp.tile(jnp.asarray(mean['betas']), (2 * p, 1))
  kp = jnp.asarray(np.concatenate([keypoints_crop, keypoints_crop]))
  joints = smpl.joints_forward(model, betas, body_pose, global_orient)
  used = tuple(j for j in range(constants.NUM_JOINTS)
               if j not in constants.SMPLIFY_IGNORED_JOINT_IDS)
  transl = camera.estimate_translation(joints, kp, joint_ids=used)
  return smplify.FitParams(global_orient, body_pose, betas, transl), kp


def main(argv):
  del argv
  if not _KEYPOINTS.value:
    raise app.UsageError('--keypoints is required.')
  keypoints = read_keypoints(_KEYPOINTS.value)
  image = inference.read_image(_IMG.value) if _IMG.value else None
  boxes, kp_crop, kept = crop_people(keypoints, _THRESHOLD.value)
  if not boxes:
    raise ValueError(f'--keypoints {_KEYPOINTS.value!r}: no person with at least '
                     f'{_MIN_KEYPOINTS} keypoints above {_THRESHOLD.value}.')
  model = smpl_io.resolve_body_model(_BODY_MODEL.value)
  prior = (priors.load_gmm_prior(_PRIOR.value) if _PRIOR.value
           else priors.default_pose_prior())
  p = len(boxes)

  init, kp2 = mean_pose_init(model, kp_crop)
  res = smplify.smplify(model, prior, init, kp2, smplify.SMPLifyConfig(mode=_MODE.value))
  loss = np.where(np.asarray(res.valid), np.asarray(res.loss), np.inf).reshape(2, p)
  pick = np.argmin(loss, 0)  # facing the camera (0) or away (1)
  sel = lambda x: np.asarray(x).reshape((2, p) + x.shape[1:])[pick, np.arange(p)]
  params = jax.tree.map(sel, res.params)
  loss, valid, objective = sel(res.loss), sel(res.valid), sel(res.objective)

  out = smpl.forward(model, jnp.asarray(params.betas), jnp.asarray(params.body_pose),
                     jnp.asarray(params.global_orient))
  vertices = np.asarray(out.vertices, np.float64)  # (P, V, 3)
  tc = np.asarray(params.camera_translation, np.float64)  # crop camera
  side = np.array([b.side for b in boxes])
  centers = np.array([b.center for b in boxes], np.float64)
  f_full = constants.FOCAL_LENGTH * side / constants.IMG_RES
  if image is not None:
    h, w = image.shape[:2]
    pp = np.tile([w / 2.0, h / 2.0], (p, 1))
  else:
    pp = centers
  trans = np.concatenate([tc[:, :2] + (centers - pp) * tc[:, 2:] / f_full[:, None],
                          tc[:, 2:]], -1)

  name = os.path.splitext(os.path.basename(_KEYPOINTS.value))[0]
  os.makedirs(_OUT.value, exist_ok=True)
  stem = os.path.join(_OUT.value, name)
  inference.write_npz(
      f'{stem}_params.npz', person_index=np.asarray(kept),
      pose=np.concatenate([params.global_orient, params.body_pose], -1),
      betas=params.betas, crop_translation=tc, translation=trans,
      focal_length=f_full, camera_center=pp, crop_focal_length=constants.FOCAL_LENGTH,
      box_center=centers, box_scale=np.array([b.scale for b in boxes]),
      keypoints_crop=kp_crop, loss=loss, valid=valid, objective=objective,
      facing_away=pick.astype(bool), mode=np.array(_MODE.value))
  faces = model.faces
  for i in range(p):
    inference.write_obj(f'{stem}_person{i}.obj', vertices[i] + trans[i], faces)
  if image is not None:
    if not np.allclose(pp, pp[:1]):
      raise AssertionError('one principal point expected with an image')
    try:
      overlay = inference.render_people(
          image, vertices, faces, dict(translation=trans, focal_length=f_full,
                                       camera_center=pp[0]))
      inference.write_png(f'{stem}_overlay.png', overlay)
    except ImportError as e:  # renderer unavailable: the fit is still useful
      logging.warning('overlay skipped: %s', e)
  for i in range(p):
    logging.info('person %d (input %d): loss %.2f, valid %s, facing %s', i,
                 kept[i], loss[i], bool(valid[i]), 'away' if pick[i] else 'camera')
  print(f'wrote {stem}_params.npz and {p} mesh(es) to {_OUT.value}')


if __name__ == '__main__':
  cli.run(main)
