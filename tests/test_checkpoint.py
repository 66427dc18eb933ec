"""Kill-and-resume: a resumed run continues exactly as if it had never stopped."""
import io
import os
import shutil
import sys
import threading

import pytest

import _train_testlib as tl
from spin_jax import checkpoint as ckpt_lib
from spin_jax import inference
from spin_jax import train

tl.enable_compile_cache()


def test_kill_and_resume_is_exact(tmp_path):
  cfg, bm, prior = tl.tiny_setup(num_train_steps=4, checkpoint_every=2)
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(cfg, straight, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  want = tl.final_arrays(straight)
  assert int(want['step']) == 4

  # Killed while fetching batch 3: the interrupt handler saves step 3.
  resumed = str(tmp_path / 'resumed')
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(cfg, resumed, body_model=bm, prior=prior,
                             train_data=tl.make_data(cfg, bm, fail_at=3))
  ckpt = ckpt_lib.Checkpointer(resumed, read_only=True)
  assert ckpt.all_steps() == [2, 3]
  # A fresh pipeline object: its position comes from the checkpoint.
  train.train_and_evaluate(cfg, resumed, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  tl.assert_same(tl.final_arrays(resumed), want, rtol=0, atol=0)

  # A hard kill (no handler) leaves the last periodic checkpoint: step 2.
  for step in (3, 4):
    shutil.rmtree(os.path.join(resumed, 'checkpoints', str(step)))
  train.train_and_evaluate(cfg, resumed, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  tl.assert_same(tl.final_arrays(resumed), want, rtol=0, atol=0)


def test_checkpoint_holds_config_and_fits(tmp_path):
  cfg, bm, prior = tl.tiny_setup(num_train_steps=2, checkpoint_every=0)
  wd = str(tmp_path / 'wd')
  train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  ckpt = ckpt_lib.Checkpointer(wd, read_only=True)
  assert ckpt.all_steps() == [2]  # saved at the end even without periodic saves
  restored = ckpt.restore_config()
  assert restored.model.backbone == cfg.model.backbone
  assert restored.smplify.iterations == cfg.smplify.iterations
  arrays = tl.final_arrays(wd)
  assert arrays['fits'].shape == (tl.NUM_ROWS, 82)
  # SPIN-format export of the table, next to the checkpoints.
  import numpy as np
  exported = np.load(os.path.join(wd, 'fits', 'synthetic_fits.npy'))
  np.testing.assert_array_equal(exported, arrays['fits'])
  model, config = inference.load_workdir_model(wd)
  assert config.model.img_res == cfg.model.img_res


def _largest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


def test_unreadable_latest_step_falls_back(tmp_path):
  """A truncated file in the newest step: training resumes from the step
  before (the bad one moved aside, never deleted) and ends bitwise equal to
  an uninterrupted run; read-only loading also falls back, touching nothing."""
  cfg, bm, prior = tl.tiny_setup(num_train_steps=4, checkpoint_every=2)
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(cfg, straight, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  want = tl.final_arrays(straight)

  run = str(tmp_path / 'run')
  cfg.num_train_steps = 3
  train.train_and_evaluate(cfg, run, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  assert ckpt_lib.Checkpointer(run, read_only=True).all_steps() == [2, 3]
  victim = _largest_file(os.path.join(run, 'checkpoints', '3', 'model'))
  with open(victim, 'r+b') as f:
    f.truncate(os.path.getsize(victim) // 2)

  # Read-only: step 3 is skipped, step 2 is used, nothing is moved.
  model, config = inference.load_workdir_model(run)
  assert config.model.img_res == cfg.model.img_res
  assert sorted(os.listdir(os.path.join(run, 'checkpoints'))) == ['2', '3']

  # Training: step 3 is moved aside and the run resumes from step 2.
  cfg.num_train_steps = 4
  train.train_and_evaluate(cfg, run, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  aside = os.listdir(os.path.join(run, 'checkpoints_unreadable'))
  assert len(aside) == 1 and aside[0].startswith('3-')
  assert os.path.isfile(os.path.join(run, 'checkpoints_unreadable', aside[0],
                                     os.path.relpath(victim, os.path.join(
                                         run, 'checkpoints', '3'))))
  tl.assert_same(tl.final_arrays(run), want, rtol=0, atol=0)


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
  cfg, bm, prior = tl.tiny_setup(num_train_steps=2, checkpoint_every=0)
  wd = str(tmp_path / 'wd')
  train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  meta = os.path.join(wd, 'checkpoints', '2', 'model', '_METADATA')
  assert os.path.isfile(meta)
  open(meta, 'w').close()  # an empty JSON file: the only step is unreadable
  with pytest.raises(FileNotFoundError,
                     match=r'No readable checkpoint in .*checkpoints.*step 2: '):
    inference.load_workdir_model(wd)
  with pytest.raises(FileNotFoundError, match='no checkpoint at step 7; steps present'):
    inference.load_workdir_model(wd, step=7)


def test_resuming_with_another_backbone_is_one_clear_error(tmp_path):
  """Another configuration is the user's error: one message, and the
  checkpoints stay where they are (never treated as damaged)."""
  cfg, bm, prior = tl.tiny_setup(num_train_steps=2, checkpoint_every=0)
  wd = str(tmp_path / 'wd')
  train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  cfg.model.hidden_dim = 2 * cfg.model.hidden_dim
  cfg.num_train_steps = 4
  with pytest.raises(ckpt_lib.CheckpointError, match='another configuration'):
    train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                             train_data=tl.make_data(cfg, bm))
  assert os.listdir(os.path.join(wd, 'checkpoints')) == ['2']
  assert not os.path.exists(os.path.join(wd, 'checkpoints_unreadable'))


def _write_from_another_thread(text):
  t = threading.Thread(target=lambda: sys.stderr.write(text))
  t.start()
  t.join()


def test_save_holds_other_threads_stderr(monkeypatch):
  """During a save, other threads' stderr (tensorstore's 'Event loop is
  closed' after a failed write) is held: written after a success, kept for
  --verbose after a failure; the calling thread writes through."""
  real = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', real)
  monkeypatch.setattr(ckpt_lib._HoldBackgroundOutput, 'GRACE_S', 0.0)
  with ckpt_lib._HoldBackgroundOutput() as held:
    sys.stderr.write('main 1\n')
    _write_from_another_thread('worker 1\n')
    assert real.getvalue() == 'main 1\n'
  assert real.getvalue() == 'main 1\nworker 1\n' and sys.stderr is real
  with pytest.raises(OSError):
    with ckpt_lib._HoldBackgroundOutput() as held:
      _write_from_another_thread('RuntimeError: Event loop is closed\n')
      raise OSError('disk full')
  assert real.getvalue() == 'main 1\nworker 1\n' and sys.stderr is real
  assert held.text == 'RuntimeError: Event loop is closed\n'


def test_restore_holds_unraisable_and_asyncio_reports(monkeypatch):
  """What a failed read leaves behind on the calling thread too (a coroutine
  collected with its error, asyncio's 'Future exception was never
  retrieved') is held; after `settle` nothing held is written out."""
  import asyncio
  import logging
  real = io.StringIO()
  monkeypatch.setattr(sys, 'stderr', real)
  monkeypatch.setattr(ckpt_lib._HoldBackgroundOutput, 'GRACE_S', 0.0)
  hook, asyncio_filters = sys.unraisablehook, list(logging.getLogger('asyncio').filters)

  class DiesWithAnError:  # as a coroutine collected with its error
    def __del__(self):
      raise RuntimeError('Event loop is closed')

  with ckpt_lib._HoldBackgroundOutput() as held:
    loop = asyncio.new_event_loop()
    loop.create_future().set_exception(ValueError('OUT_OF_RANGE ... OCDBT'))
    loop.close()
    DiesWithAnError()
    _write_from_another_thread('Traceback (most recent call last):\n')
    held.keep('the failed read\n')
    held.settle()  # collects the future: 'never retrieved'
    sys.stderr.write('Checkpoint step 4 ... cannot be read\n')
  assert real.getvalue() == 'Checkpoint step 4 ... cannot be read\n'
  assert 'Future exception was never retrieved' in held.text
  assert 'Exception ignored in' in held.text and 'Event loop is closed' in held.text
  assert 'Traceback' in held.text and 'the failed read' in held.text
  assert sys.unraisablehook is hook and sys.stderr is real
  assert logging.getLogger('asyncio').filters == asyncio_filters
