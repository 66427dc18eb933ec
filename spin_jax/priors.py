"""SMPLify's priors: max-mixture GMM pose prior, elbow/knee angle prior, shape
prior, and the Geman-McClure robustifier (GMoF).

Every prior has a value form, (B,) per sample, and a residual form whose sum of
squares equals the value exactly, so the same objective can be minimised by
first-order (Adam) or least-squares (Levenberg-Marquardt) solvers.
"""
from __future__ import annotations

import os
from pathlib import Path

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from spin_jax import constants
from spin_jax import safe_pickle

DEFAULT_PRIOR_PATH = Path(__file__).parent / 'assets' / 'pose_prior_gmm08.npz'
_GMM_KEYS = ('means', 'covars', 'weights')


@flax.struct.dataclass
class GaussianMixturePrior:
  """Max-mixture Gaussian prior on the 69-D body pose (SMPLify-X form).

  value(theta) = min_k [0.5 |W_k (theta - mu_k)|^2 + c_k] with
  W_k^T W_k = Sigma_k^-1 (W_k = inverse Cholesky factor of Sigma_k) and
  c_k = -log w_k + (D/2) log(2 pi) + 0.5 log det Sigma_k - 0.5 min_j log det Sigma_j.
  """
  means: jax.Array  # (K, D)
  whitening: jax.Array  # (K, D, D) lower triangular, W_k = chol(Sigma_k)^-1
  offsets: jax.Array  # (K,) c_k, >= 0 for SMPLify's gmm_08
  weights: jax.Array  # (K,) mixture weights (for reference)

  @property
  def num_components(self) -> int:
    return self.means.shape[0]

  @property
  def dim(self) -> int:
    return self.means.shape[1]


def gmm_prior_from_arrays(means, covars, weights, dtype=jnp.float32,
                          source: str = 'arrays') -> GaussianMixturePrior:
  """Builds the prior from GMM parameters (computed in float64 numpy)."""
  means = np.asarray(means, np.float64)
  covars = np.asarray(covars, np.float64)
  weights = np.asarray(weights, np.float64).reshape(-1)
  if means.ndim != 2:
    raise ValueError(f'{source}: key "means" must be (K, D); got {means.shape}.')
  k, d = means.shape
  if covars.shape != (k, d, d):
    raise ValueError(f'{source}: key "covars" must be ({k}, {d}, {d}) to match '
                     f'"means" {means.shape}; got {covars.shape}.')
  if weights.shape != (k,):
    raise ValueError(f'{source}: key "weights" must be ({k},); got {weights.shape}.')
  if not (np.all(np.isfinite(means)) and np.all(np.isfinite(covars))
          and np.all(weights > 0)):
    raise ValueError(f'{source}: GMM has non-finite means/covars or weights <= 0.')
  try:
    chol = np.linalg.cholesky(covars)  # (K, D, D), Sigma = L L^T
  except np.linalg.LinAlgError as e:
    raise ValueError(f'{source}: key "covars" is not positive definite.') from e
  eye = np.broadcast_to(np.eye(d), (k, d, d))
  whitening = np.linalg.solve(chol, eye)  # L^-1: |L^-1 x|^2 = x^T Sigma^-1 x
  logdet = 2.0 * np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(-1)  # (K,)
  consts = (-np.log(weights) + 0.5 * d * np.log(2 * np.pi)
            + 0.5 * logdet - 0.5 * logdet.min())
  return GaussianMixturePrior(
      means=jnp.asarray(means, dtype), whitening=jnp.asarray(whitening, dtype),
      offsets=jnp.asarray(consts, dtype), weights=jnp.asarray(weights, dtype))


def read_gmm_file(path) -> dict:
  """The arrays of SMPLify's gmm_08.pkl (python-2 pickle, read through
  spin_jax.safe_pickle: data only) or of our .npz of the same keys."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f'GMM pose prior not found: {path} (expected '
                            "SMPLify's gmm_08.pkl or a .npz with means/covars/weights).")
  if path.endswith('.npz'):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  if not path.endswith('.pkl'):
    raise ValueError(f'{path}: unknown GMM prior format (expected .pkl or .npz).')
  try:
    data = safe_pickle.load(path, 'a GMM prior')
  except safe_pickle.UnsafePickleError:
    raise  # one line naming the file and the refused global
  except Exception as e:  # pickle raises many types on foreign files
    raise ValueError(f'{path}: not a readable GMM pickle ({e}).') from e
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a pickled dict with keys {_GMM_KEYS}, '
                     f'got {type(data).__name__}.')
  return data


def load_gmm_prior(path, dtype=jnp.float32) -> GaussianMixturePrior:
  """Loads SMPLify's gmm_08.pkl (python-2 pickle) or our .npz of the same keys.

  Both hold 'means' (K, 69), 'covars' (K, 69, 69) and 'weights' (K,).
  """
  path = os.fspath(path)
  data = read_gmm_file(path)
  missing = [k for k in _GMM_KEYS if k not in data]
  if missing:
    raise KeyError(f'{path}: GMM prior lacks key(s) {missing}; has {sorted(data)}.')
  return gmm_prior_from_arrays(data['means'], data['covars'], data['weights'],
                               dtype=dtype, source=path)


def default_pose_prior(dtype=jnp.float32) -> GaussianMixturePrior:
  """The embedded 8-component pose prior (spin_jax/assets/pose_prior_gmm08.npz)."""
  if not DEFAULT_PRIOR_PATH.is_file():
    raise FileNotFoundError(
        f'Default pose prior {DEFAULT_PRIOR_PATH} is missing: build the package '
        'assets, or pass load_gmm_prior(".../gmm_08.pkl") from SMPLify.')
  return load_gmm_prior(DEFAULT_PRIOR_PATH, dtype=dtype)


def _gmm_parts(prior: GaussianMixturePrior, body_pose):
  """Per-component whitened residuals (B, K, D) and values (B, K)."""
  diff = body_pose[:, None, :] - prior.means  # (B, K, D)
  white = jnp.einsum('kij,bkj->bki', prior.whitening, diff)  # (B, K, D)
  values = 0.5 * jnp.sum(white**2, -1) + prior.offsets  # (B, K)
  return white, values


def gmm_prior(prior: GaussianMixturePrior, body_pose):
  """GMM pose prior value (B,) of body_pose (B, 69) (not weighted)."""
  return jnp.min(_gmm_parts(prior, body_pose)[1], axis=-1)


def gmm_residuals(prior: GaussianMixturePrior, body_pose):
  """(B, D + 1) residuals r with sum(r^2) == gmm_prior(...).

  The winning component's whitened residual times sqrt(0.5), and sqrt(c_k) of
  its constant (a residual with zero Jacobian, so least-squares solvers see the
  true objective value, including when the winner switches).
  """
  return gmm_residuals_and_component(prior, body_pose)[0]


def gmm_residuals_and_component(prior: GaussianMixturePrior, body_pose):
  """`gmm_residuals` (B, D + 1) and the winning component k (B,) int.

  The residuals' Jacobian is sqrt(0.5) whitening[k] (constant row 0).
  """
  white, values = _gmm_parts(prior, body_pose)
  k = jnp.argmin(values, axis=-1)  # (B,)
  r = jnp.take_along_axis(white, k[:, None, None], axis=1)[:, 0]  # (B, D)
  c = jnp.take_along_axis(prior.offsets[None, :], k[:, None], 1)  # (B, 1)
  c = jax.lax.stop_gradient(jnp.sqrt(jnp.maximum(c, 0.0)))
  return jnp.concatenate([jnp.sqrt(0.5) * r, c], axis=-1), k


def angle_prior_residuals(body_pose):
  """(B, 4) exp(sign * theta) of the elbow and knee bending angles."""
  ids = jnp.asarray(constants.ANGLE_PRIOR_POSE_IDS)
  signs = jnp.asarray(constants.ANGLE_PRIOR_SIGNS, body_pose.dtype)
  return jnp.exp(body_pose[:, ids] * signs)


def angle_prior(body_pose):
  """(B,) SMPLify's elbow/knee prior: sum_k exp(sign_k theta_k)^2."""
  return jnp.sum(angle_prior_residuals(body_pose)**2, -1)


def shape_prior(betas):
  """(B,) |betas|^2."""
  return jnp.sum(betas**2, -1)


def gmof(x, sigma):
  """Geman-McClure robustifier sigma^2 x^2 / (sigma^2 + x^2), elementwise."""
  x2 = x**2
  return sigma**2 * x2 / (sigma**2 + x2)


def gmof_residual(x, sigma):
  """Signed sqrt of gmof: sigma x / sqrt(sigma^2 + x^2) (smooth at 0)."""
  return sigma * x / jnp.sqrt(sigma**2 + x**2)
