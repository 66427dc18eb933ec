r"""Evaluates a regressor checkpoint on a dataset with SPIN's protocol.

  python experiments/eval.py --checkpoint=runs/quickstart --dataset=synthetic
  python experiments/eval.py --checkpoint=converted_spin --dataset=3dpw \
      --data_dir=~/tensorflow_datasets --body_model=/path/to/smpl \
      --gt_body_model_male=/path/SMPL_MALE.pkl \
      --gt_body_model_female=/path/SMPL_FEMALE.pkl

--checkpoint is a training workdir (orbax, experiments/train.py) or a directory
written by experiments/convert_checkpoint.py. Prints the dataset means (mm,
%), writes per-sample results (--results_file, .npz or .csv) and, with --json,
the summary as JSON (also the last stdout line).
"""
from __future__ import annotations

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from spin_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

from spin_jax import evaluate  # pylint: disable=g-import-not-at-top
from spin_jax import inference

_CHECKPOINT = flags.DEFINE_string('checkpoint', None, 'Training workdir or '
                                  'converted SPIN checkpoint directory.')
_DATASET = flags.DEFINE_enum('dataset', None, sorted(evaluate.EVAL_SPECS),
                             'Evaluation dataset.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: '
                                'the checkpoint\'s, else ~/tensorflow_datasets).')
_BODY_MODEL = flags.DEFINE_string('body_model', None, "'default', "
                                  "'default-low' or a path to SMPL files "
                                  '(default: the checkpoint\'s).')
_GT_MALE = flags.DEFINE_string('gt_body_model_male', None,
                               '3DPW ground truth: SMPL_MALE.pkl (or folder).')
_GT_FEMALE = flags.DEFINE_string('gt_body_model_female', None,
                                 '3DPW ground truth: SMPL_FEMALE.pkl.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32, 'Batch size (SPIN: 32).')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', -1,
                                     'Evaluate only the first N (-1: all).')
_RESULTS_FILE = flags.DEFINE_string('results_file', None, 'Per-sample results '
                                    '(.npz or .csv); default '
                                    'CHECKPOINT/eval_DATASET.npz.')
_JSON = flags.DEFINE_string('json', None, 'Write the summary here as JSON.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default latest).')
_SYNTHETIC_SIZE = flags.DEFINE_string(
    'synthetic_size', None, '--dataset=synthetic without a training workdir: '
    'the size preset it was built with (tiny, quickstart, small, large).')
flags.mark_flags_as_required(['checkpoint', 'dataset'])


def main(argv):
  del argv
  loaded = inference.load_model(_CHECKPOINT.value, step=_STEP.value,
                                body_model=_BODY_MODEL.value)
  predictor = inference.Predictor(loaded.model, loaded.body_model)
  gt_models = None
  if _GT_MALE.value or _GT_FEMALE.value:
    if not (_GT_MALE.value and _GT_FEMALE.value):
      raise app.UsageError('--gt_body_model_male and --gt_body_model_female '
                           'go together.')
    from spin_jax import smpl_io  # pylint: disable=g-import-not-at-top
    gt_models = dict(
        male=smpl_io.load_body_model(_GT_MALE.value, gender='male'),
        female=smpl_io.load_body_model(_GT_FEMALE.value, gender='female'))
  data_dir = _DATA_DIR.value or loaded.data_dir
  examples, total = evaluate.load_examples(_DATASET.value, data_dir,
                                           _NUM_EXAMPLES.value,
                                           config=loaded.config,
                                           synthetic_size=_SYNTHETIC_SIZE.value,
                                           body_model=loaded.body_model_spec)
  results_file = _RESULTS_FILE.value or os.path.join(
      _CHECKPOINT.value, f'eval_{_DATASET.value}.npz')
  summary = evaluate.evaluate(
      predictor,
      evaluate.batched(examples, _BATCH_SIZE.value, predictor.img_res),
      _DATASET.value, body_model=loaded.body_model, gt_body_models=gt_models,
      batch_size=_BATCH_SIZE.value, num_examples=total,
      results_file=results_file)
  summary.update(dataset=_DATASET.value, checkpoint=_CHECKPOINT.value,
                 results_file=results_file)
  for key, value in summary.items():
    if isinstance(value, float):
      print(f'{key:>12s}: {value:.2f}')
  if _JSON.value:
    evaluate.write_json(_JSON.value, summary)
  print(json.dumps(summary, sort_keys=True))


if __name__ == '__main__':
  cli.run(main)
