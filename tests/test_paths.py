"""Tests for jaxland.paths: endpoints, continuity, structure (pieces/locate/combination), errors."""

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import np_net
from conftest import raises_naming
from hypothesis import given, settings

import jaxland
from jaxland import paths as jp

KEY = jax.random.key(0)

# Paths are pytrees: one compiled call per path type (eager calls of a Concat run op by op, slowly).
call = eqx.filter_jit(lambda p, t: p(t))
T7 = jnp.array([0.0, 0.13, 0.3, 0.37, 0.5, 0.77, 1.0])  # one shape: one compiled call per path type
vcall = eqx.filter_jit(lambda p, ts: jax.vmap(p)(ts))




def skipnets(k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [np_net(jaxland.SkipNet, rng, d_y=1) for _ in range(k)]


def npi(tree, i):
    """The i-th point of a stacked pytree, indexed in NumPy (no eager JAX kernels)."""
    return jax.tree.map(lambda l: np.asarray(l)[i], tree)


def tree_dist(a, b):
    return float(jp.tree_norm(jax.tree.map(lambda u, v: u - v, a, b)))


def assert_bitwise(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def all_paths(nets):
    a, b, c = nets
    return {
        "linear": jp.linear(a, b),
        "polychain": jp.polychain([a, c, b]),
        "polychain_arclength": jp.polychain([a, c, b], "arclength"),
        "bezier2": jp.bezier([a, c, b]),
        "bezier4": jp.bezier([a, c, a, c, b]),
        "concat": jp.concat(jp.linear(a, c), jp.bezier([c, a, b]), breaks=[0.3]),
        "reverse_concat": jp.reverse(jp.concat(jp.linear(b, c), jp.polychain([c, b, a]))),
        "reverse_bezier": jp.reverse(jp.bezier([b, c, a])),
    }


@pytest.mark.parametrize("name", list(all_paths(skipnets())))
def test_endpoints_exact_and_type_preserved(name):
    a, b, c = nets = skipnets()
    p = all_paths(nets)[name]
    start, end = a, b  # every path in all_paths runs from a to b
    # exact: the constructions use (1 − t)u + t v and integer powers, so t = 0, 1 reproduce the nodes
    pts = vcall(p, T7)
    assert_bitwise(npi(pts, 0), start)
    assert_bitwise(npi(pts, 6), end)
    assert_bitwise(p.start, start)  # eager as well
    assert isinstance(pts, jaxland.SkipNet)


@pytest.mark.parametrize("name", ["polychain", "polychain_arclength", "bezier2", "bezier4", "concat"])
def test_continuity(name):
    """Consecutive points of a fine grid are close: ‖γ(t + h) − γ(t)‖ ≤ L h with L a Lipschitz bound.

    Bounds: a polychain piece of length ℓ_j over [b_j, b_{j+1}] moves at speed ℓ_j/(b_{j+1} − b_j); a
    Bézier curve of degree d moves at speed ≤ d max_k ‖θ_{k+1} − θ_k‖; a concatenation at ≤ the max
    over its parts divided by their t-width. We bound by (sum of all node-to-node distances) × d / h_min
    (generous but finite), and check that a jump (a bug in locate) would exceed it.
    """
    a, b, c = nets = skipnets()
    p = all_paths(nets)[name]
    ts = jnp.linspace(0.0, 1.0, 2001)
    pts = vcall(p, ts)
    steps = np.sqrt(sum(np.sum(np.square(np.diff(np.asarray(l), axis=0)).reshape(2000, -1), axis=1)
                        for l in jax.tree.leaves(pts)))
    diam = max(tree_dist(a, b), tree_dist(a, c), tree_dist(b, c))
    h = 1 / 2000
    # speed ≤ degree (≤ 4) × diam / (smallest t-width of a part, ≥ 0.3 · 0.5 for the concat's Bézier)
    bound = 4 * diam / 0.15 * h
    assert steps.max() <= bound
    # and the path actually moves (not a constant): total length ≥ chord
    assert steps.sum() >= tree_dist(a, b) * (1 - 1e-5)


def test_polychain_nodes_at_breaks_and_arclength():
    a, b, c = skipnets()
    p = jp.polychain([a, c, b], "arclength")
    l1, l2 = tree_dist(a, c), tree_dist(c, b)
    # the break is the fraction of the length travelled (float32 rounding of the break: 1e-6)
    assert abs(float(p.breaks[1]) - l1 / (l1 + l2)) < 1e-6
    assert_bitwise(p(p.breaks[1]), c)  # s = 0 exactly at a break
    pu = jp.polychain([a, c, b])
    assert_bitwise(pu(jnp.asarray(0.5)), c)


def test_bezier_formulas():
    a, b, c = skipnets()
    with jax.enable_x64(True):
        a64, b64, c64 = (jax.tree.map(lambda l: jnp.asarray(np.asarray(l, np.float64)), n)
                         for n in (a, b, c))
        q = jp.bezier([a64, c64, b64])
        # quadratic Bézier at 1/2: (a + 2c + b)/4; degree 1 is the segment
        mid = jax.tree.map(lambda x, y, z: (np.asarray(x) + 2 * np.asarray(y) + np.asarray(z)) / 4,
                           a64, c64, b64)
        chex.assert_trees_all_close(call(q, 0.5), mid, rtol=1e-14, atol=1e-14)
        chex.assert_trees_all_close(call(jp.bezier([a64, b64]), 0.3), call(jp.linear(a64, b64), 0.3),
                                    rtol=1e-14, atol=1e-14)


def test_concat_and_reverse_relations():
    a, b, c = skipnets()
    p = jp.concat(jp.linear(a, c), jp.bezier([c, a, b]), breaks=[0.3])
    v = vcall(p, jnp.array([0.15, 0.3 + 0.7 * 0.25]))
    # tolerances: float32 rounding of the affine reparametrisation (a few ulps of O(1) values)
    chex.assert_trees_all_close(npi(v, 0), jp.linear(a, c)(0.5), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(npi(v, 1), jp.bezier([c, a, b])(0.25), rtol=1e-5, atol=1e-6)
    r = jp.reverse(p)
    assert isinstance(r, jp.Reverse) and jp.reverse(r) is p
    ts = jnp.array([0.0, 0.2, 0.31, 0.9, 1.0])
    chex.assert_trees_all_close(vcall(r, ts), vcall(p, 1 - ts), rtol=1e-6, atol=1e-6)
    # reversal of segment/polychain/Bézier reverses the nodes (endpoints stay exact)
    assert isinstance(jp.reverse(jp.linear(a, b)), jp.Segment)
    assert isinstance(jp.reverse(jp.polychain([a, b, c])), jp.Polychain)


@pytest.mark.parametrize("name", list(all_paths(skipnets())))
def test_pieces_locate_consistent(name):
    """γ(t) = pieces()[j](s) with (j, s) = locate(t), and each piece's combination reproduces it: the
    contract the structured fast path relies on."""
    p = all_paths(skipnets())[name]
    pieces = p.pieces()
    assert len(pieces) == p.num_pieces()
    ts = T7
    js, ss = eqx.filter_jit(lambda p, ts: jax.vmap(p.locate)(ts))(p, ts)
    want = vcall(p, ts)
    for i in range(ts.shape[0]):
        q = pieces[int(js[i])]
        basis, coef = q.combination()
        cf = np.asarray(coef(ss[i]))
        got = jax.tree.map(lambda l, cf=cf: np.tensordot(cf, np.asarray(l), 1), basis)
        # tolerance: float32 rounding of a few products of O(1) numbers
        chex.assert_trees_all_close(got, npi(want, i), rtol=1e-5, atol=1e-5)


class JitTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_call_jit_and_vmap(self):
        a, b, c = skipnets()
        p = jp.bezier([a, c, b])
        f = self.variant(lambda path, t: path(t))
        # jit may fuse the Bernstein sum into FMAs: ~1 ulp of O(1) terms, so an absolute tolerance too
        chex.assert_trees_all_close(f(p, 0.25), p(0.25), rtol=1e-6, atol=1e-6)
        stacked = jax.vmap(p)(jnp.array([0.0, 0.25, 1.0]))
        chex.assert_shape(stacked.W1, (3, 4, 3))


@settings(max_examples=5, deadline=None)
@given(K=st.integers(2, 5), shape=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       seed=st.integers(0, 2**16), kind=st.sampled_from(["uniform", "arclength", "bezier"]))
def test_random_pytrees(K, shape, seed, kind):
    """Any user pytree (a dict with a tuple) works; the nodes are hit exactly at t = 0, 1."""
    rng = np.random.default_rng(seed)
    nodes = [{"w": jnp.asarray(rng.normal(size=tuple(shape)), jnp.float32),
              "t": (jnp.asarray(rng.normal(size=(2,)), jnp.float32),)} for i in range(K)]
    p = jp.bezier(nodes) if kind == "bezier" else jp.polychain(nodes, kind)
    assert_bitwise(p(0.0), nodes[0])
    assert_bitwise(p(1.0), nodes[-1])
    chex.assert_shape(p(0.5)["w"], tuple(shape))


def test_from_function():
    a, b, _ = skipnets()
    p = jp.from_function(lambda t: jax.tree.map(lambda u, v: u + t * (v - u), a, b), start_like=a)
    chex.assert_trees_all_close(p(0.4), jp.linear(a, b)(0.4), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="start_like"):
        jp.from_function(lambda t: {"w": t * jnp.ones(3)}, start_like={"w": jnp.ones(4)})
    with raises_naming("fn", TypeError, match="fn must be callable"):
        jp.from_function(3.0)


def test_errors():
    a, b, c = skipnets()
    other = eqx.tree_at(lambda n: n.W1, a, jnp.zeros((5, 3)))  # one leaf of another shape
    with pytest.raises(ValueError, match="a and b differ in the shape of leaf"):
        jp.linear(a, other)
    with pytest.raises(ValueError, match="different tree structures"):
        jp.linear(a, jaxland.TwoLayer(a.W1, a.W2))
    with pytest.raises(ValueError, match=r"nodes\[0\] and nodes\[2\]"):
        jp.polychain([a, b, other])
    with pytest.raises(ValueError, match="at least 2 nodes"):
        jp.polychain([a])
    with pytest.raises(ValueError, match="arclength"):
        jp.polychain([a, a, b], "arclength")
    with pytest.raises(ValueError, match="parametrization"):
        jp.polychain([a, b], "chord")
    with pytest.raises(ValueError, match="at least 2 control points"):
        jp.bezier([a])
    with pytest.raises(ValueError, match="atol"):
        jp.concat(jp.linear(a, b), jp.linear(c, a), atol=1e-6)
    with pytest.raises(ValueError, match="breaks"):
        jp.concat(jp.linear(a, b), jp.linear(b, c), breaks=[1.2])
    with pytest.raises(ValueError, match=r"paths\[0\].end and paths\[1\].start"):
        jp.concat(jp.linear(a, b), jp.linear(other, other))
    with pytest.raises(TypeError, match="AbstractPath"):
        jp.concat(jp.linear(a, b), a)
    with raises_naming("t", ValueError, match="scalar t"):
        jp.linear(a, b)(jnp.zeros(3))


# --------------------------------------------------------------------------------------------------
# Eager calls compile once (issue 12 #11); t is checked, under jit too


class _Bend(eqx.Module):
    """t ↦ a + t(b − a) + t(1 − t) c on the floating leaves: a user's path as a module."""

    a: eqx.Module
    b: eqx.Module
    c: eqx.Module

    def __call__(self, t):
        return jax.tree.map(lambda u, v, w: u + t * (v - u) + t * (1 - t) * w if eqx.is_inexact_array(u)
                            else u, self.a, self.b, self.c)


def mlps():
    return [eqx.nn.MLP(2, 1, 3, 1, key=k) for k in jax.random.split(jax.random.key(0), 3)]


def every_path_kind():
    a, b, c = mlps()  # an activation among the leaves: the switch of a Concat must carry it
    return {
        "Segment": jp.linear(a, b),
        "Polychain": jp.polychain([a, c, b]),
        "Bezier": jp.bezier([a, c, b]),
        "Concat": jp.concat(jp.linear(a, c), jp.bezier([c, a, b]), jp.linear(b, a)),
        "Reverse": jp.reverse(jp.concat(jp.linear(b, c), jp.polychain([c, a]))),
        "FunctionPath": jp.from_function(_Bend(a, b, c)),
    }


class _CompileCounter:
    """Counts XLA compilations and jaxpr traces while active.

    JAX records the duration event "/jax/core/compile/backend_compile_duration" once for every
    executable XLA compiles (a jitted function or an eager primitive alike) and
    "/jax/core/compile/jaxpr_trace_duration" once for every trace of a Python function to a jaxpr;
    `jax.monitoring` is JAX's public hook for these events, so counting them needs no private API.
    """

    EVENTS = ("/jax/core/compile/backend_compile_duration", "/jax/core/compile/jaxpr_trace_duration")

    def __init__(self):
        self.counts = dict.fromkeys(self.EVENTS, 0)

    def _listen(self, event, duration, **kwargs):
        if event in self.counts:
            self.counts[event] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def test_eager_calls_compile_once():
    """About 200 eager calls of each path kind after a first call: no compilation and no trace. Before,
    a Concat's `lax.switch` over branches built afresh at every call was traced and compiled every
    time (~1 s and ~170 memory maps per call; a few hundred calls crashed the process)."""
    paths = every_path_kind()
    ts = np.linspace(0.0, 1.0, 97)
    for p in paths.values():  # the first calls compile: one per path kind and kind of t
        p(0.5)
        p(jnp.asarray(0.5, jnp.float32))
    with _CompileCounter() as counter:
        for p in paths.values():
            for t in ts:
                p(float(t))
                p(jnp.asarray(t, jnp.float32))
            assert jax.tree.structure(p.start) == jax.tree.structure(p.end)
    assert counter.counts == dict.fromkeys(_CompileCounter.EVENTS, 0), counter.counts
    # and the counter does count: a new layout (another width) compiles
    with _CompileCounter() as counter:
        jp.linear(*[eqx.nn.MLP(2, 1, 5, 1, key=k) for k in jax.random.split(jax.random.key(1))])(0.5)
    assert counter.counts["/jax/core/compile/backend_compile_duration"] >= 1


@pytest.mark.parametrize("kind", ["Segment", "Concat", "FunctionPath"])
def test_eager_call_values_and_carried_leaves(kind):
    """The compiled eager call equals the traced one, and the activation comes back as itself."""
    p = every_path_kind()[kind]
    eager = p(0.3)
    traced = eqx.filter_jit(lambda q, t: q(t))(p, 0.3)
    chex.assert_trees_all_close(eqx.filter(eager, eqx.is_array), eqx.filter(traced, eqx.is_array),
                                rtol=1e-6, atol=1e-7)  # float32: jit may fuse differently
    assert eager.activation is jax.nn.relu and eager.final_activation is traced.final_activation


def test_t_outside_the_unit_interval_is_refused():
    p = every_path_kind()["Concat"]
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            p(bad)
    with raises_naming("t", ValueError, match="real number"):
        p(jnp.asarray(0.5 + 0.5j))
    # traced: checked by eqx.error_if inside the computation, under jit and vmap
    with pytest.raises(Exception, match=r"t must lie in \[0, 1\]"):
        jax.block_until_ready(eqx.filter_jit(lambda q, t: q(t))(p, jnp.asarray(1.5)))
    with pytest.raises(Exception, match=r"t must lie in \[0, 1\]"):
        jax.block_until_ready(eqx.filter_jit(lambda q, ts: eqx.filter_vmap(q)(ts))(
            p, jnp.asarray([0.2, -0.5])))
    # integers are t too: 0 and 1 are the endpoints
    assert_bitwise(eqx.filter(p(1), eqx.is_array), eqx.filter(p.end, eqx.is_array))


def test_objective_values_is_declared():
    """AbstractPath declares the optional batched evaluator: None by default; a path that returns
    values is evaluated by them (for an Objective, as the Theorem 11 path)."""
    a, b, _ = skipnets()
    seg = jp.linear(a, b)
    x, y = np.ones((3, 3), np.float32), np.ones((3, 1), np.float32)
    assert seg.objective_values(x, y, np.zeros(2), kappa=0.0) is None

    class Counted(jp.Segment):
        def objective_values(self, x, y, ts, *, kappa, loss="mse"):
            return jnp.asarray(ts) * 0 + 42.0

    obj = jaxland.objective_fn(np.ones((3, 3), np.float32), np.ones((3, 1), np.float32), kappa=0.0)
    np.testing.assert_array_equal(np.asarray(jaxland.evaluate_path(obj, Counted(a, b), [0.0, 1.0])),
                                  [42.0, 42.0])
    # a plain function (not an Objective) is evaluated through the path itself
    vals = jaxland.evaluate_path(lambda n: jnp.sum(n.W2), Counted(a, b), [0.0, 1.0])
    np.testing.assert_allclose(np.asarray(vals), [float(jnp.sum(a.W2)), float(jnp.sum(b.W2))],
                               rtol=1e-6)
