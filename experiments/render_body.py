r"""Renders the body model in a few poses and shapes, front and side views.

  python experiments/render_body.py --out body.png
  python experiments/render_body.py --model=default-low --out /tmp/low.png
  python experiments/render_body.py --model=/path/to/SMPL_NEUTRAL.pkl --out smpl.png

Top rows: poses (rest T-pose, relaxed, walking, sitting, waving) front and side.
Bottom row: shapes along the documented betas (beta0 stature, beta1 weight).
"""
from __future__ import annotations

import os

from absl import app
from absl import flags
import numpy as np

from spin_jax import cli

FLAGS = flags.FLAGS


def define_flags():
  # Defined when run as a script only, so that importing render_grid (tests,
  # notebooks) never clashes with another module's --out / --model flags.
  flags.DEFINE_string('out', 'body.png', 'Output PNG path.')
  flags.DEFINE_string(
      'model', 'default',
      "Body model: 'default', 'default-low', or a path (SMPL .pkl/.npz, "
      'folder).')
  flags.DEFINE_integer('panel_height', 320, 'Height of one panel (px).')


def _pose(**joint_aa_deg):
  """(69,) body pose from {joint index: (rx, ry, rz) degrees}."""
  pose = np.zeros(69)
  for name, aa in joint_aa_deg.items():
    j = int(name[1:])
    pose[3 * (j - 1):3 * j] = np.deg2rad(aa)
  return pose


# SMPL joint ids: 1/2 hips, 4/5 knees, 16/17 shoulders, 18/19 elbows.
# Conventions (SMPL frame, y up, facing +z): hip flexion is -x, knee flexion
# +x, left elbow flexion -y (right +y), left arm down is -z (right +z).
POSES = {
    'rest': _pose(),
    'relaxed': _pose(j16=(0, 0, -65), j17=(0, 0, 65), j18=(0, -15, 0),
                     j19=(0, 15, 0)),
    'walking': _pose(j1=(-30, 0, 0), j2=(20, 0, 0), j4=(10, 0, 0),
                     j5=(45, 0, 0), j16=(0, 25, -70), j17=(0, 25, 70),
                     j18=(0, -30, 0), j19=(0, 30, 0)),
    'sitting': _pose(j1=(-85, 0, -8), j2=(-85, 0, 8), j4=(90, 0, 0),
                     j5=(90, 0, 0), j16=(0, 0, -60), j17=(0, 0, 60),
                     j18=(0, -60, 0), j19=(0, 60, 0)),
    'waving': _pose(j16=(0, 0, -70), j17=(0, 0, -50), j19=(0, 0, -70),
                    j3=(5, 0, 0), j13=(0, 0, 10)),
}
SHAPES = {
    'beta0 -2 (shorter)': (0, -2.0), 'beta0 +2 (taller)': (0, 2.0),
    'beta1 -2 (thinner)': (1, -2.0), 'beta1 +2 (heavier)': (1, 2.0),
    'beta2 +2': (2, 2.0),
}


def _to_camera(v):
  """SMPL frame (y up, facing +z) -> OpenCV camera looking at the front."""
  return v * np.array([1.0, -1.0, -1.0])


def _side(v):
  """Turns the body 90 degrees about the vertical (we see its left side)."""
  c = v.mean(0)
  r = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
  return (v - c) @ r.T + c


def _panel(vertices, faces, height, label, pixels_per_metre):
  """One white panel, wide enough for the body at a common scale."""
  import cv2  # pylint: disable=g-import-not-at-top
  from spin_jax import render  # pylint: disable=g-import-not-at-top
  v = _to_camera(np.asarray(vertices, np.float64))
  lo, hi = v.min(0), v.max(0)
  width = int(max(0.62 * height, (hi[0] - lo[0]) * pixels_per_metre + 16))
  dist = 8.0  # a far camera: nearly orthographic, same scale everywhere
  v = v - 0.5 * (lo + hi) + np.array([0.0, 0.0, dist])
  bg = np.full((height, width, 3), 255, np.uint8)
  img = render.render_mesh(v, faces, pixels_per_metre * dist,
                           (width / 2, height / 2), (height, width), bg,
                           color=(0.62, 0.72, 0.88))
  cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
              (40, 40, 40), 1, cv2.LINE_AA)
  return img


def _rows_to_grid(rows):
  rows = [np.concatenate(r, 1) for r in rows]
  width = max(r.shape[1] for r in rows)
  pad = lambda r: np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)),
                         constant_values=255)
  return np.concatenate([pad(r) for r in rows], 0)


def render_grid(model, panel_height=320):
  """uint8 RGB grid: poses front, poses side, shapes front."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from spin_jax import smpl  # pylint: disable=g-import-not-at-top
  nb = model.num_betas
  poses = np.stack(list(POSES.values()))
  betas = np.zeros((len(SHAPES), nb))
  for i, (k, val) in enumerate(SHAPES.values()):
    if k < nb:
      betas[i, k] = val
  all_betas = np.concatenate([np.zeros((len(poses), nb)), betas])
  all_poses = np.concatenate([poses, np.tile(POSES['relaxed'],
                                             (len(SHAPES), 1))])
  out = smpl.forward(model, jnp.asarray(all_betas, jnp.float32),
                     jnp.asarray(all_poses, jnp.float32),
                     jnp.zeros((len(all_poses), 3), jnp.float32))
  verts = np.asarray(out.vertices)
  pose_verts, shape_verts = verts[:len(poses)], verts[len(poses):]
  faces = np.asarray(model.faces)
  tallest = max(np.ptp(v[:, 1]) for v in verts)
  ppm = 0.88 * panel_height / tallest
  rows = [
      [_panel(v, faces, panel_height, k + ' (front)', ppm)
       for k, v in zip(POSES, pose_verts)],
      [_panel(_side(v), faces, panel_height, k + ' (side)', ppm)
       for k, v in zip(POSES, pose_verts)],
      [_panel(v, faces, panel_height, k, ppm)
       for k, v in zip(SHAPES, shape_verts)],
  ]
  return _rows_to_grid(rows)


def main(argv):
  del argv
  import cv2  # pylint: disable=g-import-not-at-top
  from spin_jax import smpl_io  # pylint: disable=g-import-not-at-top
  if FLAGS.panel_height < 32:
    raise app.UsageError(
        f'--panel_height must be >= 32, got {FLAGS.panel_height}')
  model = smpl_io.resolve_body_model(FLAGS.model)
  grid = render_grid(model, FLAGS.panel_height)
  out = FLAGS.out
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + '.tmp.png'
  if not cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR),
                     [cv2.IMWRITE_PNG_COMPRESSION, 9]):
    raise OSError(f'--out: could not write {out}')
  os.replace(tmp, out)
  print(out)


if __name__ == '__main__':
  define_flags()
  cli.run(main)
