"""PyTorch mirror of `jaxland.SkipNet` for the peer benchmarks (`bench_paths.py`).

The network is f1(x) = W2[σ(W1 x) + V1 g(θ, V2 σ(W1 x))] (eq. 3 of the paper) with the JAX convention
``x @ W.T`` for every layer: W1 (m, n), W2 (d_y, m), V1 (m, d_o), V2 (d_g, m), θ_1 (h_1, d_g) … θ_k
(d_o, h_{k−1}). `TorchSkipNet.from_jax` copies the weights of a `jaxland.SkipNet` bit for bit, so the
PyTorch and JAX networks compute the same function up to floating-point rounding.

This module is imported only by the benchmarks (PyTorch is the optional ``bench`` extra).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TorchSkipNet", "mse_mean", "interpolated_params", "VmapPathEvaluator"]


class TorchSkipNet(nn.Module):
    """f1(x) = W2[σ(W1 x) + V1 g(θ, V2 σ(W1 x))] on a batch x of shape (N, n) → (N, d_y)."""

    def __init__(self, W1, W2, V1, V2, theta):
        super().__init__()
        self.W1 = nn.Parameter(torch.as_tensor(W1))
        self.W2 = nn.Parameter(torch.as_tensor(W2))
        self.V1 = nn.Parameter(torch.as_tensor(V1))
        self.V2 = nn.Parameter(torch.as_tensor(V2))
        self.theta = nn.ParameterList([nn.Parameter(torch.as_tensor(t)) for t in theta])

    @classmethod
    def from_jax(cls, net) -> TorchSkipNet:
        """The same weights as the `jaxland.SkipNet` ``net`` (copied through NumPy)."""

        def cp(a):
            return torch.from_numpy(np.array(a, copy=True))

        return cls(cp(net.W1), cp(net.W2), cp(net.V1), cp(net.V2), [cp(t) for t in net.theta])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(F.linear(x, self.W1))  # σ(W1 x), (N, m)
        g = F.linear(h, self.V2)  # V2 h, (N, d_g)
        for i, t in enumerate(self.theta):  # g(θ, ·): θ_k σ(… σ(θ_1 z))
            if i > 0:
                g = F.relu(g)
            g = F.linear(g, t)
        return F.linear(h + F.linear(g, self.V1), self.W2)  # W2[h + V1 g], (N, d_y)


def mse_mean(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The "mse" objective of jaxland: mean over samples of ‖f(x) − y‖² (sum over outputs)."""
    return ((pred - y) ** 2).sum(dim=-1).mean(dim=-1)


def interpolated_params(start: dict, end: dict, ts: torch.Tensor) -> dict:
    """Stacked parameters (1 − t) a + t b for each t in ts: every leaf gets a leading axis len(ts)."""
    out = {}
    for k, a in start.items():
        b = end[k]
        t = ts.reshape((-1,) + (1,) * a.ndim)
        out[k] = (1 - t) * a + t * b
    return out


class VmapPathEvaluator:
    """F along a straight segment with `torch.func.vmap` over stacked parameters, in chunks.

    The peer-style "batched" PyTorch baseline: for each chunk of path points the parameters
    (1 − t) a + t b are stacked and `torch.func.functional_call` is vmapped over them, so one chunk
    is a handful of batched matrix products. ``chunk`` bounds the activation memory
    (about chunk · N · m · 4 bytes per activation of the first layer).
    """

    def __init__(self, model_start: nn.Module, model_end: nn.Module, x, y, *, chunk: int = 16):
        self.model = model_start
        self.start = {k: v.detach() for k, v in model_start.named_parameters()}
        self.end = {k: v.detach() for k, v in model_end.named_parameters()}
        self.x, self.y, self.chunk = x, y, int(chunk)

        def point(params):
            return mse_mean(torch.func.functional_call(self.model, params, (self.x,)), self.y)

        self._batched = torch.func.vmap(point)

    @torch.no_grad()
    def __call__(self, ts: torch.Tensor) -> torch.Tensor:
        vals = []
        for i in range(0, ts.shape[0], self.chunk):
            params = interpolated_params(self.start, self.end, ts[i : i + self.chunk])
            vals.append(self._batched(params))
        return torch.cat(vals)


def mlp_from_arrays(weights: list, biases: list) -> nn.Sequential:
    """Linear → ReLU → … → Linear with the given (out, in) weights and (out,) biases (an
    `eqx.nn.MLP` with ReLU, exported by `_sides_jax.prepare`)."""
    mods = []
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.weight.data = torch.from_numpy(np.array(w, np.float32))
        lin.bias.data = torch.from_numpy(np.array(b, np.float32).reshape(-1))
        mods.append(lin)
        if i < len(weights) - 1:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def cnn_from_arrays(convs: list, strides: list, fc: tuple) -> nn.Sequential:
    """Conv2d → ReLU → Conv2d → ReLU → Flatten → Linear with the given weights (the equinox
    `_eqx_models.CNN` / `DigitsCNN`, exported by `_sides_jax.prepare`); ``convs`` holds (weight
    (out, in, kh, kw), bias) pairs."""
    mods = []
    for (w, b), s in zip(convs, strides, strict=True):
        c = nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), stride=int(s))
        c.weight.data = torch.from_numpy(np.array(w, np.float32))
        c.bias.data = torch.from_numpy(np.array(b, np.float32).reshape(-1))
        mods += [c, nn.ReLU()]
    lin = nn.Linear(fc[0].shape[1], fc[0].shape[0])
    lin.weight.data = torch.from_numpy(np.array(fc[0], np.float32))
    lin.bias.data = torch.from_numpy(np.array(fc[1], np.float32).reshape(-1))
    return nn.Sequential(*mods, nn.Flatten(), lin)
