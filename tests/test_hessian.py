"""Hessian-vector products, Lanczos extreme eigenvalues, SLQ density and Hutchinson trace
(jaxland/second_order/)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses
from jax.flatten_util import ravel_pytree

import jaxland as jl
from jaxland import paths

SMALL = dict(n=3, m=4, d_g=2, d_o=2, hidden=(3,))  # P = 12 + 4 + 8 + 8 + 6 + 6 = 44 parameters


def _problem(dtype, skip=True):
    """A SkipNet (P = 44) or, where compile time matters more than the architecture, a TwoLayer
    (n = 3, m = 5: P = 20) on 16 Gaussian samples."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    if skip:
        net = jl.SkipNet.init(k1, dtype=dtype, residual_scale=1.0, **SMALL)
    else:
        net = jl.TwoLayer.init(k1, n=3, m=5, dtype=dtype)
    x = jax.random.normal(k2, (16, 3), dtype)
    y = jax.random.normal(k3, (16, 1), dtype)
    return net, jl.objective_fn(x, y, kappa=0.0)


def _dense_eigs(F, net):
    return np.linalg.eigvalsh(np.asarray(jl.dense_hessian(F, net)))


class HvpTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_hvp_equals_dense_hessian_times_v(self):
        with jax.enable_x64(True):
            net, F = _problem(jnp.float64, skip=False)
            v = jax.tree.map(
                lambda a: jax.random.normal(jax.random.PRNGKey(5), a.shape, a.dtype), net
            )
            hv = self.variant(lambda n, v: jl.hvp(F, n, v))(net, v)
            flat_v, _ = ravel_pytree(v)
            flat_hv, _ = ravel_pytree(hv)
            # exact identity up to float64 rounding of a 20 x 20 product
            np.testing.assert_allclose(
                flat_hv, jl.dense_hessian(F, net) @ flat_v, rtol=1e-10, atol=1e-12
            )


def test_lanczos_matches_dense_eigvalsh_float64():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64)
        ev = _dense_eigs(F, net)
        P = ev.size
        # K = P steps with full reorthogonalisation: T is similar to H, Ritz values = eigenvalues.
        r = jl.hessian_eigs(F, net, key=jax.random.PRNGKey(1), k=3, num_steps=P)
        scale = np.abs(ev).max()
        np.testing.assert_allclose(r.top, ev[::-1][:3], atol=1e-9 * scale)
        np.testing.assert_allclose(r.bottom, ev[:3], atol=1e-9 * scale)
        np.testing.assert_allclose(r.ritz, ev, atol=1e-9 * scale)
        # K < P: Ritz values lie inside [λ_min, λ_max] (Cauchy interlacing) and each is within its
        # residual bound of an eigenvalue of H (Parlett Thm 11.4.2). Same compiled program: K is
        # a static argument, so reuse K = P on a projected operator is not possible; instead read
        # the bounds of the K = P run, which must be ~0 (the Krylov space is all of R^P).
        assert np.all(np.asarray(r.top_bound) <= 1e-8 * scale)
        assert np.all(np.asarray(r.bottom_bound) <= 1e-8 * scale)


def test_lanczos_handles_breakdown_on_repeated_spectrum():
    # Shamir's Example 1 style operator: only two distinct eigenvalues ±1, start vector in an
    # invariant subspace; Lanczos breaks down after 2 steps and must restart, not invent values.
    d = jnp.concatenate([jnp.ones(5), -jnp.ones(5)])
    t = jl.lanczos_tridiag(lambda v: d * v, jnp.ones(10), 6, key=jax.random.PRNGKey(0))
    T = jnp.diag(t.alpha) + jnp.diag(t.beta, 1) + jnp.diag(t.beta, -1)
    ritz = np.linalg.eigvalsh(np.asarray(T))
    # float32 rounding of a 6-step recurrence
    np.testing.assert_allclose(np.abs(ritz), 1.0, atol=1e-5)


def test_eigs_along_path_are_batched_and_exact_float64():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64, skip=False)
        other = jl.TwoLayer.init(jax.random.PRNGKey(9), n=3, m=5, dtype=jnp.float64)
        path = paths.linear(net, other)
        ts = jnp.array([0.0, 0.5, 1.0])
        r = jl.hessian_eigs_along_path(
            F, path, ts, key=jax.random.PRNGKey(2), k=2, num_steps=12, batch_size=2
        )
        chex.assert_shape((r.top, r.bottom, r.top_bound, r.ritz), [(3, 2), (3, 2), (3, 2), (3, 12)])
        for i, t in enumerate(ts):
            ev = _dense_eigs(F, path(t))
            scale = np.abs(ev).max()
            # K = 12 < P = 20: Ritz values lie inside [λ_min, λ_max] (Cauchy interlacing) and each is
            # within its residual bound of an eigenvalue of H (Parlett Thm 11.4.2)
            assert (
                ev[0] - 1e-9 * scale <= r.lambda_min[i] and r.lambda_max[i] <= ev[-1] + 1e-9 * scale
            )
            for val, bound in zip(
                np.concatenate([r.top[i], r.bottom[i]]),
                np.concatenate([r.top_bound[i], r.bottom_bound[i]]),
                strict=True,
            ):
                assert np.abs(ev - val).min() <= bound + 1e-9 * scale
            # 12 steps resolve the largest eigenvalue of this 20-dimensional spectrum
            np.testing.assert_allclose(r.lambda_max[i], ev[-1], rtol=1e-6)


def test_hutchinson_trace_matches_dense_trace():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64, skip=False)
        tr = float(np.trace(np.asarray(jl.dense_hessian(F, net))))
        est = jl.hessian_trace(F, net, key=jax.random.PRNGKey(3), num_probes=400, batch_size=100)
        chex.assert_shape(est.samples, (400,))
        # unbiased: within 4 standard errors (a 6e-5 false-alarm rate for a Gaussian mean)
        assert abs(float(est.mean) - tr) <= 4 * float(est.stderr)
        assert float(est.stderr) < 0.2 * max(abs(tr), 1.0)  # and informative
        b = jl.hessian_trace_batch(
            F,
            jax.tree.map(lambda a: jnp.stack([a, a]), net),
            key=jax.random.PRNGKey(3),
            num_probes=8,
        )
        chex.assert_shape(b.mean, (2,))


def test_slq_density_is_normalised_and_matches_moments():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64, skip=False)
        ev = _dense_eigs(F, net)
        P = ev.size
        sd = jl.spectral_density(F, net, key=jax.random.PRNGKey(4), num_steps=12, num_probes=64)
        chex.assert_shape((sd.nodes, sd.weights), [(64, 12), (64, 12)])
        # Gauss weights are squares of the first components of orthonormal eigenvectors: rows sum to 1
        np.testing.assert_allclose(np.sum(sd.weights, axis=1), 1.0, rtol=1e-12)
        np.testing.assert_allclose(sd.moment(0), 1.0, rtol=1e-12)
        # moments tr(H^p)/P for p = 1, 2 (exact per probe for p ≤ 2K−1; the probe average has the
        # Hutchinson variance: with 64 probes a 25 % band on a 20-dimensional problem is > 4 sigma)
        for p in (1, 2):
            exact = np.sum(ev**p) / P
            assert abs(float(sd.moment(p)) - exact) <= 0.25 * np.sum(np.abs(ev) ** p) / P
        # the smoothed density integrates to 1 (trapezoid rule on a grid 10 sigma past the spectrum)
        sigma = 0.05 * (ev[-1] - ev[0])
        grid = jnp.linspace(ev[0] - 10 * sigma, ev[-1] + 10 * sigma, 4001)
        mass = float(jnp.trapezoid(sd.density(grid, sigma), grid))
        np.testing.assert_allclose(mass, 1.0, rtol=1e-4)


def test_million_parameters_without_forming_the_hessian():
    # TwoLayer with n = m = 1000: P ≈ 10^6 (a dense Hessian would be 4 TB in float32).
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    net = jl.TwoLayer.init(k1, n=1000, m=1000)
    x = jax.random.normal(k2, (8, 1000)) / 30.0
    F = jl.objective_fn(x, jax.random.normal(k3, (8, 1)), kappa=0.0)
    r = jl.hessian_eigs(F, net, key=jax.random.PRNGKey(1), k=1, num_steps=4)
    assert np.isfinite(r.lambda_max) and r.lambda_max > 0 >= r.lambda_min - 1e-6


def test_bad_inputs():
    net, F = _problem(jnp.float32, skip=False)
    key = jax.random.PRNGKey(0)
    assert_refuses(lambda: jl.hessian_eigs(3.0, net, key=key), "fn", TypeError,
                   match="must be a callable")
    assert_refuses(lambda: jl.hessian_eigs(F, net, key=None), "key", ValueError,
                   match="key is required")
    with pytest.raises(
        ValueError, match="num_steps must be at most the number of parameters P = 20"
    ):
        jl.hessian_eigs(F, net, key=key, num_steps=21)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, num_steps = 8\]"):
        jl.hessian_eigs(F, net, key=key, k=9, num_steps=8)
    assert_refuses(
        lambda: jl.hessian_eigs_along_path(F, paths.linear(net, net), jnp.zeros((2, 2)), key=key),
        "ts", ValueError, match="ts must be a non-empty 1-D array")
    with pytest.raises(ValueError, match="stacked pytree"):
        jl.hessian_eigs_batch(F, {"a": jnp.float32(1.0)}, key=key)
    with pytest.raises(ValueError, match="num_probes must be a positive integer"):
        jl.hessian_trace(F, net, key=key, num_probes=0)
    bad_v = jax.tree.map(lambda a: jnp.zeros(a.shape + (1,)), net)
    with pytest.raises(ValueError, match="v has a leaf of shape"):
        jl.hvp(F, net, bad_v)
    with pytest.raises(ValueError, match="fn must return a scalar"):
        jl.hessian_eigs(lambda n: n.W1, net, key=key, num_steps=4)


# ----------------------------------------------------------------------------------------------
# Lanczos with a stopping tolerance, and warm starts along a path
# ----------------------------------------------------------------------------------------------


def _gapped_operator(P=120, seed=0):
    """A symmetric P×P matrix with a clear gap at both ends: eigenvalues 10, 9, −5, −4.5 and P − 4
    values in [−1, 1] (float64; call inside `jax.enable_x64`)."""
    rng = np.random.default_rng(seed)
    ev = np.concatenate([[10.0, 9.0, -5.0, -4.5], rng.uniform(-1, 1, P - 4)])
    U, _ = np.linalg.qr(rng.normal(size=(P, P)))
    return jnp.asarray((U * ev) @ U.T), np.sort(ev)


def _ritz_and_bounds(alpha, beta, residual, m):
    """Ritz values of the leading m×m block and Parlett's bounds residual·|s_m|, in numpy."""
    a, b = np.asarray(alpha)[:m], np.asarray(beta)[: m - 1]
    vals, vecs = np.linalg.eigh(np.diag(a) + np.diag(b, 1) + np.diag(b, -1))
    return vals, np.abs(float(residual) * vecs[-1, :])


def _wanted_np(m, k, which):
    j = np.arange(m)
    top, bottom = j >= m - k, j < k
    return {"top": top, "bottom": bottom, "both": top | bottom}[which]


def _check_first_converged_step(t, ev, K, k, tol, which):
    chex.assert_shape((t.alpha, t.beta), [(K,), (K - 1,)])
    m = int(t.num_steps)
    # clear gaps (ratio ~0.1 of the spread): far fewer than K steps
    assert 2 * k <= m < K, (which, m)
    np.testing.assert_array_equal(t.alpha[m:], 0.0)
    np.testing.assert_array_equal(t.beta[m - 1 :], 0.0)
    vals, bounds = _ritz_and_bounds(t.alpha, t.beta, t.residual, m)
    w = _wanted_np(m, k, which)
    scale = np.abs(vals).max()
    # the stopping rule held at m ...
    assert np.all(bounds[w] <= tol * scale), which
    # ... and each Ritz value is within its bound of an eigenvalue of H (Parlett Thm 11.4.2;
    # + float64 rounding of a 60-step recurrence on a norm-10 matrix)
    for val, bd in zip(vals, bounds, strict=True):
        assert np.abs(ev - val).min() <= bd + 1e-11 * scale
    # ... but not at m − 1: T_{m−1} is the leading block, its residual is beta[m−2]
    if m - 1 >= (2 * k if which == "both" else k):
        vals1, bounds1 = _ritz_and_bounds(t.alpha, t.beta, t.beta[m - 2], m - 1)
        w1 = _wanted_np(m - 1, k, which)
        assert np.any(bounds1[w1] > tol * np.abs(vals1).max()), which


class LanczosTolTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_stops_at_first_converged_step_float64(self):
        with jax.enable_x64(True):
            H, ev = _gapped_operator()
            K, k, tol = 60, 2, 1e-6
            run = self.variant(
                lambda v0, key: jl.lanczos_tridiag(lambda v: H @ v, v0, K, key=key, tol=tol, k=k)
            )
            t = run(jnp.ones(ev.size), jax.random.PRNGKey(0))
            _check_first_converged_step(t, ev, K, k, tol, "both")

    def test_stops_for_one_end_float64(self):
        with jax.enable_x64(True):
            H, ev = _gapped_operator()
            K, k, tol = 60, 2, 1e-6
            for which in ("top", "bottom"):
                t = jl.lanczos_tridiag(
                    lambda v: H @ v,
                    jnp.ones(ev.size),
                    K,
                    key=jax.random.PRNGKey(0),
                    tol=tol,
                    which=which,
                    k=k,
                )
                _check_first_converged_step(t, ev, K, k, tol, which)

    def test_tol_zero_is_the_fixed_k_run(self):
        with jax.enable_x64(True):
            H, _ = _gapped_operator()
            args = (lambda v: H @ v, jnp.ones(120), 40)
            fixed = jl.lanczos_tridiag(*args, key=jax.random.PRNGKey(0))
            zero = jl.lanczos_tridiag(*args, key=jax.random.PRNGKey(0), tol=0.0, k=2)
            # no breakdown on this operator, so all K steps are taken, bit for bit the same run
            assert int(fixed.num_steps) == int(zero.num_steps) == 40
            chex.assert_trees_all_equal(fixed, zero)


def test_hessian_eigs_tol_within_bounds_of_dense_float64():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64)
        ev = _dense_eigs(F, net)
        P, K, k, tol = ev.size, 40, 2, 1e-5
        r = jl.hessian_eigs(F, net, key=jax.random.PRNGKey(1), k=k, num_steps=K, tol=tol)
        m = int(r.num_steps)
        assert m < K
        chex.assert_shape((r.top, r.ritz, r.num_steps), [(k,), (K,), ()])
        ritz = np.asarray(r.ritz)
        assert np.all(np.isfinite(ritz[:m])) and np.all(np.isnan(ritz[m:]))
        assert np.all(np.diff(ritz[:m]) >= 0)
        scale = np.abs(ev).max()
        vals = np.concatenate([r.top, r.bottom])
        bounds = np.concatenate([r.top_bound, r.bottom_bound])
        # the stopping rule (bounds relative to the largest |Ritz value|) and Parlett's theorem:
        # each wanted Ritz value is within its bound of an eigenvalue (+ float64 rounding, P = 44)
        assert np.all(bounds <= tol * np.abs(ritz[:m]).max())
        for val, bd in zip(vals, bounds, strict=True):
            assert np.abs(ev - val).min() <= bd + 1e-10 * scale
        assert P == 44


def test_warm_start_along_path_same_eigs_fewer_steps_float64():
    with jax.enable_x64(True):
        net, F = _problem(jnp.float64)
        other = jl.SkipNet.init(
            jax.random.PRNGKey(7), dtype=jnp.float64, residual_scale=1.0, **SMALL
        )
        # a slowly varying family: 4 points on 2 % of the segment towards another network
        near = jax.tree.map(lambda a, b: a + 0.02 * (b - a), net, other)
        path = paths.linear(net, near)
        ts = jnp.linspace(0.0, 1.0, 4)
        kw = dict(key=jax.random.PRNGKey(2), k=2, num_steps=40, tol=1e-6)
        cold = jl.hessian_eigs_along_path(F, path, ts, **kw)
        warm = jl.hessian_eigs_along_path(F, path, ts, warm_start=True, **kw)
        chex.assert_shape((warm.top, warm.num_steps), [(4, 2), (4,)])
        for i, t in enumerate(ts):
            ev = _dense_eigs(F, path(t))
            scale = np.abs(ev).max()
            for r in (cold, warm):
                vals = np.concatenate([r.top[i], r.bottom[i]])
                bounds = np.concatenate([r.top_bound[i], r.bottom_bound[i]])
                # Parlett's bound (+ float64 rounding); both runs meet the same tolerance
                assert np.all(bounds <= 1e-6 * scale * 1.0001)
                for val, bd in zip(vals, bounds, strict=True):
                    assert np.abs(ev - val).min() <= bd + 1e-10 * scale
        sc, sw = np.asarray(cold.num_steps), np.asarray(warm.num_steps)
        # point 0 starts from the same random vector; later points from the previous Ritz vectors
        assert sw[0] == sc[0]
        assert np.all(sw[1:] <= sc[1:]) and sw.sum() < sc.sum(), (sc, sw)


def test_tol_bad_inputs():
    net, F = _problem(jnp.float32, skip=False)
    key = jax.random.PRNGKey(0)
    # an int where the annotation says float: accepted, as PEP 484 reads `float` (pyproject's hook)
    assert jl.hessian_eigs(F, net, key=key, num_steps=4, tol=0).lambda_max.shape == ()
    for bad in (-1e-3, float("nan"), "1e-3", True):
        assert_refuses(lambda: jl.hessian_eigs(F, net, key=key, num_steps=4, tol=bad), "tol",
                       ValueError, match="tol must be None or a finite number >= 0")
    with pytest.raises(ValueError, match=r"which must be one of \('both', 'top', 'bottom'\)"):
        jl.hessian_eigs(F, net, key=key, num_steps=4, tol=1e-3, which="middle")
    with pytest.raises(ValueError, match="tol must be None"):
        jl.lanczos_tridiag(lambda v: v, jnp.ones(3), 2, key=key, tol=-1.0)
    path = paths.linear(net, net)
    with pytest.raises(ValueError, match="batch_size must be None or 1 with warm_start=True"):
        jl.hessian_eigs_along_path(F, path, jnp.zeros(2), key=key, warm_start=True, batch_size=2)
    assert_refuses(
        lambda: jl.hessian_eigs_along_path(F, path, jnp.zeros(2), key=key, warm_start="yes"),
        "warm_start", ValueError, match="warm_start must be a bool")


# ----------------------------------------------------------------------------------------------
# any model through the parameter layer: non-array leaves carried, leaf dtypes kept
# ----------------------------------------------------------------------------------------------


def test_second_order_on_an_equinox_mlp_with_a_float32_leaf():
    """An `eqx.nn.MLP` (its activations are leaves) with one float32 leaf among float64 ones under x64:
    the second-order functions read its 13 parameters through `jaxland._params` (activations
    carried, the float32 leaf kept float32), and their values agree with the dense Hessian."""
    import equinox as eqx

    with jax.enable_x64(True):
        mlp = eqx.nn.MLP(2, 1, 3, 1, key=jax.random.PRNGKey(0), dtype=jnp.float64)
        mlp = eqx.tree_at(lambda m: m.layers[0].bias, mlp, mlp.layers[0].bias.astype(jnp.float32))
        x = jax.random.normal(jax.random.PRNGKey(1), (8, 2), jnp.float64)
        y = jnp.sin(x[:, 0])

        def fn(m):
            return jnp.mean((jax.vmap(m)(x)[:, 0] - y) ** 2)

        H = np.asarray(jl.dense_hessian(fn, mlp))
        P = 13
        assert H.shape == (P, P)
        # column j of H is hvp(e_j), e_j the j-th basis vector in raveled order (vmapped over j, one
        # compilation); hvp differentiates the pytree itself, dense_hessian the raveled vector
        params, _ = eqx.partition(mlp, eqx.is_inexact_array)
        flat, unravel = ravel_pytree(params)
        hvs = eqx.filter_jit(eqx.filter_vmap(lambda e: jl.hvp(fn, mlp, unravel(e))))(jnp.eye(P))
        assert hvs.layers[0].bias.dtype == jnp.float32 and hvs.layers[1].weight.dtype == jnp.float64
        assert hvs.activation is None  # non-parameter leaves: None, as equinox.filter_grad gives
        cols = np.concatenate([np.asarray(l, np.float64).reshape(P, -1)
                               for l in jax.tree.leaves(hvs)], axis=1)
        # the same float64 operations in both (the float32 bias rounds its tangents the same way)
        np.testing.assert_allclose(cols.T, H, rtol=1e-10, atol=1e-12)
        ev = np.linalg.eigvalsh((H + H.T) / 2)
        # classify_critical_point runs hessian_eigs with K = P = 13 Lanczos steps and full
        # reorthogonalisation: exact extremes up to the float32 leaf (its tangents round to float32
        # inside each product: ~1e-7 relative)
        c = jl.classify_critical_point(fn, mlp, key=jax.random.PRNGKey(5))
        np.testing.assert_allclose([c.lambda_min, c.lambda_max], [ev[0], ev[-1]], rtol=1e-5,
                                   atol=1e-6)
        # along a path between two MLPs (the activations are carried, not batched): the extremes of
        # the dense Hessian at each path(t)
        mlp2 = jax.tree.map(lambda a: a * 0.5 if eqx.is_inexact_array(a) else a, mlp)
        path = paths.linear(mlp, mlp2)
        ts = jnp.array([0.0, 1.0])
        along = jl.hessian_eigs_along_path(fn, path, ts, key=jax.random.PRNGKey(4), num_steps=P)
        for i, t in enumerate(ts):
            ev_t = np.linalg.eigvalsh(np.asarray(jl.dense_hessian(fn, path(t))))
            np.testing.assert_allclose([along.lambda_min[i], along.lambda_max[i]],
                                       [ev_t[0], ev_t[-1]], rtol=1e-5, atol=1e-6)
        assert c.params.activation is mlp.activation and c.kind_name == "not critical"
