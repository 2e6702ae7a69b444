"""DigitsResNet (jaxland/model/_resnet.py): shapes, the twin without shortcuts has the same
parameters, what a block computes, the BatchNorm semantics of `batch_stats_loss`, the
parameter/state split and training."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from conftest import assert_refuses
from jaxland.model import ResidualBlock, train_digits_resnet
from jaxland.model._resnet import AXIS, _forward, _xent

make = eqx.nn.make_with_state(jl.DigitsResNet)


def _data(n=24, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.uniform(k1, (n, 1, 8, 8)), jax.random.randint(k2, (n,), 0, 10)


def _batched(model, state, x):
    return jax.vmap(model, axis_name=AXIS, in_axes=(0, None), out_axes=(0, None))(x, state)


@pytest.mark.parametrize("depth", [4, 8])
def test_shapes_and_depth(depth):
    model, state = make(depth=depth, width=4, key=jax.random.PRNGKey(0))
    assert model.depth == depth and len(model.blocks) == (depth - 2) // 2
    x, _ = _data()
    logits, _ = _batched(eqx.nn.inference_mode(model), state, x)
    chex.assert_shape(logits, (x.shape[0], 10))
    assert model.stem.weight.shape == (4, 1, 3, 3) and model.head.weight.shape == (10, 4)


def test_bad_depth_and_skip():
    for bad in (3, 5, 2, 0):
        with pytest.raises(ValueError, match=rf"depth must be an even integer 2B \+ 2.*got {bad!r}"):
            jl.DigitsResNet(depth=bad, key=jax.random.PRNGKey(0))
    for bad in (True, 8.0):
        assert_refuses(lambda: jl.DigitsResNet(depth=bad, key=jax.random.PRNGKey(0)), "depth",
                       ValueError, match=rf"depth must be an even integer 2B \+ 2.*got {bad!r}")
    assert_refuses(lambda: jl.DigitsResNet(depth=4, skip=1, key=jax.random.PRNGKey(0)), "skip",
                   TypeError, match="skip must be a bool")
    assert_refuses(lambda: jl.digits_images(jnp.ones((3, 8, 8))), "x", ValueError,
                   match=r"x must have shape \(N, 64\).*\(3, 8, 8\)")


def test_twin_has_the_same_parameters_and_differs_only_in_the_shortcuts():
    a, state = make(depth=8, width=4, skip=True, key=jax.random.PRNGKey(3))
    b, _ = make(depth=8, width=4, skip=False, key=jax.random.PRNGKey(3))
    pa, pb = jl.trainable(a)[0], jl.trainable(b)[0]
    la_, lb_ = jax.tree.leaves(pa), jax.tree.leaves(pb)
    # stem conv + its BN (weight, bias) + head (weight, bias); 3 blocks × (2 convs + 2 BNs × 2)
    assert len(la_) == len(lb_) == 5 + 3 * 6
    for u, v in zip(la_, lb_, strict=True):
        np.testing.assert_array_equal(u, v)  # the same arrays, bit for bit
    x, _ = _data()
    la, _ = _batched(a, state, x)
    lb, _ = _batched(b, state, x)
    assert float(jnp.max(jnp.abs(la - lb))) > 1e-3  # the shortcuts do change the function


def test_block_adds_the_identity_only_with_skip():
    """With the second convolution zero, BN's output is its shift (0 at initialisation), so the
    block returns relu(0 + h) = h for h ≥ 0 with the shortcut and relu(0) = 0 without (exact)."""
    block = ResidualBlock(3, key=jax.random.PRNGKey(0))
    block = eqx.tree_at(lambda b: b.conv2.weight, block, jnp.zeros_like(block.conv2.weight))
    state = eqx.nn.State(block)
    h = jax.nn.relu(jax.random.normal(jax.random.PRNGKey(1), (5, 3, 8, 8)))
    run = lambda skip: jax.vmap(lambda hi, st: block(hi, st, skip=skip), axis_name=AXIS,  # noqa: E731
                                in_axes=(0, None), out_axes=(0, None))(h, state)[0]
    np.testing.assert_array_equal(run(True), h)
    np.testing.assert_array_equal(run(False), jnp.zeros_like(h))


def test_batch_stats_loss_is_the_full_batch_training_mode_loss():
    """The statistics are recomputed at the parameters: equal to one training-mode pass over all of
    x (float32, the same arithmetic up to the order of reductions: 1e-5), and not to inference with
    the initial (never updated) statistics."""
    x, y = _data(32)
    model, state = make(depth=6, width=4, key=jax.random.PRNGKey(1))
    loss, acc = jl.batch_stats_loss(model, state, x, y)
    logits, _ = _forward(model, state, x, inference=False)
    np.testing.assert_allclose(loss, _xent(logits, y), rtol=1e-5)
    np.testing.assert_allclose(acc, jnp.mean(jnp.argmax(logits, -1) == y), rtol=0)
    one_pass = jl.model.full_batch_loss(model, state, x, y)
    np.testing.assert_allclose(one_pass[0], loss, rtol=1e-5)  # the same function, one pass
    np.testing.assert_allclose(one_pass[1], acc, rtol=0)
    stale, _ = _forward(model, state, x, inference=True)
    assert abs(float(_xent(stale, y)) - float(loss)) > 1e-4
    assert 0.0 <= float(acc) <= 1.0


def test_trainable_split_and_filter_normalised_directions():
    model, _ = make(depth=4, width=4, key=jax.random.PRNGKey(2))
    params, rest = jl.trainable(model)
    assert not [l for l in jax.tree.leaves(params, is_leaf=lambda l: isinstance(
        l, eqx.nn.StateIndex)) if isinstance(l, eqx.nn.StateIndex)]  # no state in the parameters
    n = sum(l.size for l in jax.tree.leaves(params))
    # stem 4·9 + 2 convs 4·4·9 + 3 BN × (4 + 4) + head 10·4 + 10
    assert n == 36 + 2 * 144 + 3 * 8 + 40 + 10
    chex.assert_trees_all_equal(eqx.combine(params, rest), model)
    u, = jl.filter_normalized_directions(params, 1, key=jax.random.PRNGKey(0))
    for bn in (u.stem_bn, u.blocks[0].bn1, u.blocks[0].bn2):  # BN's own parameters: left out
        assert float(jnp.abs(bn.weight).max()) == 0 and float(jnp.abs(bn.bias).max()) == 0
    assert float(jnp.abs(u.head.bias).max()) == 0
    for d, p in ((u.stem.weight, params.stem.weight), (u.blocks[0].conv1.weight,
                                                       params.blocks[0].conv1.weight)):
        nd = jnp.sqrt(jnp.sum(d**2, axis=(1, 2, 3)))
        npar = jnp.sqrt(jnp.sum(p**2, axis=(1, 2, 3)))
        np.testing.assert_allclose(nd, npar, rtol=1e-5)  # one filter's norm each (float32)


def test_training_lowers_the_loss():
    x, y = _data(32, seed=4)
    model, state = make(depth=4, width=4, key=jax.random.PRNGKey(5))
    before = float(jl.batch_stats_loss(model, state, x, y)[0])
    net, _, losses = train_digits_resnet(model, state, x, y, key=jax.random.PRNGKey(0), steps=40,
                                         batch_size=16, learning_rate=1e-2)
    chex.assert_shape(losses, (40,))
    after = float(jl.batch_stats_loss(net, state, x, y)[0])
    # 40 Adam steps on 32 random-label images: memorisation has started (a wide margin: 2.3 → <2)
    assert after < before - 0.2, (before, after)
