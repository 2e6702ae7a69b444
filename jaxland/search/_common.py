"""Shared pieces of the path searches: the endpoint checks (parameters as one vector through
`jaxland._params.ravel`), the dense evaluation of a found path, and the cached default optimiser.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .._checks import check_fn
from .._eager import eager_call
from .._params import Unravel, check_joinable, lerp_stats, ravel
from ..engine._evaluate import evaluate_path
from ..paths._paths import AbstractPath


def _check_endpoints(fn, a, b) -> tuple:
    """Check the objective and the endpoints of a search; return (θ_a, θ_b, unravel, F(a), F(b)).

    θ_a, θ_b are the parameter vectors (`ravel`: the floating-point leaves, in their promoted dtype);
    `unravel` maps a vector back to a model like a (its other leaves, which must equal b's).
    """
    check_fn(fn)
    check_joinable(a, b)
    va, unravel = ravel(a)
    vb, _ = ravel(b)
    if va.shape[0] == 0:
        raise ValueError("a and b have no floating-point array leaves (no parameters to search over)")
    if not jnp.issubdtype(va.dtype, jnp.floating):
        raise TypeError(f"parameters must be real floating point; got {va.dtype}")
    if np.array_equal(np.asarray(va), np.asarray(vb)):
        raise ValueError("a and b coincide: there is no path between two distinct points to search")
    fa, fb = (float(v) for v in eager_call(_at_both, fn, a, b))
    if not (math.isfinite(fa) and math.isfinite(fb)):
        raise ValueError(f"F must be finite at both endpoints; got F(a) = {fa}, F(b) = {fb}")
    return va, vb, unravel, fa, fb


def _at_both(fn, a, b):
    return fn(a), fn(b)


def _to_trees(unravel: Unravel, a, b, inner) -> list:
    """[a, unravel(θ_1), …, unravel(θ_K), b]: a path's nodes with the endpoints themselves (so the path
    found starts and ends exactly at a and b, with their dtypes and non-parameter leaves).

    Running statistics (a linen `batch_stats`, a haiku state, nnx `BatchStat`s) are not searched
    over: node k of K interior nodes carries the endpoints' statistics interpolated at k/(K + 1), so
    that on a Bézier curve or a uniform polychain they are (1 − t)·s_a + t·s_b at every t, as on the
    straight segment."""
    inner = np.asarray(inner)
    K = inner.shape[0]
    return ([a] + [lerp_stats(unravel(v), a, b, (k + 1) / (K + 1)) for k, v in enumerate(inner)]
            + [b])


def _dense(fn, path: AbstractPath, points: int, fa: float, fb: float):
    ts = np.linspace(0.0, 1.0, points)
    values = jnp.asarray(evaluate_path(fn, path, ts))
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise FloatingPointError("F is not finite along the path found; lower the learning rate")
    i = int(np.argmax(v))
    # B = max_t F(γ(t)) − max(F(a), F(b)) ≥ 0: the path holds its ends, so its maximum is at least
    # theirs. A negative difference (−1e-7 in float32) is rounding between the batched values at
    # t = 0, 1 and the ends' own evaluation, and is reported as 0; `f_max` stays the raw maximum.
    return jnp.asarray(ts), values, float(v[i]), float(ts[i]), max(float(v[i] - max(fa, fb)), 0.0)
