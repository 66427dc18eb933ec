r"""Builds spin_jax/assets/mean_params_default.npz (SPIN's smpl_mean_params layout).

SPIN starts its regressor from smpl_mean_params.npz: the mean training pose as
24 rotations in SPIN's 6D layout (pose, 144), mean betas (shape, 10) and a
weak-perspective camera (cam, 3). That file comes with SPIN's licensed data,
so we ship a default made from free ingredients:

- global orientation: 180 degrees about x. SMPL bodies stand along +y; the
  crop camera is OpenCV (y down), so this turns the body upright in the image,
  facing the camera, as SPIN's mean pose does.
- body pose (23 joints): the mixture-weighted mean of the pose prior's
  component means (axis-angle, sum_k w_k mu_k), a relaxed natural pose; zeros
  (T-pose) with --pose_prior=none.
- betas: zeros (the body model's mean shape).
- cam: (s, tx, ty) = (0.9, 0, 0), SPIN's value: the body fills ~90% of the crop.

The regressor learns residuals on top of these, so they matter only as a
starting point when training from scratch (a converted SPIN checkpoint brings
its own mean parameters).

  python data_prep/make_mean_params.py \
      [--pose_prior spin_jax/assets/pose_prior_gmm08.npz | gmm_08.pkl | none] \
      [--out spin_jax/assets/mean_params_default.npz]
"""
from __future__ import annotations

import os
import tempfile

from absl import flags
import numpy as np

from spin_jax import cli
from spin_jax import priors

_ASSETS = os.path.join(os.path.dirname(__file__), '..', 'spin_jax', 'assets')
FLAGS = flags.FLAGS


def define_flags():
  # Defined only when run as a script, so tests can import the functions.
  flags.DEFINE_string(
      'pose_prior', os.path.join(_ASSETS, 'pose_prior_gmm08.npz'),
      'GMM pose prior (npz with means (K,69) and weights (K,), or SMPLify\'s '
      'gmm_08.pkl) whose weighted mean is the body pose; "none" for zeros.')
  flags.DEFINE_string(
      'out', os.path.join(_ASSETS, 'mean_params_default.npz'), 'Output npz.')


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
  """Rodrigues: (N,3) -> (N,3,3), float64."""
  aa = np.asarray(aa, np.float64)
  theta = np.linalg.norm(aa, axis=-1)[:, None, None]  # (N,1,1)
  axis = aa / np.maximum(theta[..., 0], 1e-12)
  k = np.zeros(aa.shape[:-1] + (3, 3))
  k[:, 0, 1], k[:, 0, 2] = -axis[:, 2], axis[:, 1]
  k[:, 1, 0], k[:, 1, 2] = axis[:, 2], -axis[:, 0]
  k[:, 2, 0], k[:, 2, 1] = -axis[:, 1], axis[:, 0]
  eye = np.eye(3)[None]
  return eye + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def matrix_to_rot6d(r: np.ndarray) -> np.ndarray:
  """SPIN's 6D layout: the first two columns as a 3x2 row-major matrix."""
  return r[..., :, :2].reshape(r.shape[:-2] + (6,))


def mean_body_pose(path: str) -> tuple[np.ndarray, str]:
  """(69,) weighted mean of the GMM means, and a description of the source."""
  if path.lower() == 'none':
    return np.zeros(69), 'zero body pose (T-pose)'
  if not os.path.exists(path):
    raise FileNotFoundError(f'--pose_prior: {path} does not exist (pass '
                            '"none" for a zero body pose).')
  data = priors.read_gmm_file(path)  # pickles as data only (safe_pickle)
  for key in ('means', 'weights'):
    if key not in data:
      raise KeyError(f'--pose_prior {path}: missing key {key!r}.')
  means = np.asarray(data['means'], np.float64)
  weights = np.asarray(data['weights'], np.float64).reshape(-1)
  if means.ndim != 2 or means.shape[1] != 69 or len(weights) != len(means):
    raise ValueError(f'--pose_prior {path}: expected means (K,69) and '
                     f'weights (K,), got {means.shape} and {weights.shape}.')
  pose = weights @ means / weights.sum()
  return pose, f'weighted mean of the GMM means in {os.path.basename(path)}'


def make_mean_params(body_pose: np.ndarray) -> dict[str, np.ndarray]:
  global_orient = np.array([np.pi, 0.0, 0.0])
  aa = np.concatenate([global_orient, body_pose]).reshape(24, 3)
  pose6d = matrix_to_rot6d(axis_angle_to_matrix(aa)).reshape(144)
  return dict(pose=pose6d.astype(np.float32),
              shape=np.zeros(10, np.float32),
              cam=np.array([0.9, 0.0, 0.0], np.float32))


def main(argv):
  del argv
  body_pose, source = mean_body_pose(FLAGS.pose_prior)
  params = make_mean_params(body_pose)
  params['source'] = np.array(
      'spin_jax data_prep/make_mean_params.py: global orientation pi about x '
      f'(upright in the y-down camera), body pose = {source}, betas 0, '
      'cam (0.9, 0, 0)')
  out = os.path.abspath(FLAGS.out)
  fd, tmp = tempfile.mkstemp(suffix='.npz', dir=os.path.dirname(out))
  os.close(fd)
  try:
    np.savez(tmp, **params)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  print(f'wrote {out}: {params["source"]}')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
