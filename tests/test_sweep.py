"""The breakpoint sweep (jaxland.engine._sweep): F along straight pieces from incremental switch updates.

Exactness is checked in float64 against the plain evaluation (vmap of F over γ(t)): the sweep sums
the same products in a different order, so values agree to ~1e-15 relative; 1e-11 leaves room for
the accumulated switch updates (≤ m per sample, each a rounding of ~1e-16).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses
from hypothesis import given, settings, strategies as st

import jaxland
import jaxland.engine._structured as st_mod
import jaxland.engine._sweep as sw
from jaxland import paths as jp

RTOL64 = 1e-11


def _net(cls, rng, n, m, d_y, d_g, hidden):
    def f(*shape):
        return rng.normal(size=shape) / np.sqrt(shape[-1])

    if cls is jaxland.TwoLayer:
        return cls(f(m, n), f(d_y, m))
    sizes = (d_g, *hidden, 2)
    theta = tuple(f(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1))
    return cls(f(m, n), f(d_y, m), f(m, 2), f(d_g, m), theta)


def _path(kind, a, b, c):
    return {
        "linear": lambda: jp.linear(a, b),
        "polychain": lambda: jp.polychain([a, c, b]),
        "bezier1": lambda: jp.bezier([a, b]),
        "reverse": lambda: jp.reverse(jp.concat(jp.linear(a, c), jp.polychain([c, a, b]))),
    }[kind]()


def _compare(cls, kind, ts, seed=0, n=3, m=6, d_y=2, d_g=2, hidden=(3,), N=11, kappa=0.1):
    rng = np.random.default_rng(seed)
    nets = [_net(cls, rng, n, m, d_y, d_g, hidden) for _ in range(3)]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(N, n)))
        y = jnp.asarray(rng.normal(size=(N, d_y)))
        path = _path(kind, *[jax.tree.map(jnp.asarray, t) for t in nets])
        obj = jaxland.objective_fn(x, y, kappa=kappa)
        fast = jaxland.evaluate_path(obj, path, ts, sweep=True)
        plain = jaxland.evaluate_path(obj, path, ts, structured=False)
        chex.assert_shape(fast, (len(ts),))
        assert fast.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=RTOL64)


GRID = np.linspace(0.0, 1.0, 29)  # uniform: the arithmetic point lookup
RAND = np.concatenate([np.random.default_rng(7).uniform(size=25), [0.0, 1.0, 0.5, 0.5]])  # unsorted


# every piece kind with SkipNet; the other models (a different rows/head) on one kind each
CASES = ([(jaxland.SkipNet, k) for k in ("linear", "polychain", "bezier1", "reverse")]
         + [(jaxland.NoSkipNet, "linear"), (jaxland.TwoLayer, "polychain")])


@pytest.mark.parametrize("cls,kind", CASES, ids=[f"{c.__name__}-{k}" for c, k in CASES])
def test_sweep_equals_plain_float64(cls, kind):
    _compare(cls, kind, GRID if kind in ("linear", "reverse") else RAND)


@settings(max_examples=3, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 9),
    n=st.integers(1, 4),
    hidden=st.sampled_from([(), (2,), (3, 2)]),
    P=st.integers(1, 40),
    uniform=st.booleans(),
)
def test_sweep_random_shapes_and_points(seed, m, n, hidden, P, uniform):
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, 1.0, P) if uniform else rng.uniform(size=P)
    _compare(jaxland.SkipNet, "linear", ts, seed=seed, n=n, m=m, hidden=hidden)


def test_switch_exactly_at_a_point():
    """Breakpoints that coincide with evaluation points (t = 0.25, 0.5 exactly in binary) take the
    same value from either side: the sweep equals the plain evaluation there too."""
    with jax.enable_x64(True):
        # unit 0 switches on at t = 0.5, unit 1 off at t = 0.25 (x = 1): A + tD with A = -0.5, D = 1
        # and A = 0.25, D = -1 (W1 at t=0: (-0.5, 0.25); at t=1: (0.5, -0.75))
        a = jaxland.TwoLayer(jnp.array([[-0.5], [0.25]]), jnp.array([[1.0, 2.0]]))
        b = jaxland.TwoLayer(jnp.array([[0.5], [-0.75]]), jnp.array([[3.0, -1.0]]))
        x, y = jnp.ones((1, 1)), jnp.zeros((1, 1))
        obj = jaxland.objective_fn(x, y)
        ts = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
        fast = jaxland.evaluate_path(obj, jp.linear(a, b), ts, sweep=True)
        plain = jaxland.evaluate_path(obj, jp.linear(a, b), ts, structured=False)
        np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=1e-14, atol=1e-15)


def test_sweep_data_chunks_and_batches(monkeypatch):
    """Splitting the samples into chunks (a small entry budget) and into batches gives the same
    values: the per-sample loss sums are added, then divided by N once."""
    rng = np.random.default_rng(3)
    a, b = (_net(jaxland.SkipNet, rng, 3, 6, 1, 2, (2,)) for _ in range(2))
    with jax.enable_x64(True):
        x, y = jnp.asarray(rng.normal(size=(13, 3))), jnp.asarray(rng.normal(size=(13, 1)))
        path = jp.linear(*[jax.tree.map(jnp.asarray, t) for t in (a, b)])
        obj = jaxland.objective_fn(x, y, kappa=0.2)
        whole = jaxland.evaluate_path(obj, path, GRID, sweep=True)
        monkeypatch.setattr(sw, "_SWEEP_SAMPLE_ENTRIES", 6 * 4)  # 4 samples per chunk
        chunked = jaxland.evaluate_path(obj, path, GRID, sweep=True)
        batched = jaxland.evaluate_path(obj, path, GRID, sweep=True, batch_size=5)
        np.testing.assert_allclose(np.asarray(chunked), np.asarray(whole), rtol=1e-13)
        np.testing.assert_allclose(np.asarray(batched), np.asarray(whole), rtol=1e-13)


def test_float32_matches_point_kernel():
    """float32: the sweep and the point-by-point kernel agree to float32 rounding of the O(m)
    switch updates (values of order 1, m = 64: ~1e-6; 1e-4 is far above it and far below any
    modelling difference)."""
    rng = np.random.default_rng(5)
    nets = [_net(jaxland.SkipNet, rng, 4, 64, 1, 8, (8,)) for _ in range(2)]
    a, b = (jax.tree.map(lambda l: jnp.asarray(l, jnp.float32), t) for t in nets)
    x = jnp.asarray(rng.normal(size=(200, 4)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(200, 1)), jnp.float32)
    obj = jaxland.objective_fn(x, y)
    ts = np.linspace(0, 1, 64)
    fast = jaxland.evaluate_path(obj, jp.linear(a, b), ts, sweep=True)
    point = jaxland.evaluate_path(obj, jp.linear(a, b), ts, sweep=False)
    assert fast.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(fast), np.asarray(point), rtol=1e-4)


def test_switch_fraction_counts_breakpoints():
    """With at most _FRACTION_ROWS samples, f is the fraction of (sample, unit) entries whose
    breakpoint −A/D lies in [s_lo, s_hi), for a segment and for its reversal (s ↦ 1 − s); in float64
    exactly (no breakpoint lies within rounding of a window end here)."""
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        a, b = (jax.tree.map(jnp.asarray, _net(jaxland.SkipNet, rng, 3, 7, 1, 2, (2,)))
                for _ in range(2))
        x = jnp.asarray(rng.normal(size=(20, 3)))
        A = np.asarray(x) @ np.asarray(a.W1).T
        D = np.asarray(x) @ (np.asarray(b.W1) - np.asarray(a.W1)).T
        t = -A / D
        for lo, hi in ((0.0, 1.0), (0.2, 0.7)):
            basis, coefs = jp.linear(a, b).combination()
            # (the mean is taken in float32: 1e-6 is far below the 1/140 step of the count)
            assert sw.switch_fraction(basis, coefs, x, lo, hi) == pytest.approx(
                np.mean((t >= lo) & (t < hi)), abs=1e-6)
            (piece,) = jp.reverse(jp.linear(a, b)).pieces()
            basis, coefs = piece.combination()
            want = np.mean((1 - t >= lo) & (1 - t < hi))  # breakpoints of the reversed segment
            assert sw.switch_fraction(basis, coefs, x, lo, hi) == pytest.approx(want, abs=1e-6)


def test_dispatch(monkeypatch):
    """Automatic use: on CPU, affine pieces with ≥ SWEEP_MIN_ENTRIES data entries and
    P ≥ scale · (SWEEP_MIN_POINTS + SWEEP_POINTS_PER_SWITCH · f) points; never for a curved piece,
    with sweep=False, or below the thresholds; always with sweep=True."""
    calls = []
    real = sw.sweep_values

    def spy(*args):
        calls.append(len(args[3]))
        return real(*args)

    monkeypatch.setattr(st_mod, "sweep_values", spy)
    monkeypatch.setattr(sw, "SWEEP_MIN_ENTRIES", 9 * 5)  # this problem's N·m
    monkeypatch.setattr(sw, "SWEEP_MIN_POINTS", 4)
    monkeypatch.setattr(sw, "SWEEP_POINTS_PER_SWITCH", 40)
    rng = np.random.default_rng(1)
    a, b, c = (jax.tree.map(lambda l: jnp.asarray(l, jnp.float32),
                            _net(jaxland.SkipNet, rng, 3, 5, 1, 2, (2,))) for _ in range(3))
    x = jnp.asarray(rng.normal(size=(9, 3)), jnp.float32)
    obj = jaxland.objective_fn(x, jnp.zeros((9, 1), jnp.float32))
    basis, coefs = jp.linear(a, b).combination()
    f = sw.switch_fraction(basis, coefs, x, 0.0, 1.0)
    assert 0 < f < 1
    # the point kernel's cost relative to the fitted one scales the threshold (here clamped to 2)
    _, rel = st_mod._first_layer_plan(basis, 100, True)
    scale = 1 / rel
    need = int(np.ceil(scale * (4 + 40 * f)))  # the threshold P* for this piece
    many = np.linspace(0, 1, need)
    jaxland.evaluate_path(obj, jp.linear(a, b), many)
    assert calls == [need]
    jaxland.evaluate_path(obj, jp.linear(a, b), many, sweep=False)
    jaxland.evaluate_path(obj, jp.linear(a, b), np.linspace(0, 1, need - 1))  # below P*
    assert calls == [need]
    monkeypatch.setattr(sw, "SWEEP_MIN_ENTRIES", 9 * 5 + 1)
    jaxland.evaluate_path(obj, jp.linear(a, b), many)  # too little data
    monkeypatch.setattr(sw, "SWEEP_MIN_ENTRIES", 9 * 5)
    jaxland.evaluate_path(obj, jp.bezier([a, c, b]), many)  # curved: never
    jaxland.evaluate_path(obj, jp.bezier([a, c, b]), many, sweep=True)
    assert calls == [need]
    jaxland.evaluate_path(obj, jp.linear(a, b), many[:3], sweep=True)  # forced
    assert calls == [need, 3]
    # a short window of the segment: fewer units switch inside it, so fewer points suffice
    f_w = sw.switch_fraction(basis, coefs, x, 0.4, 0.6)
    assert f_w < f
    few = np.linspace(0.4, 0.6, int(np.ceil(scale * (4 + 40 * f_w))))
    jaxland.evaluate_path(obj, jp.linear(a, b), few)
    assert few.shape[0] < need and calls == [need, 3, few.shape[0]]
    assert_refuses(lambda: jaxland.evaluate_path(obj, jp.linear(a, b), many, sweep="yes"),
                   "sweep", TypeError, match="sweep must be None, True or False")


# points clustered unevenly (a dense run, a sparse stretch, duplicates, unsorted): the blocks of
# consecutive sorted points see very different numbers of switches (some none, some several
# sub-blocks' worth)
_UNEVEN = np.concatenate([np.linspace(0.30, 0.34, 17), np.random.default_rng(11).uniform(size=16),
                          [0.0, 1.0, 0.5, 0.5]])  # P = 37


@pytest.mark.parametrize("head", ["vmap", "shared"])
@pytest.mark.parametrize("Pb", [1, 4, 32])
@pytest.mark.parametrize("cls", [jaxland.SkipNet, jaxland.NoSkipNet, jaxland.TwoLayer],
                         ids=lambda c: c.__name__)
def test_sweep_blocks_of_points(monkeypatch, cls, Pb, head):
    """Blocks of Pb points per scan step (P = 37 is not a multiple of Pb > 1; its bucket 48 is
    padded to 64 for Pb = 32): several blocks with uneven switch counts, more switches in a block
    than one sub-block (N·m = 1280 entries, about half switch), and Pb = 1 (no cumulative sum).
    Against the plain evaluation in float64 with the module's RTOL64 = 1e-11: the block only
    changes the order of the same additions (a cumulative sum over the block instead of one
    scatter per point) and expands the s-polynomial weights once (products of three affine
    matrices: a few roundings of ~1e-16 each), far below 1e-11."""
    monkeypatch.setattr(sw, "_BLOCK_POINTS", Pb)
    monkeypatch.setattr(sw, "_HEAD", head)  # both block heads: per-point `_head`, shared dots
    seen = []
    real_points, real_blocks = sw._sweep_scan, sw._sweep_blocks

    def spy_points(*args):
        seen.append((args[3].shape[0], 1))  # (padded P, Pb)
        return real_points(*args)

    def spy_blocks(*args):
        seen.append((args[3].shape[0], args[-2]))
        return real_blocks(*args)

    monkeypatch.setattr(sw, "_sweep_scan", spy_points)
    monkeypatch.setattr(sw, "_sweep_blocks", spy_blocks)
    _compare(cls, "linear", _UNEVEN, seed=4, n=3, m=20, N=64, hidden=(3,))
    assert seen and all(P % pb == 0 and pb == Pb for P, pb in seen)
    assert seen[0][0] == {1: 48, 4: 48, 32: 64}[Pb]


def test_block_points_rule():
    """The automatic block: a power of two dividing the bucketed P, ≤ _BLOCK_MAX_POINTS, whose
    switch coefficients fit in _BLOCK_BYTES; 1 when one point's already do not."""
    assert sw.block_points(256, 5, 4, 1024) == 8  # the README toy in float32: 15 KiB a point
    assert sw.block_points(256, 5, 8, 1024) == 4
    assert sw.block_points(256, 5, 4, 12) == 4  # 12 = 3 · 4
    assert sw.block_points(256, 5, 4, 3) == 1
    assert sw.block_points(1, 1, 4, 4096) == sw._BLOCK_MAX_POINTS
    assert sw.block_points(4096, 65, 4, 1024) == 1  # the reference problem: 3.1 MiB a point
