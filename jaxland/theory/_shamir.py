"""Shamir (2018), "Are ResNets Provably Better than Linear Predictors?", as runnable checks.

- `shamir_bound`: Shamir's Theorem 1, ‖∇_{(w,V)}F‖ ≥ (F − F_lin(w*)) / sqrt(2‖w‖² + ‖w*‖²(2 +
  ‖V‖²/‖w‖²)), at one `ResidualLinear` point (f = wᵀ(x + V g(θ, x)), eq. 9).
- `shamir_check`: that inequality on random instances, at random points and at trained points.
- `shamir_example1`: his Example 1, a saddle with zero gradient, Hessian eigenvalues ±ε and F = ½,
  while the linear predictor reaches 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from ..construct._linear_predictor import best_linear_predictor, linear_objective
from ..model._losses import LossFn, get_loss
from ..model._models import ResidualLinear
from ..model._objective import check_data
from ..model._train import fit
from ._residual_chain import _random_instance

# Shamir's Theorem 1
# ----------------------------------------------------------------------------------------------


class ShamirBound(NamedTuple):
    """Both sides of Shamir's Theorem 1 at a point (leading batch axes when batched).

    - `grad_norm`: ‖∇_{(w,V)}F‖ (θ fixed), Frobenius over (w, V).
    - `value`: F(w, V, θ) = (1/N) Σ_s ℓ(f(x_s), y_s).
    - `linear_value`: F_lin(w*).
    - `bound`: (F − F_lin(w*)) / sqrt(2‖w‖² + ‖w*‖²(2 + ‖V‖₂²/‖w‖²)) (‖V‖₂ the spectral norm;
      0 when w = 0, where the theorem says nothing).
    - `sharp_bound`: the intermediate bound of the proof, (F − F_lin(w*)) / sqrt(‖w − w*‖² +
      ‖w*‖²‖V‖₂²/‖w‖²) ≥ `bound`, which the gradient also satisfies.
    """

    grad_norm: Array
    value: Array
    linear_value: Array
    bound: Array
    sharp_bound: Array

    @property
    def holds(self) -> Array:
        """grad_norm ≥ sharp_bound ≥ bound, up to a relative rounding slack of 1e-4."""
        slack = 1e-4 * (1 + jnp.abs(self.value))
        return self.grad_norm + slack >= self.sharp_bound


def _shamir(net, x, y, w_star, lossfn):
    def F(wv):
        return jnp.mean(lossfn(eqx.tree_at(lambda n: (n.W, n.V), net, wv)(x), y))

    value, (gW, gV) = jax.value_and_grad(F)((net.W, net.V))
    gn = jnp.sqrt(jnp.sum(gW * gW) + jnp.sum(gV * gV))
    lin = linear_objective(w_star, x, y, lossfn)
    w2 = jnp.sum(net.W * net.W)
    ws2 = jnp.sum(w_star * w_star)
    v2 = jnp.linalg.norm(net.V, ord=2) ** 2
    safe = jnp.where(w2 > 0, w2, 1)
    gap = value - lin
    bound = jnp.where(w2 > 0, gap / jnp.sqrt(2 * w2 + ws2 * (2 + v2 / safe)), 0)
    sharp = jnp.where(w2 > 0, gap / jnp.sqrt(jnp.sum((net.W - w_star) ** 2) + ws2 * v2 / safe), 0)
    return ShamirBound(gn, value, lin, bound, sharp)


_shamir_jit = eqx.filter_jit(_shamir)


def _check_scalar_output(net):
    if not isinstance(net, ResidualLinear):
        raise TypeError(f"net must be a ResidualLinear (eq. 9); got {type(net).__name__}")
    if net.W.shape[0] != 1:
        raise ValueError(
            f"Shamir's Theorem 1 is for a scalar output: W must have shape (1, d_x); "
            f"got {net.W.shape}"
        )


def shamir_bound(
    net: ResidualLinear,
    x: Real[ArrayLike, "N d_x"],
    y: Real[ArrayLike, "N 1"],
    *,
    w_star: Float[Array, "1 d_x"] | None = None,
    loss: str | LossFn = "mse",
) -> ShamirBound:
    """Both sides of Shamir (2018), Theorem 1, at the point `net` = (w, V, θ).

    For ℓ convex and differentiable in the prediction, any w ≠ 0, V, θ and any w*,

        ‖∇_{(w,V)} F(w, V, θ)‖ ≥ (F(w, V, θ) − F_lin(w*)) / sqrt(2‖w‖² + ‖w*‖²(2 + ‖V‖²/‖w‖²)),

    F = E ℓ(wᵀ(x + V g(θ, x)); y), F_lin(w) = E ℓ(wᵀx; y). (Proof: convexity gives F − F_lin(w*) ≤
    ⟨∇_w F, w − w*⟩ + ⟨∇_V F, w w*ᵀV/‖w‖²⟩, then Cauchy–Schwarz.) So near-critical points in (w, V)
    are almost as good as every linear predictor.

    **Arguments:**
    - `net`: a `ResidualLinear` with W of shape (1, d_x) (the row vector wᵀ).
    - `x` (N, d_x), `y` (N, 1): data; `loss`: convex in the prediction.
    - `w_star`: the comparison predictor (1, d_x); default the best linear predictor.

    **Returns:** `ShamirBound` (`.holds` checks the inequality).
    """
    _check_scalar_output(net)
    check_data(net, x, y, loss)
    if w_star is None:
        w_star = best_linear_predictor(x, y, loss=loss).net.W
    w_star = jnp.asarray(w_star, net.W.dtype)
    if w_star.shape != net.W.shape:
        raise ValueError(f"w_star must have shape {net.W.shape} like W; got {w_star.shape}")
    return _shamir_jit(net, x, y, w_star, get_loss(loss))


class ShamirCheck(NamedTuple):
    """`shamir_check`'s table: `random` at random points, `trained` after Adam steps (each a
    `ShamirBound` with leading axis num_instances), and `holds` (both, all instances)."""

    random: ShamirBound
    trained: ShamirBound

    @property
    def holds(self) -> bool:
        return bool(jnp.all(self.random.holds) and jnp.all(self.trained.holds))


def shamir_check(
    *,
    key: PRNGKeyArray,
    num_instances: int = 8,
    n_samples: int = 32,
    d_x: int = 4,
    d_z: int = 3,
    hidden: Sequence[int] = (8,),
    train_steps: int = 200,
    loss: str | LossFn = "mse",
    dtype=None,
) -> ShamirCheck:
    """Shamir's Theorem 1 on random `ResidualLinear` instances.

    Instance i: x with N(0, 1) entries (n_samples, d_x); y = t(x) + noise for a random ReLU teacher t
    (so the linear predictor is not optimal); a random network `ResidualLinear.init`. Both sides of
    the inequality are evaluated at the random network and after `train_steps` Adam steps on (w, V, θ)
    (near a critical point, where the bound says F ≤ F_lin* + small). w* is the best linear predictor.

    **Returns:** `ShamirCheck(random, trained)`; `.holds` is True when every instance satisfies the
    inequality.
    """
    for name, v in (
        ("num_instances", num_instances),
        ("n_samples", n_samples),
        ("d_x", d_x),
        ("d_z", d_z),
    ):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    dtype = dtype or jnp.result_type(float)
    rows_r, rows_t = [], []
    for k in jax.random.split(key, num_instances):
        net, x, y = _random_instance(k, ResidualLinear, n_samples, d_x, d_z, hidden, loss, dtype)
        w_star = best_linear_predictor(x, y, loss=loss).net.W
        rows_r.append(_shamir_jit(net, x, y, w_star, get_loss(loss)))
        trained = fit(net, x, y, kappa=0.0, loss=loss, steps=train_steps).net
        rows_t.append(_shamir_jit(trained, x, y, w_star, get_loss(loss)))
    stack = lambda rows: jax.tree.map(lambda *a: jnp.stack(a), *rows)  # noqa: E731
    return ShamirCheck(stack(rows_r), stack(rows_t))


# ----------------------------------------------------------------------------------------------
# Shamir's Example 1
# ----------------------------------------------------------------------------------------------


def half_squared_error(pred: Float[Array, "N d_y"], y: Float[Array, "N d_y"]) -> Float[Array, " N"]:
    """½‖f(x) − y‖² per sample (Shamir's normalisation of the squared loss)."""
    ps, ys = jnp.shape(pred), jnp.shape(y)
    if len(ps) != 2 or ys != ps:
        hint = " (use y[:, None] for a single output)" if ys == ps[:1] and ps[-1:] == (1,) else ""
        raise ValueError(f"y must have the shape of pred {ps}; got {ys}{hint}")
    return 0.5 * jnp.sum((pred - y) ** 2, axis=-1)


class ShamirExample1(NamedTuple):
    """Shamir's Example 1: F(w, v) = ½(w(1 + εv) − 1)² with f(x) = εx, x = y = 1.

    - `net`: the `ResidualLinear` at the point (w, v) = (0, −1/ε), θ = (ε,) so g(θ, x) = εx.
    - `x`, `y`: the single sample (1, 1) each equal to 1.
    - `objective`: F as a function of the (w, V) pytree ``(W, V)`` (θ held fixed, as in the example).
    - `point`: the saddle ``(W, V)`` = ([[0]], [[−1/ε]]).
    - `epsilon`: ε.

    At `point`: ∇F = 0, ∇²F = [[0, −ε], [−ε, 0]] (eigenvalues ±ε), F = ½; F_lin(1) = 0.
    """

    net: ResidualLinear
    x: Array
    y: Array
    objective: eqx.Module
    point: tuple[Array, Array]
    epsilon: float


class _WVObjective(eqx.Module):
    theta: tuple
    x: Array
    y: Array

    def __call__(self, wv):
        W, V = wv
        return jnp.mean(half_squared_error(ResidualLinear(W, V, self.theta)(self.x), self.y))


def shamir_example1(epsilon: float = 0.1, dtype=None) -> ShamirExample1:
    """Shamir (2018), Example 1: a point with zero gradient that is worse than a linear predictor.

    **Arguments:** `epsilon` ε > 0 (the scale of the residual branch f(x) = εx).

    **Returns:** `ShamirExample1`.
    """
    eps = float(epsilon)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"epsilon must be a finite number > 0; got {epsilon!r}")
    dtype = dtype or jnp.result_type(float)
    theta = (jnp.full((1, 1), eps, dtype),)
    W = jnp.zeros((1, 1), dtype)
    V = jnp.full((1, 1), -1.0 / eps, dtype)
    x = jnp.ones((1, 1), dtype)
    y = jnp.ones((1, 1), dtype)
    return ShamirExample1(ResidualLinear(W, V, theta), x, y, _WVObjective(theta, x, y), (W, V), eps)
