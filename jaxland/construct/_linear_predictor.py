"""The best linear predictor: ξ* of Theorem 6 (the F_w* of the `ResidualLinear` path), and the baseline
F_lin* = inf_W E ℓ(W x, y) of Shamir (2018) and Yun, Sra & Jadbabaie (2019).

**One definition of ξ*.** Theorem 6 (paper §4) compares the residual model f_1 = W(x + V g(θ, x))
(eq. 11) with the linear model f_2 = W x (eq. 12) and bounds the path by F_w* = inf_W F_2(W), with
F_2 = E L(W x, y) and no regulariser. jaxland measures every path on its objective F = E L + κ R
(eq. 7), whose regulariser for `ResidualLinear` is R = ‖W‖₁ + ‖W V‖₁ + Σ_j ‖θ_j‖_F (`regularizer`).
The Lemma 7 path (`connect`) ends its first half at ξ* = (W*, V = 0, θ = 0), where

    F(ξ*) = E L(W* x, y) + κ ‖W*‖₁ = F_lin(W*),

the objective of the linear model with its own regulariser (the `Linear` rule of `regularizer`,
R = ‖W‖₁, the analogue of the κ‖W_2‖₁ in Theorem 11's F_w* and in e(l), eq. 5). So the ξ* that
gives the smallest bound max(F_A, F_B, F(ξ*)) is

    W* ∈ argmin_W F_lin(W),   F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) + κ ‖W‖₁,

which is exactly Theorem 6's inf_W F_2(W) when κ = 0 (the theorem's setting) and Theorem 11's form
when κ > 0. No other penalty (a ridge term, for instance) belongs to either theorem; none is offered.
`best_linear_predictor` computes this W* and `connect` uses it (there is no second solver).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Real

from .._checks import check_kappa, is_concrete
from ..model._losses import LossFn, get_loss, mse, softmax_cross_entropy
from ..model._models import Linear
from ..model._objective import check_data


class LinearPredictor(NamedTuple):
    """What `best_linear_predictor` returns.

    - `net`: the `Linear` network f(x) = W x, W of shape (d_y, n): ξ* of Theorem 6.
    - `value`: F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) + κ‖W‖₁, a scalar; equal to
      `jaxland.objective(net, x, y, kappa=κ, loss=loss)`. For "mse" with κ = 0 W is an exact
      minimiser; otherwise `value` is the value after the iterations of the solver, an upper bound on
      the infimum (which need not be attained: on linearly separable data the logistic infimum with
      κ = 0 is 0 at ‖W‖ → ∞).
    - `grad_norm`: the optimality residual at W: the Frobenius norm of the minimum-norm element of
      the subdifferential ∂F_lin(W) (= ‖∇F_lin(W)‖_F when κ = 0; 0 exactly at a minimiser).
    """

    net: Linear
    value: Array
    grad_norm: Array


def linear_objective(
    W: Float[Array, "d_y n"],
    x: Real[ArrayLike, "N n"],
    y: Real[ArrayLike, "N ..."],
    loss: str | LossFn = "mse",
    kappa=0.0,
) -> Array:
    """F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) + κ‖W‖₁ (eq. 12's linear model with its regulariser, the
    `Linear` rule of `regularizer`; ‖·‖₁ entrywise). With κ = 0 it is F_2 of Theorem 6."""
    ws, xs = jnp.shape(W), jnp.shape(x)
    if len(ws) != 2:
        raise ValueError(f"W must have shape (d_y, n); got {ws}")
    if len(xs) != 2 or xs[1] != ws[1]:
        raise ValueError(f"W has {ws[1]} columns, so x must have shape (N, {ws[1]}); got {xs}")
    kappa = check_kappa(kappa)
    return jnp.mean(get_loss(loss)(x @ W.T, y)) + kappa * jnp.sum(jnp.abs(W))


def _min_norm_subgradient(g, W, kappa):
    """The minimum-norm element of ∇f(W) + κ ∂‖W‖₁ (entrywise): g + κ sign(W) where W ≠ 0, and the
    soft-thresholded sign(g) max(|g| − κ, 0) where W = 0."""
    return jnp.where(W != 0, g + kappa * jnp.sign(W), jnp.sign(g) * jnp.maximum(jnp.abs(g) - kappa, 0))


@eqx.filter_jit
def _lstsq(x, y):
    # mean ‖W x − y‖²: the minimum-norm least-squares solution (SVD-based lstsq: stable when x is
    # rank deficient)
    return jnp.linalg.lstsq(x, y)[0].T


@eqx.filter_jit
def _lbfgs(x, y, W0, lossfn, steps):
    def f(W):
        return linear_objective(W, x, y, lossfn)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry, _):
        W, state = carry
        v, g = value_and_grad(W, state=state)
        upd, state = opt.update(g, state, W, value=v, grad=g, value_fn=f)
        return (optax.apply_updates(W, upd), state), None

    (W, _), _ = jax.lax.scan(step, (W0, opt.init(W0)), None, length=steps)
    return W


@eqx.filter_jit
def _fista(x, y, W0, lossfn, kappa, steps, tol):
    """min_W f(W) + κ‖W‖₁, f(W) = mean ℓ(W x, y): accelerated proximal gradient (FISTA, Beck &
    Teboulle 2009) with soft-thresholding, a backtracking estimate L of the Lipschitz constant of ∇f,
    and the gradient restart of O'Donoghue & Candès (2015); stops when the gradient mapping
    ‖L(Y − prox(Y − ∇f(Y)/L))‖_F ≤ tol, or after `steps` iterations."""

    def f(W):
        return jnp.mean(lossfn(x @ W.T, y))

    def prox(V, step):
        return jnp.sign(V) * jnp.maximum(jnp.abs(V) - step * kappa, 0)

    dt = x.dtype
    tiny = jnp.finfo(dt).tiny
    L0 = jnp.maximum(jnp.linalg.eigvalsh(x.T @ x / x.shape[0])[-1] * 0.1, tiny)

    def cond(c):
        i, _, _, _, _, gm = c
        return (i < steps) & (gm > tol)

    def body(c):
        i, W, Wp, tk, L, _ = c
        tn = (1 + jnp.sqrt(1 + 4 * tk * tk)) / 2
        Y = W + ((tk - 1) / tn) * (W - Wp)
        fy, g = jax.value_and_grad(f)(Y)

        def too_small(L):
            P = prox(Y - g / L, 1 / L)
            d = P - Y
            return f(P) > fy + jnp.sum(g * d) + L / 2 * jnp.sum(d * d) + 4 * jnp.finfo(dt).eps * jnp.abs(fy)

        L = lax.while_loop(lambda L: too_small(L) & (L < 1e30), lambda L: 2 * L, L)
        P = prox(Y - g / L, 1 / L)
        gm = L * jnp.sqrt(jnp.sum((Y - P) ** 2))
        # restart the momentum when it points uphill (O'Donoghue & Candès)
        restart = jnp.sum((Y - P) * (P - W)) > 0
        tn = jnp.where(restart, jnp.ones((), dt), tn)
        Wprev = jnp.where(restart, P, W)
        return i + 1, P, Wprev, tn, L, gm

    init = (jnp.zeros((), jnp.int32), W0, W0, jnp.ones((), dt), L0, jnp.asarray(jnp.inf, dt))
    _, W, _, _, _, _ = lax.while_loop(cond, body, init)
    return W


@eqx.filter_jit
def _value_residual(W, x, y, lossfn, kappa):
    value, g = jax.value_and_grad(lambda W: linear_objective(W, x, y, lossfn))(W)
    value = value + kappa * jnp.sum(jnp.abs(W))
    return value, jnp.linalg.norm(_min_norm_subgradient(g, W, kappa))


def best_linear_predictor(
    x: Real[ArrayLike, "N n"],
    y: Real[ArrayLike, "N ..."],
    *,
    kappa=0.0,
    loss: str | LossFn = "mse",
    d_y: int | None = None,
    steps: int | None = None,
    tol: float | None = None,
) -> LinearPredictor:
    """ξ* of Theorem 6: W* ∈ argmin_W F_lin(W), F_lin(W) = (1/N) Σ_s ℓ(W x_s, y_s) + κ‖W‖₁.

    See the module docstring for why this is the one ξ* of the `ResidualLinear` path (`connect` calls
    this function): F(ξ*) = F_lin(W*) on jaxland's objective, and with κ = 0 it is Theorem 6's
    F_w* = inf_W F_2(W). Solvers, all from W = 0:

    - "mse" and κ = 0: closed form, the minimum-norm least-squares solution (exact);
    - another loss convex in the prediction ("logistic", "softmax_cross_entropy" or a convex
      callable) and κ = 0: `steps` iterations of optax's L-BFGS (default 200);
    - κ > 0 (any such loss): accelerated proximal gradient (FISTA with soft-thresholding for κ‖W‖₁,
      backtracking and restarts), until the gradient mapping is ≤ `tol` or after `steps` iterations
      (default 2000).

    **Arguments:**
    - `x`: inputs (N, n); `y`: targets, (N, d_y) (or (N,) integer labels for cross-entropy).
    - `kappa`: κ ≥ 0, the weight of the ℓ1 regulariser ‖W‖₁ (jaxland's R for `Linear`).
    - `loss`: a loss name or callable (pred (N, d_y), y) -> (N,), convex in pred.
    - `d_y`: the number of outputs; default y.shape[1], or for integer labels max label + 1.
    - `steps`: the iteration cap of the iterative solvers (positive integer).
    - `tol`: the stopping tolerance of the proximal solver on ‖gradient mapping‖_F (default
      ε_mach^{2/3} · max(1, ‖∇f(0)‖_F) in the dtype of x).

    **Returns:** `LinearPredictor(net, value, grad_norm)`; `grad_norm` is the optimality residual
    (minimum-norm subgradient), check it for the iterative solvers.
    """
    lossfn = get_loss(loss)
    kappa = check_kappa(kappa)
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, n); got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    if y.ndim == 1 and lossfn is not softmax_cross_entropy:
        raise ValueError(f"y must have shape ({x.shape[0]}, d_y); got {y.shape} (use y[:, None])")
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (N, d_y) or (N,); got {y.shape}")
    if d_y is None:
        d_y = y.shape[1] if y.ndim == 2 else int(jnp.max(y)) + 1
    elif isinstance(d_y, bool) or not isinstance(d_y, (int, np.integer)) or d_y < 1:
        raise ValueError(f"d_y must be a positive integer; got {d_y!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                              or steps < 1):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and np.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be None or a finite number > 0; got {tol!r}")
    probe = Linear(jnp.zeros((int(d_y), x.shape[1]), x.dtype))
    check_data(probe, x, y, loss)  # checks that d_y fits y
    kappa_a = jnp.asarray(kappa, x.dtype)
    plain = is_concrete(kappa) and float(kappa) == 0.0
    if plain and lossfn is mse:
        W = _lstsq(x, y.astype(x.dtype))
    elif plain:
        W = _lbfgs(x, y, probe.W, lossfn, 200 if steps is None else int(steps))
    else:
        if tol is None:
            g0 = jax.grad(lambda W: linear_objective(W, x, y, lossfn))(probe.W)
            tol = float(jnp.finfo(x.dtype).eps ** (2 / 3) * max(1.0, float(jnp.linalg.norm(g0))))
        W = _fista(x, y, probe.W, lossfn, kappa_a, 2000 if steps is None else int(steps),
                   jnp.asarray(tol, x.dtype))
    value, residual = _value_residual(W, x, y, lossfn, kappa_a)
    return LinearPredictor(Linear(W), value, residual)
