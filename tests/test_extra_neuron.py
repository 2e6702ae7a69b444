"""The extra neuron of Liang et al. (2018) and the unit-free version of Sohl-Dickstein & Kawaguchi
(jaxland/theory/_extra_neuron.py)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses

import jaxland as jl
from jaxland.theory._extra_neuron import demo_problem

DEMO = jl.extra_neuron_demo(key=jax.random.PRNGKey(0), steps=1500)


def test_demo_plain_training_is_stuck_at_a_bad_local_minimum():
    x, y, start = demo_problem()
    hinge = jl.polynomial_hinge(3)
    L0 = float(jnp.mean(hinge(start(x), y)))
    np.testing.assert_allclose(L0, 0.5)  # the three negatives have loss ℓ(0) = 1 each
    assert float(DEMO.plain_grad_norm) == 0.0
    # zero gradient: Adam never moves, the history is constant at ½ > 0 = min L
    np.testing.assert_allclose(DEMO.plain, 0.5)
    # local minimality, sampled: no perturbation of size ≤ 0.05 lowers L (the dead unit stays dead,
    # the live unit's margin on the positives is exactly 1)
    for k in range(20):
        d = jax.tree.map(
            lambda a, k=k: 0.05 * jax.random.uniform(jax.random.PRNGKey(k), a.shape, a.dtype, -1, 1),
            start,
        )
        moved = jax.tree.map(jnp.add, start, d)
        assert float(jnp.mean(hinge(moved(x), y))) >= L0 - 1e-7  # float32 rounding


def test_demo_extra_neuron_escapes():
    # Liang et al.: from (θ0, a = 0) the augmented objective keeps decreasing far below ½ and f̃
    # classifies every point (λ = 1e-3; after 1500 Adam steps L̃ < 1e-2 is a wide margin: the
    # measured value is ~1e-4).
    assert float(DEMO.augmented[0]) == pytest.approx(0.5)
    assert float(DEMO.augmented[-1]) < 1e-2
    assert int(DEMO.augmented_errors) == 0
    assert float(DEMO.augmented_data_loss) < 1e-2
    # the extra neuron is what moved first: at a = 0 its gradient is non-zero
    x, y, start = demo_problem()
    aug0 = jl.ExtraNeuron.wrap(start, key=jax.random.PRNGKey(0))
    ga = jax.grad(lambda n: jl.extra_neuron_objective(n, x, y, lam=1e-3))(aug0).a
    assert float(jnp.abs(ga).max()) > 0.1


def test_demo_unit_free_moves_the_minimum_to_infinity():
    # Sohl-Dickstein & Kawaguchi: L(θ) stays at ½ (θ's gradient is a multiple of ∇L(θ0) = 0),
    # L̃ ≥ L(θ0) = ½ always, and a·e^b → 1 with b growing.
    x, y, start = demo_problem()
    chex.assert_trees_all_equal(DEMO.unit_free_net.model, start)
    assert float(DEMO.unit_free[-1]) >= 0.5 - 1e-6
    assert float(DEMO.unit_free[0]) == pytest.approx(1.0)  # L(1 + (0 − 1)²) at a = b = 0
    uf = DEMO.unit_free_net
    assert float(uf.b) > 0.3
    np.testing.assert_allclose(float(uf.a * jnp.exp(uf.b)), 1.0, atol=0.05)


def test_wrappers_match_their_formulas():
    with jax.enable_x64(True):
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
        net = jl.TwoLayer.init(k1, n=3, m=4, dtype=jnp.float64)
        x = jax.random.normal(k2, (10, 3), jnp.float64)
        y = jnp.where(jax.random.normal(k3, (10, 1), jnp.float64) > 0, 1.0, -1.0)
        aug = jl.ExtraNeuron.wrap(net, key=k1)
        chex.assert_trees_all_equal(aug(x), net(x))  # a = 0: f̃ = f exactly
        aug = jl.ExtraNeuron(net, jnp.array([0.7]), aug.w, jnp.array(-0.2))
        ft = net(x) + 0.7 * jnp.exp(x @ aug.w - 0.2)[:, None]
        np.testing.assert_allclose(aug(x), ft, rtol=1e-14)
        hinge = np.maximum(1 - np.asarray(y * ft), 0) ** 3
        np.testing.assert_allclose(
            jl.extra_neuron_objective(aug, x, y, lam=0.3), hinge.mean() + 0.3 * 0.49, rtol=1e-12
        )
        uf = jl.UnitFree(net, jnp.array(0.5), jnp.array(0.1))
        L = np.mean(np.maximum(1 - np.asarray(y * net(x)), 0) ** 3)
        np.testing.assert_allclose(
            jl.unit_free_objective(uf, x, y, lam=0.3),
            L * (1 + (0.5 * np.exp(0.1) - 1) ** 2) + 0.3 * 0.25,
            rtol=1e-12,
        )
        # other convex losses are accepted by name
        np.testing.assert_allclose(
            jl.extra_neuron_objective(aug, x, y, lam=0.0, loss="logistic"),
            np.mean(np.log1p(np.exp(-np.asarray(y * ft)))),
            rtol=1e-12,
        )


def test_bad_inputs():
    x, y, start = demo_problem()
    aug = jl.ExtraNeuron.wrap(start, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"a must have shape \(1,\)"):
        jl.ExtraNeuron(start, jnp.zeros(2), aug.w, aug.b)
    with pytest.raises(ValueError, match=r"w must have shape \(2,\)"):
        jl.ExtraNeuron(start, aug.a, jnp.zeros(3), aug.b)
    with pytest.raises(ValueError, match="lam must be a finite number >= 0"):
        jl.extra_neuron_objective(aug, x, y, lam=-1.0)
    assert_refuses(lambda: jl.extra_neuron_objective(aug, x, y[:, 0], lam=0.1), "y", ValueError,
                   match=r"y must have shape \(6, 1\)")
    assert_refuses(lambda: jl.extra_neuron_objective(start, x, y, lam=0.1), "aug", TypeError,
                   match="aug must be an ExtraNeuron")
    with pytest.raises(ValueError, match="p must be a positive integer"):
        jl.polynomial_hinge(0)
    with pytest.raises(TypeError, match="model must have in_features"):
        jl.ExtraNeuron.wrap(lambda z: z, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        jl.extra_neuron_demo(key=jax.random.PRNGKey(0), steps=0)
