r"""Input-pipeline throughput: augmented 224x224 training samples per second.

  python experiments/benchmarks/input_pipeline.py --json /tmp/input_pipeline.json

Reads the synthetic TFDS dataset (ArrayRecord, JPEG images of --image_size
pixels; built into --data_dir first if missing, which is not timed), runs
spin_jax.input_pipeline.InputPipeline in training mode (SPIN mixing, full
augmentation: one affine warp, flip, pixel noise, normalisation) with
--num_workers grain processes, and times --num_batches batches after
--warmup_batches. Each sample: JPEG decode, warp to 224x224, keypoint / 3D /
pose transforms, float32 normalisation.

The last stdout line is JSON with samples_per_s and the settings.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time

from absl import app
from absl import flags

_JSON = flags.DEFINE_string('json', None, 'Write the result JSON here too.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data dir holding (or to hold) the synthetic set; '
    'default: a temporary directory.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 256,
                                   'Side of the stored synthetic images.')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', 96,
                                     'Examples per synthetic training split.')
_NUM_WORKERS = flags.DEFINE_integer('num_workers', 2, 'grain worker processes.')
_NUM_THREADS = flags.DEFINE_integer('num_threads', 2, 'Threads per process.')
_BATCH = flags.DEFINE_integer('batch_size', 32, 'Batch size.')
_IMG_RES = flags.DEFINE_integer('img_res', 224, 'Crop side in pixels.')
_BATCHES = flags.DEFINE_integer('num_batches', 20, 'Timed batches.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 3, 'Untimed first batches.')


def main(argv):
  del argv
  from spin_jax import augment, input_pipeline  # pylint: disable=g-import-not-at-top
  from spin_jax.datasets import synthetic  # pylint: disable=g-import-not-at-top
  tmp = None
  data_dir = _DATA_DIR.value
  if data_dir is None:
    tmp = tempfile.TemporaryDirectory(prefix='spin_jax_bench_')
    data_dir = tmp.name
  n = _NUM_EXAMPLES.value
  kw = dict(size=None, num_train_3d=n, num_train_2d=n, num_test=0,
            image_size=_IMAGE_SIZE.value, seed=0, body_model='default-low')
  t0 = time.perf_counter()
  sources = synthetic.sources(data_dir, 'train', **kw)
  build_s = time.perf_counter() - t0
  with input_pipeline.InputPipeline(
      sources, batch_size=_BATCH.value, seed=0, train=True,
      augment_config=augment.AugmentConfig(img_res=_IMG_RES.value),
      num_workers=_NUM_WORKERS.value, num_threads=_NUM_THREADS.value,
      shard_index=0, shard_count=1) as pipe:
    t0 = time.perf_counter()
    for _ in range(_WARMUP.value):
      next(pipe)
    startup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(_BATCHES.value):
      batch = next(pipe)
    elapsed = time.perf_counter() - t0
  assert batch['image'].shape == (_BATCH.value, _IMG_RES.value, _IMG_RES.value, 3)
  result = dict(
      samples_per_s=round(_BATCHES.value * _BATCH.value / elapsed, 1),
      batch_size=_BATCH.value, img_res=_IMG_RES.value,
      num_workers=_NUM_WORKERS.value, num_threads=_NUM_THREADS.value,
      num_batches=_BATCHES.value, stored_image_size=_IMAGE_SIZE.value,
      warmup_s=round(startup_s, 2), dataset_build_s=round(build_s, 2),
      cpu_count=os.cpu_count(), machine=platform.machine(),
      load_avg_1min=round(os.getloadavg()[0], 2))
  if tmp is not None:
    tmp.cleanup()
  from spin_jax import fileio  # pylint: disable=g-import-not-at-top
  fileio.print_json_line(result, _JSON.value)


if __name__ == '__main__':
  app.run(main)
