"""Test inputs shared by the path-engine tests: small networks built with NumPy (no JAX kernels are
compiled just to make test inputs; JAX compile time dominates these tests)."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxland


def to64(tree):
    """float64 copies through NumPy (no float64 kernels compiled just to make test inputs)."""
    return jax.tree.map(lambda l: jnp.asarray(np.asarray(l, np.float64)), tree)


def np_net(cls, rng, n=3, m=4, d_y=2, d_g=2, d_o=2, h=2):
    """A network of type `cls` with N(0, 1/fan_in) float32 weights from a NumPy generator."""
    def f(*shape):
        return jnp.asarray(rng.normal(size=shape) / np.sqrt(shape[-1]), jnp.float32)

    if cls is jaxland.TwoLayer:
        return cls(f(m, n), f(d_y, m))
    return cls(f(m, n), f(d_y, m), f(m, d_o), f(d_g, m), (f(h, d_g), f(d_o, h)))
