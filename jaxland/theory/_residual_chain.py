"""Yun, Sra & Jadbabaie (2019): deep residual chains and their critical points.

- `ResidualChain`: h_l = h_{l−1} + V_l g(θ_l, h_{l−1}), f = W h_L.
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

from .._checks import check_key, check_positive_int
from .._params import combine, partition
from ..construct._linear_predictor import best_linear_predictor
from ..model._losses import LossFn, get_loss
from ..model._models import ResidualLinear, init_theta, relu, relu_net
from ..second_order._critical import CriticalPoint, classify_critical_point

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

    W: Float[Array | np.ndarray, "d_y d_x"]
    V: tuple[Float[Array | np.ndarray, "d_x _d_z"], ...]  # d_z may differ from block to block
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

    def __call__(self, x: Float[Array | np.ndarray, "N d_x"]) -> Float[Array, "N d_y"]:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (N, {self.in_features}); got {x.shape}")
        h = x
        for V, th in zip(self.V, self.theta, strict=True):
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
        check_key(key)
        for name, v in (("d_x", d_x), ("d_y", d_y), ("depth", depth), ("d_z", d_z)):
            check_positive_int(name, v)
        for i, h in enumerate(hidden):
            check_positive_int(f"hidden[{i}]", h)
        dtype = dtype or jnp.result_type(float)
        kw, *ks = jax.random.split(key, 2 * depth + 1)
        W = jax.random.normal(kw, (d_y, d_x), dtype) / math.sqrt(d_x)
        V = tuple(
            jax.random.normal(ks[2 * i], (d_x, d_z), dtype) / math.sqrt(d_z * depth)
            for i in range(depth)
        )
        theta = tuple(init_theta(ks[2 * i + 1], (d_x, *hidden, d_z), dtype) for i in range(depth))
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
    teacher = init_theta(kt, (d_x, 2 * d_x, 1), dtype)
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
    - `grad_norm`, `lambda_min`.
    - `kind`: the short name of each point's `CriticalKind` ("local minimum", "strict saddle",
      "degenerate", "not critical"; `CriticalPoint.kind_name`).
    - `holds`: for critical points, F ≤ F_lin* + `value_tol` or λ_min < −`eig_tol` (Yun et al.);
      True for rows that are not critical (nothing is claimed).
    """

    model: tuple[str, ...]
    start: tuple[str, ...]
    value: np.ndarray
    linear_value: np.ndarray
    grad_norm: np.ndarray
    lambda_min: np.ndarray
    kind: tuple[str, ...]
    holds: np.ndarray

    @property
    def num_critical(self) -> int:
        return sum(k != "not critical" for k in self.kind)

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
                f"{self.kind[i]:<15}{bool(self.holds[i])}"
            )
        return "\n".join(lines)


def planted_saddle(net: ResidualChain, *, key: PRNGKeyArray) -> ResidualChain:
    """An exact critical point of a residual chain, Shamir's Example 1 in higher dimensions.

    Block 1 becomes linear, g(θ_1, h) = θ_1 h with θ_1 a random (d', d_x) matrix (d' = max(d_z,
    d_x)), and V_1 = −θ_1⁺, so h_1 = x − θ_1⁺θ_1 x = 0 for every input; the later blocks are
    bias-free, so h_L = 0; and W = 0. Then ∇_W F = E ℓ'(0, y) h_Lᵀ = 0 and every other gradient has
    a factor W, so ∇F = 0 exactly, with F = E ℓ(0, y) ≥ F_lin*. Yun et al.: unless F = F_lin*, the
    Hessian there has a negative eigenvalue.

    **Arguments:** `net` a `ResidualChain` (its shapes, activation and later blocks are kept);
    `key` (keyword-only) the PRNG key of θ_1.

    **Returns:** the `ResidualChain` at the planted critical point.
    """
    if not isinstance(net, ResidualChain):
        raise TypeError(f"net must be a ResidualChain; got {type(net).__name__}")
    check_key(key)
    d_x = net.in_features
    d = max(net.V[0].shape[1], d_x)
    t1 = jax.random.normal(key, (d, d_x), net.W.dtype)
    V1 = -jnp.linalg.pinv(t1)
    return ResidualChain(
        jnp.zeros_like(net.W), (V1, *net.V[1:]), ((t1,), *net.theta[1:]), net.activation
    )


def residual_critical_points(
    *,
    key: PRNGKeyArray,
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

    **Arguments:** `key` (keyword-only) the PRNG key of the instances and the Lanczos start vectors;
    the others give the instances' sizes, loss and activation, the Adam steps and the tolerances.

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
            fn = _DataObjective(x, y, loss)
            points = (
                ("planted", planted_saddle(net, key=jax.random.fold_in(k, 1))),
                ("trained", _adam_fit(fn, net, train_steps)),
            )
            for start, p in points:
                c: CriticalPoint = classify_critical_point(
                    fn, p, key=k, grad_tol=grad_tol, eig_tol=eig_tol
                )
                critical = c.kind_name != "not critical"
                holds = (
                    (not critical)
                    or float(c.value) <= lin + value_tol
                    or c.kind_name == "strict saddle"
                )
                rows.append(
                    (
                        name,
                        start,
                        float(c.value),
                        lin,
                        float(c.grad_norm),
                        float(c.lambda_min),
                        c.kind_name,
                        holds,
                    )
                )
    cols = list(zip(*rows, strict=True))
    return CriticalTable(
        tuple(cols[0]), tuple(cols[1]), *(np.array(c) for c in cols[2:6]), tuple(cols[6]),
        np.array(cols[7]),
    )


@eqx.filter_jit
def _adam_loop(fn, params, steps):
    dyn, static = partition(params)
    # a decaying step so the iterate settles at an approximate critical point instead of hovering
    opt = optax.adam(optax.cosine_decay_schedule(1e-2, steps, alpha=1e-3))

    def step(c, _):
        p, s = c
        g = jax.grad(lambda q: fn(combine(q, static)))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (dyn, _), _ = jax.lax.scan(step, (dyn, opt.init(dyn)), None, length=steps)
    return combine(dyn, static)


def _adam_fit(fn, params, steps):
    return _adam_loop(fn, params, steps)
