"""Two processes on localhost (jax.distributed, CPU gloo) == one process."""
import _train_testlib as tl

tl.enable_compile_cache()


def test_two_processes_match_one(tmp_path):
  # The one-device run is shared with the other file (see the helper).
  got, want = tl.parallel_and_one_device(tmp_path, 'two', nproc=2,
                                        host_devices=1)
  assert int(got.pop('num_devices')) == 2
  tl.assert_same(got, want, rtol=1e-4, atol=1e-5)
