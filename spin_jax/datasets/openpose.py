"""OpenPose detections (SPIN's released json folders) matched to the annotated person.

Layout (as SPIN's preprocessing reads them): <openpose_dir>/<sub>/<name>_keypoints.json
with <sub> and <name> per dataset (OPENPOSE_FILES): lsp-orig 'lsp/im0001',
lspet 'hrlspet/im00001', mpii 'mpii/<image stem>', coco 'coco/<file stem>',
mpi-inf-3dhp 'mpi_inf_3dhp/S1/Seq1/imageFrames/video_0/frame_000001'.
Each json holds people[k]['pose_keypoints_2d'] (75 numbers = BODY_25 x, y, score).

Matching (SPIN_DETAILS "openpose"): among people whose 12 limb joints are all
detected, take the one whose limb joints are closest (mean distance) to the
annotated limb joints (J24 slots 0-11); if nobody qualifies, the first person.
The match is discarded (zeros) only when its distance is over 0.1 x person
size and also under the dataset threshold (MPII 30, COCO 10, others 0, so
never). Person size: largest side of the annotated joints' box (SPIN took the
box of all 24 rows, unannotated zeros included; we skip those).
"""
from __future__ import annotations

import json
import logging
import os

import numpy as np

from spin_jax.datasets import common

# BODY_25 indices of R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist,
# R elbow, R shoulder, L shoulder, L elbow, L wrist (= J24 slots 0..11).
OPENPOSE_LIMBS = (11, 10, 9, 12, 13, 14, 4, 3, 2, 5, 6, 7)
THRESHOLDS = {'mpii': 30.0, 'coco': 10.0}
# dataset -> (sub-folder, imgname prefix to strip)
OPENPOSE_FILES = {'lsp-orig': ('lsp', 'images/'), 'lspet': ('hrlspet', ''),
                  'mpii': ('mpii', 'images/'), 'coco': ('coco', 'train2014/'),
                  'mpi-inf-3dhp': ('mpi_inf_3dhp', '')}


def read_people(path: str) -> np.ndarray:
  """(P, 25, 3) detections of one OpenPose json file."""
  try:
    with open(path) as fh:
      data = json.load(fh)
    people = [np.asarray(p['pose_keypoints_2d'], np.float64).reshape(25, 3)
              for p in data['people']]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise common.DatasetFormatError(
        f'{path}: expected OpenPose json with people[k].pose_keypoints_2d '
        f'(75 numbers): {e!r}') from e
  return np.stack(people) if people else np.zeros((0, 25, 3))


def match(people: np.ndarray, part: np.ndarray, dataset: str) -> np.ndarray:
  """The (25, 3) detection of the annotated person (zeros when discarded)."""
  if len(people) == 0:
    return np.zeros((25, 3), np.float32)
  seen = part[:, 2] > 0
  xy = part[seen, :2]
  size = float(np.max(xy.max(0) - xy.min(0))) if seen.any() else 0.0
  dist = np.full(len(people), np.inf)
  for k, p in enumerate(people):
    limbs = p[list(OPENPOSE_LIMBS)]
    if np.all(limbs[:, 2] > 0):
      dist[k] = np.mean(np.linalg.norm(limbs[:, :2] - part[:12, :2], axis=-1))
  best = int(np.argmin(dist))
  d = dist[best]
  if size > 0 and d / size > 0.1 and d < THRESHOLDS.get(dataset, 0.0):
    return np.zeros((25, 3), np.float32)
  return people[best].astype(np.float32)


def json_path(openpose_dir: str, dataset: str, imgname: str) -> str:
  sub, prefix = OPENPOSE_FILES[dataset]
  name = imgname[len(prefix):] if imgname.startswith(prefix) else imgname
  return os.path.join(openpose_dir, sub,
                      os.path.splitext(name)[0] + '_keypoints.json')


def attach(records: list[dict], openpose_dir: str, dataset: str) -> int:
  """Sets record['openpose'] from the json files; returns how many were found.

  A missing json file leaves zeros (no detection), logged once with a count.
  """
  found = 0
  for r in records:
    path = json_path(openpose_dir, dataset, r['imgname'])
    if not os.path.isfile(path):
      continue
    r['openpose'] = match(read_people(path), np.asarray(r['part']), dataset)
    found += 1
  if found < len(records):
    logging.warning('%s: OpenPose json found for %d of %d images under %s; '
                    'the others get zeros', dataset, found, len(records),
                    openpose_dir)
  return found
