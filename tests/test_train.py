"""fit (optax training on F) and best_l_term (the e(l) estimator of eqs. 5, 19)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_refuses

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


# fit(..., checkpoint_every=k): checkpoints recorded from the scan (issue 13, §2) ----------------


def test_fit_checkpoints_are_the_networks_at_steps_0_k_2k_and_the_end():
    net = jl.TwoLayer.init(jax.random.PRNGKey(1), n=2, m=6)
    kw = dict(kappa=1e-3, optimizer=optax.adam(1e-2))
    r = jl.fit(net, DATA.x, DATA.y, steps=10, checkpoint_every=4, **kw)  # steps 0, 4, 8, 10
    plain = jl.fit(net, DATA.x, DATA.y, steps=10, **kw)
    assert plain.checkpoints is None
    assert len(r.checkpoints) == 4 and all(type(c) is type(net) for c in r.checkpoints)
    chex.assert_trees_all_equal(r.checkpoints[0], net)
    chex.assert_trees_all_equal(r.checkpoints[-1], r.net)
    chex.assert_shape(r.history, (10,))
    # The nested scans run the same steps; XLA may fuse them differently, so allow float32
    # rounding (a few ulps per step, over ≤ 10 Adam steps of size 1e-2).
    chex.assert_trees_all_close(r.net, plain.net, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.history, plain.history, rtol=1e-5)
    prefix = jl.fit(net, DATA.x, DATA.y, steps=4, **kw).net  # full batch: a deterministic prefix
    chex.assert_trees_all_close(r.checkpoints[1], prefix, rtol=1e-5, atol=1e-6)
    # k dividing steps: the last chunk's end is the end (not recorded twice)
    assert len(jl.fit(net, DATA.x, DATA.y, steps=8, checkpoint_every=4, **kw).checkpoints) == 3
    # what the checkpoints are for: the trajectory's principal directions, θ_T at the origin
    t = jl.trajectory_directions(r.checkpoints, num=2)
    chex.assert_shape(t.coordinates, (4, 2))
    np.testing.assert_array_equal(t.coordinates[-1], 0.0)


def test_fit_checkpoints_with_minibatches_follow_the_same_keys():
    net = jl.TwoLayer.init(jax.random.PRNGKey(1), n=2, m=6)
    kw = dict(kappa=1e-3, steps=6, batch_size=8, key=jax.random.PRNGKey(3))
    r = jl.fit(net, DATA.x, DATA.y, checkpoint_every=3, **kw)
    plain = jl.fit(net, DATA.x, DATA.y, **kw)
    chex.assert_trees_all_close(r.net, plain.net, rtol=1e-5, atol=1e-6)  # as above
    np.testing.assert_allclose(r.history, plain.history, rtol=1e-5)


def test_fit_checkpoint_every_errors():
    net = jl.TwoLayer.init(jax.random.PRNGKey(1), n=2, m=4)
    for bad in (0, -1, 11, 2.0, True):
        assert_refuses(
            lambda: jl.fit(net, DATA.x, DATA.y, kappa=0.0, steps=10, checkpoint_every=bad),
            "checkpoint_every", ValueError,
            match=r"checkpoint_every must be None or an integer in \[1, 10\]")
