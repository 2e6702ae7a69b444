"""`evaluate_path` reuses the trace of a fresh lambda that computes the same thing (issue 20), and
never a stale one: `jaxland.engine._evaluate._fn_fingerprint`."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxland
from jaxland.engine import _evaluate as ev, _plain

SCALE = 1.0  # a global a test function reads


def _loss(net, x, y):
    return jnp.mean((net["w"] * x - y) ** 2)


def _path():
    a, b = {"w": jnp.ones(3)}, {"w": jnp.full(3, 2.0)}
    return jaxland.paths.linear(a, b)


def test_fingerprint_equal_for_fresh_lambdas_and_different_otherwise():
    x, y = jnp.ones(3), jnp.zeros(3)

    def make(x, y, c=1.0):
        return lambda net: c * _loss(net, x, y)

    f1, f2 = make(x, y), make(x, y)
    assert f1 is not f2 and ev._fn_fingerprint(f1) == ev._fn_fingerprint(f2)
    assert ev._fn_fingerprint(make(x, y, 2.0)) != ev._fn_fingerprint(f1)  # a captured scalar
    assert ev._fn_fingerprint(make(jnp.ones(3), y)) != ev._fn_fingerprint(f1)  # another array
    lst = [1.0]
    assert ev._fn_fingerprint(lambda net: lst[0] * _loss(net, x, y)) is None  # mutable: no key
    xn = np.ones(3)
    assert ev._fn_fingerprint(lambda net: _loss(net, xn, y)) is None  # NumPy arrays are mutable


def test_fresh_lambda_skips_the_trace_and_gives_the_same_values(monkeypatch):
    x, y = jnp.arange(3.0), jnp.ones(3)
    ts = np.linspace(0.0, 1.0, 5)
    path = _path()

    def call():  # a fresh lambda from the same source line, as in a user's loop
        return np.asarray(jaxland.evaluate_path(lambda net: _loss(net, x, y), path, ts))

    v1 = call()
    traces = []
    orig = _plain.computation_key  # called once per trace of a point (a cache miss)

    def spy(*a, **k):
        traces.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(_plain, "computation_key", spy)
    v2 = call()
    assert not traces  # the fresh lambda found the first call's trace
    np.testing.assert_array_equal(v1, v2)


def test_no_stale_trace():
    global SCALE
    x = jnp.arange(3.0)
    ts = np.linspace(0.0, 1.0, 5)
    path = _path()
    ref = np.array([float(_loss(path(t), x, jnp.ones(3))) for t in ts])
    y1, y2 = jnp.ones(3), jnp.full(3, 5.0)
    def call(yy):  # one source line: the fingerprint differs only by the captured array
        return np.asarray(jaxland.evaluate_path(lambda net: _loss(net, x, yy), path, ts))

    v1, v2 = call(y1), call(y2)
    np.testing.assert_allclose(v1, ref, rtol=1e-6)  # float32 rounding of the same sums
    assert np.all(np.abs(v2 - v1) > 1.0)  # another captured array: new values
    try:
        def scaled():
            return np.asarray(jaxland.evaluate_path(lambda net: SCALE * _loss(net, x, y1), path, ts))

        SCALE = 1.0
        w1 = scaled()
        SCALE = 3.0  # a global the function reads, rebound between calls
        w3 = scaled()
        np.testing.assert_allclose(w3, 3.0 * w1, rtol=1e-6)
    finally:
        SCALE = 1.0
