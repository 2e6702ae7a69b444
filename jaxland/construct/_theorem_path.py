"""The constructive paths of the paper: Theorem 11 (steps 1–3), Freeman & Bruna's two-layer case, and
Lemma 7 / Theorem 6 for the one-layer residual model — built as jittable path pytrees, with a certificate.

**Theorem 11, one half** ξ_A → ξ*_A (for `SkipNet`, f1 = W2[σ(W1x) + V1 g(θ, V2 σ(W1x))], eq. 3; R of
eq. 13). Each piece is a segment s ∈ [0, 1]:

- **1a normalise rows** (F constant): w_{1,i} ← c_i(s) w_{1,i}, row i of V1 ← c_i(s)·row, w_{2,i} ←
  w_{2,i}/c_i(s), v_{2,i} ← v_{2,i}/c_i(s), with c_i(s) = (1 − s) + s/‖w_{1,i}‖ > 0. Since σ(cz) = cσ(z)
  for c > 0, σ(W1x), V2σ(W1x) (hence g), W2σ(W1x) and W2V1 are unchanged, so f1 is; every term of R
  is too. Zero rows keep c = 1 (policy: they stay zero; they are freed first in step 2).
- **1b balance the branch** (f constant, R non-increasing): the residual term W2V1 g(θ, V2 h) is
  positively homogeneous of degree 1 in each of the K = k + 2 factors (V1, V2, θ_1 … θ_k). With
  r = (‖W2V1‖₁, Σ_i‖v_{2,i}‖₁‖w_{1,i}‖, ‖θ_1‖_F, …) and G their geometric mean, factor j is scaled by
  (G/r_j)^s: the product of the scales is 1, so f is unchanged, and Σ_j r_j (G/r_j)^s is convex in s
  with zero slope at s = 1, hence non-increasing (AM–GM at s = 1). If some r_j = 0 the branch
  contributes nothing to f and all factors are scaled by (1 − s) instead.
- **2a project V1** (F constant): V1(τ) = (1 − τ)V1 + τ W2⁺W2V1 keeps W2V1. Added to the proof: its
  step 2 sets V1(t) = W2(t)⁺W2(0)V1(0), which at t = 0 is the projection of V1 onto the row space of
  W2, not V1 itself, so the path would jump without this segment.
- **2b merge** (Lemma 9/10): for the merge plan (`merge_plan`) the W2 and V2 columns of each freed
  unit i go to its representative j: ᾱ_i = (1 − t)α_i, α̃_j = α_j + t Σ_{i→j} α_i (same for β), and
  V1(t) = W2(t)⁺ W2(0) V1(0), so W2(t)V1(t) = W2(0)V1(0) while rank W2(t) = d_y. R is non-increasing
  (the triangle inequality on the merged columns); the data loss moves by O(merge angle) (Lemma 10).
- **3a rotate freed rows** (F constant, R non-increasing): the freed rows (zero W2 and V2 columns)
  turn on the sphere to the rows of W1* of ξ*; the branch is re-balanced as in 1b.
- **3b last layer** : with u(s) = 1 − (1 − s)^K, W2(s) = (1 − u)W2,s + u W2*, V2 and θ_j scaled by
  (1 − s) and V1(s) = W2(s)⁺((1 − s) W2,s V1,s). Then f(s) = (1 − u) f_s + u f* exactly (the branch
  is scaled by (1 − s)^K = 1 − u), so by convexity E L ≤ (1 − u) E L_s + u E L*, and
  R(s) = (1 − u) R_{W2,s} + u ‖W2*‖₁ + (1 − s) R_branch. F ends at ξ*_A = (W1*, W2*, 0, 0, 0) with
  F(ξ*_A) = e(l)-objective of ξ*. The paper's "bounded by the two endpoints" ignores the branch part
  of R: F(s) ≤ (1 − u)F_s + uF* + κ R_branch[(1 − s) − (1 − s)^K], and balancing (3a) minimises
  R_branch for the given product.

**Join** ξ*_A → ξ*_B (F constant): ξ*_B is built with the star's units in B's freed slots, assigned so
that a unit whose A-slot is also a B-slot keeps it (the slot sets may overlap). (J1) the rows of B's
slots that A does not use turn to their star rows (their W2 columns are 0); (J2) W2 goes linearly
from W2*_A to W2*_B — a unit's column moves between two slots holding the same row of W1*, which keeps
f and R; (J3) all rows outside B's slots turn to ξ*_B's rows. Then the B half is run backwards.

**TwoLayer** (Freeman & Bruna): the same with an empty branch (steps 1a, 2b, 3a, 3b).

**ResidualLinear** (Lemma 7 / Theorem 6, f = W(x + V g(θ, x)), eq. 9): with Z = [W, WV],
F is convex in Z for fixed θ. Half path: (L0) V(τ) = (1 − τ)V + τ W⁺WV (F constant); (L1)
W(t) = (1 − t)W_A + tW*, V(t) = W(t)⁺((1 − t)W_A V_A) (so Z(t) is the straight segment and
F ≤ (1 − t)F_A + tF(W*, 0, θ_A)); (L2) θ ← (1 − t)θ (V = 0, f constant, R decreasing), ending at
ξ* = (W*, 0, 0). Needs rank W(t) = d_y, i.e. d_y ≤ d_x; the paper assumes d_y ≤ min(d_x, d_z)
(Remark 4.1) — the certificate reports whether it holds.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, PyTree, Real

from .._batching import bucket, pad_chunks, pad_rows, rows_per_chunk
from .._checks import check_kappa, check_ts
from .._eager import eager_call
from .._params import check_same_structure
from ..model._losses import LossFn
from ..model._models import Linear, NoSkipNet, ResidualLinear, SkipNet, TwoLayer
from ..model._objective import check_data, objective
from ..paths._paths import AbstractPath, check_scalar_t, check_t
from ._cluster import MergePlan, _merge_plan, check_eps
from ._steps import (
    _Balance,
    _balance_logs,
    _Last,
    _LinearW2,
    _Merge,
    _Project,
    _Rescale,
    _Reversed,
    _RLLine,
    _RLProject,
    _RLShrink,
    _RotateBalance,
    _row_norms,
    pinv_apply,
)


class TheoremPath(AbstractPath):
    """The constructed path ξ_A → ξ* → ξ_B: a piecewise path over [0, 1].

    Segment k of the S = `len(segments)` pieces covers t ∈ [k/S, (k+1)/S]; `__call__` picks it with
    `lax.switch` on ⌊tS⌋ and evaluates it at the local time s = tS − k. γ(0) is net_a and γ(1) is net_b
    exactly; consecutive segments meet (to rounding). The path is an `eqx.Module` (jit/vmap apply);
    `jax.vmap(path)(ts)` evaluates many points. An eager call `path(t)` (and `path.diag(t)`) runs one
    compiled program per path structure and dtype of t, reused by every later call and by every path
    of the same shapes: the switch is traced once, not on every call.

    **Fields:**
    - `segments`: tuple of segment modules, each `seg(s)` → a network state (SkipNet or ResidualLinear).
    - `names`: (static) one name per segment, e.g. "A.2b merge" ("A." first half, "join.", "B." second
      half run backwards).
    - `kind`: (static) "SkipNet", "TwoLayer" or "ResidualLinear": the type `__call__` returns.
    """

    segments: tuple
    names: tuple[str, ...] = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    @property
    def num_segments(self) -> int:
        return len(self.segments)

    @property
    def breakpoints(self) -> Array:
        """(S + 1,) the t where segments meet, 0 and 1 included."""
        return jnp.arange(self.num_segments + 1) / self.num_segments

    def convert(self, state):
        """The internal state (SkipNet with an empty branch for TwoLayer) as the endpoints' type."""
        if self.kind == "TwoLayer":
            return TwoLayer(W1=state.W1, W2=state.W2)
        return state

    @property
    def dtype(self):
        """The floating dtype of the parameters (local times are cast to it)."""
        return jax.tree.leaves(self.segments)[0].dtype

    def _locate(self, t):
        S = self.num_segments
        t = jnp.asarray(t, self.dtype)
        k = jnp.clip(jnp.floor(t * S), 0, S - 1).astype(jnp.int32)
        s = jnp.clip(t * S - k, 0, 1)
        return k, s

    def segment(self, k: int, s) -> PyTree:
        """Segment k (a Python int) at local time s ∈ [0, 1], as the endpoints' type."""
        return self.convert(self.segments[k](jnp.asarray(s, self.dtype)))

    def __call__(self, t: Real[ArrayLike, ""]) -> PyTree:
        return _compiled_call(_path_at, self, t)

    def diag(self, t: Real[ArrayLike, ""]) -> tuple[Array, Array]:
        """(σ_min/σ_max of the pseudo-inverted W2(t) or W(t), relative residual of the invariant it
        keeps: W2V1 = W2(0)V1(0) in step 2, W2V1 = (1 − s)W2,sV1,s in step 3b, WV = (1 − t)W_AV_A in
        Lemma 7); (1, 0) on segments without a pseudoinverse."""
        return _compiled_call(_diag_at, self, t)

    def objective_values(self, x, y, ts, *, kappa, loss: str | LossFn = "mse",
                         batch_size: int = 16) -> Array:
        """F(γ(t)) = mean L + κR at many t (e.g. to draw the path), segment by segment.

        `jax.vmap(path)` over t turns the segment `lax.switch` into a select that evaluates every
        segment at every point; this groups the t by segment instead (chunks of `batch_size` points
        of one segment), so each point costs one segment.

        **Arguments:** `x`, `y`, `kappa`, `loss` as for `jaxland.objective`; `ts` a concrete (P,)
        array of values in [0, 1].

        **Returns:** (P,) values, in the order of `ts`.
        """
        ts = check_ts(ts).astype(np.float64)
        kappa = check_kappa(kappa)
        check_data(self.start, x, y, loss)
        S = self.num_segments
        k = np.clip(np.floor(ts * S), 0, S - 1).astype(np.int32)
        s = np.clip(ts * S - k, 0, 1)
        bs = int(max(1, batch_size))
        ks, where = [], []
        for j in np.unique(k):
            idx, _ = pad_chunks(np.nonzero(k == j)[0], bs)  # one segment per chunk
            ks.append(np.full(idx.shape[0], j, np.int32))
            where.append(idx)
        ks, where = np.concatenate(ks), np.concatenate(where)
        # pad the chunk count to a bucket (2^e or 3·2^e): repeated calls with varying numbers of
        # points (refine_max rounds) reuse a few compiled kernels instead of compiling one per count
        nc = ks.shape[0]
        ks, where_p = pad_rows(ks, bucket(nc)), pad_rows(where, bucket(nc))
        vals = np.asarray(_values_core(self, x, y, kappa, loss, ks, s[where_p].astype(self.dtype)))
        out = np.empty(ts.size, vals.dtype)
        out[where.ravel()] = vals[:nc].ravel()
        return jnp.asarray(out)


# ----------------------------------------------------------------------------------------------
# eager calls: one compiled program per path structure


def _path_at(path: TheoremPath, t) -> PyTree:
    return _grouped_point(path, check_t(t), "call")


def _diag_at(path: TheoremPath, t) -> tuple[Array, Array]:
    return _grouped_point(path, check_t(t), "diag")


# ----------------------------------------------------------------------------------------------
# many points at once: a batching rule that groups the points by segment
#
# `jax.vmap` of `lax.switch` over a batched index becomes a select that evaluates *every* segment at
# *every* point, so `jit(vmap(path))` of a Theorem 11 path holds one batched SVD (`lapack_dgesdd_ffi`)
# per pseudo-inverse segment (four for a SkipNet path), all independent. jaxlib's CPU LAPACK kernels
# (0.10.x) split a large batch over XLA's intra-op thread pool and *block* a pool worker until the
# pieces are done; when the thunk executor starts as many of these calls at once as the pool has
# threads (2 on a 2-core machine), every worker waits for pieces that no free worker can run: the
# program deadlocks (issue 19; `tests/regressions/test_lapack_pool_deadlock.py` keeps a pure-jax
# reproduction). The rule below sorts the points by segment into chunks of one segment each and runs
# the chunks in a `lax.map`: each point costs one segment, and the path issues one LAPACK call at a
# time (a `lax.switch` on a scalar inside a loop), so no two of them can wait on each other.


def _point_fns(path: TheoremPath, which: str):
    """Branch k: t ↦ segment k at s = clip(tS − k, 0, 1) (what `_locate` computes for t in segment
    k), as the endpoints' type ("call") or its diagnostics ("diag")."""
    S = path.num_segments

    def branch(g, k):
        def fn(t):
            s = jnp.clip(t * S - k, 0, 1)
            return path.convert(g(s)) if which == "call" else g.diag(s)

        return fn

    return [branch(g, k) for k, g in enumerate(path.segments)]


def _plain_point(path: TheoremPath, t, which: str):
    """The point at one t: `lax.switch` on its segment (what a vmap of it turns into a select)."""
    k, _ = path._locate(t)
    # closures, not bound methods: equinox hashes a bound method by its (possibly traced) fields
    return lax.switch(k, _point_fns(path, which), jnp.asarray(t, path.dtype))


def _chunk_size(P: int, S: int) -> int:
    """Points per chunk: about P/S (one chunk per segment for evenly spread points), at most 256."""
    return int(min(256, max(1, -(-P // S))))


def _grouped_batch(path: TheoremPath, ts, which: str, with_dt: bool):
    """The points at every t of `ts` (P,), grouped by segment: leaves (P, ...) in the order of ts;
    with `with_dt` also their derivatives d/dt (forward mode, one tangent per point)."""
    S = path.num_segments
    P = ts.shape[0]
    ts = jnp.asarray(ts, path.dtype)
    k, _ = path._locate(ts)
    bs = _chunk_size(P, S)
    # segment j needs ⌈n_j/bs⌉ chunks; Σ_j ⌈n_j/bs⌉ ≤ (P + S(bs − 1))/bs
    NC = (P + S * (bs - 1)) // bs
    order = jnp.argsort(k, stable=True)
    ks = k[order]
    counts = jnp.bincount(k, length=S)
    first = jnp.cumsum(counts) - counts
    rank = jnp.arange(P) - first[ks]
    nch = (counts + bs - 1) // bs
    cfirst = jnp.cumsum(nch) - nch
    chunk = cfirst[ks] + rank // bs
    slot = rank % bs
    chunk_k = jnp.full((NC,), S, jnp.int32).at[chunk].set(ks)  # S: an unused chunk (no work)
    chunk_t = jnp.zeros((NC, bs), ts.dtype).at[chunk, slot].set(ts[order])

    fns = _point_fns(path, which)

    def leaves_of(fn):
        if not with_dt:
            return lambda t: jax.tree.leaves(fn(t))

        def both(t):
            y, dy = jax.jvp(fn, (t,), (jnp.ones_like(t),))
            return jax.tree.leaves(y), jax.tree.leaves(dy)

        return both

    branches = [leaves_of(fn) for fn in fns]
    shapes = jax.eval_shape(branches[0], ts[0])
    branches.append(lambda t: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))

    def run_chunk(args):
        kc, tc = args
        return jax.vmap(lambda t: lax.switch(kc, branches, t))(tc)

    out = lax.map(run_chunk, (chunk_k, chunk_t))
    # back to the order of ts: point order[i] sits at (chunk[i], slot[i])
    c_of = jnp.zeros((P,), jnp.int32).at[order].set(chunk.astype(jnp.int32))
    s_of = jnp.zeros((P,), jnp.int32).at[order].set(slot.astype(jnp.int32))
    out = jax.tree.map(lambda a: a[c_of, s_of], out)
    treedef = jax.tree.structure(jax.eval_shape(fns[0], ts[0]))
    if with_dt:
        return jax.tree.unflatten(treedef, out[0]), jax.tree.unflatten(treedef, out[1])
    return jax.tree.unflatten(treedef, out)


def _grouped_point(path: TheoremPath, t, which: str):
    """The point at a scalar t (the `lax.switch` of `_plain_point`) with a batching rule: under
    `jax.vmap` over t alone the points are grouped by segment (`_grouped_batch`); when the path's
    own arrays are batched too (a vmap over paths) it falls back to the plain vmap.

    Differentiable: `jax.custom_vmap` has no reverse mode, so it sits under a `jax.custom_jvp`. With
    respect to t the derivative is computed with the point (forward mode, grouped too) and the
    tangent is dγ/dt · dt, which transposes; with respect to the path's arrays the rule
    differentiates the plain switch (a vmap of that gradient evaluates every segment at every
    point again)."""
    dyn, static = eqx.partition(path, eqx.is_array)

    def plain(dyn, t):
        return _plain_point(eqx.combine(dyn, static), t, which)

    def batched_plain(axis_size, in_batched, dyn, t, *, with_dt):
        dyn_b, t_b = in_batched
        axes = jax.tree.map(lambda b: 0 if b else None, dyn_b)
        if with_dt:
            f = lambda d, s: jax.jvp(lambda s: plain(d, s), (s,), (jnp.ones_like(s),))
        else:
            f = plain
        return jax.vmap(f, in_axes=(axes, 0 if t_b else None), axis_size=axis_size)(dyn, t)

    def rule(with_dt):
        def vmap_rule(axis_size, in_batched, dyn, t):
            dyn_b, t_b = in_batched
            if t_b and not any(jax.tree.leaves(dyn_b)):
                out = _grouped_batch(eqx.combine(dyn, static), t, which, with_dt)
            else:
                out = batched_plain(axis_size, in_batched, dyn, t, with_dt=with_dt)
            return out, jax.tree.map(lambda _: True, out)

        return vmap_rule

    value = jax.custom_batching.custom_vmap(plain)
    value.def_vmap(rule(False))
    value_dt = jax.custom_batching.custom_vmap(
        lambda dyn, t: jax.jvp(lambda s: plain(dyn, s), (t,), (jnp.ones_like(t),)))
    value_dt.def_vmap(rule(True))

    @jax.custom_jvp
    def point(dyn, t):
        return value(dyn, t)

    def point_jvp(primals, tangents):
        dyn, t = primals
        ddyn, dt = tangents
        if all(type(z) is jax.custom_derivatives.SymbolicZero for z in jax.tree.leaves(ddyn)):
            y, dy = value_dt(dyn, t)
            if type(dt) is jax.custom_derivatives.SymbolicZero:
                return y, jax.tree.map(jnp.zeros_like, y)
            return y, jax.tree.map(lambda d: d * dt, dy)
        ddyn = jax.tree.map(_instantiate, ddyn, dyn)
        return jax.jvp(plain, (dyn, t), (ddyn, _instantiate(dt, t)))

    point.defjvp(point_jvp, symbolic_zeros=True)
    return point(dyn, jnp.asarray(t, path.dtype))


def _instantiate(z, like):
    """A tangent as an array: a symbolic zero becomes zeros (float0 for an integer or bool leaf)."""
    if type(z) is jax.custom_derivatives.SymbolicZero:
        if jnp.issubdtype(jnp.result_type(like), jnp.inexact):
            return jnp.zeros(jnp.shape(like), jnp.result_type(like))
        return np.zeros(jnp.shape(like), jax.dtypes.float0)
    return z


def _compiled_call(fn, path, t):
    """fn(path, t) through `jaxland._eager.eager_call`: an eager call compiles once per path
    structure and is reused by every later call, instead of tracing and compiling `lax.switch` over
    freshly built closures on every call (about 1 s and ~170 memory maps each); inside an outer
    jit/vmap/grad it is traced inline. t is checked as every path checks it (`check_scalar_t`: a
    scalar in [0, 1], under jit by `check_t`) and made an array of the path's dtype first — on the
    host when concrete, so a Python float, a NumPy scalar and a jax scalar reach the same program."""
    t = check_scalar_t(t)
    if isinstance(t, jax.core.Tracer):
        t = t.astype(path.dtype)
    else:
        t = jnp.asarray(np.asarray(t, dtype=np.dtype(path.dtype)))
    return eager_call(fn, path, t)


# ----------------------------------------------------------------------------------------------
# construction


def _as_state(net) -> SkipNet:
    if isinstance(net, SkipNet):
        return net
    m, dt = net.W1.shape[0], net.W1.dtype
    return SkipNet(W1=net.W1, W2=net.W2, V1=jnp.zeros((m, 0), dt), V2=jnp.zeros((0, m), dt),
                   theta=(jnp.zeros((0, 0), dt),))


def _half(net: SkipNet, plan: MergePlan, T, W2star, branch: bool):
    """The segments ξ → ξ* of one half (steps 1a … 3b) and the end state."""
    names, segs = [], []
    K = len(net.theta) + 2 if branch else 1
    wn = _row_norms(net.W1)
    c = jnp.where(wn > 0, 1 / jnp.where(wn > 0, wn, 1), 1.0)
    seg = _Rescale(net, c)
    segs.append(seg), names.append("1a normalise rows")
    cur = seg(1.0)
    if branch:
        seg = _Balance(cur, *_balance_logs(cur))
        segs.append(seg), names.append("1b balance branch")
        cur = seg(1.0)
        Z = cur.W2 @ cur.V1
        P, _ = pinv_apply(cur.W2, Z)
        seg = _Project(cur, P)
        segs.append(seg), names.append("2a project V1")
        cur = seg(1.0)
    else:
        Z = cur.W2 @ cur.V1
    m = cur.W1.shape[0]
    tgt = jnp.where(plan.target >= 0, plan.target, m)
    addW = jnp.zeros_like(cur.W2).at[:, tgt].add(cur.W2[:, plan.freed], mode="drop")
    addV = jnp.zeros_like(cur.V2).at[:, tgt].add(cur.V2[:, plan.freed], mode="drop")
    keep = 1 - plan.freed_mask.astype(cur.W2.dtype)
    seg = _Merge(cur, keep, addW, addV, Z, branch)
    segs.append(seg), names.append("2b merge")
    cur = seg(1.0)
    logs, deg = _balance_logs(cur) if branch else (jnp.zeros(len(cur.theta) + 2, cur.W1.dtype),
                                                   jnp.asarray(False))
    seg = _RotateBalance(cur, plan.freed_mask, T, logs, deg)
    segs.append(seg), names.append("3a rotate freed rows")
    cur = seg(1.0)
    seg = _Last(cur, W2star, cur.W2 @ cur.V1, K, branch)
    segs.append(seg), names.append("3b last layer to W2*")
    cur = seg(1.0)
    return segs, names, cur


def _b_slots(plan_a: MergePlan, plan_b: MergePlan):
    """Slots for the star's units in B: a unit whose A-slot is freed in B too keeps it; the others
    take B's remaining freed slots in order."""
    a = plan_a.freed
    keep = plan_b.freed_mask[a]
    fb = plan_b.freed
    new = ~plan_a.freed_mask[fb]
    R = fb[jnp.argsort(~new, stable=True)]
    rank = jnp.cumsum(~keep) - 1
    return jnp.where(keep, a, R[jnp.clip(rank, 0, a.shape[0] - 1)])


def _star_layout(star: TwoLayer, slots, m):
    n = star.W1.shape[1]
    T = jnp.zeros((m, n), star.W1.dtype).at[slots].set(star.W1)
    W2 = jnp.zeros((star.W2.shape[0], m), star.W2.dtype).at[:, slots].set(star.W2)
    return T, W2


def _stack2(a, b):
    return jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)


def _take(tree, i: int):
    return jax.tree.map(lambda v: v[i], tree)


@eqx.filter_jit
def _build_skip(net_a, net_b, star: TwoLayer, eps, l: int, method: str, kind: str, chunk_size):
    sa, sb = _as_state(net_a), _as_state(net_b)
    branch = kind == "SkipNet"
    m = sa.W1.shape[0]
    # The two halves are the same computation on A and on B: vmapped over the pair, they are traced
    # and compiled once.
    plans = jax.vmap(lambda r: _merge_plan(r, l, eps, method, chunk_size))(jnp.stack([sa.W1, sb.W1]))
    plan_a, plan_b = _take(plans, 0), _take(plans, 1)
    slots_b = _b_slots(plan_a, plan_b)
    Ta, W2a = _star_layout(star, plan_a.freed, m)
    Tb, W2b = _star_layout(star, slots_b, m)
    names_of = []

    def half(net, plan, T, W2s):
        segs, names, end = _half(net, plan, T, W2s, branch)
        names_of.append(names)
        return tuple(segs), end

    segs_ab, end_ab = eqx.filter_vmap(half)(_stack2(sa, sb), plans, jnp.stack([Ta, Tb]),
                                            jnp.stack([W2a, W2b]))
    names_a = names_b = names_of[0]
    segs_a, end_a = _take(segs_ab, 0), _take(end_ab, 0)
    segs_b, end_b = _take(segs_ab, 1), _take(end_ab, 1)
    zl = jnp.zeros(len(sa.theta) + 2, sa.W1.dtype)
    no = jnp.asarray(False)
    j1 = _RotateBalance(end_a, plan_b.freed_mask & ~plan_a.freed_mask, Tb, zl, no)
    cur = j1(1.0)
    j2 = _LinearW2(cur, end_b.W2)
    cur = j2(1.0)
    j3 = _RotateBalance(cur, ~plan_b.freed_mask, end_b.W1, zl, no)
    segs = (*segs_a, j1, j2, j3, *(_Reversed(s) for s in reversed(segs_b)))
    names = (
        *("A." + n for n in names_a),
        "join.1 rotate B's new slots",
        "join.2 move W2* columns",
        "join.3 rotate unused rows",
        *("B." + n + " (reversed)" for n in reversed(names_b)),
    )
    path = TheoremPath(segs, names, kind)
    return path, plan_a, plan_b


@eqx.filter_jit
def _build_residual(net_a: ResidualLinear, net_b: ResidualLinear, Wstar):
    def half(net):
        Z = net.W @ net.V
        P, _ = pinv_apply(net.W, Z)
        s0 = _RLProject(net, P)
        cur = s0(1.0)
        s1 = _RLLine(cur, Wstar, Z)
        cur = s1(1.0)
        s2 = _RLShrink(cur)
        return [s0, s1, s2]

    names = ("L0 project V", "L1 Z to [W*, 0]", "L2 shrink theta")
    ha, hb = half(net_a), half(net_b)
    segs = (*ha, *(_Reversed(s) for s in reversed(hb)))
    names = (*("A." + n for n in names), *("B." + n + " (reversed)" for n in reversed(names)))
    return TheoremPath(segs, names, "ResidualLinear")


def _kind(net) -> str:
    if isinstance(net, NoSkipNet):
        raise TypeError("connect has no construction for NoSkipNet (the paper's Theorem 11 needs the "
                        "skip connection); use SkipNet, TwoLayer or ResidualLinear")
    for cls in (SkipNet, TwoLayer, ResidualLinear):
        if isinstance(net, cls):
            return cls.__name__
    raise TypeError(f"connect supports SkipNet, TwoLayer and ResidualLinear; got {type(net).__name__}")


def _normalise_star(star: TwoLayer, dtype) -> TwoLayer:
    """ξ* with unit rows: row i divided by its norm and column i of W2 multiplied by it (f and R
    unchanged); a zero row becomes e_1 with a zero column (it contributed nothing)."""
    W1 = star.W1.astype(dtype)
    W2 = star.W2.astype(dtype)
    nr = jnp.linalg.norm(W1, axis=1)
    ok = nr > 0
    e1 = jnp.zeros_like(W1).at[:, 0].set(1)
    W1 = jnp.where(ok[:, None], W1 / jnp.where(ok, nr, 1)[:, None], e1)
    W2 = jnp.where(ok[None, :], W2 * nr[None, :], 0)
    return TwoLayer(W1=W1, W2=W2)


def construct_path(
    net_a,
    net_b,
    xi_star,
    *,
    eps=None,
    l: int | None = None,
    method: str = "best",
    chunk_size: int | None = None,
):
    """Build the path of Theorem 11 (SkipNet), Freeman & Bruna (TwoLayer) or Lemma 7 (ResidualLinear).

    The construction only (no evaluation of F): see `connect` for the certificate. Jitted inside;
    the merge plans are computed with `merge_plan(rows, l, eps, method=method)`.

    **Arguments:**
    - `net_a`, `net_b`: two networks of the same type and shapes.
    - `xi_star`: for SkipNet/TwoLayer a `TwoLayer` with l units (the e(l) network, e.g.
      `best_l_term(...).net`; rows are rescaled to unit norm, f and R unchanged); for ResidualLinear a
      `Linear` (W*, e.g. the best linear predictor).
    - `eps`: the Lemma 9 angle ε ∈ (0, π] of the cluster plan (needed unless method="greedy"; may
      be traced, then checked with `equinox.error_if`).
    - `l`: must equal xi_star's width when given.
    - `method`, `chunk_size`: as for `merge_plan`.

    **Returns:** `(path, plan_a, plan_b)`; for ResidualLinear the plans are None.
    """
    kind = _kind(net_a)
    if type(net_a) is not type(net_b):
        raise TypeError(f"net_a and net_b must have the same type; got {type(net_a).__name__} and "
                        f"{type(net_b).__name__}")
    check_same_structure(net_a, net_b, ("net_a", "net_b"))
    if kind == "ResidualLinear":
        if not isinstance(xi_star, Linear):
            raise TypeError(f"xi_star must be a Linear (W*) for ResidualLinear; got "
                            f"{type(xi_star).__name__}")
        if xi_star.W.shape != net_a.W.shape:
            raise ValueError(f"xi_star.W must have shape {net_a.W.shape} like net_a.W; got "
                             f"{xi_star.W.shape}")
        return _build_residual(net_a, net_b, xi_star.W.astype(net_a.W.dtype)), None, None
    if not isinstance(xi_star, TwoLayer):
        raise TypeError(f"xi_star must be a TwoLayer (the e(l) network); got {type(xi_star).__name__}")
    m, n = net_a.W1.shape
    ls, ns = xi_star.W1.shape
    if ns != n or xi_star.W2.shape[0] != net_a.W2.shape[0]:
        raise ValueError(f"xi_star has (n, d_y) = ({ns}, {xi_star.W2.shape[0]}) but the networks have "
                         f"({n}, {net_a.W2.shape[0]})")
    if l is not None and l != ls:
        raise ValueError(f"l = {l} but xi_star has {ls} units")
    if not 1 <= ls <= m // 2:
        raise ValueError(f"xi_star must have 1 <= l <= m/2 = {m // 2} units (m = {m}); got l = {ls}")
    if method not in ("best", "greedy", "cluster"):
        raise ValueError(f"method must be 'best', 'greedy' or 'cluster'; got {method!r}")
    if method != "greedy" and eps is None:
        raise ValueError(f"eps is needed for method={method!r}")
    dt = net_a.W1.dtype
    star = _normalise_star(xi_star, dt)
    e = None if eps is None else check_eps(eps, dt)  # ε ∈ (0, π], checked under jit too
    return _build_skip(net_a, net_b, star, e, ls, method, kind, rows_per_chunk(m, chunk_size))




def _eval_chunks(path, F, ks, ss):
    """F(γ_k(s)), σ-ratio and invariant residual for every chunk (k, s[0:bs]).

    A `lax.map` over chunks: inside one chunk the segment index k is a scalar, so `lax.switch` runs
    only segment k (under `vmap` over the bs local times), and F is traced once."""
    # Plain closures (hashed by identity): bound methods of modules would hash their traced fields.
    calls = [(lambda s, seg=seg: seg.evaluate(s)) for seg in path.segments]

    def chunk(args):
        k, sc = args

        def one(s):
            state, ratio, res = lax.switch(k, calls, s)
            return F(path.convert(state)), ratio, res

        return jax.vmap(one)(sc)

    return lax.map(chunk, (ks, ss))


@functools.partial(jax.jit, static_argnames=("loss",))
def _values_core(path, x, y, kappa, loss, ks, ss):
    F = lambda net: objective(net, x, y, kappa=kappa, loss=loss)
    return _eval_chunks(path, F, ks, ss)[0]
