"""Raw-format readers and the crop geometry, on fixtures in each real format.

No TensorFlow here (fast); test_datasets_build.py builds the TFDS datasets.
Joint maps are checked by joint *name* (SPIN's GT joint names against each
dataset's own joint definitions), not by re-using the index tables.
"""
import math
import os

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import dataset_fixtures as fx
from spin_jax import constants, datasets
from spin_jax.datasets import (coco, common, h36m, lsp, mpi_inf_3dhp, mpii,
                               pw3d, schema, spin_npz, static_fits)

J = {n: i for i, n in enumerate(constants.GT_JOINT_NAMES)}


def _box(xy, factor=1.2):
  lo, hi = xy.min(0), xy.max(0)
  return (lo + hi) / 2, factor * (hi - lo).max() / 200


# ----------------------------------------------------------------- geometry

@pytest.mark.parametrize('center,scale', [((120.3, 80.7), 0.8),
                                          ((500.0, 400.0), 4.0),
                                          ((-20.0, 900.5), 2.2)])
def test_crop_contains_every_augmented_box(center, scale):
  g = schema.crop_geometry(center, scale)
  assert g.side <= schema.MAX_CROP_SIDE and g.zoom <= 1
  # Corners of the largest box (x1.25) at every rotation up to 60 degrees.
  half = 100 * scale * 1.25
  for deg in np.linspace(-60, 60, 25):
    a = math.radians(deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ rot.T
    c = g.to_crop(np.asarray(center) + corners)
    assert c.min() >= 0 and c.max() <= g.side - 1
  np.testing.assert_allclose(g.to_orig(g.to_crop([[3.0, 4.0]])), [[3.0, 4.0]])


def test_warp_to_crop_is_exact():
  h, w = 300, 420
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  # Zoom 1: an exact pixel copy with black outside the frame.
  img = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
  g = schema.crop_geometry((30.0, 250.0), 0.7)
  assert g.zoom == 1
  out = schema.warp_to_crop(img, g)
  ox, oy = g.origin.astype(int)
  for v, u in [(0, 0), (10, 140), (g.side - 1, g.side - 1), (60, 40)]:
    xo, yo = ox + u, oy + v
    inside = 0 <= xo < w and 0 <= yo < h
    np.testing.assert_array_equal(out[v, u], img[yo, xo] if inside else 0)
  # Zoom < 1: a linear ramp stays linear under the centred blur and bilinear
  # resampling, so each crop pixel equals the ramp at its original position.
  ramp = (0.3 * x + 0.2 * y)[..., None].astype(np.float32)
  g = schema.crop_geometry((210.0, 150.0), 3.0)
  assert g.zoom < 1
  out = schema.warp_to_crop(ramp, g)[..., 0]
  vv, uu = np.mgrid[0:g.side, 0:g.side]
  xo, yo = uu / g.zoom + g.origin[0], vv / g.zoom + g.origin[1]
  interior = (xo > 8) & (xo < w - 9) & (yo > 8) & (yo < h - 9)
  np.testing.assert_allclose(out[interior], (0.3 * xo + 0.2 * yo)[interior],
                             atol=1e-2)


def test_bad_box_is_an_error():
  with pytest.raises(ValueError, match='scale > 0'):
    schema.crop_geometry((1.0, 2.0), 0.0)


def test_gender_codes():
  assert [schema.gender_code(g) for g in ('m', 'f', b'm', 'female', None, '')] \
      == [0, 1, 0, 1, -1, -1]


# ------------------------------------------------------------------ LSP

def test_lsp_family(tmp_path):
  root = str(tmp_path)
  jt = fx.write_lsp(root, 'lsp', 2)
  jo = fx.write_lsp(root, 'lsp_orig', 2)
  je = fx.write_lsp(root, 'lspet', 2)
  test = lsp.read_lsp_test(root)
  orig = lsp.read_lsp_orig_train(root)
  lspet = lsp.read_lspet_train(root)
  assert (len(test), len(orig), len(lspet)) == (1000, 1000, 10000)
  assert test[0]['imgname'] == 'images/im1001.jpg'
  assert test[0]['maskname'] == 'data/lsp/im1001_segmentation.png'
  assert os.path.isfile(test[0]['part_path'])
  assert orig[999]['imgname'] == 'images/im1000.jpg'
  assert lspet[1]['imgname'] == 'im00002.png'
  for recs, joints, first in ((test, jt, 1000), (orig, jo, 0), (lspet, je, 0)):
    r = recs[1]
    np.testing.assert_allclose(r['part'][:14, :2], joints[first + 1], rtol=1e-6)
    np.testing.assert_array_equal(r['part'][:14, 2], 1)
    np.testing.assert_array_equal(r['part'][14:], 0)
    c, s = _box(joints[first + 1])
    np.testing.assert_allclose(r['center'], c, rtol=1e-5)
    np.testing.assert_allclose(r['scale'], s, rtol=1e-5)


def test_lsp_errors_name_the_file(tmp_path):
  with pytest.raises(common.DatasetFormatError, match='lsp_dataset_original'):
    lsp.read_lsp_orig_train(str(tmp_path))
  d = tmp_path / 'lsp_dataset_original'
  d.mkdir()
  import scipy.io
  scipy.io.savemat(str(d / 'joints.mat'), {'joints': np.zeros((14, 3, 2000))})
  with pytest.raises(common.DatasetFormatError,
                     match=r"joints.mat: key 'joints' has shape \(14, 3, 2000\)"
                           r', expected \(3, 14, 2000\)'):
    lsp.read_lsp_orig_train(str(tmp_path))
  (d / 'joints.mat').write_bytes(b'not a mat file')
  with pytest.raises(common.DatasetFormatError, match='joints.mat'):
    lsp.read_lsp_orig_train(str(tmp_path))


# ----------------------------------------------------------------- MPII, COCO

def test_mpii(tmp_path):
  t = fx.write_mpii(str(tmp_path))
  recs = mpii.read_mpii_train(str(tmp_path))
  assert [r['imgname'] for r in recs] == ['images/' + t['names'][i]
                                          for i in t['kept']]
  r, p = recs[2], t['parts'][3]  # MPII: 6 pelvis, 10 r wrist, 13 l shoulder
  np.testing.assert_allclose(r['part'][J['Pelvis (MPII)'], :2], p[6], rtol=1e-6)
  np.testing.assert_allclose(r['part'][J['Right Wrist'], :2], p[10], rtol=1e-6)
  np.testing.assert_allclose(r['part'][J['Left Shoulder'], :2], p[13],
                             rtol=1e-6)
  np.testing.assert_allclose(r['part'][J['Top of Head (LSP)'], :2], p[9],
                             rtol=1e-6)
  assert r['part'][:, 2].sum() == 16
  np.testing.assert_allclose(r['center'], t['center'][3], rtol=1e-6)
  np.testing.assert_allclose(r['scale'], t['scale'][3], rtol=1e-6)


def test_mpii_missing_key(tmp_path):
  import h5py
  os.makedirs(tmp_path / 'mpii')
  with h5py.File(tmp_path / 'mpii' / 'train.h5', 'w') as f:
    f['imgname'] = np.array([b'a.jpg'])
    f['center'] = np.zeros((1, 2))
  with pytest.raises(common.DatasetFormatError, match=r"train.h5: no key 'scale'"):
    mpii.read_mpii_train(str(tmp_path))


def test_coco(tmp_path):
  t = fx.write_coco(str(tmp_path))
  recs = coco.read_coco_train(str(tmp_path))
  assert [r['imgname'] for r in recs] == [
      'train2014/COCO_train2014_000000000009.jpg',
      'train2014/COCO_train2014_000000000025.jpg']
  for r, k in zip(recs, t['kept']):
    kp = t['keypoints'][k]  # COCO: 0 nose, 1 l eye, 5 l shoulder, 16 r ankle
    for name, c in (('Nose', 0), ('Left Eye', 1), ('Left Shoulder', 5),
                    ('Right Ankle', 16), ('Right Wrist', 10)):
      want = kp[c] if kp[c, 2] > 0 else np.zeros(3)
      np.testing.assert_allclose(r['part'][J[name]],
                                 [want[0], want[1], want[2] > 0], rtol=1e-6)
    x, y, w, h = t['boxes'][k]
    np.testing.assert_allclose(r['center'], [x + w / 2, y + h / 2])
    np.testing.assert_allclose(r['scale'], 1.2 * max(w, h) / 200, rtol=1e-6)
  assert recs[0]['part'][J['Left Eye'], 2] == 0  # unlabelled
  assert recs[1]['part'][J['Right Elbow'], 2] == 1  # labelled, occluded (v=1)


def test_coco_bad_json(tmp_path):
  d = tmp_path / 'coco' / 'annotations'
  d.mkdir(parents=True)
  (d / 'person_keypoints_train2014.json').write_text('{"images": [')
  with pytest.raises(common.DatasetFormatError,
                     match='person_keypoints_train2014.json: not valid JSON'):
    coco.read_coco_train(str(tmp_path))


# ----------------------------------------------------------------- 3DPW

def test_3dpw(tmp_path):
  data = fx.write_3dpw(str(tmp_path))
  recs = pw3d.read_3dpw(str(tmp_path), 'test')
  # person 0: frames 0, 2 (frame 1 has no valid camera pose); person 1: 0-2
  assert [r['imgname'] for r in recs] == [
      f'imageFiles/downtown_fixture_00/image_{f:05d}.jpg'
      for f in (0, 2, 0, 1, 2)]
  assert [r['gender'] for r in recs] == ['m', 'm', 'f', 'f', 'f']
  for r, (p, f) in zip(recs, [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]):
    pose = data['poses'][p][f]
    r_cam = data['cam_poses'][f, :3, :3]
    want = (Rotation.from_matrix(r_cam) * Rotation.from_rotvec(pose[:3])
            ).as_rotvec()
    np.testing.assert_allclose(r['pose'][:3], want, atol=1e-6)
    np.testing.assert_allclose(r['pose'][3:], pose[3:], atol=1e-12)
    np.testing.assert_allclose(r['shape'], data['betas'][p][:10])
    xy = data['poses2d'][p][f][:2, :17].T  # keypoint 17 has confidence 0
    c, s = _box(xy)
    np.testing.assert_allclose(r['center'], c, rtol=1e-5)
    np.testing.assert_allclose(r['scale'], s, rtol=1e-5)


def test_3dpw_missing_key(tmp_path):
  import pickle
  d = tmp_path / '3dpw' / 'sequenceFiles' / 'test'
  d.mkdir(parents=True)
  with open(d / 'x.pkl', 'wb') as fh:
    pickle.dump({'sequence': 'x', 'poses': []}, fh, protocol=2)
  with pytest.raises(common.DatasetFormatError, match=r"x.pkl: missing keys "
                     r"\['genders', 'betas'"):
    pw3d.read_3dpw(str(tmp_path), 'test')


# ----------------------------------------------------------------- 3DHP

def test_3dhp_train(tmp_path):
  truth = fx.write_3dhp_train(str(tmp_path))
  recs = mpi_inf_3dhp.read_train(str(tmp_path))
  # 16 sequences x 8 cameras x 2 frames, one invalid: 255 valid frames; the
  # running counter keeps valid frames 1, 11, 21, ... -> 26.
  assert len(recs) == 26
  # Sorted frame lists: S1/Seq1 camera 0 frame 1 is valid #1 (kept), its
  # frame 2 is invalid; cameras 1, 2, 4, 5 give valid #2-#9, camera 6 #10-#11.
  assert recs[0]['imgname'] == 'S1/Seq1/imageFrames/video_0/frame_000001.jpg'
  assert recs[1]['imgname'] == 'S1/Seq1/imageFrames/video_6/frame_000002.jpg'
  r = recs[1]
  a2, a3 = truth[(1, 1, 6)]
  xy, xyz = a2[1].reshape(28, 2), a3[1].reshape(28, 3) / 1000
  # 3DHP 28 joints: 4 pelvis, 9 l shoulder, 18 l hip, 25 r ankle, 7 head top
  np.testing.assert_allclose(r['part'][J['Left Shoulder'], :2], xy[9])
  np.testing.assert_allclose(r['part'][J['Right Ankle'], :2], xy[25])
  np.testing.assert_allclose(r['S'][J['Left Hip'], :3], xyz[18] - xyz[4],
                             rtol=1e-6)
  np.testing.assert_allclose(r['S'][J['Pelvis (MPII)']], [0, 0, 0, 1])
  assert r['S'][:, 3].sum() == 17 and r['part'][:, 2].sum() == 17


def test_3dhp_test(tmp_path):
  truth = fx.write_3dhp_test(str(tmp_path))
  recs = mpi_inf_3dhp.read_test(str(tmp_path))
  assert len(recs) == 12  # 6 sequences x 2 valid frames
  assert recs[1]['imgname'] == 'mpi_inf_3dhp_test_set/TS1/imageSequence/img_000003.jpg'
  a2, u3, _ = truth[1]
  xy, xyz = a2[2, 0], u3[2, 0] / 1000
  # test-set 17 joints: 10 r ankle, 11 l hip, 14 pelvis, 0 head top
  r = recs[1]
  np.testing.assert_allclose(r['part'][J['Right Ankle'], :2], xy[10])
  np.testing.assert_allclose(r['S'][J['Left Hip'], :3], xyz[11] - xyz[14],
                             rtol=1e-6)
  np.testing.assert_allclose(r['S'][J['Pelvis (MPII)'], :3], 0)


# ----------------------------------------------------------------- H36M

def test_h36m(tmp_path):
  truth = fx.write_h36m(str(tmp_path), subjects=(9, 11))
  p1 = h36m.read_h36m(str(tmp_path), 'p1')
  p2 = h36m.read_h36m(str(tmp_path), 'p2')
  assert len(p1) == 2 * 2 * 3 and len(p2) == 2 * 3  # frames 1, 6, 11
  assert p2[0]['imgname'] == 'S9/Directions-1/imageSequence/60457274/img_000001.jpg'
  t = truth[9]
  row = 11 + 5  # camera 60457274, frame 6
  r = p2[1]
  xyz = t['p3'][row] / 1000
  # H36M 32 joints: 0 hip, 3 r foot, 6 l hip, 11 pelvis root as SPIN
  np.testing.assert_allclose(r['S'][J['Left Hip'], :3], xyz[6] - xyz[11],
                             rtol=1e-6)
  np.testing.assert_allclose(r['S'][J['Right Ankle'], :3], xyz[3] - xyz[11],
                             rtol=1e-6)
  assert r['S'][:, 3].sum() == 17 and 'part' not in r
  with pytest.raises(common.DatasetFormatError, match='S1'):
    h36m.read_h36m(str(tmp_path), 'train')


# ----------------------------------------------------------------- SPIN npz, fits

def test_spin_npz(tmp_path):
  path = str(tmp_path / 'x.npz')
  fx.write_spin_npz(path, dict(
      imgname=np.array(['a.jpg', 'b.jpg']), center=np.ones((2, 2)),
      scale=np.array([1.0, 2.0]), pose=np.ones((2, 72)),
      shape=np.zeros((2, 10)), gender=np.array(['m', 'f'])))
  recs = spin_npz.read_spin_npz(path, '/imgs')
  assert recs[1]['image_path'] == '/imgs/b.jpg'
  assert [r['has_smpl'] for r in recs] == [1.0, 1.0]  # pose without has_smpl
  assert [r['gender'] for r in recs] == [0, 1]
  fx.write_spin_npz(path, dict(imgname=np.array(['a.jpg']), center=np.ones(
      (1, 2)), scale=np.ones(1), part=np.zeros((1, 14, 3))))
  with pytest.raises(common.DatasetFormatError,
                     match=r"key 'part' has shape \(1, 14, 3\), expected "
                           r'\(N, 24, 3\)|\(1, 24, 3\)'):
    spin_npz.read_spin_npz(path, '/imgs')
  fx.write_spin_npz(path, dict(imgname=np.array(['a.jpg']),
                               center=np.ones((1, 2))))
  with pytest.raises(common.DatasetFormatError, match="x.npz: no key 'scale'"):
    spin_npz.read_spin_npz(path, '/imgs')


def test_static_fits(tmp_path):
  path = str(tmp_path / 'lsp-orig_fits.npy')
  np.save(path, np.zeros((5, 82)))
  assert static_fits.load_static_fits(path, 5).shape == (5, 82)
  with pytest.raises(common.DatasetFormatError,
                     match='5 rows but the dataset has 4'):
    static_fits.load_static_fits(path, 4)
  np.save(path, np.zeros((5, 72)))
  with pytest.raises(common.DatasetFormatError, match=r'expected \(N, 82\)'):
    static_fits.load_static_fits(path)


def test_rot6d_to_axis_angle_matches_scipy():
  rot = Rotation.random(20, random_state=0)
  mats = rot.as_matrix()
  six = mats[:, :, :2].reshape(20, 6)  # SPIN: 3x2 row-major
  np.testing.assert_allclose(static_fits.rot6d_to_axis_angle(six),
                             rot.as_rotvec(), atol=1e-6)
  fit = static_fits.mean_params_fit()
  assert fit.shape == (82,) and np.all(np.isfinite(fit))


def test_missing_image_names_the_file(tmp_path):
  rec = dict(imgname='x.jpg', image_path=str(tmp_path / 'x.jpg'),
             center=(10, 10), scale=0.5)
  with pytest.raises(common.DatasetFormatError, match='missing image .*x.jpg'):
    common.make_example(rec, 0)
  (tmp_path / 'x.jpg').write_bytes(b'garbage')
  with pytest.raises(common.DatasetFormatError, match='cannot decode image'):
    common.make_example(rec, 0)


def test_registry():
  assert datasets.spec('lsp-orig').builder == 'spin_lsp_orig'
  assert set(datasets.TRAIN_DATASETS) == set(constants.TRAIN_DATASETS)
  with pytest.raises(ValueError, match='unknown dataset'):
    datasets.spec('lsp_orig')


# ----------------------------------------------------------------- OpenPose

def _person_at(part, offset):
  """A BODY_25 detection whose 12 limb joints sit at part[:12] + offset."""
  from spin_jax.datasets import openpose
  p = np.zeros((25, 3))
  p[list(openpose.OPENPOSE_LIMBS), :2] = part[:12, :2] + offset
  p[list(openpose.OPENPOSE_LIMBS), 2] = 0.8
  p[0] = [5, 5, 0.5]  # a nose
  return p


def test_openpose_matching():
  from spin_jax.datasets import openpose
  part = np.zeros((24, 3))
  part[:14, :2] = np.random.default_rng(0).uniform(0, 50, (14, 2))
  part[:14, 2] = 1
  size = np.ptp(part[:14, :2], axis=0).max()
  near, far = _person_at(part, (3, 4)), _person_at(part, (30, 40))
  partial = _person_at(part, (0, 0))
  partial[11, 2] = 0  # R ankle missing: not a candidate though it is exact
  got = openpose.match(np.stack([far, partial, near]), part, 'lsp-orig')
  np.testing.assert_allclose(got, near)
  # Nobody complete: the first person.
  np.testing.assert_allclose(openpose.match(partial[None], part, 'lsp'),
                             partial)
  # COCO discards a match over 0.1 x size that is also under 10 px.
  d = 0.15 * size  # < 10 px for this small person
  assert d < 10
  bad = _person_at(part, (d, 0))
  np.testing.assert_array_equal(openpose.match(bad[None], part, 'coco'), 0)
  np.testing.assert_allclose(openpose.match(bad[None], part, 'lsp-orig'), bad)


def test_openpose_attached_by_read_raw(tmp_path):
  root = str(tmp_path)
  fx.write_coco(root)
  recs = coco.read_coco_train(root)
  people = np.stack([_person_at(recs[1]['part'], (1, 1)),
                     _person_at(recs[1]['part'], (60, 0))])
  fx.write_openpose_json(os.path.join(
      root, 'openpose', 'coco', 'COCO_train2014_000000000025_keypoints.json'),
      people)
  recs = datasets.read_raw('coco', root)
  assert 'openpose' not in recs[0]  # no json for image 9: zeros later
  np.testing.assert_allclose(recs[1]['openpose'], people[0])
  (tmp_path / 'openpose' / 'coco' /
   'COCO_train2014_000000000025_keypoints.json').write_text('{"people": 3}')
  with pytest.raises(common.DatasetFormatError,
                     match='000025_keypoints.json: expected OpenPose json'):
    datasets.read_raw('coco', root)


def test_h36m_train(tmp_path):
  truth = fx.write_h36m(str(tmp_path), subjects=(1, 5, 6, 7, 8), n_frames=6)
  recs = h36m.read_h36m(str(tmp_path), 'train')
  assert len(recs) == 5 * 2 * 2  # subjects x cameras x frames (1, 6)
  r, t = recs[3], truth[1]  # S1, camera 60457274, frame 6
  assert r['imgname'] == 'S1/Directions-1/imageSequence/60457274/img_000006.jpg'
  xy = t['p2'][6 + 5]
  np.testing.assert_allclose(r['part'][J['Left Hip'], :2], xy[6])
  np.testing.assert_allclose(r['part'][J['Right Ankle'], :2], xy[3])
  assert r['part'][:, 2].sum() == 17


# ------------------------------------------------ storage keeps augmentation exact

@pytest.mark.parametrize('scale', [0.9, 3.5])  # zoom 1 and zoom < 1
def test_augmenting_the_stored_crop_equals_augmenting_the_frame(tmp_path, scale):
  """spin_jax.augment on the stored margin crop == on the full original frame,
  for the largest scale and rotation SPIN draws, flipped."""
  import cv2
  from spin_jax import augment
  path = str(tmp_path / 'im.png')
  frame = fx.write_image(path, 700, 900, 3)  # PNG: lossless source
  rng = np.random.default_rng(1)
  part = np.zeros((24, 3))
  part[:14, :2] = [420, 330] + rng.uniform(-60, 60, (14, 2)) * scale
  part[:14, 2] = 1
  rec = dict(imgname='im.png', image_path=path, center=(430.0, 340.0),
             scale=scale, part=part)
  ex = common.make_example(rec, 0)
  ex['image'] = cv2.cvtColor(cv2.imdecode(np.frombuffer(ex['image'], np.uint8),
                                          cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
  full = dict(ex, image=frame, center=ex['orig_center'],
              scale=ex['orig_scale'], part=part.astype(np.float32),
              openpose=np.zeros((25, 3), np.float32))
  for params in (augment.AugmentParams(flip=True, rot=60.0, sc=1.25),
                 augment.AugmentParams(flip=False, rot=-45.0, sc=0.75)):
    a = augment.augment_example(ex, params)
    b = augment.augment_example(full, params)
    seen = b['keypoints'][:, 2] > 0  # zero-confidence rows carry no position
    assert seen.sum() == 14
    np.testing.assert_allclose(a['keypoints'][seen], b['keypoints'][seen],
                               atol=1e-5)
    img_a, img_b = (augment.denormalize_image(x['image']).astype(np.float64)
                    for x in (a, b))
    assert np.abs(img_a - img_b).mean() < (1.0 if ex['crop_zoom'] == 1 else 2.0)
  assert (ex['crop_zoom'] == 1) == (scale < 1)


@pytest.mark.parametrize('scale,reduction', [(4.0, 2), (12.0, 8)])
def test_reduced_jpeg_decode_keeps_the_geometry(tmp_path, scale, reduction):
  """Big boxes decode the JPEG at 1/2..1/8: the crop still samples a ramp at
  x_orig = x_crop / zoom + origin (a missed (r-1)/2 offset would bias the mean
  error by 0.16 * 3.5 = 0.56 levels at r = 8)."""
  import cv2
  h, w = 1100, 1300
  y, x = np.mgrid[0:h, 0:w].astype(np.float64)
  path = str(tmp_path / 'ramp.jpg')  # grayscale: no chroma subsampling
  cv2.imwrite(path, (0.09 * x + 0.07 * y + 10).round().astype(np.uint8),
              [cv2.IMWRITE_JPEG_QUALITY, 100])
  geom = schema.crop_geometry((640.0, 560.0), scale)
  img, size, r = common.read_image_reduced(path, geom.zoom)
  assert r == reduction and size == (h, w)
  crop = schema.warp_to_crop(img, geom, r)[..., 0].astype(np.float64)
  vv, uu = np.mgrid[0:geom.side, 0:geom.side]
  xo, yo = geom.to_orig(np.stack([uu, vv], -1)).transpose(2, 0, 1)
  m = 4 * reduction + 4 / geom.zoom  # away from the frame's edges
  inside = (xo > m) & (xo < w - 1 - m) & (yo > m) & (yo < h - 1 - m)
  assert inside.sum() > 1000
  err = crop[inside] - (0.09 * xo + 0.07 * yo + 10)[inside]
  assert abs(err.mean()) < 0.15 and np.abs(err).max() < 1.5
  outside = (xo < -2 / geom.zoom) | (yo < -2 / geom.zoom)
  np.testing.assert_array_equal(crop[outside], 0)
