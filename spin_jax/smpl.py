"""A pure-functional SMPL body layer: a `BodyModel` pytree and functions of it.

    model = smpl_io.load_body_model('data/smpl')  # or .default_body_model()
    out = forward(model, betas, body_pose, global_orient)
    out.vertices  # (B, V, 3)
    out.joints    # (B, 49, 3) SPIN's joint set
    joints = joints_forward(model, betas, body_pose, global_orient)  # exact, no mesh

The model is an argument of every function (never closed over), so one
compiled function serves any body model of the same sizes, and `jit`, `vmap`
and `grad` apply as usual. Float64 works when `jax_enable_x64` is on and the
model is loaded with ``dtype=np.float64``. Building a model from arrays is
`make_body_model` here; reading SMPL files (official .pkl, .npz, folders, the
default model in assets/) is spin_jax/smpl_io.py.

Array layouts (chosen for CPU speed, measured in
experiments/benchmarks/smpl_forward.py). Internally the mesh is *planar*,
(B, 3, V) with the vertex index last, so every elementwise step runs over long
contiguous rows, and it is transposed to (B, V, 3) once at the end:

* ``posedirs`` is ``(P, 3*V)``, P = 207 = 23*9, column ``c*V + v`` (planar;
  smplx uses ``v*3 + c``): the pose corrective is one ``(B, P) @ (P, 3*V)``
  matmul, the largest cost of a forward pass (memory-bound at batch 1).
* ``shapedirs`` is ``(V, 3, NB)`` as in the SMPL file.
* skinning blends the 24 joint transforms as one GEMM
  ``(B*12, 24) x (24, V)`` (3x4 transforms, planar), then applies the
  per-vertex transforms elementwise (fused by XLA). With the interleaved
  (B, V, 12) layout XLA's CPU code for the same step was about 2x slower.
* on XLA:CPU big batches are skinned in chunks (`MESH_CHUNK_VERTICES`), so
  temporaries stay a few MB: beyond ~32 MB every call paid fresh page faults,
  and one pass over 64 meshes was ~10x slower than four passes over 16.
  Other backends skin the batch in one pass (`MESH_CHUNK_BACKENDS`).
* kinematics composes all 24 joints at once by pointer doubling (3 rounds of
  batched 3x3 dots for SMPL's depth-8 tree).
XLA CPU flags made no measurable difference here (tried
``--xla_cpu_experimental_ynn_fusion_type=``).

The joints-only path (`joints_forward`) never forms the mesh: rest joints are
``J_template + J_shapedirs . betas`` (the joint regressor applied in advance to
the template and the shape basis, exact by linearity), kinematics run on the
24 joints, and the 11 surface keypoints and 9 ``J_regressor_extra`` joints come
from `RegressedPoints`: a point regressed from the skinned mesh,
``p = sum_v r_v sum_k w_vk (R_k y_v + t_k)`` with rest vertices ``y_v`` linear
in betas and the pose feature, equals ``sum_k R_k (C_k + S_k betas + P_k f) +
(sum_v r_v w_vk) t_k`` with (point, bone) sums precomputed at load time. Its
cost depends on the number of (point, bone) pairs, not on how many vertices
the regressor reads. `forward` uses the same computation for its joints, and
`h36m_joints_forward` for the H36M regressor.

Kept whole (about 590 lines): the mesh, joints-only and H36M paths share
the same private kinematics and skinning steps.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from spin_jax import constants
from spin_jax import rotations

NUM_JOINTS = constants.NUM_SMPL_JOINTS  # 24
NUM_POSE_BASIS = 9 * (NUM_JOINTS - 1)  # 207

# Candidate points in our (fingertip-free) order: 24 SMPL joints, 11 surface
# keypoints, 9 J_regressor_extra joints. SPIN's 54-point list also has 10
# fingertips at 35-44, which none of the 49 joints uses.
_NUM_CANDIDATES = NUM_JOINTS + 11 + constants.NUM_EXTRA_JOINTS
assert all(not 35 <= i < 45 for i in constants.JOINTS_49_FROM_54)
JOINTS_49_FROM_CANDIDATES = tuple(
    i - 10 if i >= 45 else i for i in constants.JOINTS_49_FROM_54)

class StaticArray:
  """A read-only numpy array usable as static (hashable) pytree metadata.

  Equality and hash use a digest of the contents, so two models with equal
  faces share compiled functions.
  """

  def __init__(self, array):
    array = np.array(array)
    array.setflags(write=False)
    self.array = array
    digest = hashlib.sha1(array.tobytes()).hexdigest()
    self._key = (array.shape, array.dtype.str, digest)

  def __hash__(self):
    return hash(self._key)

  def __eq__(self, other):
    return isinstance(other, StaticArray) and self._key == other._key

  def __repr__(self):
    return f'StaticArray(shape={self.array.shape}, dtype={self.array.dtype})'


@struct.dataclass
class VertexSubset:
  """Arrays of a few vertices (S), enough to skin them without the mesh."""
  v_template: jax.Array  # (S, 3)
  shapedirs: jax.Array  # (S, 3, NB)
  posedirs: jax.Array  # (P, 3*S) planar, as BodyModel.posedirs
  lbs_weights: jax.Array  # (S, 24)


@struct.dataclass
class RegressedPoints:
  """R points regressed from the posed mesh, as L (point, bone) pairs.

  For pair l = (point r, bone k): ``weight = sum_v reg_rv w_vk`` and
  ``center/shapedirs/posedirs`` are the same sums of the rest vertices'
  template, shape and pose bases (see the module docstring).
  """
  center: jax.Array  # (L, 3)
  shapedirs: jax.Array  # (L, 3, NB)
  posedirs: jax.Array  # (P, L*3), column l*3 + c
  weight: jax.Array  # (L,)
  rows: jax.Array  # (R, L) one-hot: the point of each pair
  row_sum: jax.Array  # (R,) sum_v reg_rv: how the point follows a translation
  bones: tuple[int, ...] = struct.field(pytree_node=False)  # (L,) bone of pair

  @property
  def num_pairs(self) -> int:
    return len(self.bones)


@struct.dataclass
class BodyModel:
  """SMPL-like body model as a pytree (V vertices, NB shape components).

  Array fields are traced; topology, kinematic tree and names are static.
  Build one with `make_body_model` (which also computes the joints-only
  fields) or load one with `smpl_io.load_body_model` / `default_body_model`.
  """
  v_template: jax.Array  # (V, 3)
  shapedirs: jax.Array  # (V, 3, NB)
  posedirs: jax.Array  # (207, 3*V) planar: column c*V + v (module docstring)
  J_regressor: jax.Array  # (24, V) dense
  lbs_weights: jax.Array  # (V, 24)
  J_regressor_extra: jax.Array  # (9, V)
  J_regressor_h36m: jax.Array  # (17, V)
  # Joints-only path, precomputed at load time.
  J_template: jax.Array  # (24, 3) = J_regressor @ v_template
  J_shapedirs: jax.Array  # (24, 3, NB) = J_regressor applied to shapedirs
  joint_points: RegressedPoints  # 11 keypoints + 9 extra joints (SPIN's 45-53)
  h36m_points: RegressedPoints  # the 17 H36M-regressor joints
  parents: tuple[int, ...] = struct.field(pytree_node=False)
  faces_static: StaticArray = struct.field(pytree_node=False)
  keypoint_vertex_ids: tuple[int, ...] = struct.field(pytree_node=False)
  name: str = struct.field(pytree_node=False, default='smpl')
  gender: str = struct.field(pytree_node=False, default='neutral')
  # False when posedirs is all zero (e.g. the default model): the pose
  # corrective matmul, the largest cost of a forward pass, is then skipped.
  has_pose_correctives: bool = struct.field(pytree_node=False, default=True)

  @property
  def faces(self) -> np.ndarray:
    """(F, 3) int32 triangle vertex ids (read-only numpy)."""
    return self.faces_static.array

  @property
  def num_vertices(self) -> int:
    return self.v_template.shape[0]

  @property
  def num_betas(self) -> int:
    return self.shapedirs.shape[-1]

  @property
  def dtype(self):
    return self.v_template.dtype


@struct.dataclass
class BodyOutput:
  vertices: jax.Array  # (B, V, 3), or (B, S, 3) in vertex-subset mode
  joints: jax.Array  # (B, 49, 3) SPIN order
  smpl_joints: jax.Array  # (B, 24, 3) posed SMPL joints
  rotmats: jax.Array  # (B, 24, 3, 3) joint rotations (global orient first)


# --------------------------------------------------------------------------
# Building a model.


def _planar_posedirs(posedirs_vcp):
  """(V, 3, P) SMPL layout -> (P, 3*V) planar layout."""
  return np.transpose(posedirs_vcp, (2, 1, 0)).reshape(
      posedirs_vcp.shape[-1], -1)


def _regressed_points(regressor, v_template, shapedirs, posedirs_vcp,
                      lbs_weights, cast):
  """Precomputes `RegressedPoints` (float64 numpy sums, then `cast`)."""
  cols = np.flatnonzero(np.any(regressor != 0, axis=0))  # vertices read
  reg, w = regressor[:, cols], lbs_weights[cols]
  pair_row, pair_bone = np.nonzero(np.abs(reg) @ (w != 0))  # (L,) each
  rw = reg[pair_row] * w[:, pair_bone].T  # (L, n): reg_rv * w_vk per pair
  num_pairs, nv = len(pair_row), len(cols)
  posedirs = (rw @ posedirs_vcp[cols].reshape(nv, -1)).reshape(
      num_pairs, 3, -1)  # (L, 3, P)
  rows = np.zeros((regressor.shape[0], num_pairs))
  rows[pair_row, np.arange(num_pairs)] = 1.0
  return RegressedPoints(
      center=cast(rw @ v_template[cols]),
      shapedirs=cast(np.einsum('lv,vck->lck', rw, shapedirs[cols])),
      posedirs=cast(np.transpose(posedirs, (2, 0, 1)).reshape(
          posedirs.shape[-1], -1)),
      weight=cast(rw.sum(1)),
      rows=cast(rows),
      row_sum=cast(regressor.sum(1)),
      bones=tuple(int(k) for k in pair_bone))


def _check_shape(name, array, shape, source):
  if array.ndim != len(shape) or any(
      want is not None and got != want for got, want in zip(array.shape, shape)):
    want = tuple('?' if s is None else s for s in shape)
    raise ValueError(f'{source}: key {name!r} has shape {array.shape}, '
                     f'expected {want}')


def make_body_model(*, v_template, shapedirs, posedirs, J_regressor, weights,
                    parents, faces, keypoint_vertex_ids, J_regressor_extra,
                    J_regressor_h36m, name='smpl', gender='neutral',
                    dtype=np.float32, source='<arrays>') -> BodyModel:
  """Validates SMPL-layout numpy arrays and builds a `BodyModel`.

  Args use the SMPL file layout: v_template (V,3), shapedirs (V,3,NB),
  posedirs (V,3,207), J_regressor (24,V) dense or scipy-sparse, weights
  (V,24), parents (24,) with -1 for the root, faces (F,3),
  keypoint_vertex_ids (11,), J_regressor_extra (9,V), J_regressor_h36m (17,V).
  Precomputation runs in float64 before the cast to `dtype`.
  """
  def dense(x):
    return np.asarray(x.toarray() if hasattr(x, 'toarray') else x, np.float64)

  v_template = dense(v_template)
  _check_shape('v_template', v_template, (None, 3), source)
  nv = v_template.shape[0]
  shapedirs = dense(shapedirs)
  _check_shape('shapedirs', shapedirs, (nv, 3, None), source)
  posedirs = dense(posedirs)
  _check_shape('posedirs', posedirs, (nv, 3, NUM_POSE_BASIS), source)
  J_regressor = dense(J_regressor)
  _check_shape('J_regressor', J_regressor, (NUM_JOINTS, nv), source)
  weights = dense(weights)
  _check_shape('weights', weights, (nv, NUM_JOINTS), source)
  J_regressor_extra = dense(J_regressor_extra)
  _check_shape('J_regressor_extra', J_regressor_extra,
               (constants.NUM_EXTRA_JOINTS, nv), source)
  J_regressor_h36m = dense(J_regressor_h36m)
  _check_shape('J_regressor_h36m', J_regressor_h36m,
               (constants.NUM_H36M_JOINTS, nv), source)
  faces = np.asarray(faces)
  _check_shape('f', faces, (None, 3), source)
  if faces.size and (faces.min() < 0 or faces.max() >= nv):
    raise ValueError(f'{source}: key \'f\' has vertex ids outside [0, {nv})')
  parents = _parse_parents(parents, source)
  kp = tuple(int(i) for i in np.asarray(keypoint_vertex_ids).reshape(-1))
  if len(kp) != len(constants.KEYPOINT_VERTEX_NAMES) or not all(
      0 <= i < nv for i in kp):
    raise ValueError(
        f'{source}: keypoint_vertex_ids must be 11 vertex ids in [0, {nv}) in '
        f'the order {constants.KEYPOINT_VERTEX_NAMES}, got {kp}')
  for key, arr in (('v_template', v_template), ('shapedirs', shapedirs),
                   ('posedirs', posedirs), ('J_regressor', J_regressor),
                   ('weights', weights), ('J_regressor_extra', J_regressor_extra),
                   ('J_regressor_h36m', J_regressor_h36m)):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f'{source}: key {key!r} has non-finite values')

  J_template = J_regressor @ v_template  # (24, 3)
  J_shapedirs = np.einsum('jv,vck->jck', J_regressor, shapedirs)  # (24, 3, NB)

  if np.dtype(dtype) == np.float64 and not jax.config.jax_enable_x64:
    raise ValueError('dtype=float64 needs jax_enable_x64 (e.g. '
                     '`jax.config.update("jax_enable_x64", True)`)')
  cast = lambda x: jnp.asarray(x, dtype=dtype)
  # The 11 keypoints as one-hot regressor rows, then the 9 extra joints.
  keypoint_rows = np.zeros((len(kp), nv))
  keypoint_rows[np.arange(len(kp)), kp] = 1.0
  common = (v_template, shapedirs, posedirs, weights, cast)
  joint_points = _regressed_points(
      np.concatenate([keypoint_rows, J_regressor_extra]), *common)
  h36m_points = _regressed_points(J_regressor_h36m, *common)
  return BodyModel(
      v_template=cast(v_template),
      shapedirs=cast(shapedirs),
      posedirs=cast(_planar_posedirs(posedirs)),
      J_regressor=cast(J_regressor),
      lbs_weights=cast(weights),
      J_regressor_extra=cast(J_regressor_extra),
      J_regressor_h36m=cast(J_regressor_h36m),
      J_template=cast(J_template),
      J_shapedirs=cast(J_shapedirs),
      joint_points=joint_points,
      h36m_points=h36m_points,
      parents=parents,
      faces_static=StaticArray(faces.astype(np.int32)),
      keypoint_vertex_ids=kp,
      name=str(name),
      gender=str(gender),
      has_pose_correctives=bool(np.any(posedirs != 0)))


def _parse_parents(kintree_or_parents, source):
  a = np.asarray(kintree_or_parents)
  if a.ndim == 2:
    _check_shape('kintree_table', a, (2, NUM_JOINTS), source)
    a = a[0]
  a = a.astype(np.int64).reshape(-1)
  if a.shape != (NUM_JOINTS,):
    raise ValueError(f'{source}: key \'kintree_table\' must give 24 parents, '
                     f'got shape {a.shape}')
  a = np.where(a == 4294967295, -1, a)  # SMPL stores the root's -1 as uint32
  parents = tuple(int(p) for p in a)
  if parents[0] != -1 or any(not 0 <= p < i for i, p in enumerate(parents)
                             if i > 0):
    raise ValueError(f'{source}: key \'kintree_table\' is not a tree rooted at '
                     f'joint 0 with parents before children: {parents}')
  return parents


# --------------------------------------------------------------------------
# Forward pass.


def _as_rotmats(pose, batch, joints, what):
  """Axis-angle (B, J*3) / (B, J, 3) or matrices (B, J, 3, 3) -> (B,J,3,3).

  Decided from the element count, which is unambiguous for any batch size.
  """
  pose = jnp.asarray(pose)
  if pose.size == batch * joints * 3 and pose.shape[-1] == 3 or (
      pose.ndim == 2 and pose.shape[-1] == joints * 3):
    return rotations.axis_angle_to_matrix(pose.reshape(batch, joints, 3))
  if pose.size == batch * joints * 9 and pose.shape[-2:] == (3, 3):
    return pose.reshape(batch, joints, 3, 3)
  raise ValueError(
      f'{what} must be axis-angle ({batch}, {joints * 3}) / ({batch}, {joints}, 3)'
      f' or rotation matrices ({batch}, {joints}, 3, 3); got {pose.shape}')


def _prepare(model, betas, body_pose, global_orient):
  dtype = model.v_template.dtype
  betas = jnp.asarray(betas, dtype)
  if betas.ndim != 2 or betas.shape[1] > model.num_betas:
    raise ValueError(f'betas must be (B, <= {model.num_betas}), got {betas.shape}')
  batch = betas.shape[0]
  go = _as_rotmats(jnp.asarray(global_orient, dtype), batch, 1, 'global_orient')
  bp = _as_rotmats(jnp.asarray(body_pose, dtype), batch, NUM_JOINTS - 1,
                   'body_pose')
  rotmats = jnp.concatenate([go, bp], axis=1)  # (B, 24, 3, 3)
  eye = jnp.eye(3, dtype=dtype)
  pose_feature = (rotmats[:, 1:] - eye).reshape(batch, NUM_POSE_BASIS)
  return betas, rotmats, pose_feature


def _posed_planar(v_template, shapedirs, posedirs, betas, pose_feature):
  """Rest-pose vertices with shape and pose correctives, planar (B, 3, N).

  posedirs=None: the model has no pose correctives.
  """
  batch, nb = betas.shape
  v = jnp.einsum('bk,nck->bcn', betas, shapedirs[..., :nb])  # (B, 3, N)
  v = v + v_template.T
  if posedirs is None:
    return v
  return v + (pose_feature @ posedirs).reshape(batch, 3, -1)


def _matvec3(a, v):
  # A batched dot: XLA's CPU code for the broadcast-and-sum form of these tiny
  # products was ~10x slower at batch 64.
  return (a @ v[..., None])[..., 0]


def _kinematics(rotmats, rest_joints, parents):
  """Forward kinematics.

  Returns posed joints (B,24,3) and skinning transforms as (B,24,12): the
  rotation (9, row-major) and the translation taking rest to posed positions.

  Pointer doubling: each joint holds its transform relative to an ancestor
  and composes it with that ancestor's, which then points twice as far up;
  log2(depth) = 3 rounds of batched 3x3 products for SMPL instead of a chain
  of 23 (a small graph: fast to compile, differentiate and run).
  """
  n = len(parents)
  par = np.asarray(parents)
  is_root = (par < 0)[:, None]
  rel = rest_joints - jnp.where(is_root, 0.0, rest_joints[:, np.maximum(par, 0)])
  batch, dtype = rotmats.shape[0], rotmats.dtype
  eye = jnp.broadcast_to(jnp.eye(3, dtype=dtype), (batch, 1, 3, 3))
  zero = jnp.zeros((batch, 1, 3), dtype)
  anc = np.where(par < 0, n, par)  # n = "done" (identity transform)
  glob_r, glob_t = rotmats, rel
  while np.any(anc < n):
    rp = jnp.concatenate([glob_r, eye], 1)[:, anc]  # (B, 24, 3, 3)
    tp = jnp.concatenate([glob_t, zero], 1)[:, anc]
    glob_t = _matvec3(rp, glob_t) + tp
    glob_r = rp @ glob_r
    anc = np.append(anc, n)[anc]
  posed = glob_t  # (B, 24, 3)
  trans = posed - _matvec3(glob_r, rest_joints)
  transforms = jnp.concatenate([glob_r.reshape(batch, -1, 9), trans], -1)
  return posed, transforms


def _skin(v_posed, lbs_weights, transforms):
  """Linear blend skinning, planar. (B,3,N), (N,24), (B,24,12) -> (B,N,3)."""
  batch = transforms.shape[0]
  a = jnp.swapaxes(transforms, 1, 2).reshape(batch * 12, NUM_JOINTS)
  t = jnp.einsum('mj,nj->mn', a, lbs_weights).reshape(batch, 12, -1)  # (B,12,N)
  x, y, z = v_posed[:, 0], v_posed[:, 1], v_posed[:, 2]
  # Row r of the blended 3x4 transform is t[:, 3r:3r+3], translation t[:, 9+r].
  out = [t[:, 3 * r] * x + t[:, 3 * r + 1] * y + t[:, 3 * r + 2] * z
         + t[:, 9 + r] for r in range(3)]
  return jnp.stack(out, axis=-1)  # (B, N, 3)


def _skin_subset(model, sub, betas, pose_feature, transforms):
  """Posed positions of a `VertexSubset`'s vertices: (B, S, 3)."""
  posedirs = sub.posedirs if model.has_pose_correctives else None
  v = _posed_planar(sub.v_template, sub.shapedirs, posedirs, betas,
                    pose_feature)
  return _skin(v, sub.lbs_weights, transforms)


# Vertex rows per chunk of the batch in skinning: keeps each chunk's
# temporaries (the (b, 12, V) blended transforms above all) at a few MB. On
# CPU, skinning 64 SMPL meshes in one pass was ~10x slower than in four passes
# of 16: buffers beyond ~32 MB are fresh mmaps, paid in page faults each call.
MESH_CHUNK_VERTICES = 1 << 16
# Backends that skin in chunks (chosen when tracing). A GPU keeps its
# memory pooled and wants the whole batch in one kernel: one pass there.
MESH_CHUNK_BACKENDS = ('cpu',)


def _mesh(model, betas, pose_feature, transforms):
  """The full mesh (B, V, 3); skinning runs over chunks of the batch."""
  batch, nb = betas.shape
  # One matmul for the whole batch: posedirs (30 MB for a 12k-vertex model) is
  # read once, not once per chunk (in the backward pass too).
  if model.has_pose_correctives:
    pose_offsets = pose_feature @ model.posedirs  # (B, 3*V)
  else:
    pose_offsets = jnp.zeros((batch, 0), betas.dtype)

  def one(args):
    b, offsets, tr = args
    v = jnp.einsum('bk,nck->bcn', b, model.shapedirs[..., :nb])  # (b, 3, V)
    v = v + model.v_template.T
    if model.has_pose_correctives:
      v = v + offsets.reshape(b.shape[0], 3, -1)
    return _skin(v, model.lbs_weights, tr)  # (b, V, 3)

  chunk = max(1, MESH_CHUNK_VERTICES // model.num_vertices)
  if jax.default_backend() not in MESH_CHUNK_BACKENDS:
    chunk = batch
  # A symbolic batch (jax.export) is not an int: skin it in one pass.
  if not isinstance(batch, int) or batch <= chunk:
    return one((betas, pose_offsets, transforms))
  num = -(-batch // chunk)
  chunk = -(-batch // num)  # even chunks; pad at most num - 1 rows
  pad = num * chunk - batch
  def split(x):
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((num, chunk) + x.shape[1:])
  # Checkpointed: under grad each chunk is recomputed rather than its (b, 12,
  # V) residuals stacked for the whole batch (the big buffers we avoid).
  out = jax.lax.map(jax.checkpoint(one),
                    (split(betas), split(pose_offsets), split(transforms)))
  out = out.reshape((num * chunk,) + out.shape[2:])
  return out[:batch] if pad else out


def _pair_terms(model, pts, betas, pose_feature, transforms):
  """Each (point, bone) pair's skinned term R_k y_l + w_l t_k: (B, L, 3)."""
  batch, nb = betas.shape
  y = pts.center + jnp.einsum('bk,lck->blc', betas, pts.shapedirs[..., :nb])
  if model.has_pose_correctives:
    y = y + (pose_feature @ pts.posedirs).reshape(batch, -1, 3)  # (B, L, 3)
  bones = np.asarray(pts.bones, np.int32)
  rot = transforms[:, bones, :9].reshape(batch, -1, 3, 3)  # (B, L, 3, 3)
  return _matvec3(rot, y) + pts.weight[:, None] * transforms[:, bones, 9:]


def _points(model, pts, betas, pose_feature, transforms, transl):
  """The R regressed points of `pts` (B, R, 3), without the mesh."""
  contrib = _pair_terms(model, pts, betas, pose_feature, transforms)
  out = jnp.einsum('rl,blc->brc', pts.rows, contrib)  # (B, R, 3)
  if transl is not None:
    out = out + pts.row_sum[:, None] * jnp.asarray(transl, out.dtype)[:, None]
  return out


def _spin_joints(model, smpl_joints, betas, pose_feature, transforms, transl):
  """SPIN's 49 joints (B, 49, 3) from the posed SMPL joints (translated)."""
  points = _points(model, model.joint_points, betas, pose_feature, transforms,
                   transl)  # (B, 20, 3): 11 keypoints, 9 extra joints
  cands = jnp.concatenate([smpl_joints, points], axis=1)  # (B, 44, 3)
  return cands[:, np.asarray(JOINTS_49_FROM_CANDIDATES)]


def _rest_joints(model, betas):
  nb = betas.shape[1]
  return model.J_template + jnp.einsum('bk,jck->bjc', betas,
                                       model.J_shapedirs[..., :nb])


def _translate(x, transl):
  if transl is None:
    return x
  return x + jnp.asarray(transl, x.dtype)[:, None, :]


def forward(model: BodyModel, betas, body_pose, global_orient, transl=None, *,
            vertex_ids: Sequence[int] | None = None) -> BodyOutput:
  """SMPL forward pass.

  Args:
    model: the body model.
    betas: (B, NB') shape coefficients, NB' <= model.num_betas.
    body_pose: (B, 69) or (B, 23, 3) axis-angle, or (B, 23, 3, 3) matrices.
    global_orient: (B, 3) or (B, 1, 3) axis-angle, or (B, 3, 3) / (B, 1, 3, 3).
    transl: optional (B, 3) translation added to vertices and joints.
    vertex_ids: vertex-subset mode: return only these vertices (B, S, 3)
      without forming the mesh (static ids; each call gathers their arrays).

  Returns:
    BodyOutput(vertices (B, V, 3), joints (B, 49, 3), smpl_joints (B, 24, 3),
    rotmats (B, 24, 3, 3)).
  """
  betas, rotmats, pose_feature = _prepare(model, betas, body_pose,
                                          global_orient)
  smpl_joints, transforms = _kinematics(rotmats, _rest_joints(model, betas),
                                        model.parents)
  if vertex_ids is None:
    vertices = _mesh(model, betas, pose_feature, transforms)  # (B, V, 3)
  else:
    ids = np.asarray(vertex_ids, np.int64).reshape(-1)
    nv = model.num_vertices
    if ids.size and (ids.min() < -nv or ids.max() >= nv):
      raise ValueError(f'vertex_ids must be in [0, {nv}), got {ids.min()}..'
                       f'{ids.max()}')
    ids = ids % nv
    v_sel = VertexSubset(
        v_template=model.v_template[ids],
        shapedirs=model.shapedirs[ids],
        posedirs=model.posedirs.reshape(NUM_POSE_BASIS, 3, nv)[..., ids].reshape(
            NUM_POSE_BASIS, -1),
        lbs_weights=model.lbs_weights[ids])
    vertices = _skin_subset(model, v_sel, betas, pose_feature, transforms)
  smpl_joints = _translate(smpl_joints, transl)
  # The same exact mesh-free computation as joints_forward.
  joints = _spin_joints(model, smpl_joints, betas, pose_feature, transforms,
                        transl)
  return BodyOutput(vertices=_translate(vertices, transl), joints=joints,
                    smpl_joints=smpl_joints, rotmats=rotmats)


def joints_forward(model: BodyModel, betas, body_pose, global_orient,
                   transl=None):
  """SPIN's 49 joints (B, 49, 3), exactly as `forward(...).joints`.

  Never forms the mesh: see the module docstring. Same arguments as `forward`.
  """
  betas, rotmats, pose_feature = _prepare(model, betas, body_pose,
                                          global_orient)
  smpl_joints, transforms = _kinematics(rotmats, _rest_joints(model, betas),
                                        model.parents)
  return _spin_joints(model, _translate(smpl_joints, transl), betas,
                      pose_feature, transforms, transl)


def h36m_joints(model: BodyModel, vertices):
  """The 17 H36M-regressor joints of a mesh: (B, V, 3) -> (B, 17, 3)."""
  return jnp.einsum('jv,bvc->bjc', model.J_regressor_h36m, vertices)


def h36m_joints_forward(model: BodyModel, betas, body_pose, global_orient,
                        transl=None):
  """`h36m_joints(model, forward(...).vertices)` without forming the mesh."""
  betas, rotmats, pose_feature = _prepare(model, betas, body_pose,
                                          global_orient)
  _, transforms = _kinematics(rotmats, _rest_joints(model, betas),
                              model.parents)
  return _points(model, model.h36m_points, betas, pose_feature, transforms,
                 transl)
