"""Dynamic String Sampling of Freeman & Bruna (2017), their Algorithm 1, and `dss_bisect`.

`dss` trains beads at the highest point of each segment until every segment's maximum is below an
acceptance level; `dss_bisect` runs it at decreasing levels to bracket the lowest level at which it
still connects (the saddle height). Dynamic String Sampling: Freeman & Bruna (ICLR 2017), Algorithm 1.
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
from jaxtyping import Array, PyTree

from .._checks import check_positive_float, check_positive_int
from .._optim import cached_adam
from ..landscape._metrics import geodesic_ratio
from ..paths._paths import AbstractPath, linear, polychain
from ._common import _check_endpoints, _dense, _to_trees


class DSSResult(NamedTuple):
    """What `dss` and `dss_bisect` return.

    - `path`: the polychain through the string (endpoints and beads, arc-length parametrisation).
    - `ts`, `values`, `f_max`, `t_max`, `barrier`: the dense evaluation of that polychain.
    - `converged`: True when every segment's maximum is at most the acceptance level.
    - `reason`: why it stopped ("connected", or which budget ran out and on what segment).
    - `level`: the level λ it tried to connect at; `accept_level`: λ + (accept − 1)|λ|.
    - `n_beads`: beads trained (the string has n_beads + 2 nodes); `bead_values`: F at the nodes.
    - `geodesic_ratio`: Σ‖θ_{i+1} − θ_i‖ / ‖θ_N − θ_1‖ over the string, Freeman & Bruna's normalised
      length (1 for the straight segment; `jaxland.geodesic_ratio`).
    - `max_depth_reached`: the deepest recursion level used.
    - `evaluations`: F evaluations (gradient steps of the beads + segment evaluations + dense grid).
    - `levels`: for `dss_bisect`, the (level, converged) pairs tried; empty for `dss`.
    - `method`: "dss".
    """

    path: AbstractPath
    ts: Array
    values: Array
    f_max: float
    t_max: float
    barrier: float
    converged: bool
    reason: str
    level: float
    accept_level: float
    n_beads: int
    bead_values: Array
    geodesic_ratio: float
    max_depth_reached: int
    evaluations: int
    levels: tuple
    method: str


@eqx.filter_jit
def _segment_values(fn, xa, xb, to_tree, ts):
    pts = (1 - ts)[:, None] * xa[None] + ts[:, None] * xb[None]
    return jax.vmap(lambda v: fn(to_tree(v)))(pts)


@eqx.filter_jit
def _descend(fn, x0, target, to_tree, max_steps, optimizer):
    """Optax descent from x0 until F ≤ target or max_steps steps: (x, F(x), steps used)."""
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

    **Returns:** `DSSResult` (the string as an arc-length polychain with γ(0) = a and γ(1) = b exactly,
    converged, reason, bead count, normalised geodesic length, barrier).
    """
    if not (0 < alpha <= 1):
        raise ValueError(f"alpha must lie in (0, 1]; got {alpha!r}")
    if not (accept >= 1 and math.isfinite(accept)):
        raise ValueError(f"accept must be a finite number >= 1; got {accept!r}")
    max_depth = check_positive_int("max_depth", max_depth, 0)
    max_beads = check_positive_int("max_beads", max_beads, 0)
    bead_steps = check_positive_int("bead_steps", bead_steps)
    sp = check_positive_int("segment_points", segment_points, 3)
    va, vb, unravel, fa, fb = _check_endpoints(fn, a, b)
    lam = max(fa, fb) if level is None else float(level)
    if not math.isfinite(lam):
        raise ValueError(f"level must be finite; got {level!r}")
    target = lam - (1 - alpha) * abs(lam)
    ok_level = lam + (accept - 1) * abs(lam)
    opt = optimizer if optimizer is not None else cached_adam(check_positive_float("learning_rate",
                                                                        learning_rate))
    ts = jnp.asarray(np.linspace(0.0, 1.0, sp).astype(va.dtype))
    beads, values, depths = [va, vb], [fa, fb], [0]
    n_beads, evals, deepest = 0, 0, 0
    converged, reason = True, "connected"
    i = 0
    while i < len(beads) - 1:
        v = np.asarray(_segment_values(fn, beads[i], beads[i + 1], unravel, ts), np.float64)
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
        # the bead starts at the segment's highest sampled point (host arithmetic: no kernel to compile)
        s = np.asarray(ts[j], va.dtype)
        x0 = jnp.asarray((1 - s) * np.asarray(beads[i]) + s * np.asarray(beads[i + 1]))
        x, fx, used = _descend(fn, x0, jnp.asarray(target, va.dtype), unravel, bead_steps, opt)
        evals += int(used) + 1
        n_beads += 1
        d = depths[i] + 1
        deepest = max(deepest, d)
        beads.insert(i + 1, x)
        values.insert(i + 1, float(fx))
        depths[i : i + 1] = [d, d]
    nodes = np.stack([np.asarray(x) for x in beads])
    # drop coincident consecutive nodes (a bead that fell back onto its neighbour) for the path
    keep = [0] + [k for k in range(1, len(beads)) if np.any(nodes[k] != nodes[k - 1])]
    if keep[-1] != len(beads) - 1:
        keep[-1] = len(beads) - 1
    tree_nodes = _to_trees(unravel, a, b, [jnp.asarray(nodes[k]) for k in keep[1:-1]])
    path = polychain(tree_nodes, "arclength") if len(keep) > 2 else linear(a, b)
    n_points = points if points is not None else (sp - 1) * (len(keep) - 1) + 1
    n_points = check_positive_int("points", n_points, 2)
    ts_d, vals, vmax, tmax, barrier = _dense(fn, path, n_points, fa, fb)
    return DSSResult(path, ts_d, vals, vmax, tmax, barrier, converged, reason, lam, ok_level,
                     n_beads, jnp.asarray(values), float(geodesic_ratio(nodes)), deepest,
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
    (level, converged) pair tried. Its `f_max` is an upper bound on the minimax height (a path
    achieving it exists); the highest failing level is evidence of a lower bound.
    """
    iterations = check_positive_int("iterations", iterations, 0)
    va, vb, unravel, fa, fb = _check_endpoints(fn, a, b)
    lo = max(fa, fb) if lower is None else float(lower)
    if upper is None:
        grid = jnp.asarray(np.linspace(0.0, 1.0, 65).astype(va.dtype))
        seg = _segment_values(fn, va, vb, unravel, grid)
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
