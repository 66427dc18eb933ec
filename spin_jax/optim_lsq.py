"""Second-order nonlinear least squares: the only module that imports jaxopt.

jaxopt is unmaintained upstream; keeping it behind `least_squares` means a
replacement (or our own Levenberg-Marquardt) touches this file only.
tests/test_jaxopt_compat.py fails if a JAX upgrade breaks the solver we use.

Solvers:
  'levenberg_marquardt' (jaxopt, materialised Jacobian, Cholesky step);
  'gauss_newton' (jaxopt, undamped);
  'levenberg_marquardt_cg' (ours, no jaxopt): matrix-free damped Gauss-Newton.
    Each step solves (J^T J + lam diag(M)) dx = -J^T r by a fixed number of
    preconditioned conjugate-gradient iterations, each one Jacobian-vector
    product plus its transpose (~2 gradients), so J is never formed; a step is
    taken only if it lowers the objective (lam / 3 if so, x 4 if not).
    M is an optional (P, P) SPD approximation of J^T J (default I), used as
    the CG preconditioner and as the damping scale.
  'levenberg_marquardt_dense' (ours, no jaxopt): Levenberg-Marquardt with the
    Jacobian formed, for callers that compute residuals and Jacobian together
    (`value_and_jac_fn`: one evaluation per step, against jaxopt's separate
    residual and Jacobian calls). Each step solves
    (J^T J + lam diag(J^T J)) dx = -J^T r by Cholesky; a step is taken only if
    it lowers the objective (lam / 3 if so, x 4 if not); a rejected step keeps
    the Jacobian already computed.
"""
from __future__ import annotations

from collections.abc import Callable
import warnings

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse import linalg as sparse_linalg

with warnings.catch_warnings():
  # jaxopt warns on import that it is no longer maintained; we know, and pin it.
  warnings.filterwarnings('ignore', message='JAXopt is no longer maintained',
                          category=DeprecationWarning)
  import jaxopt

SOLVERS = ('levenberg_marquardt', 'gauss_newton', 'levenberg_marquardt_cg',
           'levenberg_marquardt_dense')
_DEFAULT_DAMPING = {'levenberg_marquardt': 1e-6, 'gauss_newton': 0.0,
                    'levenberg_marquardt_cg': 1e-3,
                    'levenberg_marquardt_dense': 1e-3}


def least_squares(residual_fn: Callable[..., jax.Array], init_params, *args,
                  maxiter: int = 10, solver: str = 'levenberg_marquardt',
                  damping: float | None = None,
                  jac_fn: Callable[..., jax.Array] | None = None,
                  cg_iterations: int = 6, preconditioner: jax.Array | None = None,
                  value_and_jac_fn: Callable[..., tuple[jax.Array, jax.Array]] | None = None,
                  return_history: bool = False):
  """Minimises sum(residual_fn(params, *args)**2) from init_params.

  Unbatched: vmap it for per-sample problems (each sample then keeps its own
  LM damping and accept/reject decisions). The jaxopt solvers materialise the
  Jacobian by forward-mode autodiff; levenberg_marquardt_cg never forms it.

  Args:
    residual_fn: (params pytree, *args) -> (R,) residuals.
    init_params: pytree of arrays.
    *args: passed through to residual_fn (traced).
    maxiter: number of solver iterations (the gradient-norm stop rarely fires
      on fitting objectives, so this is usually the exact count).
    solver: 'levenberg_marquardt' (accepts a step only if it lowers the
      objective), 'gauss_newton' (undamped, every step taken) or
      'levenberg_marquardt_cg' (matrix-free; accepts only improving steps).
    damping: initial damping; default per solver. levenberg_marquardt:
      relative to max diag(J^T J) (1e-6); levenberg_marquardt_cg: lam, relative
      to diag(preconditioner) (1e-3); unused by gauss_newton.
    jac_fn: optional (params pytree, *args) -> (R, P) Jacobian with respect to
      the flattened params (ravel_pytree order); default: forward-mode autodiff
      of residual_fn. Supplying known blocks analytically saves most of the
      cost when only some residuals need autodiff. Ignored by
      levenberg_marquardt_cg, which needs only Jacobian-vector products.
    cg_iterations: levenberg_marquardt_cg: CG iterations per step (P of them
      solve the damped system exactly in exact arithmetic).
    preconditioner: levenberg_marquardt_cg: optional (P, P) symmetric positive
      definite approximation of J^T J (ravel order); default identity.
    value_and_jac_fn: levenberg_marquardt_dense: optional (params pytree,
      *args) -> ((R,) residuals, (R, P) Jacobian), computed together; default:
      residual_fn and jac_fn (or forward-mode autodiff).

    return_history: levenberg_marquardt_dense / _cg only: also return the
      objective (sum of squares) at the start and after each iteration.

  Returns:
    params pytree of the same structure; with return_history, (params,
    (maxiter + 1,) objectives).
  """
  if solver not in SOLVERS:
    raise ValueError(f'least_squares: solver must be one of {SOLVERS}; got {solver!r}.')
  if return_history and solver in ('levenberg_marquardt', 'gauss_newton'):
    raise ValueError(f'least_squares: return_history needs one of our solvers '
                     f'(levenberg_marquardt_dense, levenberg_marquardt_cg), not '
                     f'jaxopt\'s {solver!r}.')
  finish = ((lambda x, hist: (unravel(x), hist)) if return_history
            else (lambda x, hist: unravel(x)))
  if damping is None:
    damping = _DEFAULT_DAMPING[solver]
  flat, unravel = ravel_pytree(init_params)

  def flat_residual(x, *a):
    return residual_fn(unravel(x), *a)

  if solver == 'levenberg_marquardt_dense':
    if value_and_jac_fn is not None:
      both = lambda x: value_and_jac_fn(unravel(x), *args)
    else:
      jac = (jax.jacfwd(flat_residual) if jac_fn is None
             else lambda x, *a: jac_fn(unravel(x), *a))
      both = lambda x: (flat_residual(x, *args), jac(x, *args))
    return finish(*_lm_dense(both, flat, maxiter, damping))
  if solver == 'levenberg_marquardt_cg':
    return finish(*_lm_cg(lambda x: flat_residual(x, *args), flat, maxiter,
                          cg_iterations, damping, preconditioner))
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
  return unravel(opt.run(flat, *args).params)


def _take_if_lower(f_new, f, new, old, lam):
  """LM's step rule: (`new` if f_new < f else `old`, lam / 3 or lam x 4).

  A NaN f_new compares False, so a non-finite step is never taken.
  """
  better = f_new < f
  chosen = jax.tree.map(lambda n, o: jnp.where(better, n, o), new, old)
  return chosen, jnp.where(better, lam / 3.0, lam * 4.0)


def _lm_cg(fn, x, maxiter, cg_iterations, damping, preconditioner):
  """Matrix-free Levenberg-Marquardt (see the module docstring).
  Returns (x, (maxiter + 1,) objectives: initial, then after each step)."""
  if preconditioner is None:
    scale, precond = jnp.ones_like(x), lambda v: v
  else:
    m = jnp.asarray(preconditioner, x.dtype)
    scale, m_inv = jnp.diag(m), jnp.linalg.inv(m)
    precond = lambda v: m_inv @ v

  def step(carry, _):
    x, f, lam = carry
    r, jvp = jax.linearize(fn, x)
    vjp = jax.linear_transpose(jvp, x)
    jt = lambda u: vjp(u)[0]
    # A fixed number of preconditioned CG iterations (tol 0: it stops early
    # only on an exactly zero residual).
    dx, _ = sparse_linalg.cg(
        lambda v: jt(jvp(v)) + lam * scale * v, -jt(r), tol=0.0,
        maxiter=cg_iterations, M=precond)
    x_new = x + dx
    f_new = jnp.sum(fn(x_new)**2)
    (x, f), lam = _take_if_lower(f_new, f, (x_new, f_new), (x, f), lam)
    return (x, f, lam), f

  f0 = jnp.sum(fn(x)**2)
  init = (x, f0, jnp.asarray(damping, x.dtype))
  (x, _, _), fs = jax.lax.scan(step, init, length=maxiter)
  return x, jnp.concatenate([f0[None], fs])


def _lm_dense(both, x, maxiter, damping):
  """Levenberg-Marquardt on (r, J) = both(x) (see the module docstring).
  Returns (x, (maxiter + 1,) objectives: initial, then after each step)."""

  def step(carry, _):
    x, r, jac, f, lam = carry
    jtj = jac.T @ jac
    # Marquardt's scaling: damping in each parameter's own units. The 1e-9
    # floor keeps a parameter no residual sees from making the system singular.
    diag = jnp.diagonal(jtj) + 1e-9 * jnp.max(jnp.diagonal(jtj))
    a = jtj + jnp.diag(lam * diag)
    chol = jax.scipy.linalg.cho_factor(a)
    dx = -jax.scipy.linalg.cho_solve(chol, (jac.T @ r)[:, None])[:, 0]
    r_new, jac_new = both(x + dx)
    f_new = r_new @ r_new
    (x, r, jac, f), lam = _take_if_lower(
        f_new, f, (x + dx, r_new, jac_new, f_new), (x, r, jac, f), lam)
    return (x, r, jac, f, lam), f

  r, jac = both(x)
  init = (x, r, jac, r @ r, jnp.asarray(damping, x.dtype))
  (x, *_), fs = jax.lax.scan(step, init, length=maxiter)
  return x, jnp.concatenate([(r @ r)[None], fs])


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
