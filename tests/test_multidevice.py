"""Data parallel on 4 forced host devices == 1 device (params and fits)."""
import _train_testlib as tl

tl.enable_compile_cache()


def test_four_devices_match_one(tmp_path):
  # The one-device run is shared with the other file (see the helper).
  got, want = tl.parallel_and_one_device(tmp_path, 'four', nproc=1,
                                        host_devices=4)
  assert int(got.pop('num_devices')) == 4
  # Same maths, different reduction order (BatchNorm statistics, gradients).
  tl.assert_same(got, want, rtol=1e-4, atol=1e-5)
