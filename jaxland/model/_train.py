"""Training a network on F(ξ) with an optax optimiser."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_kappa, check_key, check_positive_int
from ._losses import LossFn, get_loss
from ._objective import check_data
from ._regularizer import regularizer


class FitResult(NamedTuple):
    """What `fit` returns.

    - `net`: the trained network (same type and shapes as the input network).
    - `history`: F at the parameters *before* each step, shape (steps,); with mini-batches it is the
      mini-batch estimate of F.
    """

    net: Any
    history: Float[Array, " steps"]


def fit(
    net,
    x: Float[Array, "N n"],
    y: Array,
    *,
    kappa,
    loss: str | LossFn = "mse",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
) -> FitResult:
    """Minimise F(ξ) = mean L(f(x), y) + κR(ξ) (eq. 7) over the network's parameters.

    The whole loop is one `lax.scan` under `jit`, so the result is a deterministic function of the
    arguments (and of `key` for mini-batches).

    **Arguments:**
    - `net`: any jaxland model; every inexact-array leaf is trained.
    - `x`, `y`: the data, shapes as for `objective`.
    - `kappa`, `loss`: as for `objective`.
    - `optimizer`: an optax transformation (default `optax.adam(1e-2)`).
    - `steps`: number of updates (≥ 1).
    - `batch_size`: None for full batch; else each step uses `batch_size` samples drawn without
      replacement from `key`.
    - `key`: PRNG key, required with `batch_size`.

    **Returns:** `FitResult(net, history)`. Raises ``FloatingPointError`` if F becomes NaN or inf
    (lower the learning rate), rather than returning a broken network.
    """
    kappa = check_kappa(kappa)
    check_data(net, x, y, loss)
    steps = check_positive_int("steps", steps)
    N = x.shape[0]
    if batch_size is not None:
        bad = isinstance(batch_size, bool) or not isinstance(batch_size, int)
        if bad or not 1 <= batch_size <= N:
            raise ValueError(f"batch_size must be an integer in [1, {N}] (N = len(x)); got {batch_size!r}")
        if key is None:
            raise ValueError("key is required when batch_size is set (mini-batches are drawn from it)")
        check_key(key)
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    lossfn = get_loss(loss)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    keys = jax.random.split(key if key is not None else jax.random.PRNGKey(0), steps)
    history, params = _fit_loop(params, static, x, y, kappa, lossfn, optimizer, batch_size, keys)
    if not bool(jnp.all(jnp.isfinite(history))):
        bad = int(jnp.argmin(jnp.isfinite(history)))
        raise FloatingPointError(
            f"F became non-finite at step {bad} of fit; lower the learning rate or check the data"
        )
    return FitResult(eqx.combine(params, static), history)


@eqx.filter_jit
def _fit_loop(params, static, x, y, kappa, lossfn, optimizer, batch_size, keys):
    N = x.shape[0]

    def F(p, xb, yb):
        net = eqx.combine(p, static)
        return jnp.mean(lossfn(net(xb), yb)) + kappa * regularizer(net)

    def step(carry, k):
        p, state = carry
        if batch_size is None:
            xb, yb = x, y
        else:
            idx = jax.random.choice(k, N, (batch_size,), replace=False)
            xb, yb = x[idx], y[idx]
        val, g = jax.value_and_grad(F)(p, xb, yb)
        updates, state = optimizer.update(g, state, p)
        return (optax.apply_updates(p, updates), state), val

    (params, _), history = jax.lax.scan(step, (params, optimizer.init(params)), keys)
    return history, params
