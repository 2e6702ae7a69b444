"""Searching for low paths between two points: curve fitting, the nudged elastic band, string sampling.

Three methods from the mode-connectivity literature (RELATED.md), each a function of an objective
``fn(params) -> scalar`` and two endpoints ``a``, ``b`` (pytrees of equal structure: two networks, or two
arrays of shape (2,) for a toy), each returning the path found (a `jaxland.paths.AbstractPath`) and its
barrier from a dense evaluation with `jaxland.evaluate_path`:

- `fit_curve`: Garipov et al. (2018). A Bézier curve φ_θ(t) = Σ_k C(d,k) t^k (1−t)^{d−k} θ_k or a
  polychain with free interior nodes θ_1 … θ_{d−1}, trained with optax on E_{t∼U[0,1]} F(φ_θ(t)).
- `neb`: the nudged elastic band with a climbing image, and AutoNEB's pivot insertion (Draxler et al.
  2018). The gradient's component along the path tangent is removed; pivots are kept apart by springs or
  by even redistribution along the path; new pivots are inserted where a dense evaluation between pivots
  finds the highest point; the saddle height is read from that dense evaluation.
- `dss`: Dynamic String Sampling of Freeman & Bruna (2017), their Algorithm 1. `dss_bisect` runs it at
  decreasing levels to bracket the lowest level at which it still connects (the saddle height).

Barrier of a path (RELATED.md): B(γ) = max_t F(γ(t)) − max(F(γ(0)), F(γ(1))). The maximum itself,
max_t F(γ(t)), is an upper bound on the minimax ("mountain pass") height between the endpoints, which is
the quantity the depth ε of Theorem 4 is made of.

Internally the parameters are flattened to one vector of length D (`jax.flatten_util.ravel_pytree` over
the inexact-array leaves); every kernel is an `equinox.filter_jit` function of `fn`, so passing the same
`fn` (for data objectives, an `jaxland.objective_fn` module, whose data are pytree leaves) and the same
shapes reuses the compiled code.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from ._evaluate import evaluate_path
from ._paths import AbstractPath, bezier, check_same_structure, linear, polychain

__all__ = [
    "CurveResult",
    "NEBResult",
    "DSSResult",
    "fit_curve",
    "neb",
    "dss",
    "dss_bisect",
    "search_path",
    "geodesic_length",
    "SEARCH_METHODS",
]

SEARCH_METHODS = ("linear", "bezier", "polychain", "neb", "dss")


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


class CurveResult(NamedTuple):
    """What `fit_curve` (and `search_path(method="linear")`) returns.

    - `path`: the fitted `Bezier` or `Polychain` (a `Linear` segment for method "linear").
    - `ts` (P,), `values` (P,): the dense evaluation F(γ(t)) used for the numbers below.
    - `max_value`: max_t F(γ(t)) on that grid; `t_max`: where.
    - `barrier`: max_value − max(F(a), F(b)).
    - `history`: (steps,) the training objective, the mini-batch mean of F(φ(t)) over t.
    - `evaluations`: number of F evaluations (with gradient) spent training, plus the dense grid.
    - `method`: "bezier", "polychain" or "linear".
    """

    path: AbstractPath
    ts: Array
    values: Array
    max_value: float
    t_max: float
    barrier: float
    history: Array
    evaluations: int
    method: str


class NEBResult(NamedTuple):
    """What `neb` returns.

    - `path`: the polychain through the final pivots (uniform parametrisation: pivot j at t = j/(K−1)).
    - `ts`, `values`, `max_value`, `t_max`, `barrier`: the dense evaluation between pivots and what it
      gives (`max_value` is the saddle-height estimate).
    - `pivot_values`: (K,) F at the pivots; `climbing_index`: the pivot that climbed (−1 if none).
    - `history`: (total steps,) the highest pivot value after each step, all rounds concatenated.
    - `rounds`: AutoNEB rounds run; `evaluations`: F evaluations (with gradient) plus the dense grid.
    - `method`: "neb".
    """

    path: AbstractPath
    ts: Array
    values: Array
    max_value: float
    t_max: float
    barrier: float
    pivot_values: Array
    climbing_index: int
    history: Array
    rounds: int
    evaluations: int
    method: str


class DSSResult(NamedTuple):
    """What `dss` and `dss_bisect` return.

    - `path`: the polychain through the string (endpoints and beads, arc-length parametrisation).
    - `ts`, `values`, `max_value`, `t_max`, `barrier`: the dense evaluation of that polychain.
    - `converged`: True when every segment's maximum is at most the acceptance level.
    - `reason`: why it stopped ("connected", or which budget ran out and on what segment).
    - `level`: the level λ it tried to connect at; `accept_level`: λ + (accept − 1)|λ|.
    - `n_beads`: beads trained (the string has n_beads + 2 nodes); `bead_values`: F at the nodes.
    - `geodesic_length`: Σ‖θ_{i+1} − θ_i‖ / ‖θ_N − θ_1‖, Freeman & Bruna's normalised length (1 for the
      straight segment).
    - `max_depth_reached`: the deepest recursion level used.
    - `evaluations`: F evaluations (gradient steps of the beads + segment evaluations + dense grid).
    - `levels`: for `dss_bisect`, the (level, converged) pairs tried; empty for `dss`.
    - `method`: "dss".
    """

    path: AbstractPath
    ts: Array
    values: Array
    max_value: float
    t_max: float
    barrier: float
    converged: bool
    reason: str
    level: float
    accept_level: float
    n_beads: int
    bead_values: Array
    geodesic_length: float
    max_depth_reached: int
    evaluations: int
    levels: tuple
    method: str


# --------------------------------------------------------------------------------------------------
# Flattening and checks
# --------------------------------------------------------------------------------------------------


def _flatten(tree: PyTree):
    """(vector, template, static): the inexact-array leaves raveled into one vector."""
    params, static = eqx.partition(tree, eqx.is_inexact_array)
    vec, _ = ravel_pytree(params)
    return vec, params, static


def _unflattener(template: PyTree, static: PyTree) -> Callable[[Array], PyTree]:
    _, unravel = ravel_pytree(template)
    return lambda v: eqx.combine(unravel(v), static)


def _check_endpoints(fn, a, b):
    if not callable(fn):
        raise TypeError(f"fn must be callable (params -> scalar); got {type(fn).__name__}")
    check_same_structure(a, b)
    va, template, static = _flatten(a)
    vb, _, _ = _flatten(b)
    if va.shape[0] == 0:
        raise ValueError("the endpoints have no inexact-array leaves to search over")
    if not jnp.issubdtype(va.dtype, jnp.floating):
        raise TypeError(f"parameters must be floating point; got {va.dtype}")
    fa, fb = float(fn(a)), float(fn(b))
    if not (math.isfinite(fa) and math.isfinite(fb)):
        raise ValueError(f"F must be finite at both endpoints; got F(a) = {fa}, F(b) = {fb}")
    return va, vb, template, static, fa, fb


def _check_pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {v!r}")
    return int(v)


def _check_pos_float(name: str, v, allow_zero: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0; got {v!r}")
    return f


@functools.lru_cache(maxsize=32)
def _adam(learning_rate: float) -> optax.GradientTransformation:
    # Cached so that repeated calls with the default optimiser reuse the compiled kernels.
    return optax.adam(learning_rate)


def _dense(fn, path: AbstractPath, points: int, fa: float, fb: float):
    ts = np.linspace(0.0, 1.0, points)
    values = jnp.asarray(evaluate_path(fn, path, ts))
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise FloatingPointError("F is not finite along the path found; lower the learning rate")
    i = int(np.argmax(v))
    return jnp.asarray(ts), values, float(v[i]), float(ts[i]), float(v[i] - max(fa, fb))


def geodesic_length(nodes: Array) -> float:
    """Σ_i ‖θ_{i+1} − θ_i‖ / ‖θ_N − θ_1‖ for flattened nodes of shape (K, D) (Freeman & Bruna).

    Equal to 1 for points in order on the segment; ``inf`` when the ends coincide.
    """
    nodes = jnp.asarray(nodes)
    if nodes.ndim != 2 or nodes.shape[0] < 2:
        raise ValueError(f"nodes must have shape (K, D) with K >= 2; got {nodes.shape}")
    total = float(jnp.sum(jnp.linalg.norm(jnp.diff(nodes, axis=0), axis=1)))
    direct = float(jnp.linalg.norm(nodes[-1] - nodes[0]))
    return total / direct if direct > 0 else math.inf


# --------------------------------------------------------------------------------------------------
# Curve fitting (Garipov et al. 2018)
# --------------------------------------------------------------------------------------------------


def _bernstein(t: Array, degree: int) -> Array:
    k = jnp.arange(degree + 1)
    c = jnp.asarray([math.comb(degree, i) for i in range(degree + 1)], t.dtype)
    return c * t**k * (1 - t) ** (degree - k)


def _curve_point(kind: str, nodes: Array, t: Array) -> Array:
    """φ(t) for flat nodes (K, D): Bézier in Bernstein form, or the uniform polychain."""
    K = nodes.shape[0]
    if kind == "bezier":
        return _bernstein(t, K - 1) @ nodes
    j = jnp.clip(jnp.floor(t * (K - 1)).astype(jnp.int32), 0, K - 2)
    s = t * (K - 1) - j
    return (1 - s) * nodes[j] + s * nodes[j + 1]


@eqx.filter_jit
def _train_curve(fn, kind, ends, controls, template, static, keys, batch, optimizer, temperature):
    to_tree = _unflattener(template, static)
    dtype = controls.dtype

    def mean_F(C, t):
        nodes = jnp.concatenate([ends[:1], C, ends[1:]])
        v = jax.vmap(lambda s: fn(to_tree(_curve_point(kind, nodes, s))))(t)
        if temperature is None:
            return jnp.mean(v)
        # τ log mean exp(F/τ): a smooth maximum over the sampled t (→ max as τ → 0, → mean as τ → ∞)
        return temperature * (jax.nn.logsumexp(v / temperature) - math.log(v.shape[0]))

    def step(carry, k):
        C, state = carry
        # stratified sample of U[0, 1]: one t in each of `batch` equal cells (lower variance)
        t = (jnp.arange(batch, dtype=dtype) + jax.random.uniform(k, (batch,), dtype)) / batch
        v, g = jax.value_and_grad(mean_F)(C, t)
        u, state = optimizer.update(g, state, C)
        return (optax.apply_updates(C, u), state), v

    (C, _), history = jax.lax.scan(step, (controls, optimizer.init(controls)), keys)
    return C, history


def fit_curve(
    fn: Callable[[PyTree], Array],
    a: PyTree,
    b: PyTree,
    *,
    kind: str = "bezier",
    bends: int = 1,
    steps: int = 500,
    batch: int = 16,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    key: PRNGKeyArray | None = None,
    init_noise: float = 0.0,
    temperature: float | None = None,
    points: int = 257,
) -> CurveResult:
    """Fit a curve between two points by minimising E_{t∼U[0,1]} F(φ_θ(t)) (Garipov et al. 2018).

    The curve is a Bézier curve of degree `bends` + 1 (``kind="bezier"``; `bends` = 1 is the quadratic
    curve (1−t)²a + 2t(1−t)θ + t²b), or the polychain a → θ_1 → … → θ_bends → b with uniform
    parametrisation (``kind="polychain"``; `bends` = 1 is the one-bend chain). The free nodes θ start on
    the segment (θ_j = a + j/(bends+1)·(b − a), which makes the curve the segment itself), optionally
    perturbed by Gaussian noise of standard deviation `init_noise`·‖b − a‖/√D, and are trained with
    optax; each step draws a stratified sample of `batch` values of t from `key`.

    The objective is the *mean* of F along the curve, not its maximum: the curve is pulled into low
    regions but may cross a narrow ridge above the saddle (use `neb` for saddle heights). With a
    `temperature` τ > 0 the mean is replaced by the smooth maximum τ log E_t exp(F(φ_θ(t))/τ) over the
    sampled t (an extension, not Garipov et al.'s objective): as τ → 0 it tends to max_t F, so the curve
    is pulled towards a minimax path; τ should be of the order of the barrier's scale.

    **Arguments:**
    - `fn`: F, a function of one parameter pytree returning a scalar (e.g. `jaxland.objective_fn(x, y,
      kappa=κ)`, or `jaxland.muller_brown_potential`).
    - `a`, `b`: the endpoints, pytrees of equal structure (networks, or arrays of shape (d,)).
    - `kind`: "bezier" or "polychain"; `bends`: number of free nodes (≥ 1).
    - `steps`, `batch`: the optimisation budget (`steps`·`batch` evaluations of F and its gradient).
    - `learning_rate`: Adam's step size when `optimizer` is None; `optimizer`: any optax transformation.
    - `key`: PRNG key for the t samples and the initial noise (default `PRNGKey(0)`).
    - `temperature`: None (Garipov et al.'s mean) or τ > 0 for the smooth maximum above.
    - `points`: size of the uniform t grid of the final dense evaluation.

    **Returns:** `CurveResult` with the path (`jaxland.paths.Bezier` or `Polychain`, endpoints exact)
    and its barrier.
    """
    if kind not in ("bezier", "polychain"):
        raise ValueError(f"kind must be 'bezier' or 'polychain'; got {kind!r}")
    bends = _check_pos_int("bends", bends)
    steps = _check_pos_int("steps", steps)
    batch = _check_pos_int("batch", batch)
    points = _check_pos_int("points", points, 2)
    init_noise = _check_pos_float("init_noise", init_noise, allow_zero=True)
    if temperature is not None:
        temperature = _check_pos_float("temperature", temperature)
    va, vb, template, static, fa, fb = _check_endpoints(fn, a, b)
    opt = optimizer if optimizer is not None else _adam(_check_pos_float("learning_rate",
                                                                        learning_rate))
    key = jax.random.PRNGKey(0) if key is None else key
    k_noise, k_t = jax.random.split(key)
    frac = (jnp.arange(1, bends + 1, dtype=va.dtype) / (bends + 1))[:, None]
    controls = va[None] + frac * (vb - va)[None]
    if init_noise > 0:
        scale = init_noise * jnp.linalg.norm(vb - va) / math.sqrt(va.shape[0])
        controls = controls + scale * jax.random.normal(k_noise, controls.shape, va.dtype)
    ends = jnp.stack([va, vb])
    C, history = _train_curve(fn, kind, ends, controls, template, static,
                              jax.random.split(k_t, steps), batch, opt, temperature)
    if not bool(jnp.all(jnp.isfinite(C))):
        raise FloatingPointError("curve fitting diverged (non-finite nodes); lower the learning rate")
    to_tree = _unflattener(template, static)
    nodes = [a] + [to_tree(C[j]) for j in range(bends)] + [b]
    path = bezier(nodes) if kind == "bezier" else polychain(nodes)
    ts, values, vmax, tmax, barrier = _dense(fn, path, points, fa, fb)
    return CurveResult(path, ts, values, vmax, tmax, barrier, history, steps * batch + points, kind)


# --------------------------------------------------------------------------------------------------
# Nudged elastic band and AutoNEB (Draxler et al. 2018; Henkelman & Jónsson 2000)
# --------------------------------------------------------------------------------------------------


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
def _neb_relax(fn, X, template, static, spring, use_spring, steps, climb_from, optimizer):
    """Relax the interior pivots of X (K, D) for `steps` steps; endpoints fixed."""
    to_tree = _unflattener(template, static)
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
def _between_pivots(fn, X, template, static, s):
    """F on the segments between consecutive pivots at local coordinates s (S,): shape (K−1, S)."""
    to_tree = _unflattener(template, static)
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

    **Returns:** `NEBResult` with the polychain through the pivots, its barrier and the saddle estimate
    `max_value`.
    """
    K = _check_pos_int("pivots", pivots, 3)
    steps = _check_pos_int("steps", steps)
    rounds = _check_pos_int("rounds", rounds)
    insert = _check_pos_int("insert", insert, 0)
    max_pivots = _check_pos_int("max_pivots", max_pivots, K)
    pps = _check_pos_int("points_per_segment", points_per_segment, 2)
    if not (0.0 <= climb_after <= 1.0):
        raise ValueError(f"climb_after must lie in [0, 1]; got {climb_after!r}")
    use_spring = spring is not None
    k_spring = _check_pos_float("spring", spring) if use_spring else 0.0
    va, vb, template, static, fa, fb = _check_endpoints(fn, a, b)
    opt = optimizer if optimizer is not None else _adam(_check_pos_float("learning_rate",
                                                                        learning_rate))
    if init is None:
        X = va[None] + jnp.linspace(0.0, 1.0, K, dtype=va.dtype)[:, None] * (vb - va)[None]
    else:
        X = jax.vmap(lambda tr: _flatten(tr)[0])(init)
        if X.shape[1] != va.shape[0] or X.shape[0] < 3:
            raise ValueError(f"init must stack at least 3 pytrees like a (leading axis K); got "
                             f"flattened shape {X.shape}")
        X = X.at[0].set(va).at[-1].set(vb)
    s = jnp.linspace(0.0, 1.0, pps + 2, dtype=va.dtype)[1:-1]
    climb_from = int(round(climb_after * steps)) if climb else steps + 1
    histories, evals, r = [], 0, 0
    for r in range(1, rounds + 1):
        X, V, hist = _neb_relax(fn, X, template, static, jnp.asarray(k_spring, va.dtype),
                                use_spring, steps, climb_from, opt)
        histories.append(hist)
        evals += steps * (X.shape[0] - 2)
        if r == rounds or insert == 0:
            break
        dense = np.asarray(_between_pivots(fn, X, template, static, s), np.float64)
        evals += dense.size
        Vn = np.asarray(V, np.float64)
        excess = dense.max(axis=1) - np.maximum(Vn[:-1], Vn[1:])
        room = max_pivots - X.shape[0]
        order = [j for j in np.argsort(-excess) if excess[j] > 0][: min(insert, room)]
        if not order:
            break
        new = []
        for j in range(X.shape[0]):
            new.append(X[j])
            if j in order:
                sj = s[int(np.argmax(dense[j]))]
                new.append((1 - sj) * X[j] + sj * X[j + 1])
        X = jnp.stack(new)
    if not bool(jnp.all(jnp.isfinite(X))):
        raise FloatingPointError("NEB diverged (non-finite pivots); lower the learning rate")
    to_tree = _unflattener(template, static)
    Kf = X.shape[0]
    nodes = [a] + [to_tree(X[j]) for j in range(1, Kf - 1)] + [b]
    path = polychain(nodes)
    V = np.asarray(V, np.float64)
    ci = int(np.argmax(V[1:-1])) + 1 if climb else -1
    n_points = (Kf - 1) * (pps + 1) + 1
    ts, values, vmax, tmax, barrier = _dense(fn, path, n_points, fa, fb)
    return NEBResult(path, ts, values, vmax, tmax, barrier, jnp.asarray(V), ci,
                     jnp.concatenate(histories), r, evals + n_points, "neb")


# --------------------------------------------------------------------------------------------------
# Dynamic String Sampling (Freeman & Bruna 2017, Algorithm 1)
# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _segment_values(fn, xa, xb, template, static, ts):
    to_tree = _unflattener(template, static)
    pts = (1 - ts)[:, None] * xa[None] + ts[:, None] * xb[None]
    return jax.vmap(lambda v: fn(to_tree(v)))(pts)


@eqx.filter_jit
def _descend(fn, x0, target, template, static, max_steps, optimizer):
    """Optax descent from x0 until F ≤ target or max_steps steps: (x, F(x), steps used)."""
    to_tree = _unflattener(template, static)
    f = lambda v: fn(to_tree(v))

    def cond(c):
        _, _, i, v = c
        return (v > target) & (i < max_steps)

    def body(c):
        x, state, i, _ = c
        v, g = jax.value_and_grad(f)(x)
        u, state = optimizer.update(g, state, x)
        x = optax.apply_updates(x, u)
        return x, state, i + 1, f(x)

    x, _, i, v = jax.lax.while_loop(cond, body, (x0, optimizer.init(x0), jnp.asarray(0), f(x0)))
    return x, v, i


def dss(
    fn: Callable[[PyTree], Array],
    a: PyTree,
    b: PyTree,
    *,
    level: float | None = None,
    alpha: float = 0.98,
    accept: float = 1.02,
    max_depth: int = 10,
    max_beads: int = 64,
    bead_steps: int = 1000,
    learning_rate: float = 1e-2,
    optimizer: optax.GradientTransformation | None = None,
    segment_points: int = 33,
    points: int | None = None,
) -> DSSResult:
    """Dynamic String Sampling (Freeman & Bruna 2017, Algorithm 1, greedy), connecting a to b at a level.

    Start from the string [a, b]. Repeatedly take the first segment [θ_i, θ_{i+1}] whose maximum of F on
    `segment_points` evenly spaced points exceeds the acceptance level λ + (accept − 1)|λ|; start a new
    bead at that maximum and train it (optax descent on F) until F ≤ λ − (1 − alpha)|λ| or `bead_steps`
    steps; insert it and recurse on both halves (recursion depth = number of bisections of a segment).
    For λ > 0 these are Freeman & Bruna's α·L0 (α = 0.98) and 1.02·L0. The string converges when every
    segment is accepted; it fails when a segment above the acceptance level would need a bead beyond
    `max_depth` or beyond `max_beads` beads (then the reason names the segment and its maximum). A failure
    is evidence that a and b lie in different components of the sub-level set {F ≤ accept level}, not a
    proof.

    **Arguments:**
    - `fn`, `a`, `b`: as for `fit_curve`.
    - `level`: λ, default max(F(a), F(b)) (the level of the minima: DSS then tests whether they are
      connected without a barrier).
    - `alpha`, `accept`: the bead training target and the acceptance factor (0 < alpha ≤ 1 ≤ accept).
    - `max_depth`, `max_beads`: the budget; `bead_steps`: the most descent steps per bead.
    - `learning_rate` / `optimizer`: the beads' optimiser (default Adam).
    - `segment_points`: points per segment when looking for its maximum.
    - `points`: size of the final dense grid (default `segment_points` − 1 per segment of the string).

    **Returns:** `DSSResult` (the string as an arc-length polychain, converged, reason, bead count,
    normalised geodesic length, barrier).
    """
    if not (0 < alpha <= 1):
        raise ValueError(f"alpha must lie in (0, 1]; got {alpha!r}")
    if not (accept >= 1 and math.isfinite(accept)):
        raise ValueError(f"accept must be a finite number >= 1; got {accept!r}")
    max_depth = _check_pos_int("max_depth", max_depth, 0)
    max_beads = _check_pos_int("max_beads", max_beads, 0)
    bead_steps = _check_pos_int("bead_steps", bead_steps)
    sp = _check_pos_int("segment_points", segment_points, 3)
    va, vb, template, static, fa, fb = _check_endpoints(fn, a, b)
    lam = max(fa, fb) if level is None else float(level)
    if not math.isfinite(lam):
        raise ValueError(f"level must be finite; got {level!r}")
    target = lam - (1 - alpha) * abs(lam)
    ok_level = lam + (accept - 1) * abs(lam)
    opt = optimizer if optimizer is not None else _adam(_check_pos_float("learning_rate",
                                                                        learning_rate))
    ts = jnp.linspace(0.0, 1.0, sp, dtype=va.dtype)
    beads, values, depths = [va, vb], [fa, fb], [0]
    n_beads, evals, deepest = 0, 0, 0
    converged, reason = True, "connected"
    i = 0
    while i < len(beads) - 1:
        v = np.asarray(_segment_values(fn, beads[i], beads[i + 1], template, static, ts), np.float64)
        evals += sp
        if not np.all(np.isfinite(v)):
            raise FloatingPointError(f"F is not finite on segment {i} of the string")
        if v.max() <= ok_level:
            i += 1
            continue
        if depths[i] >= max_depth or n_beads >= max_beads:
            converged = False
            which = "depth limit" if depths[i] >= max_depth else "bead budget"
            reason = (f"{which} exhausted ({n_beads} beads, depth {depths[i]}): segment {i} of "
                      f"{len(beads) - 1} still peaks at F = {v.max():.6g} > acceptance level "
                      f"{ok_level:.6g}")
            break
        j = int(np.argmax(v))
        x0 = (1 - ts[j]) * beads[i] + ts[j] * beads[i + 1]
        x, fx, used = _descend(fn, x0, jnp.asarray(target, va.dtype), template, static,
                               bead_steps, opt)
        evals += int(used) + 1
        n_beads += 1
        d = depths[i] + 1
        deepest = max(deepest, d)
        beads.insert(i + 1, x)
        values.insert(i + 1, float(fx))
        depths[i : i + 1] = [d, d]
    nodes = jnp.stack(beads)
    # drop coincident consecutive nodes (a bead that fell back onto its neighbour) for the path
    keep = [0] + [k for k in range(1, len(beads)) if float(jnp.linalg.norm(nodes[k] - nodes[k - 1])) > 0]
    if keep[-1] != len(beads) - 1:
        keep[-1] = len(beads) - 1
    to_tree = _unflattener(template, static)
    tree_nodes = [a] + [to_tree(nodes[k]) for k in keep[1:-1]] + [b]
    path = polychain(tree_nodes, "arclength") if len(keep) > 2 else linear(a, b)
    n_points = points if points is not None else (sp - 1) * (len(keep) - 1) + 1
    n_points = _check_pos_int("points", n_points, 2)
    ts_d, vals, vmax, tmax, barrier = _dense(fn, path, n_points, fa, fb)
    return DSSResult(path, ts_d, vals, vmax, tmax, barrier, converged, reason, lam, ok_level,
                     n_beads, jnp.asarray(values), geodesic_length(nodes), deepest,
                     evals + n_points, (), "dss")


def dss_bisect(
    fn: Callable[[PyTree], Array],
    a: PyTree,
    b: PyTree,
    *,
    lower: float | None = None,
    upper: float | None = None,
    iterations: int = 8,
    **dss_kwargs,
) -> DSSResult:
    """Bracket the saddle height between a and b by running `dss` at levels chosen by bisection.

    DSS connects at level λ when the sub-level set {F ≤ λ + tolerance} joins a and b (as far as its
    budget can tell), so the lowest connecting level approximates the minimax height between them. Start
    from `lower` (default max(F(a), F(b)), where it need not connect) and `upper` (default the maximum
    of F on the straight segment, where it connects at once), and halve the bracket `iterations` times.

    **Returns:** the `DSSResult` of the lowest level that connected, with `levels` holding every
    (level, converged) pair tried. Its `max_value` is an upper bound on the minimax height (a path
    achieving it exists); the highest failing level is evidence of a lower bound.
    """
    iterations = _check_pos_int("iterations", iterations, 0)
    va, vb, template, static, fa, fb = _check_endpoints(fn, a, b)
    lo = max(fa, fb) if lower is None else float(lower)
    if upper is None:
        seg = _segment_values(fn, va, vb, template, static, jnp.linspace(0.0, 1.0, 65, dtype=va.dtype))
        upper = float(jnp.max(seg))
    hi = float(upper)
    if not hi >= lo:
        raise ValueError(f"upper ({hi}) must be >= lower ({lo})")
    best = dss(fn, a, b, level=hi, **dss_kwargs)
    levels, evals = [(hi, best.converged)], best.evaluations
    if best.converged:
        r = dss(fn, a, b, level=lo, **dss_kwargs)
        levels.append((lo, r.converged))
        evals += r.evaluations
        if r.converged:
            best = r
        else:
            for _ in range(iterations):
                lam = 0.5 * (lo + hi)
                r = dss(fn, a, b, level=lam, **dss_kwargs)
                levels.append((lam, r.converged))
                evals += r.evaluations
                if r.converged:
                    hi, best = lam, r
                else:
                    lo = lam
    return best._replace(levels=tuple(levels), evaluations=evals)


# --------------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------------


def search_path(fn, a, b, *, method: str = "bezier", **kwargs) -> Any:
    """Search a low path from a to b with one of `SEARCH_METHODS`.

    "linear" evaluates the straight segment (no search; keyword `points`); "bezier" and "polychain" call
    `fit_curve(kind=method)`; "neb" calls `neb`; "dss" calls `dss_bisect`. Keyword arguments go to the
    method. Every result has `path`, `max_value`, `t_max`, `barrier` and `evaluations`.
    """
    if method == "linear":
        points = _check_pos_int("points", kwargs.pop("points", 257), 2)
        if kwargs:
            raise TypeError(f"method 'linear' takes only `points`; got {sorted(kwargs)}")
        _, _, _, _, fa, fb = _check_endpoints(fn, a, b)
        path = linear(a, b)
        ts, values, vmax, tmax, barrier = _dense(fn, path, points, fa, fb)
        return CurveResult(path, ts, values, vmax, tmax, barrier, jnp.zeros((0,)), points, "linear")
    if method in ("bezier", "polychain"):
        return fit_curve(fn, a, b, kind=method, **kwargs)
    if method == "neb":
        return neb(fn, a, b, **kwargs)
    if method == "dss":
        return dss_bisect(fn, a, b, **kwargs)
    raise ValueError(f"method must be one of {SEARCH_METHODS}; got {method!r}")
