"""Any model, as it is (issue 11 §1): the public functions that take parameters work on an
`eqx.nn.MLP`, an equinox CNN with an activation field, a flax nnx state (`nnx.split`/`nnx.merge`), a
plain dict and the paper's `SkipNet`, and give, in float64, the values of a plain Python loop written
here (leaf by leaf in NumPy, or one `fn` call per point). Searches end exactly at their endpoints.

Tolerances: everything runs in float64. The loops below compute the same formulas in a different
order (NumPy leaf by leaf instead of XLA fused kernels), so values agree to a few ulps of the
quantities involved; 1e-10 relative (plus 1e-12 absolute near zero) leaves four orders of magnitude of
room above float64 rounding (~1e-16 × the ~10 terms summed) and is still far below any real error (a
wrong coefficient or a wrong leaf moves the values at order 1e-2 or more).
"""

import functools
import math

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings

import jaxland
from jaxland import paths as jp

MODELS = ("mlp", "cnn", "nnx", "dict", "skipnet")
RTOL, ATOL = 1e-10, 1e-12


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


# --------------------------------------------------------------------------------------------------
# The five models (tiny), each with a data loss F and three points a, b, c


class CNN(eqx.Module):
    conv: eqx.nn.Conv2d
    head: eqx.nn.Linear
    activation: object  # a function leaf: carried through, never interpolated

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 2, 3, key=k1, dtype=jnp.float64)
        self.head = eqx.nn.Linear(8, 1, key=k2, dtype=jnp.float64)
        self.activation = jax.nn.relu

    def __call__(self, img):
        return self.head(self.activation(self.conv(img)).reshape(-1))


class NnxNet(nnx.Module):
    def __init__(self, rngs, dtype=jnp.float64):
        self.hidden = nnx.Linear(3, 4, rngs=rngs, param_dtype=dtype)
        self.out = nnx.Linear(4, 1, rngs=rngs, param_dtype=dtype)
        self.calls = nnx.Variable(jnp.array(7))  # an integer leaf of the state: carried through

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


_rng = np.random.default_rng(0)
X = _rng.normal(size=(8, 3))
Y = np.sin(X[:, :1])
IMG = _rng.normal(size=(8, 1, 4, 4))


@functools.cache  # one set of points and one F per model: compiled code is shared
def make(name, objective=False):
    """(a, b, c, fn): three points of one model family and F = a mean squared error (for SkipNet with
    `objective`: the `Objective` of eq. 7 (κ = 1e-3), which the engine evaluates by its structured
    fast path; without, the mean squared error as a plain function)."""
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    x, y = jnp.asarray(X), jnp.asarray(Y)
    if name == "mlp":
        pts = [eqx.nn.MLP(3, 1, 4, 1, key=k, dtype=jnp.float64) for k in keys]
        fn = lambda m: jnp.mean((jax.vmap(m)(x) - y) ** 2)
    elif name == "cnn":
        pts = [CNN(k) for k in keys]
        img = jnp.asarray(IMG)
        fn = lambda m: jnp.mean((jax.vmap(m)(img) - y) ** 2)
    elif name == "nnx":
        splits = [nnx.split(NnxNet(nnx.Rngs(i))) for i in range(3)]
        graphdef = splits[0][0]
        # nnx initialises biases at zero; move them so that every leaf matters
        pts = [jax.tree.map(lambda l, i=i: l + 0.1 * i if eqx.is_inexact_array(l) else l, s)
               for i, (_, s) in enumerate(splits)]
        fn = lambda s: jnp.mean((nnx.merge(graphdef, s)(x) - y) ** 2)
    elif name == "dict":
        rngs = [np.random.default_rng(10 + i) for i in range(3)]
        pts = [{"w": jnp.asarray(r.normal(size=(3, 2))), "b": jnp.asarray(r.normal(size=2)),
                "step": jnp.asarray(3)} for r in rngs]
        fn = lambda p: jnp.mean((jnp.tanh(x @ p["w"] + p["b"]).sum(1, keepdims=True) - y) ** 2)
    else:
        pts = [jaxland.SkipNet.init(k, n=3, m=4, d_g=2, d_o=2, hidden=(2,), dtype=jnp.float64)
               for k in keys]
        fn = (jaxland.objective_fn(x, y, kappa=1e-3) if objective
              else (lambda net: jnp.mean((net(x) - y) ** 2)))
    return (*pts, fn)


# --------------------------------------------------------------------------------------------------
# The plain loops: leaf by leaf in NumPy


def leaves(tree):
    return jax.tree.leaves(tree)


def is_param(l):
    return isinstance(l, (jax.Array, np.ndarray)) and np.issubdtype(np.asarray(l).dtype, np.inexact)


def combination(coefs, trees):
    """Σ_k coefs[k] · trees[k] on the floating leaves; the others from trees[0]."""
    ls = [leaves(t) for t in trees]
    out = []
    for j, l0 in enumerate(ls[0]):
        if is_param(l0):
            out.append(sum(c * np.asarray(l[j]) for c, l in zip(coefs, ls, strict=True)))
        else:
            out.append(l0)
    return jax.tree.unflatten(jax.tree.structure(trees[0]), out)


def ref_lerp(a, b, t):
    return combination([1 - t, t], [a, b])


def ref_bezier(nodes, t):
    d = len(nodes) - 1
    return combination([math.comb(d, k) * t**k * (1 - t) ** (d - k) for k in range(d + 1)], nodes)


def ref_polychain(nodes, t):
    K = len(nodes)
    j = min(int(math.floor(t * (K - 1))), K - 2)
    return ref_lerp(nodes[j], nodes[j + 1], t * (K - 1) - j)


def ref_concat(first, second, t):
    """concat(first, second) with the break at 1/2 (t = 1/2 starts the second path, as `concat`)."""
    return first(2 * t) if t < 0.5 else second(2 * t - 1)


def dist(p, q):
    return math.sqrt(sum(float(np.sum((np.asarray(u) - np.asarray(v)) ** 2))
                         for u, v in zip(leaves(p), leaves(q), strict=True) if is_param(u)))


def assert_close(p, q):
    assert jax.tree.structure(p) == jax.tree.structure(q)
    for u, v in zip(leaves(p), leaves(q), strict=True):
        if is_param(u):
            assert np.asarray(u).dtype == np.asarray(v).dtype
            np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=RTOL, atol=ATOL)
        else:  # carried through unchanged
            assert u is v or np.array_equal(np.asarray(u), np.asarray(v))


def assert_exact(p, q):
    """Bit for bit on the floating leaves (the endpoints of a path), equal elsewhere."""
    assert jax.tree.structure(p) == jax.tree.structure(q)
    for u, v in zip(leaves(p), leaves(q), strict=True):
        if is_param(u):
            assert np.asarray(u).dtype == np.asarray(v).dtype
            np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
        else:
            assert u is v or np.array_equal(np.asarray(u), np.asarray(v))


def loop_values(fn, points):
    """F at each point, one call per point (F compiled once: the loop is over points, as a user's)."""
    f = _jitted(fn)
    return np.array([float(f(p)) for p in points])


_JITTED = {}


def _jitted(fn):
    """One compiled F per model (the F of `make` live as long as the module: ids are stable)."""
    return _JITTED.setdefault(id(fn), eqx.filter_jit(fn))


TS = np.array([0.0, 0.2, 0.5, 0.7, 1.0])


def the_paths(a, b, c):
    """name -> (path from a to b, reference t ↦ pytree)."""
    ac, cab = (lambda s: ref_lerp(a, c, s)), (lambda s: ref_bezier([c, a, b], s))
    bc, cba = (lambda s: ref_lerp(b, c, s)), (lambda s: ref_bezier([c, b, a], s))
    back = jp.concat(jp.linear(b, c), jp.bezier([c, b, a]))  # from b to a, run backwards below
    return {
        "linear": (jp.linear(a, b), lambda t: ref_lerp(a, b, t)),
        "polychain": (jp.polychain([a, c, b]), lambda t: ref_polychain([a, c, b], t)),
        "bezier": (jp.bezier([a, c, b]), lambda t: ref_bezier([a, c, b], t)),
        "concat": (jp.concat(jp.linear(a, c), jp.bezier([c, a, b])),
                   lambda t: ref_concat(ac, cab, t)),
        "reverse": (jp.reverse(back), lambda t: ref_concat(bc, cba, 1 - t)),
    }


# --------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _all_at(paths, t):
    return tuple(p(t) for p in paths)


@pytest.mark.parametrize("name", MODELS)
def test_paths_and_evaluation_match_a_loop(name):
    a, b, c, fn = make(name, objective=True)
    kinds = the_paths(a, b, c)
    # every kind at once in one compiled call (eager calls of each kind: tests/test_paths.py)
    points = {float(t): _all_at(tuple(p for p, _ in kinds.values()), jnp.asarray(t)) for t in TS}
    for k, (kind, (path, ref)) in enumerate(kinds.items()):
        # endpoints exactly; every point like the loop
        assert_exact(points[0.0][k], a)
        assert_exact(points[1.0][k], b)
        for t in TS:
            assert_close(points[float(t)][k], ref(t))
        if kind in ("linear", "concat"):  # the engine on a one-piece and a switched path
            # evaluate_path = F at every point, one call per point
            vals = np.asarray(jaxland.evaluate_path(fn, path, TS))
            np.testing.assert_allclose(vals, loop_values(fn, [ref(float(t)) for t in TS]),
                                       rtol=RTOL, atol=ATOL)

    # refine_max: every value it reports is F at its t, and f_max is their maximum (5 new points
    # per round: the engine's chunk of TS's 5 points is reused)
    seg = jp.linear(a, b)
    r = jaxland.refine_max(fn, seg, TS, tol=1e-2, max_rounds=2, num_candidates=1,
                           points_per_bracket=5)
    np.testing.assert_allclose(np.asarray(r.values),
                               loop_values(fn, [ref_lerp(a, b, float(t)) for t in np.asarray(r.ts)]),
                               rtol=RTOL, atol=ATOL)
    assert float(r.f_max) == float(np.max(r.values))
    assert float(r.t_max) == float(r.ts[int(np.argmax(r.values))])

    # path_length: Σ ‖γ(t_{i+1}) − γ(t_i)‖ over the floating leaves
    bez, ref = the_paths(a, b, c)["bezier"]
    t9 = np.linspace(0, 1, 9)
    want = sum(dist(ref(t9[i + 1]), ref(t9[i])) for i in range(8))
    np.testing.assert_allclose(float(jaxland.path_length(bez, t9)), want, rtol=RTOL)
    np.testing.assert_allclose(float(jaxland.path_length(seg)), dist(a, b), rtol=RTOL)
    chain = jp.polychain([a, c, b])
    np.testing.assert_allclose(float(jaxland.path_length(chain)), dist(a, c) + dist(c, b), rtol=RTOL)
    np.testing.assert_allclose(float(jaxland.geodesic_ratio([a, c, b])),
                               (dist(a, c) + dist(c, b)) / dist(a, b), rtol=RTOL)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=st.floats(0.0, 1.0))
def test_mlp_path_at_any_t(t):
    """Eager calls at arbitrary t: each reuses the compiled path (no retrace) and equals the loop."""
    with jax.enable_x64(True):
        a, b, c, _ = _MLP
        for path, ref in the_paths(a, b, c).values():
            assert_close(path(t), ref(t))


with jax.enable_x64(True):
    _MLP = make("mlp")


@pytest.mark.parametrize("name", MODELS)
def test_slices_match_a_loop(name):
    a, b, c, fn = make(name)
    key = jax.random.PRNGKey(3)

    # filter-normalised directions: each filter (first axis of a ≥ 2-axis leaf) has the centre's
    # filter norm; 1-axis leaves are zero; non-floating leaves are the centre's
    (d,) = jaxland.filter_normalized_directions(a, 1, key=key)
    assert jax.tree.structure(d) == jax.tree.structure(a)
    for u, v in zip(leaves(d), leaves(a), strict=True):
        if not is_param(v):
            assert u is v or np.array_equal(np.asarray(u), np.asarray(v))
            continue
        u, v = np.asarray(u), np.asarray(v)
        assert u.dtype == v.dtype and u.shape == v.shape
        if v.ndim >= 2:
            for i in range(v.shape[0]):
                np.testing.assert_allclose(np.linalg.norm(u[i]), np.linalg.norm(v[i]), rtol=1e-9)
        else:
            assert np.all(u == 0)
    (d2,) = jaxland.filter_normalized_directions(a, 1, key=key)
    assert_exact(d2, d)  # reproducible from the key

    # random_directions_slice: values[i, j] = F(θ* + α_i δ + β_j η)
    sl = jaxland.random_directions_slice(fn, a, key=key, resolution=(3, 2), span=0.5)
    want = loop_values(fn, [combination([1.0, al, be], [a, sl.u, sl.v])
                            for al in np.asarray(sl.alphas) for be in np.asarray(sl.betas)])
    np.testing.assert_allclose(np.asarray(sl.values), want.reshape(3, 2), rtol=RTOL, atol=ATOL)
    # plane_slice through a, b, c: values[i, j] = F(a + α_i u + β_j v), u ⟂ v unit
    pl = jaxland.plane_slice(fn, a, b, c, resolution=(2, 3))
    want = loop_values(fn, [combination([1.0, al, be], [a, pl.u, pl.v])
                            for al in np.asarray(pl.alphas) for be in np.asarray(pl.betas)])
    np.testing.assert_allclose(np.asarray(pl.values), want.reshape(2, 3), rtol=RTOL, atol=ATOL)
    pu = [np.asarray(l) for l in leaves(pl.u) if is_param(l)]
    pv = [np.asarray(l) for l in leaves(pl.v) if is_param(l)]
    np.testing.assert_allclose(sum(float(np.vdot(p, q)) for p, q in zip(pu, pv, strict=True)), 0.0,
                               atol=1e-12)
    np.testing.assert_allclose(dist(combination([1.0, float(pl.anchors[1, 0])], [a, pl.u]), a),
                               dist(b, a), rtol=RTOL)
    # the three points project onto their anchors (they lie in the plane)
    np.testing.assert_allclose(np.asarray(jaxland.slice_coordinates(pl, [a, b, c])),
                               np.asarray(pl.anchors), rtol=1e-9, atol=1e-9)


def check_search_result(r, a, b, fn):
    """γ(0) = a and γ(1) = b bit for bit; the dense values are F along the path, one call per point;
    f_max and t_max are their maximum and where it is."""
    assert_exact(r.path(0.0), a)
    assert_exact(r.path(1.0), b)
    vals = np.asarray(r.values)
    np.testing.assert_allclose(vals, loop_values(fn, [r.path(float(t)) for t in np.asarray(r.ts)]),
                               rtol=RTOL, atol=ATOL)
    assert r.f_max == float(np.max(vals)) and r.t_max == float(np.asarray(r.ts)[np.argmax(vals)])
    assert r.barrier == pytest.approx(r.f_max - loop_values(fn, [a, b]).max(), rel=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_searches_end_at_their_endpoints(name):
    a, b, _, fn = make(name)
    # all three end as polychains through 4 nodes, densely evaluated at 10 points: one
    # compiled evaluation serves them
    r = jaxland.fit_curve(fn, a, b, kind="polychain", bends=2, steps=3, batch=4, points=10,
                          key=jax.random.PRNGKey(0))
    check_search_result(r, a, b, fn)
    r = jaxland.neb(fn, a, b, pivots=4, steps=3, points_per_segment=2)
    check_search_result(r, a, b, fn)
    np.testing.assert_allclose(np.asarray(r.pivot_values),
                               loop_values(fn, [r.path(float(t)) for t in np.linspace(0, 1, 4)]),
                               rtol=RTOL, atol=ATOL)
    # below both endpoints' level: beads are trained and inserted until the budget runs out
    r = jaxland.dss(fn, a, b, level=loop_values(fn, [a, b]).min(), max_beads=2, bead_steps=3,
                    segment_points=4, max_depth=2)
    assert not r.converged and r.n_beads == 2
    check_search_result(r, a, b, fn)


@pytest.mark.parametrize("name", MODELS)
def test_hessian_eigs_match_a_dense_loop(name):
    """λ_min, λ_max of the Hessian over the floating leaves = the extreme eigenvalues of the matrix
    built column by column (one Hessian-vector product per unit vector) in a Python loop."""
    a, _, _, fn = make(name)
    pos = [i for i, l in enumerate(leaves(a)) if is_param(l)]
    shapes = [np.shape(leaves(a)[i]) for i in pos]
    sizes = [math.prod(s) for s in shapes]
    D = sum(sizes)

    def unflat(v):
        out, k = list(leaves(a)), 0
        for i, s, n in zip(pos, shapes, sizes, strict=True):
            out[i] = v[k : k + n].reshape(s)
            k += n
        return jax.tree.unflatten(jax.tree.structure(a), out)

    theta = jnp.concatenate([jnp.ravel(leaves(a)[i]) for i in pos])
    hvp = jax.jit(lambda e: jax.jvp(jax.grad(lambda v: fn(unflat(v))), (theta,), (e,))[1])
    H = np.stack([np.asarray(hvp(e)) for e in np.eye(D)], axis=1)
    ev = np.linalg.eigvalsh(0.5 * (H + H.T))
    # a full Krylov space (num_steps = D) makes Lanczos exact up to rounding in float64
    r = jaxland.hessian_eigs(fn, a, k=1, num_steps=D, key=jax.random.PRNGKey(0))
    scale = np.abs(ev).max()
    np.testing.assert_allclose(float(np.ravel(r.lambda_max)[0]), ev[-1], atol=1e-8 * scale)
    np.testing.assert_allclose(float(np.ravel(r.lambda_min)[0]), ev[0], atol=1e-8 * scale)


def test_float32_leaves_stay_float32_under_x64():
    """A flax nnx state with float32 parameters, F computed in float64 (float64 data): NEB runs (no
    lax.scan carry dtype mismatch: its force is promoted by F's float64 values) and its path keeps
    float32 leaves, like a segment's (fit_curve and dss build their paths the same way)."""
    x, y = jnp.asarray(X), jnp.asarray(Y)
    graphdef, sa = nnx.split(NnxNet(nnx.Rngs(0), dtype=jnp.float32))
    _, sb = nnx.split(NnxNet(nnx.Rngs(1), dtype=jnp.float32))
    fn = lambda s: jnp.mean((nnx.merge(graphdef, s)(x) - y) ** 2)
    assert jax.eval_shape(fn, sa).dtype == jnp.float64
    r = jaxland.neb(fn, sa, sb, pivots=3, steps=2, points_per_segment=2)
    for path in (r.path, jp.linear(sa, sb)):
        for t in (0.0, 0.5, 1.0):
            assert {str(l.dtype) for l in leaves(path(t)) if is_param(l)} == {"float32"}
        assert_exact(path(0.0), sa)
        assert_exact(path(1.0), sb)


def test_a_differing_integer_leaf_is_refused_at_every_join():
    """Only floating leaves move along a path; an integer leaf that differs between the points being
    joined cannot be interpolated and is refused, naming the leaf (issue 12 #9)."""
    a, b, c, fn = make("dict")
    b2 = {**b, "step": jnp.asarray(4)}
    msg = r"differ in the non-floating leaf \['step'\]"
    joins = {
        "linear": lambda: jp.linear(a, b2),
        "polychain": lambda: jp.polychain([a, c, b2]),
        "bezier": lambda: jp.bezier([a, c, b2]),
        "concat": lambda: jp.concat(jp.linear(a, c), jp.linear({**c, "step": jnp.asarray(4)}, b2)),
        "stack_trees": lambda: jp.stack_trees([a, b2]),
        "geodesic_ratio": lambda: jaxland.geodesic_ratio([a, c, b2]),
        "fit_curve": lambda: jaxland.fit_curve(fn, a, b2, steps=1),
        "neb": lambda: jaxland.neb(fn, a, b2, steps=1),
        "neb init": lambda: jaxland.neb(fn, a, b, steps=1,
                                        init={**jp.stack_trees([a, c, b]), "step": jnp.asarray(4)}),
        "dss": lambda: jaxland.dss(fn, a, b2),
        "search_path": lambda: jaxland.search_path(fn, a, b2, method="linear"),
        "depth": lambda: jaxland.depth(fn, a, [b2], eta=None),
        "plane_slice": lambda: jaxland.plane_slice(fn, a, b2, c),
        "directions": lambda: jaxland.random_directions_slice(fn, a, directions=(b2, c)),
    }
    for name, join in joins.items():
        with pytest.raises(ValueError, match=msg):
            join()
            pytest.fail(f"{name} accepted a differing integer leaf")
    # equal integer leaves are carried through
    assert int(jp.linear(a, b)(0.5)["step"]) == 3


def test_ravel_keeps_every_leaf():
    """The parameter layer's ravel: floating leaves into one vector (promoted dtype), back leaf by
    leaf in their own dtypes, the other leaves restored; Unravel is a pytree, so a compiled function
    taking it is reused for another vector."""
    from jaxland._params import ravel

    tree = {"f32": jnp.arange(4.0, dtype=jnp.float32).reshape(2, 2), "f64": jnp.linspace(0, 1, 3),
            "act": jax.nn.relu, "count": jnp.asarray(5), "name": "net"}
    v, unravel = ravel(tree)
    assert v.shape == (7,) and v.dtype == jnp.float64
    assert_exact(unravel(v), tree)
    back = unravel(v + 1)
    assert back["f32"].dtype == jnp.float32 and back["act"] is jax.nn.relu and back["name"] == "net"
    np.testing.assert_array_equal(np.asarray(back["f32"]), np.asarray(tree["f32"]) + 1)
    with _count_compiles() as n:
        f = eqx.filter_jit(lambda u, w: u(w)["f64"].sum())
        f(unravel, v), f(unravel, v + 2), f(ravel(back)[1], v)
    assert n() == 1  # one compile for three calls (same layout)
    with pytest.raises(ValueError, match=r"shape \(7,\)"):
        unravel(jnp.zeros(6))


class _count_compiles:
    """Counts XLA compilations (the "/jax/core/compile/backend_compile_duration" events of
    `jax.monitoring`) while active; calling the instance gives the count."""

    def __enter__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return lambda: self.n

    def _listen(self, event, duration, **kwargs):
        self.n += event == "/jax/core/compile/backend_compile_duration"

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)
