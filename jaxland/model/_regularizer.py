"""The regulariser R(ξ) of Theorem 11 (eq. 13) and its analogues for the other models.

Throughout, a matrix's ‖·‖₁ is the sum of the absolute values of its entries (the entrywise ℓ1 norm, not
the induced operator norm), and ‖·‖_F is the Frobenius norm.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._models import AbstractSkipLayers, Linear, ResidualLinear, TwoLayer


def safe_norm(a: Array, axis=None) -> Array:
    """Euclidean norm with a zero (not NaN) gradient at the origin."""
    sq = jnp.sum(a * a, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _l1(a: Array) -> Array:
    return jnp.sum(jnp.abs(a))


def _row_weighted(cols: Float[Array, "d m"], W1: Float[Array, "m n"]) -> Array:
    """Σ_i ‖c_i‖₁ ‖w_{1,i}‖₂ over the columns c_i of `cols` and the rows w_{1,i} of W1."""
    return jnp.sum(jnp.sum(jnp.abs(cols), axis=0) * safe_norm(W1, axis=1))


@functools.singledispatch
def regularizer(net) -> Array:
    """R(ξ), the regulariser of Theorem 11, for any jaxland model.

    - `SkipNet` / `NoSkipNet` (eq. 13):
      R = Σ_i ‖w_{2,i}‖₁‖w_{1,i}‖₂ + Σ_i ‖v_{2,i}‖₁‖w_{1,i}‖₂ + ‖W2 V1‖₁ + Σ_j ‖θ_j‖_F,
      with w_{2,i}, v_{2,i} the i-th columns of W2, V2 and w_{1,i} the i-th row of W1.
    - `TwoLayer`: R = Σ_i ‖w_{2,i}‖₁‖w_{1,i}‖₂, which is ‖W2‖₁ when every row of W1 has unit norm (eq. 5).
    - `ResidualLinear` (the analogue for eq. 9, W plays W2 and the identity plays σ(W1 ·) with unit rows):
      R = ‖W‖₁ + ‖W V‖₁ + Σ_j ‖θ_j‖_F.
    - `Linear` (eq. 12): R = ‖W‖₁.

    Here ‖A‖₁ = Σ_{ij} |A_ij| (entrywise). Every term is invariant under the ReLU rescaling
    w_{1,i} → c·w_{1,i}, (w_{2,i}, v_{2,i}, row i of V1) → (w_{2,i}/c, v_{2,i}/c, c·row i of V1), c > 0.

    **Returns:** a scalar.
    """
    raise TypeError(f"net must be a jaxland model (SkipNet, NoSkipNet, TwoLayer, ResidualLinear, "
                    f"Linear): regularizer has no rule for {type(net).__name__}; register one with "
                    "jaxland.regularizer.register")


def _theta_norms(theta) -> Array:
    return sum(safe_norm(t) for t in theta)


@regularizer.register
def _(net: AbstractSkipLayers) -> Array:
    return (
        _row_weighted(net.W2, net.W1)
        + _row_weighted(net.V2, net.W1)
        + _l1(net.W2 @ net.V1)
        + _theta_norms(net.theta)
    )


@regularizer.register
def _(net: TwoLayer) -> Array:
    return _row_weighted(net.W2, net.W1)


@regularizer.register
def _(net: ResidualLinear) -> Array:
    return _l1(net.W) + _l1(net.W @ net.V) + _theta_norms(net.theta)


@regularizer.register
def _(net: Linear) -> Array:
    return _l1(net.W)
