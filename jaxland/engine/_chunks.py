"""Sizing and running the engine's chunks: the memory budget, the per-point memory estimated from a
liveness walk over a traced point, chunk sizes from a few buckets, data batches padded to a fixed shape,
and the placement of chunks on a device mesh (multi-host safe).
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jaxtyping import Array

from .._batching import bucket

_CPU_CHUNK_BYTES = 64 * 2**20


def _on_cpu(mesh) -> bool:
    devices = mesh.devices.flat if mesh is not None else jax.local_devices()
    return all(d.platform == "cpu" for d in devices)


def default_memory_budget(device=None) -> int:
    """Bytes of intermediate memory one chunk may use per device: a quarter of the accelerator's memory
    limit where the runtime reports it, else min(2 GiB, physical memory / 8)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # pragma: no cover - backend dependent
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] // 4)
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        phys = 16 * 2**30
    return int(min(2 * 2**30, phys // 8))


def _aval_bytes(v) -> int:
    aval = getattr(v, "aval", None)
    shape = getattr(aval, "shape", None)
    dtype = getattr(aval, "dtype", None)
    if shape is None or dtype is None:
        return 0
    try:
        return int(math.prod(shape)) * np.dtype(dtype).itemsize
    except TypeError:
        return 0


def _sub_jaxprs(eqn):
    for v in eqn.params.values():
        vs = v if isinstance(v, (tuple, list)) else (v,)
        for u in vs:
            if isinstance(u, jax.extend.core.ClosedJaxpr):
                yield u.jaxpr
            elif isinstance(u, jax.extend.core.Jaxpr):
                yield u


def _peak_bytes(jaxpr) -> int:
    """Peak bytes of the values a jaxpr creates (inputs excluded), from a liveness walk over its
    equations; nested jaxprs (jit, scan, cond) add their own peak while their equation runs."""
    last = {}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if isinstance(v, jax.extend.core.Var):
                last[v] = i
    for v in jaxpr.outvars:
        if isinstance(v, jax.extend.core.Var):
            last[v] = len(jaxpr.eqns)
    live, peak = 0, 0
    owned = set()
    for i, eqn in enumerate(jaxpr.eqns):
        inner = max((_peak_bytes(j) for j in _sub_jaxprs(eqn)), default=0)
        out = sum(_aval_bytes(v) for v in eqn.outvars)
        peak = max(peak, live + inner + out)
        live += out
        owned.update(eqn.outvars)
        for v in [u for u in (*eqn.invars, *eqn.outvars) if isinstance(u, jax.extend.core.Var)]:
            if v in owned and last.get(v, -1) <= i:
                live -= _aval_bytes(v)
                owned.discard(v)
    return peak


# --------------------------------------------------------------------------------------------------
# Per-point kernels
# --------------------------------------------------------------------------------------------------


class _Batches(NamedTuple):
    """Data split into `nb` batches of `B` rows (padded; weight 0 on padding rows), leading axis nb."""

    x: Array
    y: Array
    w: Array


def _make_batches(x, y, batch_size: int | None, multiple: int = 1) -> tuple[_Batches, int]:
    N = x.shape[0]
    B = N if batch_size is None else int(min(batch_size, N))
    B = int(math.ceil(B / multiple) * multiple)
    nb = int(math.ceil(N / B))
    return _pad_batches(x, y, nb, B), B


@functools.partial(jax.jit, static_argnums=(2, 3))
def _pad_batches(x, y, nb: int, B: int) -> _Batches:
    N = x.shape[0]
    pad = nb * B - N
    w = jnp.concatenate([jnp.ones((N,), x.dtype), jnp.zeros((pad,), x.dtype)])

    def padrows(a):
        return jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)])

    return _Batches(
        padrows(x).reshape(nb, B, *x.shape[1:]),
        padrows(y).reshape(nb, B, *y.shape[1:]),
        w.reshape(nb, B),
    )
def _make_mesh(mesh, devices):
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}")
        if "points" not in mesh.axis_names:
            raise ValueError(f"mesh must have an axis named 'points'; got axes {mesh.axis_names}")
        return mesh
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.array(devices), ("points",))


def _global(a, mesh, spec):
    """Place a host value on the mesh with the given spec (multi-host safe)."""
    a = np.asarray(a)
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() == 1:
        return jax.device_put(a, sharding)
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def _to_host(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:  # pragma: no cover - multi-host
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(a, tiled=True)
    return a

def _chunked(run_chunk, ts_np: np.ndarray, chunk: int, mesh, dtype):
    """Evaluate `run_chunk` on ts in fixed-size chunks (last one padded by repeating the last t)."""
    Pn = ts_np.shape[0]
    nch = int(math.ceil(Pn / chunk))
    padded = np.concatenate([ts_np, np.full(nch * chunk - Pn, ts_np[-1])]).astype(dtype)
    outs = []
    for i in range(nch):
        tc = padded[i * chunk : (i + 1) * chunk]
        tc = jnp.asarray(tc) if mesh is None else _global(tc, mesh, P("points"))
        outs.append(run_chunk(tc))
    outs = [jax.tree.map(_to_host, o) for o in outs]
    return jax.tree.map(lambda *o: jnp.concatenate(o)[:Pn], *outs)

#: output capacity of one call of a looping kernel (the plain and the structured point kernels): one
#: compiled kernel serves every P up to it; more points run in several calls of the same kernel
LOOP_CAPACITY = 4096


def _looped(run, ts_np: np.ndarray, k: int, dtype) -> list[np.ndarray]:
    """Evaluate a looping kernel `run(ts (cap,), n_groups) -> array or list of arrays (cap,)` at the
    points ts_np (P,) in groups of k: the points are padded to whole groups (repeating the last t) and
    to the kernel's capacity cap (a multiple of k); the kernel fills the first n_groups·k entries.
    Returns one (P,) NumPy array per output."""
    Pn = ts_np.shape[0]
    ts_np = np.asarray(ts_np, np.dtype(dtype))
    ng = -(-Pn // k)
    cap = max(LOOP_CAPACITY // k, 1) * k
    per_call = cap // k
    parts = []
    for g0 in range(0, ng, per_call):
        g = min(per_call, ng - g0)
        seg = np.full(cap, ts_np[-1], ts_np.dtype)
        n = min(Pn - g0 * k, g * k)
        seg[:n] = ts_np[g0 * k : g0 * k + n]
        out = run(seg, np.int32(g))
        parts.append(out if isinstance(out, (list, tuple)) else [out])
    # every call but the last is full, so the first P entries of the concatenation are the values
    return [np.concatenate([np.asarray(part[j]) for part in parts])[:Pn]
            for j in range(len(parts[0]))]


def _round_chunk(chunk: int, n_points_dev: int, P_total: int) -> int:
    """Points per chunk: at most `chunk` (the memory cap), else all P points rounded up to a bucket;
    always a multiple of the number of point devices."""
    cap = max(1, int(chunk) // n_points_dev)
    need = int(math.ceil(P_total / n_points_dev))
    per_dev = cap if need > cap else min(cap, bucket(need))
    return per_dev * n_points_dev
