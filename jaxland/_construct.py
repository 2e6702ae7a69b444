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
- **2a project V1** (F constant; RELATED.md): V1(τ) = (1 − τ)V1 + τ W2⁺W2V1 keeps W2V1.
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
import math
import warnings
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._cluster import MergePlan, _chunk, _merge_plan, lemma9_eps, lemma9_size_bound
from ._losses import LossFn, get_loss
from ._models import Linear, NoSkipNet, ResidualLinear, SkipNet, TwoLayer
from ._objective import check_data, check_kappa, is_concrete, objective
from ._paths import AbstractPath, check_same_structure

__all__ = [
    "TheoremPath",
    "Certificate",
    "ConnectResult",
    "connect",
    "construct_path",
    "certify",
    "pinv_apply",
    "PINV_RTOL_FACTOR",
]

PINV_RTOL_FACTOR = 1000.0
"""Singular values below PINV_RTOL_FACTOR · machine-ε · σ_max are treated as zero by `pinv_apply`
(and counted as rank failures): 1.2e-4 relative in float32, 2.2e-13 in float64."""


# ----------------------------------------------------------------------------------------------
# small kernels


def pinv_apply(A: Float[Array, "d m"], Z: Float[Array, "d k"]) -> tuple[Array, Array]:
    """A⁺ Z by a thin SVD of A, and σ_min(A)/σ_max(A).

    Singular values ≤ `PINV_RTOL_FACTOR`·ε·σ_max are dropped (Moore–Penrose with that cutoff).
    Vmappable: batched over t it is the "batched pseudoinverse" of step 2.

    **Returns:** (A⁺Z of shape (m, k), the ratio σ_min/σ_max; 0 when A = 0 or when A has more rows
    than columns, where rank A = d is impossible).
    """
    U, s, Vt = jnp.linalg.svd(A, full_matrices=False)
    smax = jnp.max(s)
    cut = PINV_RTOL_FACTOR * jnp.finfo(A.dtype).eps * smax
    keep = s > cut
    sinv = jnp.where(keep, 1 / jnp.where(keep, s, 1), 0)
    X = Vt.T @ (sinv[:, None] * (U.T @ Z))
    ratio = jnp.where(smax > 0, jnp.min(s) / jnp.where(smax > 0, smax, 1), 0.0)
    if A.shape[0] > A.shape[1]:  # d > m: rank A < d always (Remark 4.1), whatever the values
        ratio = jnp.zeros_like(ratio)
    return X, ratio


def _rank_ok(ratio, dtype) -> Array:
    return ratio > PINV_RTOL_FACTOR * jnp.finfo(dtype).eps


def _rotate_rows(U: Float[Array, "m n"], T: Float[Array, "m n"], s) -> Float[Array, "m n"]:
    """Rows of U turned to the rows of T: the great-circle arc between the directions, the norm
    interpolated linearly (so unit rows stay on the sphere); a straight segment where a row is zero;
    exactly U at s = 0 and T at s = 1. Antipodal rows turn through a fixed orthogonal direction."""
    nu = jnp.linalg.norm(U, axis=1, keepdims=True)
    nt = jnp.linalg.norm(T, axis=1, keepdims=True)
    both = (nu > 0) & (nt > 0)
    uh = U / jnp.where(nu > 0, nu, 1)
    th = T / jnp.where(nt > 0, nt, 1)
    c = jnp.sum(uh * th, axis=1, keepdims=True)
    w = th - c * uh
    wn = jnp.linalg.norm(w, axis=1, keepdims=True)
    # Orthogonal fallback for (anti)parallel rows: the coordinate axis least aligned with û.
    e = jax.nn.one_hot(jnp.argmin(jnp.abs(uh), axis=1), U.shape[1], dtype=U.dtype)
    f = e - jnp.sum(e * uh, axis=1, keepdims=True) * uh
    f = f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), jnp.finfo(U.dtype).tiny)
    tiny = 1e3 * jnp.finfo(U.dtype).eps
    p = jnp.where(wn > tiny, w / jnp.where(wn > tiny, wn, 1), f)
    phi = jnp.arctan2(wn, c)
    phi = jnp.where(wn > tiny, phi, jnp.where(c > 0, 0.0, jnp.pi))
    r = (1 - s) * nu + s * nt
    arc = r * (jnp.cos(s * phi) * uh + jnp.sin(s * phi) * p)
    lin = (1 - s) * U + s * T
    out = jnp.where(both, arc, lin)
    return jnp.where(s <= 0, U, jnp.where(s >= 1, T, out))


def _row_norms(W1):
    return jnp.linalg.norm(W1, axis=1)


def _branch_norms(net: SkipNet) -> Array:
    """r = (‖W2V1‖₁, Σ_i ‖v_{2,i}‖₁‖w_{1,i}‖, ‖θ_1‖_F, …, ‖θ_k‖_F): the branch's terms of R (eq. 13)."""
    rw = jnp.sum(jnp.abs(net.W2 @ net.V1))
    rv = jnp.sum(jnp.sum(jnp.abs(net.V2), axis=0) * _row_norms(net.W1))
    rt = [jnp.sqrt(jnp.sum(t * t)) for t in net.theta]
    return jnp.stack([rw, rv, *rt])


def _balance_logs(net: SkipNet):
    r = _branch_norms(net)
    pos = jnp.all(r > 0)
    lr = jnp.log(jnp.where(r > 0, r, 1))
    return jnp.where(pos, jnp.mean(lr) - lr, 0.0), ~pos


def _balance_factors(logs, degenerate, s):
    return jnp.where(degenerate, (1 - s) * jnp.ones_like(logs), jnp.exp(s * logs))


def _scale_branch(net: SkipNet, f) -> SkipNet:
    return SkipNet(
        W1=net.W1,
        W2=net.W2,
        V1=net.V1 * f[0],
        V2=net.V2 * f[1],
        theta=tuple(t * f[2 + j] for j, t in enumerate(net.theta)),
    )


def _replace(net: SkipNet, **kw) -> SkipNet:
    d = dict(W1=net.W1, W2=net.W2, V1=net.V1, V2=net.V2, theta=net.theta)
    d.update(kw)
    return SkipNet(**d)


# ----------------------------------------------------------------------------------------------
# segments: eqx Modules with __call__(s) -> SkipNet (or ResidualLinear), s ∈ [0, 1]


class _Segment(eqx.Module):
    def diag(self, s):
        """(σ_min/σ_max of the pseudo-inverted matrix, relative residual of the invariant W2V1 = Z);
        (1, 0) for segments without a pseudoinverse."""
        one = jnp.ones((), jnp.result_type(s))
        return one, 0 * one

    def evaluate(self, s):
        """(state, *diag(s)) with the pseudoinverse computed once."""
        return (self(s), *self.diag(s))


class _Rescale(_Segment):  # step 1a
    net: SkipNet
    c: Array

    def __call__(self, s):
        c = (1 - s) + s * self.c
        n = self.net
        return SkipNet(W1=n.W1 * c[:, None], W2=n.W2 / c, V1=n.V1 * c[:, None], V2=n.V2 / c, theta=n.theta)


class _Balance(_Segment):  # step 1b
    net: SkipNet
    logs: Array
    degenerate: Array

    def __call__(self, s):
        return _scale_branch(self.net, _balance_factors(self.logs, self.degenerate, s))


class _Project(_Segment):  # step 2a
    net: SkipNet
    P: Array

    def __call__(self, s):
        return _replace(self.net, V1=(1 - s) * self.net.V1 + s * self.P)


class _Merge(_Segment):  # step 2b
    net: SkipNet
    keep: Array  # (m,) 1 − [freed]
    addW: Array
    addV: Array
    Z: Array
    branch: bool = eqx.field(static=True)

    def _w2(self, s):
        W2 = self.net.W2 * (1 - s * (1 - self.keep)) + s * self.addW
        V2 = self.net.V2 * (1 - s * (1 - self.keep)) + s * self.addV
        return W2, V2

    def __call__(self, s):
        W2, V2 = self._w2(s)
        V1 = pinv_apply(W2, self.Z)[0] if self.branch else self.net.V1
        return _replace(self.net, W2=W2, V2=V2, V1=V1)

    def diag(self, s):
        if not self.branch:
            return super().diag(s)
        W2, _ = self._w2(s)
        V1, ratio = pinv_apply(W2, self.Z)
        return ratio, _rel(W2 @ V1, self.Z)

    def evaluate(self, s):
        if not self.branch:
            return super().evaluate(s)
        W2, V2 = self._w2(s)
        V1, ratio = pinv_apply(W2, self.Z)
        return _replace(self.net, W2=W2, V2=V2, V1=V1), ratio, _rel(W2 @ V1, self.Z)


class _RotateBalance(_Segment):  # step 3a, and the join's rotations (logs = 0)
    net: SkipNet
    mask: Array  # (m,) bool: rows that turn
    T: Array  # (m, n) target rows
    logs: Array
    degenerate: Array

    def __call__(self, s):
        W1 = jnp.where(self.mask[:, None], _rotate_rows(self.net.W1, self.T, s), self.net.W1)
        return _scale_branch(_replace(self.net, W1=W1), _balance_factors(self.logs, self.degenerate, s))


class _Last(_Segment):  # step 3b
    net: SkipNet
    W2star: Array  # (d_y, m)
    Z: Array  # W2,s V1,s
    K: int = eqx.field(static=True)
    branch: bool = eqx.field(static=True)

    def _w2(self, s):
        uc = (1 - s) ** self.K
        return uc * self.net.W2 + (1 - uc) * self.W2star

    def __call__(self, s):
        W2 = self._w2(s)
        n = self.net
        if not self.branch:
            return _replace(n, W2=W2)
        V1 = pinv_apply(W2, (1 - s) * self.Z)[0]
        return SkipNet(W1=n.W1, W2=W2, V1=V1, V2=(1 - s) * n.V2,
                       theta=tuple((1 - s) * t for t in n.theta))

    def diag(self, s):
        if not self.branch:
            return super().diag(s)
        W2 = self._w2(s)
        V1, ratio = pinv_apply(W2, (1 - s) * self.Z)
        return ratio, _rel(W2 @ V1, (1 - s) * self.Z)

    def evaluate(self, s):
        if not self.branch:
            return super().evaluate(s)
        W2 = self._w2(s)
        V1, ratio = pinv_apply(W2, (1 - s) * self.Z)
        n = self.net
        state = SkipNet(W1=n.W1, W2=W2, V1=V1, V2=(1 - s) * n.V2,
                        theta=tuple((1 - s) * t for t in n.theta))
        return state, ratio, _rel(W2 @ V1, (1 - s) * self.Z)


class _LinearW2(_Segment):  # join J2
    net: SkipNet
    W2end: Array

    def __call__(self, s):
        return _replace(self.net, W2=(1 - s) * self.net.W2 + s * self.W2end)


class _Reversed(_Segment):
    seg: _Segment

    def __call__(self, s):
        return self.seg(1 - s)

    def diag(self, s):
        return self.seg.diag(1 - s)

    def evaluate(self, s):
        return self.seg.evaluate(1 - s)


# Lemma 7 segments (ResidualLinear)


class _RLProject(_Segment):  # L0
    net: ResidualLinear
    P: Array

    def __call__(self, s):
        n = self.net
        return ResidualLinear(W=n.W, V=(1 - s) * n.V + s * self.P, theta=n.theta)


class _RLLine(_Segment):  # L1
    net: ResidualLinear
    Wstar: Array
    Z: Array  # W_A V_A

    def _w(self, s):
        return (1 - s) * self.net.W + s * self.Wstar

    def __call__(self, s):
        W = self._w(s)
        return ResidualLinear(W=W, V=pinv_apply(W, (1 - s) * self.Z)[0], theta=self.net.theta)

    def diag(self, s):
        W = self._w(s)
        V, ratio = pinv_apply(W, (1 - s) * self.Z)
        return ratio, _rel(W @ V, (1 - s) * self.Z)

    def evaluate(self, s):
        W = self._w(s)
        V, ratio = pinv_apply(W, (1 - s) * self.Z)
        return (ResidualLinear(W=W, V=V, theta=self.net.theta), ratio,
                _rel(W @ V, (1 - s) * self.Z))


class _RLShrink(_Segment):  # L2
    net: ResidualLinear

    def __call__(self, s):
        n = self.net
        return ResidualLinear(W=n.W, V=n.V, theta=tuple((1 - s) * t for t in n.theta))


def _rel(a, b):
    nb = jnp.sqrt(jnp.sum(b * b))
    d = jnp.sqrt(jnp.sum((a - b) ** 2))
    return jnp.where(nb > 0, d / jnp.where(nb > 0, nb, 1), d)


# ----------------------------------------------------------------------------------------------
# the path


class TheoremPath(AbstractPath):
    """The constructed path ξ_A → ξ* → ξ_B: a piecewise path over [0, 1].

    Segment k of the S = `len(segments)` pieces covers t ∈ [k/S, (k+1)/S]; `__call__` picks it with
    `lax.switch` on ⌊tS⌋ and evaluates it at the local time s = tS − k. γ(0) is net_a and γ(1) is net_b
    exactly; consecutive segments meet (to rounding). The path is an `eqx.Module` (jit/vmap apply);
    `jax.vmap(path)(ts)` evaluates many points.

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

    def __call__(self, t: Array) -> PyTree:
        k, s = self._locate(t)
        # closures, not bound methods: equinox hashes a bound method by its (possibly traced) fields
        return self.convert(lax.switch(k, [(lambda s, g=g: g(s)) for g in self.segments], s))

    def diag(self, t: Array) -> tuple[Array, Array]:
        """(σ_min/σ_max of the pseudo-inverted W2(t) or W(t), relative residual of the invariant it
        keeps: W2V1 = W2(0)V1(0) in step 2, W2V1 = (1 − s)W2,sV1,s in step 3b, WV = (1 − t)W_AV_A in
        Lemma 7); (1, 0) on segments without a pseudoinverse."""
        k, s = self._locate(t)
        return lax.switch(k, [(lambda s, g=g: g.diag(s)) for g in self.segments], s)

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
        ts = np.asarray(ts, np.float64)
        if ts.ndim != 1 or ts.size == 0 or np.any(~np.isfinite(ts)) or np.any((ts < 0) | (ts > 1)):
            raise ValueError(f"ts must be a non-empty (P,) array of values in [0, 1]; got {ts.shape}")
        check_kappa(kappa)
        check_data(self.start, x, y, loss)
        S = self.num_segments
        k = np.clip(np.floor(ts * S), 0, S - 1).astype(np.int32)
        s = np.clip(ts * S - k, 0, 1)
        bs = int(max(1, batch_size))
        ks, ss, where = [], [], []
        for j in np.unique(k):
            idx = np.nonzero(k == j)[0]
            nc = -(-idx.size // bs)
            pad = np.concatenate([idx, np.full(nc * bs - idx.size, idx[-1])])
            ks.append(np.full(nc, j, np.int32))
            ss.append(s[pad].reshape(nc, bs))
            where.append(pad.reshape(nc, bs))
        ks, ss = np.concatenate(ks), np.concatenate(ss)
        # pad the chunk count to the next power of two: repeated calls with varying numbers of points
        # (refine_max rounds) reuse a few compiled kernels instead of compiling one per count
        nc = ks.shape[0]
        total = 1 << (nc - 1).bit_length()
        ks = np.concatenate([ks, np.full(total - nc, ks[-1], np.int32)])
        ss = np.concatenate([ss, np.repeat(ss[-1:], total - nc, axis=0)])
        vals = np.asarray(_values_core(self, x, y, kappa, loss, ks, ss.astype(self.dtype)))[:nc]
        out = np.empty(ts.size, vals.dtype)
        out[np.concatenate(where).ravel()] = vals.ravel()
        return jnp.asarray(out)


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
    - `eps`: the Lemma 9 angle of the cluster plan (needed unless method="greedy").
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
    e = None if eps is None else jnp.asarray(eps, dt)
    return _build_skip(net_a, net_b, star, e, ls, method, kind, _chunk(m, chunk_size))


# ----------------------------------------------------------------------------------------------
# certificate


class Certificate(eqx.Module):
    """The numbers that certify a constructed path (all arrays are scalars unless noted).

    - `f_a`, `f_b`: F at the endpoints; `f_star`: F(ξ*) (the e(l) network's objective, or the best
      linear predictor's for ResidualLinear).
    - `path_max`: max F along the path (per-segment dense grid plus refinement around each segment's
      maximum); `t_max`: where; `argmax_segment`: the segment index, `attained_by` its name.
    - `excess`: path_max − max(f_a, f_b, f_star), signed (it can be ≤ 0: merging lowers R).
    - `segment_max`: (S,) max F on each segment; `segment_names`: (static) their names.
    - `eps`: the Lemma 9 angle m^{(η−1)/n}; `eta`; `l`: units freed per half; `max_merge_angle`,
      `merge_angle_a`, `merge_angle_b`: largest merge angle (both halves, each half).
    - `cluster_size_a/_b`: largest ε-neighbourhood of the rows of net_a/net_b; `size_bound`:
      `lemma9_size_bound(m, n, ε)` (when ≥ l + 1 every merge angle is guaranteed ≤ ε).
    - `rank_failures`: grid points on pseudoinverse segments where rank W2(t) < d_y (σ_min/σ_max ≤
      the cutoff); `min_sigma_ratio`: smallest σ_min/σ_max seen there; `max_invariant_residual`:
      largest relative residual of W2V1 = target there.
    - `dims_ok`: False when d_y > min(d_x, d_z) for ResidualLinear (Remark 4.1: Lemma 7's proof does
      not apply); True otherwise.
    - `n_evals`: number of F evaluations; `model`: (static) the model type name.

    `to_dict()` gives a JSON-serialisable dict (floats, ints, bools, strings, lists).
    """

    f_a: Array
    f_b: Array
    f_star: Array
    path_max: Array
    t_max: Array
    argmax_segment: Array
    excess: Array
    segment_max: Array
    eps: Array
    eta: Array
    l: Array
    max_merge_angle: Array
    merge_angle_a: Array
    merge_angle_b: Array
    cluster_size_a: Array
    cluster_size_b: Array
    size_bound: Array
    rank_failures: Array
    min_sigma_ratio: Array
    max_invariant_residual: Array
    dims_ok: Array
    n_evals: Array
    segment_names: tuple[str, ...] = eqx.field(static=True)
    model: str = eqx.field(static=True)

    @property
    def attained_by(self) -> str:
        """Name of the segment where F is largest."""
        return self.segment_names[int(self.argmax_segment)]

    def to_dict(self) -> dict:
        out = {}
        for k in self.__dataclass_fields__:
            v = getattr(self, k)
            if isinstance(v, (str, tuple)):
                out[k] = list(v) if isinstance(v, tuple) else v
                continue
            a = np.asarray(v)
            if a.ndim > 0:
                out[k] = a.tolist()
            elif a.dtype == bool:
                out[k] = bool(a)
            elif np.issubdtype(a.dtype, np.integer):
                out[k] = int(a)
            else:
                out[k] = float(a)
        out["attained_by"] = self.attained_by
        return out


class ConnectResult(NamedTuple):
    """What `connect` returns: the `path` (a `TheoremPath`) and its `certificate`."""

    path: TheoremPath
    certificate: Certificate


def _chunked(S: int, P: int, bs: int):
    """Chunks of bs local times per segment: (segment index per chunk, position of each point)."""
    nc = -(-P // bs)
    ks = np.repeat(np.arange(S, dtype=np.int32), nc)
    flat = np.arange(nc * bs)
    pos = np.minimum(flat, P - 1).reshape(nc, bs)  # pad by repeating the last point
    real = np.tile((flat < P).reshape(nc, bs), (S, 1))
    return ks, np.tile(pos, (S, 1)), real


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


@functools.partial(jax.jit, static_argnames=("loss", "n_points", "refine_points", "refine_levels",
                                             "batch_size"))
def _certify_core(path, x, y, kappa, loss, n_points, refine_points, refine_levels, batch_size):
    F = lambda net: objective(net, x, y, kappa=kappa, loss=loss)
    S = path.num_segments
    dt = path.dtype
    # Level 0: a uniform grid of n_points local times per segment, ends included.
    ks, pos, real = _chunked(S, n_points, min(batch_size, n_points))
    grid = jnp.linspace(0.0, 1.0, n_points).astype(dt)
    vals, ratios, resid = _eval_chunks(path, F, jnp.asarray(ks), grid[pos])
    vals = vals.reshape(S, -1)[:, :n_points]
    fails = jnp.sum(~_rank_ok(ratios, dt) & real)
    i = jnp.argmax(vals, axis=1)
    best = jnp.take_along_axis(vals, i[:, None], 1)[:, 0]
    sbest = grid[i]
    h = jnp.full((S,), 1.0 / (n_points - 1), dt)
    # Refinement: each level evaluates refine_points local times in [s* − h, s* + h] per segment
    # (the two grid cells around the running maximum) and shrinks h. One traced body for all levels.
    rks, rpos, _ = _chunked(S, refine_points, min(batch_size, refine_points))
    rks = jnp.asarray(rks)
    u = jnp.linspace(0.0, 1.0, refine_points).astype(dt)

    def level(_, carry):
        best, sbest, h = carry
        lo = jnp.clip(sbest - h, 0.0, 1.0)
        hi = jnp.clip(sbest + h, 0.0, 1.0)
        r = lo[:, None] + (hi - lo)[:, None] * u[None, :]  # (S, refine_points)
        pts = r[rks[:, None], rpos]
        rv, _, _ = _eval_chunks(path, F, rks, pts)
        rv = rv.reshape(S, -1)[:, :refine_points]
        j = jnp.argmax(rv, axis=1)
        cand = jnp.take_along_axis(rv, j[:, None], 1)[:, 0]
        better = cand > best
        return (jnp.where(better, cand, best), jnp.where(better, r[jnp.arange(S), j], sbest),
                2 * h / (refine_points - 1))

    best, sbest, _ = lax.fori_loop(0, refine_levels, level, (best, sbest, h))
    k = jnp.argmax(best)
    t_max = (k + sbest[k]) / S
    n_evals = S * (n_points + refine_levels * refine_points)
    return best, k, t_max, fails, jnp.min(ratios), jnp.max(resid), n_evals


def certify(
    path: TheoremPath,
    net_a,
    net_b,
    x,
    y,
    *,
    kappa,
    loss: str | LossFn = "mse",
    f_star,
    eta=float("nan"),
    eps=float("nan"),
    plans: tuple[MergePlan | None, MergePlan | None] = (None, None),
    n_points: int = 257,
    refine_points: int = 17,
    refine_levels: int = 2,
    batch_size: int | None = None,
) -> Certificate:
    """Evaluate F densely along a `TheoremPath` and assemble its `Certificate`.

    Each of the S segments is evaluated on `n_points` uniform local times (ends included), then
    `refine_levels` times on `refine_points` points around its running maximum (each level zooms into
    the two grid cells around the maximum). F evaluations are batched `batch_size` points at a time
    (default: chosen from the size of one hidden-layer activation, ≈ 64 MiB per batch).
    """
    if n_points < 2 or refine_points < 2 or refine_levels < 0:
        raise ValueError("need n_points >= 2, refine_points >= 2 and refine_levels >= 0; got "
                         f"{n_points}, {refine_points}, {refine_levels}")
    if batch_size is None:
        width = net_a.W1.shape[0] if hasattr(net_a, "W1") else net_a.W.shape[1]
        per = max(1, x.shape[0] * (width + 8))
        batch_size = int(max(1, min(256, (1 << 23) // per)))
    seg_max, k, t_max, fails, min_ratio, max_res, n_evals = _certify_core(
        path, x, y, kappa, loss, n_points, refine_points, refine_levels, batch_size)
    f_a = objective(net_a, x, y, kappa=kappa, loss=loss)
    f_b = objective(net_b, x, y, kappa=kappa, loss=loss)
    path_max = jnp.maximum(jnp.max(seg_max), jnp.maximum(f_a, f_b))
    dt = f_a.dtype
    pa, pb = plans
    nan = jnp.asarray(jnp.nan, dt)
    if pa is not None:
        ang_a, ang_b = pa.max_angle.astype(dt), pb.max_angle.astype(dt)
        ca, cb = pa.cluster_size, pb.cluster_size
        l = jnp.asarray(pa.freed.shape[0])
        m, n = net_a.W1.shape
        bound = lemma9_size_bound(m, n, float(eps)) if np.isfinite(eps) and eps > 0 else -1
    else:
        ang_a = ang_b = nan
        ca = cb = jnp.asarray(-1)
        l = jnp.asarray(0)
        bound = -1
    if isinstance(net_a, ResidualLinear):
        d_y, d_x = net_a.W.shape
        dims_ok = jnp.asarray(d_y <= min(d_x, net_a.V.shape[1]))
    else:
        dims_ok = jnp.asarray(True)
    return Certificate(
        f_a=f_a,
        f_b=f_b,
        f_star=jnp.asarray(f_star, dt),
        path_max=path_max,
        t_max=t_max.astype(dt),
        argmax_segment=k,
        excess=path_max - jnp.maximum(jnp.maximum(f_a, f_b), f_star),
        segment_max=seg_max,
        eps=jnp.asarray(eps, dt),
        eta=jnp.asarray(eta, dt),
        l=l,
        max_merge_angle=jnp.maximum(ang_a, ang_b),
        merge_angle_a=ang_a,
        merge_angle_b=ang_b,
        cluster_size_a=jnp.asarray(ca),
        cluster_size_b=jnp.asarray(cb),
        size_bound=jnp.asarray(bound),
        rank_failures=fails,
        min_sigma_ratio=min_ratio,
        max_invariant_residual=max_res,
        dims_ok=dims_ok,
        n_evals=jnp.asarray(n_evals),
        segment_names=path.names,
        model=path.kind,
    )


# ----------------------------------------------------------------------------------------------
# best linear predictor (ξ* of Theorem 6)


def _best_linear(
    x: Float[Array, "N d_x"],
    y: Array,
    *,
    kappa=0.0,
    loss: str | LossFn = "mse",
    d_y: int | None = None,
    steps: int = 500,
) -> Linear:
    """W* = argmin_W E L(Wx, y) + κ‖W‖₁, the linear predictor of Theorem 6 (eq. 12).

    For "mse" with κ = 0 this is the least-squares solution (`jnp.linalg.lstsq`). Otherwise
    accelerated proximal gradient (FISTA; soft-thresholding for κ‖W‖₁) with backtracking on the
    step size, `steps` iterations, from W = 0 (any convex loss with a gradient).

    **Returns:** a `Linear` network (W of shape (d_y, d_x)).
    """
    check_kappa(kappa)
    lossfn = get_loss(loss)
    if d_y is None:
        if y.ndim != 2:
            raise ValueError(f"d_y must be given when y has shape {tuple(y.shape)} (labels)")
        d_y = y.shape[1]
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"x must have shape (N, d_x); got {getattr(x, 'shape', None)}")
    check_data(Linear(W=jnp.zeros((d_y, x.shape[1]), x.dtype)), x, y, loss)
    if lossfn is get_loss("mse") and is_concrete(kappa) and float(kappa) == 0.0:
        W = jnp.linalg.lstsq(x, y)[0].T
        return Linear(W=W.astype(x.dtype))
    return Linear(W=_fista(x, y, jnp.asarray(kappa, x.dtype), lossfn, d_y, steps))


@eqx.filter_jit
def _fista(x, y, kappa, lossfn, d_y, steps):
    f = lambda W: jnp.mean(lossfn(x @ W.T, y))
    prox = lambda V, st: jnp.sign(V) * jnp.maximum(jnp.abs(V) - st * kappa, 0)
    W0 = jnp.zeros((d_y, x.shape[1]), x.dtype)
    L0 = jnp.linalg.eigvalsh(x.T @ x / x.shape[0])[-1] * 0.1 + jnp.finfo(x.dtype).tiny

    def step(carry, _):
        W, Wp, tk, L = carry
        tn = (1 + jnp.sqrt(1 + 4 * tk * tk)) / 2
        Yp = W + ((tk - 1) / tn) * (W - Wp)
        fy, g = jax.value_and_grad(f)(Yp)

        def bad(L):
            P = prox(Yp - g / L, 1 / L)
            d = P - Yp
            return f(P) > fy + jnp.sum(g * d) + L / 2 * jnp.sum(d * d) + 1e-12 * jnp.abs(fy)

        L = lax.while_loop(lambda L: bad(L) & (L < 1e30), lambda L: 2 * L, L)
        P = prox(Yp - g / L, 1 / L)
        return (P, W, tn, L), None

    (W, _, _, _), _ = lax.scan(step, (W0, W0, jnp.ones((), x.dtype), L0), None, length=steps)
    return W


# ----------------------------------------------------------------------------------------------
# connect


def connect(
    net_a,
    net_b,
    x: Float[Array, "N n"],
    y: Array,
    *,
    kappa,
    eta: float = 0.5,
    loss: str | LossFn = "mse",
    l: int | None = None,
    xi_star=None,
    key: PRNGKeyArray | None = None,
    method: str = "best",
    n_points: int = 257,
    refine_points: int = 17,
    refine_levels: int = 2,
    star_kwargs: dict | None = None,
    chunk_size: int | None = None,
) -> ConnectResult:
    """The path of the proof of Theorem 11 between two networks, evaluated, with its certificate.

    ξ_A → ξ*_A (steps 1–3 on net_a) → ξ*_B (the join at constant F) → ξ_B (steps 3–1 on net_b, run
    backwards); see the module docstring for every segment. Theorem 11 predicts
    F ≤ max(F_A, F_B, F*) + O(m^{(η−1)/n}) along it; the certificate reports the measured maximum and
    the signed excess over max(F_A, F_B, F*).

    - `SkipNet` (Theorem 11) and `TwoLayer` (Freeman & Bruna, Thm 5): ξ* is a two-layer network with
      l units (`best_l_term`, computed here with `key` unless `xi_star` is given).
    - `ResidualLinear` (Lemma 7 / Theorem 6): ξ* = (W*, 0, 0) with W* the best linear predictor
      (least squares for "mse" with κ = 0, else proximal gradient; or `xi_star`, a `Linear`); `eta`,
      `l`, `method` are unused. With κ = 0, F ≤ max(F_A, F_B, F*) in exact arithmetic; with κ > 0
      the segment L1 ends at (W*, 0, θ_A), whose F exceeds F* by κΣ‖θ_j‖_F. A warning is issued
      when d_y > min(d_x, d_z) (Remark 4.1).

    **Arguments:**
    - `net_a`, `net_b`: two networks of the same type and shapes (γ(0) = net_a, γ(1) = net_b exactly).
    - `x`, `y`: the data (as for `objective`).
    - `kappa`: κ ≥ 0, `loss`: as for `objective`.
    - `eta`: η ∈ (0, 1); ε = m^{(η−1)/n} (Lemma 9), and l = ⌊m^η⌋ (clipped to [1, m/2]) by default.
    - `l`: units to free; must match `xi_star`'s width when both are given.
    - `xi_star`: the ξ* network (see above), or None to compute it.
    - `key`: PRNG key for `best_l_term` (required when it is called).
    - `method`: merge plan, "best" (default), "greedy" or "cluster" (see `merge_plan`).
    - `n_points`, `refine_points`, `refine_levels`: dense evaluation per segment (see `certify`).
    - `star_kwargs`: extra keyword arguments for `best_l_term` (steps, restarts, learning_rate).
    - `chunk_size`: rows per cosine block in the merge plans.

    **Returns:** `ConnectResult(path, certificate)`.
    """
    kind = _kind(net_a)
    if type(net_a) is not type(net_b):
        raise TypeError(f"net_a and net_b must have the same type; got {type(net_a).__name__} and "
                        f"{type(net_b).__name__}")
    check_same_structure(net_a, net_b, ("net_a", "net_b"))
    check_kappa(kappa)
    check_data(net_a, x, y, loss)
    if not (isinstance(eta, (int, float)) and 0 < eta < 1):
        raise ValueError(f"eta must be a number in (0, 1); got {eta!r}")
    if kind == "ResidualLinear":
        d_y, d_x = net_a.W.shape
        d_z = net_a.V.shape[1]
        if d_y > min(d_x, d_z):
            warnings.warn(
                f"d_y = {d_y} > min(d_x, d_z) = min({d_x}, {d_z}): Lemma 7's proof does not apply "
                "(Remark 4.1); the path is still built, and the certificate reports dims_ok = False "
                "and the rank failures / invariant residual of W(t)V(t)", UserWarning, stacklevel=2)
        if xi_star is None:
            d_y = net_a.W.shape[0]
            xi_star = _best_linear(x, y, kappa=kappa, loss=loss, d_y=d_y)
        path, _, _ = construct_path(net_a, net_b, xi_star)
        f_star = objective(xi_star, x, y, kappa=kappa, loss=loss)
        cert = certify(path, net_a, net_b, x, y, kappa=kappa, loss=loss, f_star=f_star,
                       n_points=n_points, refine_points=refine_points, refine_levels=refine_levels)
        return ConnectResult(path, cert)
    m, n = net_a.W1.shape
    if m < 2:
        raise ValueError(f"connect needs at least m = 2 hidden units; got m = {m}")
    if xi_star is not None:
        if not isinstance(xi_star, TwoLayer):
            raise TypeError(f"xi_star must be a TwoLayer; got {type(xi_star).__name__}")
        if l is not None and l != xi_star.W1.shape[0]:
            raise ValueError(f"l = {l} but xi_star has {xi_star.W1.shape[0]} units")
        l = xi_star.W1.shape[0]
    if l is None:
        l = int(min(max(1, math.floor(m**eta + 1e-9)), m // 2))
    if not isinstance(l, (int, np.integer)) or not 1 <= l <= m // 2:
        raise ValueError(f"l must be an integer in [1, m/2 = {m // 2}]; got {l!r}")
    if xi_star is None:
        if key is None:
            raise ValueError("key is required to compute xi_star with best_l_term (or pass xi_star)")
        from ._best_l_term import best_l_term

        d_y = net_a.W2.shape[0]
        xi_star = best_l_term(x, y, l=int(l), kappa=kappa, key=key, loss=loss, d_y=d_y,
                              **(star_kwargs or {})).net
    eps = lemma9_eps(m, n, eta)
    path, pa, pb = construct_path(net_a, net_b, xi_star, eps=eps, l=int(l), method=method,
                                  chunk_size=chunk_size)
    star = _normalise_star(xi_star, net_a.W1.dtype)
    f_star = objective(star, x, y, kappa=kappa, loss=loss)
    cert = certify(path, net_a, net_b, x, y, kappa=kappa, loss=loss, f_star=f_star, eta=eta, eps=eps,
                   plans=(pa, pb), n_points=n_points, refine_points=refine_points,
                   refine_levels=refine_levels)
    return ConnectResult(path, cert)

