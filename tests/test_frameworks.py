"""Every framework's model and its BatchNorm state (issue 22 §2, §3).

- `recompute_batch_stats` for flax linen `(module, variables, x)` and haiku
  `(transformed, (params, state), x)`: the statistics are the full-data mean and biased variance of
  every BatchNorm layer's input, compared with the computation written out below.
- Running statistics are not parameters: a linen `batch_stats`, a haiku state, nnx `BatchStat`s
  and an `eqx.nn.State` are left out of what is raveled, differentiated (Hessian), perturbed
  (directions, slices), searched (fit_curve) and matched (align), and carried or interpolated
  instead.
- `batch_size` is refused on a path through linen or haiku state.
- Joins: different widths name the first differing leaf with both shapes; a float16 model is not
  joined with a float32 one.

Exact identities, so float64 throughout (the module fixture); flax linen stores `batch_stats` in
float32 unless `force_float32_reductions=False` and `param_dtype=float64`, as below.
"""

import equinox as eqx
import flax.linen as nn
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxland as jl
from jaxland._params import num_params, ravel, stat_flags, tree_lerp, tree_norm


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


EPS = 1e-5  # linen's and haiku's default BatchNorm epsilon
F64 = dict(param_dtype=jnp.float64)


def data(n=11, seed=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    x = 1.5 * jax.random.normal(k1, (n, 3), jnp.float64) + 0.7  # non-zero mean: a real shift
    y = jnp.sin(x[:, :1]) + 0.1 * jax.random.normal(k2, (n, 1), jnp.float64)
    return x, y


# --- flax linen -----------------------------------------------------------------------------------


class LinenMLP(nn.Module):
    """Dense → BatchNorm → tanh → Dense → BatchNorm → Dense (the statistics kept in float64)."""

    @nn.compact
    def __call__(self, x, train: bool):
        bn = dict(use_running_average=not train, momentum=0.9, force_float32_reductions=False,
                  **F64)
        x = nn.BatchNorm(**bn)(nn.Dense(6, **F64)(x))
        x = nn.BatchNorm(**bn)(nn.Dense(5, **F64)(jnp.tanh(x)))
        return nn.Dense(1, **F64)(x)


def linen_pair():
    x, _ = data()
    m = LinenMLP()
    va = m.init(jax.random.PRNGKey(1), x, False)
    vb = m.init(jax.random.PRNGKey(2), x, False)
    # distinct, non-trivial statistics at both ends (what two trained networks would hold)
    va = jl.recompute_batch_stats(m, va, x, apply_kwargs={"train": False})
    vb = jl.recompute_batch_stats(m, vb, 2 * x, apply_kwargs={"train": False})
    return m, va, vb


def linen_reference(v, x):
    """The statistics by hand: each BatchNorm's input over all of x, normalised with them."""
    p = v["params"]
    h1 = x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    m1, v1 = h1.mean(0), ((h1 - h1.mean(0)) ** 2).mean(0)
    z1 = (h1 - m1) / jnp.sqrt(v1 + EPS) * p["BatchNorm_0"]["scale"] + p["BatchNorm_0"]["bias"]
    h2 = jnp.tanh(z1) @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    m2, v2 = h2.mean(0), ((h2 - h2.mean(0)) ** 2).mean(0)
    return {"BatchNorm_0": {"mean": m1, "var": v1}, "BatchNorm_1": {"mean": m2, "var": v2}}


@pytest.mark.parametrize("batch_size", [None, 4])
def test_linen_statistics_are_the_full_data_mean_and_biased_variance(batch_size):
    x, _ = data()
    m = LinenMLP()
    v = m.init(jax.random.PRNGKey(3), x, False)
    out = jl.recompute_batch_stats(m, v, x, apply_kwargs={"train": False}, batch_size=batch_size)
    assert set(out) == {"params", "batch_stats"}
    assert out["params"] is v["params"]
    # float64, sums of 11 terms: agreement to a few ulps of the O(1) values (4 passes pooled)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13),
                 out["batch_stats"], linen_reference(v, x))
    # the criterion: inference mode now computes what training mode computes on all of x, and
    # momentum 0 in training mode would store exactly these statistics
    y_train, _ = m.apply(v, x, True, mutable=["batch_stats"])
    np.testing.assert_allclose(m.apply(out, x, False), y_train, rtol=1e-11, atol=1e-12)


def test_linen_refusals_name_what_was_passed():
    x, _ = data()
    m = LinenMLP()
    v = m.init(jax.random.PRNGKey(3), x, False)
    with pytest.raises(TypeError, match=r"linen module, state must be its variables.*got None$"):
        jl.recompute_batch_stats(m, None, x)
    with pytest.raises(ValueError, match="no 'batch_stats' collection"):
        jl.recompute_batch_stats(m, {"params": v["params"]}, x)
    with pytest.raises(ValueError, match="use_running_average=False"):  # training mode forced
        jl.recompute_batch_stats(m, v, x, apply_kwargs={"train": True})
    with pytest.raises(ValueError, match=r"x has shape \(11, 4\)"):
        jl.recompute_batch_stats(m, v, jnp.ones((11, 4)), apply_kwargs={"train": False})


# --- haiku ----------------------------------------------------------------------------------------


def haiku_net(x, is_training):
    h = hk.BatchNorm(True, True, 0.9)(hk.Linear(6)(x), is_training)
    h = hk.BatchNorm(True, True, 0.99)(hk.Linear(5)(jnp.tanh(h)), is_training)
    return hk.Linear(1)(h)


HAIKU = hk.transform_with_state(haiku_net)


def haiku_pair():
    x, _ = data()
    a = jl.recompute_batch_stats(HAIKU, HAIKU.init(jax.random.PRNGKey(1), x, True), x,
                                 apply_kwargs={"is_training": False})
    b = jl.recompute_batch_stats(HAIKU, HAIKU.init(jax.random.PRNGKey(2), x, True), 2 * x,
                                 apply_kwargs={"is_training": False})
    return a, b


@pytest.mark.parametrize("batch_size", [None, 4])
def test_haiku_statistics_are_the_full_data_mean_and_biased_variance(batch_size):
    x, _ = data()
    params, state = HAIKU.init(jax.random.PRNGKey(3), x, True)
    p2, s2 = jl.recompute_batch_stats(HAIKU, (params, state), x, batch_size=batch_size,
                                      apply_kwargs={"is_training": False})
    assert p2 is params
    # by hand (haiku keeps the statistics with keepdims, shape (1, C))
    h1 = x @ params["linear"]["w"] + params["linear"]["b"]
    m1, v1 = h1.mean(0, keepdims=True), ((h1 - h1.mean(0)) ** 2).mean(0, keepdims=True)
    bn = params["batch_norm"]
    z1 = (h1 - m1) / jnp.sqrt(v1 + EPS) * bn["scale"] + bn["offset"]
    h2 = jnp.tanh(z1) @ params["linear_1"]["w"] + params["linear_1"]["b"]
    m2, v2 = h2.mean(0, keepdims=True), ((h2 - h2.mean(0)) ** 2).mean(0, keepdims=True)
    for name, want in [("batch_norm/~/mean_ema", m1), ("batch_norm/~/var_ema", v1),
                       ("batch_norm_1/~/mean_ema", m2), ("batch_norm_1/~/var_ema", v2)]:
        np.testing.assert_allclose(s2[name]["average"], want, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(s2[name]["hidden"], s2[name]["average"])
        decay = 0.9 if name.startswith("batch_norm/") else 0.99
        # the counter makes haiku's de-bias 1 − decay^counter exactly 1 in float64
        assert 1 - decay ** int(s2[name]["counter"]) == 1.0
    y_train, _ = HAIKU.apply(params, state, None, x, True)
    y_inf, _ = HAIKU.apply(p2, s2, None, x, False)
    np.testing.assert_allclose(y_inf, y_train, rtol=1e-11, atol=1e-12)


def test_haiku_refusals():
    x, _ = data()
    with pytest.raises(TypeError, match="transform_with_state"):
        jl.recompute_batch_stats(hk.transform(lambda x: hk.Linear(1)(x)), None, x)
    with pytest.raises(TypeError, match=r"pair \(params, state\).*got None"):
        jl.recompute_batch_stats(HAIKU, None, x)


# --- running statistics are not parameters --------------------------------------------------------


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 6, rngs=rngs, param_dtype=jnp.float64)
        self.bn = nnx.BatchNorm(6, rngs=rngs, param_dtype=jnp.float64)
        self.l2 = nnx.Linear(6, 1, rngs=rngs, param_dtype=jnp.float64)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.bn(self.l1(x))))


def frameworks():
    """(name, loss of the whole tree, tree, loss of the parameters alone, parameters) for a linen
    dict, a haiku pair and an nnx state; each loss uses the stored statistics (inference mode), so
    it depends on them."""
    x, y = data()
    m, va, _ = linen_pair()
    f_lin = lambda v: jnp.mean((m.apply(v, x, False) - y) ** 2)
    yield ("linen", f_lin, va, lambda p: f_lin({"params": p, "batch_stats": va["batch_stats"]}),
           va["params"])
    (hp, hs), _ = haiku_pair()
    f_hk = lambda v: jnp.mean((HAIKU.apply(v[0], v[1], None, x, False)[0] - y) ** 2)
    yield "haiku", f_hk, (hp, hs), lambda p: f_hk((p, hs)), hp
    model = jl.recompute_batch_stats(NnxNet(nnx.Rngs(0)), None, x)
    model.eval()
    graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    f_nnx = lambda s: jnp.mean((nnx.merge(graphdef, s)(x) - y) ** 2)
    whole = nnx.merge_state(params, stats)
    yield "nnx", f_nnx, whole, lambda p: f_nnx(nnx.merge_state(p, stats)), params


@pytest.fixture(scope="module")
def fw(_x64):
    return {f[0]: f[1:] for f in frameworks()}


@pytest.mark.parametrize("name", ["linen", "haiku", "nnx"])
def test_statistics_are_not_raveled_nor_differentiated(fw, name):
    """The issue measured hessian_eigs' top eigenvalue 4.28 with linen's batch_stats differentiated
    against 2.67 on params alone: the Hessian of the whole tree is now the Hessian of the params."""
    f, tree, f_params, params = fw[name]
    flags = stat_flags(tree)
    assert flags is not None and any(flags)
    assert num_params(tree) == num_params(params) == ravel(tree)[0].shape[0]
    H = jl.dense_hessian(f, tree)
    assert H.shape == (num_params(params),) * 2
    # the same function of the same parameters, in the same order: identical up to rounding
    np.testing.assert_allclose(H, jl.dense_hessian(f_params, params), rtol=1e-10, atol=1e-12)
    key = jax.random.PRNGKey(0)
    top = jl.hessian_eigs(f, tree, key=key, k=1, num_steps=num_params(params))
    np.testing.assert_allclose(np.ravel(top.lambda_max)[0], np.linalg.eigvalsh(np.asarray(H))[-1],
                               rtol=1e-8)


def stats_of(tree):
    return [l for l, s in zip(jax.tree.leaves(tree), stat_flags(tree), strict=True)
            if s and jnp.issubdtype(jnp.result_type(l), jnp.floating)]


@pytest.mark.parametrize("name", ["linen", "haiku"])
def test_directions_and_slices_carry_the_statistics(fw, name):
    f, tree, _, _ = fw[name]
    d1, d2 = jl.filter_normalized_directions(tree, 2, key=jax.random.PRNGKey(1))
    for d in (d1, d2):  # a direction moves the parameters only
        assert all(float(jnp.max(jnp.abs(s))) == 0.0 for s in stats_of(d))
        assert float(tree_norm(d)) > 0
    # F of the statistics alone is constant over the slice: no point of the plane moves them
    f_stats = lambda t: sum(jnp.sum(s) for s in stats_of(t))
    sl = jl.random_directions_slice(f_stats, tree, key=jax.random.PRNGKey(1), resolution=3)
    np.testing.assert_array_equal(np.asarray(sl.values), float(f_stats(tree)))


def test_fit_curve_does_not_train_linen_statistics():
    """fit_curve trains params only; at every t the statistics are (1 − t)·s_a + t·s_b (Bézier
    control point 1 holds their midpoint), in training and on the path returned."""
    x, y = data()
    m, va, vb = linen_pair()
    f = lambda v: jnp.mean((m.apply(v, x, False) - y) ** 2)
    r = jl.fit_curve(f, va, vb, steps=20, batch=4, learning_rate=1e-2, points=9)
    mid = jax.tree.map(lambda l: l[1], r.path.control_points)
    jax.tree.map(lambda u, a, b: np.testing.assert_allclose(u, 0.5 * a + 0.5 * b, rtol=1e-15),
                 mid["batch_stats"], va["batch_stats"], vb["batch_stats"])
    # the parameters of control point 1 were trained away from the segment's midpoint
    assert not np.allclose(ravel(mid)[0], ravel(tree_lerp(va, vb, 0.5))[0])
    for t in (0.0, 0.3, 1.0):
        p = r.path(t)
        jax.tree.map(lambda u, a, b: np.testing.assert_allclose(u, (1 - t) * a + t * b, rtol=1e-13,
                                                                atol=1e-15),
                     p["batch_stats"], va["batch_stats"], vb["batch_stats"])
    # the trained curve lowers the mean loss it optimises (the parameters did move)
    assert float(r.history[-1]) < float(r.history[0])


def test_batch_size_is_refused_on_linen_and_haiku_paths(fw):
    x, y = data()
    _, va, vb = linen_pair()
    a, b = haiku_pair()
    fn = lambda v, batch: jnp.sum(ravel(v)[0]) * jnp.mean(batch)
    for name, path in [("linen", jl.paths.linear(va, vb)), ("haiku", jl.paths.linear(a, b))]:
        with pytest.raises(ValueError, match=r"path\.a.* holds BatchNorm state"):
            jl.evaluate_path(fn, path, jnp.linspace(0, 1, 3), data=x, batch_size=4)


def test_eqx_state_is_not_a_parameter():
    model, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(4, "batch", mode="batch")
    assert num_params((model, state)) == num_params(model) == 8  # weight and bias; not mean, var


# --- joins: different widths, mixed dtypes --------------------------------------------------------


def test_different_widths_name_the_first_differing_leaf():
    a = eqx.nn.MLP(3, 1, width_size=8, depth=1, key=jax.random.PRNGKey(0))
    b = eqx.nn.MLP(3, 1, width_size=16, depth=1, key=jax.random.PRNGKey(1))
    calls = [lambda: jl.paths.linear(a, b), lambda: jl.fit_curve(lambda m: 0.0, a, b),
             lambda: jl.align(a, b), lambda: jl.hvp(lambda m: 0.0, a, b),
             lambda: jl.paths.from_function(lambda t: b, start_like=a),
             lambda: jl.trajectory_directions([b, a, a], num=1)]
    for call in calls:
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert ".layers[0].weight" in msg and "(8, 3)" in msg and "(16, 3)" in msg, msg
        assert "PyTreeDef" not in msg and len(msg) < 300, msg
    # a flax nnx state of other widths: its first leaf, the bias
    sa = nnx.split(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))[1]
    sb = nnx.split(nnx.Linear(3, 5, rngs=nnx.Rngs(0)))[1]
    with pytest.raises(ValueError, match=r"leaf \[.bias.\]\.value: \(4,\) vs \(5,\)"):
        jl.paths.linear(sa, sb)


def test_a_float16_model_is_not_joined_with_a_float32_one():
    a = {"w": jnp.ones((3,), jnp.float32), "b": jnp.zeros((2,), jnp.float32)}
    b16 = {"w": jnp.ones((3,), jnp.float16), "b": jnp.ones((2,), jnp.float32)}
    for call in (lambda: jl.paths.linear(a, b16), lambda: jl.paths.polychain([a, b16]),
                 lambda: jl.fit_curve(lambda p: jnp.sum(p["w"] ** 2), a, b16)):
        with pytest.raises(ValueError, match=r"dtype of leaf \['w'\]: float32 vs float16"):
            call()


def test_align_permutes_statistics_but_matches_parameters_only():
    """Weight matching on a linen dict: the hidden group permutes the BatchNorm statistics with its
    channels, but they are not in the cost. b is a planted permutation π of a whose statistics were
    permuted by another σ and scaled by 1e3: counted as weights they would dominate the cost and
    pull the match to σ; left out, π is recovered and the aligned parameters equal a's exactly."""
    _, va, _ = linen_pair()
    h = va["params"]["Dense_0"]["kernel"].shape[1]
    pi = np.asarray(jax.random.permutation(jax.random.PRNGKey(5), h))
    sigma = np.roll(pi, 1)
    take = lambda l, perm, ax: jnp.take(l, jnp.asarray(perm), axis=ax)
    p = va["params"]
    b = {"params": {"Dense_0": {"kernel": take(p["Dense_0"]["kernel"], pi, 1),
                                "bias": take(p["Dense_0"]["bias"], pi, 0)},
                    "BatchNorm_0": {k: take(v, pi, 0) for k, v in p["BatchNorm_0"].items()},
                    "Dense_1": {"kernel": take(p["Dense_1"]["kernel"], pi, 0),
                                "bias": p["Dense_1"]["bias"]},
                    "BatchNorm_1": p["BatchNorm_1"], "Dense_2": p["Dense_2"]},
         "batch_stats": {"BatchNorm_0": {k: 1e3 * take(v, sigma, 0)
                                         for k, v in va["batch_stats"]["BatchNorm_0"].items()},
                         "BatchNorm_1": va["batch_stats"]["BatchNorm_1"]}}
    spec = {"hidden": [("params.Dense_0.kernel", 1), ("params.Dense_0.bias", 0),
                       ("params.BatchNorm_0.scale", 0), ("params.BatchNorm_0.bias", 0),
                       ("batch_stats.BatchNorm_0.mean", 0), ("batch_stats.BatchNorm_0.var", 0),
                       ("params.Dense_1.kernel", 0)]}
    r = jl.align(va, b, spec=spec, method="weights")
    jax.tree.map(np.testing.assert_array_equal, r.net["params"], va["params"])
    # the statistics moved with the channels: b's σ-permuted statistics, now in π⁻¹σ order
    inv = np.argsort(pi)
    np.testing.assert_array_equal(r.net["batch_stats"]["BatchNorm_0"]["mean"],
                                  1e3 * va["batch_stats"]["BatchNorm_0"]["mean"][sigma][inv])


def test_haiku_pairs_with_different_counters_are_joined():
    """haiku's EMA counters are integer state, not weights: two networks trained for different
    numbers of steps are joinable; a path carries a's counters and interpolates the averages."""
    a, b = haiku_pair()
    name = "batch_norm/~/mean_ema"
    b = (b[0], {**b[1], name: {**b[1][name], "counter": b[1][name]["counter"] - 7}})
    path = jl.paths.linear(a, b)
    mid = path(0.5)
    assert int(mid[1][name]["counter"]) == int(a[1][name]["counter"])
    want = 0.5 * a[1][name]["average"] + 0.5 * b[1][name]["average"]
    np.testing.assert_allclose(mid[1][name]["average"], want, rtol=1e-15)
    with pytest.raises(ValueError, match=r"dtype of leaf \[0\]"):  # float32 params vs float64
        bad = (jax.tree.map(lambda l: l.astype(jnp.float32), b[0]), b[1])
        jl.paths.linear(a, bad)


def test_hessian_along_a_path_through_linen_statistics(fw):
    """hessian_eigs_along_path stacks the points, statistics included (they vary along the path),
    and differentiates each point's params only: at t = 0 and 1 the endpoints' top eigenvalues."""
    f, va, _, params = fw["linen"]
    _, _, vb = linen_pair()
    P = num_params(params)
    r = jl.hessian_eigs_along_path(f, jl.paths.linear(va, vb), jnp.asarray([0.0, 1.0]),
                                   key=jax.random.PRNGKey(0), k=1, num_steps=P)
    for i, v in enumerate((va, vb)):  # Lanczos with P steps is exact up to rounding
        want = np.linalg.eigvalsh(np.asarray(jl.dense_hessian(f, v)))[-1]
        np.testing.assert_allclose(np.ravel(r.lambda_max[i])[0], want, rtol=1e-8)
