"""Batched evaluation of a function F along a path: F(γ(t_1)), …, F(γ(t_P)) at once.

`evaluate_path(fn, path, ts)` picks one of its kernels by a cost model (no timing, no calibration):

1. **The structured kernels** — when `fn` is a data objective built by `objective_fn` and the path's
   pieces are combinations γ(s) = Σ_k c_k(s) B_k of a few `SkipNet` / `NoSkipNet` / `TwoLayer`
   networks (segments, polychains, Bézier curves, their concatenations and reversals):
   - first layer: on CPU W1(s) x per point when n is small (2n flops per (sample, unit) entry
     against streaming K + 1 arrays of N·m floats: per point cheaper for n ≲ 43), else
     W1(s) x = Σ_k c_k(s) (W1_k x) from the K products W1_k x computed once per piece when P is
     large enough to repay them and their fresh buffer (`_first_layer_plan`; always on an
     accelerator);
   - output layer: W2 [h + V1 g] = W2 h + (W2 V1) g, small products first (`_fold_layers`);
   - the *point kernel* (`jaxland.engine._structured`): one executable per piece, a loop over the
     points inside it;
   - the *breakpoint sweep* (`jaxland.engine._sweep`), on CPU, for a straight piece with P points
     when P ≥ s·(16 + 380·f), f the fraction of the N·m (sample, unit) ReLUs that switch on the
     piece (≈ 0.5 between two random networks) and s the ratio of the point kernel's cost per point
     with the precomputed first layer to this piece's (1 with it; 1.33 at n = 16 without it): the
     sweep costs a fixed ≈ f·N·m switch updates plus O(N) per point, the point kernel ≈ N·m·r per
     point; the constants are the crossovers measured on both problems of
     benchmarks/bench_paths.py (P* ≈ 205 on the wide input, ≈ 275–295 on the reference problem).
2. **The plain kernel** (`jaxland.engine._plain`) — any other function (a user's own loss, any
   model: an `eqx.nn.MLP`, a CNN, a dict of arrays) and any path: one executable per call, a
   `fori_loop` over groups of k points with a traced trip count; k from one point's traced FLOPs
   and peak memory (k = 1 for a point above 2 MFLOP on CPU, up to 64 for cheap points, as many as
   fit in half the memory budget on an accelerator); with a convolution on CPU the convolutions
   become im2col GEMMs (`jaxland.engine._im2col`; XLA:CPU's own convolution is slower, and slower
   still inside loops; `conv="native"` keeps it, in a Python loop over a jitted group). The compiled
   kernel is cached by the traced computation, so a fresh lambda computing the same thing does not
   recompile.
3. **Sharded** — with several devices (or a `mesh`), chunks of points vmapped inside `shard_map`,
   sized to the memory budget, the data optionally split over a "data" axis.

Data can be split into batches (`batch_size`): the mean is accumulated exactly as a sum of per-sample
losses divided by N once. Values do not depend on the kernel beyond floating-point rounding.
"""

from __future__ import annotations

import functools
import math
import types
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from jaxtyping import Array, PyTree

from .._checks import check_ts
from ..model._batch_stats import stateful_leaf
from ..model._objective import Objective, check_data
from ..paths._paths import AbstractPath
from . import _plain
from ._chunks import (
    _Batches,
    _chunked,
    _global,
    _make_batches,
    _make_mesh,
    _on_cpu,
    _peak_bytes,
    _round_chunk,
    default_memory_budget,
)
from ._structured import _evaluate_structured, _structured_ok


def _objective_plain(obj: Objective, net, batches: _Batches, data_axis) -> Array:
    """(1/N) Σ_batches Σ_s w_s L + κR for one network (the plain evaluation)."""

    def body(acc, b):
        xb, yb, wb = b
        return acc + obj.loss_sum(net, xb, yb, wb), None

    zero = jnp.zeros((), jnp.result_type(obj.x.dtype, *jax.tree.leaves(net)))
    total, _ = jax.lax.scan(body, zero, tuple(batches))
    if data_axis is not None:
        total = jax.lax.psum(total, data_axis)
    return total / obj.num_samples + obj.penalty(net)


def _generic_with_data(fn, net, data, batch_size: int | None):
    """Σ_b (n_b / N) fn(net, batch_b) over batches of the leading axis of `data` (exact for a mean)."""
    leaves = jax.tree.leaves(data)
    N = leaves[0].shape[0]
    if batch_size is None or batch_size >= N:
        return fn(net, data)
    B = int(batch_size)
    nfull, rem = divmod(N, B)
    full = jax.tree.map(lambda a: a[: nfull * B].reshape(nfull, B, *a.shape[1:]), data)

    def body(acc, b):
        v = fn(net, b)
        return jax.tree.map(lambda a, u: a + u * (B / N), acc, v), None

    first = jax.tree.map(lambda a: a[0], full)
    shape = jax.eval_shape(fn, net, first)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape)
    acc, _ = jax.lax.scan(body, zero, full)
    if rem:
        tail = jax.tree.map(lambda a: a[nfull * B :], data)
        acc = jax.tree.map(lambda a, u: a + u * (rem / N), acc, fn(net, tail))
    return acc


def _plain_point(fn, path, t, data, batches, batch_size, data_axis):
    net = path(t)
    if isinstance(fn, Objective):
        return _objective_plain(fn, net, batches, data_axis)
    if data is None:
        return fn(net)
    return _generic_with_data(fn, net, data, batch_size)


# --------------------------------------------------------------------------------------------------


@functools.partial(eqx.filter_jit, donate="none")
def _run_plain(fn, path, ts, data, batches, batch_size, mesh, data_axis):
    def local(fn, path, ts, data, batches):
        return jax.vmap(
            lambda t: _plain_point(fn, path, t, data, batches, batch_size, data_axis)
        )(ts)

    if mesh is None:
        return local(fn, path, ts, data, batches)
    dyn, static = eqx.partition((fn, path, data), eqx.is_array)

    def sharded(dyn, ts, batches):
        fn_, path_, data_ = eqx.combine(dyn, static)
        return local(fn_, path_, ts, data_, batches)

    bspec = P(None, data_axis) if data_axis is not None else P()
    return jax.shard_map(
        sharded, mesh=mesh, in_specs=(P(), P("points"), bspec), out_specs=P("points"),
        check_vma=False,
    )(dyn, ts, batches)


def _param_dtype(path) -> Any:
    leaves = [l for l in jax.tree.leaves(path) if eqx.is_inexact_array(l)]
    if not leaves:
        try:
            leaves = jax.tree.leaves(jax.eval_shape(path, jnp.asarray(0.0)))
        except Exception:
            leaves = []
    dts = [jnp.result_type(l) for l in leaves if jnp.issubdtype(jnp.result_type(l), jnp.floating)]
    return jnp.result_type(*dts) if dts else jnp.result_type(float)


_TRACE_CACHE: dict = {}

_SCALARS = (bool, int, float, complex, str, bytes, type(None))
_FINGERPRINT_DEPTH = 4


def _value_key(v, depth: int):
    """A hashable stand-in for a value a function reads (closure cell, default, global), or None
    when it cannot be compared safely: scalars by value, plain functions by `_fn_fingerprint`,
    modules, classes, builtins and immutable arrays (jax.Array) by identity (held, so the identity
    stays valid), tuples element-wise. Mutable containers and NumPy arrays give None."""
    if isinstance(v, _SCALARS):
        return (type(v), v)
    if isinstance(v, types.FunctionType):
        fp = _fn_fingerprint(v, depth + 1)
        return None if fp is None else ("fn", fp)
    if isinstance(v, (types.ModuleType, type, types.BuiltinFunctionType, jax.Array,
                      np.ufunc)) or v is Ellipsis:
        return ("id", _plain._Opaque(v))
    if isinstance(v, tuple):
        ks = tuple(_value_key(u, depth) for u in v)
        return None if any(k is None for k in ks) else ("tuple", ks)
    return None


def _fn_fingerprint(f, depth: int = 0):
    """A hashable key equal for two plain Python functions that compute the same thing: the same code
    object, defaults, closure contents and referenced globals (`_value_key`); None when a part cannot
    be compared (then the caller keys by the function object itself). So a fresh
    ``lambda net: loss(net, x, y)`` at every call finds the previous call's trace (issue 20: the
    trace was most of a small problem's call). Like `jax.jit`, it assumes that a module attribute
    the function reads is not rebound between calls."""
    if not isinstance(f, types.FunctionType) or depth > _FINGERPRINT_DEPTH:
        return None
    parts = [f.__code__, _value_key(f.__defaults__ or (), depth)]
    parts.append(_value_key(tuple(sorted((f.__kwdefaults__ or {}).items())), depth))
    for cell in f.__closure__ or ():
        try:
            parts.append(_value_key(cell.cell_contents, depth))
        except ValueError:  # an empty cell
            return None
    g = f.__globals__
    for name in f.__code__.co_names:
        if name in g:
            parts.append((name, _value_key(g[name], depth)))
            if parts[-1][1] is None:
                return None
    if any(p is None for p in parts):
        return None
    return tuple(parts)


def _static_leaf_key(leaf):
    fp = _fn_fingerprint(leaf) if isinstance(leaf, types.FunctionType) else None
    return leaf if fp is None else ("function", fp)


def _trace_key(dyn, static, batch_size, dtype):
    """A hashable key for one point's trace (shapes and static parts; a plain function by
    `_fn_fingerprint`), or None if unhashable."""
    try:
        key = (
            jax.tree.structure(dyn),
            tuple((l.shape, str(l.dtype)) for l in jax.tree.leaves(dyn)),
            jax.tree.structure(static),
            tuple(_static_leaf_key(l) for l in jax.tree.leaves(static)),
            batch_size,
            str(np.dtype(dtype)),
            bool(jax.config.jax_enable_x64),
        )
        hash(key)
    except TypeError:
        return None
    return key


_START_CACHE: dict = {}


def _start_shape(path, dtype):
    """`eqx.filter_eval_shape(path, 0.0)`, cached by the path's structure, shapes and static parts."""
    dyn, static = eqx.partition(path, eqx.is_array)
    key = _trace_key(dyn, static, None, dtype)
    if key is not None and key in _START_CACHE:
        return _START_CACHE[key]
    start = eqx.filter_eval_shape(path, jnp.asarray(0.0, dtype))
    if key is not None:
        if len(_START_CACHE) >= 64:
            _START_CACHE.pop(next(iter(_START_CACHE)))
        _START_CACHE[key] = start
    return start


#: per-object facts of a path or an `Objective` (issue 20: on a tiny problem recomputing them was
#: most of a call's host work): id -> (the object, a dict of facts filled lazily), bounded
_OBJECT_FACTS: OrderedDict = OrderedDict()
_MAX_OBJECT_FACTS = 8


def _immutable(tree) -> bool:
    """Whether `tree`'s leaves cannot change under a fixed object identity: JAX arrays (immutable;
    not tracers), Python scalars, functions. A NumPy leaf (mutable in place) gives False."""
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.core.Tracer):
            return False
        if not (isinstance(leaf, (jax.Array, *_SCALARS)) or isinstance(leaf, types.FunctionType)):
            return False
    return True


def _facts(obj) -> dict:
    """A dict of cached facts about `obj` (a path, an `Objective`): the same dict while the same
    object is passed again (held here, so its id stays valid; at most `_MAX_OBJECT_FACTS` objects),
    a fresh empty dict for an object with mutable leaves (`_immutable`). What is stored must depend
    only on the object's arrays and structure (and the x64 flag, part of the key)."""
    key = (id(obj), bool(jax.config.jax_enable_x64))
    hit = _OBJECT_FACTS.get(key)
    if hit is not None and hit[0] is obj:
        _OBJECT_FACTS.move_to_end(key)
        return hit[1]
    if not _immutable(obj):
        return {}
    facts: dict = {}
    _OBJECT_FACTS[key] = (obj, facts)
    while len(_OBJECT_FACTS) > _MAX_OBJECT_FACTS:
        _OBJECT_FACTS.popitem(last=False)
    return facts


def _fact(facts: dict, name, compute):
    if name not in facts:
        facts[name] = compute()
    return facts[name]


def _combinations(path, facts: dict):
    """The path's pieces and their `combination()`s (None where a piece has none), computed once
    per path object."""
    def compute():
        pieces = path.pieces()
        return pieces, [p.combination() for p in pieces]

    return _fact(facts, "combinations", compute)


#: below this many (sample, unit) entries N·m a point of a structured objective costs microseconds:
#: the structured point kernel's one point per loop step is then slower than the plain kernel's
#: groups of points (README-sized toy, N = 256, m = 32, P = 1024: 2–7× slower; issue 20), and the
#: sweep is not used either (`_sweep.SWEEP_MIN_ENTRIES`, the same bound)
TINY_ENTRIES = 1 << 16


#: a tiny objective on straight pieces with at least this many points is swept: on the toy the sweep
#: took 7.4 / 19 / 59 ms at P = 256 / 1024 / 4096 against the plain kernel's 14 / 45 / 90, and the
#: plain kernel 2.4 / 6.2 ms at P = 16 / 64 against the sweep's 14 / 11 (medians over processes,
#: `benchmarks/bench_paths.py --problems toy`)
TINY_SWEEP_POINTS = 256


def _all_straight(path, combos=None) -> bool:
    """Whether every piece of a structured path is affine in its parameter (sweepable); `combos`:
    the pieces' `combination()`s when already computed."""
    from ._sweep import affine_coefficients

    if combos is None:
        combos = [p.combination() for p in path.pieces()]
    return all(affine_coefficients(c[1]) for c in combos)


def _tiny_structured(fn, start, sweep, mesh) -> bool:
    """Whether an `Objective` on a structured path is so small (N·m < `TINY_ENTRIES`, on CPU, no mesh,
    automatic sweep) that the plain kernel evaluates it faster than the structured kernels."""
    if sweep is not None or mesh is not None or start is None or not _on_cpu(None):
        return False
    W1 = getattr(start, "W1", None)
    if W1 is None or len(W1.shape) != 2:
        return False
    return fn.num_samples * W1.shape[0] < TINY_ENTRIES


def evaluate_path(
    fn: Callable,
    path: AbstractPath,
    ts,
    *,
    data: PyTree | None = None,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
    structured: bool = True,
    sweep: bool | None = None,
    mesh: Mesh | None = None,
    devices: Sequence | None = None,
    conv: str = "auto",
) -> PyTree:
    """F(γ(t)) at every t in `ts`: one compiled loop over the points, or the structured kernels.

    **Arguments:**
    - `fn`: the function to evaluate. One of
      * an `Objective` from `objective_fn(x, y, kappa=…, loss=…)` (the data objective F of eq. 7;
        fastest: exact data batching and the structured kernels);
      * a callable `fn(params) -> scalar or pytree of scalars` (loss, accuracy, regulariser, …) for
        any model (non-array leaves such as an activation function are carried through);
      * with `data`: a callable `fn(params, batch) -> …` that is a *mean* over the batch; with
        `batch_size` the data are split into batches and the result is Σ_b (n_b/N) fn(params, batch_b),
        exact for a mean.
    - `path`: an `AbstractPath` (see `jaxland.paths`).
    - `ts`: shape (P,), values in [0, 1] (rank, finiteness and range are checked: ``ValueError``).
    - `data`: pytree of arrays with a common leading axis N, passed to `fn` (not with an `Objective`).
    - `batch_size`: rows per data batch (default: all N at once).
    - `chunk_size`: points evaluated together under `jax.vmap` (one group of the loop, or one chunk
      when sharded). Default: the kernel choice rule below. Results do not depend on it beyond
      floating-point rounding.
    - `memory_budget`: bytes one group (chunk) of points may use per device (default
      `default_memory_budget()`); the per-point need is estimated from the traced computation
      (liveness over its jaxpr) or, on the structured path, from the layer sizes.
    - `structured`: use the structured kernels when they apply (see the module docstring).
    - `sweep`: on straight pieces (segments, polychain pieces) of a structured path, evaluate by
      sweeping the ReLU breakpoints (`jaxland.engine._sweep`: exact to rounding). None (default):
      on CPU, without a mesh, when N·m ≥ 2^16 and the piece has P ≥ s·(16 + 380·f) points, f the
      fraction of (sample, unit) entries whose ReLU switches on the piece, s the point kernel's
      relative cost (module docstring; `use_sweep`); True: on every straight piece (no mesh);
      False: never.
    - `mesh`: a `jax.sharding.Mesh` with an axis "points" (and optionally "data", over which the
      `Objective`'s samples are split and the loss sums `psum`-med). Default: all devices on "points"
      (global devices in a multi-host run after `jax.distributed.initialize()`, same call).
    - `devices`: alternatively, the devices to shard the points over.
    - `conv`: how the plain kernel (one device) computes the convolutions of fn: "gemm" as im2col
      matrix products (`jaxland.engine._im2col`: one strided slice per kernel offset, one GEMM;
      equal to rounding), "native" as XLA's own convolution, "auto" (default) "gemm" on CPU,
      where XLA:CPU's convolution is the slower one, and "native" elsewhere.

    **The kernel choice rule** (cost model from the traced computation; details in
    `jaxland.engine._plain` and `jaxland.engine._sweep`):
    - several devices: vmapped chunks inside `shard_map`, as many points per chunk as fit in the
      budget;
    - an `Objective` on a structured path: on CPU, when N·m < 2^16 (`TINY_ENTRIES`: a point costs
      microseconds), the sweep from P ≥ 256 points on straight pieces, else the plain kernel below
      (its groups of points beat the point kernel's one point per loop step); else the sweep on a straight piece on CPU with
      P ≥ s·(16 + 380·f) points, else the structured point kernel (one executable, a loop over
      groups of points; on CPU groups of one point once a point's working set passes 64 MiB; the
      first layer per point or precomputed, by the cost model of the module docstring);
    - anything else: the plain kernel, one executable looping over groups of k points: on CPU k = 1
      when one point costs ≥ 2 MFLOP (0.5 MFLOP with convolutions), otherwise the largest power of
      two ≤ 64 with k·FLOPs ≤ 8 MFLOP and k·(peak bytes) ≤ 4 MiB; on an accelerator k = budget /
      (2·peak bytes); always k·(peak bytes) ≤ `memory_budget`. With a convolution on CPU, the
      convolutions as im2col GEMMs inside the device loop (`conv="native"`: XLA's convolution in a
      Python loop over one jitted group instead). The compiled kernel is cached by the
      traced computation (jaxpr text and types): a fresh lambda with the same body and captured
      arrays of the same shapes does not recompile (it is traced again: milliseconds).

    **Returns:** the values with a leading axis P: shape (P,) for a scalar fn, a pytree of such arrays
    for a pytree-valued fn.
    """
    ts_np = check_ts(ts)
    if not isinstance(path, AbstractPath):
        raise TypeError(f"path must be a jaxland.paths.AbstractPath; got {type(path).__name__}")
    if not callable(fn):
        raise TypeError(f"fn must be callable; got {type(fn).__name__}")
    if batch_size is not None and (int(batch_size) != batch_size or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer; got {batch_size}")
    if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size}")
    if sweep is not None and not isinstance(sweep, bool):
        raise TypeError(f"sweep must be None, True or False; got {sweep!r}")
    if conv not in ("auto", "gemm", "native"):
        raise ValueError(f"conv must be 'auto', 'gemm' or 'native'; got {conv!r}")
    if memory_budget is not None and not memory_budget > 0:
        raise ValueError(f"memory_budget must be a positive number of bytes; got {memory_budget}")
    if batch_size is not None and data is None and not isinstance(fn, Objective):
        raise ValueError(f"batch_size={batch_size} splits data into batches, but there is no data: "
                         "pass data=... (fn(params, batch)) or an Objective, or leave batch_size=None")
    if isinstance(fn, Objective) and data is not None:
        raise ValueError("data must be None when fn is an Objective (it carries its own x, y)")
    if data is not None:
        sizes = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in jax.tree.leaves(data)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"data must be a pytree of arrays with one common leading axis N; got "
                             f"leading sizes {sorted(str(s) for s in sizes)}")
        if sizes == {0}:
            raise ValueError("data must have at least one row (a mean over no samples is NaN); got "
                             "leading size N = 0")
        data = jax.tree.map(jnp.asarray, data)
    n_rows = fn.num_samples if isinstance(fn, Objective) else (
        jnp.shape(jax.tree.leaves(data)[0])[0] if data is not None and jax.tree.leaves(data) else 0)
    if batch_size is not None and batch_size < n_rows:
        # Batching averages fn over batches, exact for a per-sample mean; a BatchNorm in training
        # mode would normalise each batch by its own statistics (issue 12, item 10). Only what is
        # reachable from fn and path as pytrees or captured variables is seen (`stateful_leaf`).
        where = stateful_leaf(path, "path") or stateful_leaf(fn, "fn")
        if where is not None:
            raise ValueError(
                f"batch_size={batch_size} splits the data into batches and averages fn over them, "
                f"but {where} holds BatchNorm state: in training mode each batch would be "
                "normalised with its own statistics, so the result would not be the value on "
                "the whole data. Use batch_size=None, with fn re-estimating the statistics of the "
                "whole data at each point (jaxland.recompute_batch_stats, which takes its own "
                "batch_size) and evaluating the model in inference mode")

    mesh = _make_mesh(mesh, devices)
    n_pdev = 1 if mesh is None else mesh.shape["points"]
    data_axis = "data" if mesh is not None and "data" in mesh.axis_names else None
    n_ddev = 1 if data_axis is None else mesh.shape["data"]
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    path_facts = _facts(path)
    dtype = _fact(path_facts, "dtype", lambda: _param_dtype(path))
    Pn = ts_np.shape[0]

    batches = None
    start = None
    if isinstance(fn, Objective):
        # shapes only: γ(0) is not computed (a long Concat would otherwise run eagerly op by op);
        # cached by the path's structure and shapes (a repeat call does not trace the path again)
        start = _fact(path_facts, "start", lambda: _start_shape(path, dtype))
        check_data(start, fn.x, fn.y, fn.loss)
        bs = batch_size
        if data_axis is not None:
            # every data device gets the same number of rows in every batch
            bs = fn.num_samples if bs is None else bs
            bs = int(math.ceil(min(bs, fn.num_samples) / n_ddev) * n_ddev)
        batches = _fact(_facts(fn), ("batches", bs, n_ddev),
                        lambda: _make_batches(fn.x, fn.y, bs, multiple=n_ddev)[0])
        if mesh is not None:
            spec = P(None, data_axis) if data_axis is not None else P()
            batches = jax.tree.map(lambda a: _global(a, mesh, spec), batches)

    if structured and isinstance(fn, Objective) and mesh is None and batch_size is None:
        # A path that knows its own segment structure (the Theorem 11 path of `connect`: under vmap
        # its segment switch would evaluate every segment at every point) evaluates F itself;
        # AbstractPath.objective_values returns None for a path without such an evaluator.
        own = path.objective_values(fn.x, fn.y, ts_np, kappa=fn.kappa, loss=fn.loss)
        if own is not None:
            return jnp.asarray(own)

    if structured and isinstance(fn, Objective) and _structured_ok(
            fn, path, _combinations(path, path_facts)[1]):
        tiny = _tiny_structured(fn, start, sweep, mesh)
        combos = _combinations(path, path_facts)[1]
        if not tiny or (ts_np.shape[0] >= TINY_SWEEP_POINTS and _all_straight(path, combos)):
            return _evaluate_structured(fn, path, ts_np, batches, chunk_size, budget, mesh,
                                        data_axis, n_pdev, n_ddev, dtype, True if tiny else sweep,
                                        combos=combos, path_facts=path_facts,
                                        obj_facts=_facts(fn))

    if mesh is None:
        # the plain kernel (`jaxland.engine._plain`): one executable, a loop over groups of points
        return _evaluate_plain(fn, path, ts_np, data, batches, batch_size, chunk_size, budget, dtype,
                               conv)

    # sharded over a mesh: vmapped chunks of points inside `shard_map`. Check what fn returns, and
    # the per-point memory from a liveness walk over one point's jaxpr
    dyn_all, static_all = eqx.partition((fn, path, data, batches), eqx.is_array)

    def one_dyn(dyn, t):
        f, p, d, b = eqx.combine(dyn, static_all)
        return _plain_point(f, p, t, d, b, batch_size, None)

    key = _trace_key(dyn_all, static_all, batch_size, dtype)
    if key is None or key not in _TRACE_CACHE:
        jaxpr, out_shape = jax.make_jaxpr(one_dyn, return_shape=True)(dyn_all,
                                                                      jnp.asarray(0.5, dtype))
        bad = [l.shape for l in jax.tree.leaves(out_shape) if l.shape != ()]
        if bad:
            raise ValueError(f"fn must return a scalar or a pytree of scalars for one parameter "
                             f"point; got leaves of shapes {bad}")
        entry = (_peak_bytes(jaxpr.jaxpr), out_shape)
        if key is not None:
            if len(_TRACE_CACHE) >= 64:
                _TRACE_CACHE.pop(next(iter(_TRACE_CACHE)))
            _TRACE_CACHE[key] = entry
    else:
        entry = _TRACE_CACHE[key]
    if chunk_size is None:
        per_point = max(entry[0] // max(n_ddev, 1), 1)
        # 2x safety: vmap may keep broadcast copies that the single-point trace does not show
        chunk_size = max(1, budget // (2 * per_point)) * n_pdev
    chunk = _round_chunk(chunk_size, n_pdev, Pn)

    def run_chunk(tc):
        return _run_plain(fn, path, tc, data, batches, batch_size, mesh, data_axis)

    return _chunked(run_chunk, ts_np, chunk, mesh, dtype)


def _evaluate_plain(fn, path, ts_np, data, batches, batch_size, chunk_size, budget, dtype,
                    conv="auto"):
    """F(γ(t)) with the plain kernel on one device (`jaxland.engine._plain`)."""
    dyn_all, static_all = eqx.partition((fn, path, data, batches), eqx.is_array)
    leaves, treedef = jax.tree.flatten(dyn_all)

    def point(*args):
        *lv, t = args
        f, p, d, b = eqx.combine(jax.tree.unflatten(treedef, lv), static_all)
        return _plain_point(f, p, t, d, b, batch_size, None)

    key = _trace_key(dyn_all, static_all, batch_size, dtype)
    pl = _plain.plan(point, leaves, jnp.asarray(0.5, dtype), identity_key=key,
                     chunk_size=chunk_size, budget=budget, on_cpu=_on_cpu(None),
                     num_points=ts_np.shape[0], conv=conv)
    return jax.tree.map(jnp.asarray, _plain.plain_values(pl, leaves, ts_np, dtype))
