"""The plain kernel of the path engine: F(γ(t)) for any function F and any path γ, one executable per
call, a loop over the points inside it.

`evaluate_path` uses it for everything the structured kernels do not cover (a user's own function,
a `from_function` path, any model: an `eqx.nn.MLP`, a CNN, a dict …) when the points are not sharded
over several devices.

**Why a loop inside one executable.** XLA:CPU allocates an executable's temporaries afresh on every
execution; blocks above 32 MiB come from a fresh `mmap` and every 4 KiB page faults on first touch
(≈ 0.45 ms per MiB on the project's machine). A vmapped chunk of c points holds c times one point's
temporaries, so calling a jitted chunk per c points paid the faults again and again: 11 000 faults
and ≈ 20 ms of system time per point for the reference SkipNet, 2.6× slower than a plain `lax.map`.
Here the points are visited by a `fori_loop` inside one executable whose trip count is a traced
integer: its buffers are allocated once per call (for one group of points), one compiled kernel
serves every number of points up to `LOOP_CAPACITY` (4096; more points run in several calls of the
same kernel), and no padded point is computed.

**The kernel choice rule** (`choose_group`), from one point's jaxpr (`point_cost`: the FLOPs of its
`dot_general`s and convolutions, and the peak bytes of the values it creates, from a liveness walk):

- *convolutions on CPU* (`conv="auto"`, issue 20 §3): computed as im2col GEMMs
  (`jaxland.engine._im2col`) inside the `fori_loop` ("device" mode). With `conv="native"` XLA's own
  convolution is kept, and then the mode is "host", a Python loop over one jitted group: XLA:CPU
  keeps a convolution inside a loop body in the NCHW layout and runs it ≈ 5.7× slower than the NHWC
  (Eigen) convolution its layout pass picks outside loops (measured on an equinox CNN: 152 against
  26.6 CPU ms per point); the host loop's dispatch (≈ 0.1–0.3 ms per call) is small next to a
  convolution network's point. Measured on benchmarks/bench_paths.py's CNN (Conv2d 1→16 5×5 s2,
  16→32 3×3 s2, N = 2048, 64 points, 3 fresh processes per side, load 1.1–2.7): the GEMM form 34
  points/s (median), XLA's convolution in the host loop 28 (1.21×; interleaved in one process
  31.8 against 26.7). Each convolution alone is slower as a GEMM (35 / 30 ms against 17 / 19 ms
  for the two layers: the patches are 25× / 9× the input), but in the loop the whole point is
  faster. `conv="gemm"` with groups of k > 1 points was slower (k = 4: 18 points/s).
- *group size k* (points evaluated together under `jax.vmap` in one loop step): on a CPU k = 1
  unless one point costs less than `FLOP_TARGET` (2 MFLOP; a quarter of it with convolutions);
  then the largest power of two k ≤ `MAX_GROUP` with k·FLOPs ≤ 4·FLOP_TARGET and
  k·peak ≤ `GROUP_BYTES` (4 MiB): the group amortises the loop's per-step overhead (≈ 10–15 µs)
  while its working set stays in cache. Measured: SkipNet (1.3 GFLOP per point) and an MLP
  784-256-256-10 on 2048 samples (1.1 GFLOP): k = 1 fastest, k = 4/16/64 1.1/1.3/1.6× slower; a
  tiny MLP (0.09 MFLOP): k = 16–64 twice as fast as k = 1. On an accelerator k is the number of
  points that fit in half the memory budget (throughput needs wide batches there).
  `memory_budget` bounds every group: k·peak ≤ budget. `chunk_size` sets k directly.

**No recompilation for a fresh lambda.** F is traced once with `jax.make_jaxpr`; the arrays it
closes over (the user's x, y) become the jaxpr's constants and are passed to the kernel as
arguments, not baked into the program; the compiled kernels are cached by the jaxpr's text and
input types (plus the identity of any opaque Python object a primitive carries, e.g. a callback). So
``evaluate_path(lambda net: loss(net, x, y), path, ts)`` called again with a new lambda that computes
the same thing reuses the compiled kernel; only the trace is repeated (milliseconds). A second,
identity-keyed cache (the same function, or a fresh lambda with the same code, closure and globals:
`_evaluate._fn_fingerprint`; the same path structure and shapes) skips even the trace:
like `jax.jit`, it assumes that a function object keeps computing the same thing.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._batching import bucket
from . import _im2col
from ._chunks import _looped, _peak_bytes, _sub_jaxprs

__all__: list[str] = []

#: a group of points should carry at least this much work (FLOPs): the loop's per-step overhead is
#: ≈ 10–15 µs on XLA:CPU
FLOP_TARGET = 2e6
#: and its working set should stay in the caches
GROUP_BYTES = 4 * 2**20
#: at most this many points per group on a CPU
MAX_GROUP = 64
#: bounds of the two caches (compiled kernels by computation; traces by function identity)
_MAX_KERNELS = 64
_MAX_TRACES = 32


class PointCost(NamedTuple):
    """The cost of one point, read off its jaxpr: `flops` of the dot products and convolutions,
    `peak_bytes` of the values it creates (inputs excluded), whether it has a convolution."""

    flops: float
    peak_bytes: int
    has_conv: bool


def point_cost(jaxpr) -> PointCost:
    """`PointCost` of a jaxpr: FLOPs 2·(output size)·(contracted size) per `dot_general` and
    2·(output size)·(C_in · kernel window) per `conv_general_dilated`; nested jaxprs counted once,
    scan bodies times their length; the peak from a liveness walk over the equations (a nested
    jaxpr adds its own peak while its equation runs)."""
    flops, has_conv = 0.0, False
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        mult = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in _sub_jaxprs(eqn):
            c = point_cost(sub)
            flops += mult * c.flops
            has_conv |= c.has_conv
        if name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            k = math.prod(eqn.invars[0].aval.shape[d] for d in lhs_contract)
            flops += 2.0 * math.prod(eqn.outvars[0].aval.shape) * k
        elif name == "conv_general_dilated":
            has_conv = True
            rhs = eqn.invars[1].aval.shape
            spec = eqn.params["dimension_numbers"].rhs_spec
            window = math.prod(rhs[d] for d in spec[2:])
            flops += 2.0 * math.prod(eqn.outvars[0].aval.shape) * rhs[spec[1]] * window
    peak = _peak_bytes(jaxpr)
    return PointCost(flops, peak, has_conv)


def choose_group(cost: PointCost, *, on_cpu: bool, budget: int) -> int:
    """Points per vmapped group (the rule in the module docstring)."""
    peak = max(int(cost.peak_bytes), 1)
    by_budget = max(1, int(budget) // peak)
    if not on_cpu:
        # 2x safety: vmap may keep broadcast copies that the single-point trace does not show
        return max(1, int(budget) // (2 * peak))
    target = FLOP_TARGET / 4 if cost.has_conv else FLOP_TARGET
    k = 1
    if cost.flops < target:
        while (2 * k <= MAX_GROUP and 2 * k * cost.flops <= 4 * target
               and 2 * k * peak <= GROUP_BYTES):
            k *= 2
    return min(k, by_budget)


# --------------------------------------------------------------------------------------------------
# the cache key: the computation itself


class _Opaque:
    """A Python object a primitive carries (a callback, a custom rule), compared by identity."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other):
        return isinstance(other, _Opaque) and other.obj is self.obj

    def __hash__(self):
        return id(self.obj)


# primitives whose callable parameters matter only for differentiation: the forward value is
# their `call_jaxpr`, which the jaxpr text shows
_FORWARD_BY_JAXPR = {"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"}


def _opaque_params(jaxpr, acc: list) -> list:
    for eqn in jaxpr.eqns:
        for v in eqn.params.values():
            for u in v if isinstance(v, (tuple, list)) else (v,):
                if isinstance(u, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
                    continue
                if callable(u) and eqn.primitive.name not in _FORWARD_BY_JAXPR:
                    acc.append(_Opaque(u))
        for sub in _sub_jaxprs(eqn):
            _opaque_params(sub, acc)
    return acc


def _aval_key(x) -> tuple:
    aval = jax.typeof(x) if hasattr(jax, "typeof") else jax.core.get_aval(x)
    return (tuple(aval.shape), str(aval.dtype), bool(getattr(aval, "weak_type", False)))


def computation_key(closed) -> tuple:
    """A key that is equal for two traces of the same computation (jaxpr text, the types of its
    constants, the identity of opaque objects in its equations)."""
    return (str(closed.jaxpr), tuple(_aval_key(c) for c in closed.consts),
            tuple(_opaque_params(closed.jaxpr, [])))


# --------------------------------------------------------------------------------------------------
# the kernels


class _Kernel:
    """One computation: its jaxpr (constants as leading inputs), cost and compiled runners."""

    def __init__(self, jaxpr, out_avals, cost: PointCost):
        self.jaxpr = jaxpr
        self.out_avals = out_avals
        self.cost = cost
        self.runners: dict = {}

    def _point(self, consts, leaves, t, gemm: bool = False):
        if gemm:
            return _im2col.eval_jaxpr(self.jaxpr, consts, *leaves, t)
        return jax.core.eval_jaxpr(self.jaxpr, consts, *leaves, t)

    def device_runner(self, k: int, gemm: bool = False):
        """jit(consts, leaves, ts (cap,), n_groups) -> one (cap,) array per output: a `fori_loop`
        over n_groups groups of k points (the first n_groups·k entries are filled). `gemm`: the
        convolutions as im2col GEMMs (`_im2col`)."""
        if ("device", k, gemm) not in self.runners:

            def run(consts, leaves, ts, n_groups):
                cap = ts.shape[0]
                out0 = [jnp.zeros((cap,), a.dtype) for a in self.out_avals]

                def body(i, out):
                    if k == 1:
                        vals = self._point(consts, leaves, ts[i], gemm)
                        return [o.at[i].set(v) for o, v in zip(out, vals, strict=True)]
                    tg = jax.lax.dynamic_slice_in_dim(ts, i * k, k)
                    vals = jax.vmap(lambda t: self._point(consts, leaves, t, gemm))(tg)
                    return [jax.lax.dynamic_update_slice_in_dim(o, v, i * k, 0)
                            for o, v in zip(out, vals, strict=True)]

                return jax.lax.fori_loop(0, n_groups, body, out0)

            self.runners["device", k, gemm] = jax.jit(run)
        return self.runners["device", k, gemm]

    def host_runner(self, k: int, gemm: bool = False):
        """jit(consts, leaves, tg (k,)) -> one (k,) array per output: one group, called from a
        Python loop."""
        if ("host", k, gemm) not in self.runners:

            def run(consts, leaves, tg):
                if k == 1:
                    return [v[None] for v in self._point(consts, leaves, tg[0], gemm)]
                return jax.vmap(lambda t: self._point(consts, leaves, t, gemm))(tg)

            self.runners["host", k, gemm] = jax.jit(run)
        return self.runners["host", k, gemm]


_KERNELS: OrderedDict = OrderedDict()  # computation_key -> _Kernel
_TRACES: OrderedDict = OrderedDict()  # identity key -> (computation key, consts, out tree)


def _put(cache: OrderedDict, key, value, bound: int):
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > bound:
        cache.popitem(last=False)


class PlainPlan(NamedTuple):
    """How `plain_values` evaluates a call: the kernel, the group size and the mode."""

    kernel: _Kernel
    consts: list
    out_tree: Any
    group: int
    mode: str
    gemm: bool = False


def plan(point: Callable, leaves: list, t0, *, identity_key, chunk_size: int | None, budget: int,
         on_cpu: bool, num_points: int, conv: str = "auto") -> PlainPlan:
    """Trace (or find in the caches) `point(*leaves, t)`, check that it returns scalars, and choose
    the group size and mode (module docstring).

    `identity_key`: a hashable key under which the trace may be reused (None: always trace)."""
    hit = _TRACES.get(identity_key) if identity_key is not None else None
    if hit is None:
        closed, out_shape = jax.make_jaxpr(point, return_shape=True)(*leaves, t0)
        bad = [l.shape for l in jax.tree.leaves(out_shape) if l.shape != ()]
        if bad:
            raise ValueError(f"fn must return a scalar or a pytree of scalars for one parameter "
                             f"point; got leaves of shapes {bad}")
        key = computation_key(closed)
        if key not in _KERNELS:
            out_avals = [v.aval for v in closed.jaxpr.outvars]
            _put(_KERNELS, key, _Kernel(closed.jaxpr, out_avals, point_cost(closed.jaxpr)),
                 _MAX_KERNELS)
        hit = (key, list(closed.consts), jax.tree.structure(out_shape))
        if identity_key is not None:
            _put(_TRACES, identity_key, hit, _MAX_TRACES)
    key, consts, out_tree = hit
    kernel = _KERNELS.get(key)
    if kernel is None:  # evicted since the trace was cached: trace again
        _TRACES.pop(identity_key, None)
        return plan(point, leaves, t0, identity_key=None, chunk_size=chunk_size, budget=budget,
                    on_cpu=on_cpu, num_points=num_points, conv=conv)
    if chunk_size is not None:
        k = int(chunk_size)
    else:
        k = choose_group(kernel.cost, on_cpu=on_cpu, budget=budget)
    # never more points in a group than the call has (rounded up to a bucket: few compiled kernels)
    k = max(1, min(k, bucket(num_points)))
    gemm = conv == "gemm" or (conv == "auto" and on_cpu and kernel.cost.has_conv
                              and _im2col.has_rewritable_conv(kernel.jaxpr))
    mode = "host" if (on_cpu and kernel.cost.has_conv and not gemm) else "device"
    return PlainPlan(kernel, consts, out_tree, k, mode, gemm)


def plain_values(p: PlainPlan, leaves: list, ts: np.ndarray, dtype) -> Any:
    """Evaluate the planned kernel at every t of the host array ts (P,); returns fn's output
    structure with (P,) NumPy arrays as leaves."""
    k, kern = p.group, p.kernel
    if p.mode == "host":
        Pn = ts.shape[0]
        ts = np.asarray(ts, np.dtype(dtype))
        ng = -(-Pn // k)
        padded = np.concatenate([ts, np.full(ng * k - Pn, ts[-1], ts.dtype)])
        run = kern.host_runner(k, p.gemm)
        outs = [run(p.consts, leaves, padded[i * k:(i + 1) * k]) for i in range(ng)]
        flat = [np.concatenate([np.asarray(o[j]) for o in outs])[:Pn]
                for j in range(len(kern.out_avals))]
    else:
        run = kern.device_runner(k, p.gemm)
        flat = _looped(lambda seg, g: run(p.consts, leaves, seg, g), ts, k, dtype)
    return jax.tree.unflatten(p.out_tree, flat)
