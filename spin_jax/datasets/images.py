"""An in-the-wild dataset from your own photos: 2D keypoints from the bundled
detector, no 3D (the paper's "unpaired" use of SPIN on unlabelled photos).

manual_dir: a folder of images (.jpg, .jpeg, .png, .bmp, .webp; sorted by
name; not recursive). The detector (spin_jax.detector, BlazePose) finds every
person; each person with at least 4 keypoints above confidence 0.2 is one
example, like one LSP image:
  * openpose (25, 3): the detector's keypoints in the OpenPose BODY_25 slots
    (keypoints.SPIN49_FROM_BLAZEPOSE), with its confidences, as SPIN's
    OpenPose detections (SMPLify weighs them by confidence^2; the 2D loss
    gives OpenPose joints weight 0);
  * part (24, 3): the same detections in SPIN's ground-truth slots for the 17
    COCO keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
    ankles; keypoints.COCO17_TO_J24, as SPIN's COCO), with the detector's
    confidence (0 below 0.2): these drive the 2D loss as LSP's labels do;
  * box: the tight box of the confident keypoints x 1.2 (SPIN's LSP box);
  * no S, pose or shape: has_smpl = has_pose_3d = 0. The training loop's fits
    (SMPLify in the loop) are the only 3D signal.
imgname is the file name (with #k for the k-th person of an image, k >= 1,
left to right), so a fits table row can be traced back to its photo.
"""
from __future__ import annotations

import os

import numpy as np
import tqdm

from spin_jax import constants
from spin_jax import detector as detector_lib
from spin_jax import keypoints as keypoints_lib
from spin_jax.datasets import common

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
KEYPOINT_THRESHOLD = 0.2
MIN_KEYPOINTS = 4
# BlazePose landmark of each of the 17 COCO keypoints, in COCO order.
_COCO17_FROM_BLAZEPOSE = (
    'nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
    'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
    'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle',
    'right_ankle')


def person_record(root: str, imgname: str, landmarks: np.ndarray,
                  threshold: float = KEYPOINT_THRESHOLD) -> dict | None:
  """One example from a person's (33, >=3) landmarks (x, y, conf; pixels)."""
  lmk = np.asarray(landmarks, np.float32)[:, :3].copy()
  lmk[lmk[:, 2] <= threshold, 2] = 0.0
  spin49 = keypoints_lib.to_spin49(lmk)
  openpose = spin49[:constants.NUM_OPENPOSE_JOINTS]
  names = {n: i for i, n in enumerate(keypoints_lib.LANDMARK_NAMES)}
  coco = lmk[[names[n] for n in _COCO17_FROM_BLAZEPOSE]]
  part = keypoints_lib.coco17_to_spin49(coco)[constants.NUM_OPENPOSE_JOINTS:]
  good = openpose[:, 2] > 0
  if good.sum() < MIN_KEYPOINTS:
    return None
  center, scale = common.tight_box(openpose[good, :2])
  return dict(imgname=imgname, image_path=os.path.join(root, imgname.split('#')[0]),
              center=center, scale=scale, part=part, openpose=openpose)


def read_images(manual_dir: str, detector=None, progress: bool = True
                ) -> list[dict]:
  """Records of every person in the folder's images (module doc)."""
  root = common.require_dir(manual_dir, 'a folder of images')
  files = sorted(f for f in os.listdir(root)
                 if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith('.'))
  if not files:
    raise common.DatasetFormatError(
        f'{root}: no image files ({", ".join(IMAGE_EXTENSIONS)})')
  detector = detector or detector_lib.PoseDetector()
  records = []
  for name in tqdm.tqdm(files, desc='detecting people', unit='img',
                        disable=not progress):
    image = common.read_image(os.path.join(root, name))
    people = detector(image)
    k = 0
    for person in people:
      r = person_record(root, name if k == 0 else f'{name}#{k}',
                        person.landmarks)
      if r is not None:
        records.append(r)
        k += 1
  return records
