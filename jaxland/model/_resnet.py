"""A residual CNN for scikit-learn's 8×8 digits and its twin without the identity shortcuts (the
networks of Li et al. 2018's Figure 1, "ResNet-56" vs "ResNet-56-noshort", at the digits' scale).

    x (1, 8, 8) ─ conv3×3 ─ BN ─ relu ─┬─ block_1 ─ … ─ block_B ─ global average pool ─ linear ─ logits
                                       │
    block:  h ─ conv3×3 ─ BN ─ relu ─ conv3×3 ─ BN ─(+ h if skip)─ relu

Depth counts the layers with weights, as He et al. and Li et al. do: depth = 2B + 2 (the stem, the
2B convolutions of the blocks and the head), so ResNet-20 has B = 9 blocks and ResNet-56 B = 27.
Every layer keeps the same `width` (channels) and the 8 × 8 resolution (no striding: the images
are already tiny). The twin without shortcuts (``skip=False``) computes relu(BN(conv(·))) in place
of relu(BN(conv(·)) + h) and has *exactly* the same parameters: the same key gives the same arrays
for both, so one set of weights can be evaluated either way.

**BatchNorm semantics.** Every convolution is followed by an `eqx.nn.BatchNorm` (mode "batch",
axis name "batch"); the convolutions have no bias (BN's shift plays that role). The network is a
function of its parameters and of the data it is evaluated on: *the loss at a parameter point is
the full-batch training-mode loss*, i.e. every BatchNorm normalises with the mean and biased
variance of its input over the whole evaluation set at that point. `batch_stats_loss` computes it
by re-estimating the statistics with `jaxland.recompute_batch_stats` at that point and evaluating in
inference mode (Garipov et al.'s `update_bn`, as Li et al. do for their surfaces); no running
average from training is ever used. `full_batch_loss` is the same function computed in one
training-mode pass over the whole set (cheaper; equal up to rounding). Training (`train_digits_resnet`) uses training mode on each
mini-batch (per-batch statistics), as usual.

**Parameters vs state.** `trainable(model)` splits a model into its parameters (the convolution
kernels, BatchNorm's weight and bias, the head's weight and bias) and the rest (the BatchNorm state
indices, which hold only the initial value of the statistics, and the activation-free structure).
Li et al.'s filter-normalised directions perturb the convolution kernels and the head's weight
(leaves with ≥ 2 axes) and leave every 1-D leaf (BatchNorm's weight and bias, the head's bias) at
zero: `jaxland.filter_normalized_directions(params, ignore_1d=True)` on these parameters does
exactly that.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._checks import check_key, check_positive_int

__all__ = ["DigitsResNet", "ResidualBlock", "batch_stats_loss", "digits_images", "full_batch_loss", "train_digits_resnet",
           "trainable"]

AXIS = "batch"


def _bn(width: int, dtype) -> eqx.nn.BatchNorm:
    return eqx.nn.BatchNorm(width, AXIS, mode="batch", dtype=dtype)


class ResidualBlock(eqx.Module):
    """Two 3×3 convolutions with BatchNorm: relu(BN(conv(relu(BN(conv(h))))) + h), or without
    the `+ h` when `skip` is False. Input and output (width, 8, 8)."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm

    def __init__(self, width: int, *, key: PRNGKeyArray, dtype=None):
        k1, k2 = jax.random.split(key)
        conv = lambda k: eqx.nn.Conv2d(width, width, 3, padding=1, use_bias=False, key=k,  # noqa: E731
                                       dtype=dtype)
        self.conv1, self.bn1 = conv(k1), _bn(width, dtype)
        self.conv2, self.bn2 = conv(k2), _bn(width, dtype)

    def __call__(self, h: Array, state: eqx.nn.State, *, skip: bool) -> tuple[Array, eqx.nn.State]:
        z, state = self.bn1(self.conv1(h), state)
        z, state = self.bn2(self.conv2(jax.nn.relu(z)), state)
        return jax.nn.relu(z + h if skip else z), state


class DigitsResNet(eqx.Module):
    """The residual CNN for 8×8 digits (module docstring), with or without identity shortcuts.

    Called on one sample under `jax.vmap(..., axis_name="batch")`, as equinox's BatchNorm
    requires: ``logits, state = jax.vmap(model, axis_name="batch", in_axes=(0, None),
    out_axes=(0, None))(x, state)`` with x of shape (N, 1, 8, 8). Build it with its state by
    ``model, state = eqx.nn.make_with_state(DigitsResNet)(depth=20, width=8, skip=True, key=key)``.

    **Arguments:**
    - `depth`: layers with weights, 2B + 2 for B ≥ 1 residual blocks (8, 20, 56, 110, …).
    - `width`: channels of every layer.
    - `skip`: True for the residual network, False for its twin without shortcuts (same parameters).
    - `num_classes`: outputs of the head (10 digits).
    - `key`: PRNG key of the initialisation (equinox's default: uniform ±1/√fan_in).
    """

    stem: eqx.nn.Conv2d
    stem_bn: eqx.nn.BatchNorm
    blocks: tuple[ResidualBlock, ...]
    head: eqx.nn.Linear
    skip: bool = eqx.field(static=True)

    def __init__(self, depth: int = 20, width: int = 8, *, skip: bool = True, num_classes: int = 10,
                 key: PRNGKeyArray, dtype=None):
        check_positive_int("width", width)
        check_positive_int("num_classes", num_classes)
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth % 2:
            raise ValueError(f"depth must be an even integer 2B + 2 with B ≥ 1 blocks (4, 8, 20, 56, "
                             f"…); got {depth!r}")
        if not isinstance(skip, bool):
            raise TypeError(f"skip must be a bool (True: with shortcuts); got {skip!r}")
        check_key(key)
        n_blocks = (depth - 2) // 2
        k_stem, k_head, *k_blocks = jax.random.split(key, n_blocks + 2)
        self.stem = eqx.nn.Conv2d(1, width, 3, padding=1, use_bias=False, key=k_stem, dtype=dtype)
        self.stem_bn = _bn(width, dtype)
        self.blocks = tuple(ResidualBlock(width, key=k, dtype=dtype) for k in k_blocks)
        self.head = eqx.nn.Linear(width, num_classes, key=k_head, dtype=dtype)
        self.skip = skip

    @property
    def depth(self) -> int:
        return 2 * len(self.blocks) + 2

    def __call__(self, x: Float[Array, "1 8 8"], state: eqx.nn.State, *, key=None
                 ) -> tuple[Float[Array, " num_classes"], eqx.nn.State]:
        h, state = self.stem_bn(self.stem(x), state)
        h = jax.nn.relu(h)
        for block in self.blocks:
            h, state = block(h, state, skip=self.skip)
        return self.head(jnp.mean(h, axis=(1, 2))), state


def digits_images(x: Float[Array, "N 64"]) -> Float[Array, "N 1 8 8"]:
    """The rows of `jaxland.data.digits().x` (N, 64) as one-channel images (N, 1, 8, 8)."""
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[1] != 64:
        raise ValueError(f"x must have shape (N, 64) (flattened 8×8 digits); got {x.shape}")
    return x.reshape(x.shape[0], 1, 8, 8)


def _no_state(leaf) -> bool:
    return isinstance(leaf, eqx.nn.StateIndex)


def trainable(model: PyTree) -> tuple[PyTree, PyTree]:
    """(params, rest) with ``eqx.combine(params, rest) == model``: params holds the floating-point
    arrays that are parameters (not the initial statistics inside BatchNorm's state indices)."""
    spec = jax.tree.map(lambda l: False if _no_state(l) else eqx.is_inexact_array(l), model,
                        is_leaf=_no_state)
    return eqx.partition(model, spec, is_leaf=_no_state)


def _forward(model, state, x, inference: bool):
    m = eqx.nn.inference_mode(model, inference)
    return jax.vmap(m, axis_name=AXIS, in_axes=(0, None), out_axes=(0, None))(x, state)


def _xent(logits, y):
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0])


def _check_xy(x, y) -> None:
    """x (N, 1, 8, 8) images and y (N,) integer labels, as the losses below take them."""
    if jnp.ndim(x) != 4 or tuple(jnp.shape(x)[1:]) != (1, 8, 8):
        raise ValueError(f"x must have shape (N, 1, 8, 8) (`digits_images`); got {jnp.shape(x)}")
    if jnp.shape(y) != (jnp.shape(x)[0],) or not jnp.issubdtype(jnp.asarray(y).dtype, jnp.integer):
        raise ValueError(f"y must be integer labels of shape ({jnp.shape(x)[0]},) to match x; got "
                         f"shape {jnp.shape(y)}, dtype {jnp.asarray(y).dtype}")


def batch_stats_loss(model: PyTree, state: eqx.nn.State, x: Float[Array, "N 1 8 8"],
                     y: Int[Array, " N"]) -> tuple[Array, Array]:
    """(softmax cross-entropy, accuracy) of `model` on (x, y), with every BatchNorm's statistics
    recomputed on x at these parameters (`jaxland.recompute_batch_stats`; the full-batch
    training-mode loss, module docstring). Pure and differentiable in the parameters (the
    statistics included), so its Hessian is the Hessian of the full-batch training-mode loss."""
    from ._batch_stats import recompute_batch_stats

    _check_xy(x, y)
    st = recompute_batch_stats(model, state, x, axis_name=AXIS)
    logits, _ = _forward(model, st, x, inference=True)
    acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(logits.dtype))
    return _xent(logits, y), acc


def full_batch_loss(model: PyTree, state: eqx.nn.State, x: Float[Array, "N 1 8 8"],
                    y: Int[Array, " N"]) -> tuple[Array, Array]:
    """The same function of the parameters as `batch_stats_loss`, computed in one training-mode
    pass over all of x (every BatchNorm normalises with the statistics of its input over x), which
    is the criterion `recompute_batch_stats` meets; about a third of its cost (it skips the
    separate statistics pass), so the experiments evaluate grids and Hessians with it and check it
    against `batch_stats_loss` at sample points."""
    _check_xy(x, y)
    logits, _ = _forward(model, state, x, inference=False)
    acc = jnp.mean((jnp.argmax(logits, -1) == y).astype(logits.dtype))
    return _xent(logits, y), acc


def train_digits_resnet(model: PyTree, state: eqx.nn.State, x: Float[Array, "N 1 8 8"],
                        y: Int[Array, " N"], *, key: PRNGKeyArray, steps: int = 1000,
                        batch_size: int = 128, learning_rate: float = 3e-3
                        ) -> tuple[PyTree, eqx.nn.State, Array]:
    """Adam with a cosine-decayed learning rate on mini-batches of (x, y), BatchNorm in training
    mode (per-batch statistics). Returns (model, state, per-step mini-batch losses (steps,)).

    The mini-batches are drawn without replacement within an epoch (a fresh permutation from `key`
    per epoch); one `lax.scan` over all steps (one compilation).
    """
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    check_key(key)
    _check_xy(x, y)
    N = x.shape[0]
    bs = min(batch_size, N)
    per_epoch = N // bs
    epochs = -(-steps // per_epoch)
    perms = jnp.stack([jax.random.permutation(k, N) for k in jax.random.split(key, epochs)])
    idx = perms[:, : per_epoch * bs].reshape(epochs * per_epoch, bs)[:steps]
    params, rest = trainable(model)
    params, state, losses = _train_run(params, rest, state, x, y, idx, float(learning_rate),
                                       int(steps))
    return eqx.combine(params, rest), state, losses


@eqx.filter_jit
def _train_run(params, rest, state, x, y, idx, learning_rate: float, steps: int):
    """The training loop of `train_digits_resnet`, compiled once per network structure (the
    learning rate and the number of steps are static)."""
    import optax

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    def loss(p, st, xb, yb):
        logits, st = _forward(eqx.combine(p, rest), st, xb, inference=False)
        return _xent(logits, yb), st

    def step(carry, ib):
        p, st, os = carry
        (l, st), g = jax.value_and_grad(loss, has_aux=True)(p, st, x[ib], y[ib])
        upd, os = opt.update(g, os, p)
        return (optax.apply_updates(p, upd), st, os), l

    (params, state, _), losses = jax.lax.scan(step, (params, state, opt.init(params)), idx)
    return params, state, losses
