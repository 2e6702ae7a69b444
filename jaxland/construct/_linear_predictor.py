"""The best linear predictor F_lin* = inf_W E ℓ(W x, y): the F_w* of Theorem 6 and the baseline of
Shamir (2018) and Yun, Sra & Jadbabaie (2019)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float

from ..model._losses import LossFn, get_loss, mse
from ..model._models import Linear
from ..model._objective import check_data


class LinearPredictor(NamedTuple):
    """What `best_linear_predictor` returns.

    - `net`: the `Linear` network f(x) = W x, W of shape (d_y, n).
    - `value`: F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) (+ ridge·‖W‖_F² when `ridge` > 0), a scalar. For
      "mse" W is an exact minimiser; for other losses `value` is the value after `steps` L-BFGS
      iterations, an upper bound on the infimum (which need not be attained: on linearly separable
      data the logistic infimum is 0 at ‖W‖ → ∞).
    - `grad_norm`: ‖∇_W F_lin(W)‖_F at the returned W (0 up to rounding for "mse").
    """

    net: Linear
    value: Array
    grad_norm: Array


def linear_objective(
    W: Float[Array, "d_y n"],
    x: Float[Array, "N n"],
    y: Array,
    loss: str | LossFn = "mse",
    ridge=0.0,
) -> Array:
    """F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) + ridge·‖W‖_F² (eq. 12's linear predictor on the data)."""
    return jnp.mean(get_loss(loss)(x @ W.T, y)) + ridge * jnp.sum(W * W)


@eqx.filter_jit
def _lstsq(x, y, ridge):
    # mean ‖W x − y‖² + r‖W‖²: normal equations (xᵀx/N + r I) Wᵀ = xᵀy/N; for r = 0 the minimum-norm
    # least-squares solution (SVD-based lstsq: stable when x is rank deficient).
    N, n = x.shape
    Wt_ls = jnp.linalg.lstsq(x, y)[0]
    A = x.T @ x / N + ridge * jnp.eye(n, dtype=x.dtype)
    Wt_r = jnp.linalg.solve(A, x.T @ y / N)
    return jnp.where(ridge > 0, Wt_r, Wt_ls).T


@eqx.filter_jit
def _lbfgs(x, y, W0, lossfn, ridge, steps):
    def f(W):
        return linear_objective(W, x, y, lossfn, ridge)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry, _):
        W, state = carry
        v, g = value_and_grad(W, state=state)
        upd, state = opt.update(g, state, W, value=v, grad=g, value_fn=f)
        return (optax.apply_updates(W, upd), state), None

    (W, _), _ = jax.lax.scan(step, (W0, opt.init(W0)), None, length=steps)
    return W


def best_linear_predictor(
    x: Float[Array, "N n"], y: Array, *, loss: str | LossFn = "mse", ridge=0.0, steps: int = 200
) -> LinearPredictor:
    """The best linear predictor W* ∈ argmin_W (1/N) Σ_s ℓ(W x_s, y_s) (+ ridge·‖W‖_F²).

    For the squared error ("mse") the minimiser is closed form (least squares, minimum norm when x is
    rank deficient). For any other loss convex in the prediction ("logistic", "softmax_cross_entropy"
    or a convex callable) it is found by `steps` iterations of optax's L-BFGS with a zoom line search
    from W = 0 (the problem is convex, so this converges to the infimum; check `grad_norm`).

    **Arguments:**
    - `x`: inputs (N, n); `y`: targets, (N, d_y) (or (N,) integer labels for cross-entropy, with
      d_y then the number of classes, taken as max label + 1 unless y is one-hot).
    - `loss`: a loss name or callable (pred (N, d_y), y) -> (N,), convex in pred.
    - `ridge`: r ≥ 0, adds r‖W‖_F² (makes the minimiser unique and attained).
    - `steps`: L-BFGS iterations for losses other than "mse".

    **Returns:** `LinearPredictor(net, value, grad_norm)`.
    """
    lossfn = get_loss(loss)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, n); got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if y.ndim == 1 and lossfn is not get_loss("softmax_cross_entropy"):
        raise ValueError(f"y must have shape ({x.shape[0]}, d_y); got {y.shape} (use y[:, None])")
    if y.ndim == 2:
        d_y = y.shape[1]
    elif y.ndim == 1:
        d_y = int(jnp.max(y)) + 1
    else:
        raise ValueError(f"y must have shape (N, d_y) or (N,); got {y.shape}")
    r = float(ridge)
    if not (r >= 0 and jnp.isfinite(r)):
        raise ValueError(f"ridge must be a finite number >= 0; got {ridge!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    probe = Linear(jnp.zeros((d_y, x.shape[1]), x.dtype))
    check_data(probe, x, y, loss)
    ridge_arr = jnp.asarray(r, x.dtype)
    if lossfn is mse:
        W = _lstsq(x, y.astype(x.dtype), ridge_arr)
    else:
        W = _lbfgs(x, y, probe.W, lossfn, ridge_arr, steps)
    value, g = jax.value_and_grad(linear_objective)(W, x, y, lossfn, ridge_arr)
    return LinearPredictor(Linear(W), value, jnp.linalg.norm(g))
