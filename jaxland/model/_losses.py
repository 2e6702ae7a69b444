"""Losses convex in the network output (Assumption 1 of the paper).

A loss maps predictions ``pred`` of shape (N, d_y) and targets ``y`` to per-sample values of shape (N,);
`objective` averages them (the empirical expectation E L(f(x), y) of eq. 7). A user's callable with the
same signature is accepted wherever a loss name is.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

LossFn = Callable[[Array, Array], Array]


def _same_shape(name: str, pred, y) -> None:
    # static shapes: free, and also under jit; a (N,) y would broadcast against (N, 1) into (N, N)
    ps, ys = jnp.shape(pred), jnp.shape(y)
    if len(ps) < 1:
        raise ValueError(f"pred must have shape (N, d_y); got {ps}")
    if ys != ps:
        hint = " (use y[:, None] for a single output)" if ys == ps[:-1] and ps[-1] == 1 else ""
        raise ValueError(f"y must have the shape of pred {ps} for {name}; got {ys}{hint}")


def mse(pred: Float[Array, "N d_y"], y: Float[Array, "N d_y"]) -> Float[Array, " N"]:
    """Squared error ‖f(x) − y‖²₂ per sample (the summand of eq. 16); y has shape (N, d_y)."""
    _same_shape("mse", pred, y)
    return jnp.sum((pred - y) ** 2, axis=-1)


def logistic(pred: Float[Array, "N d_y"], y: Float[Array, "N d_y"]) -> Float[Array, " N"]:
    """Logistic loss Σ_j log(1 + exp(−y_j f_j(x))) per sample, labels y ∈ {−1, +1} of shape (N, d_y)."""
    _same_shape("logistic", pred, y)
    return jnp.sum(jax.nn.softplus(-y * pred), axis=-1)


def softmax_cross_entropy(pred: Float[Array, "N d_y"], y: Array) -> Float[Array, " N"]:
    """Cross-entropy −Σ_j p_j log softmax(f(x))_j per sample.

    y is either integer class labels of shape (N,) or class probabilities (one-hot) of shape (N, d_y).
    """
    ps, ys = jnp.shape(pred), jnp.shape(y)
    if len(ps) != 2 or ys not in (ps[:1], ps):
        raise ValueError(f"y must have shape ({ps[0] if ps else 'N'},) (integer labels) or {ps} "
                         f"(class probabilities) for pred of shape {ps}; got {ys}")
    logp = jax.nn.log_softmax(pred, axis=-1)
    if y.ndim == 1:
        return -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return -jnp.sum(y * logp, axis=-1)


LOSSES: dict[str, LossFn] = {
    "mse": mse,
    "logistic": logistic,
    "softmax_cross_entropy": softmax_cross_entropy,
    "cross_entropy": softmax_cross_entropy,
}


def get_loss(loss: str | LossFn) -> LossFn:
    """Resolve a loss given by name (one of `LOSSES`) or as a callable ``(pred, y) -> (N,)``."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable (pred, y) -> (N,); "
                     f"got {loss!r}")
