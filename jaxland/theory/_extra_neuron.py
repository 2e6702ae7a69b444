"""The extra neuron of Liang, Sun, Lee & Srikant (NeurIPS 2018) and its unit-free version of
Sohl-Dickstein & Kawaguchi (2019), as wrappers for any model.

Liang et al.: for binary classification with labels y ∈ {−1, +1}, replace f by

    f̃(x) = f(x; θ) + a·exp(wᵀx + b),      L̃(θ, a, w, b) = (1/N) Σ_s ℓ(−y_s f̃(x_s)) + λa²,

with ℓ nondecreasing and C², e.g. ℓ(z) = max(z + 1, 0)^p, p ≥ 3 (`polynomial_hinge`). On realisable
data every local minimum of L̃ has a = 0 and θ a global minimiser of the original loss (the paper
sums over samples; the mean here only rescales λ).

Sohl-Dickstein & Kawaguchi remove the unit: L̃(θ, a, b) = L(θ)(1 + (a·e^b − 1)²) + λa² for a loss
with minimum 0. Its stationary points with finite b have L(θ) = 0; at a bad θ the infimum is
reached only as b → ∞ — the bad minima are moved to infinity rather than removed, which
`extra_neuron_demo` shows next to the extra neuron.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from .._params import combine, param_dtype, partition, tree_norm
from ..model._losses import LossFn, get_loss
from ..model._models import TwoLayer


def polynomial_hinge(p: int = 3) -> LossFn:
    """The loss ℓ(z) = max(z + 1, 0)^p at z = −y f(x), summed over outputs: (pred, y) -> (N,).

    Liang et al.'s example of a nondecreasing C² loss (C^{p−1}; p ≥ 3 for their theorem). Labels ±1.
    """
    if not isinstance(p, int) or p < 1:
        raise ValueError(f"p must be a positive integer; got {p!r}")

    def loss(pred: Float[Array, "N d_y"], y: Float[Array, "N d_y"]) -> Float[Array, " N"]:
        return jnp.sum(jnp.maximum(1 - y * pred, 0) ** p, axis=-1)

    loss.__name__ = f"polynomial_hinge_{p}"
    return loss


def _model_dims(model) -> tuple[int, int]:
    try:
        return int(model.in_features), int(model.out_features)
    except AttributeError:
        raise TypeError(
            f"model must have in_features and out_features (a jaxland model); got "
            f"{type(model).__name__}"
        ) from None


class ExtraNeuron(eqx.Module):
    """f̃(x) = f(x; θ) + a·exp(wᵀx + b): any model plus Liang et al.'s exponential neuron.

    **Fields:** `model` (the wrapped network, its parameters θ), `a` (d_y,) output weights of the
    extra neuron (one per output), `w` (n,), `b` scalar.
    """

    model: Any
    a: Float[Array, " d_y"]
    w: Float[Array, " n"]
    b: Float[Array, ""]

    def __check_init__(self):
        n, d_y = _model_dims(self.model)
        if jnp.shape(self.a) != (d_y,):
            raise ValueError(
                f"a must have shape ({d_y},) (the model's outputs); got {jnp.shape(self.a)}"
            )
        if jnp.shape(self.w) != (n,):
            raise ValueError(
                f"w must have shape ({n},) (the model's inputs); got {jnp.shape(self.w)}"
            )
        if jnp.shape(self.b) != ():
            raise ValueError(f"b must be a scalar; got shape {jnp.shape(self.b)}")

    @property
    def in_features(self) -> int:
        return _model_dims(self.model)[0]

    @property
    def out_features(self) -> int:
        return _model_dims(self.model)[1]

    def __call__(self, x: Float[Array, "N n"]) -> Float[Array, "N d_y"]:
        return self.model(x) + jnp.exp(x @ self.w + self.b)[:, None] * self.a

    @classmethod
    def wrap(cls, model, *, key: PRNGKeyArray, scale: float = 1.0) -> ExtraNeuron:
        """Wrap `model` with a = 0 (so f̃ = f), w ~ N(0, scale²/n) drawn from `key` (keyword-only),
        b = 0; a, w and b take the dtype the model's parameters promote to."""
        n, d_y = _model_dims(model)
        dtype = param_dtype(model)
        w = jax.random.normal(key, (n,), dtype) * (scale / math.sqrt(n))
        return cls(model, jnp.zeros((d_y,), dtype), w, jnp.zeros((), dtype))


def _check_lam(lam):
    try:
        v = float(lam)
    except (TypeError, ValueError):
        raise TypeError(f"lam must be a finite number >= 0; got {lam!r}") from None
    if not (v >= 0 and math.isfinite(v)):
        raise ValueError(f"lam must be a finite number >= 0; got {lam!r}")


def _check_xy(x, y, n, d_y):
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != n:
        raise ValueError(f"x must have shape (N, {n}); got {jnp.shape(x)}")
    if jnp.shape(y) != (jnp.shape(x)[0], d_y):
        raise ValueError(f"y must have shape ({jnp.shape(x)[0]}, {d_y}); got {jnp.shape(y)}")


def extra_neuron_objective(
    aug: ExtraNeuron,
    x: Real[ArrayLike, "N n"],
    y: Real[ArrayLike, "N d_y"],
    *,
    lam,
    loss: str | LossFn | None = None,
) -> Array:
    """L̃ = (1/N) Σ_s ℓ(f̃(x_s), y_s) + λ‖a‖² (Liang et al. 2018).

    **Arguments:** `aug` an `ExtraNeuron`; `x` (N, n), `y` (N, d_y) labels ±1; `lam` λ ≥ 0; `loss` a
    loss name or callable (pred, y) -> (N,) (default `polynomial_hinge(3)`).
    """
    if not isinstance(aug, ExtraNeuron):
        raise TypeError(f"aug must be an ExtraNeuron; got {type(aug).__name__}")
    _check_lam(lam)
    _check_xy(x, y, aug.in_features, aug.out_features)
    lossfn = polynomial_hinge(3) if loss is None else get_loss(loss)
    return jnp.mean(lossfn(aug(x), y)) + lam * jnp.sum(aug.a * aug.a)


class UnitFree(eqx.Module):
    """The model with Sohl-Dickstein & Kawaguchi's two auxiliary scalars `a`, `b` (no extra unit):
    `__call__` is the model's; the scalars enter only the objective `unit_free_objective`."""

    model: Any
    a: Float[Array, ""]
    b: Float[Array, ""]

    def __check_init__(self):
        if jnp.shape(self.a) != () or jnp.shape(self.b) != ():
            raise ValueError(
                f"a and b must be scalars; got shapes {jnp.shape(self.a)}, {jnp.shape(self.b)}"
            )

    def __call__(self, x):
        return self.model(x)

    @classmethod
    def wrap(cls, model) -> UnitFree:
        """Wrap `model` with a = 0, b = 0."""
        dtype = param_dtype(model)
        return cls(model, jnp.zeros((), dtype), jnp.zeros((), dtype))


def unit_free_objective(
    uf: UnitFree, x: Float[Array, "N n"], y: Array, *, lam, loss: str | LossFn | None = None
) -> Array:
    """L̃(θ, a, b) = L(θ)(1 + (a·e^b − 1)²) + λa², L(θ) = (1/N) Σ_s ℓ(f(x_s; θ), y_s) ≥ 0.

    **Arguments:** as for `extra_neuron_objective` (`uf` a `UnitFree`); the loss must have minimum 0.
    """
    if not isinstance(uf, UnitFree):
        raise TypeError(f"uf must be a UnitFree; got {type(uf).__name__}")
    _check_lam(lam)
    n, d_y = _model_dims(uf.model)
    _check_xy(x, y, n, d_y)
    lossfn = polynomial_hinge(3) if loss is None else get_loss(loss)
    L = jnp.mean(lossfn(uf.model(x), y))
    return L * (1 + (uf.a * jnp.exp(uf.b) - 1) ** 2) + lam * uf.a**2


# ----------------------------------------------------------------------------------------------
# Demonstration
# ----------------------------------------------------------------------------------------------


class ExtraNeuronDemo(NamedTuple):
    """What `extra_neuron_demo` returns (histories have shape (steps,), objective before each step).

    - `x` (N, 2), `y` (N, 1): the data (1-D inputs t with a constant feature, labels sign(t)).
    - `start`: the planted bad local minimum θ0 (a `TwoLayer`, one unit dead).
    - `plain`: history of L(θ) under Adam from θ0; `plain_grad_norm`: ‖∇L(θ0)‖.
    - `augmented`: history of Liang et al.'s L̃ from (θ0, a = 0); `augmented_net`: the final
      `ExtraNeuron`; `augmented_data_loss`: its data term at the end; `augmented_errors`: the number
      of misclassified points of f̃.
    - `unit_free`: history of Sohl-Dickstein & Kawaguchi's L̃ from (θ0, a = b = 0); `unit_free_net`
      the final `UnitFree` (b grows without bound, L(θ) stays at the bad value).
    """

    x: Array
    y: Array
    start: TwoLayer
    plain: Array
    plain_grad_norm: Array
    augmented: Array
    augmented_net: ExtraNeuron
    augmented_data_loss: Array
    augmented_errors: Array
    unit_free: Array
    unit_free_net: UnitFree


@eqx.filter_jit
def _train(fn, params, steps, lr):
    dyn, static = partition(params)
    opt = optax.adam(lr)

    def step(c, _):
        p, s = c
        v, g = jax.value_and_grad(lambda q: fn(combine(q, static)))(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), v

    (dyn, _), hist = jax.lax.scan(step, (dyn, opt.init(dyn)), None, length=steps)
    return combine(dyn, static), hist


def demo_problem(dtype=None) -> tuple[Array, Array, TwoLayer]:
    """The data and the planted bad local minimum of `extra_neuron_demo`.

    x_s = (t_s, 1) with t ∈ {±1, ±1.5, ±2}, y = sign(t). The model is a `TwoLayer` with two units
    (realisable: f = σ(t) − σ(−t) has margin ≥ 1). θ0: unit 1 = σ(t) with output weight 1 fits the
    positives with margin exactly ≥ 1 (zero loss, zero derivative); unit 2 has weights (0, −1), so
    its pre-activation is −1 on every sample — dead. The negatives get f = 0 and loss ℓ(0) = 1 each,
    so L(θ0) = ½ while min L = 0; ∇L(θ0) = 0 and every nearby θ has L ≥ L(θ0): a bad local minimum.
    """
    dtype = dtype or jnp.result_type(float)
    t = jnp.array([-2.0, -1.5, -1.0, 1.0, 1.5, 2.0], dtype)
    x = jnp.stack([t, jnp.ones_like(t)], axis=1)
    y = jnp.sign(t)[:, None]
    start = TwoLayer(
        W1=jnp.array([[1.0, 0.0], [0.0, -1.0]], dtype), W2=jnp.array([[1.0, 0.5]], dtype)
    )
    return x, y, start


class _Plain(eqx.Module):
    x: Array
    y: Array

    def __call__(self, net):
        return jnp.mean(polynomial_hinge(3)(net(self.x), self.y))


class _Aug(eqx.Module):
    x: Array
    y: Array
    lam: Array

    def __call__(self, aug):
        return jnp.mean(polynomial_hinge(3)(aug(self.x), self.y)) + self.lam * jnp.sum(aug.a**2)


class _UF(eqx.Module):
    x: Array
    y: Array
    lam: Array

    def __call__(self, uf):
        L = jnp.mean(polynomial_hinge(3)(uf.model(self.x), self.y))
        return L * (1 + (uf.a * jnp.exp(uf.b) - 1) ** 2) + self.lam * uf.a**2


def extra_neuron_demo(
    *, key: PRNGKeyArray, steps: int = 2000, lam: float = 1e-3, learning_rate: float = 1e-2
) -> ExtraNeuronDemo:
    """Plain training stops at a bad local minimum; the extra neuron's objective does not.

    On `demo_problem` (a 1-D binary classification task, loss `polynomial_hinge(3)`), from the
    planted bad local minimum θ0 (L = ½, min L = 0) run `steps` Adam steps on

    1. the plain loss L(θ): the gradient is exactly 0, so it stays at ½;
    2. Liang et al.'s L̃(θ, a, w, b) (a = 0, w from `key`, b = 0): ∂L̃/∂a ≠ 0, so the extra
       neuron moves and L̃ falls towards 0 (the data becomes separated by f̃);
    3. the unit-free L̃(θ, a, b) of Sohl-Dickstein & Kawaguchi: θ's gradient is a multiple of ∇L(θ0)
       = 0, so L(θ) stays ½ while a·e^b → 1 and a → 0, i.e. b → ∞ — the bad minimum is moved to
       infinity, not removed.

    **Arguments:** `key` (keyword-only) the PRNG key of the extra neuron's w; `steps` Adam steps
    with `learning_rate` on each objective; `lam` the penalty λ on a.

    **Returns:** `ExtraNeuronDemo`.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    _check_lam(lam)
    x, y, start = demo_problem()
    dtype = x.dtype
    lam_a = jnp.asarray(lam, dtype)
    plain_F = _Plain(x, y)
    g0 = jax.grad(plain_F)(start)
    gnorm = tree_norm(g0)
    _, plain = _train(plain_F, start, steps, learning_rate)
    aug0 = ExtraNeuron.wrap(start, key=key)
    aug, augmented = _train(_Aug(x, y, lam_a), aug0, steps, learning_rate)
    data = jnp.mean(polynomial_hinge(3)(aug(x), y))
    errors = jnp.sum(jnp.sign(aug(x)) != y)
    uf, unit_free = _train(_UF(x, y, lam_a), UnitFree.wrap(start), steps, learning_rate)
    return ExtraNeuronDemo(x, y, start, plain, gnorm, augmented, aug, data, errors, unit_free, uf)
