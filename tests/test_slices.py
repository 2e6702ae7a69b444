"""Tests for jaxland.landscape._slices (planes through three points, filter-normalised directions) and the plot
helpers of jaxland.landscape._plot."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from _nets import np_net, to64
from conftest import assert_refuses
from hypothesis import given, settings

import jaxland
from jaxland import paths as jp

matplotlib.use("Agg")
KAPPA = 0.1
RTOL = 2e-5  # float32: structured vs plain vs direct sums of O(1) products (see test_evaluate.py)


RES = (5, 3)  # one grid size (15 points) throughout: one compiled kernel serves all the tests






def make_nets(k=3):
    rng = np.random.default_rng(0)
    return [np_net(jaxland.SkipNet, rng) for _ in range(k)]


def make_obj(x64=False):
    rng = np.random.default_rng(100)
    x = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
    if x64:
        x, y = to64((x, y))
    return jaxland.objective_fn(x, y, kappa=KAPPA), x, y


@eqx.filter_jit
def direct(obj, o, u, v, al, be):
    """F(o + α u + β v) for each pair (α, β), computed directly (no path machinery)."""
    return jax.vmap(lambda a_, b_: obj(jax.tree.map(lambda p, q, r: p + a_ * q + b_ * r, o, u, v)))(al, be)


@pytest.mark.parametrize("structured", [True, False])
def test_plane_slice_values_and_geometry(structured):
    a, b, c = make_nets()
    obj, _, _ = make_obj()
    sl = jaxland.plane_slice(obj, a, b, c, resolution=RES, structured=structured)
    chex.assert_shape(sl.values, RES)
    chex.assert_shape(sl.anchors, (3, 2))
    A, B = np.meshgrid(np.asarray(sl.alphas), np.asarray(sl.betas), indexing="ij")
    want = direct(obj, sl.origin, sl.u, sl.v, jnp.asarray(A.ravel()), jnp.asarray(B.ravel()))
    np.testing.assert_allclose(np.asarray(sl.values).ravel(), np.asarray(want), rtol=RTOL)
    # the default grid covers the three anchors with a margin
    an = np.asarray(sl.anchors)
    assert np.all(an[:, 0] > sl.alphas[0]) and np.all(an[:, 0] < sl.alphas[-1])
    assert np.all(an[:, 1] > sl.betas[0]) and np.all(an[:, 1] < sl.betas[-1])


def test_plane_slice_anchors_float64():
    """u, v orthonormal; the anchors are (0, 0), (‖b − a‖, 0), (⟨c − a, û⟩, ‖(c − a)⊥‖) (computed here
    independently); F at the anchors' grid points equals F(a), F(b), F(c) (float64: to 1e-12)."""
    nets = make_nets()
    with jax.enable_x64(True):
        a, b, c = to64(nets)
        obj, _, _ = make_obj(x64=True)
        vec = lambda n: np.concatenate([np.asarray(l).ravel() for l in jax.tree.leaves(n)])  # noqa: E731
        eb, ec = vec(b) - vec(a), vec(c) - vec(a)
        n1 = float(np.linalg.norm(eb))
        cu = float(ec @ eb) / n1
        n2 = float(np.sqrt(ec @ ec - cu**2))
        want_anchors = np.array([[0.0, 0.0], [n1, 0.0], [cu, n2]])
        sl = jaxland.plane_slice(obj, a, b, c, alphas=want_anchors[:, 0], betas=want_anchors[:, 1])
        np.testing.assert_allclose(np.asarray(sl.anchors), want_anchors, rtol=1e-12, atol=1e-12)
        U, V = vec(sl.u), vec(sl.v)
        np.testing.assert_allclose([U @ U, V @ V, U @ V], [1, 1, 0], atol=1e-12)
        coords = np.asarray(jaxland.slice_coordinates(sl, [a, b, c]))
        np.testing.assert_allclose(coords, want_anchors, atol=1e-12)
        got = np.diag(np.asarray(sl.values))  # (α_k, β_k) pairs on the diagonal
        want = jax.jit(jax.vmap(obj))(jp.stack_trees([a, b, c]))
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-12)


def test_slice_coordinates_of_paths():
    a, b, c = make_nets()
    obj, _, _ = make_obj()
    sl = jaxland.plane_slice(obj, a, b, c, resolution=RES)
    # a Bézier curve with control points a, c, b lies in the plane: its projection is the planar
    # Bézier curve of the anchors
    ts = jnp.linspace(0, 1, 7)
    xy = jaxland.slice_coordinates(sl, jp.bezier([a, c, b]), ts)
    an = np.asarray(sl.anchors)
    t = np.asarray(ts)[:, None]
    want = (1 - t) ** 2 * an[0] + 2 * t * (1 - t) * an[2] + t**2 * an[1]
    np.testing.assert_allclose(np.asarray(xy), want, atol=1e-4)  # float32 coordinates of size ~10
    chex.assert_shape(jaxland.slice_coordinates(sl, a), (1, 2))


def test_random_directions_slice():
    a = make_nets(1)[0]
    obj, _, _ = make_obj()
    sl = jaxland.random_directions_slice(obj, a, key=jax.random.key(5), resolution=RES, span=0.5)
    chex.assert_shape(sl.values, RES)
    assert float(sl.alphas[2]) == 0.0 and float(sl.betas[1]) == 0.0  # the centre is a grid point
    A, B = np.meshgrid(np.asarray(sl.alphas), np.asarray(sl.betas), indexing="ij")
    want = direct(obj, a, sl.u, sl.v, jnp.asarray(A.ravel()), jnp.asarray(B.ravel()))
    np.testing.assert_allclose(np.asarray(sl.values).ravel(), np.asarray(want), rtol=RTOL)
    # at (0, 0) `direct` evaluates obj(a + 0 u + 0 v) = obj(a)
    # reproducible from the key; explicit directions give the same slice
    d = jaxland.filter_normalized_directions(a, 2, key=jax.random.key(5))
    chex.assert_trees_all_equal(d[0], sl.u)
    s2 = jaxland.random_directions_slice(obj, a, directions=d, resolution=RES, span=0.5)
    np.testing.assert_allclose(np.asarray(s2.values), np.asarray(sl.values), rtol=1e-6)


def test_one_grid_point_is_the_centre():
    """resolution=1 evaluates the centre of the range, not its corner (issue 12 #5)."""
    a, b, c = make_nets()
    obj, _, _ = make_obj()
    sl = jaxland.random_directions_slice(obj, a, key=jax.random.key(5), resolution=1, span=0.5)
    assert sl.values.shape == (1, 1) and float(sl.alphas[0]) == 0.0 and float(sl.betas[0]) == 0.0
    np.testing.assert_allclose(float(sl.values[0, 0]), float(obj(a)), rtol=RTOL)
    # a row of 1 × 3: the middle line β = 0
    row = jaxland.random_directions_slice(obj, a, key=jax.random.key(5), resolution=(3, 1), span=0.5)
    np.testing.assert_array_equal(np.asarray(row.alphas), [-0.5, 0.0, 0.5])
    assert float(row.betas[0]) == 0.0
    # the plane through a, b, c: one point is the centre of the box around the three anchors
    pl = jaxland.plane_slice(obj, a, b, c, resolution=1)
    an = np.asarray(pl.anchors)
    np.testing.assert_allclose([float(pl.alphas[0]), float(pl.betas[0])],
                               0.5 * (an.min(0) + an.max(0)), rtol=1e-6)


def test_key_is_keyword_only():
    a = make_nets(1)[0]
    obj, _, _ = make_obj()
    with pytest.raises(TypeError):
        jaxland.filter_normalized_directions(jax.random.key(0), a)  # positional key: refused
    with pytest.raises(TypeError):
        jaxland.random_directions_slice(obj, a, jax.random.key(0))
    assert_refuses(lambda: jaxland.filter_normalized_directions(a, key=None), "key", ValueError,
                   match="key is required")


@settings(max_examples=4, deadline=None)
@given(scales=st.lists(st.sampled_from([0.0, 1e-3, 1.0, 30.0]), min_size=3, max_size=3),
       seed=st.integers(0, 999))
def test_filter_normalization(scales, seed):
    """Each filter (row) of a direction has the norm of the centre's row (zero rows stay zero); 1-D
    leaves are zero by default. Fixed shapes (one compiled kernel); rows scaled over decades."""
    rng = np.random.default_rng(seed)
    sc = np.asarray(scales, np.float32)
    center = {"W": jnp.asarray(rng.normal(size=(3, 4)) * sc[:, None], jnp.float32),
              "T": jnp.asarray(rng.normal(size=(3, 4, 2)) * sc[:, None, None], jnp.float32),
              "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    (d,) = jaxland.filter_normalized_directions(center, 1, key=jax.random.key(seed))
    for k in ("W", "T"):
        got = np.linalg.norm(np.asarray(d[k]).reshape(3, -1), axis=1)
        want = np.linalg.norm(np.asarray(center[k]).reshape(3, -1), axis=1)
        np.testing.assert_allclose(got, want, rtol=1e-5)  # float32 norms of ≤ 8 terms
    assert not np.any(np.asarray(d["bias"]))
    (d1,) = jaxland.filter_normalized_directions(center, 1, key=jax.random.key(seed), ignore_1d=False)
    np.testing.assert_allclose(np.linalg.norm(d1["bias"]), np.linalg.norm(center["bias"]), rtol=1e-5)


def test_slice_errors():
    a, b, c = make_nets()
    obj, _, _ = make_obj()
    mid = jp.linear(a, b)(0.5)
    with pytest.raises(ValueError, match="collinear"):
        jaxland.plane_slice(obj, a, b, mid)
    with pytest.raises(ValueError, match="a and b coincide"):
        jaxland.plane_slice(obj, a, a, c)
    with pytest.raises(ValueError, match="a and c"):
        jaxland.plane_slice(obj, a, b, jaxland.TwoLayer(a.W1, a.W2))
    with pytest.raises(ValueError, match="resolution"):
        jaxland.plane_slice(obj, a, b, c, resolution=(3, 0))
    with pytest.raises(ValueError, match="alphas"):
        jaxland.plane_slice(obj, a, b, c, alphas=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="key or explicit directions"):
        jaxland.random_directions_slice(obj, a)
    with pytest.raises(ValueError, match="span"):
        jaxland.random_directions_slice(obj, a, key=jax.random.key(0), span=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        jaxland.plane_slice(obj, a, b, jax.tree.map(lambda l: l * jnp.nan, c))


def test_plot_helpers():
    import matplotlib.pyplot as plt

    a, b, c = make_nets()
    obj, _, _ = make_obj()
    sl = jaxland.plane_slice(obj, a, b, c, resolution=RES)
    ax = jaxland.plot_slice(sl, {"bezier": jp.bezier([a, c, b]), "segment": np.array([[0, 0], [1, 1.0]])},
                            ts=np.linspace(0, 1, 9), log=True)
    labels = [ln.get_label() for ln in ax.get_lines()]
    assert "bezier" in labels and "segment" in labels
    xy = next(ln for ln in ax.get_lines() if ln.get_label() == "bezier").get_xydata()
    chex.assert_shape(xy, (9, 2))
    with pytest.raises(ValueError, match=r"shape \(P, 2\)"):
        jaxland.plot_slice(sl, [np.zeros((3, 3))])
    ts = np.linspace(0, 1, 5)
    ax2 = jaxland.plot_paths({"one": (ts, ts * (1 - ts)), "two": (ts, ts)})
    assert [ln.get_label() for ln in ax2.get_lines()][::2] == ["one", "two"]
    with pytest.raises(ValueError, match="must both have shape"):
        jaxland.plot_paths((ts, ts[:3]))
    plt.close("all")
