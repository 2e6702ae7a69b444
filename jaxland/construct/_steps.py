"""The steps of the Theorem 11 path as jittable segment modules, and the pseudoinverse kernel.

Each segment is an `eqx.Module` with `__call__(s)` → a network state for s ∈ [0, 1] (the docstring of
`jaxland/construct/_theorem_path.py` gives the mathematics of each step): 1a normalise rows, 1b balance the branch,
2a project V1, 2b merge (Lemma 9/10), 3a rotate freed rows, 3b last layer; the join's W2 segment; and the
Lemma 7 segments L0–L2 of the `ResidualLinear` path. `pinv_apply` is the batched pseudoinverse of
steps 2b, 3b and L1 (fixed shapes, vmappable).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..model._models import ResidualLinear, SkipNet

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
    if jnp.ndim(A) != 2:
        raise ValueError(f"A must be a matrix of shape (d, m); got shape {jnp.shape(A)}")
    if jnp.ndim(Z) != 2 or jnp.shape(Z)[0] != jnp.shape(A)[0]:
        raise ValueError(f"Z must have shape ({jnp.shape(A)[0]}, k) (the rows of A); got shape "
                         f"{jnp.shape(Z)}")
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


def _norm_rows(A) -> Array:
    """‖row‖ (keepdims) with a finite gradient at a zero row (0 there, where `jnp.linalg.norm`'s is
    NaN): the same values as `jnp.linalg.norm(A, axis=1, keepdims=True)`."""
    sq = jnp.sum(A * A, axis=1, keepdims=True)
    return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1)), 0)


def _rotate_rows(U: Float[Array, "m n"], T: Float[Array, "m n"], s) -> Float[Array, "m n"]:
    """Rows of U turned to the rows of T: the great-circle arc between the directions, the norm
    interpolated linearly (so unit rows stay on the sphere); a straight segment where a row is zero;
    exactly U at s = 0 and T at s = 1. Antipodal rows turn through a fixed orthogonal direction."""
    # norms and angles with finite gradients where a row is zero or two rows are parallel (the
    # unselected side of each `where` would otherwise send NaN through the gradient)
    nu = _norm_rows(U)
    nt = _norm_rows(T)
    both = (nu > 0) & (nt > 0)
    uh = U / jnp.where(nu > 0, nu, 1)
    th = T / jnp.where(nt > 0, nt, 1)
    c = jnp.sum(uh * th, axis=1, keepdims=True)
    w = th - c * uh
    wn = _norm_rows(w)
    # Orthogonal fallback for (anti)parallel rows: the coordinate axis least aligned with û.
    e = jax.nn.one_hot(jnp.argmin(jnp.abs(uh), axis=1), U.shape[1], dtype=U.dtype)
    f = e - jnp.sum(e * uh, axis=1, keepdims=True) * uh
    f = f / jnp.maximum(_norm_rows(f), jnp.finfo(U.dtype).tiny)
    tiny = 1e3 * jnp.finfo(U.dtype).eps
    p = jnp.where(wn > tiny, w / jnp.where(wn > tiny, wn, 1), f)
    ok = wn > tiny
    phi = jnp.arctan2(jnp.where(ok, wn, 1), jnp.where(ok, c, 1))
    phi = jnp.where(ok, phi, jnp.where(c > 0, 0.0, jnp.pi))
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
