r"""3D bodies from a photo, a folder of photos or a video; overlay, side view,
meshes and parameters.

  python experiments/demo.py --img=photo.jpg --out=out/            # nothing licensed
  python experiments/demo.py --img=photo.jpg --checkpoint=DIR --refine --out=out/
  python experiments/demo.py --img_dir=photos/ --out=out/
  python experiments/demo.py --video=clip.mp4 --smooth=2 --out=out/
  python experiments/demo.py --img=im.jpg --bbox=120,40,200,420 --checkpoint=DIR --out=out/
  python experiments/demo.py --img=im.jpg --openpose=im_keypoints.json --out=out/

People. By default the bundled detector (spin_jax.detector: BlazePose,
weights shipped in spin_jax/assets) finds every person and their 2D keypoints;
--openpose takes them from a keypoint file instead (OpenPose BODY_25, COCO-17,
the detector's JSON or a .npy: spin_jax.keypoints.read_keypoints_file);
--bbox (regressor only) or --whole_image give boxes without keypoints.

Bodies (spin_jax.photo). With --checkpoint the regressor predicts each person
from its crop; --refine then runs SMPLify on the keypoints from that prediction
(and from the mean parameters, keeping the better fit per person). Without a
checkpoint SMPLify fits from the mean parameters: a photo gives a fitted body
with the embedded free body model and nothing licensed.

Outputs in --out, for image NAME (spin_jax.photo.write_outputs):
NAME_overlay.png, NAME_side.png, NAME_keypoints.png, NAME_person{i}.obj
(metres, the full image's camera frame), NAME_params.npz (per person: pose,
betas, cameras, the keypoints in image pixels with confidences, the fit's loss)
and, when the detector ran, NAME_keypoints.json (its own format, readable by
experiments/fit.py). --img_dir does every image of a folder (progress bar,
summary.json); --video every frame (NAME_frame{t}_params.npz, NAME_overlay.mp4,
people tracked across frames, --smooth=SIGMA frames of temporal smoothing).
A photo with no person: a message and exit code 3 (a folder or video: only
when no image / frame has anyone). Boxes and crops are documented in
spin_jax/crops.py, the full-image camera in spin_jax/inference.py.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

# pylint: disable=g-import-not-at-top
from spin_jax import crops
from spin_jax import detector as detector_lib
from spin_jax import fileio
from spin_jax import inference
from spin_jax import keypoints as keypoints_lib
from spin_jax import photo
from spin_jax import priors
from spin_jax import smpl_io
from spin_jax import smplify
from spin_jax import video

_IMG = flags.DEFINE_string('img', None, 'Input image.')
_IMG_DIR = flags.DEFINE_string('img_dir', None, 'A folder of images.')
_VIDEO = flags.DEFINE_string('video', None, 'A video file (OpenCV).')
_BBOX = flags.DEFINE_string('bbox', None, 'x,y,w,h of a person box in pixels '
                            '(several separated by ";"); regressor only.')
_OPENPOSE = flags.DEFINE_string('openpose', None, 'Keypoint file for --img '
                                '(OpenPose BODY_25 / COCO-17 / detector JSON, '
                                '.npy); default: the bundled detector.')
_WHOLE_IMAGE = flags.DEFINE_bool('whole_image', False, 'The whole image is one '
                                 "person's box (regressor only, no detector).")
_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or '
                                  'converted SPIN checkpoint directory; '
                                  'default: no regressor, SMPLify from the '
                                  'mean parameters.')
_REFINE = flags.DEFINE_bool('refine', False, 'With --checkpoint: SMPLify on '
                            "the keypoints from the regressor's prediction.")
_MEAN_STARTS = flags.DEFINE_bool('mean_starts', True, 'With --refine: also '
                                 'start SMPLify from the mean parameters and '
                                 'keep the better fit per person.')
_MODE = flags.DEFINE_enum('mode', 'fast', smplify.MODES, 'SMPLify mode.')
_BODY_MODEL = flags.DEFINE_string('body_model', None, "'default', "
                                  "'default-low' or a path to SMPL files; "
                                  "default: the checkpoint's, else 'default'.")
_PRIOR = flags.DEFINE_string('prior', None, "Pose prior (SMPLify's gmm_08.pkl "
                             'or .npz); default: the embedded one.')
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_RESCALE = flags.DEFINE_float('rescale', crops.DEFAULT_RESCALE,
                              'Box enlargement around the person (SPIN: 1.2).')
_THRESHOLD = flags.DEFINE_float('threshold', photo.KEYPOINT_THRESHOLD,
                                'Keypoints above this confidence define the box '
                                'and count in the fit.')
_SMOOTH = flags.DEFINE_float('smooth', 0.0, '--video: Gaussian temporal '
                             'smoothing of each tracked person, sigma in frames '
                             '(0: none).')
_EVERY = flags.DEFINE_integer('every', 1, '--video: process every n-th frame.')
_MAX_FRAMES = flags.DEFINE_integer('max_frames', None, '--video: at most this '
                                   'many processed frames.')
_NO_RENDER = flags.DEFINE_bool('no_render', False, 'Skip the PNG / video renders.')
_CACHE = flags.DEFINE_string('compilation_cache', cli.DEFAULT_COMPILATION_CACHE,
                             'Folder of compiled programs (jax persistent cache) '
                             "for the next runs; '' disables.")
flags.mark_flag_as_required('out')

_NO_PERSON_EXIT = 3


def _no_person(message: str):
  print(f'demo.py: {message}', file=sys.stderr)
  sys.exit(_NO_PERSON_EXIT)


def _summary_json(rec: photo.Reconstruction, files: Sequence[str]) -> str:
  """One image's line on stdout."""
  return json.dumps(dict(
      people=rec.num_people, files=list(files),
      init=rec.init_source.tolist(),
      loss=[None if not np.isfinite(x) else round(float(x), 2) for x in rec.loss],
      cam_t=np.round(rec.camera['translation'], 4).tolist(),
      focal_length=np.round(rec.camera['focal_length'], 2).tolist()))


def main(argv):
  del argv
  inputs = [f for f in (_IMG, _IMG_DIR, _VIDEO) if f.value]
  if len(inputs) != 1:
    raise app.UsageError('give exactly one of --img, --img_dir, --video.')
  if sum(bool(v) for v in (_BBOX.value, _OPENPOSE.value, _WHOLE_IMAGE.value)) > 1:
    raise app.UsageError('give at most one of --bbox, --openpose, --whole_image.')
  if (_BBOX.value or _OPENPOSE.value) and not _IMG.value:
    raise app.UsageError('--bbox and --openpose go with --img (one image).')
  boxes_only = bool(_BBOX.value or _WHOLE_IMAGE.value)
  if boxes_only and not _CHECKPOINT.value:
    raise app.UsageError('--bbox / --whole_image give boxes, not keypoints: '
                         'they need a regressor (--checkpoint).')
  if boxes_only and _REFINE.value:
    raise app.UsageError('--refine fits keypoints: drop --bbox / --whole_image '
                         '(the detector or --openpose gives keypoints).')
  cli.enable_compilation_cache(_CACHE.value)

  predictor, body_model = None, None
  if _CHECKPOINT.value:
    loaded = inference.load_model(_CHECKPOINT.value, body_model=_BODY_MODEL.value)
    predictor = inference.Predictor(loaded.model, loaded.body_model)
    body_model = loaded.body_model
  else:
    body_model = smpl_io.resolve_body_model(_BODY_MODEL.value or 'default')
  os.makedirs(_OUT.value, exist_ok=True)

  if boxes_only:  # the regressor on given boxes (no keypoints, no SMPLify)
    image = crops.read_image(_IMG.value)
    boxes = (crops.parse_bbox_flag(_BBOX.value, _RESCALE.value) if _BBOX.value
             else [crops.whole_image_box(image.shape)])
    name = os.path.splitext(os.path.basename(_IMG.value))[0]
    out = inference.run_on_image(predictor, image, boxes, _OUT.value, name,
                                 render=not _NO_RENDER.value)
    print(json.dumps(dict(people=len(boxes), files=out['files'],
                          cam_t=out['cam_t'].round(4).tolist(),
                          focal_length=out['focal_length'].round(2).tolist())))
    return

  prior = (priors.load_gmm_prior(_PRIOR.value) if _PRIOR.value
           else priors.default_pose_prior())
  detector = None if _OPENPOSE.value else detector_lib.PoseDetector()
  if predictor is not None and not _REFINE.value:
    logging.info('regressor only (add --refine to fit SMPLify to the keypoints)')
  elif predictor is None:
    logging.info('no --checkpoint: SMPLify from the mean parameters')

  def run(image, name, keypoints=None):
    """Detect (unless keypoints) and reconstruct one image; write its files."""
    people = None
    if keypoints is None:
      people = detector(image)
      keypoints = detector_lib.people_keypoints(people)
    rec = photo.reconstruct(
        image, body_model, prior, keypoints=keypoints, predictor=predictor,
        refine=_REFINE.value, mean_starts=_MEAN_STARTS.value, mode=_MODE.value,
        threshold=_THRESHOLD.value, rescale=_RESCALE.value, name=name)
    if people is not None:
      rec.detector_score = np.array([people[i].score for i in rec.person_index],
                                    np.float32)
    for i, reason in rec.failed:
      print(f'demo.py: {name}: person {i} not written: {reason}.', file=sys.stderr)
    return rec, people

  if _IMG.value:
    image = crops.read_image(_IMG.value)
    name = os.path.splitext(os.path.basename(_IMG.value))[0]
    keypoints = None
    if _OPENPOSE.value:
      keypoints, fmt = keypoints_lib.read_keypoints_file(
          _OPENPOSE.value, flag='--openpose',
          image_name=os.path.basename(_IMG.value))
      keypoints = crops.check_keypoints(
          keypoints, f'--openpose {_OPENPOSE.value!r}', image.shape[:2])
      logging.info('%d person(s) in %s (%s)', len(keypoints), _OPENPOSE.value, fmt)
    try:
      rec, people = run(image, f'--img {_IMG.value!r}', keypoints)
    except photo.NoPersonError as e:
      _no_person(f'{e} Nothing written.')
    files = photo.write_outputs(rec, image, _OUT.value, name, body_model.faces,
                                render=not _NO_RENDER.value)
    if people is not None:
      path = os.path.join(_OUT.value, f'{name}_keypoints.json')
      detector_lib.write_detections(path, people, image.shape[:2])
      files.append(path)
    print(_summary_json(rec, files))
    return

  if _IMG_DIR.value:
    paths = photo.list_images(_IMG_DIR.value)
    summary, found = {}, 0
    for path in tqdm.tqdm(paths, desc='images', unit='image'):
      name = os.path.splitext(os.path.basename(path))[0]
      try:
        image = crops.read_image(path)
        rec, people = run(image, path)
      except photo.NoPersonError as e:
        logging.warning('%s', e)
        summary[os.path.basename(path)] = dict(people=0, message=str(e))
        continue
      except ValueError as e:  # unreadable image: note it, go on
        logging.warning('%s', e)
        summary[os.path.basename(path)] = dict(people=0, error=str(e))
        continue
      photo.write_outputs(rec, image, _OUT.value, name, body_model.faces,
                          render=not _NO_RENDER.value)
      detector_lib.write_detections(
          os.path.join(_OUT.value, f'{name}_keypoints.json'), people,
          image.shape[:2])
      summary[os.path.basename(path)] = dict(
          people=rec.num_people, loss=np.round(rec.loss.astype(float), 2).tolist(),
          init=rec.init_source.tolist())
      found += 1
    fileio.atomic_write_json(os.path.join(_OUT.value, 'summary.json'), summary,
                             indent=1)
    print(json.dumps(dict(images=len(paths), images_with_people=found,
                          people=sum(v['people'] for v in summary.values()))))
    if not found:
      _no_person(f'--img_dir {_IMG_DIR.value!r}: no person in any of its '
                 f'{len(paths)} image(s).')
    return

  result = video.process_video(
      _VIDEO.value, _OUT.value, lambda image, name: run(image, name)[0],
      body_model.faces, body_model, smooth_sigma=_SMOOTH.value,
      every=_EVERY.value, max_frames=_MAX_FRAMES.value,
      render=not _NO_RENDER.value)
  print(json.dumps({k: v for k, v in result.items() if k != 'files'}))
  if not result['frames_with_people']:
    _no_person(f'--video {_VIDEO.value!r}: no person in any of its '
               f'{result["frames"]} processed frame(s).')


if __name__ == '__main__':
  cli.run(main)
