"""A self-contained, serialised inference function (jax.export).

The exported function maps a batch of normalised crops to SPIN's outputs:

  images (b, R, R, 3) float32, ImageNet-normalised NHWC  ->
    rotmat   (b, 24, 3, 3)  global orientation + body pose, rotation matrices
    betas    (b, 10)
    cam      (b, 3)         weak-perspective (s, tx, ty) of the crop
    vertices (b, V, 3)      metres, body-model frame (add cam_t for the camera)
    joints   (b, 49, 3)     SPIN's 49 joints, same frame
    cam_t    (b, 3)         camera translation of SPIN's 224 px crop camera
                            (f = 5000, principal point (112, 112)), for any R

The batch size b is symbolic, so one artefact serves any batch size. Network
weights and the body model are baked in as constants: reloading needs only jax
(`jax.export.deserialize`), not spin_jax or flax.

  exported = load('model.jaxexport')
  out = exported.call(images)      # a dict as above
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from flax import nnx
import jax
import jax.numpy as jnp

from spin_jax import camera
from spin_jax import constants
from spin_jax import fileio
from spin_jax import smpl

OUTPUT_KEYS = ('rotmat', 'betas', 'cam', 'vertices', 'joints', 'cam_t')


def make_inference_fn(model, body_model, *, focal_length: float | None = None
                      ) -> Callable[[jax.Array], dict[str, jax.Array]]:
  """Builds images -> outputs from an HMR module (eval mode) and a body model.

  The module's state and the body model are captured, so the returned function
  has the images as its only argument (what we export).
  """
  f = constants.FOCAL_LENGTH if focal_length is None else float(focal_length)
  model.eval()
  graphdef, state = nnx.split(model)

  def infer(images):
    net = nnx.merge(graphdef, state)
    pred = net(images)
    rotmat = pred['rotmat']  # (B, 24, 3, 3)
    # vmap of a one-sample forward: the body layer then never branches on the
    # (symbolic) batch size, e.g. to chunk the mesh.
    def one(betas, rot):
      o = smpl.forward(body_model, betas[None], rot[None, 1:], rot[None, :1])
      return o.vertices[0], o.joints[0]
    vertices, joints = jax.vmap(one)(pred['betas'], rotmat)
    # The camera refers to SPIN's 224 px crop camera whatever the input size.
    cam_t = camera.weak_perspective_to_translation(
        pred['cam'], focal_length=f, img_res=constants.IMG_RES)
    return dict(rotmat=rotmat, betas=pred['betas'], cam=pred['cam'],
                vertices=vertices, joints=joints, cam_t=cam_t)

  return infer


def export_inference(infer_fn: Callable, *, img_res: int,
                     platforms: Sequence[str] | None = None,
                     dtype=jnp.float32) -> jax.export.Exported:
  """Exports infer_fn for images (b, img_res, img_res, 3) with symbolic b."""
  (b,) = jax.export.symbolic_shape('b')
  spec = jax.ShapeDtypeStruct((b, img_res, img_res, 3), dtype)
  kwargs = {}
  if platforms:
    kwargs['platforms'] = tuple(platforms)
  return jax.export.export(jax.jit(infer_fn), **kwargs)(spec)


def save(exported: jax.export.Exported, path: str) -> None:
  """Serialises to path atomically."""
  fileio.atomic_write_bytes(path, exported.serialize())


class ExportedModel:
  """A reloaded artefact. `call(images)` checks what the compiled function
  would take silently: the images must be float32 (a float64 array would be
  cast), (b, R, R, 3) with the exported R, and finite. `exported` is the raw
  jax.export.Exported (what `jax.export.deserialize` returns)."""

  def __init__(self, exported: jax.export.Exported, path: str = ''):
    self.exported = exported
    self.path = path
    aval = exported.in_avals[0]
    self.image_shape = tuple(int(d) for d in aval.shape[1:])
    self.dtype = aval.dtype

  def call(self, images) -> dict[str, jax.Array]:
    images = jnp.asarray(images) if not hasattr(images, 'dtype') else images
    if images.dtype != self.dtype:
      raise ValueError(f'{self.path or "exported model"}: images must be '
                       f'{self.dtype} (ImageNet-normalised), got {images.dtype}.')
    if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
      raise ValueError(f'{self.path or "exported model"}: images must be '
                       f'(b, {", ".join(map(str, self.image_shape))}), got '
                       f'{tuple(images.shape)}.')
    if not bool(jnp.all(jnp.isfinite(images))):
      raise ValueError(f'{self.path or "exported model"}: images contain NaN '
                       'or infinite values.')
    return self.exported.call(images)


def load(path: str) -> ExportedModel:
  """Reads an artefact written by save(); call it with `.call(images)`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'exported model {path!r} does not exist.')
  with open(path, 'rb') as f:
    data = f.read()
  try:
    exported = jax.export.deserialize(bytearray(data))
  except Exception as e:  # flatbuffer errors are cryptic: name the file
    raise ValueError(f'{path!r} is not a jax.export artefact written by '
                     f'spin_jax.export.save: {e}') from e
  return ExportedModel(exported, path)

