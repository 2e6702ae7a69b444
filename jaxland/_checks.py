"""Checks at the public boundary, shared by every family: each raises an exception that names the
argument, what was expected and what came.

Checks of values that may be traced (inside `jax.jit`, `jax.vmap`, `jax.grad`) are split in two: the
static part (type, shape) runs always; the value part runs on the host when the value is concrete and
otherwise is staged with `equinox.error_if`, so that it still fires under jit.
"""

from __future__ import annotations

import math

import jax
import numpy as np


def is_concrete(a) -> bool:
    """True when `a` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def check_kappa(kappa) -> None:
    """Refuse a negative or non-finite κ (checked when κ is concrete)."""
    if is_concrete(kappa):
        k = np.asarray(kappa)
        if k.shape != ():
            raise ValueError(f"kappa must be a scalar; got shape {k.shape}")
        if not np.isfinite(k) or k < 0:
            raise ValueError(f"kappa must be a finite number >= 0; got {float(k)}")


def check_ts(ts, name: str = "ts") -> np.ndarray:
    """Validate path parameters: a concrete rank-1, non-empty, finite array with values in [0, 1]."""
    if isinstance(ts, jax.core.Tracer):
        raise TypeError(f"{name} must be concrete (evaluate_path is a driver; call it outside jit)")
    a = np.asarray(ts)
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (P,) (rank 1); got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one point; got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers; got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite; got {int(np.sum(~np.isfinite(a)))} NaN/inf values")
    if np.any(a < 0) or np.any(a > 1):
        raise ValueError(f"{name} must lie in [0, 1]; got values in [{a.min()}, {a.max()}]")
    return a


def check_positive_int(name: str, v, minimum: int = 1) -> int:
    """An integer ≥ `minimum` (bools refused), returned as a Python int."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}; got {v!r}")
    return int(v)


def check_positive_float(name: str, v, allow_zero: bool = False) -> float:
    """A finite number > 0 (≥ 0 with `allow_zero`), returned as a Python float."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {v!r}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0; got {v!r}")
    return f


def check_fn(fn, name: str = "fn") -> None:
    """The objective: a callable params -> scalar."""
    if not callable(fn):
        raise TypeError(f"{name} must be a callable params -> scalar; got {type(fn).__name__}")


def check_key(key, name: str = "key") -> None:
    """A PRNG key is required (all randomness is explicit)."""
    if key is None:
        raise ValueError(f"{name} is required: a jax.random.PRNGKey (all randomness is explicit)")
