"""Metrics of a path: energy barrier, adaptive location of the maximum, length in parameter space.

- `barrier(values, ts)`: B = max_t F(γ(t)) − max(F(γ(0)), F(γ(1))) and the variant
  B_lin = max_t [F(γ(t)) − ((1 − t) F(γ(0)) + t F(γ(1)))] (the barrier above the linear mix of the endpoint
  values, as in Frankle et al. / Garipov et al.), with the t where each maximum sits.
- `refine_max(fn, path, ts, values)`: re-evaluates, in batches, around the largest local maxima of the
  sampled values until the maximum is bracketed to a tolerance.
- `path_length(path, ts)`: Σ_i ‖γ(t_{i+1}) − γ(t_i)‖ (Euclidean over all parameter leaves); `geodesic_ratio`:
  Freeman & Bruna's normalised geodesic length Σ_i ‖θ_{i+1} − θ_i‖ / ‖θ_N − θ_1‖ (1 for a straight segment).

Parameters are read through `jaxland._params`: only the floating-point leaves of a model count (an
`eqx.nn.MLP`'s activation, a flax nnx state's integer leaves are carried along, not measured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree, Real

from .._batching import bucket
from .._checks import check_positive_int, check_ts
from .._eager import eager_call
from .._params import num_stacked, param_dtype, stack_trees, tree_index, tree_norm, tree_sub
from ..engine._evaluate import evaluate_path
from ..paths._paths import AbstractPath, Polychain, Segment


class BarrierResult(NamedTuple):
    """The barrier of a path from sampled values.

    - `barrier`: max_t F(γ(t)) − max(F0, F1) (≥ 0 when the endpoints are sampled);
    - `barrier_linear`: max_t [F(γ(t)) − ((1 − t) F0 + t F1)];
    - `t_max`, `f_max`: where the sampled maximum of F is and its value;
    - `t_max_linear`: where the maximum above the linear mix is;
    - `f0`, `f1`: F(γ(0)), F(γ(1)).
    """

    barrier: Array
    barrier_linear: Array
    t_max: Array
    f_max: Array
    t_max_linear: Array
    f0: Array
    f1: Array


def barrier(values: Real[ArrayLike, " P"], ts: Real[ArrayLike, " P"] | None = None) -> BarrierResult:
    """Barrier of a path from values F(γ(t_i)) at points t_i.

    **Arguments:**
    - `values`: shape (P,), F at the points.
    - `ts`: shape (P,), the points (any order; must contain 0 and 1). Default: P equally spaced points
      linspace(0, 1, P).

    **Returns:** a `BarrierResult`. The maxima are over the sampled points only; use `refine_max` to
    locate a maximum between samples.
    """
    values = jnp.asarray(values)
    if values.ndim != 1 or values.shape[0] < 2:
        raise ValueError(f"values must have shape (P,) with P >= 2; got {values.shape}")
    if ts is None:
        ts = jnp.linspace(0.0, 1.0, values.shape[0], dtype=values.dtype)
    else:
        t_np = check_ts(ts)
        if t_np.shape != values.shape:
            raise ValueError(f"ts must have the shape of values {values.shape}; got {t_np.shape}")
        if t_np.min() != 0 or t_np.max() != 1:
            raise ValueError(
                f"ts must contain the endpoints 0 and 1; got values in [{t_np.min()}, {t_np.max()}]"
            )
        ts = jnp.asarray(ts, values.dtype)
    f0 = values[jnp.argmin(ts)]
    f1 = values[jnp.argmax(ts)]
    i = jnp.argmax(values)
    lin = values - ((1 - ts) * f0 + ts * f1)
    il = jnp.argmax(lin)
    return BarrierResult(
        barrier=values[i] - jnp.maximum(f0, f1),
        barrier_linear=lin[il],
        t_max=ts[i],
        f_max=values[i],
        t_max_linear=ts[il],
        f0=f0,
        f1=f1,
    )


class RefineResult(NamedTuple):
    """Outcome of `refine_max`.

    - `t_max`, `f_max`: the located maximiser and F there;
    - `bracket`: (lo, hi), sampled points on either side of `t_max` (width ≤ tol on success);
    - `ts`, `values`: every point evaluated (the initial grid and the refinements), sorted by t;
    - `converged`: whether the bracket reached the tolerance within `max_rounds`.

    F must be a number wherever it is evaluated: a NaN value raises ``ValueError`` naming the t where
    it occurred (a NaN maximum is not a maximum). ±inf values are kept (an infinite F is a barrier).
    """

    t_max: Array
    f_max: Array
    bracket: tuple[Array, Array]
    ts: Array
    values: Array
    converged: bool


def _local_maxima(v: np.ndarray) -> np.ndarray:
    """Indices i with v[i] ≥ both neighbours (ends compare with their one neighbour), largest first."""
    left = np.concatenate([[-np.inf], v[:-1]])
    right = np.concatenate([v[1:], [-np.inf]])
    idx = np.nonzero((v >= left) & (v >= right))[0]
    return idx[np.argsort(-v[idx], kind="stable")]


def _check_not_nan(v: np.ndarray, t: np.ndarray, name: str) -> None:
    bad = np.isnan(v)
    if np.any(bad):
        where = ", ".join(f"{x:.6g}" for x in t[bad][:5]) + (" …" if bad.sum() > 5 else "")
        raise ValueError(f"{name} is NaN at {int(bad.sum())} of {v.size} points (t = {where}): the "
                         "maximum of F along the path is undefined")


def refine_max(
    fn: Callable,
    path: AbstractPath,
    ts,
    values=None,
    *,
    tol: float = 1e-4,
    num_candidates: int = 3,
    points_per_bracket: int = 8,
    max_rounds: int = 50,
    **evaluate_kwargs,
) -> RefineResult:
    """Locate max_t F(γ(t)) to within `tol` in t by batched adaptive refinement.

    Start from samples (ts, values) (values are computed if not given). Each round takes the
    `num_candidates` largest local maxima of the samples, and for each the bracket between its two
    neighbouring samples; it evaluates `points_per_bracket` equally spaced new points inside every
    bracket in one batched `evaluate_path` call, and repeats on the merged samples until the bracket of
    the best point is narrower than `tol`. Several candidates are followed so that a narrow spike whose
    tail lifts a grid point above its neighbours is found even when another local maximum is higher on
    the coarse grid. (A spike that leaves no trace at any grid point cannot be seen by any sampling
    method; make the initial grid finer than the features you need.)

    **Arguments:**
    - `fn`, `path`, `evaluate_kwargs`: as for `evaluate_path` (fn must be scalar-valued).
    - `ts`: shape (P,), initial points in [0, 1]; `values`: F at ts (optional).
    - `tol`: target bracket width in t; `num_candidates`, `points_per_bracket`, `max_rounds`: effort.

    **Returns:** a `RefineResult`. Raises ``ValueError`` when F is NaN at a point (given in `values` or
    evaluated): the maximum of a function with undefined values is undefined.
    """
    t = check_ts(ts).astype(np.float64)
    if not tol > 0:
        raise ValueError(f"tol must be > 0; got {tol}")
    if num_candidates < 1 or points_per_bracket < 1 or max_rounds < 0:
        raise ValueError("num_candidates and points_per_bracket must be >= 1, max_rounds >= 0")
    if values is None:
        v = np.asarray(evaluate_path(fn, path, t, **evaluate_kwargs), np.float64)
    else:
        v = np.asarray(values, np.float64)
        if v.shape != t.shape:
            raise ValueError(f"values must have the shape of ts {t.shape}; got {v.shape}")
    _check_not_nan(v, t, "values" if values is not None else "fn along the path")
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    t, keep = np.unique(t, return_index=True)
    v = v[keep]
    converged = False
    for _ in range(max_rounds + 1):
        best = int(np.argmax(v))
        lo = t[max(best - 1, 0)]
        hi = t[min(best + 1, len(t) - 1)]
        if hi - lo <= tol:
            converged = True
            break
        if _ == max_rounds:
            break
        new = []
        for i in _local_maxima(v)[:num_candidates]:
            a, b = t[max(i - 1, 0)], t[min(i + 1, len(t) - 1)]
            if b - a > tol:
                new.append(np.linspace(a, b, points_per_bracket + 2)[1:-1])
        if not new:
            converged = True
            break
        tn = np.setdiff1d(np.unique(np.concatenate(new)), t)
        if tn.size == 0:
            break
        vn = np.asarray(evaluate_path(fn, path, tn, **evaluate_kwargs), np.float64)
        _check_not_nan(vn, tn, "fn along the path")
        t = np.concatenate([t, tn])
        v = np.concatenate([v, vn])
        order = np.argsort(t, kind="stable")
        t, v = t[order], v[order]
    best = int(np.argmax(v))
    return RefineResult(
        t_max=jnp.asarray(t[best]),
        f_max=jnp.asarray(v[best]),
        bracket=(jnp.asarray(t[max(best - 1, 0)]), jnp.asarray(t[min(best + 1, len(t) - 1)])),
        ts=jnp.asarray(t),
        values=jnp.asarray(v),
        converged=converged,
    )


@eqx.filter_jit
def _segment_norms(path: AbstractPath, a: Array, b: Array) -> Array:
    def one(s, u):
        return tree_norm(tree_sub(path(u), path(s)))

    return jax.vmap(one)(a, b)


def _segment_lengths(path: AbstractPath, ts: np.ndarray, chunk: int = 256) -> np.ndarray:
    """‖γ(t_{i+1}) − γ(t_i)‖ for consecutive points, in chunks of a few fixed sizes (padded with zero-
    length pairs), so that repeated calls reuse the compiled kernel."""
    a, b = ts[:-1], ts[1:]
    n = a.shape[0]
    c = min(chunk, bucket(n))
    nch = -(-n // c)
    pad = nch * c - n
    a = np.concatenate([a, np.zeros(pad, a.dtype)])
    b = np.concatenate([b, np.zeros(pad, b.dtype)])
    out = [np.asarray(_segment_norms(path, jnp.asarray(a[i : i + c]), jnp.asarray(b[i : i + c])))
           for i in range(0, nch * c, c)]
    return np.concatenate(out)[:n]


def path_length(path: AbstractPath, ts=None, *, num: int = 1025) -> Array:
    """Length of a path in parameter space, Σ_i ‖γ(t_{i+1}) − γ(t_i)‖ (Euclidean over all parameter
    leaves).

    **Arguments:**
    - `path`: an `AbstractPath`.
    - `ts`: non-decreasing points in [0, 1] at which the path is sampled, shape (P,), P ≥ 2 (the length
      of the inscribed polygon, a lower bound that converges to the length as the points get denser).
      Default: exact for a `Segment` or `Polychain` (the sum of the segment lengths), else `num`
      equally spaced points.

    **Returns:** a scalar, in the promoted dtype of the path's parameters.
    """
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be an AbstractPath; got {type(path).__name__}")
    num = check_positive_int("num", num, 2)
    if ts is None:
        if isinstance(path, Segment):
            return eager_call(_distance, path.a, path.b)
        if isinstance(path, Polychain):
            return eager_call(_chain_length, path.nodes)
        ts = np.linspace(0.0, 1.0, num)
    t = check_ts(ts)
    if t.shape[0] < 2 or np.any(np.diff(t) < 0):
        raise ValueError(f"ts must be non-decreasing with at least 2 points; got shape {t.shape}")
    dtype = _output_dtype(path)
    return jnp.asarray(np.sum(_segment_lengths(path, t.astype(dtype))), dtype)


def _output_dtype(path: AbstractPath):
    """The promoted floating dtype of γ(t)'s parameter leaves (from shapes only: nothing computed)."""
    out = eqx.filter_eval_shape(path, jnp.asarray(0.0))
    dts = [l.dtype for l in jax.tree.leaves(out)
           if isinstance(l, jax.ShapeDtypeStruct) and jnp.issubdtype(l.dtype, jnp.floating)]
    return jnp.result_type(*dts) if dts else param_dtype(path)


def _distance(a: PyTree, b: PyTree) -> Array:
    """‖b − a‖ over the parameter leaves."""
    return tree_norm(tree_sub(b, a))


def _chain_length(stacked: PyTree) -> Array:
    """Σ_i ‖θ_{i+1} − θ_i‖ over the K points of a stacked pytree."""
    K = num_stacked(stacked, "nodes")
    return sum(tree_norm(tree_sub(tree_index(stacked, i + 1), tree_index(stacked, i)))
               for i in range(K - 1))


def _chain_and_chord(stacked: PyTree) -> tuple[Array, Array]:
    K = num_stacked(stacked, "nodes")
    return _chain_length(stacked), _distance(tree_index(stacked, 0), tree_index(stacked, K - 1))


def geodesic_ratio(nodes: AbstractPath | Sequence[PyTree] | PyTree, ts=None) -> Array:
    """Freeman & Bruna's normalised geodesic length Σ_i ‖θ_{i+1} − θ_i‖ / ‖θ_N − θ_1‖ (the length of
    a string of beads over the distance between its ends; 1 for beads in order on a straight segment).

    **Arguments:**
    - `nodes`: the beads θ_1 … θ_N, N ≥ 2: a sequence of pytrees, a stacked pytree with leading axis N
      on every parameter leaf (a flat array of shape (N, D) is one), or a path (then the length is
      `path_length(path, ts)` and the chord ‖γ(1) − γ(0)‖).
    - `ts`: sampling points for a path (see `path_length`).

    **Returns:** a scalar ≥ 1 (up to rounding). Raises ``ValueError`` when the first and last points
    coincide: the ratio is then undefined (0/0 or L/0), and a sentinel such as inf would pass for a
    number.
    """
    if isinstance(nodes, AbstractPath):
        length = path_length(nodes, ts)
        chord = eager_call(_distance, nodes.start, nodes.end)
    else:
        if ts is not None:
            raise ValueError("ts is only used when nodes is a path; got ts with a sequence of nodes")
        stacked = stack_trees(nodes, "nodes") if isinstance(nodes, (list, tuple)) else nodes
        K = num_stacked(stacked, "nodes")
        if K < 2:
            raise ValueError(f"nodes must hold at least 2 points; got {K}")
        length, chord = eager_call(_chain_and_chord, stacked)
    if not float(chord) > 0:
        raise ValueError("the first and last points of nodes coincide: the normalised geodesic length "
                         "(length / distance between the ends) is undefined")
    return length / chord
