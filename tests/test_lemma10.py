"""Tests for Lemma 10 and its sharper bounds (jaxland/construct/_lemma10.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses
from hypothesis import given, settings, strategies as st

import jaxland
from jaxland.construct._lemma10 import second_moment_norm

N, D = 64, 4  # one shape: values vary between examples
_lemma10_jit = jax.jit(jaxland.lemma10)


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(1e-3, 3.0), st.floats(0.0, 2.0))
def test_lemma10_bound_chain(seed, angle, shift):
    rng = np.random.default_rng(seed)
    # data not centred (shift) and anisotropic, so Σ_x is the uncentred second moment
    x = rng.normal(size=(N, D)) * np.array([1.0, 0.5, 2.0, 0.1]) + shift
    w1 = rng.normal(size=D)
    w1 /= np.linalg.norm(w1)
    p = rng.normal(size=D)
    p -= (p @ w1) * w1
    p /= np.linalg.norm(p)
    w2 = np.cos(angle) * w1 + np.sin(angle) * p  # unit vector at the drawn angle
    with jax.enable_x64(True):
        r = _lemma10_jit(jnp.asarray(w1), jnp.asarray(w2), jnp.asarray(x))
        assert float(r.alpha) == pytest.approx(angle, rel=1e-9)
        vals = [float(v) for v in (r.gap, r.quadratic_bound, r.chordal_bound, r.sharp_bound,
                                   r.paper_bound)]
        # gap ≤ quadratic ≤ chordal ≤ sharp ≤ paper, each up to float64 rounding (1e-12 relative)
        for lo, hi in zip(vals, vals[1:], strict=False):
            assert lo <= hi * (1 + 1e-12) + 1e-15
        # exact identity: chordal bound = 2(1 − cos α)‖Σ_x‖
        assert vals[2] == pytest.approx(2 * (1 - np.cos(angle)) * float(r.sigma_norm), rel=1e-9)


def test_second_moment_norm_and_vmap():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(0), (N, D)) + 1.0
        sig = np.linalg.eigvalsh(np.asarray(x).T @ np.asarray(x) / N)[-1]
        assert float(second_moment_norm(x)) == pytest.approx(sig, rel=1e-12)
        W = jax.random.normal(jax.random.PRNGKey(1), (5, D))
        W = W / jnp.linalg.norm(W, axis=1, keepdims=True)
        out = jax.jit(jax.vmap(jaxland.lemma10, in_axes=(0, 0, None)))(W, W[::-1], x)
        chex.assert_shape(out.gap, (5,))
        assert np.all(np.asarray(out.gap) <= np.asarray(out.paper_bound) + 1e-12)


def test_lemma10_bad_input():
    x = jnp.ones((10, 3))
    w = jnp.array([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="unit norm"):
        jaxland.lemma10(2 * w, w, x)
    assert_refuses(lambda: jaxland.lemma10(w, jnp.array([1.0, 0.0]), x), "w2", ValueError,
                   match="w2 has 2 entries")
    assert_refuses(lambda: jaxland.lemma10(jnp.ones((1, 3)), w, x), "w1", ValueError,
                   match="w1 must be a vector")
    assert_refuses(lambda: second_moment_norm(jnp.ones(3)), "x", ValueError,
                   match="x must have shape")
