"""Batched evaluation of a function F along a path: F(γ(t_1)), …, F(γ(t_P)) at once.

`evaluate_path(fn, path, ts)` evaluates many path points with `jax.vmap` inside `jax.jit`, in chunks of
points sized to a memory budget, optionally splitting the data into batches (the mean accumulated
exactly as a sum of per-sample losses divided by N once), and sharded over all local devices.

**Structured fast path.** When `fn` is a data objective built by `objective_fn` and the path's pieces are
combinations γ(s) = Σ_k c_k(s) B_k of a few `SkipNet` / `NoSkipNet` / `TwoLayer` networks (segments,
polychains, Bézier curves, their concatenations and reversals), the objective is evaluated as

- first layer: W1(s) x = Σ_k c_k(s) (W1_k x): the K products W1_k x (N × m each) are computed once per
  piece, so the n × m first-layer product is not recomputed per point;
- output layer: W2 [h + V1 g] = W2 h + (W2 V1) g, multiplying the small W2 V1 (d_y × d_o) first, so the
  N × m × d_o product with V1 is never formed (for d_y = 1, W2 h is a matrix–vector product); g's
  linear first and last layers are folded the same way (θ_1 V2 and W2 V1 θ_k, see `_fold_layers`);
- straight pieces on CPU (`sweep`): the breakpoint sweep of `jaxland._sweep`, which updates the
  product with the hidden layer only where a ReLU switches between consecutive points.

Values equal the plain evaluation to rounding; `structured=False` switches it off. Anything else (a user
function, a `from_function` path, another model) is evaluated plainly.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, PyTree

from ._losses import LossFn, get_loss
from ._models import NoSkipNet, SkipNet, TwoLayer, relu, relu_net
from ._objective import check_data, check_kappa
from ._paths import AbstractPath, _combine
from ._regularizer import regularizer
from ._sweep import sweep_batch_rows, sweep_values, use_sweep

__all__ = ["Objective", "objective_fn", "evaluate_path", "check_ts", "default_memory_budget"]


# --------------------------------------------------------------------------------------------------
# The data objective
# --------------------------------------------------------------------------------------------------


class Objective(eqx.Module):
    """F(ξ) = (1/N) Σ_s L(f_ξ(x_s), y_s) + κ R(ξ) (eqs. 6–7, 16) as a function of the network ξ alone.

    Build with `objective_fn(x, y, kappa=…, loss=…)`. Calling it on a network gives the same value as
    `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`. `evaluate_path` recognises it: it splits the
    data into batches by summing per-sample losses (`loss_sum`) and dividing by N once, and uses the
    structured fast path for SkipNet / NoSkipNet / TwoLayer paths.

    **Fields:** `x` (N, n), `y` (N, d_y) or (N,), `kappa` (scalar array), `loss` (name or callable,
    static).
    """

    x: Array
    y: Array
    kappa: Array
    loss: str | LossFn = eqx.field(static=True, default="mse")

    @property
    def num_samples(self) -> int:
        return self.x.shape[0]

    def loss_sum(self, net, x: Array, y: Array, weights: Array | None = None) -> Array:
        """Σ_s w_s L(f(x_s), y_s) over a batch (weights 0 mark padding rows)."""
        per = get_loss(self.loss)(net(x), y)
        return jnp.sum(per if weights is None else per * weights)

    def penalty(self, net) -> Array:
        """κ R(ξ), the regulariser term (`jaxland.regularizer`)."""
        return self.kappa * regularizer(net)

    def __call__(self, net) -> Array:
        return self.loss_sum(net, self.x, self.y) / self.num_samples + self.penalty(net)


def objective_fn(x: Array, y: Array, *, kappa=0.0, loss: str | LossFn = "mse") -> Objective:
    """The objective F(ξ) = mean L + κ R(ξ) on fixed data, as a function of the network (for paths).

    **Arguments:**
    - `x`: inputs (N, n); `y`: targets (N, d_y) (see `jaxland.check_data`).
    - `kappa`: κ ≥ 0; `loss`: "mse", "logistic", "softmax_cross_entropy" or a callable
      (pred, y) -> (N,) per-sample losses.

    **Returns:** an `Objective`; `obj(net)` equals `jaxland.objective(net, x, y, kappa=kappa, loss=loss)`.
    Data shapes are checked against the network when the objective is first evaluated on a path.
    """
    check_kappa(kappa)
    get_loss(loss)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (N, n); got {x.shape}")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have {x.shape[0]} rows like x; got shape {y.shape}")
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.result_type(float)
    return Objective(x, y, jnp.asarray(kappa, dtype), loss)


# --------------------------------------------------------------------------------------------------
# Validation and sizing
# --------------------------------------------------------------------------------------------------


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


# --- structured kernel: W1(s) x = Σ_k c_k(s) (W1_k x) and W2[h + V1 g] = W2 h + (W2 V1) g ---

_STRUCTURED_MODELS = (SkipNet, NoSkipNet, TwoLayer)


def _structured_ok(fn, path) -> bool:
    if not isinstance(fn, Objective):
        return False
    for piece in path.pieces():
        c = piece.combination()
        if c is None or type(c[0]) not in _STRUCTURED_MODELS:
            return False
    return True


def _first_layer(basis, batches: _Batches) -> Array:
    """W1_k x for every batch and basis network k: shape (nb, K, B, m) (the layout the scan over
    batches reads, so no per-call transpose)."""
    return jnp.einsum("bsn,kmn->bksm", batches.x, basis.W1)


def _fold_layers(nets, is_two: bool, skip: bool) -> dict:
    """The layers after σ(W1 x) of stacked networks (leading axis c), with the small products taken
    first so that the N-sized products are as narrow as possible:

    - g's first layer is linear in V2 h: θ_1 (V2 h) = (θ_1 V2) h, so when h_1 ≤ d_g the product
      θ_1 V2 (h_1 × m) replaces V2 and the N × d_g × h_1 product disappears;
    - g's last layer is linear too: W2 V1 θ_k σ(…) = (W2 V1 θ_k) σ(…), a d_y-row map instead of the
      N × h_{k−1} × d_o product followed by the N × d_o × d_y one;
    - with a single layer (k = 1) the whole branch is the d_y × m matrix W2 V1 θ_1 V2 (plus W2 for
      the skip term).

    Returns a dict of stacked arrays (all with leading axis c): "first" (c, r, m) the rows applied to
    h (θ_1 V2, or V2 followed by "first2" = θ_1 when h_1 > d_g), "mid" θ_2 … θ_{k−1}, "last"
    (c, d_y, h_{k−1}) = W2 V1 θ_k, "skip" (c, d_y, m) W2 for a SkipNet.
    """
    if is_two:
        return {"skip": nets.W2}
    theta = nets.theta
    out_map = jnp.einsum("cym,cmo->cyo", nets.W2, nets.V1)  # (c, d_y, d_o): W2 V1 first
    out = {}
    if skip:
        out["skip"] = nets.W2
    if len(theta) == 1:
        branch = jnp.einsum("cyo,cog,cgm->cym", out_map, theta[0], nets.V2)
        out["skip"] = out["skip"] + branch if skip else branch
        return out
    d_g, h_1 = nets.V2.shape[1], theta[0].shape[1]
    out["mid"] = tuple(theta[1:-1])
    if h_1 <= d_g:
        out["first"] = jnp.einsum("chg,cgm->chm", theta[0], nets.V2)
    else:
        out["first"] = nets.V2
        out["first2"] = theta[0]
    out["last"] = jnp.einsum("cyo,coh->cyh", out_map, theta[-1])
    return out


def _head(h: Array, f: dict, is_two: bool, skip: bool) -> Array:
    """The prediction (B, d_y) from the hidden layer h (B, m) of one point, with `_fold_layers`."""
    if "first" not in f:  # TwoLayer, or g with a single layer
        return h @ f["skip"].T
    z = h @ f["first"].T  # θ_1 V2 h when folded
    if "first2" in f:  # not folded: z = V2 h, then θ_1
        z = z @ f["first2"].T
    for t in f["mid"]:
        z = relu(z) @ t.T
    pred = relu(z) @ f["last"].T
    return pred + h @ f["skip"].T if skip else pred


def _structured_chunk(obj: Objective, basis, coef_fn, s, batches: _Batches, ax, data_axis):
    """F at the points s (c,) of one piece γ(s) = Σ_k c_k(s) B_k, from the precomputed ax = W1_k x."""
    coefs = jax.vmap(coef_fn)(s)  # (c, K)
    nets = jax.vmap(lambda c: _combine(c, basis))(coefs)  # stacked networks, leading axis c
    K = coefs.shape[1]
    lossfn = get_loss(obj.loss)
    is_two = isinstance(basis, TwoLayer)
    skip = isinstance(basis, SkipNet)
    folded = _fold_layers(nets, is_two, skip)

    def head(h, f):
        """Prediction (B, d_y) from the hidden layer h (B, m) of one point and its folded layers."""
        return _head(h, f, is_two, skip)

    def body(acc, b):
        axb, xb, yb, wb = b  # axb (K, B, m)
        cf = coefs.astype(axb.dtype)
        pre = cf[:, 0, None, None] * axb[0]
        for k in range(1, K):
            pre = pre + cf[:, k, None, None] * axb[k]
        h = relu(pre)  # (c, B, m)
        pred = jax.vmap(head)(h, folded)  # (c, B, d_y)
        per = jax.vmap(lossfn, in_axes=(0, None))(pred, yb)  # (c, B)
        return acc + jnp.sum(per * wb, axis=1), None

    zero = jnp.zeros(s.shape, jnp.result_type(ax.dtype, *jax.tree.leaves(basis)))
    total, _ = jax.lax.scan(body, zero, (ax, batches.x, batches.y, batches.w))
    if data_axis is not None:
        total = jax.lax.psum(total, data_axis)
    return total / obj.num_samples + jax.vmap(obj.penalty)(nets)


# --------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------


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


@eqx.filter_jit
def _locate(path, ts):
    return jax.vmap(path.locate)(ts)


@eqx.filter_jit
def _precompute_first_layer(basis, batches):
    return _first_layer(basis, batches)


@functools.partial(eqx.filter_jit, donate="none")
def _run_structured(obj, basis, coef_fn, s, batches, ax, mesh, data_axis):
    if mesh is None:
        return _structured_chunk(obj, basis, coef_fn, s, batches, ax, data_axis)
    dyn, static = eqx.partition((obj, basis), eqx.is_array)

    def sharded(dyn, s, batches, ax):
        obj_, basis_ = eqx.combine(dyn, static)
        return _structured_chunk(obj_, basis_, coef_fn, s, batches, ax, data_axis)

    bspec = P(None, data_axis) if data_axis is not None else P()
    axspec = P(None, None, data_axis) if data_axis is not None else P()
    return jax.shard_map(
        sharded, mesh=mesh, in_specs=(P(), P("points"), bspec, axspec), out_specs=P("points"),
        check_vma=False,
    )(dyn, s, batches, ax)


def _param_dtype(path) -> Any:
    leaves = [l for l in jax.tree.leaves(eqx.filter(path, eqx.is_inexact_array))]
    if not leaves:
        try:
            leaves = jax.tree.leaves(jax.eval_shape(path, jnp.asarray(0.0)))
        except Exception:
            leaves = []
    dts = [jnp.result_type(l) for l in leaves if jnp.issubdtype(jnp.result_type(l), jnp.floating)]
    return jnp.result_type(*dts) if dts else jnp.result_type(float)


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


def _bucket(k: int) -> int:
    """The smallest number of the form 2^e or 3·2^e (e ≥ 0) that is ≥ k: chunk shapes come from a
    short list (at most a third wasted on padding), so repeated calls with varying P (refinement
    rounds, slices) reuse compiled kernels instead of compiling one per P."""
    k = max(int(k), 1)
    e = max(k - 1, 1).bit_length() - 1
    for c in sorted({2**e, 3 * 2 ** (e - 1) if e else 1, 2 ** (e + 1)}):
        if c >= k:
            return c
    return 2 ** (e + 1)  # pragma: no cover


_TRACE_CACHE: dict = {}


def _trace_key(dyn, static, batch_size, dtype):
    """A hashable key for one point's trace (shapes and static parts), or None if unhashable."""
    try:
        key = (
            jax.tree.structure(dyn),
            tuple((l.shape, str(l.dtype)) for l in jax.tree.leaves(dyn)),
            jax.tree.structure(static),
            tuple(jax.tree.leaves(static)),
            batch_size,
            str(np.dtype(dtype)),
        )
        hash(key)
    except TypeError:
        return None
    return key


def _round_chunk(chunk: int, n_points_dev: int, P_total: int) -> int:
    """Points per chunk: at most `chunk` (the memory cap), else all P points rounded up to a bucket;
    always a multiple of the number of point devices."""
    cap = max(1, int(chunk) // n_points_dev)
    need = int(math.ceil(P_total / n_points_dev))
    per_dev = cap if need > cap else min(cap, _bucket(need))
    return per_dev * n_points_dev


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
) -> PyTree:
    """F(γ(t)) at every t in `ts`, batched: vmap over points inside jit, chunked, sharded.

    **Arguments:**
    - `fn`: the function to evaluate. One of
      * an `Objective` from `objective_fn(x, y, kappa=…, loss=…)` (the data objective F of eq. 7;
        fastest: exact data batching and the structured fast path);
      * a callable `fn(params) -> scalar or pytree of scalars` (loss, accuracy, regulariser, …);
      * with `data`: a callable `fn(params, batch) -> …` that is a *mean* over the batch; with
        `batch_size` the data are split into batches and the result is Σ_b (n_b/N) fn(params, batch_b),
        exact for a mean.
    - `path`: an `AbstractPath` (see `jaxland.paths`).
    - `ts`: shape (P,), values in [0, 1] (rank, finiteness and range are checked: ``ValueError``).
    - `data`: pytree of arrays with a common leading axis N, passed to `fn` (not with an `Objective`).
    - `batch_size`: rows per data batch (default: all N at once).
    - `chunk_size`: points per vmapped chunk (default: as many as fit in `memory_budget`). Results do
      not depend on it beyond floating-point rounding. When all P points fit in one chunk, the chunk
      is P rounded up to the next 2^e or 3·2^e (padding by repeating the last t), so that calls with
      varying P (refinement rounds, slices) reuse a few compiled kernels.
    - `memory_budget`: bytes one chunk may use per device (default `default_memory_budget()`); the
      per-point need is estimated from the traced computation (liveness over its jaxpr) or, on the
      structured path, from the layer sizes.
    - `structured`: use the structured fast path when it applies (see the module docstring).
    - `sweep`: on straight pieces (segments, polychain pieces) of a structured path, evaluate by
      sweeping the ReLU breakpoints (`jaxland._sweep`: exact to rounding, cost independent of the
      number of points up to O(N) per point). None (default): on CPU, without a mesh, for pieces
      with ≥ 24 points when N·m ≥ 2^16 (`jaxland._sweep.use_sweep`); True: on every straight piece
      (no mesh); False: never.
    - `mesh`: a `jax.sharding.Mesh` with an axis "points" (and optionally "data", over which the
      `Objective`'s samples are split and the loss sums `psum`-med). Default: all devices on "points"
      (global devices in a multi-host run after `jax.distributed.initialize()`, same call).
    - `devices`: alternatively, the devices to shard the points over.

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
    if memory_budget is not None and not memory_budget > 0:
        raise ValueError(f"memory_budget must be a positive number of bytes; got {memory_budget}")
    if isinstance(fn, Objective) and data is not None:
        raise ValueError("data must be None when fn is an Objective (it carries its own x, y)")
    if data is not None:
        sizes = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in jax.tree.leaves(data)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"data must be a pytree of arrays with one common leading axis N; got "
                             f"leading sizes {sorted(str(s) for s in sizes)}")
        data = jax.tree.map(jnp.asarray, data)

    mesh = _make_mesh(mesh, devices)
    n_pdev = 1 if mesh is None else mesh.shape["points"]
    data_axis = "data" if mesh is not None and "data" in mesh.axis_names else None
    n_ddev = 1 if data_axis is None else mesh.shape["data"]
    budget = default_memory_budget() if memory_budget is None else int(memory_budget)
    dtype = _param_dtype(path)
    Pn = ts_np.shape[0]

    batches = None
    if isinstance(fn, Objective):
        # shapes only: γ(0) is not computed (a long Concat would otherwise run eagerly op by op)
        start = eqx.filter_eval_shape(path, jnp.asarray(0.0, dtype))
        check_data(start, fn.x, fn.y, fn.loss)
        bs = batch_size
        if data_axis is not None:
            # every data device gets the same number of rows in every batch
            bs = fn.num_samples if bs is None else bs
            bs = int(math.ceil(min(bs, fn.num_samples) / n_ddev) * n_ddev)
        batches, _ = _make_batches(fn.x, fn.y, bs, multiple=n_ddev)
        if mesh is not None:
            spec = P(None, data_axis) if data_axis is not None else P()
            batches = jax.tree.map(lambda a: _global(a, mesh, spec), batches)

    if (structured and isinstance(fn, Objective) and mesh is None and batch_size is None
            and callable(getattr(path, "objective_values", None))):
        # A path that knows its own segment structure (the Theorem 11 path of `connect`: under vmap
        # its segment switch would evaluate every segment at every point) evaluates F itself.
        return jnp.asarray(path.objective_values(fn.x, fn.y, ts_np, kappa=fn.kappa, loss=fn.loss))

    if structured and _structured_ok(fn, path):
        return _evaluate_structured(fn, path, ts_np, batches, chunk_size, budget, mesh, data_axis,
                                    n_pdev, n_ddev, dtype, sweep)

    # plain evaluation: check what fn returns, and the per-point memory from a liveness walk over
    # one point's jaxpr
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


def _evaluate_structured(obj, path, ts_np, batches, chunk_size, budget, mesh, data_axis, n_pdev,
                         n_ddev, dtype, sweep=None):
    pieces = path.pieces()
    j, s = _locate(path, jnp.asarray(ts_np, dtype))
    j, s = np.asarray(j), np.asarray(s)
    Pn = ts_np.shape[0]
    out = None
    B = batches.x.shape[1]
    work = []  # (indices, basis, coefficients, points per chunk allowed by the budget) per piece
    for pj in np.unique(j):
        idx = np.nonzero(j == pj)[0]
        basis, coef_fn = pieces[int(pj)].combination()
        m = basis.W1.shape[-2]
        if chunk_size is None:
            itemsize = np.dtype(dtype).itemsize
            # per point: pre-activation and hidden layer (B/n_ddev × m, twice), per-point copies of
            # the basis combination (all parameters), and the small branch activations
            nparam = sum(int(np.prod(l.shape[1:])) for l in jax.tree.leaves(basis))
            # widest layer of the branch g (V2 rows, θ rows); 0 for a TwoLayer
            branch = max([l.shape[1] for l in jax.tree.leaves(getattr(basis, "theta", ()))]
                         + [getattr(basis, "V2", basis.W2).shape[1]])
            per_point = itemsize * (3 * (B // n_ddev) * m + 2 * nparam
                                    + 4 * (B // n_ddev) * branch)
            csz = max(1, budget // per_point) * n_pdev
            if _on_cpu(mesh):
                # XLA:CPU does not fuse the elementwise first layer into the matmuls, so a chunk is
                # bandwidth-bound once its working set leaves the caches: on the reference problem of
                # benchmarks/bench_paths.py one point per chunk ran at 67 points/s against 56–58 with
                # the memory-budget chunk. Cap the working set of a chunk on CPU.
                csz = min(csz, max(1, _CPU_CHUNK_BYTES // per_point) * n_pdev)
        else:
            csz = chunk_size
        work.append((idx, basis, coef_fn, csz))
    # One chunk shape for all pieces (one compiled kernel per basis size) unless padding the small
    # pieces to it would more than double the work; then each piece gets its own bucketed size.
    counts = [w[0].shape[0] for w in work]
    common = _round_chunk(min(w[3] for w in work), n_pdev, max(counts))
    padded_work = sum(int(math.ceil(c / common)) * common for c in counts)
    use_common = padded_work <= 2 * Pn

    sweep_batches = {}  # rows per batch -> the data re-batched for the sweep
    for idx, basis, coef_fn, csz in work:
        if mesh is None and use_sweep(sweep, coef_fn, idx.shape[0],
                                      obj.num_samples * basis.W1.shape[-2], _on_cpu(None)):
            rows = sweep_batch_rows(basis.W1.shape[-2], batches.x.shape[1])
            if rows not in sweep_batches:  # the pieces of one path share it
                sweep_batches[rows] = _make_batches(obj.x, obj.y, rows)[0]
            vals = sweep_values(obj, basis, coef_fn, s[idx], sweep_batches[rows])
            if out is None:
                out = np.zeros((Pn,), vals.dtype)
            out[idx] = vals
            continue
        ax = _precompute_first_layer(basis, batches)
        if mesh is not None:
            axspec = P(None, None, data_axis) if data_axis is not None else P()
            ax = jax.device_put(ax, NamedSharding(mesh, axspec))
        chunk = common if use_common else _round_chunk(csz, n_pdev, idx.shape[0])

        def run_chunk(sc, basis=basis, coef_fn=coef_fn, ax=ax):
            return _run_structured(obj, basis, coef_fn, sc, batches, ax, mesh, data_axis)

        vals = _chunked(run_chunk, s[idx], chunk, mesh, dtype)
        if out is None:
            out = np.zeros((Pn,), np.asarray(vals).dtype)
        out[idx] = np.asarray(vals)
    return jnp.asarray(out)
