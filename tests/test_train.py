"""fit (optax training on F) and best_l_term (the e(l) estimator of eqs. 5, 19)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxland as jl

DATA = jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=64, n=2, teacher_width=3, noise=0.0)


def test_fit_decreases_F_and_is_deterministic():
    net = jl.SkipNet.init(jax.random.PRNGKey(1), n=2, m=8, d_g=2, d_o=2, hidden=(2,))
    F0 = jl.objective(net, DATA.x, DATA.y, kappa=1e-3)
    r1 = jl.fit(net, DATA.x, DATA.y, kappa=1e-3, steps=200)
    r2 = jl.fit(net, DATA.x, DATA.y, kappa=1e-3, steps=200)
    chex.assert_shape(r1.history, (200,))
    # history[0] is F at the starting point (same float32 computation, a few ulps).
    np.testing.assert_allclose(r1.history[0], F0, rtol=1e-5)
    assert jl.objective(r1.net, DATA.x, DATA.y, kappa=1e-3) < 0.5 * F0
    chex.assert_trees_all_equal(r1.net, r2.net)  # deterministic: bit-identical


def test_fit_minibatch_depends_only_on_key():
    net = jl.TwoLayer.init(jax.random.PRNGKey(1), n=2, m=8)
    kw = dict(kappa=0.0, steps=50, batch_size=16, optimizer=optax.sgd(0.1))
    a = jl.fit(net, DATA.x, DATA.y, key=jax.random.PRNGKey(7), **kw)
    b = jl.fit(net, DATA.x, DATA.y, key=jax.random.PRNGKey(7), **kw)
    c = jl.fit(net, DATA.x, DATA.y, key=jax.random.PRNGKey(8), **kw)
    chex.assert_trees_all_equal(a.net, b.net)
    assert not np.allclose(a.net.W2, c.net.W2)


def test_fit_errors():
    net = jl.TwoLayer.init(jax.random.PRNGKey(1), n=2, m=4)
    with pytest.raises(ValueError, match="key is required"):
        jl.fit(net, DATA.x, DATA.y, kappa=0.0, batch_size=4)
    with pytest.raises(ValueError, match=r"batch_size must be an integer in \[1, 64\]"):
        jl.fit(net, DATA.x, DATA.y, kappa=0.0, batch_size=100, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        jl.fit(net, DATA.x, DATA.y, kappa=0.0, steps=0)
    with pytest.raises(FloatingPointError, match="non-finite"):
        jl.fit(net, DATA.x, DATA.y * 1e20, kappa=0.0, steps=20, optimizer=optax.sgd(1e3))


def test_best_l_term_recovers_a_teacher_of_width_l():
    r = jl.best_l_term(DATA.x, DATA.y, l=3, kappa=0.0, key=jax.random.PRNGKey(2), steps=600,
                       restarts=3)
    assert isinstance(r.net, jl.TwoLayer) and r.net.W1.shape == (3, 2)
    # unit rows up to float32 rounding
    np.testing.assert_allclose(jnp.linalg.norm(r.net.W1, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(r.value, jl.objective(r.net, DATA.x, DATA.y, kappa=0.0), rtol=1e-6)
    # The data is exactly a 3-unit network, so e(3) = 0 and the estimate must explain almost all of
    # the variance (5 % is loose for 600 Adam steps on a 2-D problem, tight enough to catch a
    # broken optimiser, which stays near var(y)).
    assert r.value < 0.05 * float(jnp.var(DATA.y))
    # the returned restart is the best one (recomputed in float32: 1e-5 relative + tiny absolute)
    assert r.value <= float(jnp.min(r.restart_values)) * (1 + 1e-5) + 1e-9


def test_best_l_term_value_includes_the_l1_penalty():
    r = jl.best_l_term(DATA.x, DATA.y, l=2, kappa=0.5, key=jax.random.PRNGKey(3), steps=100,
                       restarts=1)
    data_part = jl.data_loss(r.net, DATA.x, DATA.y)
    np.testing.assert_allclose(r.value, data_part + 0.5 * jnp.abs(r.net.W2).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="l must be a positive integer"):
        jl.best_l_term(DATA.x, DATA.y, l=0, kappa=0.0, key=jax.random.PRNGKey(0))
