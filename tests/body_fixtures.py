"""Random but well-formed SMPL-like body models for tests.

`random_smpl_arrays` makes a small body with a plausible skeleton (SMPL's 24
joints in a T-pose), vertices scattered along the bones, skinning weights
that blend a bone with its neighbours, and sparse non-negative joint
regressors, so poses move the mesh meaningfully.

`write_official_smpl_pkl` writes such a model in the exact on-disk layout of
the official SMPL release: a protocol-2 pickle as python 2 wrote it (py2 `str`
as BINSTRING, numpy arrays through ``numpy.core.multiarray._reconstruct``),
``shapedirs`` as a ``chumpy.ch.Ch`` object and ``J_regressor`` as a
``scipy.sparse.csc.csc_matrix``, all referenced by their python-2 module
paths. Loading it needs neither chumpy nor old scipy/numpy.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import tempfile

import numpy as np
import scipy.sparse

from spin_jax import constants
from spin_jax import smpl

# Rough SMPL T-pose joint positions (metres, y up, x to the body's left).
_REST_JOINTS = np.array([
    [0.00, -0.22, 0.02], [0.06, -0.31, 0.01], [-0.06, -0.31, 0.01],
    [0.00, -0.11, -0.01], [0.10, -0.69, 0.01], [-0.10, -0.69, 0.01],
    [0.00, 0.03, 0.00], [0.09, -1.10, -0.03], [-0.09, -1.10, -0.03],
    [0.00, 0.08, 0.02], [0.12, -1.16, 0.09], [-0.12, -1.16, 0.09],
    [0.00, 0.29, -0.01], [0.08, 0.20, 0.00], [-0.08, 0.20, 0.00],
    [0.00, 0.36, 0.04], [0.17, 0.23, -0.01], [-0.17, 0.23, -0.01],
    [0.43, 0.21, -0.03], [-0.43, 0.21, -0.03], [0.68, 0.22, -0.03],
    [-0.68, 0.22, -0.03], [0.77, 0.21, -0.04], [-0.77, 0.21, -0.04]])
_PARENTS = np.array(constants.SMPL_PARENTS)
# Bone end for leaf joints (head top, toes, hand tips).
_LEAF_OFFSETS = {15: (0.0, 0.15, 0.0), 10: (0.0, -0.03, 0.08),
                 11: (0.0, -0.03, 0.08), 22: (0.08, 0.0, 0.0),
                 23: (-0.08, 0.0, 0.0)}
# Joint whose bone carries each of the 11 surface keypoints (nose, eyes,
# ears on the head; big toe, small toe, heel on the feet/ankles).
_KEYPOINT_JOINTS = (15, 15, 15, 15, 15, 10, 10, 7, 11, 11, 8)


def random_smpl_arrays(num_vertices: int = 400, seed: int = 0,
                       num_betas: int = 10) -> dict:
  """A random SMPL-like model as float64 numpy arrays in the SMPL layout.

  Keys: v_template (V,3), shapedirs (V,3,NB), posedirs (V,3,207),
  J_regressor (24,V) scipy csc, weights (V,24), kintree_table (2,24) int64
  with 4294967295 for the root, f (F,3) uint32, J (24,3),
  keypoint_vertex_ids (11,), J_regressor_extra (9,V), J_regressor_h36m
  (17,V), parents (24,).
  """
  if num_vertices < 48:
    raise ValueError(f'need at least 48 vertices (2 per joint), got {num_vertices}')
  rng = np.random.default_rng(seed)
  nv = num_vertices
  # Bone of each vertex (round-robin so every joint gets some) and its
  # position along the bone.
  bone = np.arange(nv) % 24
  rng.shuffle(bone)
  children = {j: np.flatnonzero(_PARENTS == j) for j in range(24)}
  bone_end = np.array([
      _REST_JOINTS[children[j][0]] if len(children[j]) else
      _REST_JOINTS[j] + np.array(_LEAF_OFFSETS.get(j, (0.0, 0.05, 0.0)))
      for j in range(24)])
  u = rng.uniform(0.0, 1.0, nv)
  v_template = (_REST_JOINTS[bone] + u[:, None] * (bone_end[bone] - _REST_JOINTS[bone])
                + rng.normal(0.0, 0.03, (nv, 3)))

  # Skinning: own bone, its first child (towards the end) and parent.
  weights = np.zeros((nv, 24))
  rows = np.arange(nv)
  weights[rows, bone] = 1.0 - 0.5 * u
  child = np.array([children[j][0] if len(children[j]) else j for j in range(24)])
  np.add.at(weights, (rows, child[bone]), 0.5 * u)
  parent = np.maximum(_PARENTS, 0)
  np.add.at(weights, (rows, parent[bone]), rng.uniform(0.0, 0.2, nv))
  weights /= weights.sum(1, keepdims=True)

  def sparse_rows(num_rows, bones, per_row):
    """Regressor rows: convex weights over vertices of the given bones."""
    reg = np.zeros((num_rows, nv))
    for r, b in enumerate(bones):
      cand = np.flatnonzero(bone == b)
      cand = cand[np.argsort(u[cand])][:max(per_row, 1)]  # near the joint
      reg[r, cand] = rng.uniform(0.5, 1.0, cand.size)
      reg[r] /= reg[r].sum()
    return reg

  J_regressor = sparse_rows(24, range(24), 6)
  extra_bones = (2, 1, 12, 15, 0, 12, 3, 15, 15)  # SPIN's extra joints
  J_regressor_extra = sparse_rows(9, extra_bones, 4)
  h36m_bones = (0, 2, 5, 8, 1, 4, 7, 3, 12, 15, 15, 16, 18, 20, 17, 19, 21)
  J_regressor_h36m = sparse_rows(17, h36m_bones, 5)

  keypoint_vertex_ids = []
  for b in _KEYPOINT_JOINTS:
    on_bone = np.flatnonzero(bone == b)
    unused = [i for i in on_bone if i not in keypoint_vertex_ids]
    keypoint_vertex_ids.append(int((unused or on_bone)[-1]))

  shapedirs = rng.normal(0.0, 0.01, (nv, 3, num_betas))
  posedirs = rng.normal(0.0, 0.002, (nv, 3, smpl.NUM_POSE_BASIS))
  num_faces = 2 * nv
  faces = np.stack([rng.choice(nv, 3, replace=False) for _ in range(num_faces)])
  kintree = np.stack([_PARENTS, np.arange(24)]).astype(np.int64)
  kintree[0, 0] = 4294967295
  # Float64 arrays holding float32-representable values: smplx rounds model
  # arrays to float32 even in float64 mode, so float64 parity tests need it.
  f32 = lambda x: x.astype(np.float32).astype(np.float64)
  v_template, shapedirs, posedirs, weights = map(
      f32, (v_template, shapedirs, posedirs, weights))
  J_regressor, J_regressor_extra, J_regressor_h36m = map(
      f32, (J_regressor, J_regressor_extra, J_regressor_h36m))
  J_csc = scipy.sparse.csc_matrix(J_regressor)
  return dict(
      v_template=v_template, shapedirs=shapedirs, posedirs=posedirs,
      J_regressor=J_csc, weights=weights, kintree_table=kintree,
      f=faces.astype(np.uint32), J=J_regressor @ v_template,
      keypoint_vertex_ids=np.array(keypoint_vertex_ids, np.int32),
      J_regressor_extra=J_regressor_extra, J_regressor_h36m=J_regressor_h36m,
      parents=_PARENTS.copy())


def random_body_model(num_vertices: int = 400, seed: int = 0,
                      dtype=np.float32, num_betas: int = 10) -> smpl.BodyModel:
  """A `BodyModel` built directly from `random_smpl_arrays`."""
  a = random_smpl_arrays(num_vertices, seed, num_betas)
  return smpl.make_body_model(
      v_template=a['v_template'], shapedirs=a['shapedirs'],
      posedirs=a['posedirs'], J_regressor=a['J_regressor'],
      weights=a['weights'], parents=a['parents'], faces=a['f'],
      keypoint_vertex_ids=a['keypoint_vertex_ids'],
      J_regressor_extra=a['J_regressor_extra'],
      J_regressor_h36m=a['J_regressor_h36m'], name=f'random{num_vertices}',
      dtype=dtype, source=f'random_body_model({num_vertices}, {seed})')


# --------------------------------------------------------------------------
# A python-2 style pickle writer.


class _Global:
  """A class or function referenced by module path (pickle GLOBAL)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __call__(self, *args):  # save_reduce insists on a callable
    raise TypeError('placeholder')


class _Instance:
  """An object of a (python 2) class: NEWOBJ with no args, then BUILD state."""

  def __init__(self, module, name, state):
    self.cls = _Global(module, name)
    self.state = state


class _Py2Pickler(pickle._Pickler):  # pylint: disable=protected-access
  """Writes protocol 2 as python 2 did, with python-2 module paths."""

  dispatch = dict(pickle._Pickler.dispatch)  # pylint: disable=protected-access

  def __init__(self, file):
    super().__init__(file, protocol=2)

  def save_str(self, obj):
    # Python 2 `str` (bytes): SHORT_BINSTRING / BINSTRING.
    data = obj.encode('latin1') if isinstance(obj, str) else bytes(obj)
    if len(data) < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', len(data)) + data)
    self.memoize(obj)

  dispatch[str] = save_str
  dispatch[bytes] = save_str

  def save_global_ref(self, obj):
    self.write(pickle.GLOBAL + f'{obj.module}\n{obj.name}\n'.encode('ascii'))
    self.memoize(obj)

  dispatch[_Global] = save_global_ref

  def save_instance(self, obj):
    self.save(obj.cls)
    self.save(())
    self.write(pickle.NEWOBJ)
    self.memoize(obj)
    self.save(obj.state)
    self.write(pickle.BUILD)

  dispatch[_Instance] = save_instance

  def save_dtype(self, dt):
    order = '|' if dt.itemsize == 1 else '<'
    self.save_reduce(_Global('numpy', 'dtype'), (dt.str[1:], 0, 1),
                     state=(3, order, None, None, None, -1, -1, 0), obj=dt)

  def save_ndarray(self, arr):
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == '>':
      arr = arr.astype(arr.dtype.newbyteorder('<'))
    self.save_reduce(
        _Global('numpy.core.multiarray', '_reconstruct'),
        (_Global('numpy', 'ndarray'), (0,), b'b'),
        state=(1, arr.shape, arr.dtype, False, arr.tobytes()), obj=arr)

  def save(self, obj, save_persistent_id=True):
    # numpy scalars/dtypes/arrays are not in `dispatch` by exact type.
    if isinstance(obj, (np.ndarray, np.dtype)):
      x = self.memo.get(id(obj))
      if x is not None:  # shared object (e.g. weights and weights_prior)
        self.write(self.get(x[0]))
        return None
      if isinstance(obj, np.ndarray):
        return self.save_ndarray(obj)
      return self.save_dtype(obj)
    if isinstance(obj, np.generic):
      return super().save(obj.item(), save_persistent_id)
    return super().save(obj, save_persistent_id)


def _chumpy(array):
  """A chumpy.ch.Ch as pickled: its value under 'x' plus bookkeeping."""
  return _Instance('chumpy.ch', 'Ch', {'x': np.asarray(array), '_itr': None,
                                       '_parents': {}, '_cache': {}})


def _csc(matrix):
  m = scipy.sparse.csc_matrix(matrix)
  return _Instance('scipy.sparse.csc', 'csc_matrix', {
      'format': 'csc', '_shape': tuple(int(s) for s in m.shape),
      'indices': m.indices.astype(np.int32), 'indptr': m.indptr.astype(np.int32),
      'data': m.data.astype(np.float64), 'maxprint': 50})


def _atomic_write(path, data: bytes):
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, suffix='.tmp')
  with os.fdopen(fd, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def official_pkl_bytes(arrays: dict, chumpy_keys=('shapedirs',)) -> bytes:
  """The official SMPL .pkl bytes for `random_smpl_arrays`-style arrays."""
  a = arrays
  nv = a['v_template'].shape[0]
  model = {
      'J_regressor_prior': _csc(a['J_regressor']),
      'pose': np.zeros(72),
      'f': a['f'].astype(np.uint32),
      'J_regressor': _csc(a['J_regressor']),
      'betas': np.zeros(a['shapedirs'].shape[-1]),
      'kintree_table': a['kintree_table'],
      'J': a['J'],
      'weights_prior': a['weights'],
      'trans': np.zeros(3),
      'weights': a['weights'],
      'vert_sym_idxs': np.arange(nv, dtype=np.int64)[::-1].copy(),
      'posedirs': a['posedirs'],
      'pose_training_info': {'num_subjects': 40, 'num_pose_samples': 1786,
                             'regressor': 'reg_jreg'},
      'bs_style': 'lbs',
      'v_template': a['v_template'],
      'shapedirs': a['shapedirs'],
      'bs_type': 'lrotmin',
  }
  for k in chumpy_keys:
    model[k] = _chumpy(model[k])
  buf = io.BytesIO()
  _Py2Pickler(buf).dump(model)
  return buf.getvalue()


def write_official_smpl_pkl(path, num_vertices: int = 400, seed: int = 0,
                            chumpy_keys=('shapedirs',)) -> dict:
  """Writes a random model as an official SMPL .pkl; returns its arrays.

  The returned dict is `random_smpl_arrays(num_vertices, seed)`: feed it to
  a reference implementation, and pass its ``keypoint_vertex_ids``,
  ``J_regressor_extra`` and ``J_regressor_h36m`` to `load_body_model` (the
  official file has none of them).
  """
  arrays = random_smpl_arrays(num_vertices, seed)
  _atomic_write(path, official_pkl_bytes(arrays, chumpy_keys))
  return arrays


def write_spin_regressors(folder, arrays: dict):
  """J_regressor_extra.npy / J_regressor_h36m.npy as in SPIN's data folder."""
  for key in ('J_regressor_extra', 'J_regressor_h36m'):
    buf = io.BytesIO()
    np.save(buf, arrays[key])
    _atomic_write(os.path.join(folder, f'{key}.npy'), buf.getvalue())
