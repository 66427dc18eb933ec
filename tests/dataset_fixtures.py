"""Writers of tiny dataset fixtures in each dataset's real on-disk format.

Each writer fills `root` (a manual_dir) and returns what the test needs to
check the build: the ground truth it wrote, in the dataset's own conventions.
Images are small smooth gradients (so JPEG keeps them close) of known size.
"""
from __future__ import annotations

import json
import os
import pickle

import cv2
import h5py
import numpy as np
import scipy.io


def write_image(path: str, h: int, w: int, seed: int = 0) -> np.ndarray:
  """A smooth RGB gradient image; returns the RGB array that was written."""
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  rng = np.random.default_rng(seed)
  a = rng.uniform(0.2, 1.0, 3)
  img = np.stack([(x / w * 200 * a[0] + 20),
                  (y / h * 200 * a[1] + 20),
                  ((x + y) / (w + h) * 200 * a[2] + 20)], -1)
  img = np.clip(img, 0, 255).astype(np.uint8)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if not cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
    raise OSError(f'cannot write {path}')
  return img


def _joints(rng, n, w, h, k=14):
  """(n, k, 2) points well inside a w x h image."""
  lo = np.array([0.2 * w, 0.15 * h])
  span = np.array([0.6 * w, 0.7 * h])
  return lo + rng.uniform(0, 1, (n, k, 2)) * span


def write_lsp(root: str, kind: str, num_images: int = 3, w=160, h=200):
  """kind: 'lsp' (test, + UP-3D masks), 'lsp_orig' or 'lspet'.

  Returns joints (N_total, 14, 2) in the dataset's order (index 0 = image 1).
  """
  rng = np.random.default_rng({'lsp': 1, 'lsp_orig': 2, 'lspet': 3}[kind])
  total = 10000 if kind == 'lspet' else 2000
  joints = _joints(rng, total, w, h)
  vis = np.ones((total, 14, 1))
  if kind == 'lspet':
    folder = os.path.join(root, 'hr-lspet')
    mat = np.concatenate([joints, vis], -1).transpose(1, 2, 0)  # (14, 3, N)
  else:
    folder = os.path.join(root, 'lsp_dataset' if kind == 'lsp'
                          else 'lsp_dataset_original')
    mat = np.concatenate([joints, vis], -1).transpose(2, 1, 0)  # (3, 14, N)
  os.makedirs(folder, exist_ok=True)
  scipy.io.savemat(os.path.join(folder, 'joints.mat'), {'joints': mat})
  first = 1000 if kind == 'lsp' else 0
  for i in range(first, first + num_images):
    if kind == 'lspet':
      write_image(os.path.join(folder, f'im{i + 1:05d}.png'), h, w, i)
    else:
      write_image(os.path.join(folder, 'images', f'im{i + 1:04d}.jpg'), h, w, i)
    if kind == 'lsp':
      seg = np.zeros((h, w), np.uint8)
      seg[h // 4:3 * h // 4, w // 3:2 * w // 3] = 1
      parts = (np.arange(h * w).reshape(h, w) % 7).astype(np.uint8)
      parts[:3] = 255
      d = os.path.join(root, 'upi-s1h', 'data', 'lsp')
      os.makedirs(d, exist_ok=True)
      cv2.imwrite(os.path.join(d, f'im{i + 1:04d}_segmentation.png'), seg)
      cv2.imwrite(os.path.join(d, f'im{i + 1:04d}_part_segmentation.png'),
                  parts)
  return joints


def write_mpii(root: str, w=220, h=180):
  """Stacked-Hourglass train.h5 with 4 people; person 2 has a joint at -1."""
  rng = np.random.default_rng(4)
  n = 4
  parts = _joints(rng, n, w, h, 16)
  parts[2, 5] = -1.0  # unannotated joint: the sample is dropped
  names = [f'{100000 + i:09d}.jpg' for i in range(n)]
  center = parts.mean(1)
  scale = rng.uniform(0.5, 0.9, n)
  d = os.path.join(root, 'mpii')
  os.makedirs(os.path.join(d, 'annot'), exist_ok=True)
  with h5py.File(os.path.join(d, 'annot', 'train.h5'), 'w') as f:
    f['imgname'] = np.array([s.encode() for s in names])
    f['center'] = center
    f['scale'] = scale
    f['part'] = parts
  for i, name in enumerate(names):
    write_image(os.path.join(d, 'images', name), h, w, i)
  return dict(names=names, center=center, scale=scale, parts=parts,
              kept=[0, 1, 3])


def write_coco(root: str, w=240, h=200):
  """3 annotations on 2 images; annotation 1 lacks a limb keypoint."""
  rng = np.random.default_rng(5)
  kps = np.concatenate([_joints(rng, 3, w, h, 17), np.full((3, 17, 1), 2.0)],
                       -1)
  kps[0, 1] = 0  # unlabelled left eye: kept (not a limb joint)
  kps[1, 9] = 0  # unlabelled left wrist: annotation dropped
  kps[2, 3, 2] = 1  # labelled but not visible: conf 1
  boxes = [[30.0, 20.0, 100.0, 150.0], [10.0, 5.0, 80.0, 60.0],
           [50.5, 40.25, 120.0, 90.0]]
  images = [dict(id=9, file_name='COCO_train2014_000000000009.jpg', width=w,
                 height=h),
            dict(id=25, file_name='COCO_train2014_000000000025.jpg', width=w,
                 height=h)]
  anns = [dict(id=100 + i, image_id=[9, 9, 25][i], bbox=boxes[i],
               keypoints=kps[i].reshape(-1).tolist(), num_keypoints=17,
               category_id=1, iscrowd=0) for i in range(3)]
  d = os.path.join(root, 'coco')
  os.makedirs(os.path.join(d, 'annotations'), exist_ok=True)
  with open(os.path.join(d, 'annotations', 'person_keypoints_train2014.json'),
            'w') as fh:
    json.dump(dict(images=images, annotations=anns, categories=[]), fh)
  for i, im in enumerate(images):
    write_image(os.path.join(d, 'train2014', im['file_name']), h, w, i)
  return dict(keypoints=kps, boxes=boxes, kept=[0, 2])


def write_3dpw(root: str, w=200, h=240):
  """One test sequence, 2 people x 3 frames, python-2 protocol pickle."""
  rng = np.random.default_rng(6)
  n_frames, seq = 3, 'downtown_fixture_00'
  poses = [rng.normal(0, 0.3, (n_frames, 72)) for _ in range(2)]
  betas = [rng.normal(0, 1, 300), rng.normal(0, 1, 10)]
  kp2d = []
  for _ in range(2):
    xy = _joints(rng, n_frames, w, h, 18).transpose(0, 2, 1)  # (F, 2, 18)
    conf = np.ones((n_frames, 1, 18))
    conf[:, :, 17] = 0  # an undetected keypoint: not in the box
    xy[:, :, 17] = 5000
    kp2d.append(np.concatenate([xy, conf], 1))
  cam_poses = np.tile(np.eye(4), (n_frames, 1, 1))
  for f in range(n_frames):
    cam_poses[f, :3, :3] = cv2.Rodrigues(rng.normal(0, 0.5, (3, 1)))[0]
  valid = [np.array([1, 0, 1]), np.array([1, 1, 1])]
  data = dict(sequence=seq, genders=['m', 'f'], poses=poses, betas=betas,
              trans=[np.zeros((n_frames, 3))] * 2, poses2d=kp2d,
              jointPositions=[np.zeros((n_frames, 72))] * 2,
              cam_poses=cam_poses, campose_valid=valid,
              cam_intrinsics=np.eye(3), img_frame_ids=np.arange(n_frames),
              v_template_clothed=[np.zeros((6890, 3))] * 2)
  d = os.path.join(root, '3dpw', 'sequenceFiles', 'test')
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, f'{seq}.pkl'), 'wb') as fh:
    pickle.dump(data, fh, protocol=2)
  for f in range(n_frames):
    write_image(os.path.join(root, '3dpw', 'imageFiles', seq,
                             f'image_{f:05d}.jpg'), h, w, f)
  return data


def write_3dhp_train(root: str, frames_per_camera: int = 2):
  """S1-S8 x Seq1-2 annot.mat (v5, cells) and extracted frames (all 14 cams
  annotated, the 8 training cameras extracted). Joint x,y in 2048 px; frame
  2 of S1/Seq1 camera 0 is out of the image (invalid)."""
  rng = np.random.default_rng(7)
  truth = {}
  for s in range(1, 9):
    for q in (1, 2):
      seq_dir = os.path.join(root, 'mpi_inf_3dhp', f'S{s}', f'Seq{q}')
      a2 = np.empty((14, 1), object)
      a3 = np.empty((14, 1), object)
      for cam in range(14):
        xy = 300 + rng.uniform(0, 1400, (frames_per_camera, 28, 2))
        if (s, q, cam) == (1, 1, 0):
          xy[1, 4, 0] = 2100.0
        a2[cam, 0] = xy.reshape(frames_per_camera, 56)
        a3[cam, 0] = rng.normal(0, 500, (frames_per_camera, 84))
        truth[(s, q, cam)] = (a2[cam, 0], a3[cam, 0])
      os.makedirs(seq_dir, exist_ok=True)
      scipy.io.savemat(os.path.join(seq_dir, 'annot.mat'),
                       dict(annot2=a2, annot3=a3, univ_annot3=a3,
                            cameras=np.arange(14)[None], frames=np.arange(
                                frames_per_camera)[:, None]))
      for cam in (0, 1, 2, 4, 5, 6, 7, 8):
        for fr in range(frames_per_camera):
          write_image(os.path.join(seq_dir, 'imageFrames', f'video_{cam}',
                                   f'frame_{fr + 1:06d}.jpg'), 64, 64, fr)
  return truth


def write_3dhp_test(root: str, n_frames: int = 3):
  """TS1-6 annot_data.mat as MATLAB v7.3 (HDF5, column-major -> reversed
  axes as h5py reads them); frame 1 of each is invalid."""
  rng = np.random.default_rng(8)
  truth = {}
  for ts in range(1, 7):
    d = os.path.join(root, 'mpi_inf_3dhp', 'mpi_inf_3dhp_test_set', f'TS{ts}')
    os.makedirs(d, exist_ok=True)
    a2 = 200 + rng.uniform(0, 800, (n_frames, 1, 17, 2))
    a3 = rng.normal(0, 500, (n_frames, 1, 17, 3))
    valid = np.ones((n_frames, 1))
    valid[1] = 0
    with h5py.File(os.path.join(d, 'annot_data.mat'), 'w') as f:
      f['annot2'] = a2
      f['annot3'] = a3
      f['univ_annot3'] = a3 * 0.9
      f['valid_frame'] = valid
    for fr in range(n_frames):
      if valid[fr, 0]:
        write_image(os.path.join(d, 'imageSequence', f'img_{fr + 1:06d}.jpg'),
                    96, 96, fr)
    truth[ts] = (a2, a3 * 0.9, valid)
  return truth


H36M_CAMERAS = (54138969, 60457274)


def write_h36m(root: str, subjects=(9, 11), n_frames: int = 11):
  """h36m-fetch layout: S*/Directions-1/annot.h5 + imageSequence frames (only
  the frames SPIN keeps, every 5th, are extracted)."""
  rng = np.random.default_rng(9)
  truth = {}
  for s in subjects:
    seq_dir = os.path.join(root, 'h36m', f'S{s}', 'Directions-1')
    os.makedirs(seq_dir, exist_ok=True)
    cams = np.repeat(H36M_CAMERAS, n_frames)
    frames = np.tile(np.arange(1, n_frames + 1), len(H36M_CAMERAS))
    p2 = 200 + rng.uniform(0, 500, (len(cams), 32, 2))
    p3 = rng.normal(0, 400, (len(cams), 32, 3))
    with h5py.File(os.path.join(seq_dir, 'annot.h5'), 'w') as f:
      f['pose/2d'] = p2
      f['pose/3d'] = p3
      f['pose/3d-univ'] = p3
      f['camera'] = cams
      f['frame'] = frames
      f['subject'] = np.full(len(cams), s)
    for c, fr in zip(cams, frames):
      if (fr - 1) % 5 == 0:
        write_image(os.path.join(seq_dir, 'imageSequence', str(c),
                                 f'img_{fr:06d}.jpg'), 100, 100, int(fr))
    truth[s] = dict(p2=p2, p3=p3, cams=cams, frames=frames)
  return truth


def write_spin_npz(path: str, records: dict) -> None:
  """An npz like SPIN's dataset_extras files (string arrays as numpy str)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  np.savez(path, **records)


def write_openpose_json(path: str, people) -> None:
  """An OpenPose BODY_25 json: people (P, 25, 3) -> pose_keypoints_2d."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as fh:
    json.dump(dict(version=1.3, people=[
        dict(person_id=[-1], pose_keypoints_2d=np.asarray(p).reshape(-1)
             .tolist(), face_keypoints_2d=[]) for p in people]), fh)
