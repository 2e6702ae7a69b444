"""Data sets: bounded inputs, shapes, reproducibility from the key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxland as jl


def test_sphere_teacher_is_bounded_and_reproducible():
    d = jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=100, n=4, d_y=2, noise=0.1)
    assert d.x.shape == (100, 4) and d.y.shape == (100, 2)
    np.testing.assert_allclose(jnp.linalg.norm(d.x, axis=1), 1.0, rtol=1e-6)  # float32 rounding
    d2 = jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=100, n=4, d_y=2, noise=0.1)
    np.testing.assert_array_equal(d.y, d2.y)
    clean = jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=100, n=4, d_y=2)
    assert float(jnp.max(jnp.abs(d.y - clean.y))) <= 0.1 + 1e-6  # uniform noise in [-0.1, 0.1]
    with pytest.raises(ValueError, match="noise must be"):
        jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=10, n=2, noise=-1.0)
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        jl.data.sphere_teacher(jax.random.PRNGKey(0), n_samples=0, n=2)


def test_sphere_classification_labels():
    d = jl.data.sphere_classification(jax.random.PRNGKey(1), n_samples=200, n=3)
    assert d.y.shape == (200, 1)
    assert set(np.unique(np.asarray(d.y)).tolist()) == {-1.0, 1.0}
    assert abs(float(jnp.mean(d.y))) <= 0.02  # median split: balanced up to ties


def test_bundled_real_data_is_bounded():
    pytest.importorskip("sklearn")
    dg = jl.data.digits()
    assert dg.x.shape == (1797, 64) and dg.y.shape == (1797,)
    assert float(jnp.max(jnp.linalg.norm(dg.x, axis=1))) <= 1 + 1e-6
    db = jl.data.diabetes()
    assert db.x.shape == (442, 10) and db.y.shape == (442, 1)
    assert float(jnp.max(jnp.linalg.norm(db.x, axis=1))) <= 1 + 1e-6
    two = jl.data.digits(onehot=True, classes=(3, 8))
    assert two.y.shape[1] == 2 and np.all(np.asarray(two.y).sum(1) == 1)
    with pytest.raises(ValueError, match="name must be one of"):
        jl.data.load("mnist")
