"""CPU-only tuning is chosen per backend: a GPU/TPU trace gets the plain forms
(reduce_window max pool, one-pass skinning, no XLA:CPU flags), same values."""
import os

import jax
import jax.numpy as jnp
import numpy as np

import body_fixtures
from spin_jax import cli
from spin_jax import models
from spin_jax import smpl


def _as_backend(monkeypatch, name):
  monkeypatch.setattr(jax, 'default_backend', lambda: name)


def _primitives(fn, *args):
  # A fresh function each time: jax caches traces per function.
  jaxpr = jax.make_jaxpr(lambda *a: fn(*a))(*args).jaxpr
  return {str(e.primitive) for e in jaxpr.eqns}


def test_max_pool_form_per_backend(monkeypatch):
  x = jax.random.normal(jax.random.key(0), (2, 9, 10, 3))
  grad = jax.grad(lambda v: jnp.sum(models.max_pool_3x3_s2(v) ** 2))
  _as_backend(monkeypatch, 'cpu')  # also when the tests run on a GPU
  cpu, cpu_grad = models.max_pool_3x3_s2(x), grad(x)
  assert 'reduce_window_max' not in _primitives(models.max_pool_3x3_s2, x)
  _as_backend(monkeypatch, 'gpu')
  assert 'reduce_window_max' in _primitives(models.max_pool_3x3_s2, x)
  np.testing.assert_array_equal(models.max_pool_3x3_s2(x), cpu)
  np.testing.assert_allclose(grad(x), cpu_grad, atol=1e-6)  # no ties here


def test_skinning_chunks_only_on_cpu(monkeypatch):
  model = body_fixtures.random_body_model(num_vertices=100)
  monkeypatch.setattr(smpl, 'MESH_CHUNK_VERTICES', 200)  # 2 rows per chunk
  rng = np.random.default_rng(0)
  args = (model, jnp.asarray(rng.normal(size=(5, 10)), jnp.float32),
          jnp.asarray(rng.normal(size=(5, 69)) * 0.3, jnp.float32),
          jnp.zeros((5, 3), jnp.float32))
  verts = lambda *a: smpl.forward(*a).vertices
  _as_backend(monkeypatch, 'cpu')
  assert 'scan' in _primitives(verts, *args)  # lax.map over the chunks
  cpu = verts(*args)
  _as_backend(monkeypatch, 'gpu')
  assert 'scan' not in _primitives(verts, *args)
  np.testing.assert_allclose(verts(*args), cpu, atol=1e-6)


def test_cpu_xla_flags_only_without_an_accelerator(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.setenv('JAX_PLATFORMS', 'cuda')
  cli.configure_xla()
  assert not any(f in os.environ['XLA_FLAGS'] for f in cli.CPU_XLA_FLAGS)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  cli.configure_xla()
  assert all(f in os.environ['XLA_FLAGS'] for f in cli.CPU_XLA_FLAGS)
