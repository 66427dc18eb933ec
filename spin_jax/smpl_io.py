"""Loading SMPL body models from files: `load_body_model` and friends.

    from spin_jax import smpl, smpl_io
    model = smpl_io.load_body_model('data/smpl')  # folder, .pkl or .npz
    model = smpl_io.default_body_model('low')  # the free model in assets/
    model = smpl_io.resolve_body_model(spec)  # 'default', 'default-low', path
    out = smpl.forward(model, betas, body_pose, global_orient)

Reads official SMPL .pkl files (python-2 pickles of chumpy arrays and
scipy.sparse matrices, unpickled through stand-in classes, so neither chumpy
nor a matching scipy is needed, and through spin_jax.safe_pickle's allow-list,
so a crafted file cannot run code), smplx-style and our own .npz files, and
folders holding them; finds SPIN's extra and H36M joint regressors beside the
model. The arrays go to `smpl.make_body_model`, which validates them and
builds the `smpl.BodyModel` pytree (the body layer itself lives in
spin_jax/smpl.py).
"""
from __future__ import annotations

import difflib
import functools
import logging
import os
import pickle
import zipfile

import numpy as np
import scipy.sparse

from spin_jax import constants
from spin_jax import safe_pickle
from spin_jax import smpl

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'assets')
DEFAULT_MODEL_FILES = {'full': 'body_model_default.npz',
                       'low': 'body_model_default_low.npz'}

_GENDERS = ('neutral', 'male', 'female')
# Official SMPL release file names, per gender.
_OFFICIAL_PKL_NAMES = {
    'neutral': ('basicModel_neutral_lbs_10_207_0_v1.0.0.pkl',
                'basicmodel_neutral_lbs_10_207_0_v1.1.0.pkl'),
    'male': ('basicmodel_m_lbs_10_207_0_v1.0.0.pkl',
             'basicModel_m_lbs_10_207_0_v1.0.0.pkl',
             'basicmodel_m_lbs_10_207_0_v1.1.0.pkl'),
    'female': ('basicModel_f_lbs_10_207_0_v1.0.0.pkl',
               'basicmodel_f_lbs_10_207_0_v1.0.0.pkl',
               'basicmodel_f_lbs_10_207_0_v1.1.0.pkl'),
}


class _ChumpyStub:
  """Stands in for chumpy classes while unpickling; keeps the wrapped array."""

  def __init__(self, *args, **kwargs):
    del args, kwargs
    self.state = None

  def __setstate__(self, state):
    self.state = state


class _SparseStub:
  """Stands in for a pickled scipy.sparse matrix (any scipy version)."""

  fmt = None  # 'csc' or 'csr', set per subclass

  def __init__(self, *args, **kwargs):
    del args, kwargs
    self.state = None

  def __setstate__(self, state):
    self.state = state


@functools.lru_cache(maxsize=None)
def _make_sparse_stub(fmt):
  return type(f'_Sparse_{fmt}', (_SparseStub,), {'fmt': fmt})


def _smpl_stand_in(module, name):
  """The classes an SMPL pickle holds besides numpy's: chumpy arrays and
  scipy.sparse matrices under their python-2 paths, as inert stand-ins."""
  if module == 'chumpy' or module.startswith('chumpy.'):
    return _ChumpyStub
  if module.startswith('scipy.sparse') and name.endswith('_matrix'):
    return _make_sparse_stub(name[:3])
  return None


def _unwrap(value, key, source):
  """Chumpy stubs and sparse stubs -> numpy / scipy arrays."""
  if isinstance(value, _ChumpyStub):
    state = value.state
    if isinstance(state, tuple):  # (dict, slots) form
      state = state[0]
    if not isinstance(state, dict) or 'x' not in state:
      raise ValueError(f'{source}: key {key!r} is a chumpy object without its '
                       'array (no "x" in its pickled state)')
    return np.asarray(_unwrap(state['x'], key, source))
  if isinstance(value, _SparseStub):
    st = value.state if isinstance(value.state, dict) else {}
    shape = st.get('_shape', st.get('shape'))
    try:
      parts = (np.asarray(st['data']), np.asarray(st['indices']),
               np.asarray(st['indptr']))
    except KeyError as e:
      raise ValueError(f'{source}: key {key!r} is a sparse matrix missing '
                       f'{e.args[0]!r}') from None
    cls = {'csc': scipy.sparse.csc_matrix,
           'csr': scipy.sparse.csr_matrix}.get(value.fmt)
    if cls is None:
      raise ValueError(f'{source}: key {key!r} is an unsupported sparse '
                       f'format {value.fmt!r}_matrix')
    return cls(parts, shape=tuple(int(s) for s in shape))
  return value


def _load_pickle(path):
  try:
    data = safe_pickle.load(path, 'an SMPL file', stand_in=_smpl_stand_in)
  except safe_pickle.UnsafePickleError:
    raise  # already one line naming the file and the refused global
  except (EOFError, pickle.UnpicklingError, ValueError, TypeError,
          AttributeError, ImportError, IndexError, KeyError) as e:
    raise ValueError(f'{path}: not a readable SMPL pickle (truncated or '
                     f'corrupt?): {type(e).__name__}: {e}') from e
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a pickled dict of SMPL arrays, got '
                     f'{type(data).__name__}')
  return {k: _unwrap(v, k, path) for k, v in data.items()}


def _load_npz(path):
  """Plain arrays of an .npz; keys holding pickled objects are left out."""
  try:
    return safe_pickle.load_npz(path, 'an SMPL file', objects=False)
  except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
    raise ValueError(f'{path}: not a readable .npz (truncated or corrupt?): '
                     f'{type(e).__name__}: {e}') from e


_REQUIRED_KEYS = ('v_template', 'shapedirs', 'posedirs', 'J_regressor',
                  'weights', 'kintree_table', 'f')


def _find_in_folder(folder, gender):
  if gender not in _GENDERS:
    raise ValueError(f'gender must be one of {_GENDERS}, got {gender!r}')
  names = [f'SMPL_{gender.upper()}.pkl', f'SMPL_{gender.upper()}.npz',
           *_OFFICIAL_PKL_NAMES[gender]]
  for sub in ('', 'smpl'):
    for n in names:
      p = os.path.join(folder, sub, n)
      if os.path.isfile(p):
        return p
  raise FileNotFoundError(
      f'{folder}: no {gender} SMPL model; looked for {names} (also in '
      f'{os.path.join(folder, "smpl")})')


def _find_regressor(model_path, filename):
  folder = os.path.dirname(os.path.abspath(model_path))
  for d in (folder, os.path.dirname(folder)):
    p = os.path.join(d, filename)
    if os.path.isfile(p):
      return p
  return None


def _load_regressor(spec, model_path, filename, key, rows, nv, data):
  """An extra/H36M regressor from an argument, the model file or a .npy."""
  if spec is None and key in data:
    return data[key], model_path
  if spec is None:
    spec = _find_regressor(model_path, filename)
  if spec is None and nv == 6890:
    default = os.path.join(ASSETS_DIR, DEFAULT_MODEL_FILES['full'])
    if os.path.isfile(default):
      logging.info('%s: no %s; using the one in %s', model_path, filename,
                   default)
      return _load_npz(default)[key], default
  if spec is None:
    raise FileNotFoundError(
        f'{model_path}: the file has no {key!r} and no {filename} was found '
        f'beside it; pass {key.replace("J_regressor", "").strip("_") or key}'
        f'_regressor= (a ({rows}, {nv}) array or .npy path)')
  if isinstance(spec, (str, os.PathLike)):
    try:
      return np.load(spec, allow_pickle=False), os.fspath(spec)
    except (OSError, ValueError) as e:
      raise ValueError(f'{spec}: cannot read {key} ({rows}, {nv}): {e}') from e
  return np.asarray(spec), f'{key} argument'


def load_body_model(path, gender: str = 'neutral', *, extra_regressor=None,
                    h36m_regressor=None, keypoint_vertex_ids=None,
                    dtype=np.float32) -> smpl.BodyModel:
  """Loads an SMPL body model.

  Args:
    path: an official SMPL .pkl (python-2 pickle with chumpy arrays; chumpy
      is not needed), a smplx-style .npz, our own .npz (see
      data_prep/build_body_model.py), or a folder holding SMPL_<GENDER>.pkl /
      .npz or the official basicModel_*_lbs_10_207_0_v1.0.0.pkl names
      (directly or in a `smpl/` subfolder).
    gender: 'neutral', 'male' or 'female' (used for folders and as metadata).
    extra_regressor: (9, V) array or .npy path of SPIN's J_regressor_extra;
      default: the file's own key, else J_regressor_extra.npy beside the model
      (or one folder up, SPIN's data/ layout), else the default body model's
      (6890-vertex models only).
    h36m_regressor: (17, V) J_regressor_h36m, found the same way.
    keypoint_vertex_ids: 11 vertex ids of the surface keypoints; default: the
      file's own key, else the SMPL ids (6890-vertex models only).
    dtype: np.float32 or np.float64 (needs jax_enable_x64).
  """
  path = os.fspath(path)
  if os.path.isdir(path):
    path = _find_in_folder(path, gender)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such body model file')
  if path.endswith('.npz'):
    data = _load_npz(path)
  else:
    data = _load_pickle(path)
  missing = [k for k in _REQUIRED_KEYS if k not in data]
  if missing:
    raise KeyError(f'{path}: missing key(s) {missing}; an SMPL model needs '
                   f'{list(_REQUIRED_KEYS)}')
  v_template = np.asarray(data['v_template'])
  nv = v_template.shape[0] if v_template.ndim == 2 else -1
  extra, _ = _load_regressor(extra_regressor, path, 'J_regressor_extra.npy',
                             'J_regressor_extra', constants.NUM_EXTRA_JOINTS,
                             nv, data)
  h36m, _ = _load_regressor(h36m_regressor, path, 'J_regressor_h36m.npy',
                            'J_regressor_h36m', constants.NUM_H36M_JOINTS, nv,
                            data)
  if keypoint_vertex_ids is None:
    if 'keypoint_vertex_ids' in data:
      keypoint_vertex_ids = data['keypoint_vertex_ids']
    elif nv == 6890:
      keypoint_vertex_ids = constants.SMPL_KEYPOINT_VERTEX_IDS
    else:
      raise ValueError(
          f'{path}: a {nv}-vertex model has no \'keypoint_vertex_ids\' key and '
          'the SMPL ids only fit 6890 vertices; pass keypoint_vertex_ids=')
  name = os.path.splitext(os.path.basename(path))[0]
  return smpl.make_body_model(
      v_template=v_template, shapedirs=data['shapedirs'],
      posedirs=data['posedirs'], J_regressor=data['J_regressor'],
      weights=data['weights'], parents=data['kintree_table'], faces=data['f'],
      keypoint_vertex_ids=keypoint_vertex_ids, J_regressor_extra=extra,
      J_regressor_h36m=h36m, name=name, gender=gender, dtype=dtype,
      source=path)


def default_body_model(resolution: str = 'full',
                       dtype=np.float32) -> smpl.BodyModel:
  """The free body model shipped in spin_jax/assets ('full' or 'low' res)."""
  if resolution not in DEFAULT_MODEL_FILES:
    raise ValueError(f'resolution must be one of {list(DEFAULT_MODEL_FILES)}, '
                     f'got {resolution!r}')
  path = os.path.join(ASSETS_DIR, DEFAULT_MODEL_FILES[resolution])
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'{path}: the default body model is not built yet; build it with '
        '`python data_prep/build_body_model.py`')
  return _cached_default(path, os.path.getmtime(path), np.dtype(dtype).name)


@functools.lru_cache(maxsize=4)
def _cached_default(path, mtime, dtype_name):
  del mtime  # part of the cache key only
  return load_body_model(path, dtype=np.dtype(dtype_name))


BUILT_IN_MODELS = ('default', 'default-low')


def resolve_body_model(spec: str, gender: str = 'neutral', dtype=np.float32, *,
                       min_betas: int = 1) -> smpl.BodyModel:
  """'default', 'default-low', or a path/folder for `load_body_model`.

  min_betas: the shape components the caller needs (the regressor predicts
  10, the synthetic builder samples 10); fewer is an error naming the file.
  """
  spec = os.fspath(spec)
  if spec == 'default':
    model = default_body_model('full', dtype)
  elif spec == 'default-low':
    model = default_body_model('low', dtype)
  else:
    if not os.path.exists(spec):
      close = difflib.get_close_matches(spec, BUILT_IN_MODELS, n=1)
      hint = (f"; did you mean {close[0]!r}?" if close else
              f"; expected {' or '.join(map(repr, BUILT_IN_MODELS))}, or the "
              'path of an SMPL model file or folder')
      raise FileNotFoundError(f'body model {spec!r}: no such file or folder{hint}')
    model = load_body_model(spec, gender, dtype=dtype)
  if model.num_betas < min_betas:
    raise ValueError(f'body model {spec!r} has {model.num_betas} shape '
                     f'components; {min_betas} are needed here (SPIN regresses '
                     f'{constants.NUM_BETAS}).')
  return model
