"""Two processes on localhost (jax.distributed, CPU gloo) == one process."""
import _train_testlib as tl
from spin_jax import train

tl.enable_compile_cache()


def test_two_processes_match_one(tmp_path):
  steps = 3
  cfg, bm, prior = tl.tiny_setup(num_train_steps=steps, checkpoint_every=0)
  one = str(tmp_path / 'one')
  train.train_and_evaluate(cfg, one, body_model=bm, prior=prior,
                           train_data=tl.make_data(cfg, bm))
  want = tl.final_arrays(one)
  got = tl.run_subprocesses(str(tmp_path / 'two'), str(tmp_path / 'two.npz'),
                            steps, nproc=2, host_devices=1)
  assert int(got.pop('num_devices')) == 2
  tl.assert_same(got, want, rtol=1e-4, atol=1e-5)
