"""Hessian-vector products and the extreme eigenvalues of ∇²F, matrix-free.

Every function takes the objective as a callable ``fn(params) -> scalar`` on a parameter pytree (any
model, a dict of arrays, …), e.g. ``lambda net: jaxland.objective(net, x, y, kappa=0.0)`` or
``jaxland.objective_fn(x, y, kappa=0.0)`` (an equinox Module whose data arrays are traced, so the
jitted kernels compile once per shape; a plain lambda is a static argument, compiled again for each new
lambda, its arrays baked in as constants). The inexact-array leaves are raveled into a vector
θ ∈ R^P (other leaves are held fixed), and the Hessian H = ∇²F(θ) ∈ R^{P×P} is never formed: each
product Hv is one forward-over-reverse pass (``jax.linearize`` of ∇F, so the primal forward and
backward passes are computed once per parameter point and every further product costs only the
tangent pass). Extreme eigenvalues come from the Lanczos of `jaxland.lanczos_tridiag`, with the
stopping tolerance and the warm start along a path (`hessian_eigs_along_path(..., warm_start=True)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree, Real

from .._checks import check_fn, check_key
from .._params import (
    combine,
    first_difference,
    is_param,
    num_params,
    num_stacked,
    param_leaves,
    partition,
    partition_floating,
    ravel,
    tree_index,
)
from ._lanczos import (
    _WARM_NOISE,
    _check_k,
    _check_steps,
    _check_tol,
    _check_which,
    _lanczos,
    _masked_eigh,
    _tol_array,
    _wanted,
)

# ----------------------------------------------------------------------------------------------
# the objective on the raveled parameters, HVP
# ----------------------------------------------------------------------------------------------


def _split(params: PyTree):
    """(θ, unravel): θ ravels the parameter leaves (`jaxland._params.ravel`: each leaf cast back to
    its own dtype by unravel); every other leaf is held fixed."""
    if not param_leaves(params):
        raise ValueError("params has no floating-point array leaves to differentiate")
    return ravel(params)


def _flat_fn(fn, unravel) -> Callable[[Array], Array]:
    def f(theta):
        out = fn(unravel(theta))
        if jnp.shape(out) != ():
            raise ValueError(f"fn must return a scalar; got shape {jnp.shape(out)}")
        return out

    return f


def _flat_hvp(fn, params):
    """(θ, v ↦ Hv on flat vectors). The primal passes are linearised once."""
    flat, unravel = _split(params)
    _, lin = jax.linearize(jax.grad(_flat_fn(fn, unravel)), flat)
    return flat, lin


def hvp(fn: Callable[[PyTree], Array], params: PyTree, v: PyTree) -> PyTree:
    """The Hessian-vector product ∇²fn(params)·v, forward-over-reverse (``jvp`` of ``grad``).

    **Arguments:**
    - `fn`: the objective, a callable params -> scalar.
    - `params`: the parameter point (any pytree; its parameters are the inexact-array leaves,
      `jaxland._params`).
    - `v`: a tangent: a pytree of the same structure as `params` (its parameter leaves are read).

    **Returns:** Hv with the structure of `params`: Hv on the parameter leaves (each in its own
    dtype), None on every other leaf (as `equinox.filter_grad` does).
    """
    check_fn(fn)
    dyn, static = partition(params)
    vdyn, _ = partition(v)
    if jax.tree.structure(vdyn) != jax.tree.structure(dyn):
        raise ValueError("v must have the same pytree structure as params; they differ "
                         + first_difference(vdyn, dyn))
    for a, b in zip(jax.tree.leaves(dyn), jax.tree.leaves(vdyn), strict=True):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"v has a leaf of shape {jnp.shape(b)} where params has {jnp.shape(a)}"
            )
    vdyn = jax.tree.map(lambda a, b: jnp.asarray(b, jnp.result_type(a)), dyn, vdyn)
    g = jax.grad(lambda p: fn(combine(p, static)))
    return jax.jvp(g, (dyn,), (vdyn,))[1]


def dense_hessian(fn: Callable[[PyTree], Array], params: PyTree) -> Float[Array, "P P"]:
    """The full Hessian ∇²fn of the raveled parameters, shape (P, P): for small networks and tests.

    Row/column order is that of `jaxland._params.ravel` (the inexact-array leaves in tree order).
    Memory is P²; use `hessian_eigs` beyond a few thousand parameters.
    """
    check_fn(fn)
    return _dense_hessian_jit(fn, params)


@eqx.filter_jit
def _dense_hessian_jit(fn, params):
    flat, unravel = _split(params)
    return jax.hessian(_flat_fn(fn, unravel))(flat)


# ----------------------------------------------------------------------------------------------
# Extreme eigenvalues
# ----------------------------------------------------------------------------------------------


class HessianEigs(NamedTuple):
    """Ritz estimates of the extreme eigenvalues of ∇²F from `hessian_eigs` (leading batch axes
    when batched over points).

    - `top`: (…, k) the k largest Ritz values, descending; `top[..., 0]` estimates λ_max.
    - `bottom`: (…, k) the k smallest Ritz values, ascending; `bottom[..., 0]` estimates λ_min.
    - `top_bound`, `bottom_bound`: (…, k) residual bounds β_m|s_{m,i}|: an eigenvalue of the
      Hessian lies within this distance of each Ritz value (Parlett, Thm 11.4.2).
    - `ritz`: (…, K) Ritz values: the first m = `num_steps` ascending, the remaining K − m NaN
      (only when a `tol` stopped the Lanczos loop early; without `tol`, m = K).
    - `num_steps`: (…,) int32, the number m ≤ K of Lanczos steps = Hessian-vector products used.

    Ritz values always lie inside [λ_min, λ_max], so `bottom` over-estimates λ_min and `top`
    under-estimates λ_max until the Krylov space resolves them; a negative `lambda_min` is a
    certificate of negative curvature. A multiple eigenvalue is found once per Krylov restart.
    """

    top: Array
    bottom: Array
    top_bound: Array
    bottom_bound: Array
    ritz: Array
    num_steps: Array

    @property
    def lambda_max(self) -> Array:
        return self.top[..., 0]

    @property
    def lambda_min(self) -> Array:
        return self.bottom[..., 0]


def _eigs_lanczos(lin, v0, key, k, K, tol, which):
    """(HessianEigs, u): the Lanczos estimates and u = Σ_wanted Q s_i, the sum of the wanted Ritz
    vectors (norm √#wanted), the warm start for a nearby point."""
    alpha, beta, Q, m = _lanczos(lin, v0, K, key, tol, which, k)
    vals, vecs = _masked_eigh(alpha, beta, m)
    bounds = jnp.abs(beta[m - 1] * vecs[m - 1, :])
    i_top = jnp.maximum(m - 1 - jnp.arange(k), 0)
    i_bot = jnp.minimum(jnp.arange(k), m - 1)
    K_ = alpha.shape[0]
    eigs = HessianEigs(
        top=vals[i_top],
        bottom=vals[i_bot],
        top_bound=bounds[i_top],
        bottom_bound=bounds[i_bot],
        ritz=jnp.where(jnp.arange(K_) < m, vals, jnp.nan),
        num_steps=m,
    )
    u = Q.T @ (vecs @ _wanted(K_, m, k, which).astype(vecs.dtype))
    return eigs, u


def _eigs_one(fn, params, key, k, num_steps, tol=None, which="both"):
    flat, lin = _flat_hvp(fn, params)
    k_v, k_r = jax.random.split(key)
    v0 = jax.random.normal(k_v, flat.shape, flat.dtype)
    return _eigs_lanczos(lin, v0, k_r, k, num_steps, tol, which)[0]


@eqx.filter_jit
def _eigs_jit(fn, params, key, k, num_steps, tol, which):
    return _eigs_one(fn, params, key, k, num_steps, tol, which)


@eqx.filter_jit
def _eigs_batch_jit(fn, points, keys, k, num_steps, batch_size, tol, which):
    # stacked points: the parameter leaves carry the leading axis B, the other leaves are kept once
    dyn, static = partition_floating(points)  # the statistics vary along the stack too

    def one(args):
        p, kk = args
        return _eigs_one(fn, combine(p, static), kk, k, num_steps, tol, which)

    return jax.lax.map(one, (dyn, keys), batch_size=batch_size)


@eqx.filter_jit
def _eigs_warm_jit(fn, points, keys, k, num_steps, tol, which):
    dyn, static = partition_floating(points)  # the statistics vary along the stack too
    flat0 = _split(tree_index(points, 0))[0]

    def one(carry, args):
        u, has_prev = carry
        p, kk = args
        flat, lin = _flat_hvp(fn, combine(p, static))
        k_v, k_r = jax.random.split(kk)
        r = jax.random.normal(k_v, flat.shape, flat.dtype)
        # previous point's wanted Ritz vectors plus a small random part (components along every
        # eigenvector, so no wanted direction that the previous basis missed is unreachable)
        nu = jnp.linalg.norm(u)
        warm = u / jnp.where(nu > 0, nu, 1) + _WARM_NOISE * r / jnp.linalg.norm(r)
        v0 = jnp.where(has_prev & (nu > 0), warm, r)
        eigs, u_next = _eigs_lanczos(lin, v0, k_r, k, num_steps, tol, which)
        return (u_next, jnp.asarray(True)), eigs

    init = (jnp.zeros_like(flat0), jnp.asarray(False))
    return jax.lax.scan(one, init, (dyn, keys))[1]


def hessian_eigs(
    fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    key: PRNGKeyArray,
    k: int = 1,
    num_steps: int = 32,
    tol: float | None = None,
    which: str = "both",
) -> HessianEigs:
    """The k largest and k smallest eigenvalues of the Hessian ∇²F(params), by Lanczos.

    Matrix-free: m ≤ K = `num_steps` Hessian-vector products (one linearisation of ∇F, then m
    tangent passes) and O(K·P) memory for the Lanczos basis, so networks with 10^6 parameters
    work. Start vector ~ N(0, I) from `key`. Jitted (`fn` is a static argument unless it is a pytree
    such as `jaxland.objective_fn(x, y, kappa=…)`, whose arrays are traced).

    **Arguments:**
    - `fn`: the objective F, a callable params -> scalar.
    - `params`: the point (pytree; inexact-array leaves are the P parameters).
    - `key`: PRNG key for the start vector (and restarts).
    - `k`: how many eigenvalues at each end, 1 ≤ k ≤ K.
    - `num_steps`: the Krylov dimension K ≤ P (the maximum when `tol` is set; a few dozen give
      λ_min and λ_max of typical networks to a few digits; check `top_bound`/`bottom_bound`).
    - `tol`: None or 0 (default): exactly K steps. A number > 0: stop at the first step m at which
      every wanted Ritz value θ_i has residual bound β_m|s_{m,i}| ≤ tol·max_j|θ_j| (see
      `lanczos_tridiag`), so each is within tol·|λ|_max of an eigenvalue of H.
    - `which`: the Ritz values that must converge for `tol`: "both" (default; k largest and k
      smallest), "top" (k largest) or "bottom" (k smallest). The fields for the other end are
      still returned, with their (possibly large) bounds.

    **Returns:** `HessianEigs` with `.lambda_min`, `.lambda_max` and `num_steps` (steps used).
    """
    check_fn(fn)
    check_key(key)
    _check_steps(num_steps, num_params(params))
    _check_k(k, num_steps)
    tol = _check_tol(tol)
    _check_which(which)
    flat_dtype = _split(params)[0].dtype
    return _eigs_jit(fn, params, key, k, num_steps, _tol_array(tol, flat_dtype), which)


def _stack_size(points) -> int:
    """B, the leading axis of every parameter leaf of stacked points (`jaxland._params.num_stacked`)."""
    return num_stacked(points, "points")


def _check_batch_size(batch_size, B, name="batch_size"):
    if batch_size is None:
        # vmapping whole Hessian-vector products (different points, or probes through one
        # linearisation) turns every GEMM into a batched matmul, which XLA:CPU runs ~2-3x slower
        # than the same matmuls one after another (measured on the reference SkipNet); on GPU/TPU
        # the vmapped program is the fast one.
        return B if jax.default_backend() in ("gpu", "tpu", "cuda", "rocm") else 1
    if not isinstance(batch_size, int) or not 1 <= batch_size:
        raise ValueError(f"{name} must be a positive integer or None; got {batch_size!r}")
    return min(batch_size, B)


def _check_points_args(fn, points, key, k, num_steps, tol, which):
    """Validate the arguments shared by the batched eigenvalue calls; returns (B, tol as an array
    of the parameters' dtype or None)."""
    check_fn(fn)
    check_key(key)
    B = _stack_size(points)
    one = tree_index(points, 0)
    _check_steps(num_steps, num_params(one))
    _check_k(k, num_steps)
    tol = _check_tol(tol)
    _check_which(which)
    return B, _tol_array(tol, _split(one)[0].dtype)


def hessian_eigs_batch(
    fn: Callable[[PyTree], Array],
    points: PyTree,
    *,
    key: PRNGKeyArray,
    k: int = 1,
    num_steps: int = 32,
    batch_size: int | None = None,
    tol: float | None = None,
    which: str = "both",
) -> HessianEigs:
    """`hessian_eigs` at B parameter points at once (one compiled program).

    **Arguments:**
    - `points`: a stacked pytree: every parameter (inexact-array) leaf with leading axis B, every
      other leaf once, as `jaxland._params.stack_trees` builds it (for a plain pytree of arrays,
      ``jax.vmap(path)(ts)``).
    - `batch_size`: points vmapped together (``lax.map`` over chunks); None = all B at once on
      GPU/TPU (memory B·K·P for the Lanczos bases), one at a time on CPU (where vmapped matmuls
      are slower than sequential ones). The Lanczos start vector at point b comes from
      ``jax.random.split(key, B)[b]``. With `tol`, vmapped points run until the slowest of the
      chunk has converged (the others' states are frozen, their `num_steps` are their own).
    - `key`, `k`, `num_steps`, `tol`, `which`: as for `hessian_eigs`.

    **Returns:** `HessianEigs` with a leading axis B on every field.
    """
    B, tol_a = _check_points_args(fn, points, key, k, num_steps, tol, which)
    bs = _check_batch_size(batch_size, B)
    return _eigs_batch_jit(fn, points, jax.random.split(key, B), k, num_steps, bs, tol_a, which)


def hessian_eigs_along_path(
    fn: Callable[[PyTree], Array],
    path: Any,
    ts: Real[ArrayLike, " B"],
    *,
    key: PRNGKeyArray,
    k: int = 1,
    num_steps: int = 32,
    batch_size: int | None = None,
    tol: float | None = None,
    which: str = "both",
    warm_start: bool = False,
) -> HessianEigs:
    """Extreme Hessian eigenvalues of F = `fn` at the points γ(t), t ∈ `ts`, of a path (e.g. `paths.linear`).

    The points are ``jax.vmap(path)(ts)``. `ts` has shape (B,).

    - `warm_start=False` (default): independent runs, batched as in `hessian_eigs_batch`.
    - `warm_start=True`: the points are processed one after another in the order of `ts` (a
      ``lax.scan``; `batch_size` must be None or 1). Point 0 starts from the same random vector
      as a cold run; Lanczos at point b+1 starts from the normalised sum û of the wanted Ritz
      vectors Q_b s_i of point b (`which`, k; Q_b is the basis already kept), plus a random part
      of relative norm 10⁻³ (so the start is never exactly in an invariant subspace of the new
      Hessian; an exact breakdown is handled by restarting anyway). On a slowly varying path û is
      close to the wanted eigenvectors at b+1, so with `tol` fewer steps are needed there.

    **Arguments:** as for `hessian_eigs_batch`, plus `path` (a callable t -> params), `ts` and
    `warm_start`.

    **Returns:** `HessianEigs` with leading axis B.
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] == 0:
        raise ValueError(f"ts must be a non-empty 1-D array of path times; got shape {ts.shape}")
    if not isinstance(warm_start, bool):
        raise ValueError(f"warm_start must be a bool; got {warm_start!r}")
    # parameter leaves batched over ts, every other leaf (constant along a path) kept once, as in
    # `jaxland._params.stack_trees`
    points = eqx.filter_vmap(path, out_axes=lambda leaf: 0 if is_param(leaf) else None)(ts)
    if not warm_start:
        return hessian_eigs_batch(
            fn,
            points,
            key=key,
            k=k,
            num_steps=num_steps,
            batch_size=batch_size,
            tol=tol,
            which=which,
        )
    if batch_size not in (None, 1):
        raise ValueError(
            f"batch_size must be None or 1 with warm_start=True (points run one after another); "
            f"got {batch_size!r}"
        )
    B, tol_a = _check_points_args(fn, points, key, k, num_steps, tol, which)
    return _eigs_warm_jit(fn, points, jax.random.split(key, B), k, num_steps, tol_a, which)
