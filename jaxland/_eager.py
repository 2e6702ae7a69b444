"""Eager calls through one cached compiled function (shared by the parameter layer, the paths and the
constructed paths).

Run eagerly, a function of pytrees (γ(t) of a path, the unravelling of a parameter vector, F at two
endpoints) executes op by op: every primitive is dispatched on its own, and a `lax.switch` over
freshly built branches is traced and compiled again at every call. `eager_call(f, *args)` runs f under
one module-level `eqx.filter_jit` instead, whose cache is keyed on f, on the non-array leaves of the
arguments and on the shapes and dtypes of their arrays: repeated eager calls compile once per layout.
Inside a trace (jit, vmap, grad, scan) f runs inline.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax


def _apply(f, args):
    return f(*args)


_compiled_apply = eqx.filter_jit(_apply)


def is_traced(tree) -> bool:
    """True when a leaf of `tree` is a tracer (the call happens inside jit/vmap/grad/scan)."""
    return any(isinstance(l, jax.core.Tracer) for l in jax.tree.leaves(tree))


def eager_call(f: Callable, *args):
    """f(*args), through one cached compiled function when called eagerly (see the module docstring).

    `f` must be a stable callable (a module-level function, a class's function, or a hashable
    callable object such as an `eqx.Module`; never a lambda built afresh for each call, which would
    compile each time). Python scalars among `args` are static (a new value compiles again): pass
    them as arrays. Inside a trace (any leaf of `args` is a tracer), or when a non-array leaf has no
    hash, f runs inline.
    """
    if is_traced(args) or not _static_hashable(f, args):
        return f(*args)
    return _compiled_apply(f, args)


def _static_hashable(f, args) -> bool:
    """Whether `eqx.filter_jit` can key its cache on f and the non-array leaves of args (a leaf
    without a hash, such as an unfrozen dataclass, cannot be; f then runs op by op, as before)."""
    try:
        hash((f, tuple(l for l in jax.tree.leaves(args) if not eqx.is_array(l))))
    except TypeError:
        return False
    return True
