"""The per-object caches of `evaluate_path` (issue 20: a tiny problem's fixed host cost per call):
facts about a path or an `Objective` (pieces, combinations, the sweep's endpoints, re-batched data)
are kept by object identity and must never be returned for other arrays."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland
from jaxland.engine import _evaluate as ev
from jaxland.engine import _sweep


def _nets(seed, dtype="float32", m=32):
    ks = jax.random.split(jax.random.key(seed), 2)
    return [jaxland.SkipNet.init(k, n=3, m=m, d_y=1, d_g=4, d_o=4, hidden=(4,), dtype=dtype)
            for k in ks]


def _data(seed, N=256, dtype="float32"):
    d = jaxland.data.sphere_teacher(jax.random.key(seed), n_samples=N, n=3, d_y=1, dtype=dtype)
    return d.x, d.y


def _fresh(fn, path, ts, **kw):
    ev._OBJECT_FACTS.clear()
    return np.asarray(jaxland.evaluate_path(fn, path, ts, **kw))


TS = np.linspace(0.0, 1.0, 300)  # ≥ TINY_SWEEP_POINTS: the toy goes to the sweep


@pytest.mark.parametrize("sweep", [None, True, False])
def test_new_arrays_of_the_same_shapes_give_new_values(sweep):
    x, y = _data(0)
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    path = jaxland.paths.linear(*_nets(1))
    first = _fresh(obj, path, TS, sweep=sweep)
    np.testing.assert_array_equal(np.asarray(jaxland.evaluate_path(obj, path, TS, sweep=sweep)),
                                  first)  # the cached facts: the same values
    # another path (same shapes, other values) and another objective (same shapes, other data)
    path2 = jaxland.paths.linear(*_nets(2))
    got = np.asarray(jaxland.evaluate_path(obj, path2, TS, sweep=sweep))
    assert not np.array_equal(got, first)
    np.testing.assert_array_equal(got, _fresh(obj, path2, TS, sweep=sweep))
    x2, y2 = _data(3)
    obj2 = jaxland.objective_fn(x2, y2, kappa=0.0, loss="mse")
    jaxland.evaluate_path(obj, path, TS, sweep=sweep)  # cache obj and path again
    got = np.asarray(jaxland.evaluate_path(obj2, path, TS, sweep=sweep))
    assert not np.array_equal(got, first)
    np.testing.assert_array_equal(got, _fresh(obj2, path, TS, sweep=sweep))
    # a path edited with tree_at (a new object with other arrays)
    path3 = eqx.tree_at(lambda p: p.b.W1, path, path.b.W1 * 2.0)
    jaxland.evaluate_path(obj, path, TS, sweep=sweep)
    got = np.asarray(jaxland.evaluate_path(obj, path3, TS, sweep=sweep))
    assert not np.array_equal(got, first)
    np.testing.assert_array_equal(got, _fresh(obj, path3, TS, sweep=sweep))


def test_numpy_leaves_are_not_cached():
    x, y = _data(0)
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    a, b = _nets(1)
    an = jax.tree.map(lambda l: np.array(l) if eqx.is_array(l) else l, a)
    bn = jax.tree.map(lambda l: np.array(l) if eqx.is_array(l) else l, b)
    path = jaxland.paths.linear(an, bn)
    assert ev._facts(path) == {} and ev._facts(path) is not ev._facts(path)
    first = np.asarray(jaxland.evaluate_path(obj, path, TS))
    bn.W1[...] *= 2.0  # mutated in place: the next call must see it
    got = np.asarray(jaxland.evaluate_path(obj, path, TS))
    assert not np.array_equal(got, first)
    np.testing.assert_array_equal(got, _fresh(obj, jaxland.paths.linear(a, eqx.tree_at(
        lambda n: n.W1, b, jnp.asarray(bn.W1))), TS))


def test_the_cache_is_bounded():
    x, y = _data(0)
    obj = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    for s in range(ev._MAX_OBJECT_FACTS + 4):
        jaxland.evaluate_path(obj, jaxland.paths.linear(*_nets(s)), TS[:20])
    assert len(ev._OBJECT_FACTS) <= ev._MAX_OBJECT_FACTS


def test_zero_penalty_is_skipped_only_when_exact():
    x, y = _data(0)
    a, b = _nets(1)
    path = jaxland.paths.linear(a, b)
    _, _, bounded = _sweep.sweep_endpoints(*path.combination())
    assert bounded
    obj0 = jaxland.objective_fn(x, y, kappa=0.0, loss="mse")
    assert _sweep._zero_penalty(obj0, True) == 0.0
    assert _sweep._zero_penalty(obj0, False) is None
    assert _sweep._zero_penalty(jaxland.objective_fn(x, y, kappa=0.5), True) is None
    # κ > 0: the penalty is computed and matches the plain objective
    obj = jaxland.objective_fn(x, y, kappa=0.5, loss="mse")
    got = np.asarray(jaxland.evaluate_path(obj, path, TS, sweep=True))
    ref = np.array([float(obj(path(t))) for t in TS[::37]])
    np.testing.assert_allclose(got[::37], ref, rtol=2e-5)
    # κ = 0 with a non-finite weight: R is not bounded, 0·R = NaN is kept (as before the cache)
    bad = eqx.tree_at(lambda n: n.theta[0], b, b.theta[0].at[0, 0].set(jnp.inf))
    _, _, bounded = _sweep.sweep_endpoints(*jaxland.paths.linear(a, bad).combination())
    assert not bounded
    got = np.asarray(jaxland.evaluate_path(obj0, jaxland.paths.linear(a, bad), TS, sweep=True))
    assert np.isnan(got[-1])
