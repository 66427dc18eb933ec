"""The in-loop step: fits only improve, are stored un-augmented, never non-finite;
a non-finite step stops the run with a checkpoint of the last good state."""
import os
import traceback

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _train_testlib as tl
from spin_jax import augment
from spin_jax import checkpoint as ckpt_lib
from spin_jax import rotations
from spin_jax import step as step_lib
from spin_jax import train

tl.enable_compile_cache()


def _fake_pred(b, seed):
  """A network-like prediction: random pose near upright, mean-ish camera."""
  rng = np.random.default_rng(seed)
  aa = rng.normal(size=(b, 24, 3)).astype(np.float32) * 0.2
  aa[:, 0, 0] += np.pi
  return dict(rotmat=rotations.axis_angle_to_matrix(jnp.asarray(aa)),
              betas=jnp.zeros((b, 10)),
              cam=jnp.tile(jnp.array([[0.9, 0.0, 0.0]]), (b, 1)))


def test_fits_only_improve_and_are_stored_unaugmented():
  cfg, bm, prior = tl.tiny_setup()
  step_cfg = step_lib.StepConfig.create(cfg)
  targets_fn = jax.jit(step_lib.compute_targets, static_argnums=(5,))
  table, _ = train.init_fits_table(cfg, tl.NUM_ROWS, [('s', 0, tl.NUM_ROWS)])
  assert not np.any(np.asarray(table.has_fit))  # 'auto' + SMPLify: first fit wins
  for i in range(3):
    batch = tl.synthetic_batch(bm, cfg.batch_size, cfg.model.img_res,
                               tl.NUM_ROWS, seed=i)
    batch['index'][:2] = [5, 5]  # a repeated sample
    if i == 2:
      batch['keypoints'][3] = np.nan  # SMPLify's result is non-finite here
    old = jax.device_get(table)
    _, table, stats = targets_fn(_fake_pred(cfg.batch_size, i), batch, table,
                                 bm, prior, step_cfg)
    new, s = jax.device_get((table, stats))
    upd = s['fit_updated']
    # Kept loss = min(stored, new) and never above the stored fit's loss.
    assert np.all(s['fit_loss'][np.isfinite(s['old_fit_loss'])]
                  <= s['old_fit_loss'][np.isfinite(s['old_fit_loss'])])
    np.testing.assert_array_equal(upd, s['new_fit_loss'] < s['old_fit_loss'])
    if i == 2:
      assert not upd[3]
    # Rows not updated by any entry are unchanged.
    written = set(batch['index'][upd])
    for r in set(range(tl.NUM_ROWS)) - written:
      np.testing.assert_array_equal(new.params[r], old.params[r])
    # Updated rows hold the kept fit in the original frame (pipeline's numpy
    # inverse transform as the reference), betas unchanged.
    for k in np.flatnonzero(upd):
      r = batch['index'][k]
      if r == 5 and upd[0] and upd[1]:
        k = int(np.argmin(np.where(upd[:2], s['fit_loss'][:2], np.inf)))
      want = augment.untransform_pose(s['opt_pose'][k], float(batch['rot_angle'][k]),
                                      bool(batch['is_flipped'][k]))
      got = new.params[r, :72]
      # Compare as rotations (axis-angle near pi has two spellings).
      ra = np.asarray(rotations.axis_angle_to_matrix(jnp.asarray(got.reshape(24, 3))))
      rb = np.asarray(rotations.axis_angle_to_matrix(jnp.asarray(want.reshape(24, 3), jnp.float32)))
      np.testing.assert_allclose(ra, rb, atol=1e-4)
      np.testing.assert_allclose(new.params[r, 72:], s['opt_betas'][k], atol=1e-6)
      assert np.all(np.isfinite(new.params[r]))
    assert np.all(np.isfinite(new.params))
  assert np.any(np.asarray(table.has_fit))


def test_nonfinite_step_stops_with_last_good_checkpoint(tmp_path):
  cfg, bm, prior = tl.tiny_setup(num_train_steps=4, checkpoint_every=0)
  wd = str(tmp_path / 'wd')
  with pytest.raises(train.NonFiniteError, match='step 3.*saved as step 2'):
    train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                             train_data=tl.make_data(cfg, bm, nan_at=2))
  assert ckpt_lib.Checkpointer(wd, read_only=True).all_steps() == [2]
  arrays = tl.final_arrays(wd)
  for k, v in arrays.items():
    if k != 'fits_loss':  # inf = row never visited
      assert np.all(np.isfinite(v)), k


def test_eval_and_overlays_are_logged(tmp_path):
  cfg, bm, prior = tl.tiny_setup(num_train_steps=2, checkpoint_every=0,
                                 eval_every=2, render_every=2)
  evals = lambda: [tl.synthetic_batch(bm, cfg.batch_size, cfg.model.img_res,
                                      tl.NUM_ROWS, seed=100 + i) for i in range(2)]
  wd = str(tmp_path / 'wd')
  out = train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                                 train_data=tl.make_data(cfg, bm), eval_data=evals)
  for key in ('eval_start/pa_mpjpe', 'eval/pa_mpjpe', 'eval/mpjpe', 'eval/pve',
              'loss/total', 'fits/update_rate', 'train/steps_per_s'):
    assert np.isfinite(out[key]), key
  # PA-MPJPE <= MPJPE (alignment can only help), both in millimetres.
  assert 0 < out['eval/pa_mpjpe'] <= out['eval/mpjpe']
  logs = os.listdir(os.path.join(wd, 'tensorboard'))
  assert logs and os.path.getsize(os.path.join(wd, 'tensorboard', logs[0])) > 10_000


def test_learning_rate_schedules():
  from experiments.configs import default as default_config
  cfg = default_config.get_config()
  cfg.learning_rate = 1e-3
  const = step_lib.learning_rate_schedule(cfg, 100)  # SPIN: constant
  assert float(const(0)) == float(const(99)) == pytest.approx(1e-3)
  cfg.lr_schedule, cfg.warmup_steps = 'cosine', 10
  lr = step_lib.learning_rate_schedule(cfg, 100)
  assert float(lr(0)) == 0 and float(lr(5)) == pytest.approx(5e-4)
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(55)) == pytest.approx(5e-4, rel=1e-3) and float(lr(100)) == pytest.approx(0)
  # The optimiser follows the schedule: the first (warmup) update is zero.
  tx = step_lib.make_optimizer(cfg, 100)
  params = {'w': jnp.ones(3)}
  updates, _ = tx.update({'w': jnp.ones(3)}, tx.init(params), params)
  np.testing.assert_array_equal(updates['w'], 0)
  cfg.lr_schedule = 'step'
  with pytest.raises(ValueError, match='lr_schedule'):
    step_lib.make_optimizer(cfg, 100)


def test_nonfinite_steps_without_per_step_sync(tmp_path, monkeypatch):
  """The loop reads the device back only at log/checkpoint steps, yet a
  non-finite step changes nothing and no checkpoint holds one."""
  reads = []
  device_get = jax.device_get
  monkeypatch.setattr(jax, 'device_get',
                      lambda x: reads.append(traceback.extract_stack()[-2]) or device_get(x))
  cfg, bm, prior = tl.tiny_setup(num_train_steps=6, log_every=3,
                                 checkpoint_every=3, stop_on_nonfinite=False)
  wd = str(tmp_path / 'wd')
  out = train.train_and_evaluate(cfg, wd, body_model=bm, prior=prior,
                                 train_data=tl.make_data(cfg, bm, nan_at=1))
  # 7 steps dispatched (step 2's batch was NaN and is redone with the next);
  # the loop read the device back at the start and at steps 3, 3 and 6 only,
  # and checkpoint saves (steps 3, 6, the end) read what they write.
  loop = [f for f in reads if f.name == 'train_and_evaluate']
  assert len(loop) == 4, reads
  assert all(f.name == 'save_state' for f in reads if f not in loop), reads
  assert out['step'] == 6 and out['train/skipped_steps'] == 1
  assert ckpt_lib.Checkpointer(wd, read_only=True).all_steps() == [3, 6]
  arrays = tl.final_arrays(wd)
  assert int(arrays['step']) == 6
  for k, v in arrays.items():
    if k != 'fits_loss':  # inf = row never visited
      assert np.all(np.isfinite(v)), k
