"""Renderer tests on geometric cases with known answers."""
import cv2
import numpy as np
import pytest

from spin_jax import render


def _box(size, center):
  """Axis-aligned box mesh (8 vertices, 12 outward triangles)."""
  sx, sy, sz = np.asarray(size, float) / 2
  corners = np.array([[x, y, z] for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)])
  faces = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
  return corners + np.asarray(center, float), faces


def _rot(axis, deg):
  return cv2.Rodrigues(np.asarray(axis, float) * np.deg2rad(deg) / np.linalg.norm(axis))[0]


def test_front_facing_cube_area_is_its_front_square():
  # Unit cube, front face at z = 4: a 100 px square with f = 400; pixel centres at
  # integers and an off-grid centre give exactly 100 x 100 covered centres.
  v, f = _box((1, 1, 1), (0, 0, 4.5))
  sil = render.render_silhouette(v, f, 400.0, (112.3, 112.3), (224, 224))
  assert sil.dtype == bool and sil.shape == (224, 224)
  assert sil.sum() == 100 * 100
  rows, cols = np.nonzero(sil)
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (63, 162, 63, 162)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_rotated_cube_area_matches_convex_hull(seed):
  rng = np.random.default_rng(seed)
  v, f = _box((1, 1, 1), (0, 0, 0))
  r = _rot(rng.normal(size=3), rng.uniform(20, 160))
  v = v @ r.T + [rng.uniform(-.3, .3), rng.uniform(-.3, .3), 4.0]
  focal, center, size = 300.0, (150.0, 140.0), (300, 320)
  sil = render.render_silhouette(v, f, focal, center, size)
  uv = render.project(v, focal, center).astype(np.float32)
  hull_area = cv2.contourArea(cv2.convexHull(uv))
  assert abs(sil.sum() - hull_area) / hull_area < 0.02


def test_triangle_silhouette_area_and_depth_perspective_correct():
  # A large triangle in the tilted plane z = 5 + 0.5 x.
  pts = np.array([[-1.5, -1.2], [1.4, -0.8], [0.2, 1.6]])
  v = np.concatenate([pts, 5 + 0.5 * pts[:, :1]], 1)
  focal, c = 200.0, (128.0, 120.0)
  fr = render.rasterize(v, [[0, 1, 2]], focal, c, (256, 256))
  uv = render.project(v, focal, c)
  e1, e2 = uv[1] - uv[0], uv[2] - uv[0]
  area = abs(e1[0] * e2[1] - e1[1] * e2[0]) / 2
  assert abs(fr.mask.sum() - area) / area < 0.01
  # Ray through pixel u meets the plane at z = 5 / (1 - 0.5 (u - cx) / f).
  rows, cols = np.nonzero(fr.mask)
  z_true = 5.0 / (1 - 0.5 * (cols - c[0]) / focal)
  np.testing.assert_allclose(fr.depth[rows, cols], z_true, rtol=1e-10)
  assert np.all(np.isinf(fr.depth[~fr.mask])) and np.all(fr.face_index[~fr.mask] == -1)
  # Perspective-correct barycentrics reproduce the 3D point seen by the pixel.
  p3 = np.einsum('kj,jc->kc', fr.bary[rows, cols], v)
  np.testing.assert_allclose(p3[:, 2], z_true, rtol=1e-10)
  np.testing.assert_allclose(p3[:, 0] / p3[:, 2] * focal + c[0], cols, atol=1e-8)


@pytest.mark.parametrize('order', [(0, 1), (1, 0)])
def test_occlusion_nearer_triangle_wins_whatever_the_order(order):
  near = np.array([[-1, -1, 3.0], [1, -1, 3.0], [0, 1, 3.0]])
  far = near * [2, 2, 1] + [0.5, 0, 3.0]  # bigger, behind, shifted
  tris = [near, far]
  v = np.concatenate([tris[order[0]], tris[order[1]]])
  f = np.array([[0, 1, 2], [3, 4, 5]])
  fr = render.rasterize(v, f, 100.0, (64, 64), (128, 128))
  near_id = order.index(0)
  near_sil = render.render_silhouette(near, [[0, 1, 2]], 100.0, (64, 64), (128, 128))
  assert near_sil.sum() > 500
  assert np.all(fr.face_index[near_sil] == near_id)
  assert np.all(fr.face_index[fr.mask & ~near_sil] == 1 - near_id)
  assert (fr.mask & ~near_sil).sum() > 500


def test_interpenetrating_triangles_split_at_the_intersection():
  # Triangle A at z = 4; triangle B crosses it along x = 0 (z = 4 + x).
  a = np.array([[-1, -1, 4.0], [1, -1, 4.0], [0, 1, 4.0]]) * [2, 2, 1]
  b = np.array([[-2, -2, 2.0], [2, -2, 6.0], [0, 2, 4.0]])
  fr = render.rasterize(np.concatenate([a, b]), [[0, 1, 2], [3, 4, 5]], 100.0,
                        (64.5, 64.5), (128, 128))
  both = render.render_silhouette(a, [[0, 1, 2]], 100.0, (64.5, 64.5), (128, 128))
  cols = np.arange(128)[None].repeat(128, 0)
  left = both & fr.mask & (cols < 64.5 - 1)   # B is nearer where x < 0
  right = both & fr.mask & (cols > 64.5 + 1)
  assert left.sum() > 100 and right.sum() > 100
  assert np.all(fr.face_index[left] == 1) and np.all(fr.face_index[right] == 0)


def test_faces_behind_the_camera_are_dropped():
  v = np.array([[-1, -1, -3.0], [1, -1, -3.0], [0, 1, -3.0]])
  assert not render.render_silhouette(v, [[0, 1, 2]], 100.0, (32, 32), (64, 64)).any()


def test_part_segmentation_majority_vote_and_remap():
  # Quad of two triangles: face 0 has labels (2, 2, 5) -> 2; face 1 has (5, 5, 2) -> 5.
  v = np.array([[-1, -1, 5.0], [1, -1, 5.0], [1, 1, 5.0], [-1, 1, 5.0]])
  f = np.array([[0, 3, 1], [2, 1, 3]])
  labels = np.array([2, 5, 5, 2])
  np.testing.assert_array_equal(render.face_part_labels(f, labels), [2, 5])
  seg = render.render_part_segmentation(v, f, labels, 100.0, (50.5, 50.5), (101, 101))
  assert seg.dtype == np.uint8 and set(np.unique(seg)) == {0, 2, 5}
  sil = render.render_silhouette(v, f, 100.0, (50.5, 50.5), (101, 101))
  np.testing.assert_array_equal(seg > 0, sil)
  assert abs((seg == 2).sum() - (seg == 5).sum()) <= 40  # diagonal split
  remap = render.render_part_segmentation(v, f, labels, 100.0, (50.5, 50.5), (101, 101),
                                          part_ids=[0, 1, 3, 2, 4, 6, 5])
  np.testing.assert_array_equal(remap, np.array([0, 1, 3, 2, 4, 6, 5])[seg])
  with pytest.raises(ValueError, match='vertex_part_labels'):
    render.render_part_segmentation(v, f, labels + 5, 100.0, (50, 50), (101, 101))


def test_vertex_part_labels_from_skinning_weights():
  w = np.zeros((3, 24))
  w[0, 15] = 1  # head
  w[1, [1, 4]] = [.3, .7]  # left knee dominant
  w[2, [16, 9]] = [.6, .4]  # left shoulder
  np.testing.assert_array_equal(render.vertex_part_labels(w),
                                [render.HEAD, render.LEFT_LEG, render.LEFT_ARM])


def test_render_mesh_overlay_keeps_background_and_shades_mesh():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
  v, f = _box((1, 1, 1), (0, 0, 6))
  out = render.render_mesh(v, f, 300.0, (80.2, 60.2), (120, 160), image,
                           color=(1.0, 0.0, 0.0), supersample=1, smooth=False)
  sil = render.render_silhouette(v, f, 300.0, (80.2, 60.2), (120, 160))
  assert out.dtype == np.uint8 and out.shape == image.shape
  np.testing.assert_array_equal(out[~sil], image[~sil])
  # Front face, normal (0, 0, -1): intensity = ambient + diffuse * |l_z|.
  light = np.array([0.3, -0.5, -1.0]) / np.linalg.norm([0.3, -0.5, -1.0])
  expect = round(255 * (0.35 + 0.65 * abs(light[2])))
  assert np.all(out[sil][:, 0] == expect) and np.all(out[sil][:, 1:] == 0)
  # Anti-aliased: interior unchanged, only edge pixels blend.
  aa = render.render_mesh(v, f, 300.0, (80.2, 60.2), (120, 160), image,
                          color=(1.0, 0.0, 0.0), smooth=False)
  interior = cv2.erode(sil.astype(np.uint8), np.ones((3, 3))).astype(bool)
  np.testing.assert_array_equal(aa[interior], out[interior])


def test_side_view_of_a_slab_is_narrow():
  v, f = _box((1.0, 1.0, 0.1), (0.2, 0, 5))
  front = render.render_mesh(v, f, 200.0, (64, 64), (128, 128))
  side = render.render_side_view(v, f, 200.0, (64, 64), (128, 128))
  n_front = (front.sum(-1) > 0).sum()
  n_side = (side != 255).any(-1).sum()
  assert 0.06 < n_side / n_front < 0.2
  # Rotation is about the centroid: the centroid does not move.
  np.testing.assert_allclose(render.rotate_about_vertical(v, 90).mean(0), v.mean(0))


def test_bad_input_errors_name_the_argument():
  v, f = _box((1, 1, 1), (0, 0, 5))
  with pytest.raises(ValueError, match='faces'):
    render.render_silhouette(v, f + 10, 100.0, (32, 32), (64, 64))
  with pytest.raises(ValueError, match='vertices'):
    render.render_silhouette(v[:, :2], f, 100.0, (32, 32), (64, 64))
  with pytest.raises(ValueError, match='image'):
    render.render_mesh(v, f, 100.0, (32, 32), (64, 64), np.zeros((10, 10, 3), np.uint8))


def test_a_triangle_larger_than_the_image_matches_a_direct_inside_test():
  """A triangle covering far more pixels than one vectorised pass enumerates
  (render._MAX_CANDIDATES) is cut into tiles: the mask must equal a direct
  same-side-of-every-edge test at each pixel centre, and the peak memory
  stays a small multiple of the output arrays."""
  import tracemalloc  # pylint: disable=g-import-not-at-top
  h, w = 1500, 2000
  uv = np.array([[-900.0, -300.0], [2600.0, 200.0], [700.0, 2100.0]])  # pixels
  z = 4.0
  focal, c = 1000.0, (w / 2, h / 2)
  v = np.concatenate([(uv - c) * z / focal, np.full((3, 1), z)], 1)
  tracemalloc.start()
  fr = render.rasterize(v, [[0, 1, 2]], focal, c, (h, w))
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert h * w > render._MAX_CANDIDATES  # pylint: disable=protected-access
  ys, xs = np.mgrid[0:h, 0:w]

  def side(a, b):  # sign of the cross product (b - a) x (p - a)
    return np.sign((b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]))

  s = [side(uv[0], uv[1]), side(uv[1], uv[2]), side(uv[2], uv[0])]
  inside = ((s[0] >= 0) & (s[1] >= 0) & (s[2] >= 0)) | (
      (s[0] <= 0) & (s[1] <= 0) & (s[2] <= 0))
  assert 0.3 * h * w < inside.sum() < h * w  # partly off-screen, mostly on
  np.testing.assert_array_equal(fr.mask, inside)
  np.testing.assert_allclose(fr.depth[inside], z, rtol=1e-12)
  # Linear in the pixels covered (measured: 4.8x the output arrays, the
  # fragments' own arrays before the z-test), whatever the triangle's size.
  output_bytes = h * w * (4 + 8 + 24)  # face index, depth, barycentrics
  assert peak < 6 * output_bytes, (peak, output_bytes)
