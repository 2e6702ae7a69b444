"""Issue 22, "a first hour without surprises": barriers are never printed negative, an unknown
polychain parametrisation is refused with the valid spellings."""

import jax
import jax.numpy as jnp
import pytest

import jaxland as jl


@jax.custom_batching.custom_vmap
def _F(p):
    return jnp.sum(p**2)


@_F.def_vmap
def _F_batched(axis_size, in_batched, p):
    # the batched kernel rounds differently from the single evaluation, as two XLA programs of the
    # same F do; here by a planted 1e-3 so that the difference is far from chance
    return jnp.sum(p**2, axis=-1) - 1e-3, True


def test_a_search_barrier_is_never_negative():
    """B = max_t F(γ(t)) − max(F(a), F(b)) ≥ 0: the path holds its ends. The batched values at
    t = 0, 1 lie 1e-3 below F(a) = F(b) = 1 here (every other point is lower still), so the raw
    difference is −1e-3; the reported barrier is 0 and `f_max` keeps the raw maximum."""
    a, b = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    r = jl.search_path(_F, a, b, method="linear", points=9)
    assert r.f_max == pytest.approx(1.0 - 1e-3, abs=1e-6)
    assert r.barrier == 0.0
    # a real barrier is untouched: F = −‖p − (½, ½)‖², highest at t = ½
    bump = lambda p: -jnp.sum((p - 0.5) ** 2)  # noqa: E731
    r = jl.search_path(bump, a, b, method="linear", points=9)
    assert r.barrier == pytest.approx(0.5, abs=1e-6)  # −0 at t = ½ against −0.5 at both ends


def test_unknown_polychain_parametrisation_lists_the_valid_ones():
    a, b = jnp.zeros(3), jnp.ones(3)
    with pytest.raises(ValueError, match=r"one of 'uniform', 'arclength' \(spelled as one word\); "
                                         r"got 'arc-length'"):
        jl.paths.polychain([a, b], parametrization="arc-length")
    with pytest.raises(ValueError, match=r"one of 'uniform', 'arclength'; got 'linear'"):
        jl.paths.polychain([a, b], parametrization="linear")
    # the README spells it as the code does
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert '"arc-length"' not in readme and "`polychain` (uniform or arc-length)" not in readme
