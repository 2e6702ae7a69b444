"""One entry point to the path searches: `search_path(fn, a, b, method=...)`.

Barrier of a path (as in Garipov et al. 2018 and Draxler et al. 2018): B(γ) = max_t F(γ(t)) − max(F(γ(0)), F(γ(1))). The maximum itself,
max_t F(γ(t)), is an upper bound on the minimax ("mountain pass") height between the endpoints, which is
the quantity the depth ε of Theorem 4 is made of.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from .._checks import check_positive_int
from ..paths._paths import linear
from ._common import _check_endpoints, _dense
from ._curve import CurveResult, fit_curve
from ._dss import dss_bisect
from ._neb import neb

SEARCH_METHODS = ("linear", "bezier", "polychain", "neb", "dss")
# --------------------------------------------------------------------------------------------------
# One entry point
# --------------------------------------------------------------------------------------------------


def search_path(fn, a, b, *, method: str = "bezier", **kwargs) -> Any:
    """Search a low path from a to b with one of `SEARCH_METHODS`.

    "linear" evaluates the straight segment (no search; keyword `points`); "bezier" and "polychain" call
    `fit_curve(kind=method)`; "neb" calls `neb`; "dss" calls `dss_bisect`. Keyword arguments go to the
    method. Every result has `path` (γ(0) = a, γ(1) = b exactly), `f_max` (the highest F found along
    it), `t_max`, `barrier` and `evaluations`.
    """
    if method == "linear":
        points = check_positive_int("points", kwargs.pop("points", 257), 2)
        if kwargs:
            raise TypeError(f"method 'linear' takes only `points`; got {sorted(kwargs)}")
        _, _, _, fa, fb = _check_endpoints(fn, a, b)
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
