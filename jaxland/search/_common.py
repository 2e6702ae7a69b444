"""Shared pieces of the path searches: parameters as one vector, endpoint checks, the dense
evaluation of a found path, and the cached default optimiser.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from .._params import check_same_structure
from ..engine._evaluate import evaluate_path
from ..paths._paths import AbstractPath


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
