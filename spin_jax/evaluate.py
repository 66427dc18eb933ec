"""Evaluation: SPIN's protocol and metrics, accumulated over a dataset.

Metrics: spin_jax.metrics (MPJPE, PA-MPJPE, PVE, 3DHP PCK and AUC), and here:
  * LSP: foreground/background and 6-part segmentation accuracy and F1,
    accumulated over the whole set; GT label 255 is ignored for part F1 but
    counted as background for part accuracy (SPIN_DETAILS D5).

Protocol (SPIN_FACTS "Evaluation protocol"): predicted joints are the 17
H36M-regressor joints of the predicted neutral mesh, centred on regressor
joint 0 (pelvis), then mapped to 14 (H36M, 3DPW) or 17 (3DHP) joints. Ground
truth comes from the dataset's root-centred S for H36M and 3DHP, and from the
gendered body models' meshes through the same regressor for 3DPW.

Kept whole (about 540 lines): SPIN's protocol in one place, from the
examples it reads to the scores it writes; the metrics are in metrics.py.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any, Callable, Iterable, Mapping

import cv2
import jax
import numpy as np
from tqdm import tqdm

from spin_jax import augment
from spin_jax import constants
from spin_jax import datasets
from spin_jax import fileio
from spin_jax import metrics
from spin_jax import render
from spin_jax import smpl
from spin_jax.datasets import synthetic


# ---------------------------------------------------------------------------
# Segmentation (LSP).

NUM_PART_CLASSES = 7  # background + 6 parts
IGNORE_LABEL = 255


@dataclasses.dataclass
class SegmentationAccumulator:
  """Pixel counts over a dataset for LSP's FG/BG and part scores.

  Accuracy = correct / all pixels; F1 per class from TP/FP/FN summed over the
  set, then averaged over 2 (FG/BG) or 7 (parts incl. background) classes.
  A class that never occurs in GT or prediction (possible on a few images,
  not on the LSP test set) has no F1 and is left out of the mean.
  """
  fg_correct: int = 0
  fg_pixels: int = 0
  fg_tp: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(2, np.int64))
  fg_fp: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(2, np.int64))
  fg_fn: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(2, np.int64))
  part_correct: int = 0
  part_pixels: int = 0
  part_tp: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(NUM_PART_CLASSES, np.int64))
  part_fp: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(NUM_PART_CLASSES, np.int64))
  part_fn: np.ndarray = dataclasses.field(
      default_factory=lambda: np.zeros(NUM_PART_CLASSES, np.int64))

  def add_foreground(self, pred_mask, gt_mask) -> None:
    """pred_mask, gt_mask: (H, W); foreground where > 0."""
    pred = np.asarray(pred_mask) > 0
    gt = np.asarray(gt_mask) > 0
    if pred.shape != gt.shape:
      raise ValueError(f'foreground masks differ in shape: prediction '
                       f'{pred.shape}, ground truth {gt.shape}.')
    self.fg_correct += int(np.sum(pred == gt))
    self.fg_pixels += pred.size
    for c, (p, g) in enumerate(((~pred, ~gt), (pred, gt))):
      self.fg_tp[c] += int(np.sum(p & g))
      self.fg_fp[c] += int(np.sum(p & ~g))
      self.fg_fn[c] += int(np.sum(~p & g))

  def add_parts(self, pred_parts, gt_parts) -> None:
    """pred_parts, gt_parts: (H, W) labels 0..6; GT may hold 255 (ignore)."""
    pred = np.asarray(pred_parts).astype(np.int64)
    gt = np.asarray(gt_parts).astype(np.int64)
    if pred.shape != gt.shape:
      raise ValueError(f'part maps differ in shape: prediction {pred.shape}, '
                       f'ground truth {gt.shape}.')
    bad = ~np.isin(gt, list(range(NUM_PART_CLASSES)) + [IGNORE_LABEL])
    if bad.any():
      raise ValueError(f'ground-truth part labels must be 0..6 or 255, found '
                       f'{sorted(set(np.unique(gt[bad]).tolist()))[:5]}.')
    ignore = gt == IGNORE_LABEL
    # Accuracy: 255 counts as background on both sides, and is counted.
    self.part_correct += int(np.sum(np.where(ignore, 0, gt)
                                    == np.where(pred == IGNORE_LABEL, 0, pred)))
    self.part_pixels += gt.size
    # F1: ignored pixels match no class on either side.
    valid = ~ignore
    for c in range(NUM_PART_CLASSES):
      p = (pred == c) & valid
      g = gt == c
      self.part_tp[c] += int(np.sum(p & g))
      self.part_fp[c] += int(np.sum(p & ~g))
      self.part_fn[c] += int(np.sum(~p & g & valid))

  @staticmethod
  def _f1(tp, fp, fn) -> np.ndarray:
    """F1 per class; NaN for a class absent from both GT and prediction."""
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)

  def summary(self) -> dict[str, float]:
    out = {}
    if self.fg_pixels:
      out['fg_acc'] = 100.0 * self.fg_correct / self.fg_pixels
      out['fg_f1'] = float(np.nanmean(
          self._f1(self.fg_tp, self.fg_fp, self.fg_fn)))
    if self.part_pixels:
      out['parts_acc'] = 100.0 * self.part_correct / self.part_pixels
      out['parts_f1'] = float(np.nanmean(
          self._f1(self.part_tp, self.part_fp, self.part_fn)))
    return out


def uncrop_labels(labels, center, scale, image_shape, img_res=None):
  """Pastes a square crop's label map back into the original image.

  The crop box is SPIN's: side = scale * 200 px around center, rounded to whole
  pixels. The (img_res, img_res) map is resized (nearest) to the box and pasted
  into zeros of image_shape; outside the box is background (0).

  Args:
    labels: (R, R) integer label map of the crop.
    center: (2,) box centre (x, y) in original-image pixels.
    scale: box side / 200.
    image_shape: (H, W) of the original image.

  Returns:
    (H, W) uint8 labels.
  """
  labels = np.asarray(labels)
  h, w = int(image_shape[0]), int(image_shape[1])
  side = max(int(round(float(scale) * constants.BOX_SCALE_UNIT)), 1)
  x0 = int(round(float(center[0]) - side / 2.0))
  y0 = int(round(float(center[1]) - side / 2.0))
  resized = cv2.resize(labels.astype(np.uint8), (side, side),
                       interpolation=cv2.INTER_NEAREST)
  out = np.zeros((h, w), np.uint8)
  # Intersection of the box with the image.
  ox0, oy0 = max(x0, 0), max(y0, 0)
  ox1, oy1 = min(x0 + side, w), min(y0 + side, h)
  if ox1 > ox0 and oy1 > oy0:
    out[oy0:oy1, ox0:ox1] = resized[oy0 - y0:oy1 - y0, ox0 - x0:ox1 - x0]
  return out


# ---------------------------------------------------------------------------
# Accumulating per-sample results over a dataset.


class ResultAccumulator:
  """Collects per-sample metric arrays and writes them atomically."""

  def __init__(self):
    self._columns: dict[str, list[np.ndarray]] = {}

  def add(self, **columns) -> None:
    for name, value in columns.items():
      self._columns.setdefault(name, []).append(np.asarray(value))

  def arrays(self) -> dict[str, np.ndarray]:
    return {k: np.concatenate(v, axis=0) for k, v in self._columns.items()}

  def __len__(self) -> int:
    cols = self.arrays()
    return len(next(iter(cols.values()))) if cols else 0

  def mean(self, name: str) -> float:
    return float(np.mean(np.concatenate(self._columns[name])))

  def summary(self, names: Iterable[str]) -> dict[str, float]:
    cols = self.arrays()
    return {n: float(np.mean(cols[n])) for n in names if n in cols}

  def write(self, path: str) -> None:
    """Writes .npz (all columns) or .csv (1-D columns only) atomically."""
    cols = self.arrays()
    if path.endswith('.npz'):
      buf = io.BytesIO()
      np.savez(buf, **cols)
      fileio.atomic_write_bytes(path, buf.getvalue())
    elif path.endswith('.csv'):
      flat = {k: v for k, v in cols.items() if v.ndim == 1}
      names = sorted(flat)
      text = io.StringIO()
      writer = csv.writer(text)
      writer.writerow(names)
      n = len(next(iter(flat.values()))) if flat else 0
      for i in range(n):
        writer.writerow([_fmt(flat[k][i]) for k in names])
      fileio.atomic_write_bytes(path, text.getvalue().encode())
    else:
      raise ValueError(f'per-sample results file {path!r}: expected a name '
                       'ending in .npz or .csv.')


def _fmt(x) -> str:
  if np.issubdtype(np.asarray(x).dtype, np.floating):
    return f'{float(x):.6g}'
  return str(x)


def write_json(path: str, obj: Any) -> None:
  fileio.atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True)
                             + '\n').encode())


# ---------------------------------------------------------------------------
# The protocol per dataset.


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """How one evaluation dataset is scored.

  joints: 14 (H36M, 3DPW, synthetic) or 17 (3DHP) evaluated joints.
  gt: 'S' = the dataset's root-centred 3D joints; 'mesh' = GT vertices of the
    evaluation body model (synthetic data rendered with it); 'gendered_mesh' =
    GT vertices of the male/female body models by gender (3DPW);
    'segmentation' = LSP masks.
  source: the name in spin_jax.datasets (SPIN's names), or the synthetic
    test split.
  """
  name: str
  source: str
  joints: int = 14
  gt: str = 'S'
  pck: bool = False


EVAL_SPECS = {
    'h36m-p1': EvalSpec('h36m-p1', 'h36m-p1'),
    'h36m-p2': EvalSpec('h36m-p2', 'h36m-p2'),
    '3dpw': EvalSpec('3dpw', '3dpw', gt='gendered_mesh'),
    'mpi-inf-3dhp': EvalSpec('mpi-inf-3dhp', 'mpi-inf-3dhp-test', joints=17,
                             pck=True),
    'lsp': EvalSpec('lsp', 'lsp', gt='segmentation'),
    'synthetic': EvalSpec('synthetic', 'synthetic-test', gt='mesh', pck=True),
}


def get_spec(dataset: str) -> EvalSpec:
  if dataset not in EVAL_SPECS:
    raise ValueError(f'--dataset={dataset!r}: expected one of '
                     f'{sorted(EVAL_SPECS)}.')
  return EVAL_SPECS[dataset]


def h36m_regressed(body_model, vertices) -> np.ndarray:
  """(B, 17, 3) H36M-regressor joints of (B, V, 3) vertices (numpy)."""
  reg = np.asarray(body_model.J_regressor_h36m, np.float64)  # (17, V)
  return np.einsum('jv,bvc->bjc', reg, np.asarray(vertices, np.float64))


def _eval_joints(h36m_joints: np.ndarray, num_joints: int):
  """Pelvis-centred (regressor joint 0) evaluated joints, and the pelvis."""
  idx = constants.H36M_TO_J14 if num_joints == 14 else constants.H36M_TO_J17
  pelvis = h36m_joints[:, 0]  # (B, 3)
  return h36m_joints[:, list(idx)] - pelvis[:, None], pelvis


def _gt_from_s(pose_3d, num_joints: int) -> np.ndarray:
  """The dataset's root-centred S (B, 24, 4) -> (B, J, 3); no re-centring."""
  idx = constants.J24_TO_J14 if num_joints == 14 else constants.J24_TO_J17
  return np.asarray(pose_3d, np.float64)[:, list(idx), :3]


_GT_VERTICES_FN = None


def gt_vertices(body_model, pose, betas) -> np.ndarray:
  """(B, V, 3) vertices of axis-angle poses (B, 72) and betas (B, 10)."""
  global _GT_VERTICES_FN
  if _GT_VERTICES_FN is None:
    def fn(model, pose, betas):
      return smpl.forward(model, betas, pose[:, 3:], pose[:, :3]).vertices
    _GT_VERTICES_FN = jax.jit(fn)
  nb = body_model.num_betas
  betas = np.asarray(betas, np.float32)
  if betas.shape[1] < nb:
    betas = np.pad(betas, ((0, 0), (0, nb - betas.shape[1])))
  return np.asarray(_GT_VERTICES_FN(body_model, np.asarray(pose, np.float32),
                                    betas[:, :nb]))


def _has_all(batch, key) -> bool:
  return key in batch and bool(np.all(np.asarray(batch[key]) > 0))


def score_batch(spec: EvalSpec, pred: Mapping[str, np.ndarray], batch, *,
                body_model, gt_body_models: Mapping[str, Any] | None = None
                ) -> dict[str, np.ndarray]:
  """Per-sample metrics of one batch (3D datasets).

  Args:
    pred: Predictor output (vertices (B, V, 3) at least).
    batch: dict with pose_3d (B, 24, 4) for gt 'S'; pose (B, 72), betas
      (B, 10), gender (B,) for the mesh protocols.
    body_model: the model the prediction uses (its H36M regressor scores both
      sides for the mesh protocols).
    gt_body_models: {'male': BodyModel, 'female': BodyModel} for 3DPW.
  """
  pred_h36m = h36m_regressed(body_model, pred['vertices'])
  pred_j, pred_pelvis = _eval_joints(pred_h36m, spec.joints)
  out = {}
  if spec.gt == 'S':
    gt_j = _gt_from_s(batch['pose_3d'], spec.joints)
  elif spec.gt in ('mesh', 'gendered_mesh'):
    pose, betas = batch['pose'], batch['betas']
    if spec.gt == 'mesh':
      verts = gt_vertices(body_model, pose, betas)
      gt_h36m = h36m_regressed(body_model, verts)
    elif not gt_body_models and _has_all(batch, 'has_pose_3d'):
      # No gendered models: the dataset's own 3D joints are the ground truth.
      out.update(metrics.pose_metrics(pred_j, _gt_from_s(batch['pose_3d'],
                                                 spec.joints),
                              with_pck=spec.pck))
      return out
    else:
      if not gt_body_models or set(gt_body_models) != {'male', 'female'}:
        raise ValueError(
            f'{spec.name}: the ground truth needs the male and female body '
            'models (--gt_body_model_male / --gt_body_model_female: SMPL_MALE'
            '.pkl / SMPL_FEMALE.pkl).')
      female = np.asarray(batch['gender']) == 1  # SPIN: 1 female, else male
      verts_m = gt_vertices(gt_body_models['male'], pose, betas)
      verts_f = gt_vertices(gt_body_models['female'], pose, betas)
      verts = np.where(female[:, None, None], verts_f, verts_m)
      gt_h36m = np.where(female[:, None, None],
                         h36m_regressed(gt_body_models['female'], verts_f),
                         h36m_regressed(gt_body_models['male'], verts_m))
    gt_j, gt_pelvis = _eval_joints(gt_h36m, spec.joints)
    if verts.shape == np.shape(pred['vertices']):
      out['pve'] = metrics.MM * metrics.pve(pred['vertices'], verts, pred_pelvis, gt_pelvis)
  else:
    raise ValueError(f'score_batch: {spec.name} is scored by segmentation.')
  out.update(metrics.pose_metrics(pred_j, gt_j, with_pck=spec.pck))
  return out


def score_segmentation(acc: SegmentationAccumulator, pred, batch, *,
                       faces, part_labels, crop_res: int = constants.IMG_RES):
  """Renders each predicted body at the crop, uncrops, scores against GT.

  SPIN's LSP protocol: render at 224 x 224 with f = 5000, principal point
  (112, 112) and the predicted crop translation; resize nearest to the box and
  paste into the original frame (orig_center, orig_scale, orig_size).
  """
  c = crop_res / 2.0
  for i in range(len(pred['vertices'])):
    t = np.asarray(pred['cam_t'][i], np.float64)
    parts = render.render_part_segmentation(
        pred['vertices'][i], faces, part_labels, constants.FOCAL_LENGTH,
        (c, c), (crop_res, crop_res), translation=t)
    size = np.asarray(batch['orig_size'][i]).astype(int)
    full = uncrop_labels(parts, batch['orig_center'][i],
                         batch['orig_scale'][i], size)
    gt_mask = np.asarray(batch['mask'][i]).reshape(size)
    gt_parts = np.asarray(batch['part_segmentation'][i]).reshape(size)
    acc.add_foreground(full > 0, gt_mask > 0)
    acc.add_parts(full, gt_parts)


def example_to_input(example: Mapping[str, Any], img_res: int) -> np.ndarray:
  """A schema example -> its normalised, un-augmented crop (img_res^2 x 3)."""
  m = augment.crop_matrix(example['center'], float(example['scale']), img_res)
  crop = augment.warp_image(np.asarray(example['image']), m, img_res)
  return augment.normalize_image(crop)


def batched(examples: Iterable[Mapping[str, Any]], batch_size: int,
            img_res: int) -> Iterable[dict[str, Any]]:
  """Groups schema examples into evaluation batches (no augmentation).

  Numeric fields are stacked; per-sample images of varying size (masks) stay
  lists. 'image' becomes the (B, img_res, img_res, 3) normalised crops.
  """
  buf = []
  for ex in examples:
    buf.append(ex)
    if len(buf) == batch_size:
      yield _collate(buf, img_res)
      buf = []
  if buf:
    yield _collate(buf, img_res)


_STACKED = ('index', 'center', 'scale', 'S', 'pose', 'shape', 'has_smpl',
            'has_pose_3d', 'gender', 'orig_center', 'orig_scale', 'orig_size')


def _collate(examples, img_res: int) -> dict[str, Any]:
  out = {'image': np.stack([example_to_input(e, img_res) for e in examples])}
  for key in _STACKED:
    if key in examples[0]:
      out[key] = np.stack([np.asarray(e[key]) for e in examples])
  for key in ('mask', 'part_segmentation', 'imgname'):
    if key in examples[0]:
      out[key] = [e[key] for e in examples]
  # The names the rest of spin_jax uses for the batch.
  if 'S' in out:
    out['pose_3d'] = out['S']
  if 'shape' in out:
    out['betas'] = out['shape']
  return out


SUMMARY_KEYS = ('mpjpe', 'pa_mpjpe', 'pve', 'pck', 'auc', 'pck_pa', 'auc_pa')


def evaluate(predict: Callable[[np.ndarray], Mapping[str, np.ndarray]],
             batches: Iterable[Mapping[str, Any]], dataset: str, *,
             body_model, gt_body_models=None, batch_size: int | None = None,
             num_examples: int | None = None, results_file: str | None = None,
             progress: bool = True) -> dict[str, float]:
  """Runs the regressor over a dataset and accumulates SPIN's metrics.

  Args:
    predict: normalised crops (B, R, R, 3) -> dict with vertices (B, V, 3)
      and cam_t (B, 3) (inference.Predictor). Batches smaller than
      batch_size are padded to it, so predict compiles once.
    batches: evaluation batches (see `batched`).
    dataset: a key of EVAL_SPECS.
    body_model: the body model of the prediction.
    gt_body_models: {'male', 'female'} body models for 3DPW.
    num_examples: total, for the progress bar.
    results_file: per-sample results (.npz or .csv), written at the end.

  Returns:
    dict of dataset means: mm for errors, % for PCK/AUC/accuracy, F1 in
    [0, 1]; plus 'num_examples'.
  """
  spec = get_spec(dataset)
  results = ResultAccumulator()
  seg = SegmentationAccumulator() if spec.gt == 'segmentation' else None
  part_labels = None
  if seg is not None:
    part_labels = render.vertex_part_labels(np.asarray(body_model.lbs_weights))
  bar = tqdm(total=num_examples, desc=f'eval {dataset}', unit='img',
             disable=not progress)
  count = 0
  for batch in batches:
    images = np.asarray(batch['image'], np.float32)
    n = len(images)
    if batch_size and n < batch_size:  # pad: one compiled shape
      pad = np.zeros((batch_size - n,) + images.shape[1:], images.dtype)
      images = np.concatenate([images, pad])
    pred = {k: np.asarray(v)[:n] for k, v in predict(images).items()}
    if seg is not None:
      score_segmentation(seg, pred, batch, faces=body_model.faces,
                         part_labels=part_labels)
      scores = {}
    else:
      scores = score_batch(spec, pred, batch, body_model=body_model,
                           gt_body_models=gt_body_models)
    index = np.asarray(batch['index']) if 'index' in batch else (
        np.arange(count, count + n))
    results.add(index=index, **scores)
    if 'pose' in pred:
      results.add(pred_pose=pred['pose'], pred_betas=pred['betas'],
                  pred_cam=pred['cam'])
    count += n
    bar.update(n)
    if scores:
      bar.set_postfix({k: f'{results.mean(k):.1f}'
                       for k in ('mpjpe', 'pa_mpjpe') if k in scores})
  bar.close()
  if count == 0:
    raise ValueError(f'evaluate: dataset {dataset!r} yielded no examples.')
  summary = results.summary(SUMMARY_KEYS)
  if seg is not None:
    summary.update(seg.summary())
  summary['num_examples'] = count
  if results_file:
    results.write(results_file)
  return summary


def load_examples(dataset: str, data_dir: str | None, num_examples: int = -1,
                  *, config=None,
                  synthetic_size: str | None = None,
                  body_model: str | None = None
                  ) -> tuple[Iterable[dict], int]:
  """The evaluation split of a built dataset: (examples in order, count).

  SPIN's datasets come from spin_jax.datasets.data_source(name, data_dir).
  The synthetic test split is opened the way training opens it (same sizes,
  image size, seed and body model), given the training config;
  otherwise from data_dir with the size preset `synthetic_size` (spin_jax.
  datasets.synthetic.SIZES) rendered with `body_model`.
  """
  spec = get_spec(dataset)
  build_name = 'synthetic' if dataset == 'synthetic' else spec.source
  try:
    if dataset == 'synthetic':
      source = _synthetic_test_source(data_dir, config, synthetic_size,
                                      body_model)
    else:
      source = datasets.data_source(spec.source, data_dir)
  except (FileNotFoundError, ValueError, KeyError) as e:  # name what to build
    raise FileNotFoundError(
        f'--dataset={dataset}: could not open {spec.source!r} in '
        f'data_dir={data_dir!r} ({e}). Build it with data_prep/build.py '
        f'--dataset {build_name} --data_dir DIR.') from e
  n = len(source) if num_examples is None or num_examples < 0 else min(
      num_examples, len(source))
  return (source[i] for i in range(n)), n


def _synthetic_test_source(data_dir, config, size, body_model):
  """The synthetic test split: as training builds it (from its config), or
  a size preset of spin_jax.datasets.synthetic.SIZES."""
  if data_dir is None:
    raise ValueError('the synthetic test split needs --data_dir (or a '
                     'training workdir as --checkpoint).')
  if config is not None and size is None:
    # One canonical mapping of the training config onto the build settings;
    # the data were rendered with the training body model.
    return synthetic.data_source(data_dir, 'test',
                                 **synthetic.build_kwargs_from_config(config))
  return synthetic.data_source(data_dir, 'test', build=False,
                               size=size or 'quickstart',
                               body_model=body_model or 'default')

