"""Equinox models for the "any model" benchmarks (issue 15 §1), their data and PyTorch mirrors.

- ``mlp``: `eqx.nn.MLP(784, 10, width_size=256, depth=2, activation=jax.nn.relu)` (its activation is a
  function-valued leaf), N = 2048 digits-like images (uniform pixels in [0, 1), random labels 0–9);
- ``cnn``: `CNN`, Conv2d(1→16, 5×5, stride 2) → ReLU → Conv2d(16→32, 3×3, stride 2) → ReLU → Linear
  (800→10), the activation an `eqx.Module` field, on N = 2048 digits-like 28 × 28 images;
- ``digits_cnn`` (the GPU suite's plane): `DigitsCNN`, Conv2d(1→8, 3×3) → ReLU → Conv2d(8→16, 3×3) →
  ReLU → Linear(64→10) on 8 × 8 images (scikit-learn's digits when available, else digits-like).

The user's function is the mean softmax cross-entropy `cross_entropy(model, x, y)`; the PyTorch
mirrors (`torch_mirror`) copy the weights bit for bit, so both sides compute the same function up to
floating-point rounding. Only the benchmarks import this module.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class _ConvNet(eqx.Module):
    """Conv2d(1→c1, k1, stride s1) → act → Conv2d(c1→c2, k2, stride s2) → act → Linear(flat→10);
    `act` is a field (a function-valued leaf)."""

    conv1: eqx.nn.Conv2d
    conv2: eqx.nn.Conv2d
    fc: eqx.nn.Linear
    act: Callable

    def __init__(self, key, channels, kernels, strides, flat):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, channels[0], kernels[0], stride=strides[0], key=k1)
        self.conv2 = eqx.nn.Conv2d(channels[0], channels[1], kernels[1], stride=strides[1], key=k2)
        self.fc = eqx.nn.Linear(flat, 10, key=k3)
        self.act = jax.nn.relu

    def __call__(self, x):
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        return self.fc(h.reshape(-1))


class CNN(_ConvNet):
    """Conv2d(1→16, 5, stride 2) → act → Conv2d(16→32, 3, stride 2) → act → Linear(800→10) on
    (1, 28, 28) images (28 → 12 → 5)."""

    def __init__(self, key):
        super().__init__(key, (16, 32), (5, 3), (2, 2), 32 * 5 * 5)


class DigitsCNN(_ConvNet):
    """Conv2d(1→8, 3) → act → Conv2d(8→16, 3, stride 2) → act → Linear(64→10) on (1, 8, 8) images
    (8 → 6 → 2)."""

    def __init__(self, key):
        super().__init__(key, (8, 16), (3, 3), (1, 2), 16 * 2 * 2)


def mlp(key) -> eqx.nn.MLP:
    return eqx.nn.MLP(784, 10, 256, 2, activation=jax.nn.relu, key=key)


def digits_like(key, N: int, shape: tuple) -> tuple[jax.Array, jax.Array]:
    """N images of `shape` with uniform pixels in [0, 1) and random labels 0–9."""
    kx, ky = jax.random.split(key)
    return (jax.random.uniform(kx, (N, *shape), jnp.float32),
            jax.random.randint(ky, (N,), 0, 10).astype(jnp.int32))


def digits_images() -> tuple[jax.Array, jax.Array, str]:
    """scikit-learn's 8 × 8 digits as (1797, 1, 8, 8) images in [0, 1] and labels, or digits-like
    random data of the same shape when scikit-learn is missing; the third item names the source."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        x, y = digits_like(jax.random.key(7), 1797, (1, 8, 8))
        return x, y, "digits-like random (scikit-learn missing)"
    d = load_digits()
    x = jnp.asarray(d.data.reshape(-1, 1, 8, 8) / 16.0, jnp.float32)
    return x, jnp.asarray(d.target, jnp.int32), "scikit-learn digits"


def cross_entropy(model, x, y) -> jax.Array:
    """Mean softmax cross-entropy of `model` (one image -> logits) over the batch."""
    logits = jax.vmap(model)(x)
    return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def problem(name: str, seed: int = 0):
    """(a, b, x, y) for "mlp" or "cnn": two random models and their data."""
    ka, kb = jax.random.split(jax.random.key(seed))
    if name == "mlp":
        x, y = digits_like(jax.random.key(7), 2048, (784,))
        return mlp(ka), mlp(kb), x, y
    if name == "cnn":
        x, y = digits_like(jax.random.key(7), 2048, (1, 28, 28))
        return CNN(ka), CNN(kb), x, y
    raise ValueError(f"unknown problem {name!r}; expected 'mlp' or 'cnn'")


def torch_mirror(model):
    """The PyTorch `nn.Sequential` computing the same function as an `eqx.nn.MLP` (ReLU) or a `CNN`
    / `DigitsCNN`, with the same weights (copied)."""
    import torch
    from torch import nn

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float32, copy=True))

    if isinstance(model, eqx.nn.MLP):
        mods = []
        for i, layer in enumerate(model.layers):
            lin = nn.Linear(layer.in_features, layer.out_features)
            lin.weight.data, lin.bias.data = t(layer.weight), t(layer.bias)
            mods.append(lin)
            if i < len(model.layers) - 1:
                mods.append(nn.ReLU())
        return nn.Sequential(*mods)
    convs = []
    for c in (model.conv1, model.conv2):
        tc = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, stride=c.stride)
        tc.weight.data, tc.bias.data = t(c.weight), t(c.bias).reshape(-1)
        convs.append(tc)
    fc = nn.Linear(model.fc.in_features, model.fc.out_features)
    fc.weight.data, fc.bias.data = t(model.fc.weight), t(model.fc.bias)
    return nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), nn.Flatten(), fc)


def torch_cross_entropy(pred, y):
    import torch

    return torch.nn.functional.cross_entropy(pred, y)
