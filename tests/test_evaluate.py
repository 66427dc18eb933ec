"""Evaluation metrics against hand-worked cases, and the evaluation loop."""
import numpy as np
import pytest

from spin_jax import constants
from spin_jax import evaluate
from spin_jax import metrics
from spin_jax import smpl
from spin_jax import smpl_io


def tiny_body_model(num_vertices: int = 40, seed: int = 0,
                    template_scale: float = 1.0) -> smpl.BodyModel:
  """A random SMPL-layout body model with a handful of vertices (fast).

  Models with the same seed share everything but the template's scale.
  """
  rng = np.random.default_rng(seed)
  nv = num_vertices
  weights = rng.random((nv, 24)) ** 4
  weights /= weights.sum(1, keepdims=True)
  def regressor(rows):
    r = rng.random((rows, nv)) * (rng.random((rows, nv)) < 0.2)
    r[:, 0] += 1e-3
    return r / r.sum(1, keepdims=True)
  return smpl.make_body_model(
      v_template=template_scale * rng.normal(scale=0.3, size=(nv, 3)),
      shapedirs=rng.normal(scale=0.01, size=(nv, 3, 10)),
      posedirs=rng.normal(scale=0.01, size=(nv, 3, 207)),
      J_regressor=regressor(24), weights=weights,
      parents=np.array(constants.SMPL_PARENTS),
      faces=rng.integers(0, nv, size=(2 * nv, 3)),
      keypoint_vertex_ids=np.arange(11), J_regressor_extra=regressor(9),
      J_regressor_h36m=regressor(17), name='tiny')


def _rotation(axis, angle):
  axis = np.asarray(axis, np.float64)
  axis = axis / np.linalg.norm(axis)
  k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                [-axis[1], axis[0], 0]])
  return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


# Six points on the axes, centred, with principal variances 2, 8, 18.
AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 3],
                 [0, 0, -3]], np.float64)


def test_pa_mpjpe_similarity_copy_is_zero():
  rng = np.random.default_rng(0)
  gt = rng.normal(size=(3, 14, 3))
  r = _rotation([0.3, -1.0, 0.5], 2.1)
  pred = 0.37 * gt @ r.T + np.array([4.0, -2.0, 9.0])
  np.testing.assert_allclose(metrics.pa_mpjpe(pred, gt), 0.0, atol=1e-10)
  # The alignment itself recovers the ground truth.
  np.testing.assert_allclose(metrics.procrustes_align(pred, gt), gt,
                             atol=1e-10)
  # Plain MPJPE of the same copy is large.
  assert np.all(metrics.mpjpe(pred, gt) > 1.0)


def test_pa_mpjpe_does_not_allow_a_reflection():
  # pred = mirror image (x -> -x) of gt, then scaled, rotated, shifted.
  # Worked by hand: K = diag(-2, 8, 18); the best proper rotation keeps the
  # smallest axis reflected (R = I), scale = (-2 + 8 + 18) / 28 = 6/7, and the
  # per-point errors are 13/7, 13/7, 2/7, 2/7, 3/7, 3/7: mean 6/7.
  mirrored = AXES * np.array([-1.0, 1.0, 1.0])
  r = _rotation([1.0, 2.0, -0.5], 0.8)
  pred = 2.5 * mirrored @ r.T + np.array([0.1, 0.2, -3.0])
  got = metrics.pa_mpjpe(pred[None], AXES[None])
  np.testing.assert_allclose(got, [6.0 / 7.0], rtol=1e-12)
  aligned = metrics.procrustes_align(pred[None], AXES[None])[0]
  np.testing.assert_allclose(aligned, mirrored * 6.0 / 7.0, atol=1e-12)


def test_pa_mpjpe_float32_input_and_shape_check():
  gt = AXES[None].astype(np.float32)
  assert metrics.pa_mpjpe(gt * 3, gt)[0] < 1e-6
  with pytest.raises(ValueError, match=r'\(B, N, 3\)'):
    metrics.pa_mpjpe(np.zeros((1, 14, 3)), np.zeros((1, 17, 3)))


def test_pose_metrics_in_mm_and_pck_auc_on_known_distances():
  # Four joints displaced along x by 0, 40, 120 and 200 mm (metres in).
  gt = np.zeros((1, 4, 3))
  gt[0, :, 1] = [0.0, 1.0, 2.0, 3.0]
  pred = gt.copy()
  pred[0, :, 0] += np.array([0.0, 40.0, 120.0, 200.0]) / 1000.0
  m = metrics.pose_metrics(pred, gt, with_pck=True)
  np.testing.assert_allclose(m['mpjpe'], [90.0], rtol=1e-9)
  np.testing.assert_allclose(m['pck'], [75.0])  # 200 mm is not < 150
  # AUC over 0, 5, ..., 150: fraction strictly below each threshold.
  # 0 mm: below t for t in 5..150 (30 of 31); 40 mm: t in 45..150 (22);
  # 120 mm: t in 125..150 (6); 200 mm: never.
  np.testing.assert_allclose(m['auc'], [100.0 * (30 + 22 + 6) / (4 * 31)])
  assert len(metrics.AUC_THRESHOLDS_MM) == 31


def test_pck_auc_direct():
  errors = np.array([[0.0, 149.9, 150.0, 151.0]])
  np.testing.assert_allclose(metrics.pck(errors, 150.0), [0.5])
  np.testing.assert_allclose(metrics.auc(errors, (0.0, 150.0, 200.0)),
                             [(0 + 2 / 4 + 1) / 3])


def test_pve_centres_on_pelvis():
  rng = np.random.default_rng(1)
  gt = rng.normal(size=(2, 10, 3))
  pred = gt + np.array([1.0, 2.0, 3.0])
  got = metrics.pve(pred, gt, pred_pelvis=pred[:, 0], gt_pelvis=gt[:, 0])
  np.testing.assert_allclose(got, 0.0, atol=1e-12)
  np.testing.assert_allclose(metrics.pve(pred, gt), np.sqrt(14.0))


def test_segmentation_scores_on_known_masks():
  acc = evaluate.SegmentationAccumulator()
  gt = np.array([[0, 0, 1, 1]])
  pred = np.array([[0, 1, 1, 0]])
  acc.add_foreground(pred, gt)
  # bg: tp 1, fp 1, fn 1 -> F1 0.5; fg: same -> 0.5. Accuracy 2/4.
  s = acc.summary()
  assert s['fg_acc'] == pytest.approx(50.0)
  assert s['fg_f1'] == pytest.approx(0.5)
  # Accumulates over images: a perfect second image.
  acc.add_foreground(np.ones((2, 2)), np.ones((2, 2)))
  s = acc.summary()
  assert s['fg_acc'] == pytest.approx(100.0 * 6 / 8)
  # bg: tp 1 fp 1 fn 1 -> 0.5; fg: tp 5 fp 1 fn 1 -> 10/12.
  assert s['fg_f1'] == pytest.approx((0.5 + 10 / 12) / 2)


def test_part_scores_ignore_255_only_in_f1():
  gt = np.array([[1, 1, 255, 255, 0, 2]])
  pred = np.array([[1, 2, 3, 0, 0, 2]])
  acc = evaluate.SegmentationAccumulator()
  acc.add_parts(pred, gt)
  s = acc.summary()
  # Accuracy: 255 -> 0 on GT; correct pixels: 0 (1=1), 3 (0=0), 4, 5 -> 4/6.
  assert s['parts_acc'] == pytest.approx(100.0 * 4 / 6)
  # F1 over pixels 0, 1, 4, 5 only: class 0: tp1 -> 1; class 1: tp1 fn1 -> 2/3;
  # class 2: tp1 fp1 -> 2/3; classes 3..6 absent everywhere: no F1, left out.
  assert s['parts_f1'] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
  with pytest.raises(ValueError, match='0..6 or 255'):
    acc.add_parts(np.zeros((1, 2)), np.array([[0, 9]]))


def test_uncrop_labels_places_box_and_background_outside():
  labels = np.zeros((4, 4), np.uint8)
  labels[:2] = 3  # top half of the crop
  # Box of side 0.04 * 200 = 8 px centred at (6, 5) in a 12 x 16 image.
  out = evaluate.uncrop_labels(labels, center=(6.0, 5.0), scale=0.04,
                               image_shape=(12, 16))
  assert out.shape == (12, 16)
  assert np.all(out[1:5, 2:10] == 3)
  assert np.all(out[5:9, 2:10] == 0)
  assert out.sum() == 3 * 32
  # A box partly outside the image is clipped.
  out = evaluate.uncrop_labels(np.full((4, 4), 2, np.uint8), center=(0.0, 0.0),
                               scale=0.04, image_shape=(12, 16))
  assert out.sum() == 2 * 16


def test_result_accumulator_writes_npz_and_csv(tmp_path):
  acc = evaluate.ResultAccumulator()
  acc.add(mpjpe=np.array([1.0, 2.0]), index=np.array([0, 1]))
  acc.add(mpjpe=np.array([3.0]), index=np.array([2]))
  assert len(acc) == 3
  assert acc.summary(['mpjpe']) == {'mpjpe': 2.0}
  acc.write(str(tmp_path / 'r.npz'))
  acc.write(str(tmp_path / 'r.csv'))
  np.testing.assert_array_equal(np.load(tmp_path / 'r.npz')['index'], [0, 1, 2])
  lines = (tmp_path / 'r.csv').read_text().splitlines()
  assert lines[0] == 'index,mpjpe' and lines[3] == '2,3'
  with pytest.raises(ValueError, match='.npz or .csv'):
    acc.write(str(tmp_path / 'r.txt'))


# ---------------------------------------------------------------------------
# The evaluation loop with a stand-in regressor.


def _sample_params(rng, n):
  pose = rng.normal(scale=0.3, size=(n, 72)).astype(np.float32)
  betas = rng.normal(size=(n, 10)).astype(np.float32)
  return pose, betas


def _batches(pose, betas, batch_size, **extra):
  n = len(pose)
  for i in range(0, n, batch_size):
    sl = slice(i, i + batch_size)
    b = dict(image=np.zeros((len(pose[sl]), 8, 8, 3), np.float32),
             pose=pose[sl], betas=betas[sl], index=np.arange(n)[sl])
    b.update({k: v[sl] for k, v in extra.items()})
    yield b


def test_evaluate_mesh_protocol_with_a_similar_copy(tmp_path):
  body = tiny_body_model()
  rng = np.random.default_rng(3)
  pose, betas = _sample_params(rng, 5)
  gt_verts = evaluate.gt_vertices(body, pose, betas)  # (5, V, 3)
  # The "prediction": GT vertices scaled by 1.1 and shifted, fed in order.
  queue = [1.1 * gt_verts[:4] + 0.2, 1.1 * gt_verts[4:] + 0.2]
  calls = []

  def predict(images):
    calls.append(images.shape)
    v = queue.pop(0)
    v = np.concatenate([v, np.zeros((len(images) - len(v),) + v.shape[1:])])
    return dict(vertices=v, cam_t=np.zeros((len(images), 3)))

  out = evaluate.evaluate(predict, _batches(pose, betas, 4), 'synthetic',
                          body_model=body, batch_size=4, progress=False,
                          results_file=str(tmp_path / 'r.npz'))
  assert calls == [(4, 8, 8, 3), (4, 8, 8, 3)]  # last batch padded
  assert out['num_examples'] == 5
  assert out['pa_mpjpe'] == pytest.approx(0.0, abs=1e-3)
  # Pelvis-centred: the shift cancels, the 10% scale does not.
  h36m = evaluate.h36m_regressed(body, gt_verts)
  j14 = h36m[:, list(constants.H36M_TO_J14)] - h36m[:, :1]
  want = 1000 * 0.1 * np.linalg.norm(j14, axis=-1).mean()
  assert out['mpjpe'] == pytest.approx(want, rel=1e-4)
  v0 = gt_verts - h36m[:, :1]
  assert out['pve'] == pytest.approx(
      1000 * 0.1 * np.linalg.norm(v0, axis=-1).mean(), rel=1e-4)
  assert out['pck'] <= 100.0 and 'auc_pa' in out
  saved = np.load(tmp_path / 'r.npz')
  np.testing.assert_array_equal(saved['index'], np.arange(5))
  assert saved['mpjpe'].shape == (5,)
  np.testing.assert_allclose(saved['mpjpe'].mean(), out['mpjpe'])


def test_evaluate_s_protocol_uses_the_dataset_joints():
  body = tiny_body_model()
  rng = np.random.default_rng(4)
  verts = rng.normal(scale=0.3, size=(2, body.num_vertices, 3))
  h36m = evaluate.h36m_regressed(body, verts)
  j17 = h36m[:, list(constants.H36M_TO_J17)] - h36m[:, :1]
  s = np.zeros((2, 24, 4))
  s[:, list(constants.J24_TO_J17), :3] = j17
  s[:, :, 3] = 1
  s[:, list(constants.J24_TO_J17)[0], 0] += 0.05  # 50 mm on one joint

  def predict(images):
    return dict(vertices=verts, cam_t=np.zeros((2, 3)))

  batch = dict(image=np.zeros((2, 8, 8, 3)), pose_3d=s)
  out = evaluate.evaluate(predict, [batch], 'mpi-inf-3dhp', body_model=body,
                          progress=False)
  assert out['mpjpe'] == pytest.approx(50.0 / 17, rel=1e-6)
  assert out['pck'] == pytest.approx(100.0)
  with pytest.raises(ValueError, match='--dataset'):
    evaluate.get_spec('nope')


def test_3dpw_needs_gendered_models():
  body = tiny_body_model()
  pose, betas = _sample_params(np.random.default_rng(0), 2)

  def predict(images):
    return dict(vertices=np.zeros((2, body.num_vertices, 3)),
                cam_t=np.zeros((2, 3)))

  batches = _batches(pose, betas, 2, gender=np.array([0, 1]))
  with pytest.raises(ValueError, match='gt_body_model_male'):
    evaluate.evaluate(predict, batches, '3dpw', body_model=body,
                      progress=False)
  # With gendered models: female rows use the female model.
  male, female = body, tiny_body_model(template_scale=0.9)
  gt_f = evaluate.gt_vertices(female, pose, betas)
  gt_m = evaluate.gt_vertices(male, pose, betas)

  def predict_gt(images):
    return dict(vertices=np.stack([gt_m[0], gt_f[1]]), cam_t=np.zeros((2, 3)))

  out = evaluate.evaluate(
      predict_gt, _batches(pose, betas, 2, gender=np.array([0, 1])), '3dpw',
      body_model=male, gt_body_models=dict(male=male, female=female),
      progress=False)
  assert out['mpjpe'] == pytest.approx(0.0, abs=1e-3)
  assert out['mpjpe'] == pytest.approx(0.0, abs=1e-3)
  assert out['pve'] == pytest.approx(0.0, abs=1e-3)
  # Scoring both rows against the male mesh instead is visibly wrong.
  out_m = evaluate.evaluate(
      predict_gt, _batches(pose, betas, 2, gender=np.array([0, 0])), '3dpw',
      body_model=male, gt_body_models=dict(male=male, female=female),
      progress=False)
  assert out_m['mpjpe'] > 1.0


def test_lsp_segmentation_loop_renders_uncrops_and_scores():
  from spin_jax import render
  body = tiny_body_model()
  rng = np.random.default_rng(5)
  verts = rng.normal(scale=0.3, size=(1, body.num_vertices, 3))
  cam_t = np.array([[0.0, 0.0, 40.0]])  # fills a good part of the crop
  labels = render.vertex_part_labels(np.asarray(body.lbs_weights))
  crop_parts = render.render_part_segmentation(
      verts[0], body.faces, labels, 5000.0, (112.0, 112.0), (224, 224),
      translation=cam_t[0])
  assert (crop_parts > 0).sum() > 500
  center, scale, size = np.array([70.0, 50.0]), 0.5, np.array([90, 160])
  gt_parts = evaluate.uncrop_labels(crop_parts, center, scale, size)
  gt_parts[0, :3] = 255  # ignored for part F1 only
  batch = dict(image=np.zeros((1, 8, 8, 3)), orig_center=center[None],
               orig_scale=np.array([scale]), orig_size=size[None],
               mask=[(gt_parts > 0) & (gt_parts < 255)],
               part_segmentation=[gt_parts], index=np.array([7]))

  def predict(images):
    return dict(vertices=verts, cam_t=cam_t)

  out = evaluate.evaluate(predict, [batch], 'lsp', body_model=body,
                          progress=False)
  assert out['fg_acc'] == pytest.approx(100.0)
  assert out['fg_f1'] == pytest.approx(1.0)
  assert out['parts_acc'] == pytest.approx(100.0)
  assert out['parts_f1'] == pytest.approx(1.0)
  # A prediction pushed off to the side scores worse.
  shifted = dict(batch, orig_center=center[None] + 20)
  out2 = evaluate.evaluate(predict, [shifted], 'lsp', body_model=body,
                           progress=False)
  assert out2['fg_f1'] < 0.9 and out2['fg_acc'] < 100.0


def test_default_model_h36m_regressor_matches_spins_joint_map():
  # The embedded model's H36M regressor must use the row order that SPIN's
  # regressor has (constants.H36M_TO_J17 is SPIN's map): its J17 joints then
  # sit near the model's own 24 GT joints mapped with J24_TO_J17.
  body = smpl_io.default_body_model('low')
  rng = np.random.default_rng(0)
  pose = np.zeros((2, 72), np.float32)
  pose[1, 3:] = rng.normal(scale=0.2, size=69)
  out = smpl.forward(body, np.zeros((2, 10), np.float32), pose[:, 3:],
                     pose[:, :3])
  h36m = evaluate.h36m_regressed(body, np.asarray(out.vertices))
  j17 = h36m[:, list(constants.H36M_TO_J17)]
  gt17 = np.asarray(out.joints)[:, 25:][:, list(constants.J24_TO_J17)]
  err = np.linalg.norm(j17 - gt17, axis=-1)  # (2, 17) metres
  limbs = list(range(12))  # ankles, knees, hips, wrists, elbows, shoulders
  assert np.all(err[:, limbs] < 0.08), np.round(1000 * err[:, limbs])
