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
import numpy as np
import optax
import optimistix as optx
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import check_fn, check_key
from .._params import combine, num_params, param_dtype, param_leaves, partition, ravel
from ._hessian import hessian_eigs


class CriticalKind(eqx.Enumeration):
    """The second-order type of a parameter point (`CriticalPoint.kind`): an equinox enumeration
    whose items carry their message (as diffrax's `RESULTS`). ``CriticalKind[item]`` is the message;
    items compare with ``==`` (also under jit) and are chosen with ``CriticalKind.where``."""

    local_minimum = (
        "local minimum: ‖∇F‖ ≤ grad_tol and λ_min minus its residual bound > eig_tol (the Hessian "
        "is positive definite)"
    )
    strict_saddle = (
        "strict saddle: ‖∇F‖ ≤ grad_tol and λ_min < −eig_tol (a certified direction of negative "
        "curvature; also a local maximum)"
    )
    degenerate = (
        "degenerate: ‖∇F‖ ≤ grad_tol but |λ_min| ≤ eig_tol, so the second-order test is "
        "inconclusive (flat directions, e.g. dead ReLU units or rescaling symmetries)"
    )
    not_critical = "not critical: ‖∇F‖ > grad_tol"


def _kind_name(kind) -> str:
    """The short name of a `CriticalKind` item ("local minimum", "strict saddle", "degenerate",
    "not critical"): the message up to its colon. A batched item gives the name of each entry
    joined by commas; a traced one gives "traced"."""
    msg = CriticalKind[kind]
    if kind._value.ndim == 0 or msg == "traced":
        return msg.split(":")[0]
    names = [CriticalKind._index_to_message[int(v)].split(":")[0] for v in np.ravel(kind._value)]
    return ", ".join(names)


class CriticalPoint(NamedTuple):
    """A parameter point with its first- and second-order diagnostics.

    - `params`: the point (pytree, the structure of the input).
    - `value`: F(params).
    - `grad_norm`: ‖∇F(params)‖₂ over all inexact-array leaves.
    - `lambda_min`, `lambda_max`: Lanczos estimates of the extreme Hessian eigenvalues.
    - `lambda_min_bound`: residual bound on `lambda_min` (an eigenvalue lies within it).
    - `kind`: a `CriticalKind` item (``CriticalKind[kind]`` is its message; `kind_name` its short
      name: "local minimum", "strict saddle", "degenerate" or "not critical").
    - `steps`: solver iterations used by `find_critical_point` (0 for `classify_critical_point`).
    """

    params: PyTree
    value: Array
    grad_norm: Array
    lambda_min: Array
    lambda_max: Array
    lambda_min_bound: Array
    kind: CriticalKind
    steps: Array

    @property
    def kind_name(self) -> str:
        """The short name of `kind` ("local minimum", "strict saddle", "degenerate", "not critical")."""
        return _kind_name(self.kind)


def _check_tolerance(name, v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number >= 0; got {v!r}") from None
    if not (f >= 0 and np.isfinite(f)):
        raise ValueError(f"{name} must be a finite number >= 0; got {v!r}")
    return f


@eqx.filter_jit
def _value_grad_norm(fn, params):
    dyn, static = partition(params)
    v, g = jax.value_and_grad(lambda p: fn(combine(p, static)))(dyn)
    return v, jnp.linalg.norm(ravel(g)[0])


def classify_critical_point(
    fn: Callable[[PyTree], Array],
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
    - `fn`: the objective F, a callable params -> scalar (e.g. `jaxland.objective_fn(x, y,
      kappa=…)`).
    - `params`: the point (any pytree; its inexact-array leaves are the parameters).
    - `key`: PRNG key for the Lanczos start vector.
    - `grad_tol`: ‖∇F‖ above this is "not critical" (its eigenvalues are still reported).
    - `eig_tol`: the curvature threshold: λ_min < −eig_tol is a strict saddle; λ_min (minus its
      residual bound) > eig_tol is a local minimum; otherwise degenerate.
    - `num_steps`: Lanczos steps (default min(P, 64); with P ≤ 64 the eigenvalues are exact).

    **Returns:** `CriticalPoint` (`kind` a `CriticalKind` item, `kind_name` its short name).
    """
    check_fn(fn)
    check_key(key)
    grad_tol = _check_tolerance("grad_tol", grad_tol)
    eig_tol = _check_tolerance("eig_tol", eig_tol)
    P = num_params(params)
    K = min(P, 64) if num_steps is None else num_steps
    value, gn = _value_grad_norm(fn, params)
    e = hessian_eigs(fn, params, key=key, k=1, num_steps=K)
    lmin, lmax, bound = e.lambda_min, e.lambda_max, e.bottom_bound[..., 0]
    CK = CriticalKind
    second = CK.where(
        lmin < -eig_tol,
        CK.strict_saddle,
        CK.where(lmin - bound > eig_tol, CK.local_minimum, CK.degenerate),
    )
    kind = CK.where(gn > grad_tol, CK.not_critical, second)
    return CriticalPoint(params, value, gn, lmin, lmax, bound, kind, jnp.asarray(steps, jnp.int32))


@eqx.filter_jit
def _lsq_solve(fn, dyn, static, rtol, atol, max_steps, method):
    def residual(p, _):
        return jax.grad(lambda q: fn(combine(q, static)))(p)

    if method == "newton":
        solver = optx.Dogleg(rtol=rtol, atol=atol, linear_solver=lx.SVD())
    else:
        solver = optx.LevenbergMarquardt(rtol=rtol, atol=atol, linear_solver=lx.SVD())
    sol = optx.least_squares(residual, solver, dyn, max_steps=max_steps, throw=False)
    return sol.value, sol.stats["num_steps"]


@eqx.filter_jit
def _gradnorm_solve(fn, dyn, static, optimizer, max_steps, tol):
    def half_sq(p):
        g = jax.grad(lambda q: fn(combine(q, static)))(p)
        return 0.5 * sum(jnp.sum(a * a) for a in jax.tree.leaves(g))

    def cond(c):
        _, _, i, gn2 = c
        return (i < max_steps) & (gn2 > 0.5 * tol * tol)

    def body(c):
        p, s, i, _ = c
        val, g = jax.value_and_grad(half_sq)(p)
        upd, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, upd), s, i + 1, val

    dtype = param_dtype(dyn)
    init = (dyn, optimizer.init(dyn), jnp.zeros((), jnp.int32), jnp.asarray(jnp.inf, dtype))
    p, _, i, _ = jax.lax.while_loop(cond, body, init)
    return p, i


def find_critical_point(
    fn: Callable[[PyTree], Array],
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
    - `fn`, `params`, `key`, `grad_tol`, `eig_tol`, `num_steps`: as for `classify_critical_point`.
    - `method`: "newton" (optimistix Dogleg on ∇F = 0; small networks), "levenberg_marquardt"
      (optimistix, damped Newton on ∇F) or "gradient_norm" (optax on ½‖∇F‖², matrix-free).
    - `max_steps`: solver iterations at most.
    - `optimizer`: the optax optimiser of "gradient_norm" (default `optax.adam(1e-3)`).

    **Returns:** `CriticalPoint`; `kind` is "not critical" when the solver stopped with
    ‖∇F‖ > `grad_tol`.
    """
    check_fn(fn)
    check_key(key)
    grad_tol = _check_tolerance("grad_tol", grad_tol)
    if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer; got {max_steps!r}")
    if not param_leaves(params):
        raise ValueError("params has no floating-point array leaves to differentiate")
    dyn, static = partition(params)
    if method in ("newton", "levenberg_marquardt"):
        # The residual ∇F is measured against atol + rtol·|θ| in the max norm; the final check uses
        # grad_tol in the 2-norm, so ask for a margin of √P.
        atol = grad_tol / max(1.0, float(num_params(params)) ** 0.5)
        dyn, steps = _lsq_solve(fn, dyn, static, 1e-12, atol, max_steps, method)
    elif method == "gradient_norm":
        opt = optax.adam(1e-3) if optimizer is None else optimizer
        dyn, steps = _gradnorm_solve(fn, dyn, static, opt, max_steps, grad_tol)
    else:
        raise ValueError(
            f"method must be 'newton', 'levenberg_marquardt' or 'gradient_norm'; got {method!r}"
        )
    return classify_critical_point(
        fn,
        combine(dyn, static),
        key=key,
        grad_tol=grad_tol,
        eig_tol=eig_tol,
        num_steps=num_steps,
        steps=steps,
    )
