"""trajectory_directions against numpy's SVD (Li et al. 2018, §7); float64 for exact comparisons."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses
from hypothesis import given, settings

from jaxland import TrajectoryDirections, trajectory_directions
from jaxland.landscape import _trajectory


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


def reference(M, num):
    """numpy: rows θ_i − θ_T, centred, thin SVD; each direction signed so that the checkpoint
    farthest from the origin along it has a positive coordinate."""
    D = M - M[-1]
    C = D - D.mean(axis=0)
    _, S, Vt = np.linalg.svd(C, full_matrices=False)
    Vt = Vt[:num]
    coords = D @ Vt.T
    i = np.argmax(np.abs(coords), axis=0)
    sign = np.sign(coords[i, np.arange(num)])
    return Vt * sign[:, None], (S**2 / np.sum(S**2))[:num], coords * sign, S[:num]


def flat(tree):
    """Inexact leaves raveled in tree order (the test's own ravel, independent of the module's)."""
    return np.concatenate(
        [np.ravel(l) for l in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))]
    )


def random_walk(T, shapes, seed, drift=1.0):
    """T checkpoints of a dict model: a drifting random walk (a dominant direction, plus noise)."""
    rng = np.random.default_rng(seed)
    theta = {k: rng.normal(size=s) for k, s in shapes.items()}
    step = {k: rng.normal(size=s) for k, s in shapes.items()}
    out = []
    for _ in range(T):
        out.append({k: jnp.asarray(v) for k, v in theta.items()})
        theta = {k: v + drift * step[k] + 0.3 * rng.normal(size=v.shape) for k, v in theta.items()}
    return out


def check_against_numpy(result, checkpoints, num, tol):
    M = np.stack([flat(c) for c in checkpoints])
    V, ratio, coords, S = reference(M, num)
    T = len(checkpoints)
    chex.assert_shape(result.explained_variance_ratio, (num,))
    chex.assert_shape(result.coordinates, (T, num))
    chex.assert_shape(result.singular_values, (num,))
    assert len(result.directions) == num
    got = np.stack([flat(d) for d in result.directions])
    np.testing.assert_allclose(got, V, atol=tol)
    np.testing.assert_allclose(result.explained_variance_ratio, ratio, atol=tol)
    np.testing.assert_allclose(
        result.coordinates, coords, atol=tol * max(1.0, np.abs(coords).max())
    )
    np.testing.assert_allclose(result.singular_values, S, rtol=tol)
    np.testing.assert_allclose(got @ got.T, np.eye(num), atol=tol)  # orthonormal
    np.testing.assert_array_equal(result.coordinates[-1], 0.0)  # θ_T is the origin


def test_matches_numpy_svd_on_a_model_with_non_parameter_leaves():
    key = jax.random.PRNGKey(0)
    base = eqx.nn.MLP(3, 2, 4, 1, key=key)  # leaves include the activation functions
    params, rest = eqx.partition(base, eqx.is_inexact_array)
    rng = np.random.default_rng(1)
    cks = []
    for i in range(7):
        p = jax.tree.map(lambda a, i=i: a + 0.1 * i + 0.05 * rng.normal(size=a.shape), params)
        cks.append(eqx.combine(p, rest))
    r = trajectory_directions(cks, num=3)
    assert isinstance(r, TrajectoryDirections)
    # float64 SVDs of a 7 × 33 matrix by two LAPACK paths: agreement to ~1e-13; 1e-10 leaves room.
    check_against_numpy(r, cks, 3, 1e-10)
    for d in r.directions:  # same structure, non-parameter leaves carried through
        assert jax.tree.structure(d) == jax.tree.structure(base)
        assert d.activation is base.activation
    assert r.origin is cks[-1]
    # The trajectory drifts along one direction: the first component dominates.
    assert float(r.explained_variance_ratio[0]) > 0.9


def test_leaf_dtypes_are_kept():
    rng = np.random.default_rng(2)
    cks = [
        {
            "a": jnp.asarray(rng.normal(size=(4,)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(2, 3))),
            "steps": jnp.asarray(i),
            "name": "net",
        }
        for i in range(5)
    ]
    r = trajectory_directions(cks, num=2)
    for d in r.directions:
        assert d["a"].dtype == jnp.float32 and d["b"].dtype == jnp.float64
        assert d["name"] == "net" and int(d["steps"]) == 4  # non-parameter leaves from the origin
    # computed in float64 (the promoted dtype); the float32 leaf of the direction is rounded once.
    check_against_numpy(r, cks, 2, 1e-6)


@settings(max_examples=4, deadline=None, derandomize=True)
@given(T=st.integers(2, 7), P=st.integers(1, 12), data=st.data())
def test_hypothesis_shapes_and_numpy(T, P, data):
    num = data.draw(st.integers(1, min(T - 1, P)))
    rng = np.random.default_rng(T * 100 + P)
    cks = [{"w": jnp.asarray(rng.normal(size=(P,)))} for _ in range(T)]
    r = trajectory_directions(cks, num=num)
    # Random rows: σ_k are well separated with probability 1, but a near-tie makes the directions
    # ill-conditioned (error ~ ε σ_1 / gap); 1e-8 allows gaps down to ~1e-7 σ_1.
    check_against_numpy(r, cks, num, 1e-8)


@pytest.mark.parametrize("T,P,num", [(2, 5, 1), (6, 40, 2), (9, 300, 4)])
def test_gram_route_matches_the_svd_route(T, P, num):
    rng = np.random.default_rng(P)
    cks = random_walk(T, {"w": (P // 2,), "v": (P - P // 2,)}, seed=P)
    rows = [jnp.stack([c[k] for c in cks]) for k in ("v", "w")]  # tree order of the dict leaves
    S1, V1, r1, c1 = _trajectory._pca(rows, num, "svd")
    S2, V2, r2, c2 = _trajectory._pca(rows, num, "gram")
    V_ref, ratio_ref, coords_ref, S_ref = reference(
        np.concatenate([np.asarray(r) for r in rows], axis=1), num
    )
    for S, V, ratio, coords in ((S1, V1, r1, c1), (S2, V2, r2, c2)):
        V = np.concatenate([np.asarray(v) for v in V], axis=1)
        # The Gram route squares the condition number: directions to ~ε σ_1²/(σ_k² − σ_{k+1}²),
        # which for these walks is ≲ 1e-12; 1e-9 is a safe bound that still catches a wrong sign or
        # order.
        np.testing.assert_allclose(V, V_ref, atol=1e-9)
        np.testing.assert_allclose(ratio, ratio_ref, atol=1e-12)
        np.testing.assert_allclose(coords, coords_ref, atol=1e-9 * np.abs(coords_ref).max())
        np.testing.assert_allclose(S, S_ref, rtol=1e-9)
    del rng


def test_auto_route_is_gram_for_large_P_and_never_forms_P_by_P():
    """P = 10⁷: the traced computation holds nothing larger than T × (largest leaf); no P × P array
    and no T × P concatenation. Checked on the jaxpr (abstract shapes, no memory used; a real run
    at this size takes ~0.5 GB and a few seconds, too long for the test suite)."""
    T, P = 4, 10_000_000
    cks = [
        {
            "w": jax.ShapeDtypeStruct((P // 2,), jnp.float32),
            "b": jax.ShapeDtypeStruct((P - P // 2,), jnp.float32),
        }
        for _ in range(T)
    ]

    jaxpr = jax.make_jaxpr(lambda c: trajectory_directions(c, num=2).coordinates)(cks)

    def sizes(jx):
        for eqn in jx.eqns:
            for v in eqn.outvars:
                yield int(np.prod(v.aval.shape)) if hasattr(v.aval, "shape") else 0
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", None)
                if inner is not None:
                    yield from sizes(inner if hasattr(inner, "eqns") else inner.jaxpr)

    biggest = max(sizes(jaxpr.jaxpr))
    # The stacked largest leaf, T × P/2 (the SVD route would concatenate T × P and fail this).
    assert biggest <= T * (P - P // 2), biggest


def test_jit():
    cks = random_walk(5, {"w": (3, 2), "b": (4,)}, seed=3)
    eager = trajectory_directions(cks, num=2)
    jitted = jax.jit(lambda c: trajectory_directions(c, num=2))(cks)
    chex.assert_trees_all_close(jitted, eager, atol=1e-12)


def test_errors():
    cks = random_walk(4, {"w": (3,)}, seed=4)
    with pytest.raises(
        ValueError, match=r"num must be an integer in \[1, min\(T - 1, P\)\] = \[1, 3\].*got 4"
    ):
        trajectory_directions(cks, num=4)
    for bad in (0, -1, 1.5, True):
        assert_refuses(lambda: trajectory_directions(cks, num=bad), "num", ValueError,
                       match="num must be an integer")
    with pytest.raises(ValueError, match=r"\[1, 2\].*P = 2 parameters.*got 3"):
        trajectory_directions(random_walk(5, {"w": (2,)}, seed=5), num=3)
    with pytest.raises(ValueError, match="at least 2 pytrees.*got 1"):
        trajectory_directions(cks[:1], num=1)
    assert_refuses(lambda: trajectory_directions(iter(cks)), "checkpoints", TypeError,
                   match="checkpoints must be a list or tuple")
    with pytest.raises(ValueError, match=r"checkpoints\[1\]\['w'\] has shape \(4,\)"):
        trajectory_directions([cks[0], {"w": jnp.zeros(4)}, cks[2]], num=1)
    with pytest.raises(ValueError, match=r"checkpoints\[0\] has a different parameter structure"):
        trajectory_directions([{"v": jnp.zeros(3)}, cks[1]], num=1)
    with pytest.raises(ValueError, match="no parameters"):
        trajectory_directions([{"n": 1}, {"n": 2}], num=1)
    with pytest.raises(eqx.EquinoxRuntimeError, match="fewer than num independent directions"):
        trajectory_directions([cks[0]] * 3, num=1)
    # three collinear points span one direction only
    line = [{"w": jnp.asarray([1.0, 2.0, 3.0]) * t} for t in (0.0, 1.0, 2.0)]
    assert float(trajectory_directions(line, num=1).explained_variance_ratio[0]) == pytest.approx(
        1.0
    )
    with pytest.raises(eqx.EquinoxRuntimeError, match="fewer than num independent directions"):
        trajectory_directions(line, num=2)
