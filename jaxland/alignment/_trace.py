"""Permutation groups found from the computation: tracing a model to a jaxpr and following each
weight's axes through it.

**What is a symmetry.** Write the network as F(θ, x), θ its leaves. A permutation group is a set of
(leaf, axis) pairs, all of one size d, such that reordering every pair of the group by one
permutation P leaves F unchanged for every x. Tracing `apply(net, x)` gives a jaxpr: a list of
primitive equations on arrays. Every array axis of every equation is a node; two nodes are *joined*
when an equation forces them to be reordered together for its result to be a reordering of the old
result, and a node is *fixed* when it cannot be reordered at all:

- elementwise ops (add, mul, max — hence ReLU —, exp, tanh, select, …) join each operand axis to the
  output axis it becomes (an axis of size 1 broadcast against d units joins nothing: it is the same
  for every unit). An addition of a block's output to its input (a skip) therefore joins the two:
  **units joined by an addition share one permutation**, the residual stream of every block is one
  group, and each block's inner units (joined to the stream only through a weight matrix) are another;
- `dot_general` joins each contracting axis of one operand with that of the other (Σ_i a_i b_i is
  unchanged when both are reordered alike), batch axes with the output's, free axes with the
  output's; `conv_general_dilated` likewise for the channel axes, and fixes the spatial axes;
- reductions (sum, max, mean — hence normalisation layers' statistics —) drop the reduced axis (a sum
  is invariant under reordering) and join the others; a normalisation layer's scale, shift and running
  statistics are added or multiplied into its channels, so they follow the channels;
- transpose, squeeze, broadcast and reshapes that keep an axis whole move the axis; padding, pooling
  windows, slices and concatenation fix the axes they act along (a pooled spatial axis is fixed);
- the input's axes, the output's axes and the axes along which a constant closed over by the
  function varies are fixed.

A group is a class of joined nodes that holds at least one floating leaf axis of more than one entry
and no fixed node. The argument is the usual one for equivariance: each equation's result is
reordered along exactly the classes that reorder its operands, so a class that reaches neither the
input nor the output nor a constant leaves F unchanged; the check in `align`/`apply_perms` verifies
it numerically every time.

**Undecided.** Where an op mixes an axis with others (a reshape that merges or splits it — e.g. a
flatten of (C, H, W) feeding a dense layer —, a gather, an argmax over the units, a scan, a primitive
without a rule) the units crossing it could only be reordered in a way a per-axis permutation cannot
express (a block permutation of the flattened axis) or not at all; the class is *undecided*. If it
holds a leaf axis and is not fixed anyway, `permutation_spec` raises an error naming the leaf, the op
and the reason, or, with ``strict=False``, leaves those units unpermuted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

try:  # jax >= 0.4.36
    from jax.extend import core as _jcore
except ImportError:  # pragma: no cover
    from jax import core as _jcore

_Literal = getattr(_jcore, "Literal", None)

_ELEMENTWISE = frozenset("""
add sub mul div max min neg exp exp2 log log1p expm1 tanh logistic sin cos tan sinh cosh asin acos
atan asinh acosh atanh atan2 sqrt rsqrt cbrt integer_pow pow abs sign select_n convert_element_type
erf erfc erf_inv square copy copy_p clamp rem floor ceil round is_finite and or not xor eq ne gt ge lt
le nextafter real imag conj reduce_precision add_any lgamma digamma stop_gradient max_p min_p
population_count shift_left shift_right_logical shift_right_arithmetic
""".split())
_REDUCE = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or "
                    "reduce_xor".split())
_CALLS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class _UF:
    """Union-find over integer nodes, with per-class fixed / undecided reasons."""

    def __init__(self):
        self.parent: list[int] = []
        self.fixed: dict[int, str] = {}
        self.undecided: dict[int, str] = {}

    def new(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri == rj:
            return
        self.parent[rj] = ri
        for d in (self.fixed, self.undecided):
            if rj in d:
                d.setdefault(ri, d.pop(rj))

    def fix(self, i: int, why: str) -> None:
        self.fixed.setdefault(self.find(i), why)

    def undecide(self, i: int, why: str) -> None:
        self.undecided.setdefault(self.find(i), why)

    def reason(self, i: int, table: dict) -> str | None:
        return table.get(self.find(i))


class Analysis:
    """The classes of a traced computation: `nodes[var]` is the list of node ids of var's axes."""

    def __init__(self):
        self.uf = _UF()
        self.nodes: dict[Any, list[int]] = {}  # (scope, var) -> node per axis
        self.origin: dict[Any, int] = {}  # (scope, var) -> index of the leaf it is (an alias of)
        # (leaf index, axis) of each weight axis that a dot_general / conv carries to its output,
        # in the order of the computation: names a group by the layer that produces its units
        self.producers: list[tuple[int, int]] = []

    scope: int = 0  # a jaxpr called twice (a cached ReLU, a pjit) has fresh nodes per call
    _scopes: int = 0

    def of(self, v, scope: int | None = None) -> list[int]:
        if _Literal is not None and isinstance(v, _Literal):
            return []
        key = (self.scope if scope is None else scope, v)
        if key not in self.nodes:
            self.nodes[key] = [self.uf.new() for _ in range(len(v.aval.shape))]
        return self.nodes[key]

    # --- helpers ---
    def join(self, u, i, w, j) -> None:
        """Join axis i of u and axis j of w when both exist and have the same size > 1."""
        nu, nw = self.of(u), self.of(w)
        if not nu or not nw:
            return
        su, sw = u.aval.shape[i], w.aval.shape[j]
        if su == sw and su != 1:
            self.uf.union(nu[i], nw[j])

    def undecide_all(self, vars_, why: str) -> None:
        for v in vars_:
            for n in self.of(v):
                self.uf.undecide(n, why)

    def fix_axis(self, v, i, why: str) -> None:
        ns = self.of(v)
        if ns and v.aval.shape[i] != 1:
            self.uf.fix(ns[i], why)

    def undecide_axis(self, v, i, why: str) -> None:
        ns = self.of(v)
        if ns and v.aval.shape[i] != 1:
            self.uf.undecide(ns[i], why)

    # --- constants ---
    def constant(self, v, value) -> None:
        """Fix the axes along which a closed-over constant varies (a uniform one commutes)."""
        arr = np.asarray(value)
        for i in range(arr.ndim):
            if arr.shape[i] > 1 and not np.all(arr == np.take(arr, [0], axis=i)):
                self.fix_axis(v, i, "a constant of the function varies along this axis")

    # --- the walk ---
    def run(self, jaxpr, consts) -> None:
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            self.constant(v, c)
        for eqn in jaxpr.eqns:
            self.eqn(eqn)

    def eqn(self, eqn) -> None:
        prim = eqn.primitive.name
        ins, outs, p = eqn.invars, eqn.outvars, eqn.params
        where = _where(eqn)
        if prim in ("convert_element_type", "copy", "copy_p") and not _is_lit(ins[0]) and \
                (self.scope, ins[0]) in self.origin:
            self.origin[(self.scope, outs[0])] = self.origin[(self.scope, ins[0])]
        if prim in _ELEMENTWISE:
            for o in outs:
                for v in ins:
                    if self.of(v) and len(v.aval.shape) == len(o.aval.shape):
                        for i in range(len(o.aval.shape)):
                            self.join(v, i, o, i)
            return
        if prim == "broadcast_in_dim":
            (v,), (o,) = ins[:1], outs
            for i, j in enumerate(p["broadcast_dimensions"]):
                self.join(v, i, o, j)
            return
        if prim == "transpose":
            (v,), (o,) = ins, outs
            for j, i in enumerate(p["permutation"]):
                self.join(v, i, o, j)
            return
        if prim == "squeeze":
            (v,), (o,) = ins, outs
            kept = [i for i in range(len(v.aval.shape)) if i not in set(p["dimensions"])]
            for j, i in enumerate(kept):
                self.join(v, i, o, j)
            return
        if prim == "reshape":
            self._reshape(ins[0], outs[0], where)
            return
        if prim in _REDUCE or prim in ("argmax", "argmin"):
            (v,), (o,) = ins, outs
            axes = set(p["axes"])
            kept = [i for i in range(len(v.aval.shape)) if i not in axes]
            for j, i in enumerate(kept):
                self.join(v, i, o, j)
            if prim in ("argmax", "argmin"):
                for i in axes:
                    self.undecide_axis(v, i, f"`{prim}`{where} returns the index of a unit, which "
                                             f"a reordering changes")
            return
        if prim in ("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort"):
            ax = p.get("axis", p.get("dimension"))
            for v in ins:
                self.undecide_axis(v, ax, f"`{prim}`{where} depends on the order along this axis")
            for o in outs:
                for v in ins:
                    for i in range(len(o.aval.shape)):
                        if i != ax:
                            self.join(v, i, o, i)
            return
        if prim == "dot_general":
            self._dot(eqn)
            return
        if prim == "conv_general_dilated":
            self._conv(eqn, where)
            return
        if prim.startswith("reduce_window") or prim in ("pad",):
            v, o = ins[0], outs[0]
            if prim == "pad":
                acting = [tuple(c) != (0, 0, 0) for c in p["padding_config"]]
            else:
                acting = [w != 1 or s != 1 or tuple(pd) != (0, 0)
                          for w, s, pd in zip(p["window_dimensions"], p["window_strides"],
                                              p["padding"], strict=True)]
            for i, act in enumerate(acting):
                if act:
                    self.fix_axis(v, i, f"`{prim}`{where} acts along this axis")
                    self.fix_axis(o, i, f"`{prim}`{where} acts along this axis")
                else:
                    self.join(v, i, o, i)
            return
        if prim == "slice":
            v, o = ins[0], outs[0]
            for i in range(len(v.aval.shape)):
                if v.aval.shape[i] == o.aval.shape[i]:
                    self.join(v, i, o, i)
                else:
                    self.undecide_axis(v, i, f"`slice`{where} takes part of this axis")
                    self.undecide_axis(o, i, f"`slice`{where} takes part of this axis")
            return
        if prim == "concatenate":
            d, o = p["dimension"], outs[0]
            for v in ins:
                for i in range(len(o.aval.shape)):
                    if i == d:
                        self.undecide_axis(v, i, f"`concatenate`{where} joins arrays along "
                                                 f"this axis")
                    else:
                        self.join(v, i, o, i)
            self.undecide_axis(o, d, f"`concatenate`{where} joins arrays along this axis")
            return
        if prim == "iota":
            self.fix_axis(outs[0], p["dimension"], "`iota` counts along this axis")
            return
        if prim == "cond":
            for br in p["branches"]:
                self._call(br.jaxpr, br.consts, ins[1:], outs)
            return
        inner = next((p[k] for k in _CALLS if k in p), None)
        if inner is not None:
            jx = getattr(inner, "jaxpr", inner)
            consts = getattr(inner, "consts", ())
            if len(jx.invars) == len(ins) and len(jx.outvars) == len(outs):
                self._call(jx, consts, ins, outs)
                return
        self.undecide_all(list(ins) + list(outs),
                          f"`{prim}`{where} has no permutation rule (an op that is not "
                          f"elementwise, e.g. a gather, scan or loop)")

    def _call(self, jx, consts, ins, outs) -> None:
        outer = self.scope
        Analysis._scopes += 1
        inner = Analysis._scopes
        for v, w in zip(ins, jx.invars, strict=True):
            if not _is_lit(v) and (outer, v) in self.origin:
                self.origin[(inner, w)] = self.origin[(outer, v)]
        for vs, ws in ((ins, jx.invars), (outs, jx.outvars)):
            for v, w in zip(vs, ws, strict=True):
                nv, nw = self.of(v, outer), self.of(w, inner)
                if nv and nw:
                    for i, (a, b) in enumerate(zip(nv, nw, strict=True)):
                        if v.aval.shape[i] != 1:
                            self.uf.union(a, b)
        self.scope = inner
        try:
            self.run(jx, consts)
        finally:
            self.scope = outer

    def _reshape(self, v, o, where: str) -> None:
        si, so = list(v.aval.shape), list(o.aval.shape)
        ii = [i for i, s in enumerate(si) if s != 1]
        oo = [j for j, s in enumerate(so) if s != 1]
        a = b = 0
        while a < len(ii) or b < len(oo):
            ga, gb = [ii[a]] if a < len(ii) else [], [oo[b]] if b < len(oo) else []
            pa = si[ga[0]] if ga else 1
            pb = so[gb[0]] if gb else 1
            a, b = a + bool(ga), b + bool(gb)
            while pa != pb:
                if pa < pb and a < len(ii):
                    ga.append(ii[a])
                    pa *= si[ii[a]]
                    a += 1
                elif pb < pa and b < len(oo):
                    gb.append(oo[b])
                    pb *= so[oo[b]]
                    b += 1
                else:
                    break
            if len(ga) == 1 and len(gb) == 1:
                self.join(v, ga[0], o, gb[0])
            else:
                why = (f"`reshape`{where} from {tuple(si)} to {tuple(so)} merges or splits this "
                       f"axis with others")
                for i in ga:
                    self.undecide_axis(v, i, why)
                for j in gb:
                    self.undecide_axis(o, j, why)

    def _dot(self, eqn) -> None:
        (lhs, rhs), (o,) = eqn.invars, eqn.outvars
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        for i, j in zip(lc, rc, strict=True):
            self.join(lhs, i, rhs, j)
        k = 0
        for i, j in zip(lb, rb, strict=True):
            self.join(lhs, i, o, k)
            self.join(rhs, j, o, k)
            k += 1
        for v, used in ((lhs, set(lc) | set(lb)), (rhs, set(rc) | set(rb))):
            for i in range(len(v.aval.shape)):
                if i not in used:
                    self.join(v, i, o, k)
                    self._produces(v, i)
                    k += 1

    def _produces(self, v, i) -> None:
        leaf = None if _is_lit(v) else self.origin.get((self.scope, v))
        if leaf is not None:
            self.producers.append((leaf, int(i)))

    def _conv(self, eqn, where: str) -> None:
        (lhs, rhs), (o,) = eqn.invars, eqn.outvars
        p = eqn.params
        dn = p["dimension_numbers"]
        ls, rs, os_ = dn.lhs_spec, dn.rhs_spec, dn.out_spec
        why = f"`conv_general_dilated`{where}: a convolution is not equivariant under reordering " \
              f"its spatial axes"
        for sp in ls[2:]:
            self.fix_axis(lhs, sp, why)
        for sp in rs[2:]:
            self.fix_axis(rhs, sp, why)
        for sp in os_[2:]:
            self.fix_axis(o, sp, why)
        if p.get("batch_group_count", 1) != 1:
            self.undecide_all([lhs, rhs, o], f"`conv_general_dilated`{where} with "
                                             f"batch_group_count > 1 has no permutation rule")
            return
        self.join(lhs, ls[0], o, os_[0])
        g = p.get("feature_group_count", 1)
        self._produces(rhs, rs[0])
        if g == 1:
            self.join(lhs, ls[1], rhs, rs[1])
            self.join(rhs, rs[0], o, os_[1])
        elif g == lhs.aval.shape[ls[1]] == o.aval.shape[os_[1]]:  # depthwise
            self.join(lhs, ls[1], o, os_[1])
            self.join(rhs, rs[0], o, os_[1])
        else:
            self.undecide_all([lhs, rhs, o], f"`conv_general_dilated`{where} with "
                                             f"feature_group_count = {g} (grouped convolution) "
                                             f"has no permutation rule")


def _is_lit(v) -> bool:
    return _Literal is not None and isinstance(v, _Literal)


def _where(eqn) -> str:
    """' (at file:line)' of the user's frame that made the equation, where JAX recorded it."""
    try:
        from jax._src import source_info_util

        s = source_info_util.summarize(eqn.source_info)
        return f" (at {s})" if s and s != "unknown" else ""
    except Exception:  # noqa: BLE001 - the location is a courtesy
        return ""


def trace(fn: Callable, dyn_leaves: list, x) -> tuple[Analysis, Any, list]:
    """Trace ``fn(dyn_leaves, x)`` and analyse it: (analysis, closed jaxpr, the invars of the
    leaves)."""
    closed = jax.make_jaxpr(fn)(dyn_leaves, x)
    jx = closed.jaxpr
    an = Analysis()
    n_leaves = len(dyn_leaves)
    leaf_vars = jx.invars[:n_leaves]
    for i, v in enumerate(leaf_vars):
        an.origin[(0, v)] = i
    for v in jx.invars[n_leaves:]:
        for i in range(len(v.aval.shape)):
            an.fix_axis(v, i, "an axis of the input")
    an.run(jx, closed.consts)
    for o in jx.outvars:
        if _Literal is not None and isinstance(o, _Literal):
            continue
        for i in range(len(o.aval.shape)):
            an.fix_axis(o, i, "an axis of the output")
    return an, closed, leaf_vars


def _jaxpr_as_fun(closed):
    try:
        from jax.extend.core import jaxpr_as_fun
    except ImportError:  # jax.extend has no jaxpr_as_fun in this version
        from jax._src.core import jaxpr_as_fun
    return jaxpr_as_fun(closed)
