"""Residual networks in `align` (issue 22, §1): permutation groups traced from the computation, the
function check that refuses a spec which breaks a skip, planted permutations with BatchNorm, and
equinox / flax linen / flax nnx / haiku models through `apply`."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl
from jaxland import align, apply_perms, permutation_spec

from _resnets import apply as resnet_apply
from _resnets import make as make_resnet

warnings.filterwarnings("ignore", message=".*BatchNorm.*mode.*")

X_IMG = jnp.asarray(np.random.default_rng(0).standard_normal((4, 1, 8, 8)), jnp.float32)


def _same(u, v) -> bool:
    return all(np.array_equal(np.asarray(p), np.asarray(q)) for p, q in
               zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(v), strict=True))


def _planted(net, spec, seed):
    rng = np.random.default_rng(seed)
    perms = {g.name: rng.permutation(g.size) for g in spec.groups}
    return apply_perms(net, perms, spec), perms


# --- the traced groups of a ResNet -----------------------------------------------------------------


def test_resnet_groups_share_the_stream():
    ms = make_resnet(jax.random.PRNGKey(0), width=6, width2=10)
    spec = permutation_spec(ms, apply=resnet_apply, example_input=X_IMG)
    d = {g.name: set(g.axes) for g in spec.groups}
    # the residual stream: the stem's channels, both blocks' second conv (their outputs are added
    # to it), the next block's inputs (conv1 and the projection), and the BatchNorms on it
    assert len(d) == 5, list(d)
    stream = d["[0].stem"]
    for pair in [("[0].stem.weight", 0), ("[0].stem.bias", 0), ("[0].bn.weight", 0),
                 ("[0].blocks[0].conv1.weight", 1), ("[0].blocks[0].conv2.weight", 0),
                 ("[0].blocks[0].bn2.bias", 0), ("[0].blocks[1].conv2.weight", 0),
                 ("[0].blocks[2].conv1.weight", 1), ("[0].blocks[2].short.weight", 1)]:
        assert pair in stream, pair
    # each block's inner units have their own group, with its BatchNorm and running statistics
    inner = d["[0].blocks[0].conv1"]
    assert inner >= {("[0].blocks[0].conv1.weight", 0), ("[0].blocks[0].bn1.weight", 0),
                     ("[0].blocks[0].conv2.weight", 1)}
    assert sum(1 for p, _ in inner if p.startswith("[1]")) == 2  # running mean and variance
    # after the projection shortcut: a new stream of 10 channels, read by the head
    out = d["[0].blocks[2].conv2"]
    assert ("[0].blocks[2].short.weight", 0) in out and ("[0].head.weight", 1) in out
    assert spec["[0].blocks[2].conv2"].size == 10
    # nothing that touches the input or the output is permuted
    every = set().union(*d.values())
    assert ("[0].stem.weight", 1) not in every and ("[0].head.weight", 0) not in every


@pytest.mark.parametrize("width", [8, 30, 50])
def test_planted_permutation_recovered_exactly(width):
    """Stream and inner units permuted at random, BatchNorm statistics random: weight matching
    recovers the planted permutation exactly (the aligned network equals `a` leaf for leaf, so its
    outputs are identical). benchmarks/bench_planted_resnet.py measures the rate over 100 seeds."""
    for seed in range(1 if width > 8 else 2):  # CI: 4 cases (each new width compiles anew)
        a = make_resnet(jax.random.PRNGKey(seed), width=width, width2=width + 2)
        spec = permutation_spec(a, apply=resnet_apply, example_input=X_IMG)
        b, perms = _planted(a, spec, seed)
        assert not _same(a, b)
        res = align(a, b, spec=spec, key=jax.random.PRNGKey(seed))
        assert _same(a, res.net)
        for name, p in perms.items():  # aligned unit i is unit res.perms[i] of b = unit i of a
            np.testing.assert_array_equal(p[res.perms[name]], np.arange(len(p)))
        np.testing.assert_array_equal(resnet_apply(res.net, X_IMG), resnet_apply(a, X_IMG))


@pytest.fixture
def _float64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


def test_float64_resnet_outputs_preserved(_float64):
    a = make_resnet(jax.random.PRNGKey(3), dtype=jnp.float64, width=8)
    x = X_IMG.astype(jnp.float64)
    spec = permutation_spec(a, apply=resnet_apply, example_input=x)
    b, _ = _planted(a, spec, 3)  # checked inside apply_perms at 1e3·eps = 2.2e-13 relative
    # a symmetry changes float64 outputs by reordered sums only (~1e-16 relative per sum)
    f_a, f_b = resnet_apply(a, x), resnet_apply(b, x)
    assert f_b.dtype == jnp.float64
    assert float(jnp.max(jnp.abs(f_a - f_b))) <= 1e-13 * float(jnp.max(jnp.abs(f_a)))
    assert jl.alignment._align.function_rtol(jnp.float64) == pytest.approx(2.220446e-13)
    assert jl.alignment._align.function_rtol(jnp.float32) == pytest.approx(1.1920929e-4)


# --- the function check ---------------------------------------------------------------------------


def _broken(spec, block="[0].blocks[1]"):
    """The traced groups with one block's output (conv2, bn2 and its running statistics) taken out
    of the residual stream into a group of its own: the skip is broken."""
    groups = spec.as_dict()
    stream = groups["[0].stem"]
    mine = [p for p in stream if p[0].startswith(block + ".conv2") or p[0].startswith(block + ".bn2")]
    groups["[0].stem"] = [p for p in stream if p not in mine]
    groups["block_out"] = mine
    return groups


def test_spec_that_breaks_the_skip_is_refused():
    a = make_resnet(jax.random.PRNGKey(1), width=8)
    spec = permutation_spec(a, apply=resnet_apply, example_input=X_IMG)
    bad = permutation_spec(a, _broken(spec), apply=resnet_apply, example_input=X_IMG)
    rng = np.random.default_rng(0)
    perms = {g.name: rng.permutation(g.size) for g in bad.groups}
    with pytest.raises(ValueError, match=r"changes the function.*'block_out' \(alone"):
        apply_perms(a, perms, bad)
    # a permutation of the stream alone (block_out left as is) breaks it too: the stream group is
    # named, the untouched group is not
    perms["block_out"] = np.arange(8)
    with pytest.raises(ValueError, match=r"'\[0\].stem' \(alone") as e:
        apply_perms(a, perms, bad)
    assert "block_out" not in str(e.value)
    # align refuses it as well, on two independent networks: matched on their own, the block's
    # output and the stream get different permutations (on a planted pair they would agree)
    b = make_resnet(jax.random.PRNGKey(7), width=8)
    with pytest.raises(ValueError, match="changes the function.*'block_out'"):
        align(a, b, spec=bad, key=jax.random.PRNGKey(0))
    # the traced spec passes the same check, and the aligned network computes what b computes
    res = align(a, b, spec=spec, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(resnet_apply(res.net, X_IMG), resnet_apply(b, X_IMG),
                               rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(resnet_apply(b, X_IMG)))))


def test_declared_dict_spec_checked_with_data():
    """A declared spec is checked on `data` too: align(…, data=x) with an apply."""
    a = make_resnet(jax.random.PRNGKey(2), width=8)
    spec = permutation_spec(a, apply=resnet_apply, example_input=X_IMG)
    bad = permutation_spec(a, _broken(spec, "[0].blocks[0]"), apply=resnet_apply)
    assert bad.probe is None  # no probe yet: apply_perms cannot check
    b = make_resnet(jax.random.PRNGKey(8), width=8)
    with pytest.raises(ValueError, match="changes the function"):
        align(a, b, spec=bad, data=X_IMG)


# --- align with no spec, and the other frameworks --------------------------------------------------


class ResMLP(eqx.Module):
    """x → W_in x, two residual blocks h + W2 relu(LayerNorm(W1 h)), head: called on one sample."""

    inp: eqx.nn.Linear
    blocks: list
    norm: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key, n=5, w=12, inner=7):
        ks = jax.random.split(key, 6)
        self.inp = eqx.nn.Linear(n, w, key=ks[0])
        self.blocks = [(eqx.nn.Linear(w, inner, key=ks[1 + 2 * i]), eqx.nn.LayerNorm(inner),
                        eqx.nn.Linear(inner, w, key=ks[2 + 2 * i])) for i in range(2)]
        self.norm = eqx.nn.LayerNorm(w)
        self.head = eqx.nn.Linear(w, 3, key=ks[5])

    def __call__(self, x):
        h = self.inp(x)
        for l1, ln, l2 in self.blocks:
            h = h + l2(jax.nn.relu(ln(l1(h))))
        return self.head(self.norm(h))


def test_align_without_spec_traces_an_equinox_module():
    a = ResMLP(jax.random.PRNGKey(0))
    x = jnp.asarray(np.random.default_rng(1).standard_normal((6, 5)), jnp.float32)
    spec = permutation_spec(a, example_input=x)  # default apply: jax.vmap(net)(x)
    assert sorted(g.size for g in spec.groups) == [7, 7, 12]
    stream = next(g for g in spec.groups if g.size == 12)
    # the final LayerNorm's scale and shift follow the stream; the inner LayerNorms their block
    assert ("norm.weight", 0) in stream.axes and ("blocks[1][2].weight", 0) in stream.axes
    b, _ = _planted(a, spec, 0)
    res = align(a, b, data=x, key=jax.random.PRNGKey(0))
    assert _same(res.net, a)
    assert res.spec.names == spec.names


def test_undecided_reshape_names_the_leaf():
    class Flat(eqx.Module):
        conv: eqx.nn.Conv2d
        lin: eqx.nn.Linear
        out: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3 = jax.random.split(key, 3)
            self.conv = eqx.nn.Conv2d(1, 4, 3, padding=1, key=k1)
            self.lin = eqx.nn.Linear(4 * 8 * 8, 6, key=k2)
            self.out = eqx.nn.Linear(6, 2, key=k3)

        def __call__(self, x):
            return self.out(jax.nn.relu(self.lin(jnp.ravel(jax.nn.relu(self.conv(x))))))

    net = Flat(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"axis 0 of leaf 'conv.weight'.*`reshape`.*from "
                                         r"\(4, 4, 8, 8\) to \(4, 256\) merges or splits.*strict=False"):
        permutation_spec(net, example_input=X_IMG)
    spec = permutation_spec(net, example_input=X_IMG, strict=False)
    assert spec.as_dict() == {"lin": [("lin.weight", 0), ("lin.bias", 0), ("out.weight", 1)]}
    b, _ = _planted(net, spec, 0)
    assert _same(align(net, b, spec=spec).net, net)


def test_flax_linen_batchnorm():
    nn = pytest.importorskip("flax.linen")

    class Res(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(10, name="inp")(x)
            for i in range(2):
                u = nn.relu(nn.BatchNorm(use_running_average=True, name=f"bn{i}")(
                    nn.Dense(6, name=f"d{i}a")(h)))
                h = h + nn.Dense(10, name=f"d{i}b")(u)
            return nn.Dense(2, name="head")(h)

    model = Res()
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)
    v = model.init(jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(1)
    v = jax.tree_util.tree_map(lambda l: jnp.asarray(np.abs(rng.standard_normal(l.shape)) + 0.1,
                                                     l.dtype), v)  # random statistics and weights
    apply = lambda vv, xx: model.apply(vv, xx)  # noqa: E731
    spec = permutation_spec(v, apply=apply, example_input=x)
    d = spec.as_dict()
    assert sorted(g.size for g in spec.groups) == [6, 6, 10]
    assert ("batch_stats.bn0.mean", 0) in d["params.d0a"] and \
        ("batch_stats.bn0.var", 0) in d["params.d0a"]
    assert ("params.d1b.kernel", 1) in d["params.inp"] and ("params.d0a.kernel", 0) in d["params.inp"]
    b, _ = _planted(v, spec, 0)
    res = align(v, b, data=x, spec=spec, key=jax.random.PRNGKey(0))
    assert _same(res.net, v)
    np.testing.assert_array_equal(apply(res.net, x), apply(v, x))


def test_flax_nnx_batchnorm():
    nnx = pytest.importorskip("flax.nnx")

    class Res(nnx.Module):
        def __init__(self, rngs):
            self.inp = nnx.Linear(4, 10, rngs=rngs)
            self.a = nnx.Linear(10, 6, rngs=rngs)
            self.bn = nnx.BatchNorm(6, use_running_average=True, rngs=rngs)
            self.b = nnx.Linear(6, 10, rngs=rngs)
            self.head = nnx.Linear(10, 2, rngs=rngs)

        def __call__(self, x):
            h = self.inp(x)
            h = h + self.b(nnx.relu(self.bn(self.a(h))))
            return self.head(h)

    net = Res(nnx.Rngs(0))
    net.bn.mean[...] = jnp.linspace(-1.0, 1.0, 6)
    net.bn.var[...] = jnp.linspace(0.5, 2.0, 6)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)
    spec = permutation_spec(net, example_input=x)  # default apply: net(x)
    d = spec.as_dict()
    assert sorted(g.size for g in spec.groups) == [6, 10]
    assert ("bn.mean", 0) in d["a"] and ("bn.var", 0) in d["a"] and ("b.kernel", 1) in d["inp"]
    b, _ = _planted(net, spec, 0)
    res = align(net, b, data=x, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(res.net(x), net(x))
    assert _same(nnx.state(res.net), nnx.state(net))


def test_haiku_transform_with_state_batchnorm():
    hk = pytest.importorskip("haiku")

    def fwd(x, is_training):
        h = hk.Linear(10, name="inp")(x)
        u = hk.Linear(6, name="a")(h)
        u = hk.BatchNorm(True, True, 0.9, name="bn")(u, is_training)
        h = h + hk.Linear(10, name="b")(jax.nn.relu(u))
        return hk.Linear(2, name="head")(h)

    f = hk.without_apply_rng(hk.transform_with_state(fwd))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 4)), jnp.float32)
    params, state = f.init(jax.random.PRNGKey(0), x, True)
    rng = np.random.default_rng(2)
    state = jax.tree_util.tree_map(lambda l: jnp.asarray(
        np.abs(rng.standard_normal(l.shape)) + 0.1, l.dtype) if jnp.issubdtype(
        l.dtype, jnp.floating) else l, state)
    apply = lambda ps, xx: f.apply(ps[0], ps[1], xx, False)[0]  # noqa: E731
    spec = permutation_spec((params, state), apply=apply, example_input=x)
    d = spec.as_dict()
    inner = next(g for g in spec.groups if g.size == 6)
    names = {p for p, _ in inner.axes}
    assert any("mean_ema" in p for p in names) and any("var_ema" in p for p in names), names
    assert any("bn.scale" in p or "bn'].scale" in p or p.endswith("scale") for p in names), names
    assert len(d) == 2
    b, _ = _planted((params, state), spec, 0)
    res = align((params, state), b, spec=spec, key=jax.random.PRNGKey(0))
    assert _same(res.net, (params, state))


# --- errors ---------------------------------------------------------------------------------------


def test_nan_weight_named():
    a = ResMLP(jax.random.PRNGKey(0))
    x = jnp.ones((3, 5), jnp.float32)
    spec = permutation_spec(a, example_input=x)
    b = eqx.tree_at(lambda m: m.blocks[1][0].weight, a,
                    a.blocks[1][0].weight.at[2, 3].set(jnp.nan))
    with pytest.raises(ValueError, match=r"b: leaf 'blocks\[1\]\[0\].weight' \(shape \(7, 12\)\) "
                                         r"holds 1 NaN"):
        align(a, b, spec=spec)
    with pytest.raises(ValueError, match=r"a: leaf 'blocks\[1\]\[0\].weight'"):
        align(b, a, spec=spec)


# --- REPAIR ---------------------------------------------------------------------------------------


def _point_stats(net, x):
    """(mean, std) per channel at every REPAIR correction point of the test ResNet."""
    from jaxland.alignment import _repair as rp
    from jaxland.alignment._spec import flatten
    from jaxland.alignment._trace import trace

    fl = flatten(net)
    dyn = [i for i, leaf in enumerate(fl.leaves) if eqx.is_array(leaf)]

    def fn(vals, xx):
        ls = list(fl.leaves)
        for i, v in zip(dyn, vals, strict=True):
            ls[i] = v
        return resnet_apply(jax.tree_util.tree_unflatten(fl.treedef, ls), xx)

    vals = [fl.leaves[i] for i in dyn]
    an, closed, _ = trace(fn, vals, x)
    pts = rp._points(an, closed, len(dyn))
    c = type(closed)(closed.jaxpr.replace(outvars=[p.z for p in pts]), closed.consts)
    zs = jax.jit(rp._jaxpr_as_fun(c))(*vals, x)
    return [rp._stats(np.asarray(z), p.axis) for z, p in zip(zs, pts, strict=True)]


def test_repair_matches_the_interpolated_statistics():
    x = jnp.asarray(np.random.default_rng(5).standard_normal((32, 1, 8, 8)), jnp.float32)
    a = make_resnet(jax.random.PRNGKey(0), width=8)
    b = make_resnet(jax.random.PRNGKey(1), width=8)
    b = align(a, b, data=x[:4], spec=permutation_spec(a, apply=resnet_apply,
                                                      example_input=x[:4])).net
    t = 0.5
    mid = jl.alignment.interpolate(a, b, t)
    rep = jl.alignment.interpolate(a, b, t, repair=True, data=x, apply=resnet_apply)
    sa, sb, sm, sr = (_point_stats(n, x) for n in (a, b, mid, rep))
    # stem conv (biased), stem BN, 2 BNs in each of 3 blocks, the projection conv (biased)
    assert len(sr) == 9
    collapse = []
    for (ma, da), (mb, db), (_, dm), (mr, dr) in zip(sa, sb, sm, sr, strict=True):
        target_sd = (1 - t) * da + t * db
        collapse.append(float(np.mean(dm / target_sd)))
        # float32 forward passes, statistics in float64 on 2048–32 values per channel: agreement
        # to ~1e-6 relative is rounding; 1e-4 leaves room
        np.testing.assert_allclose(dr, target_sd, rtol=1e-4)
        np.testing.assert_allclose(mr, (1 - t) * ma + t * mb, atol=1e-4 * float(np.max(target_sd)))
    # the plain midpoint's channels have collapsed (std below the interpolated one) and the
    # collapse deepens with depth: variance collapse, what REPAIR undoes
    assert max(collapse) < 0.95 and collapse[-1] < collapse[0]
    # at an endpoint REPAIR changes nothing but rounding
    same = jl.repair(a, a, b, 0.0, x, apply=resnet_apply)
    np.testing.assert_allclose(resnet_apply(same, x), resnet_apply(a, x), rtol=1e-4, atol=1e-4)


def test_repair_arguments():
    a = make_resnet(jax.random.PRNGKey(0), width=8)
    with pytest.raises(ValueError, match="needs data"):
        jl.alignment.interpolate(a, a, 0.5, repair=True)
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]; got 1.5"):
        jl.repair(a, a, a, 1.5, X_IMG, apply=resnet_apply)


def test_activation_matching_on_traced_sites():
    """method="activations" with no spec: the groups and the values compared (each group's last
    ReLU; a convolution's channels at every position) come from the trace; planted copies are
    recovered exactly (a unit correlates 1 with itself)."""
    a = make_resnet(jax.random.PRNGKey(4), width=8)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((16, 1, 8, 8)), jnp.float32)
    spec = permutation_spec(a, apply=resnet_apply, example_input=x)
    acts = spec.activations(a, x)
    assert {k: v.shape for k, v in acts.items()}["[0].stem"] == (16 * 64, 8)
    b, perms = _planted(a, spec, 4)
    res = align(a, b, method="activations", data=x, spec=spec)  # function check inside
    for name, p in perms.items():
        # units whose values vary on x (not dead ReLUs, which correlate with nothing and are
        # matched arbitrarily among themselves) are recovered exactly
        live = np.std(acts[name], axis=0) > 0
        assert live.sum() >= 4
        np.testing.assert_array_equal(p[res.perms[name]][live], np.arange(len(p))[live])
    m = ResMLP(jax.random.PRNGKey(0))
    xm = jnp.asarray(np.random.default_rng(1).standard_normal((32, 5)), jnp.float32)
    bm, _ = _planted(m, permutation_spec(m, example_input=xm), 1)
    assert _same(align(m, bm, method="activations", data=xm).net, m)
