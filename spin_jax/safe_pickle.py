"""Reading pickles as data, never as code: `load` and `load_npz`.

    from spin_jax import safe_pickle
    data = safe_pickle.load(path, 'a GMM prior')
    arrays = safe_pickle.load_npz(path, "SPIN's dataset npz")

A pickle names the callables that build its objects, and unpickling calls
them: a crafted file naming 'posix.system' runs a command. Every pickle
spin_jax reads (SMPL .pkl files, SMPLify's gmm_08.pkl, 3DPW's sequence files,
object arrays inside .npz files) holds data only, so `find_class` hands out
exactly the globals such data needs (numpy arrays, dtypes and scalars,
builtin containers and scalars; callers add their stand-ins, e.g. SMPL's
chumpy and scipy.sparse classes) and refuses any other with an
`UnsafePickleError` naming the file and the global, before anything runs.
"""
from __future__ import annotations

import collections
import copyreg
import importlib
import io
import os
import pickle
import zipfile
from typing import Any, Callable, IO

import numpy as np


class UnsafePickleError(ValueError):
  """A pickle names a global that data files do not hold (a ValueError, so
  that entry points print it as one line)."""


def _numpy_attr(module: str, name: str):
  """numpy.core.* (numpy 1, python-2 files) and numpy._core.* (numpy 2)."""
  for mod in (module.replace('numpy.core', 'numpy._core'), module):
    try:
      return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError):
      continue
  raise ImportError(f'numpy has no {module}.{name}')


_NUMPY = {
    ('numpy', 'ndarray'), ('numpy', 'dtype'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.numeric', '_frombuffer'), ('numpy._core.numeric', '_frombuffer'),
}
# Builtin containers and scalars that pickles build by name (dict, list,
# tuple, str, numbers have opcodes of their own); python 2 spelled the
# module __builtin__.
_BUILTINS = {'set': set, 'frozenset': frozenset, 'complex': complex,
             'bytearray': bytearray, 'object': object}


def _encode(text, encoding='latin1'):
  """_codecs.encode as python 3 protocol-2 pickles use it: str -> bytes."""
  if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
    raise pickle.UnpicklingError(f'_codecs.encode({type(text).__name__}, '
                                 f'{encoding!r}) is not how bytes are pickled')
  return text.encode('latin1')


class _Unpickler(pickle.Unpickler):
  """find_class of the allow-list; `stand_in(module, name)` adds the caller's."""

  def __init__(self, file: IO[bytes], source: str, what: str,
               stand_in: Callable[[str, str], Any] | None, encoding: str):
    super().__init__(file, encoding=encoding)
    self._source, self._what = source, what
    self._stand_in = stand_in or (lambda module, name: None)
    self._classes: set[type] = set()  # those handed out, for _reconstructor

  def find_class(self, module: str, name: str):
    found = self._allowed(module, name)
    if found is None:
      raise UnsafePickleError(f'{self._source}: refuses to load '
                              f'{module + "." + name!r}: not part of {self._what}')
    if isinstance(found, type):
      self._classes.add(found)
    return found

  def _allowed(self, module: str, name: str):
    if (module, name) in _NUMPY:
      return _numpy_attr(module, name)
    if module in ('builtins', '__builtin__') and name in _BUILTINS:
      return _BUILTINS[name]
    if (module, name) == ('collections', 'OrderedDict'):
      return collections.OrderedDict
    if (module, name) == ('_codecs', 'encode'):
      return _encode
    if module in ('copy_reg', 'copyreg') and name == '_reconstructor':
      return self._reconstructor
    return self._stand_in(module, name)

  def _reconstructor(self, cls, base, state):
    """copyreg._reconstructor (protocols 0 and 1), for classes of this file's
    allow-list on `object` only: never a way to build another class."""
    if base is not object or cls not in self._classes:
      raise UnsafePickleError(
          f'{self._source}: refuses to build {getattr(cls, "__name__", cls)!r} '
          f'through copyreg._reconstructor: not part of {self._what}')
    return copyreg._reconstructor(cls, base, state)  # pylint: disable=protected-access


def loads_from(file: IO[bytes], source: str, what: str, *,
               stand_in: Callable[[str, str], Any] | None = None,
               encoding: str = 'latin1'):
  """Unpickles an open binary file through the allow-list (see module doc).

  source: the file's name in messages; what: what it should be ('an SMPL
  file'); stand_in(module, name): the caller's extra classes, or None.
  encoding='latin1' reads python-2 pickles of numpy arrays.
  """
  return _Unpickler(file, source, what, stand_in, encoding).load()


def load(path, what: str, *, stand_in: Callable[[str, str], Any] | None = None,
         encoding: str = 'latin1'):
  """Unpickles the file at `path` through the allow-list (see `loads_from`)."""
  path = os.fspath(path)
  with open(path, 'rb') as f:
    return loads_from(f, path, what, stand_in=stand_in, encoding=encoding)


def load_npz(path, what: str, *, objects: bool = True) -> dict[str, np.ndarray]:
  """All arrays of an .npz: plain ones with allow_pickle=False, object
  arrays (a pickle inside the .npy member) through the allow-list, or left
  out with objects=False."""
  path = os.fspath(path)
  out = {}
  with np.load(path, allow_pickle=False) as f:
    for key in f.files:
      try:
        out[key] = f[key]
      except ValueError as e:
        if 'allow_pickle' not in str(e):
          raise ValueError(f'key {key!r}: {e}') from e
        if objects:
          out[key] = _object_array(f.zip, f'{key}.npy', f'{path}[{key}]',
                                   what)
  return out


def _object_array(archive: zipfile.ZipFile, member: str, source: str,
                  what: str) -> np.ndarray:
  with archive.open(member) as raw:
    fp = io.BytesIO(raw.read())
  fmt = np.lib.format
  version = fmt.read_magic(fp)
  # Format 3.0 differs from 2.0 only in a utf-8 header (structured dtypes'
  # field names); an object array's header is ASCII.
  read_header = (fmt.read_array_header_1_0 if version == (1, 0)
                 else fmt.read_array_header_2_0)
  shape, _, dtype = read_header(fp)
  array = loads_from(fp, source, what)
  if not isinstance(array, np.ndarray) or array.shape != shape or (
      array.dtype != dtype):
    raise ValueError(f'{source}: the pickled array does not match its header '
                     f'({shape}, {dtype})')
  return array
