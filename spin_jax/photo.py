"""Photographs in, 3D bodies out: detect -> crop -> regress and/or SMPLify -> write.

The chain for one RGB image:
  1. people and their 2D keypoints from the bundled detector
     (spin_jax.detector, SPIN's 49-joint order, full-image pixels), or given;
  2. one box per person: the tight square around its keypoints above
     `threshold`, enlarged by `rescale` (1.2, SPIN's demo; spin_jax.crops's
     box and crop conventions); keypoints below the threshold get confidence
     0 (people with fewer than 4 confident keypoints are skipped);
  3. initial bodies: the regressor's prediction on the box's crop when a
     checkpoint is given, and the mean parameters facing the camera and facing
     away (camera by least squares on the keypoints);
  4. SMPLify (`fit_people`, fast mode with 20 + 20 steps by default, see
     PHOTO_FAST_ITERATIONS) from every initial body on
     the keypoints mapped into the box's 224 crop (f = 5000, principal point
     112); per person the lowest final SMPLify objective wins, and
     `init_source` says which start it came from ('regressor', 'mean',
     'mean_back'). A start SMPLify could not improve (result non-finite or its
     objective above the start's) counts with its start parameters. Without
     refinement (`refine=False`) the regressor's prediction is used as is;
  5. the crop camera as a pinhole of the full image
     (spin_jax.inference.full_image_camera: focal 5000 * box side / 224,
     principal point at the image centre).

`write_outputs` writes NAME_overlay.png, NAME_side.png, NAME_person{i}.obj and
NAME_params.npz (spin_jax.inference.run_on_image's keys plus the keypoints and
the fit's losses); spin_jax.detector.write_detections the detector's own JSON.
spin_jax.video runs the chain on every frame of a video.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import camera
from spin_jax import constants
from spin_jax import crops
from spin_jax import detector as detector_lib
from spin_jax import inference
from spin_jax import models
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smplify

KEYPOINT_THRESHOLD = crops.OPENPOSE_DETECTION_THRESHOLD  # 0.2
MIN_KEYPOINTS = 4  # fewer confident keypoints: a fit is meaningless
_INIT_NAMES = ('regressor', 'mean', 'mean_back')
# SMPLify's fast mode takes 5 + 4 Levenberg-Marquardt steps, tuned for the
# training loop, where it starts at the network's prediction. From the mean
# parameters that stops short: on the astronaut photo (default-low body) the
# mean keypoint error in the crop was 11.4 px after 5 + 4 steps, 4.7 px after
# 20 + 20 (objective 3302 -> 2486; faithful mode, 100 + 100 Adam steps: 4.9
# px, 2491); the extra steps cost milliseconds. Photos use 20 + 20.
PHOTO_FAST_ITERATIONS = (20, 20)
# The joints SMPLify fits (all but the ignored hips and neck): the camera of
# the mean-parameter start is estimated on these.
_FIT_JOINT_IDS = tuple(j for j in range(constants.NUM_JOINTS)
                       if j not in constants.SMPLIFY_IGNORED_JOINT_IDS)


class NoPersonError(ValueError):
  """No person (with enough confident keypoints) in an image, or none whose
  fit succeeded."""


# ---------------------------------------------------------------------------
# Boxes and crops from keypoints.


def people_boxes(keypoints: np.ndarray, threshold: float = KEYPOINT_THRESHOLD,
                 rescale: float = crops.DEFAULT_RESCALE):
  """Boxes and 224-crop keypoints of the people with enough keypoints.

  Args:
    keypoints: (P, 49, 3) x, y in image pixels, confidence.
  Returns:
    (boxes, keypoints_crop (K, 49, 3) or None, kept indices into P). The crop
    keypoints' confidences are zeroed below threshold and where not finite.
  """
  keypoints = np.asarray(keypoints, np.float32)
  boxes, crop_kps, kept = [], [], []
  res = constants.IMG_RES
  for i, kp in enumerate(keypoints):
    good = (kp[:, 2] > threshold) & np.all(np.isfinite(kp), -1)
    if good.sum() < MIN_KEYPOINTS:
      continue
    lo, hi = kp[good, :2].min(0), kp[good, :2].max(0)
    side = float(np.max(hi - lo)) * rescale
    box = crops.Box(tuple(float(c) for c in (lo + hi) / 2.0),
                        max(side, 1.0) / constants.BOX_SCALE_UNIT)
    m = crops.crop_matrix(box, res)  # (2, 3)
    crop = np.zeros_like(kp)
    xy = np.where(good[:, None], kp[:, :2], 0.0)
    crop[:, :2] = xy @ m[:, :2].T + m[:, 2]
    crop[:, 2] = np.where(good, kp[:, 2], 0.0)
    boxes.append(box)
    crop_kps.append(crop)
    kept.append(i)
  return boxes, (np.stack(crop_kps) if crop_kps else None), kept


def crop_translation_to_cam(translation: np.ndarray) -> np.ndarray:
  """(P, 3) crop-camera translation -> SPIN's weak-perspective (s, tx, ty)."""
  t = np.asarray(translation, np.float64)
  s = 2.0 * constants.FOCAL_LENGTH / (constants.IMG_RES * t[:, 2])
  return np.stack([s, t[:, 0], t[:, 1]], -1)


# ---------------------------------------------------------------------------
# Initial bodies and SMPLify.


def mean_init(body_model, keypoints_crop: np.ndarray) -> smplify.FitParams:
  """Two starts per person: the mean parameters facing the camera, then the
  same turned about the camera's vertical axis (facing away); (2P,) leaves,
  all P front starts first. The camera is the least-squares translation on
  the fitted joints."""
  p = len(keypoints_crop)
  mean = models.load_mean_params()
  rotmat = rotations.rot6d_to_matrix(jnp.asarray(mean['pose6d']).reshape(24, 6))
  aa = rotations.matrix_to_axis_angle(rotmat).reshape(-1)  # (72,)
  turn = rotations.axis_angle_to_matrix(jnp.array([0.0, jnp.pi, 0.0]))
  back = rotations.matrix_to_axis_angle(turn @ rotmat[0])
  global_orient = jnp.concatenate([jnp.tile(aa[:3], (p, 1)),
                                   jnp.tile(back, (p, 1))])
  body_pose = jnp.tile(aa[3:], (2 * p, 1))
  nb = body_model.num_betas
  betas = jnp.zeros((2 * p, nb), jnp.float32).at[:, :len(mean['betas'])].set(
      jnp.asarray(mean['betas'])[:nb])
  kp = jnp.asarray(np.concatenate([keypoints_crop, keypoints_crop]))
  joints = smpl.joints_forward(body_model, betas, body_pose, global_orient)
  transl = camera.estimate_translation(joints, kp, joint_ids=_FIT_JOINT_IDS)
  return smplify.FitParams(global_orient, body_pose, betas, transl)


def regressor_init(pred: dict[str, np.ndarray]) -> smplify.FitParams:
  """The regressor's prediction (Predictor output) as a SMPLify start."""
  pose = jnp.asarray(pred['pose'], jnp.float32)
  return smplify.FitParams(pose[:, :3], pose[:, 3:],
                           jnp.asarray(pred['betas'], jnp.float32),
                           jnp.asarray(pred['cam_t'], jnp.float32))


@dataclasses.dataclass
class Fit:
  """Per-person SMPLify outcome (P people)."""
  params: smplify.FitParams  # numpy leaves, (P, ...)
  loss: np.ndarray  # (P,) mean per-joint reprojection loss (SPIN's criterion)
  objective: np.ndarray  # (P,) SMPLify objective (data + priors)
  improved: np.ndarray  # (P,) bool: SMPLify improved on the chosen start
  init_source: np.ndarray  # (P,) str: 'regressor' | 'mean' | 'mean_back'


def failure_reasons(params: smplify.FitParams, improved: np.ndarray,
                    init_source: np.ndarray, fitted: bool = True) -> list:
  """Per person: None if the result may be written, else why it may not.

  A result fails when its parameters are not finite, when the body lies
  behind the camera (crop translation z <= 0), or, if SMPLify ran, when it
  improved on none of its starts from the mean parameters (what would be
  written is the mean pose, not a fit). A regressor's prediction that SMPLify
  could not improve stands.
  """
  leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
  finite = np.all([np.all(np.isfinite(x), -1) for x in leaves], 0)
  tz = np.asarray(params.camera_translation, np.float64)[:, 2]
  out = []
  for i in range(len(tz)):
    if not finite[i]:
      out.append('its parameters are not finite')
    elif not tz[i] > 0:
      out.append(f'the body lies behind the camera (depth {tz[i]:.2f} m)')
    elif fitted and not improved[i] and init_source[i] != _INIT_NAMES[0]:
      out.append('SMPLify could not fit it (no start improved)')
    else:
      out.append(None)
  return out


def smplify_config(mode: str = 'fast') -> smplify.SMPLifyConfig:
  """SMPLify's settings for photos (PHOTO_FAST_ITERATIONS in fast mode)."""
  if mode == 'fast':
    return smplify.SMPLifyConfig(mode='fast',
                                 camera_iterations=PHOTO_FAST_ITERATIONS[0],
                                 body_iterations=PHOTO_FAST_ITERATIONS[1])
  return smplify.SMPLifyConfig(mode=mode)


def _bucket(n: int) -> int:
  """Batch size padded to a power of two: one compile per bucket."""
  return 1 << max(0, int(np.ceil(np.log2(max(n, 1)))))


def fit_people(body_model, prior, keypoints_crop: np.ndarray, *,
               regressor: smplify.FitParams | None = None,
               mean_starts: bool = True, mode: str = 'fast') -> Fit:
  """SMPLify from every start, the best per person (module doc, step 4).

  Args:
    keypoints_crop: (P, 49, 3) keypoints in the 224 crops.
    regressor: optional (P,) starts from the regressor.
    mean_starts: also start from the mean parameters (front and back).
    mode: SMPLify mode ('fast' or 'faithful').
  """
  kp = np.asarray(keypoints_crop, np.float32)
  p = len(kp)
  starts, names = [], []
  if regressor is not None:
    starts.append(regressor)
    names.append(_INIT_NAMES[0])
  if mean_starts or regressor is None:
    starts.append(mean_init(body_model, kp))
    names += list(_INIT_NAMES[1:])
  init = _concat(starts)
  n = len(names)  # starts per person, in blocks of P
  kp_all = np.concatenate([kp] * n)
  # Pad the batch (zero-confidence copies of the first start) so that the
  # number of people changes the compiled shape only at powers of two.
  total = n * p
  pad = _bucket(total) - total
  if pad:
    init = _concat([init, _take(init, np.zeros(pad, int))])
    kp_all = np.concatenate([kp_all, np.zeros((pad,) + kp.shape[1:], np.float32)])
  res = smplify.smplify(body_model, prior, init, jnp.asarray(kp_all),
                        smplify_config(mode))
  valid = np.asarray(res.valid)[:total]
  objective = np.where(valid, np.asarray(res.objective)[:total],
                       np.asarray(res.init_objective)[:total])
  objective = np.where(np.isfinite(objective), objective, np.inf)
  pick = np.argmin(objective.reshape(n, p), 0)  # (P,) start per person
  rows = pick * p + np.arange(p)
  out = _take(res.params, rows)
  start = _take(init, rows)
  chosen_valid = valid[rows]
  params = jax.tree.map(
      lambda a, b: np.where(chosen_valid[:, None], np.asarray(a), np.asarray(b)),
      out, start)
  loss = np.asarray(smplify.reprojection_loss(
      body_model, jnp.asarray(params.global_orient), jnp.asarray(params.body_pose),
      jnp.asarray(params.betas), jnp.asarray(params.camera_translation),
      jnp.asarray(kp))).mean(-1)
  return Fit(params=params, loss=loss, objective=objective[rows],
             improved=chosen_valid, init_source=np.asarray(names)[pick])


def _concat(trees: Sequence[smplify.FitParams]) -> smplify.FitParams:
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *trees)


def _take(params: smplify.FitParams, rows) -> smplify.FitParams:
  return jax.tree.map(lambda x: jnp.asarray(x)[rows], params)


def _to_numpy(params: smplify.FitParams) -> smplify.FitParams:
  return jax.tree.map(np.asarray, params)


# ---------------------------------------------------------------------------
# One image.


@dataclasses.dataclass
class Reconstruction:
  """The people of one image (P of them), all numpy.

  keypoints (P, 49, 3): detected/given keypoints, full-image pixels + conf.
  boxes: P crops.Box. pose (P, 72) axis-angle, betas (P, NB),
  crop_translation (P, 3) of the 224 crop camera, camera: full-image pinhole
  (inference.full_image_camera's dict), vertices (P, V, 3) and joints
  (P, 49, 3) in the body frame (add camera['translation'][i] for the camera
  frame). loss / objective / improved / init_source: the fit (Fit), NaN /
  False / 'regressor' without refinement. person_index: each person's index
  in the input keypoints (detections with too few keypoints are skipped).
  """
  keypoints: np.ndarray
  boxes: list
  pose: np.ndarray
  betas: np.ndarray
  crop_translation: np.ndarray
  camera: dict
  vertices: np.ndarray
  joints: np.ndarray
  loss: np.ndarray
  objective: np.ndarray
  improved: np.ndarray
  init_source: np.ndarray
  person_index: np.ndarray
  image_size: tuple
  detector_score: np.ndarray | None = None
  fitted: bool = True
  mode: str = 'fast'
  # (input index, reason) of the people left out: their fit failed
  # (failure_reasons); nothing of theirs is written.
  failed: list = dataclasses.field(default_factory=list)

  @property
  def num_people(self) -> int:
    return len(self.boxes)


def reconstruct(image: np.ndarray, body_model, prior, *,
                keypoints: np.ndarray | None = None,
                detector: detector_lib.PoseDetector | None = None,
                predictor: inference.Predictor | None = None,
                refine: bool = True, mean_starts: bool = True,
                mode: str = 'fast', threshold: float = KEYPOINT_THRESHOLD,
                rescale: float = crops.DEFAULT_RESCALE,
                name: str = 'image') -> Reconstruction:
  """Every person of an RGB uint8 image in 3D (module doc).

  Args:
    keypoints: (P, 49, 3) keypoints in image pixels; default: the detector's.
    detector: used when keypoints is None.
    predictor: optional regressor (inference.Predictor).
    refine: run SMPLify (always done without a predictor).
    mean_starts: with a predictor and refine, also start SMPLify from the
      mean parameters and keep the better fit per person.
    name: the image's name in error messages.

  Raises:
    NoPersonError: no person with at least 4 keypoints above threshold.
  """
  h, w = image.shape[:2]
  scores = None
  if keypoints is None:
    if detector is None:
      raise ValueError('reconstruct: give keypoints or a detector.')
    people = detector(image)
    keypoints = detector_lib.people_keypoints(people)
    scores = np.array([p.score for p in people], np.float32)
  keypoints = np.asarray(keypoints, np.float32).reshape(-1, constants.NUM_JOINTS, 3)
  boxes, kp_crop, kept = people_boxes(keypoints, threshold, rescale)
  if not boxes:
    why = (f'{len(keypoints)} detection(s), none with at least '
           f'{MIN_KEYPOINTS} keypoints above confidence {threshold}'
           if len(keypoints) else 'the detector found nobody')
    raise NoPersonError(f'{name}: no person found ({why}).')
  p = len(boxes)
  pred = predictor.predict_boxes(image, boxes) if predictor is not None else None
  if refine or pred is None:
    fit = fit_people(body_model, prior, kp_crop,
                     regressor=regressor_init(pred) if pred is not None else None,
                     mean_starts=mean_starts or pred is None, mode=mode)
    params = fit.params
  else:
    params = _to_numpy(regressor_init(pred))
    nan = np.full(p, np.nan, np.float32)
    fit = Fit(params, nan, nan, np.zeros(p, bool), np.asarray(['regressor'] * p))
  fitted = bool(refine or pred is None)
  reasons = failure_reasons(params, fit.improved, fit.init_source, fitted)
  ok = np.array([r is None for r in reasons])
  failed = [(int(kept[i]), r) for i, r in enumerate(reasons) if r is not None]
  if not ok.any():
    raise NoPersonError(f'{name}: no person could be fitted ('
                        + '; '.join(f'person {i}: {r}' for i, r in failed) + ').')
  keep = np.flatnonzero(ok)
  boxes = [boxes[i] for i in keep]
  kept = [kept[i] for i in keep]
  params = _to_numpy(_take(params, keep))
  fit = Fit(params, fit.loss[keep], fit.objective[keep], fit.improved[keep],
            fit.init_source[keep])
  pose = np.concatenate([params.global_orient, params.body_pose], -1)
  body = smpl.forward(body_model, jnp.asarray(params.betas),
                      jnp.asarray(params.body_pose),
                      jnp.asarray(params.global_orient))
  cam = inference.full_image_camera(crop_translation_to_cam(params.camera_translation),
                                    boxes, (h, w))
  return Reconstruction(
      keypoints=keypoints[kept], boxes=boxes, pose=pose.astype(np.float32),
      betas=np.asarray(params.betas, np.float32),
      crop_translation=np.asarray(params.camera_translation, np.float64),
      camera=cam, vertices=np.asarray(body.vertices, np.float64),
      joints=np.asarray(body.joints, np.float64), loss=fit.loss,
      objective=fit.objective, improved=fit.improved,
      init_source=fit.init_source, person_index=np.asarray(kept),
      image_size=(h, w), detector_score=None if scores is None else scores[kept],
      fitted=fitted, mode=mode, failed=failed)


def params_dict(rec: Reconstruction) -> dict[str, np.ndarray]:
  """The parameter file's arrays (see write_outputs)."""
  cam = rec.camera
  out = dict(
      pose=rec.pose,
      rotmat=np.asarray(rotations.axis_angle_to_matrix(
          jnp.asarray(rec.pose).reshape(-1, 3))).reshape(-1, 24, 3, 3),
      betas=rec.betas, crop_cam=crop_translation_to_cam(rec.crop_translation),
      crop_cam_t=rec.crop_translation, cam_t=cam['translation'],
      focal_length=cam['focal_length'], camera_center=cam['camera_center'],
      box_center=np.array([b.center for b in rec.boxes]),
      box_scale=np.array([b.scale for b in rec.boxes]),
      joints=rec.joints, vertices=rec.vertices,
      image_size=np.array(rec.image_size), keypoints=rec.keypoints,
      loss=rec.loss, objective=rec.objective, improved=rec.improved,
      init_source=rec.init_source.astype(str), person_index=rec.person_index,
      fitted=np.array(rec.fitted), mode=np.array(rec.mode))
  if rec.detector_score is not None:
    out['detector_score'] = rec.detector_score
  return out


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray,
                   threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
  """The people's OpenPose-slot keypoints and limbs over the image (RGB), at
  most inference.OVERLAY_MAX_SIDE pixels on the long side (as the overlays)."""
  scale = min(1.0, inference.OVERLAY_MAX_SIDE / max(image.shape[:2]))
  if scale < 1.0:
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    out = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    keypoints = np.asarray(keypoints, np.float64).copy()
    keypoints[..., 0] = (keypoints[..., 0] + 0.5) * size[0] / image.shape[1] - 0.5
    keypoints[..., 1] = (keypoints[..., 1] + 0.5) * size[1] / image.shape[0] - 0.5
    image = out
  out = np.ascontiguousarray(image).copy()
  limbs = ((0, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 8),
           (8, 9), (9, 10), (10, 11), (8, 12), (12, 13), (13, 14), (0, 15),
           (15, 17), (0, 16), (16, 18), (11, 24), (11, 22), (14, 21), (14, 19))
  r = max(2, int(round(max(image.shape[:2]) / 200)))
  for kp in keypoints:
    ok = kp[:, 2] > threshold
    for a, b in limbs:
      if ok[a] and ok[b]:
        cv2.line(out, tuple(int(round(v)) for v in kp[a, :2]),
                 tuple(int(round(v)) for v in kp[b, :2]), (255, 255, 255),
                 max(1, r // 2), cv2.LINE_AA)
    for j in np.flatnonzero(ok[:constants.NUM_OPENPOSE_JOINTS]):
      name = constants.OPENPOSE_JOINT_NAMES[j]
      color = ((230, 60, 60) if name.startswith('OP R') else
               (60, 200, 60) if name.startswith('OP L') else (240, 220, 40))
      cv2.circle(out, tuple(int(round(v)) for v in kp[j, :2]), r, color, -1,
                 cv2.LINE_AA)
  return out


def write_outputs(rec: Reconstruction, image: np.ndarray, out_dir: str,
                  name: str, faces: np.ndarray, *, render: bool = True,
                  extra: dict[str, Any] | None = None) -> list[str]:
  """Writes, into out_dir (each file atomically):

    {name}_overlay.png    the meshes over the image (full-image cameras)
    {name}_side.png       the same meshes turned 90 degrees, white background
    {name}_keypoints.png  the 2D keypoints used (right side red, left green)
    {name}_person{i}.obj  each mesh in the full image's camera frame (metres)
    {name}_params.npz     per person: inference.run_on_image's keys (pose,
                          rotmat, betas, crop_cam, crop_cam_t, cam_t,
                          focal_length, camera_center, box_center, box_scale,
                          joints, vertices, image_size) plus keypoints (P, 49, 3)
                          (full-image pixels, confidence), loss, objective,
                          improved, init_source, person_index, fitted, mode and
                          detector_score (when detected)
  Returns the paths written.
  """
  files = []
  if render:
    overlay = inference.render_people(image, rec.vertices, faces, rec.camera)
    side = inference.render_people(image, rec.vertices, faces, rec.camera,
                                   side_view=True)
    for suffix, img in (('overlay', overlay), ('side', side),
                        ('keypoints', draw_keypoints(image, rec.keypoints))):
      path = os.path.join(out_dir, f'{name}_{suffix}.png')
      inference.write_png(path, img)
      files.append(path)
  for i in range(rec.num_people):
    path = os.path.join(out_dir, f'{name}_person{i}.obj')
    inference.write_obj(path, rec.vertices[i] + rec.camera['translation'][i],
                        faces)
    files.append(path)
  params = params_dict(rec)
  params.update(extra or {})
  path = os.path.join(out_dir, f'{name}_params.npz')
  inference.write_npz(path, **params)
  files.append(path)
  return files




def list_images(folder: str) -> list[str]:
  """The image files (by extension) in a folder, sorted; errors if none."""
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--img_dir {folder!r} is not a directory.')
  exts = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
  paths = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(exts) and not f.startswith('.'))
  if not paths:
    raise ValueError(f'--img_dir {folder!r}: no image files ({", ".join(exts)}).')
  return paths
