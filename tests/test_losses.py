"""SPIN's loss terms against a NumPy re-statement of the original reductions.

The references select the participating samples by boolean indexing and take
plain means, as the original code does, rather than our masked sums.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spin_jax import losses

B = 4


def _batch(seed=0, has_pose_3d=(1, 0, 1, 0), valid=(1, 1, 0, 0)):
  rng = np.random.default_rng(seed)
  f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
  kp = rng.uniform(-1, 1, size=(B, 49, 3))
  kp[..., 2] = rng.uniform(0, 1, size=(B, 49)) * (rng.uniform(size=(B, 49)) > 0.3)
  gt3d = rng.normal(scale=0.3, size=(B, 24, 4))
  gt3d[..., 3] = rng.uniform(size=(B, 24)) > 0.2
  pred = dict(
      keypoints_2d=f32(rng.uniform(-1, 1, size=(B, 49, 2))),
      joints=f32(rng.normal(scale=0.3, size=(B, 49, 3)) + [0.1, -0.2, 5.0]),
      rotmat=f32(Rotation.random(B * 24, random_state=seed).as_matrix()
                 .reshape(B, 24, 3, 3)),
      betas=f32(rng.normal(size=(B, 10))),
      cam=f32(rng.uniform(0.5, 1.2, size=(B, 3))),
      vertices=f32(rng.normal(size=(B, 30, 3))))
  target = dict(
      keypoints=f32(kp), pose_3d=f32(gt3d), has_pose_3d=f32(has_pose_3d),
      pose=f32(rng.normal(scale=0.5, size=(B, 72))),
      betas=f32(rng.normal(size=(B, 10))), valid_fit=np.asarray(valid, bool),
      vertices=f32(rng.normal(size=(B, 30, 3))))
  return pred, target


def _ref_terms(pred, target, op_weight=0.0, gt_weight=1.0):
  """NumPy re-statement of SPIN's trainer losses (float64)."""
  p = {k: np.asarray(v, np.float64) for k, v in pred.items()}
  t = {k: np.asarray(v, np.float64) for k, v in target.items()}
  conf = t['keypoints'][..., 2].copy()
  conf[:, :25] *= op_weight
  conf[:, 25:] *= gt_weight
  kp2d = (conf[..., None] * (p['keypoints_2d'] - t['keypoints'][..., :2]) ** 2
          ).mean()
  sel = t['has_pose_3d'] == 1
  if sel.any():
    pj, gj = p['joints'][sel, 25:], t['pose_3d'][sel]
    pj = pj - (pj[:, 2] + pj[:, 3])[:, None] / 2
    gx = gj[..., :3] - (gj[:, 2, :3] + gj[:, 3, :3])[:, None] / 2
    kp3d = (gj[..., 3:] * (pj - gx) ** 2).mean()
  else:
    kp3d = 0.0
  v = t['valid_fit'].astype(bool)
  gt_rot = Rotation.from_rotvec(t['pose'].reshape(-1, 3)).as_matrix().reshape(
      B, 24, 3, 3)
  pose = ((p['rotmat'][v] - gt_rot[v]) ** 2).mean() if v.any() else 0.0
  betas = ((p['betas'][v] - t['betas'][v]) ** 2).mean() if v.any() else 0.0
  verts = np.abs(p['vertices'][v] - t['vertices'][v]).mean() if v.any() else 0.0
  cam = (np.exp(-10 * p['cam'][:, 0]) ** 2).mean()
  return dict(keypoints_2d=kp2d, keypoints_3d=kp3d, pose=pose, betas=betas,
              vertices=verts, cam=cam)


@pytest.mark.parametrize('has_pose_3d,valid', [
    ((1, 0, 1, 0), (1, 1, 0, 0)),
    ((0, 0, 0, 0), (0, 0, 0, 0)),  # nothing takes part: those terms are 0
    ((1, 1, 1, 1), (1, 1, 1, 1)),
])
def test_terms_match_reference(has_pose_3d, valid):
  pred, target = _batch(has_pose_3d=has_pose_3d, valid=valid)
  ref = _ref_terms(pred, target)
  weights = dict(vertices=0.5)
  total, terms, per_sample = jax.jit(
      lambda p, t: losses.spin_losses(p, t, weights, per_sample=True))(
          pred, target)
  for name in losses.TERMS:
    np.testing.assert_allclose(terms[name], ref[name], rtol=2e-5, atol=1e-7,
                               err_msg=name)
  w = dict(losses.DEFAULT_WEIGHTS, **weights)
  expected = 60 * (0.5 * ref['vertices'] + 5 * (ref['keypoints_2d']
                                                + ref['keypoints_3d'])
                   + ref['pose'] + 0.001 * ref['betas'] + ref['cam'])
  np.testing.assert_allclose(total, expected, rtol=2e-5)
  np.testing.assert_allclose(terms['total'], total)
  # Per-sample values: weighted, zero outside the term's samples, and they
  # reduce to the batch value (mean over all, or over the participants).
  n3d, nv = max(sum(has_pose_3d), 1), max(sum(valid), 1)
  for name, n in (('keypoints_2d', B), ('cam', B), ('keypoints_3d', n3d),
                  ('pose', nv), ('betas', nv), ('vertices', nv)):
    ps = np.asarray(per_sample[name])
    assert ps.shape == (B,)
    np.testing.assert_allclose(ps.sum() / n, 60 * w[name] * ref[name],
                               rtol=2e-5, atol=1e-7, err_msg=name)
  np.testing.assert_array_equal(per_sample['pose'][~np.asarray(valid, bool)],
                                0.0)


def test_keypoint_weights_and_3d_translation_invariance():
  pred, target = _batch(seed=3)
  value, _ = losses.keypoint_2d_loss(pred['keypoints_2d'], target['keypoints'],
                                     openpose_weight=0.5, gt_weight=2.0)
  ref = _ref_terms(pred, target, op_weight=0.5, gt_weight=2.0)
  np.testing.assert_allclose(value, ref['keypoints_2d'], rtol=1e-5)
  # The hips midpoint is the origin of both sets: a global shift is free.
  shifted = pred['joints'] + np.float32([3.0, -1.0, 10.0])
  a = losses.keypoint_3d_loss(pred['joints'], target['pose_3d'],
                              target['has_pose_3d'])[0]
  b = losses.keypoint_3d_loss(shifted, target['pose_3d'],
                              target['has_pose_3d'])[0]
  np.testing.assert_allclose(a, b, rtol=1e-4)
  # Predicted (B,24,3) GT joints work as well as the (B,49,3) output.
  c = losses.keypoint_3d_loss(pred['joints'][:, 25:], target['pose_3d'],
                              target['has_pose_3d'])[0]
  np.testing.assert_allclose(a, c, rtol=1e-6)


def test_pose_target_as_rotmats_and_camera_values():
  pred, target = _batch(seed=4)
  rot = Rotation.from_rotvec(target['pose'].reshape(-1, 3)).as_matrix()
  from_aa = losses.smpl_losses(pred['rotmat'], pred['betas'], target['pose'],
                               target['betas'], target['valid_fit'])
  from_rot = losses.smpl_losses(pred['rotmat'], pred['betas'],
                                np.float32(rot.reshape(B, 24, 3, 3)),
                                target['betas'], target['valid_fit'])
  np.testing.assert_allclose(from_aa[0][0], from_rot[0][0], rtol=1e-5)
  value, ps = losses.camera_loss(jnp.asarray([[0.0, 0, 0], [0.1, 0, 0]]))
  np.testing.assert_allclose(ps, [1.0, np.exp(-2.0)], rtol=1e-6)
  np.testing.assert_allclose(value, (1 + np.exp(-2.0)) / 2, rtol=1e-6)


def test_clip_betas_and_supervision_targets():
  betas = jnp.asarray([[0.5] * 10, [0.1] * 9 + [-3.5], [3.0] * 10])
  np.testing.assert_array_equal(losses.clip_betas(betas),
                                [[0.5] * 10, [0.0] * 10, [3.0] * 10])
  fit_pose, gt_pose = jnp.ones((3, 72)), jnp.full((3, 72), 2.0)
  gt_betas = jnp.full((3, 10), 7.0)  # GT is never clipped
  pose, b, valid = losses.supervision_targets(
      fit_pose, betas, jnp.asarray([50.0, 150.0, 100.0]), gt_pose, gt_betas,
      jnp.asarray([0.0, 1.0, 0.0]))
  np.testing.assert_array_equal(valid, [True, True, False])  # strict < 100
  np.testing.assert_array_equal(pose[:, 0], [1.0, 2.0, 1.0])
  np.testing.assert_array_equal(b[:, 0], [0.5, 7.0, 3.0])


def test_gradients_finite_without_participants_and_bad_inputs():
  pred, target = _batch(has_pose_3d=(0,) * 4, valid=(0,) * 4)
  grads = jax.jit(jax.grad(lambda p: losses.spin_losses(p, target)[0]))(pred)
  for name, g in grads.items():
    assert np.all(np.isfinite(g)), name
  np.testing.assert_array_equal(grads['rotmat'], 0.0)  # no valid fit
  with pytest.raises(ValueError, match=r"unknown keys \['keypoint'\]"):
    losses.spin_losses(pred, target, dict(keypoint=1.0))
  with pytest.raises(KeyError, match='valid_fit'):
    losses.spin_losses(pred, {k: v for k, v in target.items()
                              if k != 'valid_fit'})
  no_vertices = {k: v for k, v in pred.items() if k != 'vertices'}
  with pytest.raises(KeyError, match='vertices'):
    losses.spin_losses(no_vertices, target, dict(vertices=1.0))
