"""Finding and classifying critical points (jaxland/second_order/_critical.py) on planted problems with
known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_refuses

import jaxland as jl


def _quadratic(diag):
    """F(p) = ½ Σ_i d_i u_i² + c·v with the Hessian diag(d) (over u) and 0 (over v)."""
    d = jnp.asarray(diag)
    return lambda p: 0.5 * jnp.sum(d * p["u"] ** 2)


def _double_well(p):
    # F(a, b) = (a² − 1)² + b²: minima at (±1, 0) with Hessian diag(8, 2); a saddle at (0, 0) with
    # Hessian diag(−4, 2).
    return (p["a"] ** 2 - 1) ** 2 + p["b"] ** 2


def test_classify_planted_points_float64():
    key = jax.random.PRNGKey(0)
    with jax.enable_x64(True):
        zero = {"u": jnp.zeros(4)}
        cases = [
            ([1.0, 2.0, 3.0, 4.0], "local minimum"),
            ([1.0, -0.5, 3.0, 4.0], "strict saddle"),
            ([1.0, 0.0, 3.0, 4.0], "degenerate"),  # a flat direction: test inconclusive
            ([-1.0, -2.0, -3.0, -4.0], "strict saddle"),
        ]  # a maximum has λ_min < 0 too
        CK = jl.CriticalKind
        items = {"local minimum": CK.local_minimum, "strict saddle": CK.strict_saddle,
                 "degenerate": CK.degenerate}
        for diag, kind in cases:
            c = jl.classify_critical_point(_quadratic(diag), zero, key=key)
            assert c.kind_name == kind, (diag, c)
            # the kind is an enumeration item whose code carries its message
            assert isinstance(c.kind, CK) and bool(c.kind == items[kind])
            assert CK[c.kind].startswith(kind + ": ")
            # P = 4 ≤ 64 Lanczos steps: exact extreme eigenvalues
            np.testing.assert_allclose(c.lambda_min, min(diag), atol=1e-12)
            np.testing.assert_allclose(c.lambda_max, max(diag), atol=1e-12)
            assert float(c.grad_norm) == 0.0
        # the same minimum, away from the critical point: not critical
        c = jl.classify_critical_point(
            _quadratic([1.0, 2.0, 3.0, 4.0]), {"u": jnp.ones(4)}, key=key
        )
        assert c.kind_name == "not critical" and bool(c.kind == CK.not_critical)
        assert "‖∇F‖ > grad_tol" in CK[c.kind]
        np.testing.assert_allclose(c.grad_norm, np.sqrt(1 + 4 + 9 + 16), rtol=1e-12)


def test_find_saddle_and_minimum_with_newton_steps():
    key = jax.random.PRNGKey(0)
    with jax.enable_x64(True):
        # Newton on ∇F = 0 converges to the nearest critical point: the saddle from a ≈ 0, a minimum
        # from a ≈ 1 (plain descent would never stop at the saddle).
        c = jl.find_critical_point(
            _double_well, {"a": jnp.array(0.1), "b": jnp.array(0.3)}, key=key, grad_tol=1e-9
        )
        assert c.kind_name == "strict saddle"
        np.testing.assert_allclose([c.params["a"], c.params["b"]], [0.0, 0.0], atol=1e-9)
        np.testing.assert_allclose(c.lambda_min, -4.0, rtol=1e-6)
        np.testing.assert_allclose(c.value, 1.0, rtol=1e-9)
        c = jl.find_critical_point(
            _double_well, {"a": jnp.array(0.8), "b": jnp.array(-0.2)}, key=key, grad_tol=1e-9
        )
        assert c.kind_name == "local minimum"
        np.testing.assert_allclose(c.params["a"], 1.0, atol=1e-9)
        np.testing.assert_allclose([c.lambda_min, c.lambda_max], [2.0, 8.0], rtol=1e-6)
        assert 0 < int(c.steps) <= 200


def test_find_critical_point_gradient_norm_method():
    # Matrix-free route: Adam on ½‖∇F‖²; it also converges to the saddle (‖∇F‖ has a zero there).
    c = jl.find_critical_point(
        _double_well,
        {"a": jnp.array(0.2), "b": jnp.array(0.1)},
        key=jax.random.PRNGKey(0),
        method="gradient_norm",
        max_steps=3000,
        grad_tol=1e-3,
        optimizer=optax.adam(1e-2),
    )
    assert c.kind_name == "strict saddle"
    assert float(c.grad_norm) <= 1e-3 and int(c.steps) < 3000  # stopped because it converged
    np.testing.assert_allclose(c.lambda_min, -4.0, rtol=1e-2)  # float32 at a 1e-3-critical point


def test_find_critical_point_on_a_network():
    # A trained TwoLayer on a 2-D teacher problem, then Newton steps: a critical point whose λ_min
    # is consistent with its kind (the labels follow from the certified eigenvalue rules).
    with jax.enable_x64(True):
        data = jl.data.sphere_teacher(
            jax.random.PRNGKey(3), n_samples=20, n=2, teacher_width=2, dtype=jnp.float64
        )
        net = jl.TwoLayer.init(jax.random.PRNGKey(4), n=2, m=3, dtype=jnp.float64)
        F = jl.objective_fn(data.x, data.y, kappa=0.0)
        net = jl.fit(net, data.x, data.y, kappa=0.0, steps=300).net
        c = jl.find_critical_point(F, net, key=jax.random.PRNGKey(5), grad_tol=1e-7)
        assert c.kind_name != "not critical"
        assert float(c.grad_norm) <= 1e-7
        if c.kind_name == "strict saddle":
            assert c.lambda_min < -1e-6
        elif c.kind_name == "local minimum":
            assert c.lambda_min > 1e-6
        # P = 9 ≤ 64 Lanczos steps: λ_min is exact, so its residual bound is ~0
        assert float(c.lambda_min_bound) < 1e-8


def test_bad_inputs():
    key = jax.random.PRNGKey(0)
    p = {"a": jnp.array(0.1), "b": jnp.array(0.3)}
    with pytest.raises(
        ValueError, match="method must be 'newton', 'levenberg_marquardt' or 'gradient_norm'"
    ):
        jl.find_critical_point(_double_well, p, key=key, method="bfgs")
    with pytest.raises(ValueError, match="grad_tol must be a finite number >= 0"):
        jl.find_critical_point(_double_well, p, key=key, grad_tol=-1.0)
    with pytest.raises(ValueError, match="max_steps must be a positive integer"):
        jl.find_critical_point(_double_well, p, key=key, max_steps=0)
    with pytest.raises(ValueError, match="eig_tol must be a finite number >= 0"):
        jl.classify_critical_point(_double_well, p, key=key, eig_tol=float("nan"))
    assert_refuses(lambda: jl.classify_critical_point(_double_well, p, key=None), "key", ValueError,
                   match="key is required")
    with pytest.raises(ValueError, match="no floating-point array leaves"):
        jl.find_critical_point(_double_well, {"a": 1}, key=key)
