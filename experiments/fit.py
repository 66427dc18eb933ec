r"""Fits SMPL to 2D keypoints with SMPLify (no network), one or many people.

  python experiments/fit.py --img=photo.jpg --out=out/            # detector
  python experiments/fit.py --keypoints=im_keypoints.json --img=im.jpg --out=out/
  python experiments/fit.py --keypoints=people.npy --mode=fast --body_model=default-low

Keypoints, in pixels of the original image, recognised from the file
(spin_jax.keypoints.read_keypoints_file):
  * OpenPose BODY_25 JSON: people[i].pose_keypoints_2d (25 x, y, c triplets);
  * COCO-17: a COCO annotation file ("annotations"[i]."keypoints"; with several
    images, the one named like --img) or a list of results
    [{"keypoints": 51 values, "score"}] (any top-down detector's output);
  * the bundled detector's JSON (demo.py / fit.py write NAME_keypoints.json);
  * .npy arrays: (N, 49, 3) / (49, 3) SPIN joints, (N, 25, 3) BODY_25,
    (N, 17, 3) COCO-17, (N, 33, 3|4) BlazePose landmarks.
With --img alone the bundled detector (spin_jax.detector) finds the people and
their keypoints, written to NAME_keypoints.json.
Each person's box is the tight square around its confident keypoints, enlarged
1.2x (SPIN's demo; spin_jax.crops conventions), and the keypoints are mapped
to its 224 crop, where SMPLify runs (f = 5000, principal point 112). The fit
starts from the mean pose, facing the camera and facing away; the better of the
two (lower SMPLify objective) is kept (spin_jax.photo.fit_people).

Outputs in --out, for input NAME:
  NAME_params.npz   per person (P = people): pose (P,72) axis-angle, betas
                    (P,10), crop_translation (P,3) (224 crop camera),
                    translation (P,3), focal_length (P,), camera_center (P,2):
                    the full-image pinhole (see spin_jax/inference.py), box
                    center (P,2) / scale (P,), keypoints (P,49,3) (image
                    pixels), keypoints_crop (P,49,3), loss (P,) (mean per-joint
                    SMPLify loss), valid (P,), objective (P,), facing_away (P,).
  NAME_person{i}.obj the mesh in the full image's camera frame (metres).
  NAME_overlay.png  with --img: the meshes over the image.
Without --img the image size is unknown: each person's principal point is then
its box centre (exact for the crop camera). No person with enough confident
keypoints: a message and exit code 3.
"""
from __future__ import annotations

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

from spin_jax import constants
from spin_jax import crops
from spin_jax import detector
from spin_jax import inference
from spin_jax import keypoints as keypoints_lib
from spin_jax import photo
from spin_jax import priors
from spin_jax import smpl
from spin_jax import smpl_io
from spin_jax import smplify

_KEYPOINTS = flags.DEFINE_string('keypoints', None, 'Keypoint file (OpenPose '
                                 'BODY_25 / COCO-17 / detector JSON, or .npy), '
                                 'image pixels; default: the detector on --img.')
_IMG = flags.DEFINE_string('img', None, 'The image: for the overlay, and the '
                           'detector when --keypoints is not given.')
_BODY_MODEL = flags.DEFINE_string('body_model', 'default',
                                  "'default', 'default-low' or a path.")
_PRIOR = flags.DEFINE_string('prior', None, "Pose prior (SMPLify's gmm_08.pkl or "
                             '.npz); default: the embedded one.')
_MODE = flags.DEFINE_enum('mode', 'faithful', smplify.MODES, 'SMPLify mode.')
_OUT = flags.DEFINE_string('out', 'fit_out', 'Output directory.')
_THRESHOLD = flags.DEFINE_float('threshold', crops.OPENPOSE_DETECTION_THRESHOLD,
                                'Keypoints above this confidence define the box.')
_CACHE = flags.DEFINE_string('compilation_cache', cli.DEFAULT_COMPILATION_CACHE,
                             'Folder of compiled SMPLify programs (jax persistent '
                             "cache) for the next runs; '' disables.")


def main(argv):
  del argv
  if not _KEYPOINTS.value and not _IMG.value:
    raise app.UsageError('give --img (people found by the detector), '
                         '--keypoints, or both.')
  image = crops.read_image(_IMG.value) if _IMG.value else None
  if _KEYPOINTS.value:
    keypoints, fmt = keypoints_lib.read_keypoints_file(
        _KEYPOINTS.value,
        image_name=os.path.basename(_IMG.value) if _IMG.value else None)
    keypoints = crops.check_keypoints(
        keypoints, f'--keypoints {_KEYPOINTS.value!r}',
        image.shape[:2] if image is not None else None)
    source = _KEYPOINTS.value
  else:
    people = detector.PoseDetector()(image)
    keypoints, fmt = detector.people_keypoints(people), 'detector'
    source = _IMG.value
  name = os.path.splitext(os.path.basename(source))[0]
  stem = os.path.join(_OUT.value, name)
  boxes, kp_crop, kept = photo.people_boxes(keypoints, _THRESHOLD.value)
  if not boxes:
    print(f'fit.py: no person in {source!r} ({len(keypoints)} candidate(s), '
          f'none with at least {photo.MIN_KEYPOINTS} keypoints above confidence '
          f'{_THRESHOLD.value}); nothing written.', file=sys.stderr)
    sys.exit(3)
  logging.info('%s: %d person(s) from %s keypoints', source, len(boxes), fmt)
  cli.enable_compilation_cache(_CACHE.value)
  model = smpl_io.resolve_body_model(_BODY_MODEL.value)
  prior = (priors.load_gmm_prior(_PRIOR.value) if _PRIOR.value
           else priors.default_pose_prior())

  fit = photo.fit_people(model, prior, kp_crop, mode=_MODE.value)
  reasons = photo.failure_reasons(fit.params, fit.improved, fit.init_source)
  for i, reason in enumerate(reasons):
    if reason is not None:
      print(f'fit.py: {source}: person {kept[i]} not written: {reason}.',
            file=sys.stderr)
  good = np.array([r is None for r in reasons])
  if not good.any():
    print(f'fit.py: no person in {source!r} could be fitted; nothing written.',
          file=sys.stderr)
    sys.exit(3)
  boxes = [b for b, g in zip(boxes, good) if g]
  kp_crop, kept = kp_crop[good], [k for k, g in zip(kept, good) if g]
  fit = photo.Fit(jax.tree.map(lambda x: np.asarray(x)[good], fit.params),
                  fit.loss[good], fit.objective[good], fit.improved[good],
                  fit.init_source[good])
  params = fit.params
  p = len(boxes)
  os.makedirs(_OUT.value, exist_ok=True)
  if not _KEYPOINTS.value:
    detector.write_detections(f'{stem}_keypoints.json', people, image.shape[:2])
  loss, valid, objective = fit.loss, fit.improved, fit.objective
  pick = (fit.init_source == 'mean_back').astype(int)  # facing away

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

  inference.write_npz(
      f'{stem}_params.npz', person_index=np.asarray(kept),
      pose=np.concatenate([params.global_orient, params.body_pose], -1),
      betas=params.betas, crop_translation=tc, translation=trans,
      focal_length=f_full, camera_center=pp, crop_focal_length=constants.FOCAL_LENGTH,
      box_center=centers, box_scale=np.array([b.scale for b in boxes]),
      keypoints=keypoints[kept], keypoints_crop=kp_crop,
      keypoints_format=np.array(fmt), loss=loss, valid=valid, objective=objective,
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
