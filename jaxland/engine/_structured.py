"""The structured kernel of the path engine for `SkipNet`, `NoSkipNet` and `TwoLayer` paths.

When the path's pieces are combinations γ(s) = Σ_k c_k(s) B_k of a few networks (segments, polychains,
Bézier curves, their concatenations and reversals) and the function is a data `Objective`:

- first layer: W1(s) x = Σ_k c_k(s) (W1_k x): the K products W1_k x (N × m each) are computed once per
  piece, so the n × m first-layer product is not recomputed per point — on CPU only when that pays
  (`_first_layer_plan`: for small n the product per point is cheaper than streaming the K
  precomputed arrays, and a small P does not repay their fresh buffer);
- output layer: W2 [h + V1 g] = W2 h + (W2 V1) g, multiplying the small W2 V1 (d_y × d_o) first, so the
  N × m × d_o product with V1 is never formed (for d_y = 1, W2 h is a matrix–vector product); g's
  linear first and last layers are folded the same way (θ_1 V2 and W2 V1 θ_k, see `_fold_layers`);
- the point kernel runs as ONE executable per piece: a `fori_loop` over groups of points with a
  traced trip count (`_run_structured_loop`), so its buffers are allocated once per call rather than
  once per chunk (on CPU a group is one point once its working set passes 64 MiB: the reference
  problem of benchmarks/bench_paths.py ran 1.3–2× faster than with one jitted call per chunk);
- straight pieces on CPU (`sweep`): the breakpoint sweep of `jaxland.engine._sweep`, which updates
  the product with the hidden layer only where a ReLU switches between consecutive points, chosen
  when the piece has P ≥ s·(16 + 380·f) points (`use_sweep`; f the fraction of switching ReLUs, s
  the point kernel's relative cost from `_first_layer_plan`).

Values equal the plain evaluation to rounding.
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from jaxtyping import Array

from .._params import tree_combination
from ..model._losses import get_loss
from ..model._models import NoSkipNet, SkipNet, TwoLayer, relu
from ..model._objective import Objective
from ..paths._paths import AbstractPath
from ._chunks import (
    _CPU_CHUNK_BYTES,
    _Batches,
    _chunked,
    _looped,
    _make_batches,
    _on_cpu,
    _round_chunk,
)
from ._sweep import (
    sweep_batch_rows,
    sweep_endpoints,
    sweep_values,
    switch_fraction,
    use_sweep,
)

_STRUCTURED_MODELS = (SkipNet, NoSkipNet, TwoLayer)


def _structured_ok(fn, path, combos=None) -> bool:
    """Whether the structured kernels apply: `fn` an `Objective`, every piece of `path` a
    combination of `_STRUCTURED_MODELS` (`combos`: the pieces' `combination()`s when already
    computed)."""
    if not isinstance(fn, Objective):
        return False
    if combos is None:
        combos = [piece.combination() for piece in path.pieces()]
    for c in combos:
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
    nets = jax.vmap(lambda c: tree_combination(c, basis))(coefs)  # stacked networks, leading axis c
    K = coefs.shape[1]
    lossfn = get_loss(obj.loss)
    is_two = isinstance(basis, TwoLayer)
    skip = isinstance(basis, SkipNet)
    folded = _fold_layers(nets, is_two, skip)

    def head(h, f):
        """Prediction (B, d_y) from the hidden layer h (B, m) of one point and its folded layers."""
        return _head(h, f, is_two, skip)

    def body(acc, b):
        axb, xb, yb, wb = b  # axb (K, B, m), or None: the first layer computed per point
        if axb is None:
            pre = jax.vmap(lambda W: xb.astype(W.dtype) @ W.T)(nets.W1)
        else:
            cf = coefs.astype(axb.dtype)
            pre = cf[:, 0, None, None] * axb[0]
            for k in range(1, K):
                pre = pre + cf[:, k, None, None] * axb[k]
        h = relu(pre)  # (c, B, m)
        pred = jax.vmap(head)(h, folded)  # (c, B, d_y)
        per = jax.vmap(lossfn, in_axes=(0, None))(pred, yb)  # (c, B)
        return acc + jnp.sum(per * wb, axis=1), None

    dt = jnp.result_type(*jax.tree.leaves(basis)) if ax is None else jnp.result_type(
        ax.dtype, *jax.tree.leaves(basis))
    zero = jnp.zeros(s.shape, dt)
    total, _ = jax.lax.scan(body, zero, (ax, batches.x, batches.y, batches.w))
    if data_axis is not None:
        total = jax.lax.psum(total, data_axis)
    return total / obj.num_samples + jax.vmap(obj.penalty)(nets)
@eqx.filter_jit
def _locate(path, ts):
    return jax.vmap(path.locate)(ts)


#: The first layer of the point kernel on CPU (cost model, in flop-equivalents per (sample, unit)
#: entry of the N × m pre-activation): computed per point as W1(s) x ("direct": 2n per point), or
#: combined from the K precomputed products as Σ_k c_k(s) (W1_k x) (streaming K + 1 arrays of N·m
#: floats per point: _STREAM·(K + 1)) at a one-off K·(2n + _PRECOMPUTE_FIXED): the products and the
#: page faults of their fresh K·N·m buffer. The rest of a point costs ≈ 2r (r rows read the hidden
#: layer). Fitted on the bench_paths problems (N = 4096, m = 1024, K = 2, interleaved timings):
#: the per-point costs are equal at n ≈ 43; precomputing pays from P = 4 points at n = 784 and
#: from P ≈ 64 at n = 64; at n = 16 never (P = 16: 38 against 73 ms; P = 256: 516 against 631 ms).
_STREAM = 28.7
_PRECOMPUTE_FIXED = 1350.0


def _first_layer_plan(basis, P: int, on_cpu: bool) -> tuple[bool, float]:
    """(precompute W1_k x?, the point kernel's cost per point and entry relative to the precomputed
    kernel's, which the sweep's dispatch constants were fitted against)."""
    K, _, n = basis.W1.shape
    r = _rows_of(basis)
    stream = _STREAM * (K + 1)
    gain = 2 * n - stream  # per point and entry, of precomputing
    pre = (not on_cpu) or (gain > 0 and P * gain >= K * (2 * n + _PRECOMPUTE_FIXED))
    per_point = 2 * r + (stream if pre else 2 * n)
    # (the model is fitted for r ≈ 65; for narrow heads other per-point work dominates: clamp)
    return pre, min(max(per_point / (2 * r + stream), 0.5), 2.0)


def _rows_of(basis) -> int:
    """r: the rows that read the hidden layer (V2 and W2 for a SkipNet, V2 for a NoSkipNet, W2 for a
    TwoLayer), after the folding of `_fold_layers`."""
    d_y = basis.W2.shape[-2]
    if isinstance(basis, TwoLayer):
        return d_y
    return basis.V2.shape[-2] + (d_y if isinstance(basis, SkipNet) else 0)


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

@functools.partial(eqx.filter_jit, donate="none")
def _run_structured_loop(obj, basis, coef_fn, s, n_groups, batches, ax, group: int):
    """F at the first n_groups·group points of s (cap,) of one piece, in ONE executable: a
    `fori_loop` over groups of `group` points with a traced trip count (the buffers are allocated
    once per call, not once per chunk; see `jaxland.engine._plain`)."""
    cap = s.shape[0]
    shape = jax.eval_shape(lambda: _structured_chunk(obj, basis, coef_fn, s[:group], batches, ax,
                                                     None))

    def body(i, out):
        sg = jax.lax.dynamic_slice_in_dim(s, i * group, group)
        v = _structured_chunk(obj, basis, coef_fn, sg, batches, ax, None)
        return jax.lax.dynamic_update_slice_in_dim(out, v, i * group, 0)

    return jax.lax.fori_loop(0, n_groups, body, jnp.zeros((cap,), shape.dtype))


def _evaluate_structured(obj, path, ts_np, batches, chunk_size, budget, mesh, data_axis, n_pdev,
                         n_ddev, dtype, sweep=None, *, combos=None, path_facts=None, obj_facts=None):
    """F at the points ts_np of a structured path (module docstring). `combos`: the pieces'
    `combination()`s when already computed; `path_facts` / `obj_facts`: dicts in which facts that
    depend only on the path (the sweep's endpoints) / the objective (its re-batched data) are kept
    between calls (`_evaluate._facts`; fresh dicts when None)."""
    path_facts = {} if path_facts is None else path_facts
    obj_facts = {} if obj_facts is None else obj_facts
    if combos is None:
        combos = [piece.combination() for piece in path.pieces()]
    if type(path).locate is AbstractPath.locate:  # one piece, s = t: no kernel call
        s = np.asarray(jnp.asarray(ts_np, dtype))
        j = np.zeros(s.shape, np.int32)
    else:
        j, s = _locate(path, jnp.asarray(ts_np, dtype))
        j, s = np.asarray(j), np.asarray(s)
    Pn = ts_np.shape[0]
    out = None
    B = batches.x.shape[1]
    work = []  # (piece, indices, basis, coefficients, points per chunk allowed by the budget) per piece
    for pj in np.unique(j):
        idx = np.nonzero(j == pj)[0]
        basis, coef_fn = combos[int(pj)]
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
        work.append((int(pj), idx, basis, coef_fn, csz))
    # One chunk shape for all pieces (one compiled kernel per basis size) unless padding the small
    # pieces to it would more than double the work; then each piece gets its own bucketed size.
    counts = [w[1].shape[0] for w in work]
    common = _round_chunk(min(w[4] for w in work), n_pdev, max(counts))
    padded_work = sum(int(math.ceil(c / common)) * common for c in counts)
    use_common = padded_work <= 2 * Pn

    for pj, idx, basis, coef_fn, csz in work:
        s_piece = s[idx]

        def fraction(basis=basis, coef_fn=coef_fn, s_piece=s_piece):
            return switch_fraction(basis, coef_fn, obj.x, float(s_piece.min()), float(s_piece.max()))

        precompute, rel_cost = _first_layer_plan(basis, idx.shape[0], _on_cpu(mesh))
        if mesh is None and use_sweep(sweep, coef_fn, idx.shape[0],
                                      obj.num_samples * basis.W1.shape[-2], _on_cpu(None),
                                      fraction, 1.0 / rel_cost):
            rows = sweep_batch_rows(basis.W1.shape[-2], batches.x.shape[1])
            key = ("sweep batches", rows)
            if key not in obj_facts:  # the data re-batched for the sweep (pieces and calls share it)
                obj_facts[key] = _make_batches(obj.x, obj.y, rows)[0]
            key = ("sweep endpoints", pj)
            if key not in path_facts:
                path_facts[key] = sweep_endpoints(basis, coef_fn)
            vals = sweep_values(obj, basis, coef_fn, s[idx], obj_facts[("sweep batches", rows)],
                                path_facts[key])
            if out is None:
                out = np.zeros((Pn,), vals.dtype)
            out[idx] = vals
            continue
        ax = (_precompute_first_layer(basis, batches) if mesh is not None or precompute
              else None)
        if mesh is not None and ax is not None:
            axspec = P(None, None, data_axis) if data_axis is not None else P()
            ax = jax.device_put(ax, NamedSharding(mesh, axspec))
        chunk = common if use_common else _round_chunk(csz, n_pdev, idx.shape[0])
        if mesh is None:

            def run_loop(sc, n_groups, basis=basis, coef_fn=coef_fn, ax=ax, chunk=chunk):
                return _run_structured_loop(obj, basis, coef_fn, sc, n_groups, batches, ax, chunk)

            (vals,) = _looped(run_loop, s[idx], chunk, dtype)
        else:

            def run_chunk(sc, basis=basis, coef_fn=coef_fn, ax=ax):
                return _run_structured(obj, basis, coef_fn, sc, batches, ax, mesh, data_axis)

            vals = _chunked(run_chunk, s[idx], chunk, mesh, dtype)
        if out is None:
            out = np.zeros((Pn,), np.asarray(vals).dtype)
        out[idx] = np.asarray(vals)
    return jnp.asarray(out)
