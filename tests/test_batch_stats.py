"""recompute_batch_stats (equinox and flax nnx), its use inside evaluate_path, slices, fit_curve and
the Hessian, and evaluate_path's refusal to batch data through a model with BatchNorm state.

The criterion of issue 13: with the recomputed statistics, the network in inference mode computes
what it computes in training mode on one batch holding all of x. Exact identities, so float64
throughout (the module-scoped fixture below).
"""

import functools

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_refuses, raises_naming

import jaxland as jl
from jaxland import recompute_batch_stats


@pytest.fixture(autouse=True, scope="module")
def _x64():
    with jax.enable_x64(True):
        yield


MOMENTUM = 0.9
N = 13  # a prime: every batch_size < N leaves a remainder batch


class CNN(eqx.Module):
    """Conv2d → BatchNorm → relu → Conv2d → BatchNorm → relu → Linear, BatchNorm fields *not* in
    call order (`bn_late` is flattened first), so nothing may rely on the pytree order of the
    layers."""

    bn_late: eqx.nn.BatchNorm
    conv1: eqx.nn.Conv2d
    bn_early: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key, mode):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(1, 3, 3, key=k1)
        self.bn_early = eqx.nn.BatchNorm(3, "batch", momentum=MOMENTUM, mode=mode)
        self.conv2 = eqx.nn.Conv2d(3, 2, 3, key=k2)
        self.bn_late = eqx.nn.BatchNorm(2, "batch", momentum=MOMENTUM, mode=mode)
        self.head = eqx.nn.Linear(2 * 2 * 2, 1, key=k3)

    def __call__(self, x, state):
        x, state = self.bn_early(self.conv1(x), state)
        x, state = self.bn_late(self.conv2(jax.nn.relu(x)), state)
        return self.head(jax.nn.relu(x).ravel())[0], state


def mlp(key, mode):
    """BatchNorm nested inside eqx.nn.Sequential (which passes the state only to StatefulLayers)."""
    k1, k2, k3 = jax.random.split(key, 3)
    return eqx.nn.Sequential(
        [
            eqx.nn.Linear(3, 5, key=k1),
            eqx.nn.BatchNorm(5, "batch", momentum=MOMENTUM, mode=mode),
            eqx.nn.Lambda(jax.nn.tanh),
            eqx.nn.Linear(5, 4, key=k2),
            eqx.nn.BatchNorm(4, "batch", momentum=MOMENTUM, mode=mode),
            eqx.nn.Lambda(jax.nn.relu),
            eqx.nn.Linear(4, "scalar", key=k3),
        ]
    )


def data(kind):
    rng = np.random.default_rng(42)
    shape = (N, 1, 6, 6) if kind == "cnn" else (N, 3)
    # mean 1, scale 2: statistics far from the (0, 1) a fresh state holds
    x = jnp.asarray(1.0 + 2.0 * rng.normal(size=shape))
    y = jnp.asarray(np.sin(np.arange(N, dtype=np.float64)))
    return x, y


@functools.cache
def _base(kind, mode):
    # Built once: equinox's initialisers compile one small kernel per shape, about a second per
    # layer.
    return eqx.nn.make_with_state(CNN if kind == "cnn" else mlp)(jax.random.PRNGKey(0), mode)


def make(kind, mode, seed):
    """(model, fresh state); seed > 0 moves every parameter by an independent N(0, 0.5²) draw."""
    model, state = _base(kind, mode)
    if seed:
        rng = np.random.default_rng(seed)
        params, rest = eqx.partition(model, eqx.is_inexact_array)
        params = jax.tree.map(lambda a: a + 0.5 * rng.normal(size=a.shape), params)
        model = eqx.combine(params, rest)
    return model, jax.tree.map(lambda a: a, state)  # a copy: State.set invalidates its argument


@eqx.filter_jit
def lerp(a, b, t):
    """(1 − t) a + t b on the inexact leaves; every other leaf from a."""
    pa, rest = eqx.partition(a, eqx.is_inexact_array)
    pb, _ = eqx.partition(b, eqx.is_inexact_array)
    return eqx.combine(jax.tree.map(lambda u, v: (1 - t) * u + t * v, pa, pb), rest)


@eqx.filter_jit
def outputs(model, state, x):
    """model over the batch x, as equinox's examples call it: vmap with the BatchNorm axis name."""
    return jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))(x, state)


def train_out(model, fresh_state, x):
    # Training mode on one batch holding all of x. From a fresh state, so that mode "ema" (whose
    # training pass normalises with the running average after its first call) uses the batch
    # statistics.
    return outputs(model, fresh_state, x)[0]


def infer_out(model, state, x):
    return outputs(eqx.nn.inference_mode(model), state, x)[0]


def float_leaves(state):
    return [a for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.inexact)]


@pytest.fixture(
    scope="module",
    # both modes on the CNN (layers not in call order); the Sequential MLP in mode "batch"
    params=[("cnn", "batch"), ("cnn", "ema"), ("mlp", "batch")],
    ids=lambda p: "-".join(p),
)
def setup(request):
    kind, mode = request.param
    a, state = make(kind, mode, 0)
    b, _ = make(kind, mode, 1)
    x, y = data(kind)
    # A used state (counter > 0, hidden statistics of other data), as a user holds after training.
    _, used = outputs(a, state, x * 0.5 - 2.0)
    _, used = outputs(a, used, x * 3.0)
    return kind, mode, a, b, state, used, x, y


# (a) the criterion, along a segment ---------------------------------------------------------------


def test_inference_equals_full_batch_training_along_a_segment(setup):
    kind, mode, a, b, fresh, used, x, y = setup
    for t in (0.0, 0.35, 0.8, 1.0):
        m = lerp(a, b, t)
        st = recompute_batch_stats(m, used, x)
        out_train, out_inf = train_out(m, fresh, x), infer_out(m, st, x)
        loss_train = jnp.mean((out_train - y) ** 2)
        loss_inf = jnp.mean((out_inf - y) ** 2)
        # Same arithmetic up to the order of two float64 reductions: rounding-level, far below 1e-8.
        assert abs(float(loss_inf - loss_train)) < 1e-8
        np.testing.assert_allclose(out_inf, out_train, rtol=1e-10, atol=1e-10)


def test_the_trap_one_training_pass_is_not_enough():
    """Why the state must be set: in mode "batch" one training pass from a fresh state leaves the
    de-biased hidden variance (m·1 + (1 − m)·v)/(1 − m) = v + m/(1 − m), not v."""
    model, fresh = make("mlp", "batch", 0)
    x, _ = data("mlp")
    _, naive = outputs(model, fresh, x)
    good = recompute_batch_stats(model, fresh, x)
    ref = train_out(model, fresh, x)
    assert float(jnp.max(jnp.abs(infer_out(model, naive, x) - ref))) > 1e-2
    np.testing.assert_allclose(infer_out(model, good, x), ref, rtol=1e-10, atol=1e-10)


# (f) against a reference: a plain loop of training-mode passes ------------------------------------


def reference_stats(model, fresh, x):
    """Per BatchNorm layer, the statistics of its input in the full-batch training pass, read back
    from the state one training pass leaves behind (decoding equinox's update rule)."""
    _, after = outputs(model, fresh, x)
    bns = [
        l
        for l in jax.tree.leaves(model, is_leaf=lambda n: isinstance(n, eqx.nn.BatchNorm))
        if isinstance(l, eqx.nn.BatchNorm)
    ]
    stats = []
    for bn in bns:
        if bn.mode == "ema":  # first call: the running statistics are the batch statistics
            stats.append(after.get(bn.ema_state_index))
        else:  # hidden = m·(0, 1) + (1 − m)·(mean, var)
            hm, hv = after.get(bn.batch_state_index)
            stats.append((hm / (1 - bn.momentum), (hv - bn.momentum) / (1 - bn.momentum)))
    return bns, stats


@pytest.mark.parametrize("mode", ["batch", "ema"])
def test_matches_a_loop_of_training_passes(mode):
    """With batch_size = 4 (a remainder batch of 1, N = 13), on the CNN whose BatchNorm layers are
    not in call order; the MLP's batched statistics are checked inside evaluate_path below."""
    a, fresh = make("cnn", mode, 0)
    b, _ = make("cnn", mode, 1)
    x, _ = data("cnn")
    _, used = outputs(a, fresh, x * 3.0)
    for t in (0.2, 0.6):  # a plain Python loop over path points, one training pass each
        m = lerp(a, b, t)
        st = recompute_batch_stats(m, used, x, batch_size=4)
        bns, ref = reference_stats(m, fresh, x)
        for bn, (mean, var) in zip(bns, ref, strict=True):
            got = st.get(bn.batch_state_index if mode == "batch" else bn.ema_state_index)
            # The batch-mode decoding subtracts m = 0.9 from m + 0.1·v: ~10 ulps of 1, hence 1e-13.
            np.testing.assert_allclose(got[0], mean, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(got[1], var, rtol=1e-12, atol=1e-13)
            if mode == "batch":  # the counter makes equinox's de-bias exactly 1
                assert 1 - bn.momentum ** int(st.get(bn.batch_counter)) == 1.0
            else:
                assert not bool(st.get(bn.ema_first_time_index))


# (b) batches pool exactly -------------------------------------------------------------------------


# (d) the input state stays valid ------------------------------------------------------------------


def test_calling_twice_with_the_same_state():
    model, state = make("cnn", "batch", 0)
    x, _ = data("cnn")
    s1 = recompute_batch_stats(model, state, x)
    s2 = recompute_batch_stats(model, state, x, batch_size=4)
    s3 = recompute_batch_stats(model, state, x)
    s4 = recompute_batch_stats(model, state, x, batch_size=100)  # > N: one batch
    chex.assert_trees_all_equal(s1, s3)  # deterministic
    chex.assert_trees_all_equal(s1, s4)  # the same computation
    # Chan's pairwise update in float64: a few ulps per merge on O(1)–O(10) statistics.
    chex.assert_trees_all_close(float_leaves(s1), float_leaves(s2), rtol=1e-12, atol=1e-12)
    outputs(model, state, x)  # and the caller's state is still usable


# (e) jit, and vmap over path points ---------------------------------------------------------------


def test_under_jit_and_vmap_over_three_path_points():
    a, state = make("cnn", "batch", 0)
    b, _ = make("cnn", "batch", 1)
    x, _ = data("cnn")
    ts = jnp.array([0.0, 0.4, 1.0])
    stacked = eqx.filter_vmap(lambda t: lerp(a, b, t))(ts)

    jitted = eqx.filter_jit(recompute_batch_stats)
    chex.assert_trees_all_close(
        float_leaves(jitted(a, state, x, batch_size=4)),
        float_leaves(recompute_batch_stats(a, state, x, batch_size=4)),
        rtol=1e-13,
        atol=1e-13,
    )

    states = eqx.filter_jit(
        eqx.filter_vmap(lambda m: recompute_batch_stats(m, state, x, batch_size=4))
    )(stacked)
    for i, t in enumerate(ts):
        m = lerp(a, b, t)
        st_i = jax.tree.map(lambda leaf, i=i: leaf[i], states)
        # vmap batches the same float64 arithmetic: rounding-level differences at most.
        chex.assert_trees_all_close(
            float_leaves(st_i),
            float_leaves(recompute_batch_stats(m, state, x)),
            rtol=1e-12,
            atol=1e-12,
        )
        np.testing.assert_allclose(
            infer_out(m, st_i, x), train_out(m, state, x), rtol=1e-10, atol=1e-10
        )


def test_counter_keeps_working_when_training_resumes():
    """Mode "batch": the state reads as a converged running average, so one more training step mixes
    a new batch in with weight 1 − m (it is not re-inflated by the de-bias of a restarted
    counter)."""
    model, state = make("mlp", "batch", 0)
    x, _ = data("mlp")
    st = recompute_batch_stats(model, state, x)
    _, after = outputs(model, st, x[:6])
    bn = model.layers[1]
    _, batch_stats = outputs(model, state, x[:6])
    new_mean = after.get(bn.batch_state_index)[0]
    old_mean = st.get(bn.batch_state_index)[0]
    fresh_hidden = batch_stats.get(bn.batch_state_index)[
        0
    ]  # (1 − m)·(batch mean) from a zero start
    np.testing.assert_allclose(new_mean, MOMENTUM * old_mean + fresh_hidden, rtol=1e-12)


# (g) errors ---------------------------------------------------------------------------------------


def test_errors_name_the_argument():
    model, state = make("cnn", "ema", 0)
    x, _ = data("cnn")
    with pytest.raises(ValueError, match=r"x has shape \(13, 6, 6\).*sample of shape \(6, 6\)"):
        recompute_batch_stats(model, state, x[:, 0])
    with pytest.raises(ValueError, match=r"x has shape \(13, 1, 5, 5\)"):
        recompute_batch_stats(model, state, x[:, :, :5, :5])
    with pytest.raises(ValueError, match=r"x must hold at least one sample.*\(0, 1, 6, 6\)"):
        recompute_batch_stats(model, state, x[:0])
    assert_refuses(lambda: recompute_batch_stats(model, state, jnp.float64(1.0)), "x", ValueError,
                   match=r"x must hold at least one sample.*got shape \(\)")
    for bad in (0, -3, 2.5, True):
        with raises_naming(
            "batch_size", ValueError, match=rf"batch_size must be None or an integer ≥ 1; got {bad!r}"
        ):
            recompute_batch_stats(model, state, x, batch_size=bad)
    plain = eqx.nn.MLP(3, 1, 4, 1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="model contains no eqx.nn.BatchNorm layer"):
        recompute_batch_stats(plain, eqx.nn.State(plain), jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"axis_name is 'data' but the BatchNorm at model.bn_late"):
        recompute_batch_stats(model, state, x, axis_name="data")
    with raises_naming("state", TypeError, match="state must be an eqx.nn.State"):
        recompute_batch_stats(model, {"mean": 0.0}, x)
    _, other_state = make("mlp", "ema", 0)
    with pytest.raises(
        ValueError, match=r"state holds no statistics for the BatchNorm at model.bn_late"
    ):
        recompute_batch_stats(model, other_state, x)
    _, used = outputs(model, state, x)
    _ = used.set(model.bn_late.ema_first_time_index, jnp.array(False))  # invalidates `used`
    with pytest.raises(ValueError, match="state is no longer valid"):
        recompute_batch_stats(model, used, x)


# (h) inside evaluate_path, a slice, fit_curve and the Hessian -------------------------------------
# One small model (the MLP in mode "batch": Sequential, function leaves) and a few points. F_inf(θ)
# is the inference-mode loss with the statistics recomputed at θ inside the function; F_train(θ) is
# the training-mode loss on the whole data. They are the same function of θ.


@functools.cache
def _uses():
    a, state = make("mlp", "batch", 0)
    b, _ = make("mlp", "batch", 1)
    x, y = data("mlp")

    def F_inf(m, batch_size=None, stop=False):
        st = recompute_batch_stats(m, state, x, batch_size=batch_size)
        st = jax.lax.stop_gradient(st) if stop else st
        return jnp.mean((infer_out(m, st, x) - y) ** 2)

    def F_train(m):
        return jnp.mean((train_out(m, state, x) - y) ** 2)

    return a, b, state, x, y, F_inf, F_train


def test_inside_evaluate_path_along_a_segment():
    """The issue's check: evaluate_path of the inference loss with the new statistics equals the
    full-batch training-mode loss along a segment, to 1e-8 in float64."""
    a, b, _, _, _, F_inf, F_train = _uses()
    ts = np.linspace(0.0, 1.0, 5)
    got = jl.evaluate_path(lambda m: F_inf(m, batch_size=4), jl.paths.linear(a, b), ts)
    ref = np.array([float(F_train(lerp(a, b, t))) for t in ts])
    # the same float64 arithmetic up to the order of reductions (and Chan's pooling): ~1e-15
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-8)
    assert float(np.ptp(ref)) > 1e-2  # the loss does change along the segment


def test_inside_a_slice():
    """A slice over the parameters (the non-parameter leaves captured by fn): at (α, β) = (1, 0)
    the plane passes through b, at (0, 0) through a."""
    a, b, _, _, _, F_inf, F_train = _uses()
    pa, static = eqx.partition(a, eqx.is_inexact_array)
    pb, _ = eqx.partition(b, eqx.is_inexact_array)
    u = jax.tree.map(lambda p, q: q - p, pa, pb)
    v = jax.tree.map(lambda p: jnp.flip(p), u)
    sl = jl.random_directions_slice(
        lambda p: F_inf(eqx.combine(p, static)), pa, directions=(u, v), resolution=3, span=1.0
    )
    chex.assert_shape(sl.values, (3, 3))
    # tolerance as above
    np.testing.assert_allclose(sl.values[1, 1], F_train(a), rtol=0, atol=1e-8)
    np.testing.assert_allclose(sl.values[2, 1], F_train(b), rtol=0, atol=1e-8)
    corner = eqx.combine(jax.tree.map(lambda p, du, dv: p - du + dv, pa, u, v), static)
    np.testing.assert_allclose(sl.values[0, 2], F_train(corner), rtol=0, atol=1e-8)


def test_inside_fit_curve_and_its_gradients():
    """fit_curve re-estimates the statistics at each sampled t (Garipov et al.'s update_bn) and
    differentiates through them (F_inf is F_train as a function of θ: see the Hessian test below).
    jax.lax.stop_gradient on the returned state makes the statistics constants (PyHessian's
    evaluation mode): the gradient is then that of the inference loss at fixed statistics, which is
    not F_train's (so a curve trained with it need not descend; in the nnx example it climbs)."""
    a, b, state, x, y, F_inf, F_train = _uses()
    m = lerp(a, b, 0.3)
    st = recompute_batch_stats(m, state, x)
    g_fixed = eqx.filter_grad(lambda mm: jnp.mean((infer_out(mm, st, x) - y) ** 2))(m)
    g_stop = eqx.filter_grad(lambda mm: F_inf(mm, stop=True))(m)
    # the same float64 arithmetic: rounding-level differences
    chex.assert_trees_all_close(g_stop, g_fixed, rtol=1e-9, atol=1e-11)
    g_train = eqx.filter_grad(F_train)(m)  # F_inf's gradient (see the Hessian test)
    gap = max(
        float(jnp.max(jnp.abs(u - v)))
        for u, v in zip(jax.tree.leaves(g_stop), jax.tree.leaves(g_train), strict=True)
    )
    assert gap > 1e-3  # the two gradients do differ

    res = jl.fit_curve(F_inf, a, b, steps=3, batch=2, points=3, key=jax.random.PRNGKey(0))
    assert np.all(np.isfinite(res.history))
    for t, v in zip(res.ts, res.values, strict=True):  # the criterion on the fitted curve
        np.testing.assert_allclose(v, F_train(res.path(t)), rtol=0, atol=1e-8)


def test_inside_the_hessian():
    """∇²F_inf = ∇²F_train: first and second derivatives through the recomputed statistics
    (forward over reverse, as in every Hessian routine of jaxland) are those of the full-batch
    training loss (a wrong gradient would give a wrong Hessian)."""
    a, b, _, _, _, F_inf, F_train = _uses()
    m = lerp(a, b, 0.5)
    H_inf = np.asarray(jl.dense_hessian(F_inf, m))
    H_train = np.asarray(jl.dense_hessian(F_train, m))
    # second derivatives of the same float64 computation in another order: ~1e-13 relative
    np.testing.assert_allclose(H_inf, H_train, rtol=0, atol=1e-9 * np.abs(H_train).max())
    assert np.linalg.eigvalsh(H_train)[0] < 0 < np.abs(H_train).max()  # not a trivial matrix


# (i) evaluate_path refuses to batch data through BatchNorm state (issue 12, item 10) -------------


def test_evaluate_path_refuses_to_batch_data_through_batchnorm():
    a, b, state, x, y, _, _ = _uses()
    ts = np.array([0.0, 0.5, 1.0])

    def per_batch(m, batch):  # training mode: each batch would use its own statistics
        xb, yb = batch
        return jnp.mean((outputs(m, state, xb)[0] - yb) ** 2)

    with pytest.raises(ValueError, match=r"batch_size=4 splits the data.*path\.a.*BatchNorm"):
        jl.evaluate_path(per_batch, jl.paths.linear(a, b), ts, data=(x, y), batch_size=4)

    # A path over the parameters only: the model's other leaves are captured by fn.
    pa, static = eqx.partition(a, eqx.is_inexact_array)
    pb, _ = eqx.partition(b, eqx.is_inexact_array)

    def per_batch_params(p, batch):
        return per_batch(eqx.combine(p, static), batch)

    path = jl.paths.linear(pa, pb)
    with pytest.raises(ValueError, match=r"path\.a\.layers\[1\] holds BatchNorm"):
        jl.evaluate_path(per_batch_params, path, ts, data=(x, y), batch_size=4)
    # A path over a flat list of the parameter arrays: the BatchNorm is seen among the variables
    # fn captures.
    leaves_a, treedef = jax.tree.flatten(pa)
    leaves_b = jax.tree.leaves(pb)

    def per_batch_flat(p, batch):
        return per_batch_params(jax.tree.unflatten(treedef, p), batch)

    path = jl.paths.linear(leaves_a, leaves_b)
    with pytest.raises(ValueError, match=r"fn \(captured variable '\w+'\).* holds BatchNorm"):
        jl.evaluate_path(per_batch_flat, path, ts, data=(x, y), batch_size=4)
    # One batch (batch_size ≥ N, or None) is the whole data: allowed, and the same values.
    whole = jl.evaluate_path(per_batch_flat, path, ts, data=(x, y))
    one = jl.evaluate_path(per_batch_flat, path, ts, data=(x, y), batch_size=N)
    np.testing.assert_array_equal(whole, one)


# flax nnx -----------------------------------------------------------------------------------------


def test_nnx_inference_equals_full_batch_training():
    nnx = pytest.importorskip("flax.nnx")

    class Net(nnx.Module):
        # float64 variables: flax's default is float32 (statistics included), and the statistics
        # are stored in the variables' own dtype, so an exact float64 check needs float64 layers.
        def __init__(self, rngs, dt=jnp.float64):
            self.lin1 = nnx.Linear(3, 5, param_dtype=dt, rngs=rngs)
            self.bn1 = nnx.BatchNorm(5, momentum=MOMENTUM, param_dtype=dt, rngs=rngs)
            self.lin2 = nnx.Linear(5, 4, param_dtype=dt, rngs=rngs)
            self.bn2 = nnx.BatchNorm(4, momentum=MOMENTUM, param_dtype=dt, rngs=rngs)
            self.out = nnx.Linear(4, 1, param_dtype=dt, rngs=rngs)

        def __call__(self, x):
            x = jax.nn.tanh(self.bn1(self.lin1(x)))
            x = jax.nn.relu(self.bn2(self.lin2(x)))
            return self.out(x)[:, 0]

    a = Net(nnx.Rngs(0))
    ga, sa = nnx.split(a)  # b: every variable moved by N(0, 0.5²) (building a second Net is slow)
    rng = np.random.default_rng(1)
    b = nnx.merge(ga, jax.tree.map(lambda u: u + 0.5 * rng.normal(size=u.shape), sa))
    x, _ = data("mlp")

    def at(t):
        ga, sa = nnx.split(a)
        _, sb = nnx.split(b)
        return nnx.merge(ga, jax.tree.map(lambda u, v: (1 - t) * u + t * v, sa, sb))

    @nnx.jit(static_argnames="train")
    def run(model, train):
        model = nnx.clone(model)
        model.train() if train else model.eval()
        return model(x)

    before = nnx.state(a, nnx.BatchStat)
    for t in (0.6,):
        m = at(t)
        ref = run(m, train=True)
        full = recompute_batch_stats(m, None, x)
        np.testing.assert_allclose(run(full, train=False), ref, rtol=1e-10, atol=1e-10)
        new = recompute_batch_stats(m, None, x, batch_size=4)
        chex.assert_trees_all_close(
            nnx.state(new, nnx.BatchStat), nnx.state(full, nnx.BatchStat), rtol=1e-12, atol=1e-12
        )
        assert full.bn1.use_running_average == m.bn1.use_running_average  # flags untouched
    chex.assert_trees_all_equal(nnx.state(a, nnx.BatchStat), before)  # the input is not modified

    def eval_out(t):  # under jit and vmap, path points built inside the trace
        new = recompute_batch_stats(at(t), None, x)
        new.eval()
        return new(x)

    ts = jnp.array([0.3, 1.0])
    outs = jax.jit(jax.vmap(eval_out))(ts)
    for t, out in zip(ts, outs, strict=True):
        np.testing.assert_allclose(out, run(at(t), train=True), rtol=1e-10, atol=1e-10)

    with raises_naming("state", TypeError, match="state must be None for a flax nnx model"):
        recompute_batch_stats(a, nnx.state(a, nnx.BatchStat), x)
    with pytest.raises(ValueError, match="model contains no nnx.BatchNorm"):
        recompute_batch_stats(nnx.Linear(2, 2, rngs=nnx.Rngs(0)), None, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match=r"x has shape \(13, 2\)"):
        recompute_batch_stats(a, None, x[:, :2])
    with pytest.raises(ValueError, match="batch_size must be None or an integer"):
        recompute_batch_stats(a, None, x, batch_size=0)
