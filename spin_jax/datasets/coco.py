"""COCO 2014 train (person keypoints).

manual_dir layout:
    coco/annotations/person_keypoints_train2014.json
    coco/train2014/COCO_train2014_%012d.jpg
Keeps annotations (in json order) whose 12 limb keypoints (COCO 5-16) are all
labelled; conf 1 for every labelled keypoint; box = COCO box, longest side x 1.2.
"""
from __future__ import annotations

import json
import os

import numpy as np

from spin_jax.datasets import common

COCO_TO_J24 = (19, 20, 21, 22, 23, 9, 8, 10, 7, 11, 6, 3, 2, 4, 1, 5, 0)


def read_coco_train(manual_dir: str) -> list[dict]:
  root = common.require_dir(os.path.join(manual_dir, 'coco'),
                            'COCO 2014 (annotations/, train2014/)')
  path = common.require_file(
      os.path.join(root, 'annotations', 'person_keypoints_train2014.json'),
      'the COCO 2014 person keypoints annotation')
  try:
    with open(path) as fh:
      data = json.load(fh)
  except json.JSONDecodeError as e:
    raise common.DatasetFormatError(f'{path}: not valid JSON ({e})') from e
  for k in ('images', 'annotations'):
    if k not in data:
      raise common.DatasetFormatError(f'{path}: no key {k!r}')
  files = {im['id']: im['file_name'] for im in data['images']}
  records = []
  for i, ann in enumerate(data['annotations']):
    try:
      kp = np.asarray(ann['keypoints'], np.float64).reshape(17, 3)
      x, y, w, h = (float(v) for v in ann['bbox'])
      name = files[ann['image_id']]
    except (KeyError, ValueError) as e:
      raise common.DatasetFormatError(
          f'{path}: annotation {i} needs keypoints (51 numbers), bbox (4) and '
          f'an image_id listed in images ({e!r})') from e
    if np.sum(kp[5:, 2] > 0) < 12:
      continue
    part = np.zeros((24, 3), np.float32)
    part[list(COCO_TO_J24), :2] = kp[:, :2]
    part[list(COCO_TO_J24), 2] = kp[:, 2] > 0
    part[part[:, 2] == 0] = 0
    imgname = os.path.join('train2014', name)
    records.append(dict(
        imgname=imgname, image_path=os.path.join(root, imgname),
        center=np.array([x + w / 2, y + h / 2], np.float32),
        scale=np.float32(common.BBOX_SCALE_FACTOR * max(w, h) / 200.0),
        part=part))
  return records
