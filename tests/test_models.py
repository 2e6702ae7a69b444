"""Models (eq. 3, 4, 9, 12), regulariser (Theorem 11) and objective (eq. 7, 16)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import annotations_unchecked, raises_naming
from hypothesis import given, strategies as st

import jaxland as jl


def np_relu(z):
    return np.maximum(z, 0)


def np_skipnet(p, x):
    """Eq. (3) in NumPy, one sample at a time (the slow, obvious reading of the formula)."""
    out = []
    for xi in x:
        h = np_relu(p["W1"] @ xi)
        z = p["V2"] @ h
        for i, t in enumerate(p["theta"]):
            z = t @ (np_relu(z) if i > 0 else z)
        out.append(p["W2"] @ (h + p["V1"] @ z))
    return np.stack(out)


def np_regularizer(p):
    W1, W2, V1, V2 = (p[k] for k in ("W1", "W2", "V1", "V2"))
    r = 0.0
    for i in range(W1.shape[0]):
        r += np.abs(W2[:, i]).sum() * np.linalg.norm(W1[i]) + np.abs(V2[:, i]).sum() * np.linalg.norm(W1[i])
    r += np.abs(W2 @ V1).sum() + sum(np.linalg.norm(t) for t in p["theta"])
    return r


def as_np(net):
    return {
        "W1": np.asarray(net.W1), "W2": np.asarray(net.W2), "V1": np.asarray(net.V1),
        "V2": np.asarray(net.V2), "theta": [np.asarray(t) for t in net.theta],
    }


# Few distinct values per size: every new shape costs an XLA compile, values are what vary most.
sizes = st.fixed_dictionaries({
    "n": st.sampled_from([1, 3]), "m": st.sampled_from([1, 6]), "d_y": st.sampled_from([1, 2]),
    "d_g": st.sampled_from([1, 3]), "d_o": st.just(2), "depth": st.sampled_from([0, 2]),
    "N": st.just(5), "seed": st.integers(0, 2**16),
})

_fwd = jax.jit(lambda net, x: net(x))
_reg = jax.jit(jl.regularizer)


def make(sz, dtype=None):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(sz["seed"]), 3)
    net = jl.SkipNet.init(k1, n=sz["n"], m=sz["m"], d_y=sz["d_y"], d_g=sz["d_g"], d_o=sz["d_o"],
                          hidden=(3,) * sz["depth"], residual_scale=1.0, dtype=dtype)
    x = jax.random.normal(k2, (sz["N"], sz["n"]), dtype)
    y = jax.random.normal(k3, (sz["N"], sz["d_y"]), dtype)
    return net, x, y


@given(sizes)
def test_skipnet_matches_numpy_and_objective(sz):
    with jax.enable_x64(True):
        net, x, y = make(sz, jnp.float64)
        p = as_np(net)
        # float64 on both sides, same arithmetic up to summation order: 1e-12 relative.
        np.testing.assert_allclose(_fwd(net, x), np_skipnet(p, np.asarray(x)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(_reg(net), np_regularizer(p), rtol=1e-12)
        kappa = 0.37
        F_np = np.mean(np.sum((np_skipnet(p, np.asarray(x)) - np.asarray(y)) ** 2, axis=1))
        F_np += kappa * np_regularizer(p)
        np.testing.assert_allclose(jl.objective(net, x, y, kappa=kappa), F_np, rtol=1e-12)


@given(sizes)
def test_skipnet_with_V1_zero_is_two_layer(sz):
    with jax.enable_x64(True):
        net, x, _ = make(sz, jnp.float64)
        net = jl.SkipNet(W1=net.W1, W2=net.W2, V1=jnp.zeros_like(net.V1), V2=net.V2, theta=net.theta)
        two = jl.TwoLayer(W1=net.W1, W2=net.W2)
        # Identical arithmetic path for the skip term; exact up to the added zero.
        chex.assert_trees_all_close(_fwd(net, x), _fwd(two, x), rtol=1e-14, atol=0)


@given(sizes, st.floats(0.05, 20.0), st.integers(0, 5))
def test_positive_homogeneity(sz, c, i):
    """Row i of W1 and V1 times c > 0, columns i of W2 and V2 times 1/c: f1 and R unchanged."""
    with jax.enable_x64(True):
        net, x, _ = make(sz, jnp.float64)
        i = i % sz["m"]
        scaled = jl.SkipNet(
            W1=net.W1.at[i].multiply(c), W2=net.W2.at[:, i].divide(c), V1=net.V1.at[i].multiply(c),
            V2=net.V2.at[:, i].divide(c), theta=net.theta,
        )
        # The tolerance: 1e-10 relative in float64 (a few roundings per term).
        chex.assert_trees_all_close(_fwd(scaled, x), _fwd(net, x), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(_reg(scaled), _reg(net), rtol=1e-10)


def test_two_layer_regularizer_is_l1_for_unit_rows():
    net = jl.TwoLayer.init(jax.random.PRNGKey(0), n=4, m=7, d_y=2)
    # Rows of W1 are unit vectors up to float32 rounding (~1e-7 relative).
    np.testing.assert_allclose(jl.regularizer(net), jnp.abs(net.W2).sum(), rtol=1e-5)


def test_noskip_and_linear_models_match_formulas():
    with jax.enable_x64(True):
        k = jax.random.PRNGKey(3)
        sk = jl.SkipNet.init(k, n=3, m=5, d_y=2, d_g=2, d_o=3, hidden=(4,), dtype=jnp.float64)
        ns = jl.NoSkipNet(W1=sk.W1, W2=sk.W2, V1=sk.V1, V2=sk.V2, theta=sk.theta)
        x = jax.random.normal(k, (6, 3), jnp.float64)
        h = jnp.maximum(x @ sk.W1.T, 0)
        # f_noskip = f_skip − W2 σ(W1x): both sides are float64 sums of a handful of terms.
        chex.assert_trees_all_close(ns(x), sk(x) - h @ sk.W2.T, rtol=1e-10, atol=1e-12)
        rl = jl.ResidualLinear.init(k, d_x=3, d_y=2, d_z=4, hidden=(5,), dtype=jnp.float64)
        g = jl.relu_net(rl.theta, x)
        chex.assert_trees_all_close(rl(x), (x + g @ rl.V.T) @ rl.W.T, rtol=1e-12)
        np.testing.assert_allclose(
            jl.regularizer(rl),
            jnp.abs(rl.W).sum() + jnp.abs(rl.W @ rl.V).sum() + sum(jnp.linalg.norm(t) for t in rl.theta),
            rtol=1e-12,
        )
        lin = jl.Linear.init(k, d_x=3, d_y=2, dtype=jnp.float64)
        chex.assert_trees_all_close(lin(x), x @ lin.W.T, rtol=1e-14)
        np.testing.assert_allclose(jl.regularizer(lin), jnp.abs(lin.W).sum(), rtol=1e-14)


class TransformsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_objective_and_grad_under_transforms(self):
        sz = dict(n=3, m=6, d_y=2, d_g=2, d_o=2, depth=1, N=5, seed=1)
        net, x, y = make(sz)
        F = lambda nt: jl.objective(nt, x, y, kappa=0.1)
        val, g = self.variant(jax.value_and_grad(F))(net)
        val0, g0 = jax.value_and_grad(F)(net)
        # float32 with and without jit: XLA may fuse differently, a few ulps.
        chex.assert_trees_all_close(val, val0, rtol=1e-5)
        chex.assert_trees_all_close(g, g0, rtol=1e-4, atol=1e-6)
        chex.assert_tree_all_finite(g)

    @chex.variants(with_jit=True, without_jit=True)
    def test_vmap_over_stacked_networks(self):
        sz = dict(n=2, m=4, d_y=1, d_g=2, d_o=2, depth=0, N=7, seed=2)
        nets = [make(dict(sz, seed=s))[0] for s in range(3)]
        _, x, y = make(sz)
        stacked = jax.tree.map(lambda *a: jnp.stack(a), *nets)
        vals = self.variant(jax.vmap(lambda nt: jl.objective(nt, x, y, kappa=0.2)))(stacked)
        chex.assert_shape(vals, (3,))
        for i, nt in enumerate(nets):
            chex.assert_trees_all_close(vals[i], jl.objective(nt, x, y, kappa=0.2), rtol=1e-5)


def test_shape_errors_name_the_fields():
    net = jl.SkipNet.init(jax.random.PRNGKey(0), n=3, m=10, d_g=4, d_o=5)
    with raises_naming("W2", ValueError, match="W2 has 11 columns but W1 has 10 rows"):
        jl.SkipNet(W1=net.W1, W2=jnp.zeros((1, 11)), V1=net.V1, V2=net.V2, theta=net.theta)
    with raises_naming("V1", ValueError, match="V1 has 9 rows but W1 has 10 rows"):
        jl.SkipNet(W1=net.W1, W2=net.W2, V1=jnp.zeros((9, 5)), V2=net.V2, theta=net.theta)
    with pytest.raises(ValueError, match=r"theta\[0\] has 3 columns"):
        jl.SkipNet(W1=net.W1, W2=net.W2, V1=net.V1, V2=net.V2, theta=(jnp.zeros((5, 3)),))
    with raises_naming("W1", ValueError, match="W1 must be a matrix"):
        jl.TwoLayer(W1=jnp.zeros(3), W2=jnp.zeros((1, 3)))
    with raises_naming("theta", TypeError, match="theta must be a tuple"):
        jl.SkipNet(W1=net.W1, W2=net.W2, V1=net.V1, V2=net.V2, theta=[jnp.zeros((5, 4))])
    # behind the checked annotations, the models' own checks give the messages users see
    with annotations_unchecked():
        with pytest.raises(ValueError, match="W2 has 11 columns but W1 has 10 rows"):
            jl.SkipNet(W1=net.W1, W2=jnp.zeros((1, 11)), V1=net.V1, V2=net.V2, theta=net.theta)
        with pytest.raises(TypeError, match="theta must be a tuple"):
            jl.SkipNet(W1=net.W1, W2=net.W2, V1=net.V1, V2=net.V2, theta=[jnp.zeros((5, 4))])


def test_bad_inputs_to_objective():
    net = jl.SkipNet.init(jax.random.PRNGKey(0), n=3, m=4, d_g=2, d_o=2)
    x, y = jnp.ones((5, 3)), jnp.ones((5, 1))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\).*\(5, 4\)"):
        jl.objective(net, jnp.ones((5, 4)), y, kappa=0.1)
    with raises_naming("y", ValueError, match=r"y must have shape \(5, 1\).*\(4, 1\)"):
        jl.objective(net, x, jnp.ones((4, 1)), kappa=0.1)
    with pytest.raises(ValueError, match=r"y\[:, None\]"):
        jl.objective(net, x, jnp.ones(5), kappa=0.1)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        jl.objective(net, x.at[0, 0].set(jnp.nan), y, kappa=0.1)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        jl.objective(net, x, y.at[1, 0].set(jnp.inf), kappa=0.1)
    with pytest.raises(ValueError, match="kappa must be a finite number >= 0; got -0.5"):
        jl.objective(net, x, y, kappa=-0.5)
    with pytest.raises(ValueError, match="loss must be one of"):
        jl.objective(net, x, y, kappa=0.1, loss="hinge")
    with pytest.raises(ValueError, match=r"labels in \{-1, \+1\}"):
        jl.objective(net, x, y * 0.5, kappa=0.1, loss="logistic")


def test_losses_match_formulas():
    k = jax.random.PRNGKey(5)
    pred = jax.random.normal(k, (6, 3))
    labels = jnp.array([0, 1, 2, 2, 1, 0])
    onehot = jax.nn.one_hot(labels, 3)
    p = np.asarray(pred, np.float64)
    ce = -np.log(np.exp(p[np.arange(6), np.asarray(labels)]) / np.exp(p).sum(1))
    # float32 log-softmax vs float64 reference: ~1e-6 relative.
    np.testing.assert_allclose(jl.softmax_cross_entropy(pred, labels), ce, rtol=1e-5)
    np.testing.assert_allclose(jl.softmax_cross_entropy(pred, onehot), ce, rtol=1e-5)
    ys = jnp.sign(jax.random.normal(jax.random.PRNGKey(6), (6, 3)))
    np.testing.assert_allclose(jl.logistic(pred, ys), np.log1p(np.exp(-np.asarray(ys) * p)).sum(1),
                               rtol=1e-5)
    custom = lambda pr, yy: jnp.sum(jnp.abs(pr - yy), axis=-1)
    net = jl.TwoLayer.init(k, n=2, m=3, d_y=3)
    x = jax.random.normal(k, (6, 2))
    np.testing.assert_allclose(jl.objective(net, x, onehot, kappa=0.0, loss=custom),
                               jnp.mean(custom(net(x), onehot)), rtol=1e-6)
    np.testing.assert_allclose(jl.objective(net, x, labels, kappa=0.0, loss="softmax_cross_entropy"),
                               jnp.mean(jl.softmax_cross_entropy(net(x), labels)), rtol=1e-6)


def test_embed_two_layer_computes_f2():
    k1, k2 = jax.random.split(jax.random.PRNGKey(4))
    like = jl.SkipNet.init(k1, n=3, m=9, d_y=2, d_g=3, d_o=2)
    two = jl.TwoLayer.init(k2, n=3, m=4, d_y=2)
    slots = jnp.array([7, 1, 3, 0])
    star = jl.embed_two_layer(two, like, slots)
    x = jax.random.normal(k2, (8, 3))
    chex.assert_trees_all_close(star(x), two(x), rtol=1e-5, atol=1e-6)
    # R(ξ*) = ‖W2*‖₁ + 0 + 0 + 0 for unit rows (float32 row norms, 1e-6 relative).
    np.testing.assert_allclose(jl.regularizer(star), jnp.abs(two.W2).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="slots must have shape"):
        jl.embed_two_layer(two, like, jnp.arange(3))


# --------------------------------------------------------------------------------------------------
# Issue 12: nothing silently wrong
# --------------------------------------------------------------------------------------------------

def _small():
    """A tiny SkipNet and data from NumPy (no eager JAX op: nothing compiles before the checks)."""
    rng = np.random.default_rng(0)

    def arr(*shape):
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    net = jl.SkipNet(W1=arr(4, 3), W2=arr(1, 4), V1=arr(4, 2), V2=arr(2, 4),
                     theta=(arr(2, 2), arr(2, 2)))
    return net, arr(6, 3), arr(6, 1)


def _with(a, idx, v):
    b = np.array(a)
    b[idx] = v
    return jnp.asarray(b)


def test_objective_fn_checks_data_when_built_and_against_the_network():
    net, x, y = _small()
    # a rank-1 y would broadcast (N,) against the (N, 1) output into an (N, N) error matrix
    with pytest.raises(ValueError, match=r"y must have shape \(6, d_y\).*\(6,\).*y\[:, None\]"):
        jl.objective_fn(x, y[:, 0], kappa=1e-3)
    with pytest.raises(ValueError, match=r"y\[:, None\]"):
        jl.Objective(x, y[:, 0], 1e-3)
    with raises_naming("y", ValueError, match="y must have shape"):
        jl.objective_fn(x, y[:4], kappa=1e-3)
    with raises_naming("x", ValueError, match=r"x must have shape \(N, n\)"):
        jl.objective_fn(x[0], y, kappa=1e-3)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        jl.objective_fn(_with(x, (2, 1), np.nan), y, kappa=1e-3)
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        jl.objective_fn(x, _with(y, (0, 0), -np.inf), kappa=1e-3)
    with pytest.raises(ValueError, match=r"labels in \{-1, \+1\}"):
        jl.objective_fn(x, y, kappa=1e-3, loss="logistic")
    with pytest.raises(ValueError, match="integer labels >= 0"):
        jl.objective_fn(x, jnp.array([0, 1, 2, -1, 0, 1]), kappa=0.0, loss="softmax_cross_entropy")
    with raises_naming("x", TypeError, match="x must be an array"):
        jl.objective_fn("data", y, kappa=1e-3)
    # the first call checks the data against the network's sizes (static: also under jit)
    F = jl.objective_fn(jnp.ones((6, 4)), y, kappa=1e-3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\) for this network"):
        F(net)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 3\) for this network"):
        jax.jit(lambda nt: F(nt))(net)
    with pytest.raises(ValueError, match=r"y must have shape \(6, 1\)"):
        jl.objective_fn(x, jnp.ones((6, 2)), kappa=1e-3)(net)
    two = jl.TwoLayer(W1=jnp.ones((4, 3)), W2=jnp.ones((3, 4)))
    F = jl.objective_fn(x, jnp.array([0, 1, 2, 3, 0, 1]), kappa=0.0, loss="softmax_cross_entropy")
    with pytest.raises(ValueError, match=r"labels in \[0, 3\).*up to 3"):
        F(two)
    # good data: the same number as objective (one float32 computation, a few ulps); jitted, so
    # that each side compiles once instead of op by op
    F = jl.objective_fn(x, y, kappa=1e-3)
    np.testing.assert_allclose(jax.jit(lambda nt: F(nt))(net),
                               jax.jit(lambda nt: jl.objective(nt, x, y, kappa=1e-3))(net),
                               rtol=1e-6)


def test_empty_data_is_refused():
    net, x, y = _small()
    for call in (lambda: jl.objective(net, x[:0], y[:0], kappa=1e-3),
                 lambda: jl.objective_fn(x[:0], y[:0], kappa=1e-3),
                 lambda: jl.check_data(net, x[:0], y[:0]),
                 lambda: jl.fit(net, x[:0], y[:0], kappa=1e-3, steps=1)):
        with pytest.raises(ValueError, match=r"x must hold at least one sample.*\(0, 3\)"):
            call()


@pytest.mark.parametrize("bad", ["1e-3", None, True, [1e-3], 1e-3j, float("nan"), float("inf"),
                                 -1.0])
def test_kappa_of_the_wrong_type_or_value_is_named(bad):
    net, x, y = _small()
    for call in (lambda: jl.objective(net, x, y, kappa=bad),
                 lambda: jl.objective_fn(x, y, kappa=bad),
                 lambda: jl.fit(net, x, y, kappa=bad, steps=1)):
        with pytest.raises((TypeError, ValueError), match="kappa must be"):
            call()


def test_kappa_is_checked_under_jit():
    net, x, y = _small()
    f = jax.jit(lambda k: jl.objective(net, x, y, kappa=k))
    g = jax.jit(lambda k: jl.objective_fn(x, y, kappa=k)(net))
    ref = f(1e-3)
    for h in (f, g):
        for bad in (-1.0, jnp.nan, jnp.inf):
            # eqx.error_if raises when the compiled function runs; under jax.jit (not
            # eqx.filter_jit) it surfaces as a JaxRuntimeError that carries the message
            with pytest.raises(Exception, match="kappa must be a finite number >= 0"):
                jax.block_until_ready(h(bad))
    # a valid traced κ gives the value of a concrete one (same float32 ops, a few ulps)
    np.testing.assert_allclose(g(1e-3), ref, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda: jl.objective(net, x, y, kappa=1e-3))(), ref,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="kappa must be a scalar"):
        f(jnp.ones(2))
    # the check does not get in the way of transformations: dF/dκ = R(ξ), vmap over κ
    dFdk, R = jax.jit(lambda: (jax.grad(lambda k: jl.objective(net, x, y, kappa=k))(0.1),
                               jl.regularizer(net)))()
    np.testing.assert_allclose(dFdk, R, rtol=1e-6)
    vals = jax.jit(jax.vmap(lambda k: jl.objective(net, x, y, kappa=k)))(jnp.array([0.0, 0.5]))
    np.testing.assert_allclose(vals, [f(0.0), f(0.5)], rtol=1e-6)


_KEY = jax.random.PRNGKey(0)
_INITS = {
    "SkipNet": (jl.SkipNet.init, dict(n=3, m=4, d_g=2, d_o=2, hidden=(2,))),
    "NoSkipNet": (jl.NoSkipNet.init, dict(n=3, m=4, d_g=2, d_o=2, hidden=(2,))),
    "TwoLayer": (jl.TwoLayer.init, dict(n=3, m=4)),
    "ResidualLinear": (jl.ResidualLinear.init, dict(d_x=3, d_z=2, hidden=(2,))),
    "Linear": (jl.Linear.init, dict(d_x=3)),
}
_BAD_SIZES = [("m", 0), ("m", 2.5), ("m", True), ("n", -1), ("n", 0), ("d_y", 0), ("d_g", 0),
              ("d_o", 0), ("d_x", 0), ("d_x", "3"), ("d_z", 0), ("hidden", (0,)),
              ("hidden", (2.0,)), ("hidden", 3), ("residual_scale", float("nan")),
              ("residual_scale", -1.0), ("residual_scale", "0.1"), ("dtype", jnp.int32)]


@pytest.mark.parametrize("model", sorted(_INITS))
def test_init_refuses_bad_sizes_naming_them(model):
    init, good = _INITS[model]
    import inspect

    params = inspect.signature(init).parameters
    tried = 0
    for name, bad in _BAD_SIZES:
        if name not in params:
            continue
        tried += 1
        with raises_naming(name, TypeError, ValueError, match=rf"^{name}(\[0\])? must"):
            init(_KEY, **{**good, name: bad})
    assert tried >= 4
    with raises_naming("key", ValueError, match="key is required"):
        init(None, **good)
    with raises_naming("key", TypeError, match="key must be a PRNG key"):
        init(3, **good)
    with annotations_unchecked(), pytest.raises(ValueError, match="^m must"):
        jl.TwoLayer.init(_KEY, n=3, m=2.5)
    assert init(jax.random.key(1), **good) is not None  # typed keys work too


def test_fields_must_be_float_matrices():
    net = jl.SkipNet.init(_KEY, n=3, m=4, d_g=2, d_o=2, hidden=(2,))
    fields = dict(W1=net.W1, W2=net.W2, V1=net.V1, V2=net.V2, theta=net.theta)
    with raises_naming("W1", TypeError, match="W1 must be a floating-point array"):
        jl.SkipNet(**{**fields, "W1": net.W1.tolist()})
    with raises_naming("V2", TypeError, match="V2 must be a floating-point array"):
        jl.NoSkipNet(**{**fields, "V2": None})
    with raises_naming("W2", TypeError, match="W2 must hold floating-point numbers"):
        jl.SkipNet(**{**fields, "W2": jnp.ones((1, 4), jnp.int32)})
    with raises_naming("theta", TypeError, match=r"theta\[0\] must be a floating-point array"):
        jl.SkipNet(**{**fields, "theta": ([[1.0, 0.0]], net.theta[1])})
    with raises_naming("W", TypeError, match="W must be a floating-point array"):
        jl.Linear(W=3.0)
    with raises_naming("W", ValueError, match="W must be a matrix"):
        jl.ResidualLinear(W=jnp.ones(3), V=jnp.ones((3, 2)), theta=(jnp.ones((2, 3)),))
    # NumPy arrays are arrays: accepted
    assert jl.TwoLayer(W1=np.ones((4, 3), np.float32), W2=np.ones((1, 4), np.float32)).width == 4
