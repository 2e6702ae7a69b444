"""Tests for Lemma 9 (angle clusters) and the merge plan of step 2 of Theorem 11
(jaxland/construct/_cluster.py)."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import raises_naming
from hypothesis import given, settings, strategies as st

import jaxland
from jaxland.construct._cluster import row_angles

M, N_DIM = 12, 3  # one shape for the property tests: values vary, compiled kernels are reused


def _angles_np(rows):
    """Pairwise angles by the stable formula, in NumPy float64 (brute force)."""
    r = np.asarray(rows, np.float64)
    nr = np.linalg.norm(r, axis=1)
    u = r / np.where(nr > 0, nr, 1)[:, None]
    d = np.linalg.norm(u[:, None] - u[None], axis=-1)
    s = np.linalg.norm(u[:, None] + u[None], axis=-1)
    return 2 * np.arctan2(d, s), nr > 0


@st.composite
def rows_and_eps(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    n_zero = draw(st.integers(0, 3))
    eps = draw(st.floats(0.05, 1.5))
    clustered = draw(st.booleans())
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(M, N_DIM)) * rng.uniform(0.1, 3.0, size=(M, 1))
    if clustered:  # half the rows near one direction, so clusters are large
        rows[: M // 2] = rows[0] + 0.2 * rng.normal(size=(M // 2, N_DIM))
    rows[rng.permutation(M)[:n_zero]] = 0.0
    return rows, eps


@settings(max_examples=10, deadline=None)
@given(rows_and_eps())
def test_angle_cluster_properties(data):
    rows_np, eps = data
    with jax.enable_x64(True):
        res = jaxland.angle_cluster(jnp.asarray(rows_np), eps, chunk_size=5)
        chex.assert_shape(res.mask, (M,))
        mask = np.asarray(res.mask)
        ang, valid = _angles_np(rows_np)
        # zero-row policy: zero rows are never in a cluster
        assert not np.any(mask & ~valid)
        # every pair in the cluster is within 2ε (1e-9: float64 rounding of cosines near 1)
        sel = np.nonzero(mask)[0]
        if sel.size:
            assert ang[np.ix_(sel, sel)].max() <= 2 * eps + 1e-6
        # at least as large as the largest ε-neighbourhood; rows within 1e-6 of the threshold are
        # ambiguous in floating point and are left out of the brute-force count
        nbhd = ((ang <= eps - 1e-6) & valid[:, None] & valid[None, :]).sum(axis=1)
        assert int(res.size) == mask.sum() >= nbhd.max(initial=0)
        # the guaranteed pigeonhole size of lemma9_size_bound
        assert int(res.size) >= jaxland.lemma9_size_bound(int(valid.sum()), N_DIM, eps)


def test_angle_cluster_chunking_and_jit():
    with jax.enable_x64(True):
        rows = jax.random.normal(jax.random.PRNGKey(0), (M, N_DIM))
        a = jaxland.angle_cluster(rows, 0.7)
        b = jaxland.angle_cluster(rows, 0.7, chunk_size=1)
        c = jax.jit(lambda r, e: jaxland.angle_cluster(r, e, chunk_size=4))(rows, jnp.asarray(0.7))
        for other in (b, c):
            chex.assert_trees_all_equal(a.mask, other.mask)
            assert int(a.size) == int(other.size)


def test_angle_cluster_zero_rows():
    rows = jnp.zeros((5, 3)).at[2].set(jnp.array([1.0, 0.0, 0.0]))
    res = jaxland.angle_cluster(rows, 0.1)
    assert int(res.size) == 1 and bool(res.mask[2]) and int(res.mask.sum()) == 1
    assert int(jaxland.angle_cluster(jnp.zeros((4, 2)), 0.3).size) == 0


def test_lemma9_eps_and_bound():
    assert math.isclose(jaxland.lemma9_eps(64, 3, 0.5), 64 ** (-0.5 / 3))
    # the bound is a count of rows: between 0 and m, monotone in ε and m
    b = [jaxland.lemma9_size_bound(1000, 2, e) for e in (0.05, 0.2, 0.8, 3.0)]
    assert b == sorted(b) and 0 <= b[0] and b[-1] <= 1000
    assert jaxland.lemma9_size_bound(1000, 2, math.pi) == 1000
    assert jaxland.lemma9_size_bound(0, 2, 0.5) == 0
    # η ∈ (0, 1) as in the paper (0 < η < 1); the message names the argument and the value
    for bad in (0.0, 1.0, 1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"eta must be a number in \(0, 1\); got"):
            jaxland.lemma9_eps(10, 2, bad)
    with pytest.raises(ValueError, match="eta must be a number"):
        jaxland.lemma9_eps(10, 2, "0.5")
    with pytest.raises(ValueError, match="m must"):
        jaxland.lemma9_eps(0, 2, 0.5)
    with pytest.raises(ValueError, match="eps"):
        jaxland.lemma9_size_bound(10, 2, 0.0)


def _check_plan(plan, rows, l):
    freed = np.asarray(plan.freed)
    target = np.asarray(plan.target)
    n_freed = int(plan.n_freed)
    assert n_freed == l
    assert len(set(freed.tolist())) == l  # distinct
    valid = np.linalg.norm(np.asarray(rows), axis=1) > 0
    for i, j in zip(freed, target, strict=True):
        if j < 0:
            assert not valid[i]  # only zero rows are dropped without a representative
        else:
            assert valid[i] and j != i and j not in freed  # chains resolved to a kept unit
    np.testing.assert_array_equal(np.nonzero(np.asarray(plan.freed_mask))[0], np.sort(freed))
    ang = np.asarray(row_angles(rows[freed], rows[np.where(target >= 0, target, 0)]))
    np.testing.assert_allclose(np.asarray(plan.angles), np.where(target >= 0, ang, 0), atol=1e-12)
    assert float(plan.max_angle) == pytest.approx(float(np.max(plan.angles)))


@pytest.mark.parametrize("method", ["greedy", "cluster", "best"])
def test_merge_plan_valid(method):
    with jax.enable_x64(True):
        rows = jax.random.normal(jax.random.PRNGKey(1), (M, N_DIM)).at[3].set(0.0)
        eps = 0.9
        plan = jaxland.merge_plan(rows, 5, eps, method=method, chunk_size=5)
        _check_plan(plan, rows, 5)
        # the zero row is freed first
        assert int(plan.freed[0]) == 3 and int(plan.target[0]) == -1
        if method == "cluster":
            # Lemma 9: if the ε-neighbourhood of the centre holds l + 1 rows, every merge angle ≤ ε
            if int(plan.cluster_size) >= 5 + 1:
                assert float(plan.max_angle) <= eps + 1e-9


def test_merge_plan_best_is_min_and_greedy_small_angles():
    with jax.enable_x64(True):
        rows = jax.random.normal(jax.random.PRNGKey(2), (M, N_DIM))
        g = jaxland.merge_plan(rows, 5, 0.8, method="greedy", chunk_size=5)
        c = jaxland.merge_plan(rows, 5, 0.8, method="cluster", chunk_size=5)
        b = jaxland.merge_plan(rows, 5, 0.8, chunk_size=5)
        assert float(b.max_angle) <= min(float(g.max_angle), float(c.max_angle)) + 1e-12
        # greedy frees units in order of increasing nearest-neighbour angle: its first merge is the
        # closest pair of rows
        ang, _ = _angles_np(rows)
        np.fill_diagonal(ang, np.inf)
        assert float(g.angles[0]) == pytest.approx(ang.min(), abs=1e-9)


def test_merge_plan_chains_resolved():
    # rows on a circle: 1 and 2 are closest (0.0005) so 1 merges into 2 first; 0's nearest
    # neighbour is 1, already freed, so 0 must go to 1's representative 2 (the chain 0 → 1 → 2)
    with jax.enable_x64(True):
        th = jnp.array([0.0, 0.008, 0.0085, 0.6, 1.2, 1.8, 2.4, 3.0, 3.6, 4.2, 4.8, 5.4])
        rows = jnp.stack([jnp.cos(th), jnp.sin(th), jnp.zeros_like(th)], axis=1)
        plan = jaxland.merge_plan(rows, 5, 0.8, method="greedy", chunk_size=5)
        _check_plan(plan, rows, 5)
        assert int(plan.freed[0]) == 1 and int(plan.target[0]) == 2
        assert int(plan.freed[1]) == 0 and int(plan.target[1]) == 2  # chain resolved


def test_merge_plan_bad_input():
    rows = jnp.ones((6, 2))
    with pytest.raises(ValueError, match="l must"):
        jaxland.merge_plan(rows, 4, 0.5)
    with pytest.raises(ValueError, match="l must"):
        jaxland.merge_plan(rows, 0, 0.5)
    with pytest.raises(ValueError, match="eps is needed"):
        jaxland.merge_plan(rows, 2)
    with pytest.raises(ValueError, match="method"):
        jaxland.merge_plan(rows, 2, 0.5, method="nope")
    with raises_naming("rows", ValueError, match="rows must"):
        jaxland.angle_cluster(jnp.ones(4), 0.5)
    with pytest.raises(ValueError, match="eps must"):
        jaxland.angle_cluster(rows, -0.1)
    with pytest.raises(ValueError, match="eps must"):
        jaxland.angle_cluster(rows, jnp.ones(2))
    with raises_naming("rows", TypeError, match="floating"):
        jaxland.angle_cluster(jnp.ones((3, 2), jnp.int32), 0.5)


# ----------------------------------------------------------------------------------------------
# value checks that fire under jit too (issue 12, items 2 and 8)

# An equinox.error_if inside jax.jit surfaces as jax's runtime error: a JaxRuntimeError (a
# RuntimeError) or, when it is raised while the result is synchronised, a ValueError holding the same
# text. Either way the message is ours, which is what the tests match.
JIT_ERRORS = (RuntimeError, ValueError)


def test_eps_and_eta_checked_under_jit():
    rows = jax.random.normal(jax.random.PRNGKey(0), (M, N_DIM))
    cluster = jax.jit(lambda r, e: jaxland.angle_cluster(r, e))
    plan = jax.jit(lambda r, e: jaxland.merge_plan(r, 3, e))
    eps9 = jax.jit(lambda e: jaxland.lemma9_eps(M, N_DIM, e))
    # traced values in range: the same results as the eager calls
    chex.assert_trees_all_equal(cluster(rows, 0.7).mask, jaxland.angle_cluster(rows, 0.7).mask)
    chex.assert_trees_all_close(eps9(0.5), jaxland.lemma9_eps(M, N_DIM, 0.5), rtol=1e-6)
    assert int(cluster(rows, math.pi).size) == M  # ε = π, rounded up in float32, is allowed
    # out of range under jit: the eqx.error_if fires when the compiled function runs (before the
    # fix, ε = −0.1 returned a cluster)
    for bad in (-0.1, 0.0, 4.0, float("nan")):
        with pytest.raises(JIT_ERRORS, match=r"eps must be an angle in \(0, π\]"):
            jax.block_until_ready(cluster(rows, bad))
        with pytest.raises(JIT_ERRORS, match=r"eps must be an angle in \(0, π\]"):
            jax.block_until_ready(plan(rows, bad))
    for bad in (0.0, 1.0, -0.5, float("nan")):
        with pytest.raises(JIT_ERRORS, match=r"eta must be a number in \(0, 1\)"):
            jax.block_until_ready(eps9(bad))


def test_nan_rows_refused_eagerly_and_under_jit():
    rows = jax.random.normal(jax.random.PRNGKey(0), (M, N_DIM))
    cluster = jax.jit(lambda r: jaxland.angle_cluster(r, 0.5))
    plan = jax.jit(lambda r: jaxland.merge_plan(r, 3, 0.5))
    for bad in (jnp.nan, jnp.inf):
        r = rows.at[4, 1].set(bad)
        # before the fix, the NaN row silently dropped out of every cosine comparison
        with pytest.raises(ValueError, match="rows must be finite; row 4 holds NaN or inf"):
            jaxland.angle_cluster(r, 0.5)
        with pytest.raises(ValueError, match="rows must be finite; row 4"):
            jaxland.merge_plan(r, 3, 0.5)
        with pytest.raises(JIT_ERRORS, match="rows must be finite"):
            jax.block_until_ready(cluster(r))
        with pytest.raises(JIT_ERRORS, match="rows must be finite"):
            jax.block_until_ready(plan(r))
