"""Tests for jaxland.engine: evaluate_path against one-point-at-a-time evaluation, the structured fast
paths against the plain evaluation, chunking, data batching, sharding, bad input."""

import inspect
import json
import os
import subprocess
import sys
import textwrap

import chex
import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _nets import np_net, to64
from conftest import assert_refuses
from hypothesis import given, settings

import jaxland
import jaxland.engine._chunks as chunks
import jaxland.engine._evaluate as ev_plain
import jaxland.engine._plain as plain
import jaxland.engine._structured as ev
from jaxland import paths as jp

N, KAPPA = 7, 0.1
TS = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.62, 0.75, 0.9, 1.0])  # includes the pieces' break points
# float32 tolerance: the structured and plain evaluations sum the same O(1) products in a different
# order (first layer as Σ_k c_k (W1_k x) instead of (Σ_k c_k W1_k) x; W2 V1 first), over N = 7 samples and
# m = 4 units: a few float32 ulps (1.2e-7) of values of order 1–10.
RTOL = 2e-5






def make_nets(cls, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return [np_net(cls, rng) for _ in range(k)]


def make_data(n=N):
    rng = np.random.default_rng(100)
    return (jnp.asarray(rng.normal(size=(n, 3)), jnp.float32),
            jnp.asarray(rng.normal(size=(n, 2)), jnp.float32))


def make_path(kind, a, b, c):
    return {
        "linear": lambda: jp.linear(a, b),
        "polychain": lambda: jp.polychain([a, c, b]),
        "bezier": lambda: jp.bezier([a, c, b]),
        "concat": lambda: jp.concat(jp.linear(a, c), jp.bezier([c, b, a]), breaks=[0.3]),
        "reverse": lambda: jp.reverse(jp.concat(jp.polychain([b, c, a]), jp.linear(a, b))),
    }[kind]()


KINDS = ["linear", "polychain", "bezier", "concat", "reverse"]
MODELS = [jaxland.SkipNet, jaxland.NoSkipNet, jaxland.TwoLayer]


@eqx.filter_jit
def _one_point(path, t, x, y):
    return jaxland.objective(path(t), x, y, kappa=KAPPA)


def one_at_a_time(path, ts, x, y):
    return np.array([float(_one_point(path, jnp.asarray(t, x.dtype), x, y)) for t in ts])


# Every path kind with SkipNet (polychain pieces are part of the "reverse" case), each other model with
# two kinds: the kernels differ by model (skip
# term, branch) and the piece handling by path kind, independently (the full product costs compile time).
CASES = ([(jaxland.SkipNet, k) for k in KINDS if k != "polychain"]  # polychain: inside "reverse"
         + [(jaxland.NoSkipNet, "bezier"), (jaxland.NoSkipNet, "concat"),
            (jaxland.TwoLayer, "linear"), (jaxland.TwoLayer, "reverse")])


@pytest.mark.parametrize("model,kind", CASES, ids=[f"{m.__name__}-{k}" for m, k in CASES])
def test_structured_and_plain_equal_one_point_at_a_time(model, kind):
    x, y = make_data()
    path = make_path(kind, *make_nets(model))
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    assert ev._structured_ok(obj, path)  # the fast path is really taken for these
    fast = jaxland.evaluate_path(obj, path, TS)
    plain = jaxland.evaluate_path(obj, path, TS, structured=False)
    chex.assert_shape(fast, (TS.shape[0],))
    np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=RTOL)
    if model is jaxland.SkipNet and kind in ("linear", "bezier", "concat"):  # (compile time)
        ref = one_at_a_time(path, TS, x, y)
        np.testing.assert_allclose(np.asarray(plain), ref, rtol=RTOL)
        np.testing.assert_allclose(np.asarray(fast), ref, rtol=RTOL)


def test_structured_equals_plain_float64():
    """In float64 the two evaluations agree to 1e-12 relative (rounding of O(10) sums only)."""
    nets, data = make_nets(jaxland.SkipNet), make_data()
    with jax.enable_x64(True):
        x, y = to64(data)
        path = make_path("bezier", *to64(nets))
        obj = jaxland.objective_fn(x, y, kappa=KAPPA)
        fast = jaxland.evaluate_path(obj, path, TS)
        plain = jaxland.evaluate_path(obj, path, TS, structured=False)
        assert fast.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=1e-12)


@pytest.mark.parametrize("model,kind", [(jaxland.SkipNet, "bezier"), (jaxland.TwoLayer, "reverse")])
def test_first_layer_direct_and_precomputed_float64(monkeypatch, model, kind):
    """The point kernel's first layer per point (W1(s) x) and from the precomputed W1_k x equal the
    plain evaluation to 1e-12 relative in float64 (sums of ~10 products in another order)."""
    nets, data = make_nets(model), make_data()
    with jax.enable_x64(True):
        x, y = to64(data)
        path = make_path(kind, *to64(nets))
        obj = jaxland.objective_fn(x, y, kappa=KAPPA)
        plain = np.asarray(jaxland.evaluate_path(obj, path, TS, structured=False))
        for pre in (True, False):
            monkeypatch.setattr(ev, "_first_layer_plan", lambda b, P, cpu, pre=pre: (pre, 1.0))
            calls = _spy(monkeypatch, ev, "_precompute_first_layer")
            fast = jaxland.evaluate_path(obj, path, TS)
            assert bool(calls) == pre
            np.testing.assert_allclose(np.asarray(fast), plain, rtol=1e-12)


def test_first_layer_rule():
    """Precompute W1_k x on CPU only when it pays (module constants of jaxland.engine._structured):
    never for n = 16; from P = 4 points for n = 784 and K = 2; always on an accelerator."""
    def basis(n):  # the stacked endpoints of a segment (K = 2) between reference-sized networks
        z = np.zeros
        net = jaxland.SkipNet(z((1024, n)), z((1, 1024)), z((1024, 64)), z((64, 1024)),
                              (z((64, 64)), z((64, 64))))
        return jp.linear(net, net).combination()[0]

    assert not ev._first_layer_plan(basis(16), 10**6, True)[0]
    assert not ev._first_layer_plan(basis(784), 3, True)[0]
    assert ev._first_layer_plan(basis(784), 4, True)[0]
    assert ev._first_layer_plan(basis(16), 1, False)[0]
    # relative cost of the direct kernel at n = 16: (2·65 + 32) / (2·65 + 3·28.7)
    assert ev._first_layer_plan(basis(16), 100, True)[1] == pytest.approx(162 / 216.1)


# The structured kernel folds the layers around g: θ_1 V2 when h_1 ≤ d_g (else V2 then θ_1), the
# hidden θ_2 … θ_{k−1}, W2 V1 θ_k, and for k = 1 the whole branch into one d_y × m map. Each shape
# of g takes a different route: (hidden sizes of g, d_g).
BRANCHES = [((), 2), ((3,), 2), ((1,), 2), ((3, 2), 2), ((2, 4, 3), 3)]


@pytest.mark.parametrize("model", [jaxland.SkipNet, jaxland.NoSkipNet])
@pytest.mark.parametrize("hidden,d_g", BRANCHES, ids=[f"h{h}-dg{d}" for h, d in BRANCHES])
def test_structured_folds_every_branch_shape_float64(model, hidden, d_g):
    """Every folding route equals the plain evaluation to 1e-12 relative in float64 (rounding of
    sums of ~10 products of O(1) numbers, ~1e-15 each)."""
    rng = np.random.default_rng(len(hidden) * 10 + d_g)
    n, m, d_o, d_y = 3, 5, 2, 2

    def f(*shape):
        return rng.normal(size=shape) / np.sqrt(shape[-1])

    def net():
        sizes = (d_g, *hidden, d_o)
        theta = tuple(f(sizes[i + 1], sizes[i]) for i in range(len(sizes) - 1))
        return model(f(m, n), f(d_y, m), f(m, d_o), f(d_g, m), theta)

    a, b = net(), net()
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(N, n)))
        y = jnp.asarray(rng.normal(size=(N, d_y)))
        path = jp.linear(*to64([a, b]))
        obj = jaxland.objective_fn(x, y, kappa=KAPPA)
        fast = jaxland.evaluate_path(obj, path, TS)
        plain = jaxland.evaluate_path(obj, path, TS, structured=False)
        np.testing.assert_allclose(np.asarray(fast), np.asarray(plain), rtol=1e-12)


def test_fallback_for_other_paths_and_functions():
    """A from_function path or a plain callable is evaluated plainly, with the same values."""
    x, y = make_data()
    a, b, _ = make_nets(jaxland.SkipNet)
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    fpath = jp.from_function(jp.linear(a, b))  # an eqx.Module t -> SkipNet: no known structure
    assert not ev._structured_ok(obj, fpath)
    v1 = jaxland.evaluate_path(obj, fpath, TS)
    v2 = jaxland.evaluate_path(lambda net: jaxland.objective(net, x, y, kappa=KAPPA), jp.linear(a, b),
                               TS)
    np.testing.assert_allclose(np.asarray(v1), np.asarray(v2), rtol=RTOL)
    np.testing.assert_allclose(np.asarray(v1), one_at_a_time(jp.linear(a, b), TS, x, y), rtol=RTOL)


def _spy(monkeypatch, mod, name):
    """Replace mod.name by a wrapper that records its arguments."""
    calls = []
    orig = getattr(mod, name)

    def spying(*args, **kw):
        calls.append((args, kw))
        return orig(*args, **kw)

    monkeypatch.setattr(mod, name, spying)
    return calls


@pytest.mark.parametrize("structured", [True, False])
def test_small_memory_budget_bounds_the_group(monkeypatch, structured):
    """A memory budget below one point's need gives groups of one point; chunk_size sets the group;
    neither changes the values beyond float32 rounding."""
    x, y = make_data()
    path = make_path("polychain", *make_nets(jaxland.SkipNet))
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    ref = jaxland.evaluate_path(obj, path, TS, structured=structured)
    if structured:
        calls = _spy(monkeypatch, ev, "_run_structured_loop")
        group = lambda c: c[0][-1]  # noqa: E731  (the last positional argument)
    else:
        calls = _spy(monkeypatch, ev_plain._plain, "plain_values")
        group = lambda c: c[0][0].group  # noqa: E731
    # a few hundred bytes: one point needs ~1 KB for this network
    small = jaxland.evaluate_path(obj, path, TS, structured=structured, memory_budget=600)
    assert calls and all(group(c) == 1 for c in calls)
    np.testing.assert_allclose(np.asarray(small), np.asarray(ref), rtol=RTOL)
    calls.clear()
    chunked = jaxland.evaluate_path(obj, path, TS, structured=structured, chunk_size=4)
    assert calls and all(group(c) == 4 for c in calls)
    np.testing.assert_allclose(np.asarray(chunked), np.asarray(ref), rtol=RTOL)


@pytest.mark.parametrize("structured", [True, False])
def test_more_points_than_one_call_holds(monkeypatch, structured):
    """Past the looping kernel's capacity the points run in several calls of the same kernel, the
    last one partly filled: the same values (here capacity 6, groups of 4 or 1, P = 9)."""
    x, y = make_data()
    path = make_path("linear", *make_nets(jaxland.SkipNet))
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    ref = jaxland.evaluate_path(obj, path, TS, structured=structured)
    monkeypatch.setattr(chunks, "LOOP_CAPACITY", 6)
    for chunk in (4, 1):
        got = jaxland.evaluate_path(obj, path, TS, structured=structured, chunk_size=chunk)
        np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=RTOL)


def test_point_cost_counts_dots_convolutions_and_peak():
    """FLOPs 2·(output size)·(contracted size) for a product, 2·(output size)·C_in·window for a
    convolution, counted through nested jaxprs; the peak of the created values from a liveness walk."""
    a, b = jnp.ones((5, 7), jnp.float32), jnp.ones((7, 3), jnp.float32)
    c = plain.point_cost(jax.make_jaxpr(lambda a, b: jnp.sum(a @ b))(a, b).jaxpr)
    assert c.flops == 2 * 5 * 3 * 7 and not c.has_conv
    assert c.peak_bytes == 5 * 3 * 4 + 4  # the (5, 3) product while the scalar sum is created
    c = plain.point_cost(jax.make_jaxpr(lambda a, b: jnp.sum(jax.jit(jnp.matmul)(a, b)))(a, b).jaxpr)
    assert c.flops == 2 * 5 * 3 * 7  # inside a nested jit
    img, ker = jnp.ones((1, 2, 6, 6), jnp.float32), jnp.ones((4, 2, 3, 3), jnp.float32)
    c = plain.point_cost(jax.make_jaxpr(
        lambda i, k: jnp.sum(jax.lax.conv(i, k, (1, 1), "VALID")))(img, ker).jaxpr)
    assert c.has_conv and c.flops == 2 * (1 * 4 * 4 * 4) * 2 * 9
    scan = jax.make_jaxpr(lambda a, b: jax.lax.scan(lambda s, _: (s + jnp.sum(a @ b), None), 0.0,
                                                    None, length=3)[0])(a, b)
    assert plain.point_cost(scan.jaxpr).flops == 3 * 2 * 5 * 3 * 7


def test_group_rule():
    """The cost-model rule of jaxland.engine._plain: one point per group when a point is heavy, a
    power of two ≤ MAX_GROUP bounded by FLOPs, cache and memory budget when it is cheap; on an
    accelerator as many points as fit in half the budget."""
    PC = plain.PointCost
    big = 2**31
    assert plain.choose_group(PC(1e9, 2**26, False), on_cpu=True, budget=big) == 1
    k = plain.choose_group(PC(1e4, 1024, False), on_cpu=True, budget=big)
    assert k == plain.MAX_GROUP
    k = plain.choose_group(PC(1e6, 1024, False), on_cpu=True, budget=big)
    assert k == 8  # 8 · 1 MFLOP ≤ 4 · FLOP_TARGET < 16 · 1 MFLOP
    k = plain.choose_group(PC(1e4, 2**20, False), on_cpu=True, budget=big)
    assert k == 4  # 4 · 1 MiB ≤ GROUP_BYTES
    assert plain.choose_group(PC(1e6, 1024, True), on_cpu=True, budget=big) == 1  # convolution
    assert plain.choose_group(PC(1e4, 1024, False), on_cpu=True, budget=3000) == 2  # budget
    assert plain.choose_group(PC(1e9, 2**20, False), on_cpu=False, budget=2**30) == 512


def test_fresh_lambda_reuses_the_compiled_kernel(monkeypatch):
    """The kernel is cached by the computation (jaxpr text and types), not by the function object:
    a new lambda with the same body compiles nothing; the arrays it closes over are arguments, so
    new data of the same shape give the new values; another computation gets another kernel."""
    x, y = make_data()
    a, b, _ = make_nets(jaxland.SkipNet)
    path = jp.linear(a, b)

    def make(x, kappa):
        return lambda net: jaxland.objective(net, x, y, kappa=kappa)

    calls = _spy(monkeypatch, plain, "plain_values")
    v1 = jaxland.evaluate_path(make(x, KAPPA), path, TS)
    v2 = jaxland.evaluate_path(make(x, KAPPA), path, TS)
    np.testing.assert_array_equal(np.asarray(v1), np.asarray(v2))
    v3 = jaxland.evaluate_path(make(2 * x, KAPPA), path, TS)  # new data, same computation
    np.testing.assert_allclose(np.asarray(v3), one_at_a_time(path, TS, 2 * x, y), rtol=RTOL)
    jaxland.evaluate_path(make(x, 2 * KAPPA), path, TS)  # κ is a literal of the computation
    plans = [c[0][0] for c in calls]
    assert plans[0].kernel is plans[1].kernel is plans[2].kernel
    assert plans[3].kernel is not plans[0].kernel
    runner = plans[0].kernel.runners[plans[0].mode, plans[0].group, plans[0].gemm]
    assert runner._cache_size() == 1  # compiled once for the three calls


@pytest.mark.parametrize("kind", ["bezier", "reverse", "function"])  # reverse: concat, polychain, linear
def test_user_function_on_every_path_kind(kind):
    """A user's own function (pytree-valued) along every kind of path equals a Python loop of the
    same function at each point."""
    x, y = make_data()
    nets = make_nets(jaxland.SkipNet)
    path = (jp.from_function(jp.bezier(nets)) if kind == "function" else make_path(kind, *nets))

    def fn(net):
        return {"F": jaxland.objective(net, x, y, kappa=KAPPA), "w": jnp.sum(net.W2)}

    got = jaxland.evaluate_path(fn, path, TS)
    one = eqx.filter_jit(lambda path, t: fn(path(t)))
    want = [one(path, jnp.float32(t)) for t in TS]
    for key in ("F", "w"):
        np.testing.assert_allclose(np.asarray(got[key]), [float(w[key]) for w in want], rtol=RTOL)


class _CNN(eqx.Module):
    """Conv2d + Linear with an activation field (a function-valued leaf)."""

    conv: eqx.nn.Conv2d
    fc: eqx.nn.Linear
    act: object

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 2, 3, stride=2, key=k1)  # 7x7 -> 3x3
        self.fc = eqx.nn.Linear(2 * 3 * 3, 3, key=k2)
        self.act = jax.nn.relu

    def __call__(self, x):
        return self.fc(self.act(self.conv(x)).reshape(-1))


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_equinox_models_float64(monkeypatch, model):
    """eqx.nn.MLP (device loop) and an equinox CNN (on CPU its convolutions as im2col GEMMs in the
    device loop) along a segment, with a user's cross-entropy: equal to a Python loop over the
    points in float64 (rounding only: 1e-12)."""
    calls = _spy(monkeypatch, plain, "plain_values")
    with jax.enable_x64(True):
        ka, kb = jax.random.split(jax.random.key(0))
        if model == "mlp":
            make, xshape = (lambda k: eqx.nn.MLP(4, 3, 5, 2, key=k)), (6, 4)
        else:
            make, xshape = _CNN, (6, 1, 7, 7)
        a, b = (jax.tree.map(lambda l: l.astype(jnp.float64) if eqx.is_inexact_array(l) else l,
                             make(k)) for k in (ka, kb))
        x = jnp.asarray(np.random.default_rng(0).normal(size=xshape))
        labels = jnp.arange(6) % 3

        def loss(net):
            logits = jax.vmap(net)(x)
            return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[jnp.arange(6), labels])

        path = jp.linear(a, b)
        got = jaxland.evaluate_path(loss, path, TS)
        assert got.dtype == jnp.float64
        want = [float(loss(path(jnp.float64(t)))) for t in TS]
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12)
    (args, _), = calls
    assert args[0].mode == "device"
    assert args[0].gemm == (model == "cnn" and jax.default_backend() == "cpu")


@pytest.mark.parametrize("structured", [True, False])
def test_data_batches_accumulate_the_mean_exactly(structured):
    x, y = make_data()
    path = make_path("bezier", *make_nets(jaxland.SkipNet))
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    full = jaxland.evaluate_path(obj, path, TS, structured=structured)
    # batch of 3 rows: 3 batches, the last padded with 2 zero-weight rows; sums then one division by N
    batched = jaxland.evaluate_path(obj, path, TS, structured=structured, batch_size=3)
    np.testing.assert_allclose(np.asarray(batched), np.asarray(full), rtol=RTOL)


def test_generic_fn_with_data_and_pytree_output():
    x, y = make_data()
    a, b, c = make_nets(jaxland.SkipNet)
    path = jp.polychain([a, c, b])

    def fn(net, batch):  # a mean over the batch, and a data-independent term
        xb, yb = batch
        return {"loss": jaxland.data_loss(net, xb, yb), "reg": jaxland.regularizer(net)}

    full = jaxland.evaluate_path(fn, path, TS, data=(x, y))
    batched = jaxland.evaluate_path(fn, path, TS, data=(x, y), batch_size=3)
    chex.assert_shape(full["loss"], (TS.shape[0],))
    chex.assert_trees_all_close(batched, full, rtol=RTOL)
    want = one_at_a_time(path, TS, x, y)  # F = loss + κ R
    np.testing.assert_allclose(np.asarray(full["loss"] + KAPPA * full["reg"]), want, rtol=RTOL)


@settings(max_examples=6, deadline=None)
@given(P=st.integers(1, 13), chunk=st.integers(1, 6), d=st.integers(1, 3), seed=st.integers(0, 99))
def test_chunk_size_invariance_random(P, chunk, d, seed):
    """A user pytree path and function: any P, any chunk size gives F(γ(t)) exactly as NumPy does."""
    rng = np.random.default_rng(seed)
    a = {"w": jnp.asarray(rng.normal(size=(d,)), jnp.float32), "s": jnp.float32(rng.normal())}
    b = {"w": jnp.asarray(rng.normal(size=(d,)), jnp.float32), "s": jnp.float32(rng.normal())}
    ts = np.sort(rng.uniform(0, 1, size=P)).astype(np.float32)
    fn = _sumsq
    got = jaxland.evaluate_path(fn, jp.linear(a, b), ts, chunk_size=chunk)
    pts = {k: (1 - ts[:, None]) * np.asarray(a[k]).reshape(1, -1) + ts[:, None] * np.asarray(
        b[k]).reshape(1, -1) for k in a}
    want = sum(np.sum(np.square(v.astype(np.float64)), axis=1) for v in pts.values())
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5)  # float32 arithmetic, O(d) terms


def _sumsq(p):
    return sum(jnp.sum(jnp.square(l)) for l in jax.tree.leaves(p))


class ObjectiveTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_objective_fn_matches_objective(self):
        x, y = make_data()
        net = make_nets(jaxland.SkipNet, 1)[0]
        obj = jaxland.objective_fn(x, y, kappa=KAPPA)
        got = self.variant(lambda o, n: o(n))(obj, net)
        np.testing.assert_allclose(float(got), float(jaxland.objective(net, x, y, kappa=KAPPA)),
                                   rtol=1e-6)


def test_bad_input_errors():
    x, y = make_data()
    a, b, _ = make_nets(jaxland.SkipNet)
    path = jp.linear(a, b)
    obj = jaxland.objective_fn(x, y)
    with pytest.raises(ValueError, match=r"ts must lie in \[0, 1\]"):
        jaxland.evaluate_path(obj, path, [0.0, 1.5])
    with pytest.raises(ValueError, match=r"ts must lie in \[0, 1\]"):
        jaxland.evaluate_path(obj, path, [-0.1, 0.5])
    with pytest.raises(ValueError, match=r"ts must have shape \(P,\)"):
        jaxland.evaluate_path(obj, path, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"ts must have shape \(P,\)"):
        jaxland.evaluate_path(obj, path, 0.5)
    with pytest.raises(ValueError, match="ts must be finite"):
        jaxland.evaluate_path(obj, path, [0.0, np.nan])
    with pytest.raises(ValueError, match="at least one point"):
        jaxland.evaluate_path(obj, path, np.zeros((0,)))
    assert_refuses(lambda: jaxland.evaluate_path(obj, a, [0.5]), "path", TypeError,
                   match="path must be")
    with pytest.raises(ValueError, match="different tree structures"):
        jaxland.evaluate_path(obj, jp.linear(a, jaxland.TwoLayer(a.W1, a.W2)), [0.5])
    with pytest.raises(ValueError, match=r"x must have shape \(N, 5\)"):
        wide = np_net(jaxland.SkipNet, np.random.default_rng(3), n=5)
        jaxland.evaluate_path(obj, jp.linear(wide, wide), [0.5])
    with pytest.raises(ValueError, match="batch_size"):
        jaxland.evaluate_path(obj, path, [0.5], batch_size=0)
    assert_refuses(lambda: jaxland.evaluate_path(obj, path, [0.5], chunk_size=1.5), "chunk_size",
                   ValueError)
    with pytest.raises(ValueError, match="memory_budget"):
        jaxland.evaluate_path(obj, path, [0.5], memory_budget=0)
    with pytest.raises(ValueError, match="data must be None"):
        jaxland.evaluate_path(obj, path, [0.5], data=(x, y))
    with pytest.raises(ValueError, match="scalar or a pytree of scalars"):
        jaxland.evaluate_path(lambda n: n.W1, path, [0.5])
    with pytest.raises(ValueError, match="kappa"):
        jaxland.objective_fn(x, y, kappa=-1.0)


SHARD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, jaxland
    from jax.sharding import Mesh
    from jaxland import paths as jp
    assert jax.device_count() == 4, jax.devices()
    ref = json.loads(sys.argv[1])  # single-device values computed by the parent test process
    import jax.numpy as jnp
    exec(sys.argv[2])  # np_net, as in the test module
    rng = np.random.default_rng(0)  # the same networks and data as make_nets / make_data
    a, b, c = [np_net(jaxland.SkipNet, rng) for _ in range(3)]
    rng = np.random.default_rng(100)
    x = jnp.asarray(rng.normal(size=(7, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(7, 2)), jnp.float32)
    obj = jaxland.objective_fn(x, y, kappa=0.1)
    ts = np.asarray(ref["ts"])
    path = jp.polychain([a, c, b])
    grid = Mesh(np.array(jax.devices()).reshape(2, 2), ("points", "data"))
    got = {
        # all 4 devices on the points axis (the default), structured fast path
        "structured": jaxland.evaluate_path(obj, path, ts),
        # 2 x 2 (points, data) with data batches of 3 rows (split 2 + 2 with padding)
        "structured_2x2": jaxland.evaluate_path(obj, path, ts, mesh=grid, batch_size=3),
        "plain_2x2": jaxland.evaluate_path(obj, path, ts, structured=False, mesh=grid, batch_size=3),
    }
    for k, v in got.items():
        want = ref["plain" if k.startswith("plain") else "structured"]
        # float32: sharding changes only the order of the per-device partial sums
        np.testing.assert_allclose(np.asarray(v), want, rtol=2e-5, err_msg=k)
    print("SHARDED_OK", jax.device_count())
    """
)


def test_sharded_equals_single_device():
    x, y = make_data()
    a, b, c = make_nets(jaxland.SkipNet)
    path = jp.polychain([a, c, b])
    obj = jaxland.objective_fn(x, y, kappa=KAPPA)
    one = jax.devices()[:1]  # the reference is single-device even if this process has more
    ref = {"ts": TS.tolist(),
           "structured": np.asarray(jaxland.evaluate_path(obj, path, TS, devices=one)).tolist(),
           "plain": np.asarray(jaxland.evaluate_path(obj, path, TS, structured=False,
                                                     devices=one)).tolist()}
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT, json.dumps(ref),
                          inspect.getsource(np_net)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "SHARDED_OK 4" in out.stdout
