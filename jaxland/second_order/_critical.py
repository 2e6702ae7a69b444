"""Approximate critical points of F and their second-order classification.

A point θ is an approximate critical point when ‖∇F(θ)‖ ≤ `grad_tol`. Its type follows from the
smallest Hessian eigenvalue λ_min (computed matrix-free by `hessian_eigs`):

- **strict saddle** (or local maximum): λ_min < −`eig_tol`. Certified: a Lanczos Ritz value is
  never below λ_min, so a Ritz value < −tol proves an eigenvalue < −tol (a descent direction of
  second order);
- **local minimum**: λ_min − (residual bound) > `eig_tol`, the Hessian is positive definite;
- **degenerate**: neither; the second-order test is inconclusive (|λ_min| ≤ tol — for example the
  flat directions of dead ReLU units or the rescaling symmetries of products of weights).

Finding critical points (`find_critical_point`) solves ∇F(θ) = 0, which includes saddles:

- ``"newton"`` (default): optimistix's Dogleg trust-region method on the residual ∇F (Newton steps
  J = ∇²F blended with gradient steps on ½‖∇F‖², linear solves by SVD so a singular Hessian is
  fine). It converges to minima *and* saddles. It materialises the P×P Jacobian, so it is for small
  networks (P up to a few thousand).
- ``"levenberg_marquardt"``: optimistix's Levenberg–Marquardt on the same residual (damped Newton);
  on ReLU networks it often stalls with a large damping and a non-small gradient (then "not
  critical"), which is why Dogleg is the default.
- ``"gradient_norm"``: minimises ½‖∇F‖² with an optax optimiser; its gradient ∇²F·∇F is one
  Hessian-vector product, so it is matrix-free and works for large networks (slower convergence).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optax
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import check_fn, check_key
from .._params import num_params
from ._hessian import hessian_eigs

#: Names of the `CriticalPoint.kind` codes.
KINDS = ("local minimum", "strict saddle", "degenerate", "not critical")
LOCAL_MIN, STRICT_SADDLE, DEGENERATE, NOT_CRITICAL = range(4)


class CriticalPoint(NamedTuple):
    """A parameter point with its first- and second-order diagnostics.

    - `params`: the point (pytree, the structure of the input).
    - `value`: F(params).
    - `grad_norm`: ‖∇F(params)‖₂ over all inexact-array leaves.
    - `lambda_min`, `lambda_max`: Lanczos estimates of the extreme Hessian eigenvalues.
    - `lambda_min_bound`: residual bound on `lambda_min` (an eigenvalue lies within it).
    - `kind`: int code, index into `KINDS` ("local minimum", "strict saddle", "degenerate",
      "not critical").
    - `steps`: solver iterations used by `find_critical_point` (0 for `classify_critical_point`).
    """

    params: PyTree
    value: Array
    grad_norm: Array
    lambda_min: Array
    lambda_max: Array
    lambda_min_bound: Array
    kind: Array
    steps: Array

    @property
    def kind_name(self) -> str:
        return KINDS[int(self.kind)]


def _check_tolerance(name, v):
    v = float(v)
    if not (v >= 0 and jnp.isfinite(v)):
        raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
    return v


@eqx.filter_jit
def _value_grad_norm(F, params):
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    v, g = jax.value_and_grad(lambda p: F(eqx.combine(p, static)))(dyn)
    return v, jnp.linalg.norm(ravel_pytree(g)[0])


def classify_critical_point(
    F: Callable[[PyTree], Array],
    params: PyTree,
    *,
    key: PRNGKeyArray,
    grad_tol: float = 1e-4,
    eig_tol: float = 1e-6,
    num_steps: int | None = None,
    steps=0,
) -> CriticalPoint:
    """Classify `params` as a local minimum, strict saddle, degenerate point, or not critical.

    **Arguments:**
    - `F`: callable params -> scalar (e.g. `jaxland.objective_fn(x, y, kappa=…)`).
    - `params`: the point (pytree).
    - `key`: PRNG key for the Lanczos start vector.
    - `grad_tol`: ‖∇F‖ above this is "not critical" (its eigenvalues are still reported).
    - `eig_tol`: the curvature threshold: λ_min < −eig_tol is a strict saddle; λ_min (minus its
      residual bound) > eig_tol is a local minimum; otherwise degenerate.
    - `num_steps`: Lanczos steps (default min(P, 64); with P ≤ 64 the eigenvalues are exact).

    **Returns:** `CriticalPoint` (`kind_name` gives the name).
    """
    check_fn(F)
    check_key(key)
    grad_tol = _check_tolerance("grad_tol", grad_tol)
    eig_tol = _check_tolerance("eig_tol", eig_tol)
    P = num_params(params)
    K = min(P, 64) if num_steps is None else num_steps
    value, gn = _value_grad_norm(F, params)
    e = hessian_eigs(F, params, key=key, k=1, num_steps=K)
    lmin, lmax, bound = e.lambda_min, e.lambda_max, e.bottom_bound[..., 0]
    kind = jnp.where(
        gn > grad_tol,
        NOT_CRITICAL,
        jnp.where(
            lmin < -eig_tol, STRICT_SADDLE, jnp.where(lmin - bound > eig_tol, LOCAL_MIN, DEGENERATE)
        ),
    )
    return CriticalPoint(
        params, value, gn, lmin, lmax, bound, kind.astype(jnp.int32), jnp.asarray(steps, jnp.int32)
    )


@eqx.filter_jit
def _lsq_solve(F, dyn, static, rtol, atol, max_steps, method):
    def residual(p, _):
        return jax.grad(lambda q: F(eqx.combine(q, static)))(p)

    if method == "newton":
        solver = optx.Dogleg(rtol=rtol, atol=atol, linear_solver=lx.SVD())
    else:
        solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol, linear_solver=lx.SVD())
    sol = optx.least_squares(residual, solver, dyn, max_steps=max_steps, throw=False)
    return sol.value, sol.stats["num_steps"]


@eqx.filter_jit
def _gradnorm_solve(F, dyn, static, optimizer, max_steps, tol):
    def half_sq(p):
        g = jax.grad(lambda q: F(eqx.combine(q, static)))(p)
        return 0.5 * sum(jnp.sum(a * a) for a in jax.tree.leaves(g))

    def cond(c):
        _, _, i, gn2 = c
        return (i < max_steps) & (gn2 > 0.5 * tol * tol)

    def body(c):
        p, s, i, _ = c
        val, g = jax.value_and_grad(half_sq)(p)
        upd, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, upd), s, i + 1, val

    dtype = jnp.result_type(*jax.tree.leaves(dyn))
    init = (dyn, optimizer.init(dyn), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype))
    p, _, i, _ = jax.lax.while_loop(cond, body, init)
    return p, i


def find_critical_point(
    F: Callable[[PyTree], Array],
    params: PyTree,
    *,
    key: PRNGKeyArray,
    method: str = "newton",
    max_steps: int = 200,
    grad_tol: float = 1e-4,
    eig_tol: float = 1e-6,
    optimizer: optax.GradientTransformation | None = None,
    num_steps: int | None = None,
) -> CriticalPoint:
    """Find an approximate critical point ∇F(θ) = 0 near `params` and classify it.

    **Arguments:**
    - `F`, `params`, `key`, `grad_tol`, `eig_tol`, `num_steps`: as for `classify_critical_point`.
    - `method`: "newton" (optimistix Dogleg on ∇F = 0; small networks), "levenberg_marquardt"
      (optimistix, damped Newton on ∇F) or "gradient_norm" (optax on ½‖∇F‖², matrix-free).
    - `max_steps`: solver iterations at most.
    - `optimizer`: the optax optimiser of "gradient_norm" (default `optax.adam(1e-3)`).

    **Returns:** `CriticalPoint`; `kind` is "not critical" when the solver stopped with
    ‖∇F‖ > `grad_tol`.
    """
    check_fn(F)
    check_key(key)
    grad_tol = _check_tolerance("grad_tol", grad_tol)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    if not jax.tree.leaves(dyn):
        raise ValueError("params has no floating-point array leaves to differentiate")
    if method in ("newton", "levenberg_marquardt"):
        # The residual ∇F is measured against atol + rtol·|θ| in the max norm; the final check uses
        # grad_tol in the 2-norm, so ask for a margin of √P.
        atol = grad_tol / max(1.0, float(num_params(params)) ** 0.5)
        dyn, steps = _lsq_solve(F, dyn, static, 1e-12, atol, max_steps, method)
    elif method == "gradient_norm":
        opt = optax.adam(1e-3) if optimizer is None else optimizer
        dyn, steps = _gradnorm_solve(F, dyn, static, opt, max_steps, grad_tol)
    else:
        raise ValueError(
            f"method must be 'newton', 'levenberg_marquardt' or 'gradient_norm'; got {method!r}"
        )
    return classify_critical_point(
        F,
        eqx.combine(dyn, static),
        key=key,
        grad_tol=grad_tol,
        eig_tol=eig_tol,
        num_steps=num_steps,
        steps=steps,
    )
