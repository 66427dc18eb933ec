"""SMPL body layer: parity with smplx (torch), joints-only path, loaders."""
import io
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

import body_fixtures
from spin_jax import constants
from spin_jax import smpl
from spin_jax import smpl_io

NV = 400  # small model: fast, yet enough vertices for every joint
B = 5


def _smplx_reference(arrays, dtype):
  """smplx.SMPL fed with the raw fixture arrays (independent of our loader).

  smplx reads the 11 surface keypoints at SMPL vertex ids; we give it the
  fixture's ids, and 10 arbitrary fingertips (SPIN's 49 joints skip them).
  """
  # Skipped where smplx is missing (an accelerator without its wheel).
  smplx = pytest.importorskip('smplx')
  from smplx.utils import Struct  # pylint: disable=g-import-not-at-top
  ids = dict(zip(constants.KEYPOINT_VERTEX_NAMES,
                 arrays['keypoint_vertex_ids'].tolist()))
  for k, tip in enumerate(('thumb', 'index', 'middle', 'ring', 'pinky')):
    ids['l' + tip], ids['r' + tip] = k, 10 + k
  return smplx.SMPL('unused', data_struct=Struct(**arrays), vertex_ids=ids,
                    dtype=dtype, batch_size=B)


def _smplx_outputs(arrays, betas, body_pose, global_orient, transl, dtype):
  """Vertices, 24 joints and SPIN's 49 joints from smplx, as SPIN builds them."""
  ref = _smplx_reference(arrays, dtype)
  t = lambda x: torch.as_tensor(np.asarray(x), dtype=dtype)
  pose2rot = body_pose.shape[-1] != 3 or body_pose.ndim == 2
  kwargs = dict(betas=t(betas), transl=t(transl), pose2rot=pose2rot)
  if pose2rot:
    kwargs.update(body_pose=t(body_pose), global_orient=t(global_orient))
  else:
    kwargs.update(body_pose=t(body_pose).reshape(B, 23, 3, 3),
                  global_orient=t(global_orient).reshape(B, 1, 3, 3))
  with torch.no_grad():
    out = ref(**kwargs)
  verts = out.vertices.numpy()
  joints45 = out.joints.numpy()  # 24 joints, 11 keypoints, 10 fingertips
  extra = np.einsum('jv,bvc->bjc', arrays['J_regressor_extra'], verts)
  joints54 = np.concatenate([joints45, extra], axis=1)
  return verts, joints45[:, :24], joints54[:, list(constants.JOINTS_49_FROM_54)]


def _random_inputs(seed, dtype=np.float32):
  rng = np.random.default_rng(seed)
  betas = rng.normal(0, 1.5, (B, 10))
  body_pose = rng.normal(0, 0.4, (B, 69))
  global_orient = rng.normal(0, 1.0, (B, 3))
  global_orient[0] = [np.pi - 1e-4, 0, 0]  # upside down (SPIN's usual frame)
  body_pose[1] = 0.0  # rest pose
  transl = rng.normal(0, 1.0, (B, 3))
  return [x.astype(dtype) for x in (betas, body_pose, global_orient, transl)]


@pytest.fixture(scope='module')
def official(tmp_path_factory):
  """An official-layout SMPL .pkl in SPIN's data layout, and its raw arrays."""
  root = tmp_path_factory.mktemp('data')
  os.makedirs(root / 'smpl')
  path = root / 'smpl' / 'SMPL_NEUTRAL.pkl'
  arrays = body_fixtures.write_official_smpl_pkl(path, NV, seed=0)
  body_fixtures.write_spin_regressors(root, arrays)  # data/J_regressor_*.npy
  return path, arrays


@pytest.fixture(scope='module')
def model32(official):
  path, arrays = official
  return smpl_io.load_body_model(
      path, keypoint_vertex_ids=arrays['keypoint_vertex_ids'])


_forward = jax.jit(smpl.forward)
_joints_forward = jax.jit(smpl.joints_forward)


def test_parity_with_smplx_float32(official, model32):
  _, arrays = official
  betas, body_pose, go, transl = _random_inputs(0)
  out = _forward(model32, betas, body_pose, go, transl)
  verts, joints24, joints49 = _smplx_outputs(arrays, betas, body_pose, go,
                                             transl, torch.float32)
  assert out.vertices.dtype == jnp.float32
  assert out.joints.shape == (B, 49, 3)
  np.testing.assert_allclose(np.asarray(out.vertices), verts, atol=1e-5, rtol=0)
  np.testing.assert_allclose(np.asarray(out.smpl_joints), joints24, atol=1e-5,
                             rtol=0)
  np.testing.assert_allclose(np.asarray(out.joints), joints49, atol=1e-5, rtol=0)
  # The poses really move the body (metres, not a degenerate fixture).
  assert np.abs(verts[0] - verts[1]).max() > 0.3


def test_parity_with_smplx_float64(official):
  path, arrays = official
  # Rotation matrices in, so smplx's "+1e-8" inside its Rodrigues does not
  # enter the comparison (it moves vertices by ~1e-8 m).
  betas, body_pose, go, transl = _random_inputs(1, np.float64)
  body_rm = Rotation.from_rotvec(body_pose.reshape(-1, 3)).as_matrix().reshape(
      B, 23, 3, 3)
  go_rm = Rotation.from_rotvec(go).as_matrix().reshape(B, 1, 3, 3)
  verts, joints24, joints49 = _smplx_outputs(arrays, betas, body_rm, go_rm,
                                             transl, torch.float64)
  with jax.enable_x64(True):
    model = smpl_io.load_body_model(
        path, keypoint_vertex_ids=arrays['keypoint_vertex_ids'],
        dtype=np.float64)
    out = jax.jit(smpl.forward)(model, betas, body_rm, go_rm, transl)
    joints = jax.jit(smpl.joints_forward)(model, betas, body_rm, go_rm, transl)
    out_aa = jax.jit(smpl.forward)(model, betas, body_pose, go, transl)
    assert out.vertices.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(out.vertices), verts, atol=1e-9,
                               rtol=0)
    np.testing.assert_allclose(np.asarray(out.smpl_joints), joints24,
                               atol=1e-9, rtol=0)
    np.testing.assert_allclose(np.asarray(out.joints), joints49, atol=1e-9,
                               rtol=0)
    np.testing.assert_allclose(np.asarray(joints), joints49, atol=1e-9, rtol=0)
    # Axis-angle input: our Rodrigues is exact, so it matches the matrices.
    np.testing.assert_allclose(np.asarray(out_aa.vertices), verts, atol=1e-9,
                               rtol=0)


def test_joints_only_path_equals_full_path(model32):
  betas, body_pose, go, transl = _random_inputs(2)
  out = _forward(model32, betas, body_pose, go, transl)
  joints = _joints_forward(model32, betas, body_pose, go, transl)
  np.testing.assert_allclose(np.asarray(joints), np.asarray(out.joints),
                             atol=2e-6, rtol=0)
  h36m = jax.jit(smpl.h36m_joints_forward)(model32, betas, body_pose, go, transl)
  np.testing.assert_allclose(
      np.asarray(h36m), np.asarray(smpl.h36m_joints(model32, out.vertices)),
      atol=2e-6, rtol=0)
  # The joints-only paths never form anything mesh-sized.
  for fn in (smpl.joints_forward, smpl.h36m_joints_forward):
    jaxpr = jax.make_jaxpr(fn)(model32, betas, body_pose, go, transl)
    for eqn in jaxpr.eqns:
      for v in eqn.outvars:
        assert not {NV, 3 * NV} & set(v.aval.shape), (eqn.primitive, v.aval)
  # Vertex-subset mode: the requested vertices of the full mesh.
  ids = (3, 17, 399, 120)
  sub = jax.jit(smpl.forward, static_argnames='vertex_ids')(
      model32, betas, body_pose, go, transl, vertex_ids=ids)
  np.testing.assert_allclose(np.asarray(sub.vertices),
                             np.asarray(out.vertices)[:, list(ids)], atol=2e-6)
  np.testing.assert_allclose(np.asarray(sub.joints), np.asarray(out.joints),
                             atol=2e-6)


def test_pose_input_forms_agree(model32):
  betas, body_pose, go, transl = _random_inputs(3)
  prepare = jax.jit(smpl._prepare)  # pylint: disable=protected-access
  _, ref, ref_feature = prepare(model32, betas, body_pose, go)
  body_rm = Rotation.from_rotvec(body_pose.reshape(-1, 3)).as_matrix().reshape(
      B, 23, 3, 3).astype(np.float32)
  go_rm = Rotation.from_rotvec(go).as_matrix().astype(np.float32)
  np.testing.assert_allclose(np.asarray(ref[:, 1:]), body_rm, atol=1e-6)
  variants = [
      (body_pose.reshape(B, 23, 3), go.reshape(B, 1, 3)),
      (body_rm, go_rm),
      (body_rm, go_rm.reshape(B, 1, 3, 3)),
  ]
  for bp, g in variants:
    _, rotmats, feature = prepare(model32, betas, bp, g)
    np.testing.assert_allclose(np.asarray(rotmats), np.asarray(ref), atol=1e-6)
    np.testing.assert_allclose(np.asarray(feature), np.asarray(ref_feature),
                               atol=1e-6)
  # Fewer betas = the missing ones at zero.
  padded = np.concatenate([betas[:, :4], np.zeros((B, 6), np.float32)], 1)
  np.testing.assert_allclose(
      np.asarray(_joints_forward(model32, betas[:, :4], body_pose, go, transl)),
      np.asarray(_joints_forward(model32, padded, body_pose, go, transl)),
      atol=1e-6)
  with pytest.raises(ValueError, match='body_pose'):
    smpl.joints_forward(model32, betas, body_pose[:, :60], go)
  with pytest.raises(ValueError, match='global_orient'):
    smpl.joints_forward(model32, betas, body_pose, go[:, :2])
  with pytest.raises(ValueError, match='betas'):
    smpl.joints_forward(model32, np.zeros((B, 11)), body_pose, go)


def test_vmap_and_grad(official, model32):
  path, arrays = official
  # vmap over samples of a batch-1 call == the batched call.
  betas, body_pose, go, _ = _random_inputs(4)
  one = lambda b, p, g: smpl.joints_forward(model32, b[None], p[None],
                                            g[None])[0]
  np.testing.assert_allclose(
      np.asarray(jax.jit(jax.vmap(one))(betas, body_pose, go)),
      np.asarray(_joints_forward(model32, betas, body_pose, go)), atol=2e-6)
  betas, body_pose, go, transl = _random_inputs(4, np.float64)
  with jax.enable_x64(True):
    model = smpl_io.load_body_model(
        path, keypoint_vertex_ids=arrays['keypoint_vertex_ids'],
        dtype=np.float64)
    # Gradient w.r.t. pose, shape and orientation against central differences.
    rng = np.random.default_rng(0)
    w_j, w_v = rng.normal(size=(B, 49, 3)), rng.normal(size=(B, NV, 3))
    def loss(b, p, g):
      out = smpl.forward(model, b, p, g, transl)
      return jnp.sum(w_j * out.joints) + jnp.sum(w_v * out.vertices)
    value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    args = [betas, body_pose, go]
    _, grads = value_and_grad(*args)
    eps = 1e-6
    for k in range(3):
      d = rng.normal(size=args[k].shape)
      plus, minus = list(args), list(args)
      plus[k], minus[k] = args[k] + eps * d, args[k] - eps * d
      fd = (value_and_grad(*plus)[0] - value_and_grad(*minus)[0]) / (2 * eps)
      np.testing.assert_allclose(float(jnp.sum(grads[k] * d)), float(fd),
                                 rtol=1e-6)
    # Finite at the rest pose (axis-angle exactly 0 everywhere).
    _, grads = value_and_grad(betas, np.zeros((B, 69)), np.zeros((B, 3)))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# ---------------------------------------------------------------------------
# Loaders.


def _assert_same_model(a, b):
  for name in ('v_template', 'shapedirs', 'posedirs', 'J_regressor',
               'lbs_weights', 'J_regressor_extra', 'J_regressor_h36m',
               'J_template', 'J_shapedirs'):
    np.testing.assert_array_equal(np.asarray(getattr(a, name)),
                                  np.asarray(getattr(b, name)), err_msg=name)
  assert a.parents == b.parents
  assert a.keypoint_vertex_ids == b.keypoint_vertex_ids
  np.testing.assert_array_equal(a.faces, b.faces)


def test_pickle_loader_reads_official_layout(official, model32):
  _, arrays = official
  m = model32
  assert m.parents == constants.SMPL_PARENTS
  assert m.faces.dtype == np.int32 and m.faces.shape == arrays['f'].shape
  np.testing.assert_array_equal(m.faces, arrays['f'])
  np.testing.assert_allclose(np.asarray(m.shapedirs), arrays['shapedirs'],
                             rtol=1e-7)
  np.testing.assert_allclose(np.asarray(m.J_regressor),
                             arrays['J_regressor'].toarray(), rtol=1e-7)
  # Extra/H36M regressors were found in SPIN's data/ folder (one level up).
  np.testing.assert_allclose(np.asarray(m.J_regressor_extra),
                             arrays['J_regressor_extra'], rtol=1e-7)
  np.testing.assert_allclose(np.asarray(m.J_regressor_h36m),
                             arrays['J_regressor_h36m'], rtol=1e-7)
  # posedirs layout (207, 3*V), planar.
  np.testing.assert_allclose(
      np.asarray(m.posedirs),
      np.transpose(arrays['posedirs'], (2, 1, 0)).reshape(207, -1), rtol=1e-7)
  # Equal models hash equal (one compiled function for both).
  assert hash(m.faces_static) == hash(smpl.StaticArray(arrays['f'].astype(np.int32)))


@pytest.mark.parametrize('gender', ['neutral', 'male', 'female'])
def test_folder_names(official, model32, tmp_path, gender):
  path, arrays = official
  kp = arrays['keypoint_vertex_ids']
  official_name = smpl_io._OFFICIAL_PKL_NAMES[gender][0]  # pylint: disable=protected-access
  short = f'SMPL_{gender.upper()}.pkl'
  for sub, name in (('long', official_name), ('short', short)):
    folder = tmp_path / sub
    os.makedirs(folder)
    shutil.copy(path, folder / name)
    body_fixtures.write_spin_regressors(folder, arrays)
    m = smpl_io.load_body_model(folder, gender, keypoint_vertex_ids=kp)
    assert m.gender == gender
    _assert_same_model(m, model32)
  with pytest.raises(FileNotFoundError, match='SMPL_'):
    smpl_io.load_body_model(tmp_path, 'male' if gender != 'male' else 'female')


def test_npz_loaders(official, model32, tmp_path):
  _, arrays = official
  # smplx-style npz: the pkl's keys as plain arrays (plus an object key).
  smplx_npz = {k: arrays[k] for k in ('v_template', 'shapedirs', 'posedirs',
                                      'weights', 'kintree_table', 'f', 'J')}
  smplx_npz['J_regressor'] = arrays['J_regressor'].toarray()
  smplx_npz['joint2num'] = np.array([{'pelvis': 0}], dtype=object)
  np.savez(tmp_path / 'SMPL_NEUTRAL.npz', **smplx_npz)
  m = smpl_io.load_body_model(
      tmp_path / 'SMPL_NEUTRAL.npz', extra_regressor=arrays['J_regressor_extra'],
      h36m_regressor=arrays['J_regressor_h36m'],
      keypoint_vertex_ids=arrays['keypoint_vertex_ids'])
  _assert_same_model(m, model32)
  # Our own npz (float32, -1 root, metadata strings), self-contained.
  ours = {k: np.asarray(v, np.float32) for k, v in smplx_npz.items()
          if k in ('v_template', 'shapedirs', 'posedirs', 'weights',
                   'J_regressor')}
  kin = arrays['kintree_table'].copy()
  kin[0, 0] = -1
  ours.update(kintree_table=kin, f=arrays['f'].astype(np.int32),
              keypoint_vertex_ids=arrays['keypoint_vertex_ids'],
              J_regressor_extra=arrays['J_regressor_extra'].astype(np.float32),
              J_regressor_h36m=arrays['J_regressor_h36m'].astype(np.float32),
              format_version=np.array('1'), source=np.array('test'),
              licence=np.array('CC0'))
  np.savez(tmp_path / 'ours.npz', **ours)
  m2 = smpl_io.load_body_model(tmp_path / 'ours.npz')
  np.testing.assert_allclose(np.asarray(m2.v_template),
                             np.asarray(model32.v_template))
  assert m2.keypoint_vertex_ids == model32.keypoint_vertex_ids
  assert smpl_io.resolve_body_model(str(tmp_path / 'ours.npz')).num_vertices == NV


def test_loader_errors(official, tmp_path):
  path, arrays = official
  kp = arrays['keypoint_vertex_ids']
  data = open(path, 'rb').read()
  # Truncated pickle.
  bad = tmp_path / 'SMPL_MALE.pkl'
  bad.write_bytes(data[:len(data) // 2])
  with pytest.raises(ValueError, match='SMPL_MALE.pkl.*truncated'):
    smpl_io.load_body_model(bad, keypoint_vertex_ids=kp)
  # Missing key / wrong shape in an npz.
  base = {k: (v.toarray() if hasattr(v, 'toarray') else v)
          for k, v in arrays.items()}
  base.pop('posedirs')
  np.savez(tmp_path / 'missing.npz', **base)
  with pytest.raises(KeyError, match=r"missing\.npz.*posedirs"):
    smpl_io.load_body_model(tmp_path / 'missing.npz')
  base['posedirs'] = np.zeros((NV, 3, 200))
  np.savez(tmp_path / 'shape.npz', **base)
  with pytest.raises(ValueError, match=r"shape\.npz.*'posedirs'.*\(400, 3, 207\)"):
    smpl_io.load_body_model(tmp_path / 'shape.npz')
  # Truncated npz.
  (tmp_path / 'cut.npz').write_bytes(
      (tmp_path / 'shape.npz').read_bytes()[:1000])
  with pytest.raises(ValueError, match=r'cut\.npz'):
    smpl_io.load_body_model(tmp_path / 'cut.npz')
  # A chumpy object without its array.
  odd = body_fixtures._Instance('chumpy.ch', 'Ch', {'_itr': None})  # pylint: disable=protected-access
  raw = dict(arrays, shapedirs=odd)
  buf = io.BytesIO()
  body_fixtures._Py2Pickler(buf).dump(raw)  # pylint: disable=protected-access
  (tmp_path / 'odd.pkl').write_bytes(buf.getvalue())
  with pytest.raises(ValueError, match=r"odd\.pkl.*'shapedirs'.*chumpy"):
    smpl_io.load_body_model(tmp_path / 'odd.pkl', keypoint_vertex_ids=kp)
  # No keypoint ids for a non-SMPL topology.
  with pytest.raises(ValueError, match='keypoint_vertex_ids'):
    smpl_io.load_body_model(path)
  # No extra regressor anywhere.
  lone = tmp_path / 'lone'
  os.makedirs(lone / 'x')
  shutil.copy(path, lone / 'x' / 'm.pkl')
  with pytest.raises(FileNotFoundError, match='J_regressor_extra'):
    smpl_io.load_body_model(lone / 'x' / 'm.pkl', keypoint_vertex_ids=kp)


def test_default_body_model_missing_asset(monkeypatch, tmp_path):
  monkeypatch.setattr(smpl_io, 'ASSETS_DIR', str(tmp_path))
  with pytest.raises(FileNotFoundError, match='build_body_model.py'):
    smpl_io.default_body_model('low')
  with pytest.raises(ValueError, match='resolution'):
    smpl_io.default_body_model('medium')


def test_random_body_model_fixture():
  m = body_fixtures.random_body_model(200, seed=1)
  assert m.num_vertices == 200 and m.num_betas == 10
  np.testing.assert_allclose(np.asarray(m.lbs_weights).sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(np.asarray(m.J_regressor).sum(1), 1.0, atol=1e-6)
  np.testing.assert_allclose(
      np.asarray(m.J_template),
      np.asarray(m.J_regressor, np.float64) @ np.asarray(m.v_template, np.float64),
      atol=1e-6)
  assert len(set(m.keypoint_vertex_ids)) == 11
  assert m.faces.min() >= 0 and m.faces.max() < 200


def test_model_without_pose_correctives(official):
  _, a = official
  kwargs = dict(
      v_template=a['v_template'], shapedirs=a['shapedirs'],
      posedirs=np.zeros_like(a['posedirs']), J_regressor=a['J_regressor'],
      weights=a['weights'], parents=a['parents'], faces=a['f'],
      keypoint_vertex_ids=a['keypoint_vertex_ids'],
      J_regressor_extra=a['J_regressor_extra'],
      J_regressor_h36m=a['J_regressor_h36m'])
  m = smpl.make_body_model(**kwargs)
  assert not m.has_pose_correctives  # the posedirs matmul is skipped
  betas, body_pose, go, transl = _random_inputs(6)
  out = _forward(m, betas, body_pose, go, transl)
  verts, _, joints49 = _smplx_outputs(dict(a, posedirs=kwargs['posedirs']),
                                      betas, body_pose, go, transl,
                                      torch.float32)
  np.testing.assert_allclose(np.asarray(out.vertices), verts, atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(_joints_forward(m, betas, body_pose, go, transl)), joints49,
      atol=1e-5)


def test_batch_chunking_is_exact(model32, monkeypatch):
  betas, body_pose, go, transl = _random_inputs(5)
  ref = _forward(model32, betas, body_pose, go, transl)
  # 2 rows per chunk: B = 5 runs as 3 chunks of 2 with one padded row.
  monkeypatch.setattr(smpl, 'MESH_CHUNK_VERTICES', 2 * NV)
  out = jax.jit(smpl.forward)(model32, betas, body_pose, go, transl)
  np.testing.assert_allclose(np.asarray(out.vertices), np.asarray(ref.vertices),
                             atol=1e-6, rtol=0)
  np.testing.assert_allclose(np.asarray(out.joints), np.asarray(ref.joints),
                             atol=1e-6, rtol=0)
