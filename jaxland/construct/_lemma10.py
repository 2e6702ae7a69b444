"""Lemma 10: how far two ReLU units at a small angle are apart in L²(P_x).

For unit vectors w1, w2 at angle α and Σ_x = E[x xᵀ] (the *uncentred* second moment, ‖·‖ the operator
norm), Freeman & Bruna (Prop. 2.3) and the paper's Lemma 10 state

    E|σ(w1·x) − σ(w2·x)|² ≤ 4‖Σ_x‖α².

Because σ is 1-Lipschitz there is a sharper chain of bounds (the paper's constant 4 comes from Freeman
& Bruna 2017, Prop. 2.3):

    E|σ(w1·x) − σ(w2·x)|² ≤ (w1 − w2)ᵀ Σ_x (w1 − w2) ≤ ‖Σ_x‖·‖w1 − w2‖² = 2(1 − cos α)‖Σ_x‖ ≤ ‖Σ_x‖α².

The expectation is the empirical mean over the rows of x.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import is_concrete
from ..model._models import relu
from ._cluster import row_angles


def second_moment_norm(x: Float[Array | np.ndarray, "N n"]) -> Array:
    """‖Σ_x‖, the largest eigenvalue of the uncentred second moment Σ_x = (1/N) Σ_s x_s x_sᵀ."""
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"x must have shape (N, n); got {getattr(x, 'shape', None)}")
    return jnp.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]


class Lemma10(NamedTuple):
    """What `lemma10` returns (all scalars).

    - `gap`: E|σ(w1·x) − σ(w2·x)|².
    - `alpha`: the angle α = ∠(w1, w2).
    - `sigma_norm`: ‖Σ_x‖.
    - `quadratic_bound`: (w1 − w2)ᵀ Σ_x (w1 − w2), the sharpest bound (σ is 1-Lipschitz).
    - `chordal_bound`: ‖Σ_x‖ ‖w1 − w2‖² = 2(1 − cos α)‖Σ_x‖.
    - `sharp_bound`: ‖Σ_x‖ α².
    - `paper_bound`: 4 ‖Σ_x‖ α² (Lemma 10 as stated).

    For unit w1, w2: gap ≤ quadratic ≤ chordal ≤ sharp ≤ paper.
    """

    gap: Array
    alpha: Array
    sigma_norm: Array
    quadratic_bound: Array
    chordal_bound: Array
    sharp_bound: Array
    paper_bound: Array


def lemma10(
    w1: Float[Array | np.ndarray, " n"],
    w2: Float[Array | np.ndarray, " n"],
    x: Float[Array | np.ndarray, "N n"],
) -> Lemma10:
    """E|σ(w1·x) − σ(w2·x)|² and the bounds of Lemma 10 for two unit vectors.

    **Arguments:**
    - `w1`, `w2`: (n,) vectors of unit norm (Lemma 10's hypothesis; checked to 1e-5 relative when
      concrete — normalise first, e.g. with `w / jnp.linalg.norm(w)`).
    - `x`: (N, n) samples; expectations are means over the rows.

    **Returns:** `Lemma10(gap, alpha, sigma_norm, quadratic_bound, chordal_bound, sharp_bound,
    paper_bound)`. Jittable and vmappable over w1, w2.
    """
    for name, w in (("w1", w1), ("w2", w2)):
        s = getattr(w, "shape", None)
        if s is None or len(s) != 1:
            raise ValueError(f"{name} must be a vector of shape (n,); got shape {s}")
        if getattr(x, "ndim", None) == 2 and s[0] != x.shape[1]:
            raise ValueError(f"{name} has {s[0]} entries but x has {x.shape[1]} columns")
        if is_concrete(w) and not bool(jnp.abs(jnp.linalg.norm(w) - 1) <= 1e-5):
            raise ValueError(f"{name} must have unit norm (Lemma 10); got norm {float(jnp.linalg.norm(w))}")
    sig = second_moment_norm(x)
    d = w1 - w2
    gap = jnp.mean((relu(x @ w1) - relu(x @ w2)) ** 2)
    alpha = row_angles(w1, w2)
    quad = jnp.mean((x @ d) ** 2)
    chordal = sig * jnp.sum(d * d)
    return Lemma10(gap, alpha, sig, quad, chordal, sig * alpha**2, 4 * sig * alpha**2)
