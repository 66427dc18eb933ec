"""Camera: projection by hand, weak-perspective depth, least-squares camera."""
import jax.numpy as jnp
import numpy as np
import pytest

from spin_jax import camera


def test_perspective_projection_by_hand():
  pts = jnp.array([[[0.1, -0.2, 1.0], [0.0, 0.0, 3.0]]])  # (1, 2, 3)
  t = jnp.array([[0.0, 0.0, 1.0]])
  out = camera.perspective_projection(pts, t, 100.0, jnp.array([10.0, 20.0]))
  # u = f x / z + cx: 100 * 0.1 / 2 + 10 = 15; v = 100 * -0.2 / 2 + 20 = 10.
  np.testing.assert_allclose(out[0], [[15.0, 10.0], [10.0, 20.0]], rtol=1e-6)
  rot = jnp.array([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
  out = camera.perspective_projection(pts, t, jnp.array([[100.0, 50.0]]),
                                      jnp.zeros((1, 2)), rotation=rot)
  # R (0.1, -0.2, 1) = (0.2, 0.1, 1); z = 2.
  np.testing.assert_allclose(out[0, 0], [10.0, 2.5], rtol=1e-6)


def test_weak_perspective_to_translation():
  cam = jnp.array([[0.9, 0.1, -0.2]])
  t = camera.weak_perspective_to_translation(cam)
  np.testing.assert_allclose(t, [[0.1, -0.2, 2 * 5000 / (224 * 0.9)]], rtol=1e-5)


def _scene(rng, b=4, n=49):
  joints = rng.normal(0, 0.4, (b, n, 3)).astype(np.float32)
  t = np.stack([rng.uniform(-0.3, 0.3, b), rng.uniform(-0.3, 0.3, b),
                rng.uniform(30, 60, b)], -1).astype(np.float32)
  px = np.asarray(camera.perspective_projection(
      jnp.asarray(joints), jnp.asarray(t), 5000.0, jnp.array([112.0, 112.0])))
  return joints, t, px


def test_estimate_translation_recovers_camera_exactly():
  rng = np.random.default_rng(0)
  joints, t, px = _scene(rng)
  conf = rng.uniform(0.2, 1.0, px.shape[:2]).astype(np.float32)
  kp = np.concatenate([px, conf[..., None]], -1)
  # Undamped: the exact solution of a consistent system.
  est = camera.estimate_translation(jnp.asarray(joints), jnp.asarray(kp), damping=0.0)
  np.testing.assert_allclose(est, t, rtol=2e-4, atol=2e-4)
  # Default damping biases a well-posed problem negligibly.
  est = camera.estimate_translation(jnp.asarray(joints), jnp.asarray(kp))
  np.testing.assert_allclose(est, t, rtol=2e-3, atol=2e-3)


def test_estimate_translation_uses_gt_joints_of_49():
  rng = np.random.default_rng(1)
  joints, t, px = _scene(rng)
  kp = np.concatenate([px, np.ones(px.shape[:2] + (1,), np.float32)], -1)
  kp[:, :25, :2] += 300.0  # OpenPose joints wrong: must be ignored by default
  est = camera.estimate_translation(jnp.asarray(joints), jnp.asarray(kp), damping=0.0)
  np.testing.assert_allclose(est, t, rtol=2e-4, atol=2e-4)


def test_estimate_translation_damping_few_joints():
  rng = np.random.default_rng(2)
  joints, t, px = _scene(rng, b=3, n=10)
  conf = np.zeros(px.shape[:2], np.float32)
  conf[1, 0] = 1.0  # one visible joint
  conf[2, :2] = 1.0  # two visible joints
  kp = jnp.asarray(np.concatenate([px, conf[..., None]], -1))
  prior = jnp.asarray([0.0, 0.0, 45.0])
  est = np.asarray(camera.estimate_translation(jnp.asarray(joints), kp,
                                               prior_translation=prior))
  assert np.all(np.isfinite(est))
  np.testing.assert_allclose(est[0], prior, atol=1e-4)  # nothing visible
  # One joint: the fit reprojects it exactly; the depth stays near the prior.
  proj = camera.perspective_projection(jnp.asarray(joints[1:2, :1]),
                                       jnp.asarray(est[1:2]), 5000.0,
                                       jnp.array([112.0, 112.0]))
  np.testing.assert_allclose(proj[0, 0], px[1, 0], atol=0.05)
  assert abs(est[1, 2] - 45.0) < 0.05 * 45.0  # near the prior depth
  # Undamped, the same systems are singular.
  bad = camera.estimate_translation(jnp.asarray(joints), kp, damping=0.0)
  assert not np.all(np.isfinite(np.asarray(bad)[0]))


def test_estimate_translation_bad_shape():
  with pytest.raises(ValueError, match='keypoints_2d'):
    camera.estimate_translation(jnp.zeros((1, 5, 3)), jnp.zeros((1, 4, 3)))
