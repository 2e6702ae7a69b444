"""The engine evaluates the Theorem 11 path by its own segment structure, with the plain values."""

import jax
import numpy as np

import jaxland as jl


def test_evaluate_path_on_theorem_path_equals_plain_evaluation():
    with jax.enable_x64(True):
        d = jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=32, n=2, teacher_width=3)
        kw = dict(n=2, m=8, d_g=2, d_o=2, hidden=(2,), dtype=jax.numpy.float64)
        a = jl.SkipNet.init(jax.random.PRNGKey(1), **kw)
        b = jl.SkipNet.init(jax.random.PRNGKey(2), **kw)
        star = jl.TwoLayer(W1=jax.random.normal(jax.random.PRNGKey(3), (2, 2)),
                           W2=jax.random.normal(jax.random.PRNGKey(4), (1, 2)))
        path, _, _ = jl.construct_path(a, b, star, eps=0.5, l=2)
        F = jl.objective_fn(d.x, d.y, kappa=1e-2)
        ts = np.linspace(0.0, 1.0, 23)
        fast = np.asarray(jl.evaluate_path(F, path, ts))                    # segment-grouped
        plain = np.asarray(jl.evaluate_path(F, path, ts, structured=False))  # vmap of path(t)
        direct = np.array([float(F(path(t))) for t in ts[::7]])
    # same float64 arithmetic on each segment, grouped differently: equal to rounding
    np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(fast[::7], direct, rtol=1e-10, atol=1e-12)
