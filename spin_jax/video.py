"""Videos: spin_jax.photo's chain on every frame, people tracked across frames
(`assign_tracks`), optional temporal smoothing of each track's parameters
(`smooth_track`), one parameter file per frame and an overlay video
(`process_video`).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import cv2
import jax.numpy as jnp
import numpy as np
import tqdm

from spin_jax import crops
from spin_jax import inference
from spin_jax import photo
from spin_jax import rotations
from spin_jax import smpl


def _box_xyxy(box: crops.Box) -> np.ndarray:
  c, r = np.asarray(box.center), box.side / 2.0
  return np.concatenate([c - r, c + r])


def assign_tracks(frames_boxes: Sequence[Sequence[crops.Box]],
                  min_iou: float = 0.3, max_gap: int = 5) -> list[np.ndarray]:
  """Track ids per frame: each box joins the track whose last box (seen at
  most max_gap frames before) overlaps it most, by IoU >= min_iou, greedily
  best pair first; unmatched boxes start new tracks."""
  tracks = {}  # id -> (last frame, last box)
  out, next_id = [], 0
  for t, boxes in enumerate(frames_boxes):
    ids = np.full(len(boxes), -1)
    live = [k for k, (f, _) in tracks.items() if t - f <= max_gap]
    if boxes and live:
      cand = np.stack([tracks[k][1] for k in live])
      pairs = []
      for i, b in enumerate(boxes):
        iou = crops.box_iou(cand, _box_xyxy(b))
        pairs += [(iou[j], i, live[j]) for j in range(len(live)) if iou[j] >= min_iou]
      used = set()
      for _, i, k in sorted(pairs, reverse=True):
        if ids[i] < 0 and k not in used:
          ids[i] = k
          used.add(k)
    for i, b in enumerate(boxes):
      if ids[i] < 0:
        ids[i] = next_id
        next_id += 1
      tracks[int(ids[i])] = (t, _box_xyxy(b))
    out.append(ids)
  return out


def _project_to_rotations(m: np.ndarray) -> np.ndarray:
  """Nearest rotation matrices (..., 3, 3) to m (SVD, det +1)."""
  u, _, vt = np.linalg.svd(m)
  d = np.sign(np.linalg.det(u @ vt))
  u[..., :, -1] *= d[..., None]
  return u @ vt


def smooth_track(frames: np.ndarray, pose: np.ndarray, betas: np.ndarray,
                 translation: np.ndarray, sigma: float):
  """Gaussian smoothing of one person's parameters over time.

  Args:
    frames: (T,) frame indices where the person was seen (gaps allowed: the
      kernel is over frame indices, so a gap weighs what it should).
    pose: (T, 72) axis-angle; betas (T, NB); translation (T, 3) (full-image
      camera frame).
    sigma: kernel width in frames (0: no smoothing).
  Returns:
    (pose, betas, translation) smoothed. Rotations are averaged as matrices
    and projected back onto rotations (the chordal mean).
  """
  if sigma <= 0 or len(frames) < 2:
    return pose, betas, translation
  t = np.asarray(frames, np.float64)
  w = np.exp(-0.5 * ((t[:, None] - t[None]) / sigma) ** 2)
  w /= w.sum(1, keepdims=True)
  rot = np.asarray(rotations.axis_angle_to_matrix(
      jnp.asarray(pose, jnp.float32).reshape(-1, 3)), np.float64)
  rot = rot.reshape(len(t), 24, 3, 3)
  rot = _project_to_rotations(np.einsum('ts,sjab->tjab', w, rot))
  pose = np.asarray(rotations.matrix_to_axis_angle(
      jnp.asarray(rot, jnp.float32))).reshape(len(t), 72)
  return pose, w @ betas, w @ translation


def _video_writer(path: str, fps: float, size_wh: tuple[int, int]):
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, size_wh)
  if not writer.isOpened():
    raise OSError(f'OpenCV cannot write an mp4 video to {path!r}.')
  return writer


def process_video(video_path: str, out_dir: str,
                  reconstruct_fn: Callable[[np.ndarray, str], photo.Reconstruction],
                  faces: np.ndarray, body_model, *, smooth_sigma: float = 0.0,
                  every: int = 1, max_frames: int | None = None,
                  render: bool = True, progress: bool = True) -> dict[str, Any]:
  """Runs reconstruct_fn on the frames of a video (OpenCV).

  Writes into out_dir, for video NAME:
    NAME_frame{t:06d}_params.npz  per processed frame t (write_outputs's
        keys, plus track_id (P,) and, with smoothing, smoothed_pose,
        smoothed_betas, smoothed_cam_t, smoothed_focal_length (the track's
        median focal length, which smoothed_cam_t goes with) and
        smoothed_vertices); frames with nobody have a file with people = 0
        (so a frame's absence means it was not read)
    NAME_overlay.mp4  with render: every processed frame with its meshes
        (smoothed with smooth_sigma > 0)
  Progress bars (tqdm) for the fitting and the writing passes.

  Returns a summary dict (frames, frames_with_people, people, tracks, files).
  """
  cap = cv2.VideoCapture(video_path)
  if not os.path.isfile(video_path) or not cap.isOpened():
    raise FileNotFoundError(f'--video {video_path!r}: missing or not a video '
                            'OpenCV can read.')
  fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
  total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
  name = os.path.splitext(os.path.basename(video_path))[0]
  every = max(1, int(every))
  results: list[tuple[int, photo.Reconstruction | None]] = []
  limit = total if max_frames is None else min(total or max_frames, max_frames * every)
  bar = tqdm.tqdm(total=limit, desc=f'{name}: fitting', unit='frame',
                  disable=not progress)
  t = 0
  while max_frames is None or len(results) < max_frames:
    ok, bgr = cap.read()
    if not ok:
      break
    if t % every == 0:
      rgb = np.ascontiguousarray(bgr[..., ::-1])
      try:
        rec = reconstruct_fn(rgb, f'{video_path} frame {t}')
      except photo.NoPersonError:
        rec = None
      results.append((t, rec))
    t += 1
    bar.update(1)
  bar.close()
  cap.release()
  if not results:
    raise ValueError(f'--video {video_path!r}: no frame could be read.')

  track_ids = assign_tracks([r.boxes if r else [] for _, r in results])
  smoothed = {}  # (result index, person) -> (pose, betas, translation)
  if smooth_sigma > 0:
    per_track: dict[int, list[tuple[int, int]]] = {}
    for k, ids in enumerate(track_ids):
      for i, tid in enumerate(ids):
        per_track.setdefault(int(tid), []).append((k, i))
    for members in per_track.values():
      recs = [(results[k][0], results[k][1], i) for k, i in members]
      # Each frame's pinhole has its own focal length (box size): bring the
      # translations to the track's median focal length first (scaling t_z
      # with f keeps the body's projection), then smooth.
      focal = np.array([r.camera['focal_length'][i] for _, r, i in recs])
      f_track = float(np.median(focal))
      trans = np.stack([r.camera['translation'][i] for _, r, i in recs])
      trans[:, 2] *= f_track / focal
      pose, betas, trans = smooth_track(
          np.array([f for f, _, _ in recs]),
          np.stack([r.pose[i] for _, r, i in recs]),
          np.stack([r.betas[i] for _, r, i in recs]), trans, smooth_sigma)
      for (k, i), a, b, c in zip(members, pose, betas, trans):
        smoothed[(k, i)] = (a, b, c, f_track)

  files, writer = [], None
  video_out = os.path.join(out_dir, f'{name}_overlay.mp4')
  tmp_video = os.path.join(out_dir, f'.tmp_{name}_overlay.mp4')
  os.makedirs(out_dir, exist_ok=True)
  cap = cv2.VideoCapture(video_path) if render else None
  frame_t = -1
  try:
    for k, (t, rec) in enumerate(tqdm.tqdm(results, desc=f'{name}: writing',
                                           unit='frame', disable=not progress)):
      frame_name = f'{name}_frame{t:06d}'
      extra = dict(track_id=track_ids[k].astype(np.int64), frame=np.array(t))
      vertices = None if rec is None else rec.vertices
      cam = None if rec is None else rec.camera
      if rec is not None and smoothed:
        sp, sb, st, sf = (np.stack([smoothed[(k, i)][j] for i in range(rec.num_people)])
                          for j in range(4))
        body = smpl.forward(body_model, jnp.asarray(sb, jnp.float32),
                            jnp.asarray(sp[:, 3:], jnp.float32),
                            jnp.asarray(sp[:, :3], jnp.float32))
        vertices = np.asarray(body.vertices, np.float64)
        cam = dict(rec.camera, translation=st, focal_length=sf)
        extra.update(smoothed_pose=sp.astype(np.float32),
                     smoothed_betas=sb.astype(np.float32), smoothed_cam_t=st,
                     smoothed_focal_length=sf, smoothed_vertices=vertices,
                     smoothing_sigma=np.array(smooth_sigma))
      path = os.path.join(out_dir, f'{frame_name}_params.npz')
      if rec is None:
        inference.write_npz(path, people=np.array(0), frame=np.array(t))
      else:
        params = photo.params_dict(rec)
        params.update(extra, people=np.array(rec.num_people))
        inference.write_npz(path, **params)
      files.append(path)
      if render:
        while frame_t < t:
          ok, bgr = cap.read()
          frame_t += 1
          if not ok:
            raise OSError(f'--video {video_path!r}: frame {frame_t} could not '
                          'be read again.')
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        if rec is not None:
          rgb = inference.render_people(rgb, vertices, faces, cam)
        if writer is None:
          writer = _video_writer(tmp_video, fps / every, (rgb.shape[1], rgb.shape[0]))
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
    if writer is not None:
      writer.release()
      writer = None
      os.replace(tmp_video, video_out)
      files.append(video_out)
  finally:
    if writer is not None:
      writer.release()
    if os.path.exists(tmp_video):
      os.remove(tmp_video)
    if cap is not None:
      cap.release()
  people = sum(r.num_people for _, r in results if r)
  return dict(frames=len(results),
              frames_with_people=sum(1 for _, r in results if r),
              people=people,
              tracks=int(max((ids.max() for ids in track_ids if len(ids)),
                             default=-1)) + 1,
              files=files)

