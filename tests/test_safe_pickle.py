"""Crafted files never run their code; the real formats still load.

Each loader of a pickle (SMPL .pkl, gmm_08.pkl, 3DPW sequences, object
arrays in SPIN's npz) gets a file whose pickle would create a file when
unpickled (through os.system or open): loading raises one error naming the
file and the refused global, and no file appears. The command lines print
that one line and exit 2.
"""
import collections
import importlib.util
import io
import os
import pickle
import re
import sys
import types

import numpy as np
import pytest
import scipy.sparse

import body_fixtures
from test_bad_inputs import assert_one_line_error, run
from spin_jax import priors
from spin_jax import safe_pickle
from spin_jax import smpl_io
from spin_jax.datasets import pw3d, spin_npz

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _System:
  """Unpickled by a plain pickle.load, runs `touch target`."""

  def __init__(self, target):
    self.target = str(target)

  def __reduce__(self):
    return os.system, (f'touch {self.target}',)


class _Open:
  """Unpickled by a plain pickle.load, creates `target` (no shell)."""

  def __init__(self, target):
    self.target = str(target)

  def __reduce__(self):
    return open, (self.target, 'w')


PAYLOADS = {'os.system': (_System, 'posix.system'), 'open': (_Open, 'io.open')}


@pytest.fixture(params=sorted(PAYLOADS))
def payload(request, tmp_path):
  """(an object that creates tmp_path/pwned when unpickled, refused global)."""
  cls, name = PAYLOADS[request.param]
  return cls(tmp_path / 'pwned'), name


def _refused(name, what):
  return rf"refuses to load '{re.escape(name)}': not part of {re.escape(what)}"


def test_the_payloads_do_run_under_plain_pickle(tmp_path, payload):
  """The test's premise: pickle.load would create the file."""
  obj, _ = payload
  pickle.loads(pickle.dumps(obj, protocol=2))
  assert (tmp_path / 'pwned').exists()


def test_smpl_pickle_with_a_payload_is_refused(tmp_path, payload):
  obj, name = payload
  path = tmp_path / 'SMPL_NEUTRAL.pkl'
  path.write_bytes(pickle.dumps({'v_template': np.zeros((4, 3)),
                                 'shapedirs': obj}, protocol=2))
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match=f'{re.escape(str(path))}: ' + _refused(name, 'an SMPL file')):
    smpl_io.load_body_model(path)
  with pytest.raises(safe_pickle.UnsafePickleError):  # a folder finds it too
    smpl_io.load_body_model(tmp_path)
  assert not (tmp_path / 'pwned').exists()


def test_gmm_pickle_with_a_payload_is_refused(tmp_path, payload):
  obj, name = payload
  path = tmp_path / 'gmm_08.pkl'
  path.write_bytes(pickle.dumps({'means': obj, 'covars': 0, 'weights': 0},
                                protocol=2))
  with pytest.raises(safe_pickle.UnsafePickleError, match=_refused(name, 'a GMM prior')):
    priors.load_gmm_prior(path)
  script = _import_script('data_prep/make_mean_params.py')
  with pytest.raises(safe_pickle.UnsafePickleError, match=_refused(name, 'a GMM prior')):
    script.mean_body_pose(str(path))
  assert not (tmp_path / 'pwned').exists()


def test_3dpw_sequence_with_a_payload_is_refused(tmp_path, payload):
  obj, name = payload
  folder = tmp_path / '3dpw' / 'sequenceFiles' / 'test'
  folder.mkdir(parents=True)
  (tmp_path / '3dpw' / 'imageFiles').mkdir()
  path = folder / 'downtown_crafted_00.pkl'
  path.write_bytes(pickle.dumps({'sequence': 'x', 'genders': ['m'],
                                 'poses': [obj]}, protocol=2))
  with pytest.raises(ValueError, match=f'{re.escape(str(path))}: '
                     + _refused(name, 'a 3DPW sequence file')):
    pw3d.read_3dpw(str(tmp_path), 'test')
  assert not (tmp_path / 'pwned').exists()


def test_spin_npz_with_a_payload_in_an_object_array_is_refused(tmp_path, payload):
  obj, name = payload
  path = tmp_path / 'lsp_dataset_test.npz'
  np.savez(path, imgname=np.array(['a.jpg', obj], dtype=object),
           center=np.zeros((2, 2)), scale=np.ones(2), part=np.zeros((2, 24, 3)))
  with pytest.raises(ValueError, match=re.escape(f'{path}[imgname]: ')
                     + _refused(name, "SPIN's dataset npz")):
    spin_npz.read_spin_npz(str(path), str(tmp_path))
  assert not (tmp_path / 'pwned').exists()


def test_spin_npz_reads_string_and_object_columns_alike(tmp_path):
  """String columns are plain arrays (allow_pickle=False); an object array of
  names (as older numpy wrote lists of mixed strings) still loads."""
  cols = dict(center=np.zeros((2, 2)), scale=np.ones(2), part=np.zeros((2, 24, 3)),
              gender=np.array(['m', 'f']))
  np.savez(tmp_path / 'plain.npz', imgname=np.array(['a.jpg', 'b/c.jpg']), **cols)
  np.savez(tmp_path / 'object.npz',
           imgname=np.array(['a.jpg', 'b/c.jpg'], dtype=object), **cols)
  plain = spin_npz.read_spin_npz(str(tmp_path / 'plain.npz'), '/imgs')
  objs = spin_npz.read_spin_npz(str(tmp_path / 'object.npz'), '/imgs')
  assert [r['image_path'] for r in objs] == ['/imgs/a.jpg', '/imgs/b/c.jpg']
  assert [r['gender'] for r in objs] == [0, 1]
  for a, b in zip(plain, objs):
    assert sorted(a) == sorted(b) and a['imgname'] == b['imgname']


def test_data_pickles_load_as_with_pickle(tmp_path):
  """What data files hold, at every protocol python 3 writes, loads as
  pickle.load reads it (no refusal, same values)."""
  data = {'array': np.arange(6.0).reshape(2, 3), 'ints': np.arange(3, dtype=np.int16),
          'scalar': np.float32(1.5), 'names': np.array(['m', 'f']),
          'objects': np.array(['a', None], dtype=object), 'set': {1, 2},
          'frozen': frozenset('ab'), 'complex': 1 + 2j, 'bytes': b'\x00\xff',
          'bytearray': bytearray(b'xy'), 'ordered': collections.OrderedDict(a=1),
          'nested': [('t', 1.0, None, True)]}
  for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
    blob = pickle.dumps(data, protocol=protocol)
    got = safe_pickle.loads_from(io.BytesIO(blob), 'mem', 'data', encoding='ASCII')
    want = pickle.loads(blob)
    assert sorted(got) == sorted(want), protocol
    for k in want:
      if isinstance(want[k], np.ndarray):
        np.testing.assert_array_equal(got[k], want[k])
        assert got[k].dtype == want[k].dtype, (protocol, k)
      else:
        assert got[k] == want[k] and type(got[k]) is type(want[k]), (protocol, k)


def test_official_smpl_layout_still_loads(tmp_path):
  """The fixture of the official file (python-2 protocol 2, chumpy arrays,
  scipy.sparse under python-2 paths) loads exactly as before."""
  arrays = body_fixtures.write_official_smpl_pkl(tmp_path / 'm.pkl', 60,
                                                 chumpy_keys=('shapedirs', 'posedirs'))
  data = smpl_io._load_pickle(str(tmp_path / 'm.pkl'))  # pylint: disable=protected-access
  for k in ('v_template', 'shapedirs', 'posedirs', 'weights'):
    np.testing.assert_array_equal(data[k], arrays[k])
  np.testing.assert_array_equal(data['J_regressor'].toarray(),
                                scipy.sparse.csc_matrix(arrays['J_regressor']).toarray())


def test_chumpy_through_copyreg_reconstructor(tmp_path, monkeypatch):
  """Protocols 0 and 1 build objects with copy_reg._reconstructor: allowed
  for the stand-ins, on `object`."""
  module = types.ModuleType('chumpy.ch')

  class Ch:  # what chumpy's Ch pickles as: its value under 'x'
    pass

  Ch.__module__, Ch.__qualname__ = 'chumpy.ch', 'Ch'
  module.Ch = Ch
  package = types.ModuleType('chumpy')
  package.ch = module
  monkeypatch.setitem(sys.modules, 'chumpy', package)
  monkeypatch.setitem(sys.modules, 'chumpy.ch', module)
  ch = Ch()
  ch.__dict__.update(x=np.arange(12.0).reshape(4, 3), _cache={})
  for protocol in (0, 1):
    path = tmp_path / f'p{protocol}.pkl'
    blob = pickle.dumps({'v_template': ch}, protocol=protocol)
    assert b'_reconstructor' in blob
    path.write_bytes(blob)
    data = smpl_io._load_pickle(str(path))  # pylint: disable=protected-access
    np.testing.assert_array_equal(data['v_template'], ch.x)


def test_copyreg_reconstructor_builds_nothing_else(tmp_path):
  """_reconstructor only on `object`, only for classes the file may hold."""
  path = tmp_path / 'x.pkl'
  path.write_bytes(b'ccopy_reg\n_reconstructor\n(cnumpy\nndarray\n'
                   b'c__builtin__\nset\nNtR.')
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match=r"refuses to build 'ndarray' through copyreg._reconstructor"):
    safe_pickle.load(path, 'a test file')


@pytest.mark.parametrize('module,name', [
    ('builtins', 'getattr'), ('builtins', 'eval'), ('__builtin__', 'apply'),
    ('numpy', 'load'), ('numpy.testing', 'rundocs'), ('subprocess', 'Popen'),
    ('copyreg', '__newobj__'), ('scipy.sparse', 'csc_matrix')])
def test_other_globals_are_refused(tmp_path, module, name):
  path = tmp_path / 'x.pkl'
  path.write_bytes(f'c{module}\n{name}\n.'.encode())
  with pytest.raises(safe_pickle.UnsafePickleError,
                     match=_refused(f'{module}.{name}', 'a test file')):
    safe_pickle.load(path, 'a test file')


def test_no_other_pickle_reads_in_the_code():
  """Every pickle and npz read in spin_jax/, experiments/ and data_prep/ goes
  through safe_pickle or np.load(allow_pickle=False)."""
  unsafe = re.compile(r'\bpickle\.loads?\(|Unpickler\(|allow_pickle=True|'
                      r'np\.load\((?![^)]*allow_pickle=False)|joblib|dill\.')
  found = []
  for top in ('spin_jax', 'experiments', 'data_prep'):
    for d, _, names in os.walk(os.path.join(REPO, top)):
      for n in names:
        path = os.path.join(d, n)
        if not n.endswith('.py') or n == 'safe_pickle.py':
          continue
        with open(path, encoding='utf-8') as f:
          for i, line in enumerate(f, 1):
            if unsafe.search(line.split('#')[0]):
              found.append(f'{os.path.relpath(path, REPO)}:{i}: {line.strip()}')
  assert not found, '\n'.join(found)


def _import_script(relpath):
  spec = importlib.util.spec_from_file_location(
      os.path.basename(relpath)[:-3], os.path.join(REPO, relpath))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


# -------------------------------------------------------------- command lines


@pytest.fixture(scope='module')
def crafted(tmp_path_factory):
  """Crafted files whose payload would create `<folder>/pwned_<name>`."""
  d = tmp_path_factory.mktemp('crafted')
  kp = np.zeros((1, 49, 3), np.float32)
  kp[0, 25:37] = [[60 + 5 * j, 100 + 10 * j, 0.9] for j in range(12)]
  np.save(d / 'people.npy', kp)
  (d / 'SMPL_NEUTRAL.pkl').write_bytes(pickle.dumps(
      {'v_template': _System(d / 'pwned_smpl')}, protocol=2))
  (d / 'gmm_08.pkl').write_bytes(pickle.dumps(
      {'means': _Open(d / 'pwned_gmm')}, protocol=2))
  np.savez(d / 'lsp_dataset_test.npz',
           imgname=np.array([_System(d / 'pwned_npz')], dtype=object),
           center=np.zeros((1, 2)), scale=np.ones(1))
  return d


def test_cli_refuses_crafted_files_in_one_line(crafted):
  d = crafted
  fit = os.path.join(REPO, 'experiments', 'fit.py')
  build = os.path.join(REPO, 'data_prep', 'build.py')
  cases = [
      ([fit, '--keypoints', str(d / 'people.npy'), '--out', str(d / 'out_smpl'),
        f'--body_model={d / "SMPL_NEUTRAL.pkl"}'],
       ['SMPL_NEUTRAL.pkl', "refuses to load 'posix.system'", 'an SMPL file']),
      ([fit, '--keypoints', str(d / 'people.npy'), '--out', str(d / 'out_gmm'),
        '--body_model=default-low', f'--prior={d / "gmm_08.pkl"}'],
       ['gmm_08.pkl', "refuses to load 'io.open'", 'a GMM prior']),
      ([build, '--dataset', 'lsp', '--from_spin_npz', str(d / 'lsp_dataset_test.npz'),
        '--image_dir', str(d), '--data_dir', str(d / 'out_npz')],
       ['building lsp:', 'lsp_dataset_test.npz[imgname]',
        "refuses to load 'posix.system'"]),
  ]
  for args, needles in cases:
    res = run(args, str(d))
    assert_one_line_error(res, *needles)
  assert not list(d.glob('pwned*')), list(d.glob('pwned*'))
  assert not [p for p in d.rglob('out_*/**/*') if p.is_file()]
