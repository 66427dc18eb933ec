"""Fails if a JAX (or jaxopt) upgrade breaks the least-squares solvers we use.

jaxopt is unmaintained; spin_jax.optim_lsq is its only importer. These checks
exercise exactly what SMPLify's fast mode relies on: LevenbergMarquardt with a
materialised Jacobian (autodiff or supplied) under jit and vmap, GaussNewton,
and our own levenberg_marquardt_dense (the default) and matrix-free
levenberg_marquardt_cg (linearize + linear_transpose), on a problem with a
known exact solution.
"""
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from spin_jax import optim_lsq

_T = jnp.linspace(0.0, 2.0, 12)


def _residual(params, y):
  """Noise-free exponential decay a exp(-k t) + c: a nonlinear, exact fit."""
  return params['a'] * jnp.exp(-params['k'] * _T) + params['c'] - y


def _jacobian(params, y):  # (12, 3) in ravel order: a, c, k (sorted keys)
  del y
  e = jnp.exp(-params['k'] * _T)
  return jnp.stack([e, jnp.ones_like(_T), -params['a'] * _T * e], -1)


_TRUE = dict(a=jnp.array([2.0, -1.0, 0.5]), k=jnp.array([1.5, 0.3, 2.0]),
             c=jnp.array([0.1, 0.0, -0.4]))


def _assert_vmapped_fit_recovers_truth(**solver_kwargs):
  """Fits the three problems of _TRUE at once (jit + vmap) from a poor start."""
  y = jax.vmap(lambda p: _residual(p, 0.0))(_TRUE)  # (3, 12) data
  init = jax.tree.map(lambda x: x * 0.7 + 0.1, _TRUE)
  fit = jax.jit(jax.vmap(lambda p, y: optim_lsq.least_squares(
      _residual, p, y, maxiter=30, **solver_kwargs)))
  out = fit(init, y)
  for key in _TRUE:
    np.testing.assert_allclose(out[key], _TRUE[key], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize('solver,with_jac', [('levenberg_marquardt', False),
                                             ('levenberg_marquardt', True),
                                             ('gauss_newton', False),
                                             ('gauss_newton', True)])
def test_solver_recovers_exact_parameters_vmapped(solver, with_jac):
  _assert_vmapped_fit_recovers_truth(solver=solver,
                                     jac_fn=_jacobian if with_jac else None)


@pytest.mark.parametrize('preconditioned', [False, True])
def test_matrix_free_lm_recovers_exact_parameters_vmapped(preconditioned):
  # Our own solver (no jaxopt): CG on the 3-parameter damped normal equations.
  # A poor but SPD stand-in for J^T J (ravel order a, c, k).
  m = jnp.diag(jnp.array([5.0, 12.0, 1.0])) if preconditioned else None
  _assert_vmapped_fit_recovers_truth(solver='levenberg_marquardt_cg',
                                     cg_iterations=3, preconditioner=m)


@pytest.mark.parametrize('fused', [False, True])
def test_dense_lm_recovers_exact_parameters_vmapped(fused):
  # Our own dense solver (no jaxopt), residuals and Jacobian from one call.
  both = lambda p, y: (_residual(p, y), _jacobian(p, y))
  _assert_vmapped_fit_recovers_truth(solver='levenberg_marquardt_dense',
                                     value_and_jac_fn=both if fused else None)


@pytest.mark.parametrize('solver', ['levenberg_marquardt_cg',
                                    'levenberg_marquardt_dense'])
def test_our_lm_never_takes_a_worse_step(solver):
  # From the exact solution every step can only be rejected.
  y = _residual(jax.tree.map(lambda x: x[0], _TRUE), 0.0)
  truth = jax.tree.map(lambda x: x[0], _TRUE)
  out = optim_lsq.least_squares(_residual, truth, y, maxiter=3, solver=solver,
                                cg_iterations=2)
  for key in truth:
    np.testing.assert_array_equal(out[key], truth[key])


def test_supplied_jacobian_is_used():
  # A wrong supplied Jacobian must change the result: proves it is not ignored
  # (jaxopt 0.8.5 silently drops LevenbergMarquardt(jac_fun=...)).
  y = _residual(jax.tree.map(lambda x: x[0], _TRUE), 0.0)
  init = dict(a=jnp.array(1.0), k=jnp.array(1.0), c=jnp.array(0.0))
  good = optim_lsq.least_squares(_residual, init, y, maxiter=5, jac_fn=_jacobian)
  bad = optim_lsq.least_squares(_residual, init, y, maxiter=5,
                                jac_fn=lambda p, y: 0.5 * _jacobian(p, y))
  assert abs(float(good['k']) - float(bad['k'])) > 1e-4


def test_unknown_solver():
  with pytest.raises(ValueError, match='solver'):
    optim_lsq.least_squares(_residual, _TRUE, 0.0, solver='adam')


def test_import_is_quiet():
  # The module silences only jaxopt's own "no longer maintained" warning.
  code = ('import warnings; warnings.simplefilter("error", DeprecationWarning); '
          'import spin_jax.optim_lsq')
  proc = subprocess.run([sys.executable, '-c', code], capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_optim_lsq_is_the_only_jaxopt_importer():
  root = pathlib.Path(optim_lsq.__file__).parent
  users = sorted(p.name for p in root.rglob('*.py')
                 if re.search(r'^\s*(import|from)\s+jaxopt', p.read_text(), re.M))
  assert users == ['optim_lsq.py'], users
