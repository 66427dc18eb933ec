"""Augmentation exactness and grain pipeline behaviour (determinism, state, shards)."""
import json

import numpy as np
from scipy.spatial.transform import Rotation
import pytest

from spin_jax import augment, constants, input_pipeline


def _aa_to_mat(aa):
  return Rotation.from_rotvec(aa).as_matrix()


RES = constants.IMG_RES


def _example(rng, index=0, size=120, has_smpl=1.0):
  """A schema example: random image, box, keypoints, 3D joints, pose."""
  center = rng.uniform(0.4, 0.6, 2) * size
  scale = rng.uniform(0.3, 0.5) * size / 100
  half = 100 * scale
  kp = lambda n: np.concatenate([center + rng.uniform(-half, half, (n, 2)),
                                 rng.integers(0, 2, (n, 1))], 1)
  return dict(
      image=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
      center=center.astype(np.float32), scale=np.float32(scale),
      part=kp(24).astype(np.float32), openpose=kp(25).astype(np.float32),
      S=np.concatenate([rng.normal(0, 0.3, (24, 3)), np.ones((24, 1))], 1).astype(np.float32),
      pose=(rng.normal(0, 0.4, 72)).astype(np.float32),
      shape=rng.normal(0, 1, 10).astype(np.float32),
      has_smpl=np.float32(has_smpl), has_pose_3d=np.float32(has_smpl),
      gender=np.int32(index % 2), index=np.int64(index))


def _examples(n, seed, **kw):
  rng = np.random.default_rng(seed)
  return [_example(rng, index=k, **kw) for k in range(n)]


def _all_params():
  return [augment.AugmentParams(flip=f, rot=r, sc=s, pn=(0.8, 1.0, 1.3))
          for f in (False, True) for r, s in ((0.0, 1.0), (37.5, 0.8), (-58.0, 1.2))]


# ------------------------------------------------------------ exact transforms
@pytest.mark.parametrize('params', _all_params())
def test_keypoints_map_back_to_the_original(params):
  ex = _example(np.random.default_rng(1))
  out = augment.augment_example(ex, params)
  m = augment.crop_matrix(ex['center'], float(ex['scale']) * params.sc, RES,
                          params.rot, params.flip)
  np.testing.assert_array_equal(out['crop_matrix'], m)
  px = out['keypoints'].astype(np.float64)
  px[:, :2] = (px[:, :2] + 1) * RES / 2  # [-1, 1] -> crop pixels
  back = augment.untransform_keypoints(px, m, params.flip)
  orig = np.concatenate([ex['openpose'], ex['part']]).astype(np.float64)
  np.testing.assert_allclose(back[:, :2], orig[:, :2], atol=1e-4)
  np.testing.assert_array_equal(back[:, 2], orig[:, 2])


def test_crop_matrix_maps_box_to_crop():
  m = augment.crop_matrix((300.0, 200.0), 1.5, RES)  # box side 300 px
  corners = np.array([[150.0, 50.0], [450.0, 350.0], [300.0, 200.0]])
  np.testing.assert_allclose(corners @ m[:, :2].T + m[:, 2],
                             [[0, 0], [224, 224], [112, 112]], atol=1e-12)
  # Positive rotation turns the content counter-clockwise (y down): a point to
  # the right of the centre moves up.
  m = augment.crop_matrix((300.0, 200.0), 1.5, RES, rot=90.0)
  np.testing.assert_allclose(np.array([400.0, 200.0]) @ m[:, :2].T + m[:, 2],
                             [112, 112 - 100 * 224 / 300], atol=1e-9)
  flipped = augment.crop_matrix((300.0, 200.0), 1.5, RES, flip=True)
  np.testing.assert_allclose(np.array([150.0, 50.0]) @ flipped[:, :2].T + flipped[:, 2],
                             [224, 0], atol=1e-12)


@pytest.mark.parametrize('params', _all_params()[3:])
def test_image_moves_with_the_keypoints(params):
  # A bright Gaussian blob at a sub-pixel keypoint lands, in the crop, where
  # the keypoint is mapped (centroid to 0.05 px): image and keypoints agree.
  size = 200
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
  p = np.array([83.37, 121.61])
  blob = 255 * np.exp(-((xx - p[0]) ** 2 + (yy - p[1]) ** 2) / (2 * 4.0 ** 2))
  image = np.repeat(blob[..., None], 3, -1).astype(np.float32)
  m = augment.crop_matrix((100.0, 100.0), 0.9, RES, params.rot, params.flip)
  crop = augment.warp_image(image, m)[..., 0].astype(np.float64)
  cy, cx = np.mgrid[0:RES, 0:RES]
  centroid = np.array([(crop * cx).sum(), (crop * cy).sum()]) / crop.sum()
  kp = augment.transform_keypoints(np.array([[*p, 1.0]]), m, False)[0, :2]
  np.testing.assert_allclose(centroid, kp, atol=0.05)


def test_flip_twice_is_identity():
  rng = np.random.default_rng(2)
  kp = np.concatenate([rng.uniform(0, RES, (49, 2)), rng.uniform(0, 1, (49, 1))], 1)
  f = augment.crop_matrix((RES / 2, RES / 2), RES / 200, RES, flip=True)  # crop -> mirrored crop
  np.testing.assert_allclose(f[:, :2] @ [10.0, 20.0] + f[:, 2], [RES - 10.0, 20.0])
  twice = augment.transform_keypoints(augment.transform_keypoints(kp, f, True), f, True)
  np.testing.assert_allclose(twice, kp, atol=1e-12)
  s = np.concatenate([rng.normal(size=(24, 3)), rng.uniform(size=(24, 1))], 1)
  np.testing.assert_allclose(augment.transform_joints_3d(
      augment.transform_joints_3d(s, 0.0, True), 0.0, True), s, atol=1e-12)
  pose = rng.normal(0, 0.5, 72)
  np.testing.assert_allclose(augment.flip_pose(augment.flip_pose(pose)), pose)
  # Full round trip of the pose: rotate + flip, then undo.
  back = augment.untransform_pose(augment.transform_pose(pose, 33.0, True), 33.0, True)
  np.testing.assert_allclose(_aa_to_mat(back[:3]),
                             _aa_to_mat(pose[:3]), atol=1e-12)
  np.testing.assert_allclose(back[3:], pose[3:], atol=1e-12)


def test_flip_swaps_left_and_right_names():
  names = constants.JOINT_NAMES
  perm = np.asarray(constants.J49_FLIP_PERM)
  swap = lambda n: (n.replace('Left', 'Tmp').replace('Right', 'Left').replace('Tmp', 'Right')
                    .replace('OP L', 'OP T').replace('OP R', 'OP L').replace('OP T', 'OP R'))
  assert [names[i] for i in perm] == [swap(n) for n in names]


def test_projected_joints_land_on_augmented_keypoints():
  # A body seen by a camera whose principal point is the box centre; after
  # augmentation the crop camera (f * k, principal point 112) must project the
  # body posed with the augmented global orientation onto the augmented 2D
  # keypoints, and the augmented S must be the rotated/flipped 3D joints.
  import jax
  with jax.enable_x64(True):
    _check_projection()


def _check_projection():
  import jax
  from tests import body_fixtures
  from spin_jax import smpl
  model = body_fixtures.random_body_model(num_vertices=200, seed=0, dtype=np.float64)
  rng = np.random.default_rng(4)
  pose = rng.normal(0, 0.3, (1, 72))
  pose[0, :3] = [np.pi, 0.1, 0.2]  # roughly upright in the camera frame
  betas = rng.normal(0, 1, (1, 10))
  transl = np.array([[0.1, -0.05, 8.0]])
  fwd = jax.jit(lambda p, t: smpl.forward(model, betas, p[:, 3:], p[:, :3], t))
  joints = np.asarray(fwd(pose, transl).joints)[0]  # (49, 3)
  root = np.asarray(fwd(pose, np.zeros((1, 3))).smpl_joints)[0, 0]  # rest root
  focal, c, scale = 1000.0, np.array([150.0, 140.0]), 1.3
  kp = np.concatenate([focal * joints[:, :2] / joints[:, 2:] + c, np.ones((49, 1))], 1)
  s = np.concatenate([joints[25:] - joints[25 + 14], np.ones((24, 1))], 1)
  ex = _example(rng)
  ex.update(center=c, scale=scale, openpose=kp[:25], part=kp[25:], S=s,
            pose=pose[0], image=np.zeros((280, 300, 3), np.uint8))
  for params in _all_params():
    out = augment.augment_example(ex, params)
    k = RES / (200 * scale * params.sc)
    rz = augment.rot_z(-params.rot)
    t_aug = rz @ (root + transl[0]) - root  # rotation about the camera origin
    pose_rot = augment.transform_pose(pose[0], params.rot, False)[None]
    j_aug = np.asarray(fwd(pose_rot, t_aug[None]).joints)[0]
    np.testing.assert_allclose(j_aug, joints @ rz.T, atol=1e-7)
    if params.flip:  # mirror (x -> -x) and swap left/right
      j_aug = j_aug[augment.J49_FLIP_PERM] * [-1, 1, 1]
    q = focal * k * j_aug[:, :2] / j_aug[:, 2:] + RES / 2
    got = (out['keypoints'][:, :2].astype(np.float64) + 1) * RES / 2
    np.testing.assert_allclose(got, q, atol=2e-4)  # float32 storage
    s_aug = j_aug[25:] - j_aug[25 + 14]
    np.testing.assert_allclose(out['pose_3d'][:, :3], s_aug, atol=1e-5)
    np.testing.assert_allclose(out['pose'], augment.transform_pose(
        pose[0], params.rot, params.flip), atol=1e-6)


def test_sample_params_follow_spin():
  rng = np.random.default_rng(5)
  ps = [augment.sample_params(rng) for _ in range(4000)]
  rot = np.array([p.rot for p in ps])
  sc = np.array([p.sc for p in ps])
  pn = np.array([p.pn for p in ps])
  assert abs(np.mean([p.flip for p in ps]) - 0.5) < 0.03
  assert abs(np.mean(rot == 0) - 0.6) < 0.03
  assert rot.min() >= -60 and rot.max() <= 60 and (np.abs(rot) == 60).any()
  assert abs(np.std(rot[rot != 0]) - 30) < 3
  assert sc.min() >= 0.75 and sc.max() <= 1.25 and (sc == 1.25).any()
  assert pn.min() >= 0.6 and pn.max() <= 1.4


def test_normalize_image_applies_noise_then_clip():
  img = np.full((2, 2, 3), 200, np.uint8)
  x = augment.normalize_image(img, (1.4, 1.0, 0.5))
  expect = (np.array([255.0, 200.0, 100.0]) / 255 - constants.IMG_NORM_MEAN) / constants.IMG_NORM_STD
  np.testing.assert_allclose(x[0, 0], expect, rtol=1e-5)
  np.testing.assert_array_equal(augment.denormalize_image(augment.normalize_image(img)), img)


# ------------------------------------------------------------ mixing
def test_spin_mixing_weights():
  sizes = {'h36m': 300, 'lsp-orig': 1000, 'mpii': 3000, 'lspet': 2000, 'coco': 4000,
           'mpi-inf-3dhp': 500}
  w = input_pipeline.mixing_weights(sizes)
  assert w['h36m'] == pytest.approx(0.3) and w['mpi-inf-3dhp'] == pytest.approx(0.1)
  assert w['mpii'] == pytest.approx(0.6 * 3000 / 10000)
  # A missing group renormalises the rest.
  w = input_pipeline.mixing_weights({'h36m': 10, 'coco': 10})
  assert w['h36m'] == pytest.approx(1 / 3) and w['coco'] == pytest.approx(2 / 3)
  with pytest.raises(ValueError, match='no mixing group'):
    input_pipeline.mixing_weights({'mystery': 3})


def test_sampler_draws_with_the_weights_and_spin_index_rule():
  ds = input_pipeline.MixedIndexDataset([50, 20, 5], [0.5, 0.3, 0.2], seed=7)
  items = [ds[i] for i in range(6000)]
  d = np.array([it[1] for it in items])
  np.testing.assert_allclose(np.bincount(d) / len(d), [0.5, 0.3, 0.2], atol=0.02)
  # Epoch = largest dataset (50): within an epoch idx runs over a permutation.
  epoch0 = np.array([ds[i][2] if ds[i][1] == 0 else -1 for i in range(50)])
  assert len(set(epoch0[epoch0 >= 0])) == (epoch0 >= 0).sum()
  assert all(0 <= s < [50, 20, 5][k] for _, k, s in items)
  assert ds[123] == ds[123] == input_pipeline.MixedIndexDataset([50, 20, 5], [.5, .3, .2], 7)[123]


# ------------------------------------------------------------ grain pipeline
def _sources():
  return [('h36m', _examples(12, 0)), ('mpii', _examples(7, 1, has_smpl=0.0))]


def _pipeline(**kw):
  kw.setdefault('batch_size', 4)
  kw.setdefault('seed', 3)
  kw.setdefault('shard_index', 0)
  kw.setdefault('shard_count', 1)
  return input_pipeline.InputPipeline(_sources(), **kw)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_batch_matches_the_contract():
  p = _pipeline()
  b = next(p)
  shapes = dict(image=((4, RES, RES, 3), np.float32), keypoints=((4, 49, 3), np.float32),
                pose_3d=((4, 24, 4), np.float32), pose=((4, 72), np.float32),
                betas=((4, 10), np.float32), has_smpl=((4,), np.float32),
                has_pose_3d=((4,), np.float32), index=((4,), np.int32),
                dataset_id=((4,), np.int32), is_flipped=((4,), np.int32),
                rot_angle=((4,), np.float32), scale=((4,), np.float32),
                center=((4, 2), np.float32), gender=((4,), np.int32), valid=((4,), np.float32))
  assert {k: (v.shape, v.dtype) for k, v in b.items()} == shapes
  assert p.dataset_offsets == {'h36m': 0, 'mpii': 12} and p.num_fits_rows == 19
  assert p.steps_per_epoch == 3  # largest dataset (12) // batch (4)
  # index = offset + example index; has_smpl follows the dataset.
  mpii = b['dataset_id'] == 1
  assert np.all(b['index'][mpii] >= 12) and np.all(b['index'][~mpii] < 12)
  np.testing.assert_array_equal(b['has_smpl'], (~mpii).astype(np.float32))
  json.dumps(p.get_state())


def test_pipeline_is_deterministic_given_the_seed():
  a, b, c = _pipeline(), _pipeline(), _pipeline(seed=4)
  for _ in range(3):
    ba, bb, bc = next(a), next(b), next(c)
    _assert_batches_equal(ba, bb)
  assert not np.array_equal(ba['image'], bc['image'])


def test_state_restore_resumes_the_exact_sequence():
  p = _pipeline(num_threads=1)
  for _ in range(2):
    next(p)
  state = json.loads(json.dumps(p.get_state()))
  expected = [next(p) for _ in range(3)]
  q = _pipeline(num_threads=2)
  q.set_state(state)
  for e in expected:
    _assert_batches_equal(next(q), e)


def test_host_shards_partition_the_global_batch():
  full = _pipeline(batch_size=4)
  hosts = [_pipeline(batch_size=4, shard_index=h, shard_count=2) for h in range(2)]
  for _ in range(3):
    g = next(full)
    parts = [next(h) for h in hosts]
    assert all(len(p['index']) == 2 for p in parts)
    # Host h holds global items h, h + 2 of the step.
    for h in range(2):
      np.testing.assert_array_equal(parts[h]['index'], g['index'][h::2])
      np.testing.assert_array_equal(parts[h]['image'], g['image'][h::2])


def test_eval_mode_is_ordered_unaugmented_and_padded():
  p = _pipeline(train=False, batch_size=8)
  batches = list(p)
  assert len(batches) == 3  # 19 examples -> 8 + 8 + 3 (padded)
  idx = np.concatenate([b['index'] for b in batches])
  valid = np.concatenate([b['valid'] for b in batches])
  np.testing.assert_array_equal(idx[valid > 0], np.arange(19))
  assert valid.sum() == 19 and np.all(valid[19:] == 0)
  b = batches[0]
  assert np.all(b['rot_angle'] == 0) and np.all(b['is_flipped'] == 0)
  ex = _sources()[0][1][0]
  np.testing.assert_allclose(b['scale'][0], ex['scale'])
  np.testing.assert_allclose(b['pose'][0], ex['pose'], atol=1e-6)


def test_ignore_3d_and_bad_arguments():
  b = next(_pipeline(ignore_3d=True))
  assert np.all(b['has_smpl'] == 0) and np.all(b['has_pose_3d'] == 0)
  with pytest.raises(ValueError, match='not divisible'):
    _pipeline(batch_size=3, shard_count=2, shard_index=0)
  with pytest.raises(ValueError, match='unknown datasets'):
    _pipeline(weights={'coco': 1.0})
  bad = _examples(2, 0)
  bad[1]['index'] = np.int64(5)
  with pytest.raises(Exception, match='index'):
    list(input_pipeline.InputPipeline([('h36m', bad)], batch_size=2, train=False,
                                      shard_index=0, shard_count=1))


def test_workers_give_the_same_stream_and_resume():
  base = _pipeline()
  expected = [next(base) for _ in range(4)]
  with _pipeline(num_workers=2) as p:
    for e in expected[:2]:
      _assert_batches_equal(next(p), e)
    state = p.get_state()
  with _pipeline(num_workers=2) as q:
    q.set_state(state)
    for e in expected[2:]:
      _assert_batches_equal(next(q), e)


def test_stored_margin_crops_augment_like_the_original_frame(tmp_path):
  # A dataset built by spin_jax.datasets (margin crop, labels in crop pixels)
  # must give the same crop and keypoints as augmenting the original image.
  import cv2
  import dataset_fixtures as fx
  from spin_jax import datasets
  from spin_jax.datasets import builders
  manual, data_dir = str(tmp_path / 'manual'), str(tmp_path / 'data')
  fx.write_lsp(manual, 'lsp_orig', 2)
  builders.prepare('lsp-orig', data_dir, manual, max_examples=2, progress=False)
  src = datasets.data_source('lsp-orig', data_dir)
  recs = datasets.read_raw('lsp-orig', manual)[:2]
  for params in (augment.AugmentParams(), augment.AugmentParams(flip=True, rot=30.0, sc=1.2)):
    for i, rec in enumerate(recs):
      ex = src[i]
      out = augment.augment_example(ex, params)
      image = cv2.cvtColor(cv2.imread(rec['image_path']), cv2.COLOR_BGR2RGB)
      ref = augment.augment_example(dict(ex, image=image, center=rec['center'],
                                         scale=rec['scale'], part=rec['part']), params)
      vis = out['keypoints'][:, 2] > 0  # zero-conf rows are all-zero in either frame
      assert vis.sum() >= 14
      np.testing.assert_allclose(out['keypoints'][vis], ref['keypoints'][vis], atol=1e-5)
      diff = np.abs(augment.denormalize_image(out['image']).astype(float)
                    - augment.denormalize_image(ref['image']))
      assert diff.mean() < 3.0  # the stored crop is re-encoded JPEG
  p = input_pipeline.InputPipeline([('lsp-orig', src)], batch_size=2, train=False,
                                   shard_index=0, shard_count=1)
  b = next(p)
  np.testing.assert_allclose(b['center'], [r['center'] for r in recs], atol=1e-3)
  np.testing.assert_allclose(b['scale'], [r['scale'] for r in recs], rtol=1e-5)
