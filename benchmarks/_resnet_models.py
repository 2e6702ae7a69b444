"""Small residual networks for the alignment tests and benchmarks: an equinox CNN with BatchNorm
(state) whose residual stream crosses the blocks and one 1 × 1 projection shortcut."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class Block(eqx.Module):
    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    short: eqx.nn.Conv2d | None

    def __init__(self, c_in, c_out, key, project=False):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, use_bias=False, key=k1)
        self.bn1 = eqx.nn.BatchNorm(c_out, "batch", inference=True, mode="ema")
        self.conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, use_bias=False, key=k2)
        self.bn2 = eqx.nn.BatchNorm(c_out, "batch", inference=True, mode="ema")
        self.short = eqx.nn.Conv2d(c_in, c_out, 1, key=k3) if project else None

    def __call__(self, x, state):
        h, state = self.bn1(self.conv1(x), state)
        h, state = self.bn2(self.conv2(jax.nn.relu(h)), state)
        s = x if self.short is None else self.short(x)
        return jax.nn.relu(h + s), state


class ResNet(eqx.Module):
    """stem conv → BN → ReLU, `blocks` residual blocks of `width` channels, one block to `width2`
    channels with a projection shortcut, global average pool, linear head; called on one sample as
    ``model(x, state) -> (logits, state)`` (x of shape (c_in, H, W))."""

    stem: eqx.nn.Conv2d
    bn: eqx.nn.BatchNorm
    blocks: list
    head: eqx.nn.Linear

    def __init__(self, key, width=8, width2=None, blocks=2, n_out=10, c_in=1):
        ks = jax.random.split(key, blocks + 3)
        width2 = width if width2 is None else width2
        self.stem = eqx.nn.Conv2d(c_in, width, 3, padding=1, key=ks[0])
        self.bn = eqx.nn.BatchNorm(width, "batch", inference=True, mode="ema")
        self.blocks = [Block(width, width, ks[1 + i]) for i in range(blocks)] + \
            [Block(width, width2, ks[blocks + 1], project=True)]
        self.head = eqx.nn.Linear(width2, n_out, key=ks[-1])

    def __call__(self, x, state):
        h, state = self.bn(self.stem(x), state)
        h = jax.nn.relu(h)
        for b in self.blocks:
            h, state = b(h, state)
        return self.head(jnp.mean(h, axis=(1, 2))), state


def make(key, dtype=jnp.float32, **kw):
    """(model, state): `ResNet(key, **kw)` with every 1-D float leaf (BatchNorm scales, shifts,
    running means and variances, the head's bias) drawn from N(1, 0.5²), variances made positive,
    so that a permutation that misses any of them changes the function; leaves cast to `dtype`."""
    model, state = eqx.nn.make_with_state(ResNet)(key, **kw)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    leaves, tdef = jax.tree_util.tree_flatten((model, state))
    leaves = [(jnp.asarray(1 + 0.5 * rng.standard_normal(l.shape), dtype) if l.ndim == 1
               else l.astype(dtype)) if eqx.is_inexact_array(l) else l for l in leaves]
    model, state = jax.tree_util.tree_unflatten(tdef, leaves)
    return model, _positive_vars(model, state)


def _positive_vars(model, state):
    for bn in [l for l in jax.tree_util.tree_leaves(model, is_leaf=lambda m: isinstance(
            m, eqx.nn.BatchNorm)) if isinstance(l, eqx.nn.BatchNorm)]:
        m, v = state.get(bn.ema_state_index)
        state = state.set(bn.ema_state_index, (m, jnp.abs(v) + 0.1))
    return state


def apply(ms, x):
    """Logits of a batch x (N, C, H, W) for ms = (model, state), BatchNorm in inference mode."""
    model, state = ms
    return jax.vmap(lambda s: model(s, state)[0], axis_name="batch")(x)
