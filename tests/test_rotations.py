"""Rotation conversions against scipy's Rotation and known identities."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from spin_jax import constants
from spin_jax import rotations


def _random_aa(n, seed=0, max_angle=np.pi):
  rng = np.random.default_rng(seed)
  axis = rng.normal(size=(n, 3))
  axis /= np.linalg.norm(axis, axis=1, keepdims=True)
  return axis * rng.uniform(0, max_angle, (n, 1))


def _special_aa():
  """Identity, tiny angles and angles at / near pi about several axes."""
  axes = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [1, -2, 0.5]])
  axes = axes / np.linalg.norm(axes, axis=1, keepdims=True)
  angles = [0.0, 1e-9, 1e-5, 1e-3, np.pi - 1e-3, np.pi - 1e-6, np.pi]
  return np.concatenate([axes * a for a in angles])


def test_axis_angle_to_matrix_matches_scipy_float64():
  with jax.enable_x64(True):
    aa = np.concatenate([_random_aa(200), _special_aa()])
    ours = np.asarray(rotations.axis_angle_to_matrix(jnp.asarray(aa)))
    ref = Rotation.from_rotvec(aa).as_matrix()
    np.testing.assert_allclose(ours, ref, atol=1e-14)


def test_quaternions_match_scipy():
  with jax.enable_x64(True):
    aa = np.concatenate([_random_aa(200, 1), _special_aa()])
    q = np.asarray(rotations.axis_angle_to_quaternion(jnp.asarray(aa)))
    ref = Rotation.from_rotvec(aa).as_quat()  # x, y, z, w
    np.testing.assert_allclose(q, ref[:, [3, 0, 1, 2]], atol=1e-14)
    mats = Rotation.from_rotvec(aa).as_matrix()
    np.testing.assert_allclose(
        np.asarray(rotations.quaternion_to_matrix(jnp.asarray(q))), mats,
        atol=1e-14)
    # matrix -> quaternion, up to the sign of the quaternion.
    q2 = np.asarray(rotations.matrix_to_quaternion(jnp.asarray(mats)))
    sign = np.sign(np.sum(q2 * q, axis=1, keepdims=True))
    np.testing.assert_allclose(q2 * sign, q, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(q2, axis=1), 1.0, atol=1e-14)


def _same_rotation_aa(a, b, atol):
  """Axis-angles equal, allowing the (v, -v) ambiguity at exactly pi."""
  np.testing.assert_allclose(Rotation.from_rotvec(a).as_matrix(),
                             Rotation.from_rotvec(b).as_matrix(), atol=atol)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1),
                             np.linalg.norm(b, axis=-1), atol=atol)


@pytest.mark.parametrize('x64', [False, True])
def test_matrix_axis_angle_round_trip(x64):
  with jax.enable_x64(x64):
    dtype = np.float64 if x64 else np.float32
    aa = np.concatenate([_random_aa(300, 2), _special_aa()]).astype(dtype)
    mats = jax.jit(rotations.axis_angle_to_matrix)(jnp.asarray(aa))
    back = np.asarray(jax.jit(rotations.matrix_to_axis_angle)(mats))
    assert back.dtype == dtype
    atol = 1e-11 if x64 else 2e-3  # float32 near pi: angle ~ sqrt(eps)
    far = np.linalg.norm(aa, axis=1) < np.pi - 1e-2
    np.testing.assert_allclose(back[far], aa[far], atol=1e-12 if x64 else 1e-5)
    _same_rotation_aa(back.astype(np.float64), aa.astype(np.float64), atol)
    # Matches scipy's matrix -> rotvec.
    ref = Rotation.from_matrix(np.asarray(mats, np.float64)).as_rotvec()
    _same_rotation_aa(back.astype(np.float64), ref, atol)


def test_quaternion_to_axis_angle_small_and_unnormalised():
  with jax.enable_x64(True):
    aa = np.array([[0.0, 0.0, 0.0], [1e-12, -2e-12, 0.0], [3e-4, 0.0, 1e-4]])
    q = rotations.axis_angle_to_quaternion(jnp.asarray(aa))
    np.testing.assert_allclose(
        np.asarray(rotations.quaternion_to_axis_angle(3.0 * q)), aa,
        atol=1e-18, rtol=1e-12)
    # -q is the same rotation.
    np.testing.assert_allclose(
        np.asarray(rotations.quaternion_to_axis_angle(-q)), aa, atol=1e-18,
        rtol=1e-12)


def _grads_at(fn, points):
  jac = jax.jit(jax.vmap(jax.jacfwd(fn)))(points)
  jac_rev = jax.jit(jax.vmap(jax.jacrev(fn)))(points)
  return np.asarray(jac), np.asarray(jac_rev)


def test_gradients_finite_at_zero_and_near_pi():
  pts = jnp.asarray(np.concatenate(
      [np.zeros((1, 3)), _special_aa(), _random_aa(10, 3)]), jnp.float32)

  def all_maps(a):  # every conversion in one function: one compile
    rot = rotations.axis_angle_to_matrix(a)
    return jnp.concatenate([
        rot.reshape(-1), rotations.axis_angle_to_quaternion(a),
        rotations.matrix_to_axis_angle(rot),
        rotations.quaternion_to_axis_angle(rotations.matrix_to_quaternion(rot))])

  for jac in _grads_at(all_maps, pts):
    assert np.all(np.isfinite(jac))


def test_gradient_values_at_identity():
  # d R / d aa at 0 is the skew generator; d aa(R(aa)) / d aa at 0 is I.
  jac = np.asarray(jax.jit(jax.jacfwd(rotations.axis_angle_to_matrix))(jnp.zeros(3)))
  for k in range(3):
    e = np.zeros(3)
    e[k] = 1.0
    np.testing.assert_allclose(jac[..., k], np.asarray(rotations.skew(e)),
                               atol=1e-7)
  rt = jax.jit(jax.jacrev(lambda a: rotations.matrix_to_axis_angle(
      rotations.axis_angle_to_matrix(a))))
  np.testing.assert_allclose(np.asarray(rt(jnp.zeros(3))),
                             np.eye(3), atol=1e-6)
  # Near (not at) pi the round trip is still the identity map.
  a = jnp.asarray([0.3, -0.5, 0.8])
  a = a / jnp.linalg.norm(a) * (np.pi - 1e-2)
  np.testing.assert_allclose(np.asarray(rt(a)), np.eye(3),
                             atol=2e-3)


def test_rot6d_layout_and_round_trip():
  # SPIN: the 6 numbers are a row-major 3x2 matrix; columns are b1 and b2.
  x = jnp.asarray([1.0, 0.0, 0.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(np.asarray(rotations.rot6d_to_matrix(x)),
                             np.eye(3), atol=1e-7)
  x = jnp.asarray([2.0, 0.0, 0.0, 0.0, 0.0, 3.0])  # col1 = (2,0,0), col2 = (0,0,3)
  np.testing.assert_allclose(np.asarray(rotations.rot6d_to_matrix(x)),
                             [[1, 0, 0], [0, 0, -1], [0, 1, 0]], atol=1e-7)
  mats = Rotation.from_rotvec(_random_aa(50, 4)).as_matrix().astype(np.float32)
  six = rotations.matrix_to_rot6d(jnp.asarray(mats))
  assert six.shape == (50, 6)
  np.testing.assert_allclose(np.asarray(six)[:, [0, 2, 4]], mats[:, :, 0])
  np.testing.assert_allclose(np.asarray(rotations.rot6d_to_matrix(six)), mats,
                             atol=1e-6)
  # Any non-degenerate input gives a proper rotation.
  rnd = np.random.default_rng(5).normal(size=(20, 6)).astype(np.float32)
  r = np.asarray(rotations.rot6d_to_matrix(jnp.asarray(rnd)))
  np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.broadcast_to(
      np.eye(3), r.shape), atol=1e-5)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)


def test_flip_pose_is_mirror():
  aa = _random_aa(24, 6).reshape(1, 72)
  flipped = np.asarray(rotations.flip_pose(jnp.asarray(aa, jnp.float32)))
  # Left/right swap and the mirror M R M (M = diag(-1,1,1)) of each rotation.
  mirror = np.diag([-1.0, 1.0, 1.0])
  for i, src in enumerate(constants.SMPL_JOINTS_FLIP_PERM):
    want = mirror @ Rotation.from_rotvec(aa[0, 3 * src:3 * src + 3]).as_matrix() @ mirror
    got = Rotation.from_rotvec(flipped[0, 3 * i:3 * i + 3]).as_matrix()
    np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(
      np.asarray(rotations.flip_pose(rotations.flip_pose(jnp.asarray(aa)))), aa,
      atol=1e-7)
  with pytest.raises(ValueError, match='72'):
    rotations.flip_pose(jnp.zeros((2, 69)))


def test_rot_z_and_rotate_global_orient():
  angles = np.array([0.0, 0.3, -1.2, np.pi / 2])
  want = Rotation.from_euler('z', angles[:, None]).as_matrix()
  np.testing.assert_allclose(np.asarray(rotations.rot_z(jnp.asarray(angles))),
                             want, atol=1e-6)
  go = _random_aa(4, 7)
  got = np.asarray(jax.jit(rotations.rotate_global_orient)(jnp.asarray(go, jnp.float32),
                                                  jnp.asarray(angles)))
  ref = (Rotation.from_euler('z', angles[:, None]) * Rotation.from_rotvec(go)).as_matrix()
  np.testing.assert_allclose(Rotation.from_rotvec(got).as_matrix(), ref,
                             atol=1e-5)
