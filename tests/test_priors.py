"""Priors against direct scipy/numpy evaluation and hand-computed values."""
import io
import pickle
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from spin_jax import priors


def _random_gmm(rng, k=3, d=69):
  means = rng.normal(0, 0.3, (k, d))
  a = rng.normal(0, 0.15, (k, d, d))
  covars = a @ a.transpose(0, 2, 1) / d + 0.02 * np.eye(d)
  weights = rng.dirichlet(np.ones(k))
  return means, covars, weights


def _reference_gmm(means, covars, weights, pose):
  """SMPLify-X max-mixture value, directly from scipy's Gaussian log-density."""
  logdets = np.linalg.slogdet(covars)[1]
  vals = [-stats.multivariate_normal(means[k], covars[k]).logpdf(pose)
          - np.log(weights[k]) - 0.5 * logdets.min() for k in range(len(weights))]
  return np.min(np.stack(vals, -1), -1)


class _Py2Pickler(pickle._Pickler):
  """Writes what python 2 wrote: str as byte strings, numpy.core globals."""

  def save_bytes(self, obj):
    n = len(obj)
    if n < 256:
      self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
    else:
      self.write(pickle.BINSTRING + struct.pack('<i', n) + obj)
    self.memoize(obj)

  def save_str(self, obj):
    self.save_bytes(obj.encode('latin1'))

  def save_global(self, obj, name=None):
    module = obj.__module__.replace('numpy._core', 'numpy.core')
    self.write(pickle.GLOBAL + f'{module}\n{name or obj.__qualname__}\n'.encode())
    self.memoize(obj)

  dispatch = dict(pickle._Pickler.dispatch)
  dispatch[bytes] = save_bytes
  dispatch[str] = save_str


def _write_py2_pickle(path, obj):
  buf = io.BytesIO()
  _Py2Pickler(buf, protocol=2).dump(obj)
  path.write_bytes(buf.getvalue())


def test_gmm_prior_matches_scipy():
  rng = np.random.default_rng(0)
  means, covars, weights = _random_gmm(rng)
  prior = priors.gmm_prior_from_arrays(means, covars, weights)
  # Poses near each mean, so different components win.
  pose = means[rng.integers(0, 3, 6)] + rng.normal(0, 0.1, (6, 69))
  got = np.asarray(priors.gmm_prior(prior, jnp.asarray(pose, jnp.float32)))
  want = _reference_gmm(means, covars, weights, pose)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert float(np.min(prior.offsets)) >= 0.0


def test_gmm_residuals_sum_of_squares_is_value():
  rng = np.random.default_rng(1)
  prior = priors.gmm_prior_from_arrays(*_random_gmm(rng, k=4))
  pose = jnp.asarray(rng.normal(0, 0.3, (5, 69)), jnp.float32)
  r = priors.gmm_residuals(prior, pose)
  assert r.shape == (5, 70)
  np.testing.assert_allclose(jnp.sum(r**2, -1), priors.gmm_prior(prior, pose),
                             rtol=1e-5)
  g1 = jax.grad(lambda p: jnp.sum(priors.gmm_prior(prior, p)))(pose)
  g2 = jax.grad(lambda p: jnp.sum(priors.gmm_residuals(prior, p)**2))(pose)
  np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-4)


def test_load_gmm_prior_python2_pickle_and_npz(tmp_path):
  rng = np.random.default_rng(2)
  means, covars, weights = _random_gmm(rng, k=8)
  pkl = tmp_path / 'gmm_08.pkl'
  _write_py2_pickle(pkl, {'means': means, 'covars': covars, 'weights': weights})
  npz = tmp_path / 'prior.npz'
  np.savez(npz, means=means.astype(np.float32), covars=covars.astype(np.float32),
           weights=weights.astype(np.float32))
  pose = jnp.asarray(rng.normal(0, 0.3, (3, 69)), jnp.float32)
  want = _reference_gmm(means, covars, weights, np.asarray(pose, np.float64))
  for path in (pkl, npz):
    prior = priors.load_gmm_prior(path)
    assert prior.means.shape == (8, 69) and prior.whitening.shape == (8, 69, 69)
    np.testing.assert_allclose(priors.gmm_prior(prior, pose), want, rtol=1e-4)


def test_load_gmm_prior_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.pkl'):
    priors.load_gmm_prior(tmp_path / 'nope.pkl')
  bad = tmp_path / 'bad.npz'
  np.savez(bad, means=np.zeros((2, 69)), weights=np.ones(2))
  with pytest.raises(KeyError, match="covars"):
    priors.load_gmm_prior(bad)
  np.savez(bad, means=np.zeros((2, 69)), covars=np.zeros((2, 3, 3)), weights=np.ones(2))
  with pytest.raises(ValueError, match='covars'):
    priors.load_gmm_prior(bad)
  lst = tmp_path / 'list.pkl'
  lst.write_bytes(pickle.dumps([1, 2]))
  with pytest.raises(ValueError, match='dict'):
    priors.load_gmm_prior(lst)


def test_default_pose_prior():
  if not priors.DEFAULT_PRIOR_PATH.is_file():
    pytest.skip('default prior asset not built yet')
  prior = priors.default_pose_prior()
  assert prior.means.shape == (8, 69)
  assert np.all(np.isfinite(np.asarray(priors.gmm_prior(prior, jnp.zeros((1, 69))))))


def test_angle_shape_gmof_by_hand():
  pose = np.zeros((1, 69), np.float32)
  pose[0, 52] = 0.5  # elbow, sign +1
  pose[0, 9] = -1.0  # knee, sign -1
  got = float(priors.angle_prior(jnp.asarray(pose))[0])
  np.testing.assert_allclose(got, np.e + 1.0 + np.e**2 + 1.0, rtol=1e-6)
  np.testing.assert_allclose(priors.shape_prior(jnp.array([[1.0, -2.0, 0.5]])),
                             [5.25], rtol=1e-6)
  x = jnp.array([0.0, 100.0, -3.0])
  np.testing.assert_allclose(priors.gmof(x, 100.0),
                             [0.0, 5000.0, 1e4 * 9 / (1e4 + 9)], rtol=1e-6)
  np.testing.assert_allclose(priors.gmof_residual(x, 100.0)**2,
                             priors.gmof(x, 100.0), rtol=1e-6)
