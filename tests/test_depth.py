"""Depth of local minima and the minimum spanning tree of barriers (jaxland.search)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import jaxland
from jaxland._optim import cached_adam


@pytest.fixture(scope="module")
def mb():
    toy = jaxland.muller_brown()
    pts = [jnp.asarray(p, jnp.float32) for p in toy.minima]
    return toy, pts


# NEB's climbing pivot lands on the saddle (measured error ~1e-5 in float32, test_search.py); 0.1 is
# 0.1% of the depths involved and covers other XLA builds.
NEB = dict(method="neb", pivots=10, steps=400)
TOL = 0.1


def test_depth_of_muller_brown_minima(mb):
    toy, pts = mb
    V = toy.minimum_values
    S0, S1 = toy.saddle_values
    # M2 (the highest minimum) escapes over S1 into M1: depth V(S1) − V(M2) ≈ 8.5, not over S0.
    r = jaxland.depth(toy.fn, pts[2], [pts[0], pts[1]], **NEB)
    assert r.depth == pytest.approx(S1 - V[2], abs=TOL)
    assert r.target == 1 and r.method == "neb" and r.evaluations > 0
    assert r.value == pytest.approx(V[2], abs=1e-3)
    assert r.level == pytest.approx(S1, abs=TOL)
    # heights: the path to M0 must cross S0 (the minimax height between M2 and M0)
    assert float(r.heights[0]) == pytest.approx(S0, abs=TOL)
    np.testing.assert_allclose(np.asarray(r.path(0.0)), np.asarray(pts[2]))
    assert r.theorem11 is None  # not a network objective
    # M1: M2 is higher and skipped, the only way down is over S0 into M0: depth ≈ 67.5
    r1 = jaxland.depth(toy.fn, pts[1], [pts[0], pts[2]], **NEB)
    assert r1.depth == pytest.approx(S0 - V[1], abs=TOL)
    assert r1.target == 0 and np.isinf(float(r1.heights[1]))
    # the global minimum has no lower point: infinite depth
    r0 = jaxland.depth(toy.fn, pts[0], [pts[1], pts[2]], method="linear")
    assert np.isinf(r0.depth) and r0.target == -1 and r0.path is None


def test_depth_finds_lower_points_itself(mb):
    toy, pts = mb
    # From M2, perturbations of size ~0.7 descend into M0 or M1 (some fall back into M2 and are
    # skipped by min_drop); the depth bound found is at least
    # the true depth (every path to a lower point crosses a level >= V(S1)) up to grid sampling.
    r = jaxland.depth(toy.fn, pts[2], key=jax.random.PRNGKey(0), num_targets=6, radius=2.0,
                      descent_steps=300, method="linear")
    S1 = toy.saddle_values[1]
    assert np.isfinite(r.depth)
    assert r.level >= S1 - 0.05
    assert float(jnp.min(r.target_values)) < toy.minimum_values[2]


def test_depth_validation(mb):
    toy, pts = mb
    with pytest.raises(ValueError, match="key"):
        jaxland.depth(toy.fn, pts[2])
    with pytest.raises(ValueError, match="method"):
        jaxland.depth(toy.fn, pts[2], [pts[0]], method="gradient")
    with pytest.raises(ValueError, match="eta"):
        jaxland.depth(toy.fn, pts[2], [pts[0]], eta=1.5)
    with pytest.raises(ValueError, match="shape"):
        jaxland.depth(toy.fn, pts[2], [jnp.zeros(3)])


def test_depth_theorem11_bound_for_skipnet():
    # Shapes and budgets of the scaling study's "tiny" preset (m = 8, n = 2, N = 16, 30 Adam steps,
    # 9 points per certificate segment), so that test_scaling.py reuses the compiled kernels.
    s = jaxland.scaling_settings(preset="tiny")
    kd, ka, kb = jax.random.split(jax.random.PRNGKey(3), 3)
    ds = jaxland.data.sphere_teacher(kd, n_samples=s["samples"], n=2, teacher_width=8)
    F = jaxland.objective_fn(ds.x, ds.y, kappa=s["kappa"])

    def train(k):
        net = jaxland.SkipNet.init(k, n=2, m=8, d_g=s["d_g"], d_o=s["d_o"], hidden=tuple(s["hidden"]))
        return jaxland.fit(net, ds.x, ds.y, kappa=s["kappa"], steps=s["steps"],
                           optimizer=cached_adam(s["learning_rate"])).net

    hi, lo = sorted([train(ka), train(kb)], key=lambda n: -float(F(n)))
    assert float(F(lo)) < float(F(hi))
    r = jaxland.depth(F, hi, [lo], method="linear", points=s["points"], eta=0.5, construct=True,
                      connect_kwargs={"method": s["merge_method"],
                                      "n_points": s["cert_points"], "refine_levels": s["refine_levels"],
                                      "refine_points": s["refine_points"],
                                      "star_kwargs": {"steps": s["star_steps"],
                                                      "restarts": s["star_restarts"]}})
    assert r.target == 0 and r.depth >= 0  # the segment starts at the minimum
    b = r.theorem11
    assert b is not None and b.m == 8 and b.n == 2 and b.l == 2
    assert b.rate == pytest.approx(8 ** (-0.25))
    # the constructive path is a path from the minimum: its maximum is at least F at both ends
    assert b.constructive_max >= float(F(hi)) - 1e-5
    assert b.constructive_depth == pytest.approx(b.constructive_max - r.value, abs=1e-6)
    assert b.worse_than_star == (r.value >= b.f_star)
    # without construct, the bound carries the rate and F* only
    r2 = jaxland.depth(F, hi, [lo], method="linear", points=s["points"], eta=0.5,
                       connect_kwargs={"star_kwargs": {"steps": s["star_steps"],
                                                       "restarts": s["star_restarts"]}})
    assert np.isnan(r2.theorem11.constructive_max) and r2.theorem11.l == 2


# --------------------------------------------------------------------------------------------------
# minimum spanning tree


def _planted(K, rng):
    """A random tree on K vertices with distinct weights, its ultrametric U (max edge on the tree
    path), and a matrix H >= U that equals U on the tree edges (other pairs measured worse)."""
    parent = [int(rng.integers(0, i)) for i in range(1, K)]
    w = rng.permutation(K - 1) + rng.uniform(0, 0.5, K - 1)  # distinct
    adj = {i: [] for i in range(K)}
    for i, (p, wt) in enumerate(zip(parent, w, strict=True), start=1):
        adj[i].append((p, wt)), adj[p].append((i, wt))
    U = np.zeros((K, K))
    for s in range(K):  # max edge weight on the path from s, by DFS
        stack, seen = [(s, -np.inf)], {s}
        while stack:
            v, mx = stack.pop()
            U[s, v] = mx if v != s else 0.0
            for u, wt in adj[v]:
                if u not in seen:
                    seen.add(u)
                    stack.append((u, max(mx, wt)))
    noise = rng.uniform(0, 3, (K, K))
    H = U + np.triu(noise, 1) + np.triu(noise, 1).T
    for i, p in enumerate(parent, start=1):
        H[i, p] = H[p, i] = U[i, p]
    return {(min(i, p), max(i, p)) for i, p in enumerate(parent, start=1)}, w, U, H


@settings(max_examples=10, deadline=None)
@given(K=st.integers(2, 9), seed=st.integers(0, 10_000))
def test_barrier_mst_planted(K, seed):
    rng = np.random.default_rng(seed)
    edges, w, U, H = _planted(K, rng)
    r = jaxland.barrier_mst(H)
    # the planted tree is the unique MST: every other pair is measured strictly higher than the
    # largest tree edge on its path (H >= U with the added noise on non-tree pairs > 0 a.s.)
    assert {tuple(e) for e in r.edges} == edges
    np.testing.assert_allclose(np.sort(r.weights), np.sort(w))
    off = ~np.eye(K, dtype=bool)
    np.testing.assert_allclose(r.minimax[off], U[off])
    assert np.all(r.minimax[off] <= H[off] + 1e-12)  # concatenation only lowers the heights
    # ultrametric inequality for every triple
    for i, j, k in itertools.product(range(K), repeat=3):
        if len({i, j, k}) == 3:
            assert r.minimax[i, k] <= max(r.minimax[i, j], r.minimax[j, k]) + 1e-12
    assert np.all(np.diff(r.weights[r.order]) >= 0)


def test_barrier_mst_of_an_ultrametric_is_itself():
    rng = np.random.default_rng(1)
    _, _, U, _ = _planted(6, rng)
    r = jaxland.barrier_mst(U, diagonal=np.arange(6.0))
    np.testing.assert_allclose(r.minimax, U - np.diag(np.diag(U)) + np.diag(np.arange(6.0)))


def test_barrier_mst_validation():
    with pytest.raises(ValueError, match="square"):
        jaxland.barrier_mst(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        jaxland.barrier_mst(np.array([[0.0, 1.0], [2.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        jaxland.barrier_mst(np.array([[0.0, np.nan], [np.nan, 0.0]]))
    inf = np.inf
    with pytest.raises(ValueError, match="connect"):
        jaxland.barrier_mst(np.array([[0, 1, inf], [1, 0, inf], [inf, inf, 0]]))


def test_pairwise_heights_and_mst_on_muller_brown(mb):
    toy, pts = mb
    H, evals = jaxland.pairwise_heights(toy.fn, pts, **NEB)
    assert evals > 0
    np.testing.assert_allclose(np.diag(H), toy.minimum_values, atol=1e-3)
    r = jaxland.barrier_mst(H, diagonal=np.diag(H))
    S0, S1 = toy.saddle_values
    # Müller–Brown's known connectivity: M2–M1 over S1, and M0 reaches the other two only over S0. The
    # heights M0–M1 and M0–M2 are then both S0 (a tie, up to float32 rounding), so the tree joins M0 to
    # either of them; which one depends on the last bits of the NEB result.
    edges = {tuple(sorted(map(int, e))) for e in r.edges}
    assert (1, 2) in edges and len(edges) == 2
    assert edges - {(1, 2)} <= {(0, 1), (0, 2)}
    assert r.minimax[0, 2] == pytest.approx(S0, abs=TOL)
    assert r.minimax[1, 2] == pytest.approx(S1, abs=TOL)
    np.testing.assert_allclose(np.sort(r.weights), np.sort([S0, S1]), atol=TOL)
    assert r.minimax[0, 1] == pytest.approx(toy.saddle_height(0, 1), abs=TOL)
