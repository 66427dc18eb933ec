"""Data parallel on 4 forced host devices == 1 device (params and fits)."""
import _train_testlib as tl
from spin_jax import train

tl.enable_compile_cache()


def test_four_devices_match_one(tmp_path):
  steps = 3
  cfg, bm, prior = tl.tiny_setup(num_train_steps=steps, checkpoint_every=0)
  one = str(tmp_path / 'one')
  train.train_and_evaluate(cfg, one, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  want = tl.final_arrays(one)
  got = tl.run_subprocesses(str(tmp_path / 'four'), str(tmp_path / 'four.npz'),
                            steps, nproc=1, host_devices=4)
  assert int(got.pop('num_devices')) == 4
  # Same maths, different reduction order (BatchNorm statistics, gradients).
  tl.assert_same(got, want, rtol=1e-4, atol=1e-5)
