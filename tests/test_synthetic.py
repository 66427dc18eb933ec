"""The synthetic dataset: exact labels, splits, determinism, TFDS storage, pipeline."""
import cv2
import numpy as np
from scipy.spatial.transform import Rotation
import pytest

from spin_jax import constants
from spin_jax.datasets import synthetic


def _aa_to_mat(aa):
  return Rotation.from_rotvec(aa).as_matrix()


def _mat_to_aa(r):
  return Rotation.from_matrix(r).as_rotvec()

BODY = 'default-low'  # same skeleton as 'default', 10x fewer faces: fast tests


@pytest.fixture(scope='module')
def model():
  from spin_jax import smpl_io
  return smpl_io.resolve_body_model(BODY)


def _cfg(**kw):
  kw.setdefault('body_model', BODY)
  return synthetic.make_config('tiny', **kw)


def _solve_camera(xyz, uv, c):
  """Least squares f, t with u - c = f (X + tx) / (Z + tz) (linear in tz, f, f tx, f ty)."""
  n = len(xyz)
  a = np.zeros((2 * n, 4))
  rhs = np.zeros(2 * n)
  for axis in (0, 1):
    r = slice(axis * n, (axis + 1) * n)
    d = uv[:, axis] - c
    a[r, 0] = d               # tz
    a[r, 1] = -xyz[:, axis]   # f
    a[r, 2 + axis] = -1.0     # f * t_axis
    rhs[r] = -d * xyz[:, 2]
  sol = np.linalg.lstsq(a, rhs, rcond=None)[0]
  return sol, np.abs(a @ sol - rhs).max() / np.abs(xyz[:, 2] + sol[0]).min()


def test_labels_are_exact_projections_of_the_body(model):
  from spin_jax import smpl
  cfg = _cfg(num_train_3d=6)
  exs = list(synthetic.generate_examples('train_3d', cfg, model, num_workers=0))
  assert [int(e['index']) for e in exs] == list(range(6))
  pose = np.stack([e['pose'] for e in exs])
  betas = np.stack([e['shape'] for e in exs])
  import jax
  fwd = jax.jit(lambda m, p, b: smpl.forward(m, b, p[:, 3:], p[:, :3]).joints)
  joints = np.asarray(fwd(model, pose, betas), np.float64)
  c = (cfg.image_size - 1) / 2
  for e, j in zip(exs, joints):
    assert e['has_smpl'] == 1 and e['has_pose_3d'] == 1 and e['gender'] == -1
    gt = j[constants.NUM_OPENPOSE_JOINTS:]
    # S = the 24 GT joints, root-centred on Pelvis (MPII) (slot 14), conf 1.
    np.testing.assert_allclose(e['S'][:, :3], gt - gt[14], atol=2e-5)
    np.testing.assert_array_equal(e['S'][:, 3], 1)
    # part = exact perspective projection of the posed body (some f, t).
    vis = e['part'][:, 2] > 0
    assert vis.sum() >= 12
    (tz, f, _, _), resid = _solve_camera(gt[vis], e['part'][vis, :2].astype(np.float64), c)
    assert resid < 1e-3 and 1.2 * cfg.image_size * 0.99 < f < 2.5 * cfg.image_size * 1.01
    # openpose: noisy projections with scores in [0.5, 1].
    op = e['openpose']
    assert np.all((op[:, 2] == 0) | ((op[:, 2] >= 0.5) & (op[:, 2] <= 1)))
    # Box: tight box of the visible GT joints x 1.2.
    lo, hi = e['part'][vis, :2].min(0), e['part'][vis, :2].max(0)
    np.testing.assert_allclose(e['center'], (lo + hi) / 2, atol=1e-3)
    np.testing.assert_allclose(e['scale'] * 200, 1.2 * (hi - lo).max(), rtol=1e-5)
    # Camera-frame pose: y down, so the head is above (smaller v) the ankles.
    assert e['part'][13, 1] < e['part'][0, 1] or not (vis[13] and vis[0])
    img = cv2.imdecode(np.frombuffer(e['image'], np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (cfg.image_size, cfg.image_size, 3)


def test_splits_flags_and_determinism(model):
  cfg = _cfg(num_train_2d=5, num_test=3)
  a = list(synthetic.generate_examples('train_2d', cfg, model, num_workers=0))
  b = list(synthetic.generate_examples('train_2d', cfg, model, num_workers=0))
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert x['has_smpl'] == 0 and x['has_pose_3d'] == 0
    assert np.any(x['pose'] != 0)  # stored for evaluation, flagged absent
  t = list(synthetic.generate_examples('test', cfg, model, num_workers=0))
  assert len(t) == 3 and all(e['has_smpl'] == 1 for e in t)
  other = list(synthetic.generate_examples('train_2d', _cfg(num_train_2d=5, seed=1), model,
                                           num_workers=0))
  assert not np.array_equal(a[0]['pose'], other[0]['pose'])
  with pytest.raises(ValueError, match='split'):
    next(synthetic.generate_examples('val', cfg, model))
  with pytest.raises(ValueError, match='synthetic size'):
    synthetic.make_config('huge')


def test_tfds_build_and_pipeline(tmp_path, model):
  from spin_jax import augment, input_pipeline
  kw = dict(size='tiny', num_train_3d=5, num_train_2d=7, num_test=3, image_size=64,
            body_model=BODY, num_workers=1)
  path = synthetic.build_synthetic(str(tmp_path), progress=False, **kw)
  assert path == synthetic.dataset_dir(str(tmp_path), synthetic.make_config(
      'tiny', num_train_3d=5, num_train_2d=7, num_test=3, image_size=64, body_model=BODY))
  assert synthetic.build_synthetic(str(tmp_path), progress=False, **kw) == path  # cached
  train = synthetic.sources(str(tmp_path), 'train', **kw)
  assert [n for n, _ in train] == ['synthetic-3d', 'synthetic-2d']
  assert [len(s) for _, s in train] == [5, 7]
  ex = train[1][1][4]
  assert ex['image'].shape == (64, 64, 3) and ex['image'].dtype == np.uint8
  assert int(ex['index']) == 4 and ex['has_smpl'] == 0
  direct = next(synthetic.generate_examples('train_2d', synthetic.make_config(
      'tiny', num_train_3d=5, num_train_2d=7, num_test=3, image_size=64, body_model=BODY),
      model, num_workers=0))
  np.testing.assert_array_equal(train[1][1][0]['part'], direct['part'])
  p = input_pipeline.InputPipeline(train, batch_size=4, seed=0, shard_index=0, shard_count=1,
                                   augment_config=augment.AugmentConfig(img_res=64))
  assert p.weights == pytest.approx({'synthetic-3d': 0.4, 'synthetic-2d': 0.6})
  b = next(p)
  assert b['image'].shape == (4, 64, 64, 3) and np.all(np.isfinite(b['image']))
  np.testing.assert_array_equal(b['has_smpl'], (b['dataset_id'] == 0).astype(np.float32))
  test = synthetic.data_source(str(tmp_path), 'test', build=False, **kw)
  assert len(test) == 3
  with pytest.raises(FileNotFoundError, match='not built'):
    synthetic.data_source(str(tmp_path), 'test', build=False, size='tiny', seed=9,
                          body_model=BODY)


def test_pose_samplers():
  from spin_jax import augment
  rng = np.random.default_rng(0)
  simple = synthetic.simple_pose_sampler(rng, 200).reshape(200, 23, 3)
  assert np.all(simple[:, 3, 0] >= 0) and np.all(simple[:, 4, 0] >= 0)  # knees bend forward
  assert np.all(simple[:, 17, 1] <= 0) and np.all(simple[:, 18, 1] >= 0)  # elbows (SPIN signs)
  pose, betas = synthetic.sample_bodies(rng, 200)
  assert pose.shape == (200, 72) and betas.shape == (200, 10) and np.abs(betas).max() <= 2.5
  # Upright in the camera frame: the body's up axis (+y) points up the image (-y).
  up = np.stack([_aa_to_mat(p[:3])[:, 1] for p in pose])
  assert np.all(up[:, 1] < -0.7)
  gmm = synthetic.gmm_pose_sampler(rng, 50)
  assert gmm is None or gmm.shape == (50, 69)


def test_build_kwargs_name_one_dataset():
  kw = synthetic.build_kwargs(100, 20, 64, seed=3, body_model=BODY)
  cfg = synthetic.make_config(**kw)
  assert (cfg.num_train_3d, cfg.num_train_2d, cfg.num_test, cfg.image_size, cfg.seed) == (40, 60, 20, 96, 3)
  assert cfg.name == 'n40_60_20_px96_seed3_default-low'


def _render_bones(model, appearance, seed, size=192):
  """A frontal rest-pose person rendered by the dataset's worker: (RGB image
  float, (H, W) SMPL bone of each body pixel or -1)."""
  from spin_jax import render, smpl
  betas = np.zeros((1, model.num_betas), np.float32)
  out = smpl.forward(model, betas, np.zeros((1, 69), np.float32),
                     np.array([[np.pi, 0, 0]], np.float32))  # y-up body -> camera frame
  verts = np.asarray(out.vertices[0], np.float64)
  rng = np.random.default_rng(seed)
  focal, center, transl = synthetic._place(rng, verts.min(0)[None], verts.max(0)[None], size)
  faces = np.asarray(model.faces, np.int32)
  bones = synthetic.face_bones(model)
  synthetic._init_worker(faces, synthetic._face_parts(model), bones)
  jpeg = synthetic._render_job((verts, transl[0], float(focal[0]), center, size, seed, 1,
                                appearance, 'random'))
  img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] / 255.0
  frags = render.rasterize(verts + transl[0], faces, float(focal[0]), center, (size, size))
  bone_img = np.where(frags.mask, bones[np.maximum(frags.face_index, 0)].astype(int), -1)
  return img, bone_img


def _chroma(img, bone_img, bone):
  """Mean chromaticity (r, g, b) / (r + g + b) over a bone's interior pixels
  (invariant to the Lambertian shading, away from JPEG chroma bleeding)."""
  m = cv2.erode((bone_img == bone).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
  assert m.sum() >= 10, f'bone {bone}: {m.sum()} interior pixels'
  px = img[m]
  return (px / px.sum(1, keepdims=True).clip(1e-3)).mean(0)


def test_part_appearance_tells_left_from_right(model):
  # SMPL joints: 1/2 hips (thighs), 4/5 knees (shins), 16/17 shoulders (upper
  # arms), 18/19 elbows (forearms): left/right pairs.
  pairs = ((1, 2), (4, 5), (16, 17), (18, 19))
  with pytest.raises(ValueError, match='appearance'):
    synthetic.make_config('tiny', appearance='zebra')
  assert synthetic.make_config('tiny', appearance='parts').name.endswith('_parts')
  assert synthetic.PART_PALETTE.shape == (24, 3)
  img, bone_img = _render_bones(model, 'parts', seed=3)
  img2, bone_img2 = _render_bones(model, 'parts', seed=11)  # other scene / light
  for left, right in pairs:
    cl, cr = _chroma(img, bone_img, left), _chroma(img, bone_img, right)
    assert np.abs(cl - cr).max() > 0.15, (left, right, cl, cr)
    # The colour is fixed per bone: the same in another scene.
    np.testing.assert_allclose(_chroma(img2, bone_img2, left), cl, atol=0.05)
  # The default clothing colours are left/right symmetric (the ambiguity
  # 'parts' removes).
  img, bone_img = _render_bones(model, 'clothes', seed=3)
  for left, right in pairs:
    np.testing.assert_allclose(_chroma(img, bone_img, left), _chroma(img, bone_img, right),
                               atol=0.04)


def test_pose_scale_narrows_the_pose_distribution():
  full, _ = synthetic.sample_bodies(np.random.default_rng(4), 500)
  half, _ = synthetic.sample_bodies(np.random.default_rng(4), 500, pose_scale=0.5)
  np.testing.assert_allclose(half[:, :3], full[:, :3], atol=1e-6)  # orientation kept
  gmm = synthetic._gmm_prior()
  if gmm is None:  # simple sampler: deviations from its mean pose halved
    mean = synthetic.mean_body_pose()
    np.testing.assert_allclose(half[:, 3:] - mean, 0.5 * (full[:, 3:] - mean), atol=1e-5)
  else:  # same draws, deviations from each sample's mixture mean halved
    means = gmm[0]
    k = np.argmin(np.abs(2 * half[:, None, 3:] - full[:, None, 3:] - means[None]).sum(-1), 1)
    np.testing.assert_allclose(half[:, 3:] - means[k], 0.5 * (full[:, 3:] - means[k]),
                               atol=1e-5)
    # The spread around the prior's modes shrinks accordingly.
    assert 0.45 < np.std(half[:, 3:] - means[k]) / np.std(full[:, 3:] - means[k]) < 0.55
  kw = synthetic.build_kwargs(100, 20, 64, body_model=BODY, appearance='parts',
                              pose_scale=0.5)
  assert synthetic.make_config(**kw).name == 'n40_60_20_px96_seed0_default-low_parts_ps0.5'
  with pytest.raises(ValueError, match='pose_scale'):
    synthetic.make_config('tiny', pose_scale=1.5)
