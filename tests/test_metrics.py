"""Tests for jaxland.landscape: barrier, refine_max (a planted narrow spike), path length, geodesic ratio."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses

import jaxland
from jaxland import paths as jp

# A scalar "parameter" w moving along the segment w = t, so F(γ(t)) = bump(t) below.
LINE = jp.linear({"w": jnp.float32(0.0)}, {"w": jnp.float32(1.0)})
T_SPIKE, SIGMA, HEIGHT = 0.737, 0.01, 3.0


def bump_np(t):
    """A broad hump (max 1 at t = 0.2) plus a narrow spike of height 3 at 0.737 (σ = 0.01)."""
    return np.exp(-((t - 0.2) ** 2) / (2 * 0.1**2)) + HEIGHT * np.exp(-((t - T_SPIKE) ** 2) / (2 * SIGMA**2))


def bump(p):
    t = p["w"]
    return jnp.exp(-((t - 0.2) ** 2) / (2 * 0.1**2)) + HEIGHT * jnp.exp(-((t - T_SPIKE) ** 2) / (2 * SIGMA**2))


def test_refine_finds_planted_spike_missed_by_coarse_grid():
    grid = np.linspace(0, 1, 11)
    vals = jaxland.evaluate_path(bump, LINE, grid)
    coarse = jaxland.barrier(vals, grid)
    # the grid sees only the broad hump: its maximum is at t = 0.2 with value ~1, the spike's trace at
    # t = 0.7 is 3 exp(-6.8) ≈ 3e-3
    assert float(coarse.f_max) < 1.01 and abs(float(coarse.t_max) - 0.2) < 1e-6
    res = jaxland.refine_max(bump, LINE, grid, vals, tol=1e-4)
    assert res.converged
    # the true maximiser, from a dense float64 evaluation (the broad hump's slope at 0.737 is ~1e-5,
    # so the maximiser sits at T_SPIKE to ~1e-9)
    dense = np.linspace(0.70, 0.78, 800_001)
    t_true = dense[np.argmax(bump_np(dense))]
    lo, hi = float(res.bracket[0]), float(res.bracket[1])
    assert hi - lo <= 1e-4 and lo <= float(res.t_max) <= hi
    assert abs(float(res.t_max) - t_true) <= 1e-4
    # F is within the curvature bound of its max at distance ≤ tol: H(1 − exp(−tol²/2σ²)) ≈ 1.5e-4
    assert float(res.f_max) >= bump_np(t_true) - 2e-4
    # all evaluated samples are kept, sorted, and include the initial grid
    assert np.all(np.diff(np.asarray(res.ts)) > 0) and np.all(np.isin(grid.astype(np.float32), np.asarray(res.ts)))


def test_refine_computes_values_and_respects_max_rounds():
    grid = np.linspace(0, 1, 11)
    res = jaxland.refine_max(bump, LINE, grid, max_rounds=0)
    assert not res.converged and res.ts.shape == (11,)
    with pytest.raises(ValueError, match="tol"):
        jaxland.refine_max(bump, LINE, grid, tol=0.0)
    with pytest.raises(ValueError, match="values must have the shape of ts"):
        jaxland.refine_max(bump, LINE, grid, np.zeros(3))


def test_refine_refuses_nan_values():
    """A NaN maximum is not a maximum (issue 12 #4): all-NaN or partly NaN values, given or
    evaluated, raise ValueError naming where F is NaN, instead of converged=True, f_max=nan."""
    grid = np.linspace(0, 1, 11)
    with pytest.raises(ValueError, match=r"values is NaN at 11 of 11 points"):
        jaxland.refine_max(bump, LINE, grid, np.full(11, np.nan))
    vals = bump_np(grid)
    vals[3] = np.nan
    with pytest.raises(ValueError, match=r"values is NaN at 1 of 11 points \(t = 0.3\)"):
        jaxland.refine_max(bump, LINE, grid, vals)
    with pytest.raises(ValueError, match="fn along the path is NaN at 11 of 11"):
        jaxland.refine_max(lambda p: p["w"] * jnp.nan, LINE, grid)
    # NaN only where the refinement looks (t in (0.65, 0.75)): caught in the round that finds it
    nan_spike = lambda p: jnp.where(jnp.abs(p["w"] - 0.7) < 0.05, jnp.nan, bump(p))
    with pytest.raises(ValueError, match="fn along the path is NaN"):
        jaxland.refine_max(nan_spike, LINE, grid, np.where(np.isclose(grid, 0.7), 5.0, bump_np(grid)))
    # an infinite F is a value (an infinite barrier), not an error
    r = jaxland.refine_max(bump, LINE, grid, np.where(np.isclose(grid, 0.5), np.inf, bump_np(grid)),
                           max_rounds=0)
    assert float(r.f_max) == np.inf and float(r.t_max) == 0.5


def test_barrier_values():
    ts = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    v = np.array([1.0, 2.0, 4.0, 3.5, 3.0])
    r = jaxland.barrier(v, ts)
    assert float(r.barrier) == 4.0 - 3.0 and float(r.t_max) == 0.5
    # above the linear mix 1 + 2t: 4 − 2 = 2 at 0.5; 3.5 − 2.5 = 1 at 0.75
    assert float(r.barrier_linear) == 2.0 and float(r.t_max_linear) == 0.5
    assert float(r.f0) == 1.0 and float(r.f1) == 3.0
    # the order of the samples does not matter
    perm = np.array([3, 0, 4, 1, 2])
    r2 = jaxland.barrier(v[perm], ts[perm])
    assert float(r2.barrier) == 1.0 and float(r2.barrier_linear) == 2.0
    # a monotone path has no barrier
    assert float(jaxland.barrier(np.array([1.0, 2.0, 3.0])).barrier) == 0.0


class BarrierJitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_barrier_default_grid(self):
        v = jnp.array([0.0, 1.0, 5.0, 2.0, 1.0])
        r = self.variant(jaxland.barrier)(v)
        assert float(r.barrier) == 4.0 and float(r.t_max) == 0.5
        # linear mix 0 + t at t = 0.5 is 0.5: barrier above it 4.5
        assert float(r.barrier_linear) == 4.5


def test_barrier_errors():
    assert_refuses(lambda: jaxland.barrier(np.zeros((2, 2))), "values", ValueError,
                   match="values must have shape")
    with pytest.raises(ValueError, match="endpoints 0 and 1"):
        jaxland.barrier(np.zeros(3), np.array([0.1, 0.5, 1.0]))
    assert_refuses(lambda: jaxland.barrier(np.zeros(3), np.array([0.0, 1.0])), "ts", ValueError,
                   match="ts must have the shape of values")


def _nets(k=3):
    rng = np.random.default_rng(0)  # NumPy: no JAX kernels compiled just to make inputs
    return [jaxland.TwoLayer(jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                             jnp.asarray(rng.normal(size=(1, 4)), jnp.float32)) for _ in range(k)]


def test_path_length_and_geodesic_ratio():
    a, b, c = _nets()
    d = lambda u, v: float(jp.tree_norm(jax.tree.map(lambda p, q: p - q, u, v)))  # noqa: E731
    np.testing.assert_allclose(float(jaxland.path_length(jp.linear(a, b))), d(a, b), rtol=1e-6)
    np.testing.assert_allclose(float(jaxland.path_length(jp.polychain([a, c, b]))), d(a, c) + d(c, b),
                               rtol=1e-6)
    # a degree-1 Bézier curve is a straight line: the sampled length is the chord (float32 sum of 64 terms)
    np.testing.assert_allclose(float(jaxland.path_length(jp.bezier([a, b]), num=65)), d(a, b), rtol=1e-5)
    # a curved path: the inscribed polygon is shorter than the curve and longer than the chord, and
    # grows as the sampling gets finer
    q = jp.bezier([a, c, b])
    l_coarse, l_fine = float(jaxland.path_length(q, num=5)), float(jaxland.path_length(q, num=257))
    assert d(a, b) < l_coarse <= l_fine * (1 + 1e-6)
    # the same polygon as the sampled points' polychain (float32)
    pts = [q(t) for t in np.linspace(0, 1, 5)]
    np.testing.assert_allclose(l_coarse, float(jaxland.path_length(jp.polychain(pts))), rtol=1e-5)
    # Freeman & Bruna: 1 for collinear ordered beads, > 1 for a detour
    mid = jp.linear(a, b)(0.4)
    np.testing.assert_allclose(float(jaxland.geodesic_ratio([a, mid, b])), 1.0, rtol=1e-5)
    assert float(jaxland.geodesic_ratio([a, c, b])) > 1.0
    np.testing.assert_allclose(float(jaxland.geodesic_ratio(jp.polychain([a, c, b]))),
                               (d(a, c) + d(c, b)) / d(a, b), rtol=1e-5)
    with pytest.raises(ValueError, match="coincide"):
        jaxland.geodesic_ratio([a, c, a])
    with pytest.raises(ValueError, match="non-decreasing"):
        jaxland.path_length(q, np.array([0.0, 0.5, 0.2]))
