"""REPAIR (Jordan, Sedghi, Saukh, Entezari & Neyshabur, "REPAIR: REnormalizing Permuted Activations
for Interpolation Repair", ICLR 2023): the statistics of an interpolated network put back.

**Variance collapse.** Between two aligned networks a and b, the midpoint θ_t = (1 − t) θ_a + t θ_b
computes, in each channel c of each layer, pre-activations z_t whose mean and standard deviation
over the data are *not* the interpolation of the endpoints'. Two matched units are correlated but
not identical (correlation ρ < 1), so their interpolated weights produce a smaller signal: for the
first layer, std(z_t) = std((1 − t) z_a + t z_b) = √((1−t)² σ_a² + t² σ_b² + 2t(1−t) ρ σ_a σ_b),
below (1 − t) σ_a + t σ_b whenever ρ < 1, and the shrinkage compounds layer after layer until the
last layers' signal is nearly constant: the interpolated network's loss shoots up even when the
alignment is good. In a network with BatchNorm in inference mode the interpolated running
statistics are the interpolation of the endpoints' — not the statistics of the interpolated
network's own pre-activations — which is the same defect.

**The repair.** For every channel c of every correction point (below), with statistics over the
inputs `data` (and over the spatial positions of a convolution):

    μ*_c = (1 − t) μ_c(a) + t μ_c(b),     σ*_c = (1 − t) σ_c(a) + t σ_c(b),
    z'_c = σ*_c (z_c − μ_c(θ_t)) / σ_c(θ_t) + μ*_c,

an affine map per channel; the points are corrected one after the other in the order of the
computation (correcting a layer changes the statistics of the layers after it). The map is folded
into the network's own leaves, so the repaired network is an ordinary network of the same kind:

- a **correction point** is an addition z = u + β of a per-channel shift leaf β (a bias, or a
  normalisation layer's shift) to either u = γ ⊙ v (a normalisation layer's scale γ) or u = W ⋆ h (a
  dense layer or a convolution with weight W). With s = σ*/σ(θ_t): γ ← s γ (or W ← s W along its
  output channels) and β ← s β + μ* − s μ(θ_t). This is exact: z' = s z + (μ* − s μ(θ_t)).
- Points whose channels reach the network's output (the last layer) are left alone (REPAIR corrects
  hidden layers); a channel with σ(θ_t) = 0 (a dead unit) is left unscaled.

The points are found by tracing `apply(net, data)` (as `permutation_spec` does); the statistics are
computed on `data` in one pass for each endpoint and one pass per point for θ_t, in the dtype of the
network (float64 accumulation on the host).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .._params import is_param, tree_lerp
from ._spec import _default_apply, flatten, split_net
from ._trace import _is_lit, _jaxpr_as_fun, trace

__all__ = ["repair", "interpolate"]

_SHAPE_OPS = ("broadcast_in_dim", "reshape", "squeeze", "convert_element_type", "copy", "copy_p",
              "expand_dims", "transpose")


class _Point(NamedTuple):
    z: Any  # the jaxpr var of the corrected sum
    axis: int  # its channel axis
    shift: tuple[int, int]  # (traced leaf index, channel axis) of β
    scale: tuple[int, int]  # (traced leaf index, channel axis) of γ or W


def _points(an, closed, n_leaves: int) -> list[_Point]:
    """The correction points of a traced computation (top level), in the order of computation."""
    jx = closed.jaxpr
    producer = {id(o): e for e in jx.eqns for o in e.outvars}
    leaf_of = {id(v): i for i, v in enumerate(jx.invars[:n_leaves])}
    out_roots = {an.uf.find(n) for o in jx.outvars if not _is_lit(o) for n in an.of(o, 0)}

    def origin(v):
        """The leaf a var is (a reshaped / broadcast / cast copy of), or None."""
        for _ in range(16):
            if _is_lit(v):
                return None
            if id(v) in leaf_of:
                return leaf_of[id(v)]
            e = producer.get(id(v))
            if e is None or e.primitive.name not in _SHAPE_OPS:
                return None
            v = e.invars[0]
        return None

    def through_shape_ops(v):
        for _ in range(16):
            e = producer.get(id(v)) if not _is_lit(v) else None
            if e is None or e.primitive.name not in _SHAPE_OPS[:3]:
                return e
            v = e.invars[0]
        return None

    def channel(z, leaf):
        """(axis of z, axis of the leaf) joined together, of size > 1."""
        lv = jx.invars[leaf]
        for i, n in enumerate(an.of(z, 0)):
            if z.aval.shape[i] == 1:
                continue
            for j, m in enumerate(an.of(lv, 0)):
                if an.uf.find(n) == an.uf.find(m):
                    return i, j
        return None

    pts = []
    for e in jx.eqns:
        if e.primitive.name != "add" or len(e.invars) != 2:
            continue
        z = e.outvars[0]
        for u, bvar in (e.invars, e.invars[::-1]):
            beta = origin(bvar)
            if beta is None or origin(u) is not None:
                continue
            ch = channel(z, beta)
            if ch is None:
                continue
            pe = through_shape_ops(u)
            if pe is None:
                continue
            scale = None
            if pe.primitive.name == "mul":
                for w in pe.invars:
                    g = origin(w)
                    if g is not None and g != beta:
                        c2 = channel(z, g)
                        if c2 is not None:
                            scale = (g, c2[1])
            elif pe.primitive.name in ("dot_general", "conv_general_dilated"):
                for w in pe.invars:
                    g = origin(w)
                    if g is not None:
                        c2 = channel(z, g)
                        if c2 is not None:
                            scale = (g, c2[1])
            if scale is None:
                continue
            if an.uf.find(an.of(z, 0)[ch[0]]) in out_roots:
                continue  # the output layer: left alone
            pts.append(_Point(z, ch[0], (beta, ch[1]), scale))
            break
    return pts


def _stats(values, axis):
    v = np.moveaxis(np.asarray(values, np.float64), axis, 0).reshape(values.shape[axis], -1)
    return v.mean(axis=1), v.std(axis=1)


def repair(net: PyTree, a: PyTree, b: PyTree, t, data, *, apply: Callable | None = None) -> PyTree:
    """REPAIR: `net` (the interpolation (1 − t)·a + t·b of two aligned networks) with every hidden
    channel's mean and standard deviation on `data` set to the interpolation of a's and b's (see the
    module docstring for the math and the correction points).

    **Arguments:**
    - `net`, `a`, `b`: three networks of one structure (any kind `permutation_spec` traces: an
      equinox module, a flax nnx module, a linen variables dict or haiku (params, state) with
      `apply`). `b` should be aligned to `a` (e.g. `align(a, b).net`).
    - `t`: the interpolation coefficient in [0, 1].
    - `data`: a batch of inputs (N, …) on which the statistics are measured (e.g. the training
      inputs).
    - `apply`: ``(net, x) -> outputs`` as in `permutation_spec` (default: ``jax.vmap(net)(x)`` for
      an equinox module, ``net(x)`` for nnx and the paper's networks).

    **Returns:** the repaired network, the same kind of object as `net`; its statistics at the
    correction points match the target to float rounding.

    **Raises:** ``ValueError`` for `t` outside [0, 1], or when the trace finds no correction point
    (no per-channel shift added to a scaled or linear-layer value).
    """
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1]; got {t}")
    apply = _default_apply(net) if apply is None else apply
    trees, rebuild = zip(*(split_net(m) for m in (net, a, b)), strict=True)
    flats = [flatten(tr) for tr in trees]
    dyn = [i for i, leaf in enumerate(flats[0].leaves) if eqx.is_array(leaf)]
    fl0 = flats[0]

    def fn(values, x):
        leaves = list(fl0.leaves)
        for i, v in zip(dyn, values, strict=True):
            leaves[i] = v
        return apply(rebuild[0](jax.tree_util.tree_unflatten(fl0.treedef, leaves)), x)

    vals = [[f.leaves[i] for i in dyn] for f in flats]
    an, closed, _ = trace(fn, vals[0], data)
    pts = _points(an, closed, len(dyn))
    if not pts:
        raise ValueError("repair: found no correction point in the traced computation (a "
                         "per-channel shift leaf added to a normalisation scale times its input, "
                         "or to a dense / convolution layer's output)")
    jx = closed.jaxpr

    def values_at(leaves, zs):
        c = type(closed)(jx.replace(outvars=list(zs)), closed.consts)
        return jax.jit(_jaxpr_as_fun(c))(*leaves, data)

    targets = []
    za, zb = values_at(vals[1], [p.z for p in pts]), values_at(vals[2], [p.z for p in pts])
    for p, u, v in zip(pts, za, zb, strict=True):
        (ma, sa), (mb, sb) = _stats(u, p.axis), _stats(v, p.axis)
        targets.append(((1 - t) * ma + t * mb, (1 - t) * sa + t * sb))
    cur = [np.asarray(v) for v in vals[0]]
    for p, (mu_t, sd_t) in zip(pts, targets, strict=True):
        (z,) = values_at(cur, [p.z])
        mu, sd = _stats(z, p.axis)
        s = np.where(sd > 0, sd_t / np.where(sd > 0, sd, 1.0), 1.0)
        shift = mu_t - s * mu
        (bi, bax), (gi, gax) = p.shift, p.scale
        cur[gi] = _scale_along(cur[gi], s, gax)
        cur[bi] = _scale_along(cur[bi], s, bax) + _along(shift, cur[bi], bax)
    leaves = list(fl0.leaves)
    for i, v, old in zip(dyn, cur, vals[0], strict=True):
        leaves[i] = jnp.asarray(v, dtype=jnp.result_type(old)) if is_param(old) else old
    return rebuild[0](jax.tree_util.tree_unflatten(fl0.treedef, leaves))


def _along(vec, like, axis):
    shape = [1] * np.ndim(like)
    shape[axis] = -1
    return np.reshape(vec, shape).astype(np.asarray(like).dtype)


def _scale_along(leaf, s, axis):
    leaf = np.asarray(leaf)
    return (leaf * _along(s, leaf, axis)).astype(leaf.dtype)


_repair = repair


def interpolate(a: PyTree, b: PyTree, t, *, repair: bool = False, data=None,
                apply: Callable | None = None) -> PyTree:
    """The network (1 − t)·a + t·b on the parameter leaves (running statistics included), and with
    ``repair=True`` its REPAIR (`jaxland.repair`: each hidden channel's statistics on `data` reset to
    the interpolation of the endpoints').

    **Arguments:** `a`, `b` two networks of one structure (`b` aligned to `a`); `t` in [0, 1];
    `repair`; `data`, `apply` as in `repair` (`data` required with ``repair=True``).
    """
    if repair and data is None:
        raise ValueError("interpolate(…, repair=True) needs data: the inputs (N, …) on which the "
                         "channels' statistics are measured")
    ta, reb = split_net(a)
    tb, _ = split_net(b)
    mid = reb(tree_lerp(ta, tb, t))
    return _repair(mid, a, b, t, data, apply=apply) if repair else mid
