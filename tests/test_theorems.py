"""The best linear predictor (jaxland/construct/_linear_predictor.py) and the theorems of Shamir (2018)
and Yun, Sra & Jadbabaie (2019) as checks (jaxland/theory/)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses
from hypothesis import given, settings, strategies as st

import jaxland as jl


def _data(key, N=24, d_x=3, dtype=jnp.float32):
    k1, k2 = jax.random.split(key)
    x = jax.random.normal(k1, (N, d_x), dtype)
    y = jnp.sin(2 * x[:, :1]) + 0.1 * jax.random.normal(k2, (N, 1), dtype)
    return x, y


# ------------------------------------------------------------------------------------------------
# best linear predictor


def test_best_linear_predictor_mse_is_the_least_squares_solution():
    with jax.enable_x64(True):
        x, y = _data(jax.random.PRNGKey(0), dtype=jnp.float64)
        r = jl.best_linear_predictor(x, y)
        assert isinstance(r.net, jl.Linear)
        chex.assert_shape(r.net.W, (1, 3))
        W_ne = np.linalg.solve(np.asarray(x.T @ x), np.asarray(x.T @ y)).T  # normal equations
        np.testing.assert_allclose(r.net.W, W_ne, rtol=1e-10)
        np.testing.assert_allclose(r.value, jl.objective(r.net, x, y, kappa=0.0), rtol=1e-12)
        assert float(r.grad_norm) < 1e-10  # first-order optimality of a convex problem


def test_best_linear_predictor_l1_is_the_objective_minimiser():
    # ξ* of Theorem 6 with κ > 0: W* minimises mean ‖Wx − y‖² + κ‖W‖₁ = jaxland's F of Linear(W).
    # Checked by the optimality (KKT) conditions of the ℓ1 problem, computed here in NumPy:
    # g = ∇ mean ‖Wx − y‖² = (2/N)(W xᵀ − yᵀ) x; g_ij = −κ sign(W_ij) where W_ij ≠ 0, |g_ij| ≤ κ
    # where W_ij = 0.
    with jax.enable_x64(True):
        # N = 32: the shapes of test_construct's ResidualLinear problem, whose connect(kappa=0.1)
        # compiles the same proximal solver
        x, y = _data(jax.random.PRNGKey(0), N=32, dtype=jnp.float64)
        kappa = 0.2  # zeroes one of the three coefficients of this problem, not all
        r = jl.best_linear_predictor(x, y, kappa=kappa)
        W = np.asarray(r.net.W)
        xn, yn = np.asarray(x), np.asarray(y)
        g = 2 / xn.shape[0] * (W @ xn.T - yn.T) @ xn
        nz = W != 0
        # the proximal solver stops at a gradient mapping ≤ ε^{2/3}·‖∇f(0)‖ (~1e-10 here); the
        # residuals of the conditions are of that order
        np.testing.assert_allclose(g[nz] + kappa * np.sign(W[nz]), 0.0, atol=1e-8)
        assert np.all(np.abs(g[~nz]) <= kappa + 1e-8)
        # the ℓ1 penalty sets weak coefficients exactly to zero (a ridge penalty never would)
        assert 0 < nz.sum() < W.size
        np.testing.assert_allclose(r.value, jl.objective(r.net, x, y, kappa=kappa), rtol=1e-12)
        assert float(r.grad_norm) < 1e-8  # the minimum-norm subgradient
        # and no perturbation does better (convexity)
        for k in range(3):
            d = 0.05 * jax.random.normal(jax.random.PRNGKey(k), W.shape, jnp.float64)
            assert jl.linear_objective(r.net.W + d, x, y, "mse", kappa) >= r.value


def test_best_linear_predictor_convex_losses_by_lbfgs():
    x, _ = _data(jax.random.PRNGKey(1))
    # logistic on non-separable labels: a stationary point of a convex function is the minimum
    labels = jnp.where(x[:, :1] + 0.8 * jnp.cos(3 * x[:, 1:2]) > 0, 1.0, -1.0)
    r = jl.best_linear_predictor(x, labels, loss="logistic")
    assert float(r.grad_norm) < 1e-4
    for k in range(3):  # and no random perturbation does better
        d = 0.1 * jax.random.normal(jax.random.PRNGKey(k), r.net.W.shape)
        assert jl.linear_objective(r.net.W + d, x, labels, "logistic") >= r.value


def test_best_linear_predictor_errors():
    x, y = _data(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"y must have shape \(24, d_y\)"):
        jl.best_linear_predictor(x, y[:, 0])
    with pytest.raises(ValueError, match="kappa must be a finite number >= 0"):
        jl.best_linear_predictor(x, y, kappa=-1.0)
    with pytest.raises(ValueError, match="d_y must be a positive integer"):
        jl.best_linear_predictor(x, y, d_y=0)
    with pytest.raises(ValueError, match=r"y must have shape \(24, 2\)"):
        jl.best_linear_predictor(x, y, d_y=2)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        jl.best_linear_predictor(x, y, loss="logistic", steps=0)
    assert_refuses(lambda: jl.best_linear_predictor(x[0], y), "x", ValueError,
                   match=r"x must have shape \(N, n\)")


# ------------------------------------------------------------------------------------------------
# Shamir, Theorem 1 and Example 1


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.sampled_from([0.1, 1.0, 5.0]))
def test_shamir_theorem1_holds_at_random_points(seed, scale):
    # fixed shapes (one compilation); random points, data and comparison predictors w*
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x, y = _data(k1)
    net = jl.ResidualLinear.init(k2, d_x=3, d_z=2, hidden=(4,))
    net = jax.tree.map(lambda a: a * scale, net)
    for w_star in (None, jax.random.normal(k3, (1, 3))):
        b = jl.shamir_bound(net, x, y, w_star=w_star)
        assert bool(b.holds), b
        # the displayed bound is weaker than the proof's intermediate one when F ≥ F_lin(w*)
        if b.value >= b.linear_value:
            assert b.sharp_bound >= b.bound * (1 - 1e-5)
        assert b.grad_norm * (1 + 1e-4) >= b.bound


def test_shamir_check_random_and_trained_instances():
    r = jl.shamir_check(
        key=jax.random.PRNGKey(0),
        num_instances=3,
        n_samples=24,
        d_x=3,
        d_z=2,
        hidden=(4,),
        train_steps=150,
    )
    chex.assert_shape((r.random.grad_norm, r.trained.bound), [(3,), (3,)])
    assert r.holds
    # training lowers ‖∇F‖ by an order of magnitude, and then the bound forces F − F_lin* to be at
    # most grad_norm · denominator (which is what "near-critical ⇒ near linear or better" means)
    assert np.all(np.asarray(r.trained.grad_norm) < 0.5 * np.asarray(r.random.grad_norm))


def test_shamir_example1_saddle():
    with jax.enable_x64(True):
        eps = 0.25
        ex = jl.shamir_example1(eps)
        F = ex.objective
        np.testing.assert_allclose(F(ex.point), 0.5, rtol=1e-15)
        # F is the model's objective with the ½-squared loss
        np.testing.assert_allclose(jnp.mean(jl.half_squared_error(ex.net(ex.x), ex.y)), 0.5)
        g = jax.grad(F)(ex.point)
        assert all(float(jnp.abs(a).max()) == 0.0 for a in g)
        H = np.asarray(jl.dense_hessian(F, ex.point))
        np.testing.assert_allclose(H, [[0.0, -eps], [-eps, 0.0]], atol=1e-14)
        c = jl.classify_critical_point(F, ex.point, key=jax.random.PRNGKey(0))
        assert c.kind_name == "strict saddle"
        np.testing.assert_allclose([c.lambda_min, c.lambda_max], [-eps, eps], rtol=1e-12)
        # the linear predictor w = 1 reaches 0 < F
        lin = jl.best_linear_predictor(ex.x, ex.y, loss=jl.half_squared_error, steps=20)
        assert float(lin.value) < 1e-12
        np.testing.assert_allclose(lin.net.W, [[1.0]], atol=1e-6)
        # Theorem 1 says nothing here: w = 0
        b = jl.shamir_bound(ex.net, ex.x, ex.y, w_star=jnp.ones((1, 1)), loss=jl.half_squared_error)
        assert float(b.bound) == 0.0 and float(b.grad_norm) == 0.0


def test_shamir_errors():
    x, y = _data(jax.random.PRNGKey(0))
    net = jl.ResidualLinear.init(jax.random.PRNGKey(1), d_x=3, d_y=2, d_z=2, hidden=(4,))
    # y (N, 2) fits this net, but Shamir's bound is for a scalar output: the annotation names y,
    # the library's own check the cause
    assert_refuses(lambda: jl.shamir_bound(net, x, jnp.zeros((24, 2))), "y", ValueError,
                   match=r"scalar output: W must have shape \(1, d_x\)")
    assert_refuses(lambda: jl.shamir_bound(jl.Linear.init(jax.random.PRNGKey(0), d_x=3), x, y),
                   "net", TypeError, match="net must be a ResidualLinear")
    net1 = jl.ResidualLinear.init(jax.random.PRNGKey(1), d_x=3, d_z=2, hidden=(4,))
    assert_refuses(lambda: jl.shamir_bound(net1, x, y, w_star=jnp.zeros((3,))), "w_star",
                   ValueError, match=r"w_star must have shape \(1, 3\)")
    with pytest.raises(ValueError, match="epsilon must be a finite number > 0"):
        jl.shamir_example1(0.0)


# ------------------------------------------------------------------------------------------------
# Yun, Sra & Jadbabaie: deep residual chains


def test_residual_chain_of_depth_one_is_residual_linear():
    net = jl.ResidualLinear.init(jax.random.PRNGKey(0), d_x=3, d_z=2, hidden=(4,))
    chain = jl.ResidualChain(net.W, (net.V,), (net.theta,))
    x, _ = _data(jax.random.PRNGKey(1))
    chex.assert_trees_all_equal(chain(x), net(x))
    deep = jl.ResidualChain.init(jax.random.PRNGKey(2), d_x=3, depth=3, d_z=2, hidden=(4,))
    chex.assert_shape(deep(x), (24, 1))
    with pytest.raises(ValueError, match="V and theta must have the same positive length"):
        jl.ResidualChain(net.W, (net.V, net.V), (net.theta,))
    assert_refuses(lambda: jl.ResidualChain(net.W, (jnp.zeros((2, 2)),), (net.theta,)), "V",
                   ValueError, match="V\\[0\\] has 2 rows but W has 3 columns")


def test_planted_saddle_is_an_exact_critical_point():
    with jax.enable_x64(True):
        x, y = _data(jax.random.PRNGKey(0), dtype=jnp.float64)
        net = jl.ResidualChain.init(
            jax.random.PRNGKey(1),
            d_x=3,
            depth=2,
            d_z=2,
            hidden=(4,),
            activation=jnp.tanh,
            dtype=jnp.float64,
        )
        p = jl.planted_saddle(net, key=jax.random.PRNGKey(2))
        np.testing.assert_allclose(p(x), 0.0, atol=1e-12)  # h_L = 0 and W = 0
        F = lambda n: jnp.mean(jl.mse(n(x), y))  # noqa: E731
        g = jax.grad(F)(p)
        assert max(float(jnp.abs(a).max()) for a in jax.tree.leaves(g)) < 1e-12


def test_yun_critical_points_are_good_or_strict_saddles():
    with jax.enable_x64(True):
        # depth 2 (a deep chain); depth 1 is Shamir's model, covered above
        tab = jl.residual_critical_points(
            key=jax.random.PRNGKey(1), num_instances=2, depths=(2,), n_samples=32, train_steps=500
        )
    assert len(tab.model) == 4 and tab.value.shape == (4,)
    planted = np.array([s == "planted" for s in tab.start])
    assert np.all(tab.grad_norm[planted] < 1e-10)
    assert bool(np.all(tab.holds)), tab.format()
    # the planted points are worse than linear, so the theorem needs (and finds) negative curvature
    assert np.all(tab.value[planted] > tab.linear_value[planted])
    kind = np.array(tab.kind)
    assert np.all(kind[planted] == "strict saddle")
    crit = kind != "not critical"
    assert tab.num_critical == int(np.sum(crit))
    assert np.all(~crit | (tab.value <= tab.linear_value + 1e-6) | (tab.lambda_min < -1e-6))
    assert len(tab.format().splitlines()) == 5
