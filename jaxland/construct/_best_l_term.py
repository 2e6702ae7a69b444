"""An estimator of e(l), the best l-term two-layer network (eqs. 5 and 19)."""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, Real

from .._checks import check_kappa
from ..model._losses import LossFn, get_loss, softmax_cross_entropy
from ..model._models import TwoLayer, relu
from ..model._objective import check_data, objective


class BestLTerm(NamedTuple):
    """What `best_l_term` returns.

    - `net`: a `TwoLayer` with exactly l units and unit-norm rows of W1.
    - `value`: its objective E L(W2 σ(W1 x), y) + κ‖W2‖₁, an upper bound on e(l).
    - `restart_values`: the same for every restart, shape (restarts,).
    """

    net: TwoLayer
    value: Array
    restart_values: Array


def best_l_term(
    x: Float[Array | np.ndarray, "N n"],
    y: Real[Array | np.ndarray, "N ..."],
    *,
    l: int,
    kappa,
    key: PRNGKeyArray,
    loss: str | LossFn = "mse",
    d_y: int | None = None,
    steps: int = 2000,
    restarts: int = 4,
    learning_rate: float = 0.02,
) -> BestLTerm:
    """Estimate e(l) = inf_{‖W2‖₀ ≤ l, ‖w_{1,i}‖₂ = 1} E L(W2 σ(W1 x), y) + κ‖W2‖₁ (eqs. 5, 19).

    The l rows of W1 are parametrised as U_i/‖U_i‖ (so they stay on the unit sphere) and trained
    jointly with W2 by Adam from `restarts` random starts (vmapped); the best restart is returned.
    Every returned network is feasible for the infimum, so `value` is an **upper bound on e(l)**
    (not e(l) itself: the problem is non-convex). This network is the ξ* = (W1*, W2*, 0, 0, 0) of the
    proof of Theorem 11.

    **Arguments:**
    - `x` (N, n), `y`: data as for `objective`.
    - `l`: the number of units (≥ 1).
    - `kappa`: κ ≥ 0, weight of ‖W2‖₁.
    - `key`: PRNG key for the restarts.
    - `loss`: as for `objective`.
    - `d_y`: the output size; needed only for integer labels with softmax cross-entropy.
    - `steps`, `restarts`, `learning_rate`: the optimisation budget.

    **Returns:** `BestLTerm(net, value, restart_values)`.
    """
    kappa = check_kappa(kappa)
    if not isinstance(l, int) or l < 1:
        raise ValueError(f"l must be a positive integer; got {l!r}")
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"restarts must be a positive integer; got {restarts!r}")
    lossfn = get_loss(loss)
    if d_y is None:
        if y.ndim != 2:
            raise ValueError(f"d_y must be given when y has shape {tuple(y.shape)} (labels)")
        d_y = y.shape[1]
    n = x.shape[1] if x.ndim == 2 else None
    if n is None:
        raise ValueError(f"x must have shape (N, n); got {tuple(x.shape)}")
    check_data(TwoLayer(W1=jnp.zeros((l, n), x.dtype), W2=jnp.zeros((d_y, l), x.dtype)), x, y, loss)
    keys = jax.random.split(key, restarts)
    U, W2, values = _train_restarts(keys, x, y, kappa, lossfn, l, d_y, steps, learning_rate)
    best = int(jnp.argmin(jnp.where(jnp.isfinite(values), values, jnp.inf)))
    if not bool(jnp.isfinite(values[best])):
        raise FloatingPointError("every restart of best_l_term diverged; lower learning_rate")
    U = U[best]
    net = TwoLayer(W1=U / jnp.linalg.norm(U, axis=1, keepdims=True), W2=W2[best])
    value = objective(net, x, y, kappa=kappa, loss=loss)
    return BestLTerm(net, value, values)


@eqx.filter_jit
def _train_restarts(keys, x, y, kappa, lossfn, l, d_y, steps, learning_rate):
    n = x.shape[1]
    opt = optax.adam(learning_rate)

    def F(p):
        U, W2 = p
        W1 = U / jnp.linalg.norm(U, axis=1, keepdims=True)
        pred = relu(x @ W1.T) @ W2.T
        return jnp.mean(lossfn(pred, y)) + kappa * jnp.sum(jnp.abs(W2))

    def one(k):
        U = jax.random.normal(k, (l, n), x.dtype)
        # Start W2 at the ridge least-squares fit of a squared-error surrogate on the random
        # features: a much better start than zero for every convex loss we ship.
        H = relu(x @ (U / jnp.linalg.norm(U, axis=1, keepdims=True)).T)
        target = y if (y.ndim == 2 and lossfn is not softmax_cross_entropy) else jnp.zeros(
            (x.shape[0], d_y), x.dtype)
        G = H.T @ H + 1e-3 * x.shape[0] * jnp.eye(l, dtype=x.dtype)
        W2 = jnp.linalg.solve(G, H.T @ target).T
        p = (U, W2)

        def step(carry, _):
            p, s = carry
            v, g = jax.value_and_grad(F)(p)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), v

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p[0], p[1], F(p)

    return jax.vmap(one)(keys)
