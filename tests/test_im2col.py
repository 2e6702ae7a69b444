"""The im2col rewrite of convolutions (jaxland/engine/_im2col.py, issue 20 §3): the same values as
`lax.conv_general_dilated` for every layout, stride, padding and kernel dilation it covers, under
vmap over weights (the points of a path) too, and through the jaxpr evaluator."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

import jaxland
from jaxland.engine import _im2col


@pytest.fixture(autouse=True)
def _x64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


LAYOUTS = {1: [("NCH", "OIH", "NCH"), ("NHC", "HIO", "NHC")],
           2: [("NCHW", "OIHW", "NCHW"), ("NHWC", "HWIO", "NHWC"), ("NCHW", "HWIO", "NHWC")]}


@st.composite
def convs(draw):
    nd = draw(st.sampled_from([1, 2]))
    spec = draw(st.sampled_from(LAYOUTS[nd]))
    B, C, F = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    K = [draw(st.integers(1, 4)) for _ in range(nd)]
    dil = [draw(st.integers(1, 2)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    S = [draw(st.integers((k - 1) * d + 1, 9)) for k, d in zip(K, dil)]
    padding = draw(st.sampled_from(["VALID", "SAME", "explicit"]))
    if padding == "explicit":
        padding = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd)]
    return nd, spec, B, C, F, K, dil, strides, S, padding


def _arrays(nd, spec, B, C, F, K, S, seed):
    rng = np.random.default_rng(seed)
    lhs_canon = rng.standard_normal((B, C, *S))
    rhs_canon = rng.standard_normal((F, C, *K))
    dn = lax.conv_dimension_numbers(lhs_canon.shape, rhs_canon.shape, spec)
    # lay the canonical arrays out as the spec says
    lhs = np.transpose(lhs_canon, np.argsort(dn.lhs_spec))
    rhs = np.transpose(rhs_canon, np.argsort(dn.rhs_spec))
    return jnp.asarray(lhs), jnp.asarray(rhs)


@settings(max_examples=25)
@given(convs(), st.integers(0, 2**31 - 1))
def test_conv_as_gemm_equals_lax_conv(case, seed):
    nd, spec, B, C, F, K, dil, strides, S, padding = case
    lhs, rhs = _arrays(nd, spec, B, C, F, K, S, seed)
    want = lax.conv_general_dilated(lhs, rhs, strides, padding, rhs_dilation=dil,
                                    dimension_numbers=spec)
    closed = jax.make_jaxpr(lambda a, b: lax.conv_general_dilated(
        a, b, strides, padding, rhs_dilation=dil, dimension_numbers=spec))(lhs, rhs)
    eqn = next(e for e in closed.jaxpr.eqns if e.primitive.name == "conv_general_dilated")
    got = _im2col.conv_as_gemm(lhs, rhs, **eqn.params)
    chex.assert_shape(got, want.shape)
    # float64, sums of ≤ 4·16 products of O(1) normals reordered: 1e-12 is ~1e4 ulps of the values
    chex.assert_trees_all_close(got, want, rtol=1e-12, atol=1e-12)


def test_vmap_over_weights_is_a_gemm_and_equal():
    """Under vmap over the weights only (the points of a path, the input shared), the rewrite
    leaves no convolution in the program, and equals the vmapped lax convolution."""
    lhs, _ = _arrays(2, LAYOUTS[2][0], 3, 2, 4, [3, 3], [8, 8], 0)
    rhs = jnp.asarray(np.random.default_rng(1).standard_normal((5, 4, 2, 3, 3)))
    params = dict(window_strides=(2, 2), padding=((0, 0), (0, 0)), lhs_dilation=(1, 1),
                  rhs_dilation=(1, 1),
                  dimension_numbers=lax.conv_dimension_numbers(lhs.shape, rhs.shape[1:],
                                                               LAYOUTS[2][0]))
    f = jax.vmap(lambda w: _im2col.conv_as_gemm(lhs, w, **params))
    g = jax.vmap(lambda w: lax.conv_general_dilated(lhs, w, (2, 2), "VALID",
                                                    dimension_numbers=LAYOUTS[2][0]))
    chex.assert_trees_all_close(jax.jit(f)(rhs), g(rhs), rtol=1e-12, atol=1e-12)
    assert "conv_general_dilated" not in str(jax.make_jaxpr(f)(rhs))


def test_refuses_what_it_does_not_cover():
    lhs = jnp.ones((1, 4, 6, 6))
    rhs = jnp.ones((4, 2, 3, 3))
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NCHW", "OIHW", "NCHW"))
    with pytest.raises(ValueError, match="feature_group_count"):
        _im2col.conv_as_gemm(lhs, rhs, window_strides=(1, 1), padding=((0, 0), (0, 0)),
                             dimension_numbers=dn, feature_group_count=2)
    assert not _im2col.rewritable(dict(feature_group_count=2))
    assert not _im2col.rewritable(dict(lhs_dilation=(2, 1)))


class _CNN(eqx.Module):
    c1: eqx.nn.Conv2d
    c2: eqx.nn.Conv2d
    fc: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.c1 = eqx.nn.Conv2d(1, 4, 3, stride=2, key=k1)
        self.c2 = eqx.nn.Conv2d(4, 6, 3, padding=1, key=k2)
        self.fc = eqx.nn.Linear(6 * 4 * 4, 3, key=k3)

    def __call__(self, x):
        h = jax.nn.relu(self.c1(x))
        h = jax.nn.relu(self.c2(h))
        return self.fc(h.reshape(-1))


def _cnn_problem(dtype):
    a = jax.tree.map(lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v,
                     _CNN(jax.random.key(0)))
    b = jax.tree.map(lambda v: v.astype(dtype) if eqx.is_inexact_array(v) else v,
                     _CNN(jax.random.key(1)))
    x = jax.random.normal(jax.random.key(2), (16, 1, 9, 9), dtype)
    y = jax.random.randint(jax.random.key(3), (16,), 0, 3)

    def loss(net):
        logits = jax.vmap(net)(x)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])

    return a, b, loss


def test_eval_jaxpr_rewrites_nested_convolutions():
    a, _, loss = _cnn_problem(jnp.float64)
    closed = jax.make_jaxpr(jax.jit(loss))(a)
    leaves = jax.tree.leaves(a)
    flat = jax.make_jaxpr(lambda *lv: loss(jax.tree.unflatten(jax.tree.structure(a), lv)))(*leaves)
    assert _im2col.has_rewritable_conv(closed.jaxpr)       # the conv sits inside a pjit
    got = _im2col.eval_jaxpr(flat.jaxpr, flat.consts, *leaves)[0]
    rewritten = jax.make_jaxpr(lambda *lv: _im2col.eval_jaxpr(flat.jaxpr, flat.consts, *lv))(*leaves)
    assert "conv_general_dilated" not in str(rewritten)
    np.testing.assert_allclose(float(got), float(loss(a)), rtol=1e-12)


@pytest.mark.parametrize("conv", ["gemm", "native"])
def test_evaluate_path_of_a_cnn_either_way(conv):
    """evaluate_path of a CNN gives the per-point values with the rewrite on (the CPU default) and
    off; float64, so the two agree to rounding (1e-10 relative: a few hundred ulps of sums over
    ≤ 100 products)."""
    a, b, loss = _cnn_problem(jnp.float64)
    path = jaxland.paths.linear(a, b)
    ts = jnp.linspace(0.0, 1.0, 7)
    got = jaxland.evaluate_path(loss, path, ts, conv=conv)
    want = jnp.stack([loss(path(t)) for t in ts])
    chex.assert_shape(got, (7,))
    chex.assert_trees_all_close(got, want, rtol=1e-10)


def test_evaluate_path_conv_argument_checked():
    a, b, loss = _cnn_problem(jnp.float32)
    with pytest.raises(ValueError, match="conv"):
        jaxland.evaluate_path(loss, jaxland.paths.linear(a, b), jnp.linspace(0, 1, 3), conv="fft")
