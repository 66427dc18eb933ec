"""Inference on photos: the regressor on person crops, full-image cameras,
overlays and output files, and loading a trained or converted regressor.

Boxes and crops follow spin_jax.crops's conventions (SPIN's).

Camera in the full image. The regressor predicts SPIN's weak-perspective crop
camera (s, tx, ty) for the 224 px crop with f = 5000 px and principal point
(112, 112); its translation is t = (tx, ty, 2 f / (224 s)). For the full image
we use a pinhole with
    focal length  F = 5000 * side / 224   (the crop's 5000 px, scaled to
                                          original pixels by the box size),
    principal point the image centre (W/2, H/2),
    translation    T = (tx + (cx - W/2) t_z / F, ty + (cy - H/2) t_z / F, t_z).
The depth stays the crop's, and the body's origin projects exactly where the
crop camera puts it; moving the principal point from the box centre to the
image centre changes only the (small) perspective of the body about that
point. Several people in one image get one F each (their box sizes differ);
the overlay renders each with its own F over the same image.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
from flax import nnx
import jax
import numpy as np

from spin_jax import checkpoint
from spin_jax import constants
from spin_jax import convert
from spin_jax import crops
from spin_jax import fileio
from spin_jax import models
from spin_jax import render
from spin_jax import rotations
from spin_jax import smpl
from spin_jax import smpl_io

OVERLAY_MAX_SIDE = 2048  # pixels; larger photos get overlays of this size


# ---------------------------------------------------------------------------
# Cameras.


def full_image_camera(cam, boxes: Sequence[crops.Box], image_shape: Sequence[int],
                      focal_length: float = constants.FOCAL_LENGTH,
                      crop_res: int = constants.IMG_RES) -> dict[str, np.ndarray]:
  """The predicted crop cameras as pinholes of the full image (module doc).

  Args:
    cam: (P, 3) weak-perspective crop cameras (s, tx, ty).
    boxes: P boxes in original pixels.
    image_shape: (H, W) of the original image.

  Returns:
    dict(focal_length (P,), camera_center (2,) = (W/2, H/2),
         translation (P, 3), crop_translation (P, 3)).
  """
  cam = np.asarray(cam, np.float64)
  if cam.ndim != 2 or cam.shape[1] != 3 or len(cam) != len(boxes):
    raise ValueError(f'cam must be (P, 3) with P = {len(boxes)} boxes, got '
                     f'{cam.shape}.')
  h, w = float(image_shape[0]), float(image_shape[1])
  s, tx, ty = cam[:, 0], cam[:, 1], cam[:, 2]
  tz = 2.0 * focal_length / (crop_res * s + 1e-9)
  side = np.array([b.side for b in boxes])
  centers = np.array([b.center for b in boxes], np.float64)  # (P, 2)
  f_full = focal_length * side / crop_res  # (P,)
  trans = np.stack([tx + (centers[:, 0] - w / 2.0) * tz / f_full,
                    ty + (centers[:, 1] - h / 2.0) * tz / f_full, tz], -1)
  return dict(focal_length=f_full, camera_center=np.array([w / 2.0, h / 2.0]),
              translation=trans, crop_translation=np.stack([tx, ty, tz], -1))


# ---------------------------------------------------------------------------
# The regressor.


class Predictor:
  """Jitted regressor + body model: normalised crops -> numpy outputs.

  Output dict (P = batch): rotmat (P,24,3,3), betas (P,10), cam (P,3),
  pose (P,72) axis-angle, vertices (P,V,3), joints (P,49,3), cam_t (P,3) of
  the 224 crop camera.
  """

  def __init__(self, model, body_model, img_res: int | None = None):
    model.eval()
    self.body_model = body_model
    self.img_res = int(img_res or model.config.img_res)
    graphdef, state = nnx.split(model)
    self._state = state

    def predict(state, body_model, images):
      net = nnx.merge(graphdef, state)
      pred = net(images)
      out = models.body_outputs(pred, body_model, vertices=True)
      return {k: out[k] for k in ('rotmat', 'betas', 'cam', 'vertices',
                                  'joints', 'cam_t')}

    self._predict = jax.jit(predict)

  def __call__(self, images) -> dict[str, np.ndarray]:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[1:] != (self.img_res, self.img_res, 3):
      raise ValueError(f'Predictor: expected normalised crops (B, {self.img_res}'
                       f', {self.img_res}, 3), got {images.shape}.')
    out = self._predict(self._state, self.body_model, images)
    out = {k: np.asarray(v) for k, v in out.items()}
    out['pose'] = np.asarray(
        rotations.matrix_to_axis_angle(out['rotmat'])).reshape(len(images), -1)
    return out

  def predict_boxes(self, image: np.ndarray, boxes: Sequence[crops.Box],
                    batch_size: int = 16) -> dict[str, np.ndarray]:
    """Crops each box of an RGB uint8 image and regresses; outputs per box."""
    patches = np.stack([crops.crop(image, b, self.img_res) for b in boxes])
    parts = [self(crops.normalize_images(patches[i:i + batch_size]))
             for i in range(0, len(patches), batch_size)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out['crops'] = patches
    return out


# ---------------------------------------------------------------------------
# Writing results.


def write_png(path: str, rgb: np.ndarray) -> None:
  ok, buf = cv2.imencode('.png', np.ascontiguousarray(rgb[..., ::-1]))
  if not ok:
    raise ValueError(f'could not encode {path!r} as PNG.')
  fileio.atomic_write_bytes(path, buf.tobytes())


def write_obj(path: str, vertices: np.ndarray, faces: np.ndarray) -> None:
  """Wavefront OBJ (1-based faces), written atomically."""
  text = io.StringIO()
  text.write('# spin_jax mesh, metres, OpenCV camera frame of the full image\n')
  np.savetxt(text, np.asarray(vertices, np.float64), fmt='v %.6f %.6f %.6f')
  np.savetxt(text, np.asarray(faces, np.int64) + 1, fmt='f %d %d %d')
  fileio.atomic_write_bytes(path, text.getvalue().encode())


def write_npz(path: str, **arrays) -> None:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  fileio.atomic_write_bytes(path, buf.getvalue())


def render_people(image: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  camera: dict[str, np.ndarray], *, side_view: bool = False
                  ) -> np.ndarray:
  """Overlay (or side view) of all people, each with its own focal length.

  People are drawn far to near so nearer ones cover farther ones. Images
  larger than OVERLAY_MAX_SIDE on their long side are rendered (and
  returned) at that size, with the cameras scaled to match, so memory and
  time stay bounded whatever the photo's size.
  """
  h0, w0 = image.shape[:2]
  if max(h0, w0) > OVERLAY_MAX_SIDE:
    s = OVERLAY_MAX_SIDE / max(h0, w0)
    image = cv2.resize(image, (max(1, round(w0 * s)), max(1, round(h0 * s))),
                       interpolation=cv2.INTER_AREA)
    # Pixel centres at integers: u' = sx (u + 0.5) - 0.5 per axis.
    sx, sy = image.shape[1] / w0, image.shape[0] / h0
    c = np.asarray(camera['camera_center'], np.float64)
    camera = dict(camera, focal_length=np.asarray(camera['focal_length']) * sx,
                  camera_center=np.array([sx * (c[0] + 0.5) - 0.5,
                                          sy * (c[1] + 0.5) - 0.5]))
  h, w = image.shape[:2]
  order = np.argsort(-camera['translation'][:, 2])
  out = None if side_view else image
  colors = [(0.65, 0.74, 0.86), (0.86, 0.70, 0.60), (0.70, 0.86, 0.64),
            (0.86, 0.80, 0.55)]
  for i in order:
    kwargs = dict(translation=camera['translation'][i],
                  color=colors[i % len(colors)])
    if side_view:
      out = render.render_side_view(vertices[i], faces,
                                    camera['focal_length'][i],
                                    camera['camera_center'], (h, w), out,
                                    **kwargs)
    else:
      out = render.render_mesh(vertices[i], faces, camera['focal_length'][i],
                               camera['camera_center'], (h, w), out, **kwargs)
  return out


def run_on_image(predictor: Predictor, image: np.ndarray, boxes: Sequence[crops.Box],
                 out_dir: str, name: str, *, faces: np.ndarray | None = None,
                 render: bool = True) -> dict[str, Any]:
  """Regresses every box of one image and writes the demo outputs.

  Writes into out_dir:
    {name}_overlay.png   meshes over the image (full-image cameras)
    {name}_side.png      the same meshes turned 90 degrees, white background
    {name}_person{i}.obj each mesh in the full image's camera frame (metres)
    {name}_params.npz    per person: pose (axis-angle 72), rotmat, betas,
                         crop_cam (s, tx, ty), crop_cam_t, cam_t (full image),
                         focal_length (full image), camera_center, box_center,
                         box_scale, joints (49, body frame), vertices (body
                         frame); plus image_size (H, W).
  Returns the outputs as a dict of arrays (and 'files', the paths written).
  """
  if not boxes:
    raise ValueError('run_on_image: no boxes given.')
  crops.check_boxes(boxes, image.shape)
  out = predictor.predict_boxes(image, boxes)
  cam = full_image_camera(out['cam'], boxes, image.shape[:2])
  faces = np.asarray(predictor.body_model.faces if faces is None else faces)
  files = []
  if render:
    overlay = render_people(image, out['vertices'], faces, cam)
    side = render_people(image, out['vertices'], faces, cam, side_view=True)
    for suffix, img in (('overlay', overlay), ('side', side)):
      path = os.path.join(out_dir, f'{name}_{suffix}.png')
      write_png(path, img)
      files.append(path)
  for i in range(len(boxes)):
    path = os.path.join(out_dir, f'{name}_person{i}.obj')
    write_obj(path, out['vertices'][i] + cam['translation'][i], faces)
    files.append(path)
  params = dict(
      pose=out['pose'], rotmat=out['rotmat'], betas=out['betas'],
      crop_cam=out['cam'], crop_cam_t=cam['crop_translation'],
      cam_t=cam['translation'], focal_length=cam['focal_length'],
      camera_center=cam['camera_center'],
      box_center=np.array([b.center for b in boxes]),
      box_scale=np.array([b.scale for b in boxes]),
      joints=out['joints'], vertices=out['vertices'],
      image_size=np.array(image.shape[:2]))
  path = os.path.join(out_dir, f'{name}_params.npz')
  write_npz(path, **params)
  files.append(path)
  params['files'] = files
  return params


# ---------------------------------------------------------------------------
# Loading a regressor.


@dataclass
class Loaded:
  """A regressor ready for inference and what it needs."""
  model: Any             # models.HMR in eval mode
  body_model: Any        # smpl.BodyModel
  body_model_spec: str
  kind: str              # 'workdir' (experiments/train.py) or 'converted'
  data_dir: str | None   # the training run's data dir, if any
  config: Any = None     # the training config (workdir only)
  workdir: str | None = None


def load_workdir_model(path: str, step: int | None = None):
  """The regressor of a training workdir (or its checkpoints folder), rebuilt
  from the checkpoint's own config: (models.HMR in eval mode, config)."""
  ckpt = checkpoint.Checkpointer(path, max_to_keep=None, read_only=True)
  config = ckpt.restore_config(step)
  model = models.create_model(config.model, config.get('mean_params') or None,
                              seed=config.get('seed', 0))
  return checkpoint.restore_model(ckpt, model, step), config


def load_model(path: str, *, step: int | None = None,
               body_model: str | None = None) -> Loaded:
  """Loads a training workdir (orbax) or a converted SPIN checkpoint.

  Args:
    path: a workdir of experiments/train.py (or its checkpoints/ folder), or a
      directory written by experiments/convert_checkpoint.py.
    step: checkpoint step of a workdir (default: latest).
    body_model: 'default', 'default-low' or a path to SMPL files; default:
      the training config's body model, or 'default' for a converted
      checkpoint (SPIN's weights were trained for SMPL: pass its path).
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(f'--checkpoint {path!r} is not a directory.')
  if os.path.isfile(os.path.join(path, 'conversion.json')):
    model = convert.load_converted_model(path)
    model.eval()
    spec = body_model or 'default'
    return Loaded(model, smpl_io.resolve_body_model(spec, min_betas=constants.NUM_BETAS),
                  spec, 'converted',
                  None)
  if step is None and not os.path.isdir(checkpoint.checkpoint_dir(path)):
    raise FileNotFoundError(
        f'--checkpoint {path!r}: neither a training workdir with orbax '
        f'checkpoints nor a converted SPIN checkpoint (conversion.json).')
  try:
    model, config = load_workdir_model(path, step)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'--checkpoint {path!r}: {e}') from e
  spec = body_model or str(config.get('body_model', 'default'))
  workdir = os.path.abspath(path)
  if os.path.basename(workdir) == 'checkpoints':
    workdir = os.path.dirname(workdir)
  if 'data' in config and config.data.get('data_dir'):
    data_dir = config.data.data_dir
  else:
    data_dir = os.path.join(workdir, 'data')  # train.py's default
  body = smpl_io.resolve_body_model(spec, min_betas=constants.NUM_BETAS)
  return Loaded(model, body, spec, 'workdir', data_dir, config, workdir)


def render_demo_image(height: int = 320, width: int = 240, seed: int = 0
                      ) -> np.ndarray:
  """The shipped demo picture (spin_jax/assets/demo.png), reproducibly.

  The embedded default body model in a walking pose, shaded, over a simple
  wall-and-floor background with a little noise: RGB uint8 (H, W, 3).
  """
  body = smpl_io.default_body_model('full')
  pose = np.zeros((1, 72), np.float32)
  pose[0, 0] = np.pi  # SMPL's y-up body -> OpenCV's y-down camera
  joint = {n: i for i, n in enumerate(constants.SMPL_JOINT_NAMES)}
  def bend(name, xyz):
    pose[0, 3 * joint[name]:3 * joint[name] + 3] = xyz
  bend('left_hip', (-0.45, 0.0, 0.05))
  bend('right_hip', (0.35, 0.0, -0.05))
  bend('left_knee', (0.35, 0.0, 0.0))
  bend('right_knee', (0.6, 0.0, 0.0))
  bend('left_shoulder', (0.0, 0.0, -1.1))
  bend('right_shoulder', (0.0, 0.0, 1.1))
  bend('left_elbow', (0.0, -0.6, 0.0))
  bend('right_elbow', (0.0, 0.5, 0.0))
  out = smpl.forward(body, np.zeros((1, body.num_betas), np.float32),
                     pose[:, 3:], pose[:, :3])
  verts = np.asarray(out.vertices[0], np.float64)
  # Frame the body: centred, about 80% of the image height.
  lo, hi = verts.min(0), verts.max(0)
  f = 600.0
  depth = f * (hi[1] - lo[1]) / (0.8 * height)
  t = np.array([-(lo[0] + hi[0]) / 2, -(lo[1] + hi[1]) / 2, depth])
  rng = np.random.default_rng(seed)
  y = np.linspace(0.0, 1.0, height)[:, None, None]
  wall = np.array([196, 206, 214]) * (1.0 - 0.25 * y)
  floor = np.array([150, 132, 110]) * (0.8 + 0.2 * y)
  bg = np.where(y < 0.72, wall, floor) * np.ones((1, width, 1))
  bg = np.clip(bg + rng.normal(0, 1.0, bg.shape), 0, 255).astype(np.uint8)
  return render.render_mesh(verts, body.faces, f, (width / 2, height / 2),
                            (height, width), bg, translation=t,
                            color=(0.80, 0.62, 0.52))

