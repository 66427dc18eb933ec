"""TFDS builders (manual download, array_record) for SPIN's datasets.

One builder per entry of spin_jax.datasets.SPIN_DATASETS, named by its
`builder` field (spin_lsp_orig, spin_h36m_p1, ...), with one split. Examples
follow schema.py. The records come from the raw release in `manual_dir`
(see each reader module) or from any `source` callable passed to the builder,
e.g. SPIN's npz via spin_npz.read_spin_npz.

    builder = make_builder('lsp-orig', data_dir=..., static_fits=...)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=...))
"""
from __future__ import annotations

import collections
from concurrent import futures
import functools
import io
import itertools
import logging
import multiprocessing
import os
from typing import Callable

from etils import epath
import numpy as np
import tensorflow_datasets as tfds
import tqdm

from spin_jax import datasets as registry
from spin_jax.datasets import common, schema, static_fits

_IMAGE_FIELDS = ('image', 'mask', 'part_segmentation')


class SpinBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base builder; subclasses set SPEC (a registry.DatasetSpec)."""

  VERSION = tfds.core.Version(schema.SCHEMA_VERSION)
  RELEASE_NOTES = {schema.SCHEMA_VERSION: 'SPIN schema with margin crops.'}
  SPEC: registry.DatasetSpec

  # TFDS looks for per-builder files (checksums, README) beside the builder's
  # module through importlib_resources, which is not installed with it; point
  # it at this file directly (we have no checksums: manual download only).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):  # pylint: disable=no-self-argument
    return epath.Path(__file__)

  def __init__(self, *, source: Callable[[], list[dict]] | None = None,
               static_fits: str | None = None,
               mean_params: str | None = None,
               max_examples: int | None = None,
               num_workers: int = 0,
               max_crop_side: int = schema.MAX_CROP_SIDE,
               progress: bool = True, **kwargs):
    """source: callable -> records (default: the raw reader on manual_dir).

    static_fits: SPIN's <dataset>_fits.npy, attached by row (has_fit 1); rows
      without it get the mean-parameter fit (has_fit 0).
    max_examples: keep only the first N records (quick trials, tests).
    num_workers: processes that decode/crop/encode images (0: in-process).
    """
    kwargs.setdefault('file_format', 'array_record')
    super().__init__(**kwargs)
    self._source = source
    self._static_fits = static_fits
    self._mean_params = mean_params
    self._max_examples = max_examples
    self._num_workers = num_workers
    self._max_crop_side = max_crop_side
    self._progress = progress
    self.fits_table: np.ndarray | None = None  # set by generation

  def _info(self):
    return self.dataset_info_from_configs(
        description=(f"SPIN's {self.SPEC.name} ({self.SPEC.split}) in the "
                     'spin_jax schema (spin_jax/datasets/schema.py): margin '
                     'crops, labels in crop pixels, SPIN npz row order.'),
        features=schema.features(segmentation=self.SPEC.segmentation),
        supervised_keys=None,
        # Keep SPIN's row order on disk: source[i] is the example of index i.
        disable_shuffling=True,
        homepage='https://github.com/nkolot/SPIN',
    )

  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Unpack the dataset release into manual_dir in the layout documented in '
      "spin_jax/datasets/<module>.py, or import SPIN's npz with "
      'data_prep/build.py --from_spin_npz.')

  def _split_generators(self, dl_manager):
    if self._source is not None:
      records = self._source()
    else:
      records = registry.read_raw(self.SPEC.name, str(dl_manager.manual_dir))
    if self._max_examples is not None:
      records = records[:self._max_examples]
    if not records:
      raise common.DatasetFormatError(
          f'{self.SPEC.name}: the source yielded no examples')
    _check_files(records)
    self.fits_table, has_fit = self._fits(len(records))
    return {self.SPEC.split: self._generate_examples(records, has_fit)}

  def _fits(self, n: int):
    if self._static_fits:
      fits = static_fits.load_static_fits(self._static_fits)
      if self._max_examples is not None:
        fits = fits[:n]
      if len(fits) != n:
        raise common.DatasetFormatError(
            f'{self._static_fits}: {len(fits)} rows but {self.SPEC.name} has '
            f'{n} examples (fits rows follow the npz order one to one)')
      return fits, True
    table = np.tile(static_fits.mean_params_fit(self._mean_params), (n, 1))
    return table, False

  def _generate_examples(self, records, has_fit):
    jobs = ((r, i, self.fits_table[i], has_fit, self._max_crop_side)
            for i, r in enumerate(records))
    bar = functools.partial(tqdm.tqdm, total=len(records), unit='img',
                            desc=f'{self.SPEC.name}', disable=not self._progress)
    if self._num_workers > 0:
      examples = _ordered_map(common.make_example_job, jobs, self._num_workers)
    else:
      examples = map(common.make_example_job, jobs)
    for ex in bar(examples):
      yield int(ex['index']), _wrap(ex)


def _ordered_map(fn, jobs, num_workers: int, chunk: int = 8):
  """fn over jobs in spawned processes, in order, with a bounded backlog.

  A process pool executor (not multiprocessing.Pool): a worker that cannot
  start (e.g. a __main__ read from stdin) raises BrokenProcessPool instead of
  hanging. Spawned workers import numpy/OpenCV only, never TensorFlow.
  """
  ctx = multiprocessing.get_context('spawn')
  window = 4 * num_workers
  with futures.ProcessPoolExecutor(num_workers, mp_context=ctx) as pool:
    pending = collections.deque()
    it = iter(jobs)
    while True:
      while len(pending) < window:
        batch = list(itertools.islice(it, chunk))
        if not batch:
          break
        pending.append(pool.submit(common.run_batch, fn, batch))
      if not pending:
        return
      yield from pending.popleft().result()


def _check_files(records: list[dict]) -> None:
  """Fails before any work when image/mask files are missing (names a few)."""
  keys = ('image_path', 'mask_path', 'part_path')
  missing = [r[k] for r in records for k in keys
             if r.get(k) and not os.path.isfile(r[k])]
  if missing:
    shown = '\n  '.join(missing[:5])
    raise common.DatasetFormatError(
        f'{len(missing)} of the files the examples need are missing, e.g.:\n'
        f'  {shown}\n(check --manual_dir / --image_dir / --mask_dir)')


def _wrap(ex: dict) -> dict:
  for k in _IMAGE_FIELDS:
    if k in ex:
      ex[k] = io.BytesIO(ex[k])
  return ex


def _make_class(spec: registry.DatasetSpec) -> type:
  cls_name = ''.join(p.capitalize() for p in spec.builder.split('_'))
  return type(cls_name, (SpinBuilder,), dict(
      name=spec.builder, SPEC=spec, __module__=__name__,
      __doc__=f"SPIN's {spec.name} {spec.split} split (reader {spec.reader})."))


BUILDERS = {name: _make_class(s) for name, s in registry.SPIN_DATASETS.items()}


def make_builder(name: str, data_dir: str, **kwargs) -> SpinBuilder:
  return BUILDERS[registry.spec(name).name](data_dir=data_dir, **kwargs)


def prepare(name: str, data_dir: str, manual_dir: str | None = None,
            **kwargs) -> SpinBuilder:
  """Builds dataset `name` (no-op if already built) and writes its fits table."""
  if manual_dir is None and kwargs.get('source') is None:
    raise ValueError(f'{name}: give manual_dir (the raw release) or source '
                     "(e.g. SPIN's npz through spin_npz.read_spin_npz)")
  builder = make_builder(name, data_dir, **kwargs)
  config = tfds.download.DownloadConfig(manual_dir=manual_dir)
  builder.download_and_prepare(download_config=config)
  if builder.fits_table is not None and registry.spec(name).split == 'train':
    static_fits.save_table(registry.fits_table_path(name, data_dir),
                           builder.fits_table)
  elif builder.fits_table is None:
    logging.info('%s already built in %s', name, data_dir)
  return builder
