r"""Fits spin_jax's default pose prior: an 8-component GMM over the 69-D body pose.

No freely redistributable human motion-capture data set is reachable from this
project's package registries (the `anny` package ships only rest/T-poses and one
keyframed walk cycle; AMASS, the data SMPLify's gmm_08.pkl was fitted on via
CMU, is not redistributable). So the prior is fitted on a *synthetic*,
documented pose distribution: eight everyday activities (standing, walking,
running, sitting, reaching / arms raised, crouching / kneeling, bending over,
and free "athletic" poses), each an anatomical parameterisation (joint flexion,
abduction, twist in degrees, with left/right coordination such as arm swing
opposite to the legs) sampled around activity-typical values and clipped to
joint limits. The samples are converted to SMPL axis-angle (SMPL frame: y up,
the body faces +z, its left at +x; T-pose rest), and a full-covariance GMM is
fitted by EM (initialised by activity, covariances regularised by 1e-4 rad^2).

Output (same content layout as SMPLify's gmm_08.pkl; float32):
  spin_jax/assets/pose_prior_gmm08.npz: means (8,69), covars (8,69,69),
  weights (8,), plus format_version, source, licence strings.

The real gmm_08.pkl is used instead when supplied (spin_jax.priors.load_gmm_prior).

  python data_prep/fit_pose_prior.py [--out spin_jax/assets/pose_prior_gmm08.npz]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from scipy.spatial.transform import Rotation

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_body_model import save_npz_deterministic  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_COMPONENTS = 8
COV_REG = 1e-4  # rad^2 added to every covariance diagonal
ACTIVITIES = ('standing', 'walking', 'running', 'sitting', 'reaching',
              'crouching', 'bending', 'athletic')
# Share of each activity in the synthetic set.
SHARES = (0.20, 0.20, 0.08, 0.14, 0.12, 0.08, 0.08, 0.10)

# Joint limits of the anatomical parameters (degrees): (min, max).
LIMITS = dict(
    hip_flex=(-30, 130), hip_abd=(-25, 60), hip_rot=(-40, 45),
    knee_flex=(0, 150), ankle_flex=(-25, 45), ankle_inv=(-20, 25),
    spine_flex=(-30, 90), spine_lat=(-35, 35), spine_twist=(-45, 45),
    neck_flex=(-40, 50), head_turn=(-70, 70), head_tilt=(-30, 30),
    collar_elev=(-10, 30), collar_prot=(-15, 20),
    sh_elev=(-90, 90), sh_flex=(-60, 170), sh_twist=(-80, 80),
    elbow_flex=(0, 150), wrist_flex=(-60, 60), wrist_dev=(-25, 25),
    hand_flex=(-20, 40))
SIDED = ('hip_flex', 'hip_abd', 'hip_rot', 'knee_flex', 'ankle_flex',
         'ankle_inv', 'collar_elev', 'collar_prot', 'sh_elev', 'sh_flex',
         'sh_twist', 'elbow_flex', 'wrist_flex', 'wrist_dev', 'hand_flex')


class _Sampler:
  """Anatomical parameters (degrees) of n poses, sides '_l' / '_r'."""

  def __init__(self, rng, n):
    self.rng, self.n, self.p = rng, n, {}
    # A relaxed standing default with small natural variation everywhere.
    for side in ('_l', '_r'):
      self.set('hip_flex' + side, 0, 6)
      self.set('hip_abd' + side, 4, 4)
      self.set('hip_rot' + side, 5, 8)
      self.set('knee_flex' + side, 5, 5)
      self.set('ankle_flex' + side, 0, 6)
      self.set('ankle_inv' + side, 0, 5)
      self.set('collar_elev' + side, 0, 5)
      self.set('collar_prot' + side, 0, 5)
      self.set('sh_elev' + side, -65, 10)
      self.set('sh_flex' + side, 5, 12)
      self.set('sh_twist' + side, 0, 15)
      self.set('elbow_flex' + side, 15, 10)
      self.set('wrist_flex' + side, 0, 15)
      self.set('wrist_dev' + side, 0, 8)
      self.set('hand_flex' + side, 10, 10)
    self.set('spine_flex', 0, 6)
    self.set('spine_lat', 0, 4)
    self.set('spine_twist', 0, 6)
    self.set('neck_flex', 5, 10)
    self.set('head_turn', 0, 20)
    self.set('head_tilt', 0, 6)

  def set(self, name, mean, std):
    self.p[name] = mean + std * self.rng.standard_normal(self.n)

  def both(self, name, mean, std, corr=0.5):
    """Both sides, correlated (corr) around mean."""
    shared = self.rng.standard_normal(self.n)
    for side in ('_l', '_r'):
      own = self.rng.standard_normal(self.n)
      self.p[name + side] = mean + std * (
          corr * shared + np.sqrt(1 - corr ** 2) * own)

  def uniform(self, name, lo, hi):
    self.p[name] = self.rng.uniform(lo, hi, self.n)


def _gait(s, amp_hip, amp_knee, amp_arm, elbow, lean):
  phase = s.rng.uniform(0, 2 * np.pi, s.n)
  sin = np.sin(phase)
  amp = s.rng.uniform(0.7, 1.2, s.n)
  s.p['hip_flex_l'] = 5 + amp * amp_hip * sin
  s.p['hip_flex_r'] = 5 - amp * amp_hip * sin
  # The knee of the swing leg bends most.
  s.p['knee_flex_l'] = 8 + amp * amp_knee * np.clip(np.sin(phase + 1.2), 0, 1)
  s.p['knee_flex_r'] = 8 + amp * amp_knee * np.clip(np.sin(phase + 1.2 + np.pi),
                                                   0, 1)
  s.p['ankle_flex_l'] = 10 * np.sin(phase - 1.0)
  s.p['ankle_flex_r'] = -10 * np.sin(phase - 1.0)
  # Arms swing opposite to the legs.
  s.p['sh_flex_l'] = 5 - amp * amp_arm * sin
  s.p['sh_flex_r'] = 5 + amp * amp_arm * sin
  s.both('elbow_flex', elbow, 12)
  s.set('spine_flex', lean, 5)
  s.p['spine_twist'] = 6 * sin + 3 * s.rng.standard_normal(s.n)


def sample_activity(activity, rng, n):
  s = _Sampler(rng, n)
  if activity == 'standing':
    s.both('sh_elev', -68, 10)
    s.both('elbow_flex', 15, 15, 0.3)
  elif activity == 'walking':
    _gait(s, 22, 50, 20, 20, 3)
  elif activity == 'running':
    _gait(s, 40, 95, 45, 90, 12)
    s.both('sh_elev', -60, 10)
  elif activity == 'sitting':
    s.both('hip_flex', 90, 12, 0.8)
    s.both('hip_abd', 10, 8)
    s.both('knee_flex', 90, 18, 0.6)
    s.both('ankle_flex', -5, 10)
    s.set('spine_flex', 5, 12)
    s.both('sh_elev', -60, 10)
    s.both('sh_flex', 25, 15)
    s.both('elbow_flex', 60, 30, 0.4)
  elif activity == 'reaching':
    for side in ('_l', '_r'):  # each arm independently raised or not
      up = rng.random(n) < 0.65
      s.p['sh_elev' + side] = np.where(up, rng.uniform(-40, 80, n),
                                       -65 + 10 * rng.standard_normal(n))
      s.p['sh_flex' + side] = np.where(up, rng.uniform(-20, 120, n),
                                       5 + 12 * rng.standard_normal(n))
      s.p['elbow_flex' + side] = np.where(up, rng.uniform(0, 120, n),
                                          15 + 10 * rng.standard_normal(n))
      s.p['collar_elev' + side] = np.where(up, rng.uniform(0, 20, n), 0)
    s.set('spine_lat', 0, 8)
    s.set('neck_flex', -5, 15)
  elif activity == 'crouching':
    kneel = rng.random(n) < 0.4
    s.both('hip_flex', 110, 15, 0.7)
    s.both('knee_flex', 125, 15, 0.7)
    s.p['hip_flex_l'] = np.where(kneel, rng.uniform(60, 110, n),
                                 s.p['hip_flex_l'])
    s.p['hip_flex_r'] = np.where(kneel, rng.uniform(-10, 20, n),
                                 s.p['hip_flex_r'])
    s.p['knee_flex_r'] = np.where(kneel, rng.uniform(80, 120, n),
                                  s.p['knee_flex_r'])
    s.both('hip_abd', 15, 10)
    s.both('ankle_flex', -15, 8)
    s.set('spine_flex', 25, 12)
    s.both('sh_elev', -55, 15)
    s.both('sh_flex', 40, 20)
    s.both('elbow_flex', 50, 30, 0.3)
  elif activity == 'bending':
    s.set('spine_flex', 50, 15)
    s.both('hip_flex', 45, 15, 0.8)
    s.both('knee_flex', 15, 12, 0.7)
    s.both('sh_elev', -70, 10)
    s.both('sh_flex', 50, 25)
    s.both('elbow_flex', 20, 20)
    s.set('neck_flex', -15, 12)
  elif activity == 'athletic':
    for name, (lo, hi) in LIMITS.items():
      names = [name + '_l', name + '_r'] if name in SIDED else [name]
      for nm in names:  # half way between the default and a uniform draw
        s.p[nm] = 0.5 * s.p[nm] + 0.5 * rng.uniform(lo, hi, n)
  else:
    raise ValueError(f'unknown activity {activity!r}')
  for name, (lo, hi) in LIMITS.items():
    names = [name + '_l', name + '_r'] if name in SIDED else [name]
    for nm in names:
      s.p[nm] = np.clip(s.p[nm], lo, hi)
  return s.p


def _euler(seq, angles_deg):
  """Extrinsic rotation sequence -> axis-angle (n, 3)."""
  return Rotation.from_euler(seq, np.stack(angles_deg, -1),
                             degrees=True).as_rotvec()


def anatomy_to_smpl(p):
  """Anatomical parameters (degrees) -> (n, 69) SMPL body pose (axis-angle).

  Signs (SMPL frame): hip flexion is -x, left hip abduction +z (right -z);
  knee flexion +x; ankle plantar flexion +x; spine / neck flexion +x, a lean
  to the body's left -z; collar elevation +z left / -z right; shoulder
  elevation +z left / -z right, forward flexion -y left / +y right;
  elbow flexion -y left / +y right (as SMPLify's angle prior expects).
  """
  n = len(p['spine_flex'])
  zero = np.zeros(n)
  pose = np.zeros((n, 24, 3))
  for j, sd, sg in ((1, '_l', 1.0), (2, '_r', -1.0)):
    # Twist about the leg, then abduction, then flexion.
    pose[:, j] = _euler('yzx', [-sg * p['hip_rot' + sd], sg * p['hip_abd' + sd],
                                -p['hip_flex' + sd]])
  for j, sd in ((4, '_l'), (5, '_r')):
    pose[:, j] = _euler('xyz', [p['knee_flex' + sd], zero, zero])
  for j, sd, sg in ((7, '_l', 1.0), (8, '_r', -1.0)):
    pose[:, j] = _euler('xyz', [p['ankle_flex' + sd], zero,
                                -sg * p['ankle_inv' + sd]])
  for j, sd in ((10, '_l'), (11, '_r')):
    pose[:, j] = _euler('xyz', [0.3 * p['ankle_flex' + sd], zero, zero])
  for j, frac in ((3, 0.4), (6, 0.35), (9, 0.25)):
    pose[:, j] = _euler('xyz', [frac * p['spine_flex'],
                                frac * p['spine_twist'],
                                -frac * p['spine_lat']])
  pose[:, 12] = _euler('xyz', [0.5 * p['neck_flex'], 0.4 * p['head_turn'],
                               0.5 * p['head_tilt']])
  pose[:, 15] = _euler('xyz', [0.5 * p['neck_flex'], 0.6 * p['head_turn'],
                               0.5 * p['head_tilt']])
  for j, sd, sg in ((13, '_l', 1.0), (14, '_r', -1.0)):
    pose[:, j] = _euler('xyz', [zero, -sg * p['collar_prot' + sd],
                                sg * p['collar_elev' + sd]])
  for j, sd, sg in ((16, '_l', 1.0), (17, '_r', -1.0)):
    # Twist about the arm, then elevation, then forward flexion.
    pose[:, j] = _euler('xzy', [sg * p['sh_twist' + sd],
                                sg * p['sh_elev' + sd],
                                -sg * p['sh_flex' + sd]])
  for j, sd, sg in ((18, '_l', 1.0), (19, '_r', -1.0)):
    pose[:, j] = _euler('xyz', [zero, -sg * p['elbow_flex' + sd], zero])
  for j, sd, sg in ((20, '_l', 1.0), (21, '_r', -1.0)):
    pose[:, j] = _euler('xyz', [zero, -sg * p['wrist_dev' + sd],
                                -sg * p['wrist_flex' + sd]])
  for j, sd, sg in ((22, '_l', 1.0), (23, '_r', -1.0)):
    pose[:, j] = _euler('xyz', [zero, zero, -sg * p['hand_flex' + sd]])
  return pose[:, 1:].reshape(n, 69)


def synthetic_poses(num, seed=0):
  """(num, 69) poses and (num,) activity labels."""
  rng = np.random.default_rng(seed)
  counts = np.round(np.array(SHARES) * num).astype(int)
  poses, labels = [], []
  for k, (act, c) in enumerate(zip(ACTIVITIES, counts)):
    poses.append(anatomy_to_smpl(sample_activity(act, rng, c)))
    labels.append(np.full(c, k))
  return np.concatenate(poses), np.concatenate(labels)


def fit_gmm(x, labels, num_components=NUM_COMPONENTS, iters=25, reg=COV_REG):
  """Full-covariance EM initialised from labels: (means, covars, weights)."""
  n, d = x.shape
  resp = np.eye(num_components)[labels]
  for _ in range(iters):
    nk = resp.sum(0) + 1e-12
    weights = nk / n
    means = resp.T @ x / nk[:, None]
    covars = np.empty((num_components, d, d))
    for k in range(num_components):
      xc = x - means[k]
      covars[k] = (resp[:, k, None] * xc).T @ xc / nk[k] + reg * np.eye(d)
    # E step in log space.
    logp = np.empty((n, num_components))
    for k in range(num_components):
      chol = np.linalg.cholesky(covars[k])
      z = np.linalg.solve(chol, (x - means[k]).T)
      logdet = 2 * np.log(np.diag(chol)).sum()
      logp[:, k] = (np.log(weights[k]) - 0.5 * (z ** 2).sum(0)
                    - 0.5 * logdet - 0.5 * d * np.log(2 * np.pi))
    m = logp.max(1, keepdims=True)
    ll = m[:, 0] + np.log(np.exp(logp - m).sum(1))
    resp = np.exp(logp - ll[:, None])
  return means, covars, weights, ll.mean()


def main(argv=None):
  here = os.path.dirname(os.path.abspath(__file__))
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--out', default=os.path.join(
      here, '..', 'spin_jax', 'assets', 'pose_prior_gmm08.npz'))
  ap.add_argument('--num_samples', type=int, default=20000)
  ap.add_argument('--seed', type=int, default=0)
  args = ap.parse_args(argv)
  x, labels = synthetic_poses(args.num_samples, args.seed)
  means, covars, weights, ll = fit_gmm(x, labels)
  # Order components by weight, like a sorted gmm_08.
  order = np.argsort(-weights, kind='stable')
  out = dict(
      means=means[order].astype(np.float32),
      covars=covars[order].astype(np.float32),
      weights=weights[order].astype(np.float32),
      format_version=np.array('1'),
      source=np.array(
          'data_prep/fit_pose_prior.py: 8-component GMM fitted by EM on '
          f'{len(x)} SYNTHETIC poses (8 activities, anatomical ranges; '
          f'seed {args.seed}); no motion-capture data.'),
      licence=np.array('CC0-1.0 (generated; no third-party data)'))
  save_npz_deterministic(args.out, out)
  print(f'wrote {args.out}: mean log-likelihood {ll:.2f}, weights '
        f'{np.round(weights[order], 3).tolist()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
