"""Builds the TFDS datasets from fixtures in each real format and reads them back.

One module-scoped build of every dataset (TensorFlow is imported once); each
example read through the random-access source must map back to the reader's
record in the original image (keypoints, box, labels, pixels), with SPIN's row
order as `index`.
"""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import dataset_fixtures as fx
from spin_jax import datasets
from spin_jax.datasets import schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> max_examples (None: all)
BUILDS = {'lsp-orig': 3, 'lsp': 2, 'lspet': 2, 'mpii': None, 'coco': None,
          '3dpw': None, 'mpi-inf-3dhp': 4, 'mpi-inf-3dhp-test': None,
          'h36m-p1': None, 'h36m-p2': None}


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  manual = str(tmp_path_factory.mktemp('manual'))
  data_dir = str(tmp_path_factory.mktemp('data'))
  fx.write_lsp(manual, 'lsp', 2)
  fx.write_lsp(manual, 'lsp_orig', 3)
  fx.write_lsp(manual, 'lspet', 2)
  fx.write_mpii(manual)
  fx.write_coco(manual)
  fx.write_3dpw(manual)
  fx.write_3dhp_train(manual)
  fx.write_3dhp_test(manual)
  fx.write_h36m(manual)
  from spin_jax.datasets import builders
  for name, n in BUILDS.items():
    # mpii runs the multi-process path (spawned workers without TensorFlow).
    builders.prepare(name, data_dir, manual, max_examples=n, progress=False,
                     num_workers=2 if name == 'mpii' else 0)
  return manual, data_dir


def _records(name, manual):
  recs = datasets.read_raw(name, manual)
  return recs[:BUILDS[name]] if BUILDS[name] else recs


def _check_example(ex, rec, i):
  assert ex['index'] == i
  assert ex['imgname'].decode() == rec['imgname']
  z, o = ex['crop_zoom'], ex['crop_origin'].astype(np.float64)
  # Keypoints and box map back to the original frame.
  for k in ('part', 'openpose'):
    want = rec.get(k)
    if want is None:
      np.testing.assert_array_equal(ex[k], 0)
      continue
    seen = want[:, 2] > 0
    np.testing.assert_allclose(ex[k][seen, :2] / z + o, want[seen, :2],
                               atol=1e-3)
    np.testing.assert_array_equal(ex[k][:, 2], want[:, 2])
  np.testing.assert_allclose(ex['center'] / z + o, rec['center'], atol=1e-3)
  np.testing.assert_allclose(ex['scale'] / z, rec['scale'], rtol=1e-5)
  np.testing.assert_allclose(ex['orig_center'], rec['center'], atol=1e-4)
  for k, shape in (('S', (24, 4)), ('pose', (72,)), ('shape', (10,))):
    want = rec.get(k, np.zeros(shape))
    np.testing.assert_allclose(ex[k], want, atol=1e-6)
  assert ex['has_pose_3d'] == float('S' in rec)
  assert ex['has_smpl'] == float('pose' in rec)
  assert ex['gender'] == schema.gender_code(rec.get('gender'))
  # Pixels: the crop is the original image at x_crop = zoom (x - origin).
  orig = cv2.cvtColor(cv2.imread(rec['image_path']), cv2.COLOR_BGR2RGB)
  np.testing.assert_array_equal(ex['orig_size'], orig.shape[:2])
  assert ex['image'].shape[0] == ex['image'].shape[1]
  geom = schema.crop_geometry(rec['center'], rec['scale'])
  assert ex['image'].shape[0] == geom.side and z == np.float32(geom.zoom)
  if z < 1:  # resampled (3DHP's 2048 px joints on small fixture images):
    return   # the warp's geometry is tested in test_datasets_readers.py
  h, w = orig.shape[:2]
  ox, oy = int(o[0]), int(o[1])
  ref = np.zeros_like(ex['image'])
  ys, xs = slice(max(oy, 0), min(oy + ref.shape[0], h)), slice(
      max(ox, 0), min(ox + ref.shape[1], w))
  ref[ys.start - oy:ys.stop - oy, xs.start - ox:xs.stop - ox] = orig[ys, xs]
  assert np.abs(ref.astype(int) - ex['image']).mean() < 2.0


@pytest.mark.parametrize('name', list(BUILDS))
def test_round_trip(built, name):
  manual, data_dir = built
  recs = _records(name, manual)
  src = datasets.data_source(name, data_dir)
  assert len(src) == len(recs)
  for i in range(len(recs)):
    _check_example(src[i], recs[i], i)


def test_counts_and_splits(built):
  manual, data_dir = built
  want = {'mpii': 3, 'coco': 2, '3dpw': 5, 'mpi-inf-3dhp-test': 12,
          'h36m-p1': 12, 'h36m-p2': 6}
  for name, n in want.items():
    assert len(datasets.data_source(name, data_dir)) == n, name


def test_lsp_segmentation(built):
  manual, data_dir = built
  ex = datasets.data_source('lsp', data_dir)[1]
  upi = os.path.join(manual, 'upi-s1h')
  mask = cv2.imread(os.path.join(upi, 'data/lsp/im1002_segmentation.png'), 0)
  part = cv2.imread(os.path.join(upi, 'data/lsp/im1002_part_segmentation.png'),
                    0)
  np.testing.assert_array_equal(ex['mask'][..., 0], mask)
  np.testing.assert_array_equal(ex['part_segmentation'][..., 0], part)
  assert ex['partname'] == b'data/lsp/im1002_part_segmentation.png'
  np.testing.assert_array_equal(ex['orig_size'], mask.shape)


def test_mean_params_fits_table(built):
  _, data_dir = built
  table = np.load(datasets.fits_table_path('lsp-orig', data_dir))
  src = datasets.data_source('lsp-orig', data_dir)
  assert table.shape == (3, 82)
  for i in range(3):
    np.testing.assert_array_equal(src[i]['fit'], table[i])
    assert src[i]['has_fit'] == 0


def test_spin_npz_import_matches_raw_build(built, tmp_path):
  """SPIN's npz + fits -> the same examples as the raw build, fits attached."""
  manual, data_dir = built
  recs = _records('lsp-orig', manual)
  rng = np.random.default_rng(0)
  openpose = rng.uniform(10, 100, (3, 25, 3)).astype(np.float32)
  openpose[:, 3] = 0  # an undetected OpenPose joint
  npz = str(tmp_path / 'lsp_dataset_original_train.npz')
  fx.write_spin_npz(npz, dict(
      imgname=np.array([r['imgname'] for r in recs]),
      center=np.stack([r['center'] for r in recs]),
      scale=np.array([r['scale'] for r in recs]),
      part=np.stack([r['part'] for r in recs]), openpose=openpose))
  fits = rng.normal(0, 1, (3, 82)).astype(np.float32)
  fits_path = str(tmp_path / 'lsp-orig_fits.npy')
  np.save(fits_path, fits)
  out = str(tmp_path / 'data')
  cmd = [sys.executable, os.path.join(REPO, 'data_prep', 'build.py'),
         '--dataset', 'lsp-orig', '--from_spin_npz', npz, '--image_dir',
         os.path.join(manual, 'lsp_dataset_original'), '--static_fits',
         fits_path, '--data_dir', out, '--num_workers', '0']
  res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  assert res.returncode == 0, res.stderr[-2000:]
  assert 'lsp-orig: 3 examples' in res.stdout
  raw = datasets.data_source('lsp-orig', data_dir)
  imp = datasets.data_source('lsp-orig', out)
  for i in range(3):
    a, b = raw[i], imp[i]
    for k in ('image', 'part', 'center', 'scale', 'index', 'imgname'):
      np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(b['fit'], fits[i])
    assert b['has_fit'] == 1
    z, o = b['crop_zoom'], b['crop_origin']
    seen = openpose[i, :, 2] > 0
    np.testing.assert_allclose(b['openpose'][seen, :2] / z + o,
                               openpose[i, seen, :2], atol=1e-3)
    np.testing.assert_array_equal(b['openpose'][~seen], 0)
  np.testing.assert_array_equal(
      np.load(datasets.fits_table_path('lsp-orig', out)), fits)


def test_cli_errors_name_the_file(tmp_path):
  cmd = [sys.executable, os.path.join(REPO, 'data_prep', 'build.py'),
         '--dataset', 'mpii', '--manual_dir', str(tmp_path), '--data_dir',
         str(tmp_path / 'data'), '--num_workers', '0']
  res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  assert res.returncode != 0
  assert f'missing directory {tmp_path}/mpii' in res.stderr
  assert not os.path.exists(tmp_path / 'data' / 'spin_mpii' / '1.0.0')


def test_missing_image_stops_the_build_cleanly(built, tmp_path):
  manual, _ = built
  from spin_jax.datasets import builders, common
  out = str(tmp_path / 'data')
  with pytest.raises(common.DatasetFormatError,
                     match=r'1 of the files .* missing(.|\n)*im00003.png'):
    builders.prepare('lspet', out, manual, max_examples=3, progress=False)
  assert not os.path.exists(os.path.join(out, 'spin_lspet', '1.0.0'))
  assert not os.path.exists(datasets.fits_table_path('lspet', out))
  # A corrupt image fails mid-build: nothing is left half-written.
  bad = os.path.join(manual, 'hr-lspet', 'im00003.png')
  with open(bad, 'wb') as fh:
    fh.write(b'not a png')
  try:
    with pytest.raises(common.DatasetFormatError,
                       match='cannot decode image .*im00003.png'):
      builders.prepare('lspet', out, manual, max_examples=3, progress=False)
  finally:
    os.remove(bad)
  assert not os.path.exists(os.path.join(out, 'spin_lspet', '1.0.0'))
  assert not os.path.exists(datasets.fits_table_path('lspet', out))


def test_spin_npz_import_of_lsp_test_with_masks(built, tmp_path):
  """lsp_dataset_test.npz's maskname/partname resolve under --mask_dir."""
  manual, data_dir = built
  from spin_jax.datasets import builders, spin_npz
  recs = _records('lsp', manual)
  npz = str(tmp_path / 'lsp_dataset_test.npz')
  fx.write_spin_npz(npz, dict(
      imgname=np.array([r['imgname'] for r in recs]),
      center=np.stack([r['center'] for r in recs]),
      scale=np.array([r['scale'] for r in recs]),
      part=np.stack([r['part'] for r in recs]),
      maskname=np.array([r['maskname'] for r in recs]),
      partname=np.array([r['partname'] for r in recs])))
  source = lambda: spin_npz.read_spin_npz(  # noqa: E731
      npz, os.path.join(manual, 'lsp_dataset'), os.path.join(manual, 'upi-s1h'))
  out = str(tmp_path / 'data')
  builders.prepare('lsp', out, source=source, progress=False)
  raw, imp = datasets.data_source('lsp', data_dir), datasets.data_source('lsp', out)
  for i in range(len(recs)):
    for k in ('image', 'mask', 'part_segmentation', 'maskname', 'partname',
              'part', 'orig_size'):
      np.testing.assert_array_equal(raw[i][k], imp[i][k])
  assert not os.path.exists(datasets.fits_table_path('lsp', out))  # test set
