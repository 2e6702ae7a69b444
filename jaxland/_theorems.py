"""The neighbouring theorems as runnable checks: Shamir (2018) and Yun, Sra & Jadbabaie (2019).

- `shamir_bound`: Shamir's Theorem 1, ‖∇_{(w,V)}F‖ ≥ (F − F_lin(w*)) / sqrt(2‖w‖² + ‖w*‖²(2 +
  ‖V‖²/‖w‖²)), at one `ResidualLinear` point (f = wᵀ(x + V g(θ, x)), eq. 9).
- `shamir_check`: that inequality on random instances, at random points and at trained points.
- `shamir_example1`: his Example 1, a saddle with zero gradient, Hessian eigenvalues ±ε and F = ½,
  while the linear predictor reaches 0.
- `ResidualChain`: the deep residual chains of Yun et al., h_l = h_{l−1} + V_l g(θ_l, h_{l−1}),
  f = W h_L.
- `residual_critical_points`: critical points of `ResidualLinear` and `ResidualChain` on random
  instances, each with F − F_lin* and λ_min: Yun et al. say each is at least as good as the best linear
  predictor or has a negative Hessian eigenvalue. Returned as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ._critical import KINDS, STRICT_SADDLE, CriticalPoint, classify_critical_point
from ._linear_predictor import best_linear_predictor, linear_objective
from ._losses import LossFn, get_loss
from ._models import ResidualLinear, _init_theta, relu, relu_net
from ._objective import check_data
from ._train import fit

__all__ = [
    "ShamirBound",
    "ShamirCheck",
    "shamir_bound",
    "shamir_check",
    "ShamirExample1",
    "shamir_example1",
    "half_squared_error",
    "ResidualChain",
    "CriticalTable",
    "planted_saddle",
    "residual_critical_points",
]


# ----------------------------------------------------------------------------------------------
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
    x: Float[Array, "N d_x"],
    y: Float[Array, "N 1"],
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
    key: PRNGKeyArray,
    *,
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


# ----------------------------------------------------------------------------------------------
# Yun, Sra & Jadbabaie: deep residual chains
# ----------------------------------------------------------------------------------------------


class ResidualChain(eqx.Module):
    """A deep residual chain (Yun, Sra & Jadbabaie 2019): h_0 = x, h_l = h_{l−1} + V_l g(θ_l, h_{l−1})
    for l = 1 … L, and f(x) = W h_L. With L = 1 this is `ResidualLinear` (eq. 9).

    **Fields:** `W` (d_y, d_x); `V` a tuple of L matrices (d_x, d_z); `theta` a tuple of L tuples of
    matrices, the bias-free networks g(θ_l, ·): R^{d_x} → R^{d_z}; `activation` (static, default
    ReLU as in `relu_net`; a smooth one such as ``jnp.tanh`` makes F twice differentiable, which
    the Hessian test of Yun et al. needs).
    """

    W: Float[Array, "d_y d_x"]
    V: tuple[Float[Array, "d_x d_z"], ...]
    theta: tuple[tuple[Array, ...], ...]
    activation: Callable[[Array], Array] = eqx.field(static=True, default=relu)

    def __check_init__(self):
        if not isinstance(self.V, tuple) or not isinstance(self.theta, tuple):
            raise TypeError("V and theta must be tuples (one entry per residual block)")
        if len(self.V) != len(self.theta) or len(self.V) == 0:
            raise ValueError(
                f"V and theta must have the same positive length; got {len(self.V)} "
                f"and {len(self.theta)}"
            )
        d_x = self.W.shape[-1]
        for i, v in enumerate(self.V):
            if v.shape[-2] != d_x:
                raise ValueError(f"V[{i}] has {v.shape[-2]} rows but W has {d_x} columns")

    @property
    def in_features(self) -> int:
        return self.W.shape[-1]

    @property
    def out_features(self) -> int:
        return self.W.shape[-2]

    @property
    def depth(self) -> int:
        return len(self.V)

    def __call__(self, x: Float[Array, "N d_x"]) -> Float[Array, "N d_y"]:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (N, {self.in_features}); got {x.shape}")
        h = x
        for V, th in zip(self.V, self.theta):
            h = h + _branch(th, h, self.activation) @ V.T
        return h @ self.W.T

    @classmethod
    def init(
        cls,
        key: PRNGKeyArray,
        *,
        d_x: int,
        d_y: int = 1,
        depth: int = 2,
        d_z: int = 4,
        hidden: Sequence[int] = (8,),
        activation: Callable[[Array], Array] = relu,
        dtype=None,
    ) -> ResidualChain:
        """W with N(0, 1/d_x) entries, V_l with N(0, 1/(d_z·depth)), θ_l He-normal."""
        dtype = dtype or jnp.result_type(float)
        kw, *ks = jax.random.split(key, 2 * depth + 1)
        W = jax.random.normal(kw, (d_y, d_x), dtype) / math.sqrt(d_x)
        V = tuple(
            jax.random.normal(ks[2 * i], (d_x, d_z), dtype) / math.sqrt(d_z * depth)
            for i in range(depth)
        )
        theta = tuple(_init_theta(ks[2 * i + 1], (d_x, *hidden, d_z), dtype) for i in range(depth))
        return cls(W, V, theta, activation)


def _branch(theta, z, act):
    """g(θ, z) = θ_k act(θ_{k−1} … act(θ_1 z)) (`relu_net` for act = relu)."""
    h = z
    for i, t in enumerate(theta):
        if i > 0:
            h = act(h)
        h = h @ t.T
    return h


class _DataObjective(eqx.Module):
    """F(ξ) = (1/N) Σ_s ℓ(f_ξ(x_s), y_s) for any model (κ = 0: the theorems have no regulariser)."""

    x: Array
    y: Array
    loss: str | LossFn = eqx.field(static=True, default="mse")

    def __call__(self, net):
        return jnp.mean(get_loss(self.loss)(net(self.x), self.y))


def _random_instance(
    key, model, n_samples, d_x, d_z, hidden, loss, dtype, depth=1, activation=relu
):
    kx, kt, kn, km = jax.random.split(key, 4)
    x = jax.random.normal(kx, (n_samples, d_x), dtype)
    teacher = _init_theta(kt, (d_x, 2 * d_x, 1), dtype)
    t = relu_net(teacher, x) + 0.3 * x[:, :1]
    if get_loss(loss) is get_loss("mse"):
        y = t + 0.1 * jax.random.normal(kn, t.shape, dtype)
    else:
        y = jnp.where(t - jnp.median(t) >= 0, 1.0, -1.0).astype(dtype)
    if model is ResidualLinear:
        net = ResidualLinear.init(km, d_x=d_x, d_z=d_z, hidden=hidden, dtype=dtype)
    else:
        net = ResidualChain.init(
            km, d_x=d_x, d_z=d_z, hidden=hidden, depth=depth, activation=activation, dtype=dtype
        )
    return net, x, y


class CriticalTable(NamedTuple):
    """`residual_critical_points`' table, one entry per critical point found (arrays of length R).

    - `model`: model name per row ("ResidualChain(L)"; L = 1 is eq. 9's ResidualLinear).
    - `start`: "planted" (the exact critical point `planted_saddle`) or "trained" (Adam).
    - `value`, `linear_value`: F at the point and F_lin* of the best linear predictor.
    - `grad_norm`, `lambda_min`, `kind` (int code into `KINDS`).
    - `holds`: for critical points, F ≤ F_lin* + `value_tol` or λ_min < −`eig_tol` (Yun et al.);
      True for rows that are not critical (nothing is claimed).
    """

    model: tuple[str, ...]
    start: tuple[str, ...]
    value: np.ndarray
    linear_value: np.ndarray
    grad_norm: np.ndarray
    lambda_min: np.ndarray
    kind: np.ndarray
    holds: np.ndarray

    @property
    def num_critical(self) -> int:
        return int(np.sum(self.kind != KINDS.index("not critical")))

    def format(self) -> str:
        """The table as text, one row per point."""
        head = (
            f"{'model':<18}{'start':<9}{'F':>11}{'F_lin*':>11}{'F-F_lin*':>11}{'|grad|':>10}"
            f"{'lam_min':>11}  {'kind':<15}holds"
        )
        lines = [head]
        for i in range(len(self.model)):
            lines.append(
                f"{self.model[i]:<18}{self.start[i]:<9}{self.value[i]:>11.4g}"
                f"{self.linear_value[i]:>11.4g}{self.value[i] - self.linear_value[i]:>11.3g}"
                f"{self.grad_norm[i]:>10.2g}{self.lambda_min[i]:>11.3g}  "
                f"{KINDS[int(self.kind[i])]:<15}{bool(self.holds[i])}"
            )
        return "\n".join(lines)


def planted_saddle(net: ResidualChain, key: PRNGKeyArray) -> ResidualChain:
    """An exact critical point of a residual chain, Shamir's Example 1 in higher dimensions.

    Block 1 becomes linear, g(θ_1, h) = θ_1 h with θ_1 a random (d', d_x) matrix (d' = max(d_z,
    d_x)), and V_1 = −θ_1⁺, so h_1 = x − θ_1⁺θ_1 x = 0 for every input; the later blocks are
    bias-free, so h_L = 0; and W = 0. Then ∇_W F = E ℓ'(0, y) h_Lᵀ = 0 and every other gradient has
    a factor W, so ∇F = 0 exactly, with F = E ℓ(0, y) ≥ F_lin*. Yun et al.: unless F = F_lin*, the
    Hessian there has a negative eigenvalue.
    """
    d_x = net.in_features
    d = max(net.V[0].shape[1], d_x)
    t1 = jax.random.normal(key, (d, d_x), net.W.dtype)
    V1 = -jnp.linalg.pinv(t1)
    return ResidualChain(
        jnp.zeros_like(net.W), (V1, *net.V[1:]), ((t1,), *net.theta[1:]), net.activation
    )


def residual_critical_points(
    key: PRNGKeyArray,
    *,
    num_instances: int = 3,
    depths: Sequence[int] = (1, 2),
    n_samples: int = 64,
    d_x: int = 3,
    d_z: int = 2,
    hidden: Sequence[int] = (4,),
    loss: str | LossFn = "mse",
    activation: Callable[[Array], Array] = jnp.tanh,
    train_steps: int = 1000,
    grad_tol: float = 1e-3,
    eig_tol: float = 1e-6,
    value_tol: float = 1e-6,
) -> CriticalTable:
    """Yun, Sra & Jadbabaie (2019) on random instances: is every critical point of a residual
    network at least as good as the best linear predictor, or a strict saddle?

    For each depth L in `depths` (a `ResidualChain` of L blocks; L = 1 is the `ResidualLinear`
    model of eq. 9 with the given activation) and each of `num_instances` random instances (data as
    in `shamir_check`, a random network), two points are classified by `classify_critical_point`
    (λ_min of the full Hessian over W, V, θ):

    - "planted": the exact critical point `planted_saddle` (∇F = 0, F = E ℓ(0, y));
    - "trained": the point after `train_steps` Adam steps (cosine-decayed step from 1e-2), an
      *approximate* critical point when
      ‖∇F‖ ≤ `grad_tol` (otherwise "not critical": nothing is claimed).

    The claim checked is F ≤ F_lin* + `value_tol` or λ_min < −`eig_tol`. The default activation
    is tanh: the second-order test needs F to be C² (minima of ReLU networks often sit on kinks
    where ∇F does not exist). Newton-type polishing (`find_critical_point`) is not used here: on
    these problems the infimum is often approached only asymptotically, and Dogleg / LM stall at
    ‖∇F‖ ~ 1e-3. Use float64 (`jax.enable_x64`). The exact conditions of the theorem (architecture
    and data) are not checked; the table reports what happens.

    **Returns:** `CriticalTable` (`.format()` prints it).
    """
    if not isinstance(num_instances, int) or num_instances < 1:
        raise ValueError(f"num_instances must be a positive integer; got {num_instances!r}")
    if not depths or any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"depths must be positive integers; got {depths!r}")
    dtype = jnp.result_type(float)
    rows = []
    keys = jax.random.split(key, num_instances * len(depths)).reshape(
        len(depths), num_instances, -1
    )
    for di, depth in enumerate(depths):
        name = f"ResidualChain({depth})"
        for k in keys[di]:
            net, x, y = _random_instance(
                k, ResidualChain, n_samples, d_x, d_z, hidden, loss, dtype, depth, activation
            )
            lin = float(best_linear_predictor(x, y, loss=loss).value)
            F = _DataObjective(x, y, loss)
            points = (
                ("planted", planted_saddle(net, jax.random.fold_in(k, 1))),
                ("trained", _adam(F, net, train_steps)),
            )
            for start, p in points:
                c: CriticalPoint = classify_critical_point(
                    F, p, key=k, grad_tol=grad_tol, eig_tol=eig_tol
                )
                critical = int(c.kind) != KINDS.index("not critical")
                holds = (
                    (not critical)
                    or float(c.value) <= lin + value_tol
                    or int(c.kind) == STRICT_SADDLE
                )
                rows.append(
                    (
                        name,
                        start,
                        float(c.value),
                        lin,
                        float(c.grad_norm),
                        float(c.lambda_min),
                        int(c.kind),
                        holds,
                    )
                )
    cols = list(zip(*rows))
    return CriticalTable(tuple(cols[0]), tuple(cols[1]), *(np.array(c) for c in cols[2:]))


@eqx.filter_jit
def _adam_loop(F, params, steps):
    dyn, static = eqx.partition(params, eqx.is_inexact_array)
    # a decaying step so the iterate settles at an approximate critical point instead of hovering
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=1e-3))

    def step(c, _):
        p, s = c
        g = jax.grad(lambda q: F(eqx.combine(q, static)))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (dyn, _), _ = jax.lax.scan(step, (dyn, opt.init(dyn)), None, length=steps)
    return eqx.combine(dyn, static)


def _adam(F, params, steps):
    return _adam_loop(F, params, steps)
