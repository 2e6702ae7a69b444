"""Optimisers shared by the searches, the depth and the experiments."""

from __future__ import annotations

import functools

import optax


@functools.lru_cache(maxsize=32)
def cached_adam(learning_rate: float) -> optax.GradientTransformation:
    """`optax.adam(learning_rate)`, cached per value: the jitted loops take the optimiser as a static
    argument, so passing the same object again reuses their compiled code."""
    return optax.adam(learning_rate)
