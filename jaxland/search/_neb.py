"""The nudged elastic band with a climbing image, and AutoNEB's pivot insertion (Draxler et al. 2018).

The gradient's component along the path tangent is removed; pivots are kept apart by springs or by even
redistribution along the path; new pivots are inserted where a dense evaluation between pivots finds the
highest point; the saddle height is read from that dense evaluation (AutoNEB, Draxler et al. 2018).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PyTree

from .._checks import check_positive_float, check_positive_int
from .._optim import cached_adam
from .._params import check_joinable, num_stacked, ravel, tree_index
from ..paths._paths import AbstractPath, polychain
from ._common import _check_endpoints, _dense, _to_trees


class NEBResult(NamedTuple):
    """What `neb` returns.

    - `path`: the polychain through the final pivots (uniform parametrisation: pivot j at t = j/(K−1)).
    - `ts`, `values`, `f_max`, `t_max`, `barrier`: the dense evaluation between pivots and what it
      gives (`f_max` is the saddle-height estimate).
    - `pivot_values`: (K,) F at the pivots; `climbing_index`: the pivot that climbed (−1 if none).
    - `history`: (total steps,) the highest pivot value after each step, all rounds concatenated.
    - `rounds`: AutoNEB rounds run; `evaluations`: F evaluations (with gradient) plus the dense grid.
    - `method`: "neb".
    """

    path: AbstractPath
    ts: Array
    values: Array
    f_max: float
    t_max: float
    barrier: float
    pivot_values: Array
    climbing_index: int
    history: Array
    rounds: int
    evaluations: int
    method: str


def _tangents(X: Array, V: Array) -> Array:
    """Unit tangents at the interior pivots, the energy-weighted "improved tangent" of Henkelman &
    Jónsson (2000): the upwind neighbour's direction on monotone stretches, a weighted mix at extrema."""
    Xi, tp, tm = X[1:-1], X[2:] - X[1:-1], X[1:-1] - X[:-2]
    Vp, Vm, Vi = V[2:], V[:-2], V[1:-1]
    dmax = jnp.maximum(jnp.abs(Vp - Vi), jnp.abs(Vm - Vi))[:, None]
    dmin = jnp.minimum(jnp.abs(Vp - Vi), jnp.abs(Vm - Vi))[:, None]
    up = ((Vp > Vi) & (Vi > Vm))[:, None]
    down = ((Vp < Vi) & (Vi < Vm))[:, None]
    mixed = jnp.where((Vp > Vm)[:, None], tp * dmax + tm * dmin, tp * dmin + tm * dmax)
    tau = jnp.where(up, tp, jnp.where(down, tm, mixed))
    norm = jnp.linalg.norm(tau, axis=1, keepdims=True)
    fallback = (X[2:] - X[:-2]) / jnp.maximum(jnp.linalg.norm(X[2:] - X[:-2], axis=1, keepdims=True),
                                              jnp.finfo(X.dtype).tiny)
    del Xi
    return jnp.where(norm > 0, tau / jnp.where(norm > 0, norm, 1), fallback)


def _redistribute(X: Array, ci: Array) -> Array:
    """Move the pivots so that they are evenly spaced by arc length along the polychain through them,
    keeping the endpoints and (if ci ≥ 0) the climbing pivot ci in place: pivots 0…ci share [0, L_ci]
    evenly, pivots ci…K−1 share [L_ci, L]."""
    K = X.shape[0]
    seg = jnp.linalg.norm(jnp.diff(X, axis=0), axis=1)
    cum = jnp.concatenate([jnp.zeros((1,), X.dtype), jnp.cumsum(seg)])
    L = cum[-1]
    j = jnp.arange(K, dtype=X.dtype)
    c = jnp.where(ci >= 0, ci, 0)
    Lc = cum[c]
    left = Lc * j / jnp.maximum(c, 1)
    right = Lc + (L - Lc) * (j - c) / jnp.maximum(K - 1 - c, 1)
    target = jnp.where(ci >= 0, jnp.where(j <= c, left, right), L * j / (K - 1))
    i = jnp.clip(jnp.searchsorted(cum, target, side="right") - 1, 0, K - 2)
    s = jnp.clip((target - cum[i]) / jnp.maximum(seg[i], jnp.finfo(X.dtype).tiny), 0, 1)
    new = (1 - s)[:, None] * X[i] + s[:, None] * X[i + 1]
    new = new.at[0].set(X[0]).at[-1].set(X[-1])
    return jnp.where((jnp.arange(K) == ci)[:, None], X, new)


@eqx.filter_jit
def _neb_relax(fn, X, to_tree, spring, use_spring, steps, climb_from, optimizer):
    """Relax the interior pivots of X (K, D) for `steps` steps; endpoints fixed."""
    vg = jax.vmap(jax.value_and_grad(lambda v: fn(to_tree(v))))
    a, b = X[0], X[-1]
    K = X.shape[0]

    def full(inner):
        return jnp.concatenate([a[None], inner, b[None]])

    fa, fb = fn(to_tree(a))[None], fn(to_tree(b))[None]

    def step(carry, i):
        inner, state = carry
        Xf = full(inner)
        Vi, G = vg(inner)
        V = jnp.concatenate([fa, Vi, fb])
        tau = _tangents(Xf, V)
        gpar = jnp.sum(G * tau, axis=1, keepdims=True)
        climbing = i >= climb_from
        ci = jnp.where(climbing, jnp.argmax(Vi), -1)
        is_ci = (jnp.arange(K - 2) == ci)[:, None]
        # NEB force: −∇V with its tangential part removed (+ springs along τ); the climbing pivot
        # instead gets −∇V with the tangential part reversed, which drives it up to the saddle.
        force = -(G - gpar * tau)
        if use_spring:
            dist = jnp.linalg.norm(jnp.diff(Xf, axis=0), axis=1)
            force = force + spring * (dist[1:] - dist[:-1])[:, None] * tau
        force = jnp.where(is_ci, -G + 2 * gpar * tau, force)
        # F may be computed in a wider dtype than the parameters (float64 data, float32 weights under
        # x64): the tangent weights then promote the force; the pivots keep the parameters' dtype
        force = force.astype(inner.dtype)
        u, state = optimizer.update(-force, state, inner)
        inner = optax.apply_updates(inner, u)
        if not use_spring:
            inner = _redistribute(full(inner), jnp.where(ci >= 0, ci + 1, -1))[1:-1]
        return (inner, state), jnp.max(Vi)

    inner = X[1:-1]
    (inner, _), history = jax.lax.scan(step, (inner, optimizer.init(inner)), jnp.arange(steps))
    Xf = full(inner)
    V = jax.vmap(lambda v: fn(to_tree(v)))(Xf)
    return Xf, V, history


@eqx.filter_jit
def _between_pivots(fn, X, to_tree, s):
    """F on the segments between consecutive pivots at local coordinates s (S,): shape (K−1, S)."""
    pts = X[:-1, None, :] * (1 - s)[None, :, None] + X[1:, None, :] * s[None, :, None]
    return jax.vmap(jax.vmap(lambda v: fn(to_tree(v))))(pts)


def neb(
    fn: Callable[[PyTree], Array],
    a: PyTree,
    b: PyTree,
    *,
    pivots: int = 12,
    steps: int = 500,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    spring: float | None = None,
    climb: bool = True,
    climb_after: float = 0.5,
    rounds: int = 1,
    insert: int = 2,
    max_pivots: int = 64,
    points_per_segment: int = 16,
    init: PyTree | None = None,
) -> NEBResult:
    """Nudged elastic band with a climbing image, and AutoNEB's insertion of pivots.

    K = `pivots` points θ_0 = a, θ_1, …, θ_{K−1} = b (initially evenly spaced on the segment, or on the
    polychain through the stacked pytree `init`). Each step, every interior pivot i moves along the
    force −∇F(θ_i) + (∇F(θ_i)·τ_i)τ_i, the negative gradient with its component along the unit tangent
    τ_i removed (Henkelman & Jónsson's improved tangent), through the optax `optimizer` (the force is
    fed to it as a negative gradient). Pivots are kept apart either by springs k(‖θ_{i+1}−θ_i‖ −
    ‖θ_i−θ_{i−1}‖)τ_i (`spring` = k) or, with `spring=None`, by redistributing them evenly by arc length
    after every step (Draxler et al.'s "even redistribution"; the string method). After `climb_after`
    of the steps the highest interior pivot climbs: its force is −∇F + 2(∇F·τ)τ, which converges to a
    first-order saddle, and it is not redistributed.

    AutoNEB: after each of `rounds` rounds, F is evaluated densely between consecutive pivots
    (`points_per_segment` points per segment); on up to `insert` segments whose interior maximum
    exceeds both of their pivots, a new pivot is inserted at that maximum; the next round relaxes the
    enlarged band. The saddle height is read from the final dense evaluation between pivots.

    **Arguments:**
    - `fn`, `a`, `b`: as for `fit_curve`.
    - `pivots`: initial number of pivots K ≥ 3 (endpoints included); `max_pivots` caps insertion.
    - `steps`: optimisation steps per round; `learning_rate` / `optimizer` as for `fit_curve`.
    - `spring`: spring constant k > 0, or None for even redistribution.
    - `climb`, `climb_after`: whether the highest pivot climbs, and after which fraction of each
      round's steps.
    - `rounds`, `insert`: AutoNEB rounds and new pivots per round.
    - `init`: optional stacked pytree (leading axis K) of initial pivots, endpoints included.

    **Returns:** `NEBResult` with the polychain through the pivots (γ(0) = a, γ(1) = b exactly), its
    barrier and the saddle estimate `f_max`.
    """
    K = check_positive_int("pivots", pivots, 3)
    steps = check_positive_int("steps", steps)
    rounds = check_positive_int("rounds", rounds)
    insert = check_positive_int("insert", insert, 0)
    max_pivots = check_positive_int("max_pivots", max_pivots, K)
    pps = check_positive_int("points_per_segment", points_per_segment, 2)
    if not (0.0 <= climb_after <= 1.0):
        raise ValueError(f"climb_after must lie in [0, 1]; got {climb_after!r}")
    use_spring = spring is not None
    k_spring = check_positive_float("spring", spring) if use_spring else 0.0
    va, vb, unravel, fa, fb = _check_endpoints(fn, a, b)
    opt = optimizer if optimizer is not None else cached_adam(check_positive_float("learning_rate",
                                                                        learning_rate))
    if init is None:
        # evenly on the segment, in host arithmetic (no kernels compiled for set-up)
        na, nb = np.asarray(va), np.asarray(vb)
        X = jnp.asarray(na[None] + np.linspace(0.0, 1.0, K).astype(na.dtype)[:, None] * (nb - na)[None])
    else:
        Ki = num_stacked(init, "init")
        if Ki < 3:
            raise ValueError(f"init must stack at least 3 pytrees like a (leading axis K); got K = {Ki}")
        first = tree_index(init, 0)
        check_joinable(a, first, ("a", "init[0]"))
        X = np.stack([np.asarray(ravel(tree_index(init, i))[0]) for i in range(Ki)]).astype(va.dtype)
        X[0], X[-1] = np.asarray(va), np.asarray(vb)
        X = jnp.asarray(X)
    s = jnp.asarray(np.linspace(0.0, 1.0, pps + 2)[1:-1].astype(va.dtype))
    climb_from = int(round(climb_after * steps)) if climb else steps + 1
    histories, evals, r = [], 0, 0
    for r in range(1, rounds + 1):
        X, V, hist = _neb_relax(fn, X, unravel, jnp.asarray(k_spring, va.dtype), use_spring, steps,
                                climb_from, opt)
        histories.append(hist)
        evals += steps * (X.shape[0] - 2)
        if r == rounds or insert == 0:
            break
        dense = np.asarray(_between_pivots(fn, X, unravel, s), np.float64)
        evals += dense.size
        Vn = np.asarray(V, np.float64)
        excess = dense.max(axis=1) - np.maximum(Vn[:-1], Vn[1:])
        room = max_pivots - X.shape[0]
        order = [j for j in np.argsort(-excess) if excess[j] > 0][: min(insert, room)]
        if not order:
            break
        new, Xn, sn = [], np.asarray(X), np.asarray(s)
        for j in range(Xn.shape[0]):
            new.append(Xn[j])
            if j in order:
                sj = sn[int(np.argmax(dense[j]))]
                new.append((1 - sj) * Xn[j] + sj * Xn[j + 1])
        X = jnp.asarray(np.stack(new))
    if not np.all(np.isfinite(np.asarray(X))):
        raise FloatingPointError("NEB diverged (non-finite pivots); lower the learning rate")
    Kf = X.shape[0]
    path = polychain(_to_trees(unravel, a, b, X[1:-1]))
    V = np.asarray(V, np.float64)
    ci = int(np.argmax(V[1:-1])) + 1 if climb else -1
    n_points = (Kf - 1) * (pps + 1) + 1
    ts, values, vmax, tmax, barrier = _dense(fn, path, n_points, fa, fb)
    return NEBResult(path, ts, values, vmax, tmax, barrier, jnp.asarray(V), ci,
                     jnp.concatenate(histories), r, evals + n_points, "neb")
