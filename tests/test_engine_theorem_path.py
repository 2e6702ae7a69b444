"""The Theorem 11 path (jaxland/construct/_theorem_path.py) in the engine and in eager calls: the engine
evaluates it by its own segment structure with the plain values, and eager calls `path(t)` reuse one
compiled program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"


@pytest.fixture(scope="module")
def case():
    # the shapes, dtype and ε of test_construct.py's problem (n = 3, m = 12, d_y = 2, a branch of
    # width 3, l = 3, float64): the jitted construction is compiled once per test session
    with jax.enable_x64(True):
        kx, ka, kb, ks = jax.random.split(jax.random.PRNGKey(0), 4)
        x = jax.random.normal(kx, (32, 3))
        x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
        y = jnp.stack([jnp.sin(2 * x[:, 0]) + x[:, 1], jnp.abs(x[:, 2]) - 0.5], axis=1)
        kw = dict(n=3, m=12, d_y=2, d_g=3, d_o=3, hidden=(3,), residual_scale=1.0)
        a = jl.SkipNet.init(ka, **kw)
        b = jl.SkipNet.init(kb, **kw)
        star = jl.TwoLayer.init(ks, n=3, m=3, d_y=2)
        path, _, _ = jl.construct_path(a, b, star, eps=0.8)
        F = jl.objective_fn(x, y, kappa=1e-2)
    return path, F


def test_evaluate_path_on_theorem_path_equals_plain_evaluation(case):
    path, F = case
    with jax.enable_x64(True):
        ts = np.linspace(0.0, 1.0, 23)
        fast = np.asarray(jl.evaluate_path(F, path, ts))                    # segment-grouped
        plain = np.asarray(jl.evaluate_path(F, path, ts, structured=False))  # vmap of path(t)
        direct = np.array([float(F(path(t))) for t in ts[::7]])
    # same float64 arithmetic on each segment, grouped differently: equal to rounding
    np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast[::7], direct, rtol=1e-10, atol=1e-12)


def test_eager_calls_compile_once(case):
    """200 eager calls `path(t)` at different t run one compiled program (issue 12, item 11: before,
    each call traced and compiled the segment switch again, ~1 s and ~170 memory maps per call).

    Counting: XLA compilations are observed with a `jax.monitoring` listener on the backend-compile
    event, which JAX records once for every executable it compiles (jit or eager op alike) and never
    for a cache hit; a fresh jitted function compiled inside the window shows that the listener sees
    compilations. The first call may compile (the switch program; nothing if an earlier test already
    called a path of these shapes); the next 199, at new values of t, must record no compilation.
    """
    path, _ = case
    compiles = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            compiles.append(duration)

    with jax.enable_x64(True):
        ts = np.linspace(0.0, 1.0, 200)
        ref = jax.vmap(path)(jnp.asarray(ts))  # the same points through vmap, for the values
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            jax.block_until_ready(jax.jit(lambda v: 3.0 * v + 1.0)(jnp.ones(7)))  # a fresh program
            n_control = len(compiles)
            first = path(ts[0])
            jax.block_until_ready(first)
            n_first = len(compiles) - n_control
            outs = [path(t) for t in ts[1:]]
            jax.block_until_ready(outs)
            n_rest = len(compiles) - n_control - n_first
            jax.block_until_ready(path.diag(ts[3]))  # the diagnostics take the same route
            n_seen = len(compiles)
            jax.block_until_ready([path.diag(t) for t in ts[4:24]])
            n_diag_rest = len(compiles) - n_seen
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
    assert n_control >= 1  # the listener sees compilations (so the zeros below can fail)
    assert n_rest == 0, f"{n_rest} compilations in 199 eager calls after the first"
    assert n_diag_rest == 0
    # the eager values are the vmapped ones (same float64 arithmetic per point)
    for i in (0, 57, 199):
        got = first if i == 0 else outs[i - 1]
        want = jax.tree.map(lambda leaf, i=i: leaf[i], ref)
        for u, v in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)
