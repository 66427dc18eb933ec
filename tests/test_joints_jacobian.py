"""The closed-form joints Jacobian against forward-mode autodiff (float64)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import body_fixtures
from spin_jax import joints_jacobian
from spin_jax import smpl
from spin_jax import smpl_io


def _f64(model):
  return jax.tree.map(
      lambda x: jnp.asarray(x, jnp.float64)
      if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, model)


@pytest.mark.parametrize('which', ['random_with_correctives', 'default_low'])
def test_matches_autodiff(which):
  with jax.enable_x64(True):
    if which == 'default_low':
      model = _f64(smpl_io.default_body_model('low', dtype=np.float64))
      assert not model.has_pose_correctives
    else:
      model = _f64(body_fixtures.random_body_model(num_vertices=300))
      assert model.has_pose_correctives
    rng = np.random.default_rng(0)
    b = 3
    betas = jnp.asarray(rng.normal(0, 1, (b, 10)))
    pose = jnp.asarray(rng.normal(0, 0.5, (b, 69)))
    pose = pose.at[0, :9].set(0.0)  # the identity's series branch
    go = jnp.asarray(rng.normal(0, 1.0, (b, 3))).at[1].set(0.0)
    got = jax.jit(joints_jacobian.joints_with_jacobian)(model, betas, pose, go)

    def joints(x):  # (3 + 69 + 10,) -> (49, 3)
      return smpl.joints_forward(model, x[None, 72:], x[None, 3:72], x[None, :3])[0]

    want = jax.vmap(jax.jacfwd(joints))(jnp.concatenate([go, pose, betas], 1))
    np.testing.assert_allclose(got.joints, smpl.joints_forward(model, betas, pose, go),
                               atol=1e-12)
    assert float(jnp.abs(want[..., :72]).max()) > 0.3  # a non-trivial Jacobian
    np.testing.assert_allclose(got.d_pose, want[..., :72], atol=1e-10)
    np.testing.assert_allclose(got.d_betas, want[..., 72:], atol=1e-10)


def test_rejects_matrix_pose():
  model = body_fixtures.random_body_model(num_vertices=100)
  with pytest.raises(ValueError, match='body_pose must be'):
    joints_jacobian.joints_with_jacobian(model, jnp.zeros((1, 10)),
                                         jnp.zeros((1, 23, 3, 3)), jnp.zeros((1, 3)))
