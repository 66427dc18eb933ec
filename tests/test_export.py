"""Exported inference: reloaded without the training code, equal outputs."""
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from spin_jax import export
from spin_jax import models
from test_evaluate import tiny_body_model


def tiny_model():
  cfg = models.ModelConfig(backbone='resnet18', img_res=32, hidden_dim=32)
  return models.create_model(cfg, seed=1)


def test_exported_equals_in_process_at_two_batch_sizes(tmp_path):
  model, body = tiny_model(), tiny_body_model()
  fn = export.make_inference_fn(model, body)
  exported = export.export_inference(fn, img_res=32)
  path = str(tmp_path / 'model.jaxexport')
  export.save(exported, path)
  reloaded = export.load(path)
  assert str(reloaded.exported.in_avals[0].shape) == '(b, 32, 32, 3)'
  jit_fn = jax.jit(fn)
  rng = np.random.default_rng(0)
  for b in (1, 3):
    images = rng.normal(size=(b, 32, 32, 3)).astype(np.float32)
    got = reloaded.call(images)
    want = jit_fn(images)
    assert set(got) == set(export.OUTPUT_KEYS)
    for key in export.OUTPUT_KEYS:
      assert got[key].shape[0] == b
      np.testing.assert_allclose(np.asarray(got[key]), np.asarray(want[key]),
                                 rtol=1e-5, atol=1e-6, err_msg=key)
  assert got['vertices'].shape == (3, body.num_vertices, 3)
  assert got['joints'].shape == (3, 49, 3)
  # What the compiled function would take silently is refused.
  with pytest.raises(ValueError, match='float32.*float64'):
    reloaded.call(images.astype(np.float64))
  bad = images.copy()
  bad[0, 3, 4, 1] = np.nan
  with pytest.raises(ValueError, match='NaN'):
    reloaded.call(bad)
  with pytest.raises(ValueError, match=r'\(b, 32, 32, 3\)'):
    reloaded.call(images[:, :16])
  np.save(tmp_path / 'images.npy', images)
  np.save(tmp_path / 'want.npy', np.asarray(want['vertices']))
  # A fresh interpreter that imports only jax and numpy (no spin_jax, no flax).
  script = textwrap.dedent(f"""
      import sys
      import jax, numpy as np
      with open({path!r}, 'rb') as f:
        exp = jax.export.deserialize(bytearray(f.read()))
      out = exp.call(np.load({str(tmp_path / 'images.npy')!r}))
      want = np.load({str(tmp_path / 'want.npy')!r})
      assert not any(m.startswith(('spin_jax', 'flax')) for m in sys.modules)
      np.testing.assert_allclose(np.asarray(out['vertices']), want,
                                 rtol=1e-5, atol=1e-6)
      print('ok')
      """)
  res = subprocess.run([sys.executable, '-c', script], capture_output=True,
                       text=True, timeout=120,
                       env={'JAX_PLATFORMS': 'cpu', 'PATH': '/usr/bin:/bin'})
  assert res.returncode == 0 and res.stdout.strip() == 'ok', res.stderr[-2000:]


def test_load_errors_name_the_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope.jaxexport'):
    export.load(str(tmp_path / 'nope.jaxexport'))
  bad = tmp_path / 'bad.jaxexport'
  bad.write_bytes(b'not an export')
  with pytest.raises(ValueError, match='bad.jaxexport'):
    export.load(str(bad))
