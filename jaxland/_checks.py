"""Checks at the public boundary, shared by every family: each raises an exception that names the
argument, what was expected and what came.

Checks of values that may be traced (inside `jax.jit`, `jax.vmap`, `jax.grad`) are split in two: the
static part (type, shape) runs always; the value part runs on the host when the value is concrete and
otherwise is staged with `equinox.error_if`, so that it still fires under jit.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(a) -> bool:
    """True when `a` holds values (not a tracer inside jit/vmap/grad)."""
    return not isinstance(a, jax.core.Tracer)


def _describe(v) -> str:
    """`v` for an error message: its repr, cut short, and its type."""
    r = repr(v)
    return f"{r[:60] + '…' if len(r) > 60 else r} ({type(v).__name__})"


def check_kappa(kappa, name: str = "kappa"):
    """Check κ, the weight of the regulariser: a real scalar, finite and ≥ 0; returns κ.

    A concrete κ (a Python number, a NumPy or a concrete JAX scalar) is checked at once and returned
    unchanged. A traced κ (inside `jax.jit`, `jax.vmap`, `jax.grad`) has its type and shape checked
    at once, and its value staged with `equinox.error_if`: the returned κ carries the check, so a
    caller must compute with the returned value (``kappa = check_kappa(kappa)``) for the check to
    fire when the compiled function runs.

    Raises ``TypeError`` (not a real number: a string, None, a bool, a complex number) or
    ``ValueError`` (not a scalar, NaN, inf, negative), both naming `name`.
    """
    if isinstance(kappa, jax.core.Tracer):
        if kappa.shape != ():
            raise ValueError(f"{name} must be a scalar; got a traced array of shape {kappa.shape}")
        dt = kappa.dtype
        if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
            raise TypeError(f"{name} must be a real number; got a traced array of dtype {dt}")
        bad = jnp.logical_not(jnp.isfinite(kappa) & (kappa >= 0))
        return eqx.error_if(kappa, bad, f"{name} must be a finite number >= 0")
    if kappa is None or isinstance(kappa, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be a real number >= 0 (a float); got {_describe(kappa)}")
    try:
        k = np.asarray(kappa)
    except Exception:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(f"{name} must be a real number >= 0 (a float); got "
                        f"{_describe(kappa)}") from None
    if k.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number >= 0 (a float); got {_describe(kappa)}")
    if k.shape != ():
        raise ValueError(f"{name} must be a scalar; got an array of shape {k.shape}")
    if not np.isfinite(k) or k < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {float(k)}")
    return kappa


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
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}; got {_describe(v)}")
    return int(v)


def check_positive_float(name: str, v, allow_zero: bool = False) -> float:
    """A finite number > 0 (≥ 0 with `allow_zero`), returned as a Python float."""
    if v is None or isinstance(v, (bool, np.bool_, str, bytes)):
        raise TypeError(f"{name} must be a number; got {_describe(v)}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {_describe(v)}") from None
    if not math.isfinite(f) or f < 0 or (f == 0 and not allow_zero):
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0; got {v!r}")
    return f


def check_float_dtype(dtype, name: str = "dtype"):
    """None (the default float type) or a floating-point dtype; returns the dtype to use."""
    if dtype is None:
        return jnp.result_type(float)
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating-point dtype such as jnp.float32; got "
                        f"{_describe(dtype)}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype such as jnp.float32; got {dt}")
    return dt


def check_fn(fn, name: str = "fn") -> None:
    """The objective: a callable params -> scalar."""
    if not callable(fn):
        raise TypeError(f"{name} must be a callable params -> scalar; got {type(fn).__name__}")


def check_key(key, name: str = "key") -> None:
    """A PRNG key is required (all randomness is explicit): a typed key (`jax.random.key`) or a raw
    uint32 key (`jax.random.PRNGKey`, last axis 2 or 4)."""
    if key is None:
        raise ValueError(f"{name} is required: a jax.random.PRNGKey (all randomness is explicit)")
    dt = getattr(key, "dtype", None)
    what = f"{name} must be a PRNG key (jax.random.PRNGKey(seed) or jax.random.key(seed))"
    if dt is None or not hasattr(key, "shape"):
        raise TypeError(f"{what}; got {_describe(key)}")
    if jax.dtypes.issubdtype(dt, jax.dtypes.prng_key):
        return
    if dt != np.uint32 or len(key.shape) == 0 or key.shape[-1] not in (2, 4):
        raise TypeError(f"{what}; got an array of shape {tuple(key.shape)} and dtype {dt}")
