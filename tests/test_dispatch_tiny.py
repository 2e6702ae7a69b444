"""`evaluate_path`'s rule for tiny objectives (issue 20): on CPU an `Objective` with N·m < 2^16 on a
structured path goes to the plain kernel (its groups of points beat the point kernel's one point per
loop step); larger ones, and an explicit `sweep=`, go to the structured kernels."""

import jax
import numpy as np
import pytest

import jaxland
from jaxland.engine import _evaluate as ev

pytestmark = pytest.mark.tiny_rule


def _problem(N, m, dtype="float32"):
    ka, kb, kd = jax.random.split(jax.random.key(0), 3)
    nets = [jaxland.SkipNet.init(k, n=3, m=m, d_y=1, d_g=4, d_o=4, hidden=(4,), dtype=dtype)
            for k in (ka, kb)]
    data = jaxland.data.sphere_teacher(kd, n_samples=N, n=3, d_y=1, dtype=dtype)
    return jaxland.paths.linear(*nets), jaxland.objective_fn(data.x, data.y, kappa=0.0, loss="mse")


def _spy(monkeypatch):
    calls = []
    orig = ev._evaluate_structured

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    monkeypatch.setattr(ev, "_evaluate_structured", spy)
    return calls


def test_tiny_objective_goes_to_the_plain_kernel(monkeypatch):
    path, obj = _problem(256, 32)  # the README quick start's size: N·m = 8192
    ts = np.linspace(0.0, 1.0, 33)
    calls = _spy(monkeypatch)
    with jax.enable_x64(True):
        path64, obj64 = _problem(256, 32, "float64")
        v = np.asarray(jaxland.evaluate_path(obj64, path64, ts))
        assert not calls
        forced = np.asarray(jaxland.evaluate_path(obj64, path64, ts, sweep=False))
        assert calls  # an explicit sweep= keeps the structured kernels
        # the same values to rounding: the two kernels sum the same products in another order
        np.testing.assert_allclose(v, forced, rtol=1e-12)
    assert not ev._tiny_structured(obj, None, None, None)  # no shapes: no rule


def test_rule_bounds(monkeypatch):
    path, obj = _problem(256, 32)
    start = ev._start_shape(path, np.float32)
    assert ev._tiny_structured(obj, start, None, None)
    assert not ev._tiny_structured(obj, start, True, None)
    assert not ev._tiny_structured(obj, start, False, None)
    path2, obj2 = _problem(2048, 32)  # N·m = 2^16: the structured kernels
    assert not ev._tiny_structured(obj2, ev._start_shape(path2, np.float32), None, None)
    calls = _spy(monkeypatch)
    jaxland.evaluate_path(obj2, path2, np.linspace(0.0, 1.0, 5))
    assert calls


def test_start_shape_is_cached():
    path, _ = _problem(256, 32)
    a = ev._start_shape(path, np.float32)
    assert ev._start_shape(path, np.float32) is a  # a repeat call does not trace the path again
    assert a.W1.shape == (32, 3)


def test_tiny_objective_is_swept_from_256_points(monkeypatch):
    path, obj = _problem(256, 32)
    calls = _spy(monkeypatch)
    ts = np.linspace(0.0, 1.0, ev.TINY_SWEEP_POINTS)
    v = np.asarray(jaxland.evaluate_path(obj, path, ts))
    assert calls  # the structured kernels (the sweep) from TINY_SWEEP_POINTS points on a segment
    plain = np.asarray(jaxland.evaluate_path(obj, path, ts, structured=False))
    np.testing.assert_allclose(v, plain, rtol=2e-5)  # float32, sums in another order
    assert ev._all_straight(path)
    ka, kb, kc = jax.random.split(jax.random.key(1), 3)
    nets = [jaxland.SkipNet.init(k, n=3, m=32, d_y=1, d_g=4, d_o=4, hidden=(4,)) for k in (ka, kb, kc)]
    assert not ev._all_straight(jaxland.paths.bezier(nets))  # a curve: the plain kernel
