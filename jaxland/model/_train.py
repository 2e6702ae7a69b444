"""Training a network on F(ξ) with an optax optimiser."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

from .._checks import check_kappa, check_key, check_positive_int
from .._params import num_stacked, tree_index
from ._losses import LossFn, get_loss
from ._objective import check_data
from ._regularizer import regularizer


class FitResult(NamedTuple):
    """What `fit` returns.

    - `net`: the trained network (same type and shapes as the input network).
    - `history`: F at the parameters *before* each step, shape (steps,); with mini-batches it is the
      mini-batch estimate of F.
    - `checkpoints`: with `checkpoint_every=k`, the list of networks after steps 0 (the initial
      network), k, 2k, … and after the last step (appended when `steps` is not a multiple of k),
      so `checkpoints[-1]` is `net`, ready for `trajectory_directions(checkpoints)` (Li et al.
      2018, §7); None otherwise.
    """

    net: Any
    history: Float[Array, " steps"]
    checkpoints: list | None = None


def fit(
    net,
    x: Real[ArrayLike, "N n"],
    y: Real[ArrayLike, "N ..."],
    *,
    kappa,
    loss: str | LossFn = "mse",
    optimizer: optax.GradientTransformation | None = None,
    steps: int = 1000,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    checkpoint_every: int | None = None,
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
    - `checkpoint_every`: None, or k in [1, steps]: also return the network every k steps (the
      scan is split into a scan over chunks of k steps, whose outputs are the stacked parameters,
      so memory grows by one parameter copy per checkpoint, not per step).

    **Returns:** `FitResult(net, history, checkpoints)`. Raises ``FloatingPointError`` if F becomes
    NaN or inf (lower the learning rate), rather than returning a broken network.
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
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int)
        or not 1 <= checkpoint_every <= steps
    ):
        raise ValueError(
            f"checkpoint_every must be None or an integer in [1, {steps}] (steps); "
            f"got {checkpoint_every!r}"
        )
    optimizer = optax.adam(1e-2) if optimizer is None else optimizer
    lossfn = get_loss(loss)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    keys = jax.random.split(key if key is not None else jax.random.PRNGKey(0), steps)
    history, params, stacked = _fit_loop(
        params, static, x, y, kappa, lossfn, optimizer, batch_size, keys, checkpoint_every
    )
    if not bool(jnp.all(jnp.isfinite(history))):
        bad = int(jnp.argmin(jnp.isfinite(history)))
        raise FloatingPointError(
            f"F became non-finite at step {bad} of fit; lower the learning rate or check the data"
        )
    checkpoints = None
    if stacked is not None:
        count = num_stacked(stacked, "checkpoints")
        checkpoints = [eqx.combine(tree_index(stacked, i), static) for i in range(count)]
    return FitResult(eqx.combine(params, static), history, checkpoints)


@eqx.filter_jit
def _fit_loop(
    params, static, x, y, kappa, lossfn, optimizer, batch_size, keys, checkpoint_every=None
):
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

    carry = (params, optimizer.init(params))
    if checkpoint_every is None:
        (params, _), history = jax.lax.scan(step, carry, keys)
        return history, params, None

    # A scan over chunks of k steps, each an inner scan; the outer scan's outputs are the parameters
    # after each chunk, stacked on a leading axis. The remaining steps % k steps run after it.
    k = checkpoint_every
    n_chunks, rem = divmod(keys.shape[0], k)

    def chunk(carry, chunk_keys):
        carry, hist = jax.lax.scan(step, carry, chunk_keys)
        return carry, (hist, carry[0])

    chunk_keys = keys[: n_chunks * k].reshape((n_chunks, k) + keys.shape[1:])
    carry, (history, saved) = jax.lax.scan(chunk, carry, chunk_keys)
    history = history.reshape(-1)
    pieces = [jax.tree.map(lambda a: a[None], params), saved]
    if rem:
        carry, tail = jax.lax.scan(step, carry, keys[n_chunks * k :])
        history = jnp.concatenate([history, tail])
        pieces.append(jax.tree.map(lambda a: a[None], carry[0]))
    stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *pieces)
    return history, carry[0], stacked
