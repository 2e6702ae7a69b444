"""Curve fitting between two points (Garipov et al. 2018).

A Bézier curve φ_θ(t) = Σ_k C(d,k) t^k (1−t)^{d−k} θ_k or a polychain with free interior nodes
θ_1 … θ_{d−1}, trained with optax on E_{t∼U[0,1]} F(φ_θ(t)) (Garipov et al., NeurIPS
2018). The result carries the path found and its barrier B(γ) = max_t F(γ(t)) − max(F(γ(0)),
F(γ(1))) from a dense evaluation with `jaxland.evaluate_path`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree

from .._checks import check_positive_float, check_positive_int
from .._optim import cached_adam
from .._params import lerp_stats
from ..paths._paths import AbstractPath, bezier, polychain
from ._common import _check_endpoints, _dense, _to_trees


class CurveResult(NamedTuple):
    """What `fit_curve` (and `search_path(method="linear")`) returns.

    - `path`: the fitted `Bezier` or `Polychain` (a `Segment` for method "linear").
    - `ts` (P,), `values` (P,): the dense evaluation F(γ(t)) used for the numbers below.
    - `f_max`: max_t F(γ(t)) on that grid; `t_max`: where.
    - `barrier`: f_max − max(F(a), F(b)), never negative: the path holds its ends, so a negative
      difference can only be rounding between two evaluations of the same point, and is 0.
    - `history`: (steps,) the training objective, the mini-batch mean of F(φ(t)) over t.
    - `evaluations`: number of F evaluations (with gradient) spent training, plus the dense grid.
    - `method`: "bezier", "polychain" or "linear".
    """

    path: AbstractPath
    ts: Array
    values: Array
    f_max: float
    t_max: float
    barrier: float
    history: Array
    evaluations: int
    method: str


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
def _train_curve(fn, kind, ends, controls, to_tree, keys, batch, optimizer, temperature, a, b):
    dtype = controls.dtype

    def point(nodes, s):
        # running statistics are not trained: at t they are (1 − t)·s_a + t·s_b (see _to_trees)
        return lerp_stats(to_tree(_curve_point(kind, nodes, s)), a, b, s)

    def mean_F(C, t):
        nodes = jnp.concatenate([ends[:1], C, ends[1:]])
        v = jax.vmap(lambda s: fn(point(nodes, s)))(t)
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
    - `a`, `b`: the endpoints, distinct pytrees of equal structure (networks of any kind: a jaxland
      model, an `eqx.nn.MLP`, a flax nnx state; or arrays of shape (d,)). Only the floating-point
      leaves are searched over; every other leaf must be equal in a and b and is carried through.
      Running statistics (a linen `batch_stats`, a haiku state, nnx `BatchStat`s) are not
      parameters: they are not trained, and at every t of the curve (in training and on the path
      returned) they are the endpoints' interpolated, (1 − t)·s_a + t·s_b. A loss that should see
      the statistics of the data at each point recomputes them (`jaxland.recompute_batch_stats`).
    - `kind`: "bezier" or "polychain"; `bends`: number of free nodes (≥ 1).
    - `steps`, `batch`: the optimisation budget (`steps`·`batch` evaluations of F and its gradient).
    - `learning_rate`: Adam's step size when `optimizer` is None; `optimizer`: any optax transformation.
    - `key`: PRNG key for the t samples and the initial noise (default `PRNGKey(0)`).
    - `temperature`: None (Garipov et al.'s mean) or τ > 0 for the smooth maximum above.
    - `points`: size of the uniform t grid of the final dense evaluation.

    **Returns:** `CurveResult` with the path (`jaxland.paths.Bezier` or `Polychain`; γ(0) = a and
    γ(1) = b exactly, every leaf in its own dtype) and its barrier.
    """
    if kind not in ("bezier", "polychain"):
        raise ValueError(f"kind must be 'bezier' or 'polychain'; got {kind!r}")
    bends = check_positive_int("bends", bends)
    steps = check_positive_int("steps", steps)
    batch = check_positive_int("batch", batch)
    points = check_positive_int("points", points, 2)
    init_noise = check_positive_float("init_noise", init_noise, allow_zero=True)
    if temperature is not None:
        temperature = check_positive_float("temperature", temperature)
    va, vb, unravel, fa, fb = _check_endpoints(fn, a, b)
    opt = optimizer if optimizer is not None else cached_adam(check_positive_float("learning_rate",
                                                                        learning_rate))
    key = jax.random.PRNGKey(0) if key is None else key
    k_noise, k_t = jax.random.split(key)
    # the starting nodes on the segment, in host arithmetic (no kernels compiled for set-up)
    na, nb = np.asarray(va), np.asarray(vb)
    frac = (np.arange(1, bends + 1) / (bends + 1)).astype(na.dtype)[:, None]
    controls = jnp.asarray(na[None] + frac * (nb - na)[None])
    if init_noise > 0:
        scale = init_noise * jnp.linalg.norm(vb - va) / math.sqrt(va.shape[0])
        controls = controls + scale * jax.random.normal(k_noise, controls.shape, va.dtype)
    ends = jnp.asarray(np.stack([na, nb]))
    C, history = _train_curve(fn, kind, ends, controls, unravel, jax.random.split(k_t, steps), batch,
                              opt, temperature, a, b)
    if not np.all(np.isfinite(np.asarray(C))):
        raise FloatingPointError("curve fitting diverged (non-finite nodes); lower the learning rate")
    nodes = _to_trees(unravel, a, b, C)
    path = bezier(nodes) if kind == "bezier" else polychain(nodes)
    ts, values, vmax, tmax, barrier = _dense(fn, path, points, fa, fb)
    return CurveResult(path, ts, values, vmax, tmax, barrier, history, steps * batch + points, kind)
