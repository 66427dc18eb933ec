"""Second-order nonlinear least squares: the only module that imports jaxopt.

jaxopt is unmaintained upstream; keeping it behind `least_squares` means a
replacement (or our own Levenberg-Marquardt) touches this file only.
tests/test_jaxopt_compat.py fails if a JAX upgrade breaks the solver we use.
"""
from __future__ import annotations

from collections.abc import Callable
import warnings

import jax
from jax.flatten_util import ravel_pytree

with warnings.catch_warnings():
  # jaxopt warns on import that it is no longer maintained; we know, and pin it.
  warnings.filterwarnings('ignore', message='JAXopt is no longer maintained',
                          category=DeprecationWarning)
  import jaxopt

SOLVERS = ('levenberg_marquardt', 'gauss_newton')


def least_squares(residual_fn: Callable[..., jax.Array], init_params, *args,
                  maxiter: int = 10, solver: str = 'levenberg_marquardt',
                  damping: float = 1e-6,
                  jac_fn: Callable[..., jax.Array] | None = None):
  """Minimises sum(residual_fn(params, *args)**2) from init_params.

  Unbatched: vmap it for per-sample problems (each sample then keeps its own
  LM damping and accept/reject decisions). The Jacobian is materialised with
  forward-mode autodiff, cheap for the few dozen parameters of a body fit.

  Args:
    residual_fn: (params pytree, *args) -> (R,) residuals.
    init_params: pytree of arrays.
    *args: passed through to residual_fn (traced).
    maxiter: number of solver iterations (the gradient-norm stop rarely fires
      on fitting objectives, so this is usually the exact count).
    solver: 'levenberg_marquardt' (accepts a step only if it lowers the
      objective) or 'gauss_newton' (undamped, every step taken).
    damping: LM initial damping relative to max diag(J^T J).
    jac_fn: optional (params pytree, *args) -> (R, P) Jacobian with respect to
      the flattened params (ravel_pytree order); default: forward-mode autodiff
      of residual_fn. Supplying known blocks analytically saves most of the
      cost when only some residuals need autodiff.

  Returns:
    params pytree of the same structure.
  """
  flat, unravel = ravel_pytree(init_params)

  def flat_residual(x, *a):
    return residual_fn(unravel(x), *a)

  if jac_fn is not None:
    # Through a custom JVP, so jacfwd (LM) and jvp/vjp (GN) both use it.
    # (jaxopt 0.8.5 ignores LevenbergMarquardt(jac_fun=...) when
    # materialize_jac=True: it never sets its internal Jacobian function.)
    flat_residual = _with_jacobian(flat_residual,
                                   lambda x, *a: jac_fn(unravel(x), *a))
  if solver == 'levenberg_marquardt':
    opt = jaxopt.LevenbergMarquardt(
        flat_residual, maxiter=maxiter, damping_parameter=damping,
        solver='cholesky', materialize_jac=True, implicit_diff=False,
        tol=0.0, xtol=0.0, gtol=0.0)
  elif solver == 'gauss_newton':
    opt = jaxopt.GaussNewton(flat_residual, maxiter=maxiter,
                             implicit_diff=False, tol=0.0)
  else:
    raise ValueError(f'least_squares: solver must be one of {SOLVERS}; got {solver!r}.')
  return unravel(opt.run(flat, *args).params)


def _with_jacobian(fn, jac):
  """fn with forward-mode derivative J(x) @ dx taken from `jac`."""

  @jax.custom_jvp
  def wrapped(x, *a):
    return fn(x, *a)

  @wrapped.defjvp
  def _(primals, tangents):  # only x is differentiated (args are data)
    x, *a = primals
    return fn(x, *a), jac(x, *a) @ tangents[0]

  return wrapped


__all__ = ['least_squares', 'SOLVERS']
