"""SPIN's input pipeline on grain: dataset mixing, exact augmentation, batching.

Training stream (`InputPipeline(train=True)`), infinite and deterministic given
the seed. Global item i (0, 1, 2, ... over the whole run) is built as in SPIN:
  epoch e = i // L, position j = i % L, with L = the size of the largest
  dataset (SPIN's epoch length); a seeded permutation of range(L) per epoch
  gives idx; a seeded draw picks dataset d with the mixing weights; the sample
  is idx mod len(d). Its augmentation uses np.random.default_rng([seed, i]).
So the stream depends only on (seed, sources, weights), not on the number of
workers, threads or hosts. Host p of P takes items p, p + P, ... and batches
batch_size / P of them: global step t is items t*B .. t*B + B - 1.

Evaluation (`train=False`): one ordered pass over the concatenated sources, no
augmentation, the last batch padded to the batch size with `valid` = 0.

Batch dict (CONTRACT.md; numpy, leading axis = per-host batch):
  image (B,224,224,3) f32 normalised; keypoints (B,49,3) f32 in [-1,1] + conf;
  pose_3d (B,24,4) f32; pose (B,72) f32; betas (B,10) f32; has_smpl (B,) f32;
  has_pose_3d (B,) f32; index (B,) i32 = row of the global fits table (offset of
  the dataset + the example's `index`); dataset_id (B,) i32; is_flipped (B,) i32;
  rot_angle (B,) f32 degrees; scale (B,) f32 and center (B,2) f32 = the
  augmented box (scale * sc) in ORIGINAL-image pixels; gender (B,) i32;
  valid (B,) f32 (1 for real samples, 0 for eval padding).

A source is anything with __len__ and __getitem__(i) -> dict of the fields of
spin_jax.datasets.schema (decoded: image uint8 (H, W, 3)), e.g. a TFDS
ArrayRecord data source (`tfds_source`) or a list of dicts.

Checkpointing: `pipeline.get_state()` is a JSON-serialisable dict (grain's
iterator state); `pipeline.set_state(state)` resumes the exact sequence. A state
must be restored into a pipeline with the same sources, seed, batch size,
number of workers and host count.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any, Mapping, Sequence

from absl import flags
import grain
import jax
import numpy as np

from spin_jax import augment
from spin_jax import constants
from spin_jax import datasets
from spin_jax.datasets import synthetic

# SPIN's mixing (SPIN_FACTS "Dataset mixing"): groups and their share of a batch;
# within a group, members share in proportion to their sizes.
SPIN_MIXING_GROUPS = (
    (('h36m',), constants.H36M_SHARE),
    # 'images': your own photos (spin_jax/datasets/images.py), like LSP.
    (('lsp-orig', 'mpii', 'lspet', 'coco', 'images'), constants.ITW_SHARE),
    (('mpi-inf-3dhp',), constants.MPI_INF_3DHP_SHARE),
    # The synthetic set (spin_jax.datasets.synthetic) in the same spirit.
    (('synthetic-3d',), 0.4),
    (('synthetic-2d',), 0.6),
)


def mixing_weights(sizes: Mapping[str, int],
                   groups: Sequence[tuple[Sequence[str], float]] | None = None
                   ) -> dict[str, float]:
  """Per-dataset sampling probabilities from group shares (SPIN by default).

  Args:
    sizes: dataset name -> number of examples, for the datasets in use.
    groups: (member names, share) pairs; members split their group's share in
      proportion to their sizes. Groups with no member in `sizes` are dropped and
      the rest renormalised. Defaults to SPIN's H36M 0.3 / ITW 0.6 / 3DHP 0.1.
      A dataset in `sizes` but in no group is an error.
  """
  groups = SPIN_MIXING_GROUPS if groups is None else groups
  grouped = {n for members, _ in groups for n in members}
  missing = [n for n in sizes if n not in grouped]
  if missing:
    raise ValueError(f'datasets {missing} are in no mixing group; groups: '
                     f'{[tuple(m) for m, _ in groups]}')
  weights = {}
  for members, share in groups:
    present = [n for n in members if n in sizes]
    total = sum(int(sizes[n]) for n in present)
    for n in present:
      weights[n] = float(share) * int(sizes[n]) / total if total else 0.0
  z = sum(weights.values())
  if not z > 0:
    raise ValueError(f'mixing weights sum to {z}: sizes {dict(sizes)}, groups {groups}')
  return {n: weights[n] / z for n in sizes}


def tfds_source(name_or_dir: str, split: str, data_dir: str | None = None):
  """Random-access TFDS source (ArrayRecord) of a built dataset.

  `name_or_dir` is a builder directory (`<data_dir>/<name>[/<config>]/<version>`,
  as written by download_and_prepare; see spin_jax.datasets.dataset_dir and
  synthetic.dataset_dir) or a registered TFDS name.
  """
  # TensorFlow (slow to import) only where a TFDS dataset is read.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  if os.path.isdir(name_or_dir):
    builder = tfds.builder_from_directory(name_or_dir)
  else:
    builder = tfds.builder(name_or_dir, data_dir=data_dir)
  if split not in builder.info.splits:
    raise ValueError(f'split {split!r} not in {builder.info.full_name} '
                     f'(has {list(builder.info.splits)}), data_dir={builder.data_dir}')
  return builder.as_data_source(split=split)


# ------------------------------------------------------------ grain pieces
class MixedIndexDataset(grain.MapDataset):
  """SPIN's sampler as an infinite random-access dataset.

  Item i -> (i, dataset_id, sample_idx), see the module docstring.
  """

  def __init__(self, sizes: Sequence[int], weights: Sequence[float], seed: int):
    super().__init__()
    self._sizes = np.asarray(sizes, np.int64)
    self._cum = np.cumsum(np.asarray(weights, np.float64))
    self._cum /= self._cum[-1]
    self._epoch_len = int(self._sizes.max())
    self._seed = int(seed)
    self._cache = (-1, None)

  def __len__(self):
    return sys.maxsize

  def __str__(self):
    return f'MixedIndexDataset(sizes={self._sizes.tolist()}, seed={self._seed})'

  def __getitem__(self, i):
    if isinstance(i, slice):
      return self.slice(i)
    epoch, j = divmod(int(i), self._epoch_len)
    cached = self._cache  # (epoch, permutation); swapped atomically (threads)
    if cached[0] != epoch:  # one permutation of range(L) per epoch
      cached = (epoch, np.random.default_rng([self._seed, 1, epoch]).permutation(
          self._epoch_len))
      self._cache = cached
    perm = cached[1]
    u = np.random.default_rng([self._seed, 2, int(i)]).uniform()
    d = min(int(np.searchsorted(self._cum, u, side='right')), len(self._sizes) - 1)
    return int(i), d, int(perm[j] % self._sizes[d])


class SequentialIndexDataset(grain.MapDataset):
  """The concatenated sources in order: k -> (k, dataset_id, sample_idx)."""

  def __init__(self, sizes: Sequence[int]):
    super().__init__()
    self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

  def __len__(self):
    return int(self._offsets[-1])

  def __str__(self):
    return f'SequentialIndexDataset(n={len(self)})'

  def __getitem__(self, k):
    if isinstance(k, slice):
      return self.slice(k)
    k = int(k)
    if not 0 <= k < len(self):
      k %= len(self)
    d = int(np.searchsorted(self._offsets, k, side='right') - 1)
    return k, d, int(k - self._offsets[d])


@dataclasses.dataclass
class _LoadAndAugment:
  """(i, dataset_id, sample_idx) -> one model-input example (picklable)."""
  sources: Sequence[Any]
  sizes: Sequence[int]
  offsets: Sequence[int]
  seed: int
  train: bool
  config: augment.AugmentConfig
  ignore_3d: bool = False

  def __call__(self, item):
    i, d, s = item
    ex = self.sources[d][s]
    if self.train:
      params = augment.sample_params(np.random.default_rng([self.seed, 3, i]),
                                     self.config)
    else:
      params = augment.AugmentParams()
    out = augment.augment_example(ex, params, self.config.img_res)
    del out['crop_matrix']
    row = int(np.asarray(ex.get('index', s)))
    if not 0 <= row < self.sizes[d]:
      raise ValueError(f'example {s} of dataset {d} has index {row}, expected '
                       f'0 <= index < {self.sizes[d]} (rows of its fits table)')
    # Augmented box in original-image pixels (stored crop -> original frame).
    zoom = float(np.asarray(ex.get('crop_zoom', 1.0)))
    origin = np.asarray(ex.get('crop_origin', (0.0, 0.0)), np.float64)
    has_smpl = float(np.asarray(ex.get('has_smpl', 0.0)))
    has_3d = float(np.asarray(ex.get('has_pose_3d', 0.0)))
    if self.ignore_3d:
      has_smpl = has_3d = 0.0
    out.update(
        has_smpl=np.float32(has_smpl),
        has_pose_3d=np.float32(has_3d),
        index=np.int32(self.offsets[d] + row),
        dataset_id=np.int32(d),
        is_flipped=np.int32(params.flip),
        rot_angle=np.float32(params.rot),
        scale=np.float32(float(np.asarray(ex['scale'])) * params.sc / zoom),
        center=(np.asarray(ex['center'], np.float64) / zoom + origin).astype(np.float32),
        gender=np.int32(np.asarray(ex.get('gender', -1))),
        valid=np.float32(1.0),
    )
    return out


def _pad_batch(batch: dict, batch_size: int) -> dict:
  n = len(batch['valid'])
  if n == batch_size:
    return batch
  return {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def _ensure_absl_flags_parsed():
  # grain's multiprocessing reads absl flags; outside an absl app (tests,
  # notebooks) they are unparsed, so use their defaults.
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _host_shard(shard_index, shard_count):
  if shard_index is None or shard_count is None:
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f'shard_index {shard_index} not in [0, {shard_count})')
  return int(shard_index), int(shard_count)


class InputPipeline:
  """Batches of SPIN training (or evaluation) examples; see the module docstring.

  Args:
    sources: (name, source) pairs, in the order of the fits table.
    batch_size: GLOBAL batch size (split over hosts).
    weights: name -> sampling weight (train); default `mixing_weights(sizes)`.
    seed: the whole stream (order, dataset draws, augmentation) follows it.
    train: mixing + augmentation (infinite) vs one ordered pass (padded).
    augment_config: SPIN's augmentation settings.
    num_workers: grain worker processes (0 = in this process).
    num_threads: reading/augmenting threads per process (OpenCV drops the GIL).
    shard_index, shard_count: this host's shard; default jax.process_index()
      and jax.process_count().
    ignore_3d: SPIN's --ignore_3d (zero has_smpl and has_pose_3d everywhere).
  """

  def __init__(self, sources: Sequence[tuple[str, Any]], *, batch_size: int,
               weights: Mapping[str, float] | None = None, seed: int = 0,
               train: bool = True,
               augment_config: augment.AugmentConfig = augment.AugmentConfig(),
               num_workers: int = 0, num_threads: int = 2,
               shard_index: int | None = None, shard_count: int | None = None,
               ignore_3d: bool = False, worker_buffer_size: int | None = None):
    if not sources:
      raise ValueError('InputPipeline needs at least one (name, source) pair')
    self.names = tuple(str(n) for n, _ in sources)
    if len(set(self.names)) != len(self.names):
      raise ValueError(f'duplicate dataset names: {self.names}')
    srcs = [s for _, s in sources]
    self.sizes = tuple(int(len(s)) for s in srcs)
    for n, size in zip(self.names, self.sizes):
      if size <= 0:
        raise ValueError(f'dataset {n!r} is empty')
    self.dataset_offsets = dict(zip(self.names, np.concatenate(
        [[0], np.cumsum(self.sizes)[:-1]]).astype(int).tolist()))
    self.num_fits_rows = int(sum(self.sizes))
    self.train = bool(train)
    self.seed = int(seed)
    self.shard_index, self.shard_count = _host_shard(shard_index, shard_count)
    if batch_size % self.shard_count:
      raise ValueError(f'batch_size {batch_size} is not divisible by the host count '
                       f'{self.shard_count}')
    self.batch_size = int(batch_size)
    self.local_batch_size = self.batch_size // self.shard_count
    # SPIN: epoch = largest dataset, steps = floor(L / batch), drop_last.
    self.epoch_length = max(self.sizes)
    self.steps_per_epoch = max(1, self.epoch_length // self.batch_size)
    if train:
      if weights is None:
        weights = mixing_weights(dict(zip(self.names, self.sizes)))
      unknown = set(weights) - set(self.names)
      if unknown:
        raise ValueError(f'weights for unknown datasets {sorted(unknown)}; '
                         f'datasets: {self.names}')
      w = np.array([float(weights.get(n, 0.0)) for n in self.names])
      if np.any(w < 0) or not w.sum() > 0:
        raise ValueError(f'mixing weights must be >= 0 and not all 0, got {dict(weights)}')
      self.weights = dict(zip(self.names, (w / w.sum()).tolist()))
      index_ds = MixedIndexDataset(self.sizes, w, self.seed)
    else:
      self.weights = None
      index_ds = SequentialIndexDataset(self.sizes)
    offsets = [self.dataset_offsets[n] for n in self.names]
    fn = _LoadAndAugment(srcs, self.sizes, offsets, self.seed, self.train,
                         augment_config, ignore_3d)
    ds = index_ds[self.shard_index::self.shard_count].map(fn)
    buf = worker_buffer_size or self.local_batch_size
    ds = ds.to_iter_dataset(grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=max(buf, num_threads)))
    if num_workers > 0:
      _ensure_absl_flags_parsed()
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=num_workers, per_worker_buffer_size=buf))
    ds = ds.batch(self.local_batch_size, drop_remainder=self.train)
    self._dataset = ds
    self._iterator = None

  @property
  def num_rows(self) -> int:
    """Rows of the fits table these sources index (the sum of their sizes)."""
    return self.num_fits_rows

  @property
  def layout(self) -> list[tuple[str, int, int]]:
    """[(dataset name, fits-table offset, size)] in table order."""
    return [(n, self.dataset_offsets[n], s) for n, s in zip(self.names, self.sizes)]

  def _iter(self):
    if self._iterator is None:
      self._iterator = iter(self._dataset)
    return self._iterator

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._iter())
    if not self.train:
      batch = _pad_batch(batch, self.local_batch_size)
    return batch

  def get_state(self) -> dict:
    """JSON-serialisable position in the stream (grain iterator state)."""
    state = self._iter().get_state()
    json.dumps(state)  # fail here, not in the checkpointer
    return state

  def set_state(self, state: Mapping) -> None:
    """Resumes from `get_state()` of a pipeline built the same way."""
    self._iter().set_state(dict(state))

  def close(self) -> None:
    it, self._iterator = self._iterator, None
    if it is not None and hasattr(it, 'close'):
      it.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ---------------------------------------------------------------- from a config
def dataset_names(config) -> list[str]:
  names = [n.strip() for n in str(config.data.datasets).split(',') if n.strip()]
  if names == ['spin']:
    names = list(constants.TRAIN_DATASETS)
  if not names:
    raise ValueError('--config.data.datasets is empty: give "synthetic", "spin" '
                     'or a comma-separated list of dataset names.')
  return names


def data_dir_of(config, workdir: str) -> str:
  """config.data.data_dir, or <workdir>/data (where the synthetic set is built)."""
  return config.data.data_dir or os.path.join(workdir, 'data')


def data_sources(config, workdir: str, names, split: str):
  """(name, random-access source) pairs; the synthetic set is built if missing.

  names: ['synthetic'] (split 'train' or 'test', sized by config.data.*) or
  SPIN dataset names (built TFDS datasets in the data dir; `split` unused).
  """
  data_dir = data_dir_of(config, workdir)
  if names == ['synthetic']:
    # Rendered from the configured body model; built into data_dir if missing.
    return synthetic.sources(data_dir, split,
                             **synthetic.build_kwargs_from_config(config))
  return [(n, datasets.data_source(n, data_dir)) for n in names]


def training_data(config, workdir: str) -> 'InputPipeline':
  """SPIN's training stream of config.data, with `num_rows` and `layout`
  ([(dataset, fits-table offset, size)]) for the fits table."""
  names = dataset_names(config)
  sources = data_sources(config, workdir, names, 'train')
  weights = None
  if config.data.mixing == 'uniform':
    weights = {n: 1.0 for n, _ in sources}
  elif config.data.mixing != 'spin':
    raise ValueError(f'--config.data.mixing={config.data.mixing!r}: expected '
                     '"spin" or "uniform".')
  return InputPipeline(
      sources, batch_size=config.batch_size, weights=weights, seed=config.seed,
      train=True, augment_config=augment.AugmentConfig(
          img_res=config.model.img_res,
          flip_prob=float(config.data.get('flip_prob', 0.5)),
          noise_factor=float(config.data.get('noise_factor', 0.4))),
      num_workers=config.data.num_workers, ignore_3d=config.data.ignore_3d)


def validation_data(config, workdir: str):
  """A callable giving one pass over the validation split, or None."""
  split = config.data.eval_split
  if not split or config.eval_every <= 0:
    return None
  if split == 'synthetic_test':
    sources = data_sources(config, workdir, ['synthetic'], 'test')
  else:
    sources = [(split, datasets.data_source(split, data_dir_of(config, workdir)))]

  def batches():
    return InputPipeline(
        sources, batch_size=config.batch_size, train=False,
        augment_config=augment.AugmentConfig(img_res=config.model.img_res))

  return batches


# ---------------------------------------------------------------- stand-in
# In a module of its own (no grain, TFDS or OpenCV), so training from
# in-memory batches works on a machine without the data extras.
from spin_jax.function_data import FunctionData  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
