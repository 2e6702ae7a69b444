"""F at many points of a straight segment by sweeping the ReLU breakpoints (exact, CPU fast path).

On a piece of a path whose coefficients are affine in s, γ(s) = Σ_k (α_k + s β_k) B_k (a segment, a
polychain piece, a degree-1 Bézier curve, their reversals), every weight is affine in s:
W(s) = W_α + s W_β. For a sample x the pre-activation of hidden unit i is a_i(s) = A_i + s D_i with
A = W1_α x, D = W1_β x, so the unit switches state exactly once, at its breakpoint t_i = −A_i/D_i.
The rows that read the hidden layer, R(s) = R_α + s R_β (R = [V2; W2] for `SkipNet`, V2 for
`NoSkipNet`, W2 for `TwoLayer`, eq. 3–4), give

    R(s) σ(a(s)) = Σ_{i active} (A_i + s D_i)(R_α,i + s R_β,i) = C_0 + s C_1 + s² C_2,

with coefficient vectors C that change only when s crosses a breakpoint. Visiting the P points in
increasing s, C is updated by the units that switch in between (each switch adds or removes one
rank-one term) instead of recomputing the N × m × r product: the whole sweep costs the N·m/2-or-so
switches on [s_1, s_P] times r, plus O(N·r) per point, against O(P·N·m·r) for point-by-point
evaluation. The layers after R see different inputs at every point and are evaluated per point
(their weights θ(s), W2(s)V1(s) are combined per point; g's last layer is folded into W2 V1 θ_k).

State convention (the same for initial state and switches, so they never disagree): unit i with
D_i > 0 is active at s iff t_i < s, with D_i < 0 iff t_i ≥ s, with D_i = 0 iff A_i > 0. At s = t_i
the unit contributes (A_i + t_i D_i)·R = 0 up to rounding, so the values equal the plain evaluation to
rounding. The switches are grouped by point on the host (a stable counting sort by point index) and
applied in fixed-size sub-blocks on the device, so the compiled kernel has fixed shapes.

Blocks of points (issue 20): when one point's coefficients (c × 3r numbers, c samples) are small,
the scan visits blocks of Pb consecutive sorted points (`block_points`: the largest power of two
dividing the bucketed P with Pb·c·3r numbers ≤ _BLOCK_BYTES = 128 KiB; Pb = 1, the point-by-point
`_sweep_scan`, otherwise): the block's switches (contiguous in the grouped list, each with its point)
are scattered into Δ (Pb·c, 3, r) at (point − p0, sample) with the carry in the first point's rows;
C at the block's points is the cumulative sum of Δ over the points (a matmul with the lower triangle
of ones: XLA:CPU's cumsum is a quadratic reduce_window); U, the head (`_head` vmapped over the
points, or `_head_shared`'s dots with shared weights: `_HEAD`) and the loss are evaluated for the
whole block. Larger blocks ran slower on XLA:CPU (per-element cost of the (…, 3, r)-minor layout
once Δ leaves the first-level caches; Pb = 16 took 1.7–3× the time of Pb = 8). Measured (best of
10 calls after a warm-up, fresh process per configuration, 2-core CPU, `evaluate_path(..., sweep=True)`
on benchmarks/_sides_jax.py's problems; noise ±30 %): the README toy (N = 256, m = 32, float32,
Pb = 8) 8.1 / 12.8 / 27 ms at P = 256 / 1024 / 4096, was 7.1 / 17.7–21 / 35 ms; its scan kernel
alone ≈ 5.5 ms at P = 1024, was ≈ 9–13 ms; the rest is the fixed Python/dispatch cost of
evaluate_path and sweep_values (≈ 4–5 ms per call; ≈ 1.5–2 ms since the per-object caches of
`_evaluate._facts` and the skipped κ = 0 penalty: 7.0–9.6 ms a call, was 12.7–15.2, interleaved runs). The reference problem keeps Pb = 1 (3.1 MiB a
point): 1.60 / 2.70–2.80 s at P = 256 / 1024 against 1.62 / 2.17–2.70 s before (the same kernel).

Used by `evaluate_path` for affine pieces on CPU (where the N × m × r products are the bottleneck);
on accelerators the batched point-by-point kernel is the faster one.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._params import tree_combination
from ..model._losses import get_loss
from ..model._models import NoSkipNet, SkipNet, TwoLayer, relu
from ..model._objective import Objective
from ..model._regularizer import regularizer
from ..paths._paths import BernsteinCoefs, LinearCoefs, ReversedCoefs

__all__: list[str] = []

#: the dispatch rule (`use_sweep`): on CPU a straight piece with P points is swept iff
#: P ≥ SWEEP_MIN_POINTS + SWEEP_POINTS_PER_SWITCH · f, where f is the fraction of the N·m
#: (sample, unit) entries whose ReLU switches between the piece's first and last point
#: (`switch_fraction`). Cost model: the point kernel costs ≈ c·N·m·r per point; the sweep costs a
#: set-up (the grouping of the switches) plus ≈ f·N·m switch updates of 3r numbers each, and O(N·r)
#: per point; so the crossover P* = a + b·f does not depend on the shape. Measured crossovers
#: (interleaved timings, CPU and wall time, on benchmarks/bench_paths.py's problems): reference
#: f = 0.50: P* = 199–214; wide input f = 0.50: 202–205; reference between a and a + 0.1 (b − a),
#: f = 0.032: 25–32. The line through them: P* = 16 + 380·f (205 for f = 0.5), for the point
#: kernel with the precomputed first layer; `use_sweep`'s `scale` adapts it to a point kernel with
#: another cost per point (the reference problem computes its first layer per point, n = 16:
#: scale 1.33, P* = 275 for f = 0.5; measured 276–294).
SWEEP_MIN_POINTS = 16
SWEEP_POINTS_PER_SWITCH = 380
#: and only when the data have at least this many (sample, unit) entries N·m: below it a point costs
#: microseconds and compiling the sweep's kernels (one per point count and switch-list size bucket)
#: is not repaid
SWEEP_MIN_ENTRIES = 1 << 16
#: samples per data chunk of the sweep: bounds the N·m-sized arrays (switch list, A, D)
_SWEEP_SAMPLE_ENTRIES = 1 << 22
#: rows of x on which `switch_fraction` estimates f
_FRACTION_ROWS = 64
#: the sweep's points per scan step (`block_points`): the block's switch coefficients
#: (Pb × rows × 3r numbers) stay within this many bytes, Pb ≤ _BLOCK_MAX_POINTS; _BLOCK_POINTS
#: (tests) overrides the choice
_BLOCK_BYTES = 128 << 10
_BLOCK_MAX_POINTS = 256
_BLOCK_POINTS: int | None = None
#: the head of a block of points: "shared" (dots with weights shared by the block's points,
#: `_head_shared`) or "vmap" (`_head` per point)
_HEAD = "vmap"


def sweep_batch_rows(m: int, batch_size: int | None) -> int:
    """Rows per data batch for the sweep: the caller's `batch_size`, capped so that a batch has at
    most _SWEEP_SAMPLE_ENTRIES (sample, unit) entries (the N·m-sized switch lists)."""
    cap = max(1, _SWEEP_SAMPLE_ENTRIES // m)
    return cap if batch_size is None else min(cap, int(batch_size))


@jax.jit
def _fraction(W1, c0, c1, xs, s_lo, s_hi):
    dc = c1 - c0
    A = sum(c0[k] * (xs @ W1[k].T) for k in range(W1.shape[0]))
    D = sum(dc[k] * (xs @ W1[k].T) for k in range(W1.shape[0]))
    t = jnp.where(D == 0, jnp.inf, -A / jnp.where(D == 0, 1, D))
    return jnp.mean(((t >= s_lo) & (t < s_hi)).astype(jnp.float32))


def switch_fraction(basis, coef_fn, x, s_lo: float, s_hi: float) -> float:
    """f: the fraction of (sample, unit) entries whose breakpoint t = −A/D lies in [s_lo, s_hi)
    (A = W1_α x, D = W1_β x for the piece W1(s) = W1_α + s W1_β), estimated on `_FRACTION_ROWS`
    evenly spaced rows of x (one small jitted kernel: ≈ 1 ms)."""
    N = x.shape[0]
    xs = x[np.arange(0, N, max(1, N // _FRACTION_ROWS))[:_FRACTION_ROWS]]
    dtype = basis.W1.dtype
    c0 = jnp.asarray(coef_fn(jnp.asarray(0.0, dtype)), dtype)
    c1 = jnp.asarray(coef_fn(jnp.asarray(1.0, dtype)), dtype)
    return float(_fraction(basis.W1, c0, c1, xs.astype(dtype), s_lo, s_hi))


def use_sweep(sweep, coef_fn, count: int, entries: int, on_cpu: bool, fraction=None,
              scale: float = 1.0) -> bool:
    """Whether `evaluate_path` sweeps a piece with `count` points: `sweep` True (wherever the piece
    is affine), False (never) or None (automatic: on CPU, ≥ SWEEP_MIN_ENTRIES entries N·m and
    count ≥ scale · (SWEEP_MIN_POINTS + SWEEP_POINTS_PER_SWITCH · f) with f = `fraction()`, the
    switching fraction of `switch_fraction` (f = 1 when `fraction` is None); `scale` is the cost per
    point of the point kernel the constants were fitted against over this piece's point kernel's
    (> 1: this one is cheaper, so the sweep pays later; `jaxland.engine._structured`)."""
    if sweep is False or not affine_coefficients(coef_fn):
        return False
    if sweep is True:
        return True
    if not (on_cpu and entries >= SWEEP_MIN_ENTRIES and count >= scale * SWEEP_MIN_POINTS):
        return False
    if count >= scale * (SWEEP_MIN_POINTS + SWEEP_POINTS_PER_SWITCH):  # the sweep wins for any f
        return True
    f = 1.0 if fraction is None else fraction()
    return count >= scale * (SWEEP_MIN_POINTS + SWEEP_POINTS_PER_SWITCH * f)


def affine_coefficients(coef_fn) -> bool:
    """Whether s ↦ coef_fn(s) is affine in s (segments, degree-1 Bézier curves, their reversals)."""
    if isinstance(coef_fn, LinearCoefs):
        return True
    if isinstance(coef_fn, BernsteinCoefs):
        return coef_fn.degree == 1
    if isinstance(coef_fn, ReversedCoefs):
        return affine_coefficients(coef_fn.coefs)
    return False


def _rows(net):
    """(r, m): the rows that read σ(W1 x)."""
    if isinstance(net, SkipNet):
        return jnp.concatenate([net.V2, net.W2], axis=0)
    if isinstance(net, NoSkipNet):
        return net.V2
    return net.W2


def _num_rows(net) -> int:
    """r = `_rows(net).shape[0]`, from the shapes alone (no concatenation)."""
    if isinstance(net, SkipNet):
        return net.V2.shape[0] + net.W2.shape[0]
    if isinstance(net, NoSkipNet):
        return net.V2.shape[0]
    return net.W2.shape[0]


def _at(na, nb, s):
    """The network na + s·nb (leafwise)."""
    return jax.tree.map(lambda a, b: a + s.astype(a.dtype) * b, na, nb)


@eqx.filter_jit
def _endpoints(basis, alpha, beta):
    return tree_combination(alpha, basis), tree_combination(beta, basis)


@eqx.filter_jit
def _breakpoints(na, nb, x, s, n_real, uniform: bool):
    """A, D (c, m), the breakpoints t = −A/D (inf where D = 0), and for each entry the first point
    p with s_p > t among the sorted points s[:n_real] (0 where t < s_0 and s.shape[0] where
    t ≥ s_{n_real−1}: no switch in either case). `uniform`: the points are an evenly spaced grid (up to rounding),
    so p comes from arithmetic plus an exact correction instead of a binary search."""
    A = x @ na.W1.T
    D = x @ nb.W1.T
    t = jnp.where(D == 0, jnp.inf, -A / jnp.where(D == 0, 1, D))
    last = n_real - 1
    if uniform:
        h = (s[last] - s[0]) / last
        guess = jnp.floor((jnp.clip(t, s[0], s[last]) - s[0]) / h).astype(jnp.int32) + 1
        p = jnp.clip(guess, 1, last)
        for _ in range(2):  # the guess is off by at most one cell (rounding); make it exact
            p = jnp.where((s[p] <= t) & (p < last), p + 1, p)
            p = jnp.where((s[p - 1] > t) & (p > 1), p - 1, p)
    else:
        # (the padding repeats s[last], so the first index with s_p > t < s[last] is ≤ last)
        p = jnp.searchsorted(s, t, side="right").astype(jnp.int32)
    point = jnp.where(t < s[0], 0, jnp.where(t >= s[last], s.shape[0], p))
    return A, D, t, point.astype(jnp.int32)


def _head(U, net, is_two: bool, skip: bool):
    """The prediction (c, d_y) from U = R σ(a) (c, r) at one point with network `net`."""
    if is_two:
        return U
    d_g = net.V2.shape[0]
    z = U[:, :d_g]
    theta = net.theta
    last = net.W2 @ net.V1 @ theta[-1]  # (d_y, h_{k−1}): g's last layer folded into W2 V1
    if len(theta) == 1:
        pred = z @ last.T
    else:
        for t in theta[:-1]:
            z = relu(z @ t.T)
        pred = z @ last.T
    return pred + U[:, d_g:] if skip else pred


def _switch_updates(AD, RT, idx, i_e, live, r: int, dtype):
    """The rank-one changes (lanes, 3, r) of C's three coefficient rows for the switch events `idx`
    (flat entry indices; `i_e` their units, `live` the lanes that hold an event): ±(A·R_α,
    D·R_α + A·R_β, D·R_β), + for a unit switching on (D > 0), − for one switching off."""
    ad = AD[idx]
    sg = jnp.where(live, jnp.sign(ad[:, 1]), 0).astype(dtype)
    rr = RT[i_e]  # (lanes, 2r)
    ra, rb = rr[:, :r], rr[:, r:]
    a, d = (ad[:, 0] * sg)[:, None], (ad[:, 1] * sg)[:, None]
    return jnp.stack([a * ra, d * ra + a * rb, d * rb], axis=1)


@eqx.filter_jit
def _sweep_scan(obj, na, nb, s, A, D, tstar, events, bounds, y, w, block: int):
    """Σ_samples w·L at each sorted point s (P,), sweeping the switches `events` (flat indices into
    A, grouped by point: the switches before point p are events[bounds[p−1]:bounds[p]])."""
    m = A.shape[1]
    is_two = isinstance(na, TwoLayer)
    skip = isinstance(na, SkipNet)
    lossfn = get_loss(obj.loss)
    Ra, Rb = _rows(na), _rows(nb)  # (r, m)
    s0 = s[0]
    active = jnp.where(D > 0, tstar < s0, jnp.where(D < 0, tstar >= s0, A > 0))
    AM, DM = jnp.where(active, A, 0), jnp.where(active, D, 0)
    C = jnp.stack([AM @ Ra.T, DM @ Ra.T + AM @ Rb.T, DM @ Rb.T], axis=1)  # (c, 3, r)
    AD = jnp.stack([A.reshape(-1), D.reshape(-1)], axis=1)  # (c·m, 2): one gather per block
    RT = jnp.concatenate([Ra.T, Rb.T], axis=1)  # (m, 2r)
    r = Ra.shape[0]
    lanes = jnp.arange(block)

    def switch_block(start, end):
        def body(j, C):
            st = start + j * block
            idx = jax.lax.dynamic_slice(events, (st,), (block,))
            live = (st + lanes) < end
            n_e, i_e = idx // m, idx % m
            # within a point's group the switches are in increasing flat index, so by sample;
            # dead lanes go to the last row (with a zero update) to keep the rows sorted
            n_e = jnp.where(live, n_e, A.shape[0] - 1)
            upd = _switch_updates(AD, RT, idx, i_e, live, r, C.dtype)
            return C.at[n_e].add(upd, indices_are_sorted=True)

        return body

    def point(carry, p):
        C, start = carry
        end = bounds[p]
        nblk = (end - start + block - 1) // block
        C = jax.lax.fori_loop(0, nblk, switch_block(start, end), C)
        sp = s[p]
        U = C[:, 0] + sp * (C[:, 1] + sp * C[:, 2])
        pred = _head(U, _at(na, nb, sp), is_two, skip)
        return (C, end), jnp.sum(lossfn(pred, y) * w)

    (_, _), sums = jax.lax.scan(point, (C, jnp.asarray(0, events.dtype)), jnp.arange(s.shape[0]))
    return sums


def _head_shared(U, na, nb, sb, is_two: bool, skip: bool):
    """`_head` at a block of points at once: U (Pb, c, r) at the points sb (Pb,) of the piece
    na + s·nb, as GEMMs with weights shared by all Pb·c rows. Every weight is affine in s, so
    z θ(s)ᵀ = z θ_αᵀ + s (z θ_βᵀ), and the folded last layer W2(s) V1(s) θ_k(s) is a cubic in s whose
    four coefficient matrices L_j are formed once: pred = Σ_j s^j (z L_jᵀ)."""
    if is_two:
        return U
    Pb, c, _ = U.shape
    d_g = na.V2.shape[0]
    sc = sb.astype(U.dtype)[:, None, None]  # (Pb, 1, 1)
    z = U[..., :d_g].reshape(Pb * c, d_g)
    for ta, tb in zip(na.theta[:-1], nb.theta[:-1], strict=True):
        h = ta.shape[0]
        zz = (z @ jnp.concatenate([ta, tb], axis=0).T).reshape(Pb, c, 2 * h)
        z = relu(zz[..., :h] + sc * zz[..., h:]).reshape(Pb * c, h)
    Wa, Wb, Va, Vb, Ta, Tb = na.W2, nb.W2, na.V1, nb.V1, na.theta[-1], nb.theta[-1]
    L = jnp.concatenate([Wa @ Va @ Ta,
                         Wb @ Va @ Ta + Wa @ Vb @ Ta + Wa @ Va @ Tb,
                         Wb @ Vb @ Ta + Wb @ Va @ Tb + Wa @ Vb @ Tb,
                         Wb @ Vb @ Tb], axis=0)  # (4 d_y, h_{k−1})
    d_y = Wa.shape[0]
    q = (z @ L.T).reshape(Pb, c, 4 * d_y)
    pred = q[..., :d_y] + sc * (q[..., d_y:2 * d_y] + sc * (q[..., 2 * d_y:3 * d_y]
                                                            + sc * q[..., 3 * d_y:]))
    return pred + U[..., d_g:] if skip else pred


@eqx.filter_jit
def _sweep_blocks(obj, na, nb, s, A, D, tstar, events, evpoint, bounds, y, w, sub: int, Pb: int,
                  head: str = "shared"):
    """Σ_samples w·L at each sorted point s (P,), P a multiple of `Pb`, sweeping the switches
    `events` (flat indices into A, grouped by point: the switches before point p are
    events[bounds[p−1]:bounds[p]]; `evpoint` their points) in blocks of `Pb` points."""
    c, m = A.shape
    is_two = isinstance(na, TwoLayer)
    skip = isinstance(na, SkipNet)
    lossfn = get_loss(obj.loss)
    Ra, Rb = _rows(na), _rows(nb)  # (r, m)
    s0 = s[0]
    active = jnp.where(D > 0, tstar < s0, jnp.where(D < 0, tstar >= s0, A > 0))
    AM, DM = jnp.where(active, A, 0), jnp.where(active, D, 0)
    C = jnp.stack([AM @ Ra.T, DM @ Ra.T + AM @ Rb.T, DM @ Rb.T], axis=1)  # (c, 3, r)
    AD = jnp.stack([A.reshape(-1), D.reshape(-1)], axis=1)  # (c·m, 2): one gather per sub-block
    RT = jnp.concatenate([Ra.T, Rb.T], axis=1)  # (m, 2r)
    r = Ra.shape[0]
    lanes = jnp.arange(sub)
    last_row = Pb * c - 1
    tri = jnp.tril(jnp.ones((Pb, Pb), C.dtype))

    def switch_sub(start, end, p0):
        def body(j, Dl):
            st = start + j * sub
            idx = jax.lax.dynamic_slice(events, (st,), (sub,))
            pt = jax.lax.dynamic_slice(evpoint, (st,), (sub,))
            live = (st + lanes) < end
            n_e, i_e = idx // m, idx % m
            # rows (point − p0)·c + sample: the events are sorted by point and, within a point, by
            # flat index (so by sample); dead lanes go to the last row (with a zero update) to keep
            # the rows sorted
            row = jnp.where(live, (pt - p0) * c + n_e, last_row)
            upd = _switch_updates(AD, RT, idx, i_e, live, r, Dl.dtype)
            return Dl.at[row].add(upd, indices_are_sorted=True)

        return body

    def block(carry, b):
        C, start = carry
        p0 = b * Pb
        end = bounds[p0 + Pb - 1]
        # Δ (Pb·c, 3, r): the carry at the block's first point, the switches at their points; the
        # cumulative sum over the points is C at every point of the block
        Dl = jnp.concatenate([C, jnp.zeros(((Pb - 1) * c, 3, r), C.dtype)])
        nsub = (end - start + sub - 1) // sub
        Dl = jax.lax.fori_loop(0, nsub, switch_sub(start, end, p0), Dl)
        # C at every point of the block: the cumulative sum over the points, as a matmul with the
        # lower triangle of ones (XLA:CPU's cumsum is a quadratic reduce_window)
        Cb = (tri @ Dl.reshape(Pb, c * 3 * r)).reshape(Pb, c, 3, r)
        sb = jax.lax.dynamic_slice(s, (p0,), (Pb,))
        sc = sb[:, None, None]
        U = Cb[:, :, 0] + sc * (Cb[:, :, 1] + sc * Cb[:, :, 2])  # (Pb, c, r)
        if head == "shared":
            pred = _head_shared(U, na, nb, sb, is_two, skip)
        else:
            pred = jax.vmap(lambda u, sp: _head(u, _at(na, nb, sp), is_two, skip))(U, sb)
        loss = jax.vmap(lambda pr: lossfn(pr, y))(pred)  # (Pb, c)
        return (Cb[-1].reshape(c, 3, r), end), jnp.sum(loss * w, axis=1)

    nblocks = s.shape[0] // Pb
    (_, _), sums = jax.lax.scan(block, (C, jnp.asarray(0, events.dtype)), jnp.arange(nblocks))
    return sums.reshape(-1)


@eqx.filter_jit
def _penalties(obj, na, nb, s):
    return jax.lax.map(lambda si: obj.penalty(_at(na, nb, si)), s, batch_size=min(s.shape[0], 64))


def _group_switches(point: np.ndarray, P: int):
    """Switch events between the sorted points: flat indices of the entries whose breakpoint t lies
    in [s_0, s_{P−1}), grouped by the first point p with s_p > t (`point`, from `_breakpoints`), their
    points, and bounds[p] = number of switches up to point p."""
    point = point.reshape(-1)
    live = np.nonzero((point > 0) & (point < P))[0]
    point = point[live]  # in [1, P − 1]
    key = point.astype(np.int16 if P < 2**15 else np.int32)
    order = np.argsort(key, kind="stable")
    events = live[order].astype(np.int32)
    bounds = np.cumsum(np.bincount(point, minlength=P)).astype(np.int32)
    return events, point[order].astype(np.int32), bounds


def block_points(rows: int, r: int, itemsize: int, P: int) -> int:
    """Points per scan step of the sweep: the largest power of two ≤ _BLOCK_MAX_POINTS whose
    block of switch coefficients (Pb × rows × 3r numbers) fits in _BLOCK_BYTES, and that divides P
    (the bucketed point count: no padding beyond it); at least 1."""
    if _BLOCK_POINTS is not None:
        return int(_BLOCK_POINTS)
    pb = 1
    while (2 * pb <= _BLOCK_MAX_POINTS and P % (2 * pb) == 0
           and 2 * pb * rows * 3 * r * itemsize <= _BLOCK_BYTES):
        pb *= 2
    return pb


@jax.jit
def _max_abs(na, nb):
    """max over the leaves of max |na| + |nb| (a bound on every weight of na + s·nb, s ∈ [0, 1])."""
    return jnp.max(jnp.stack([jnp.max(jnp.abs(a) + jnp.abs(b)).astype(jnp.float32)
                              for a, b in zip(jax.tree.leaves(na), jax.tree.leaves(nb),
                                              strict=True)]))


#: the regulariser rules of the structured models (`_penalty_is_sign_of_kappa`: only these are
#: bounded there)
_BUILTIN_REGULARIZERS = {T: regularizer.dispatch(T) for T in (SkipNet, NoSkipNet, TwoLayer)}


def _regularizer_bounded(na, nb) -> bool:
    """Whether R(na + s·nb) (`regularizer`) is finite for every s ∈ [0, 1], by a bound: every weight
    is at most M = max |na| + |nb| in size, and every term and partial sum of R for a SkipNet,
    NoSkipNet or TwoLayer with E weights in all is at most E²·max(M, 1)² (‖·‖₁‖·‖₂ products
    ≤ E^1.5 M², ‖W2 V1‖₁ ≤ E² M², ‖θ‖_F ≤ √E M; squares summed ≤ E M²), so R is finite when
    8·E²·max(M, 1)² ≤ the dtype's largest number (the 8: the four terms and rounding). Conservative:
    False for any other model, a user-registered rule, non-finite weights."""
    T = type(na)
    if T not in _BUILTIN_REGULARIZERS or regularizer.dispatch(T) is not _BUILTIN_REGULARIZERS[T]:
        return False
    leaves = jax.tree.leaves(na)
    dt = jnp.result_type(*leaves)
    if not jnp.issubdtype(dt, jnp.floating):
        return False
    E = float(sum(int(np.prod(l.shape)) for l in leaves))
    M = float(_max_abs(na, nb))
    return bool(np.isfinite(M) and 8.0 * E * E * max(M, 1.0) ** 2 <= float(jnp.finfo(dt).max))


def sweep_endpoints(basis, coef_fn):
    """(na, nb, bounded): the affine piece γ(s) = Σ_k c_k(s) B_k as na + s·nb, and whether the
    regulariser is finite all along it (`_regularizer_bounded`: then the penalty κR is exactly ±0
    when κ = ±0 and `sweep_values` skips computing it). Depends only on the piece: `evaluate_path`
    keeps it with the path (`_evaluate._facts`)."""
    dtype = jnp.result_type(*jax.tree.leaves(basis))
    c0 = jnp.asarray(coef_fn(jnp.asarray(0.0, dtype)), dtype)
    c1 = jnp.asarray(coef_fn(jnp.asarray(1.0, dtype)), dtype)
    na, nb = _endpoints(basis, c0, c1 - c0)
    return na, nb, _regularizer_bounded(na, nb)


def _zero_penalty(obj, bounded: bool):
    """κ (a float, ±0.0) when the penalty κ·R(γ(s)) is exactly that at every point (a plain
    `Objective`, κ = ±0, R finite along the piece: `bounded`), else None (compute it)."""
    if not bounded or type(obj) is not Objective:
        return None
    k = float(obj.kappa)
    return k if k == 0.0 else None


def sweep_values(obj, basis, coef_fn, s, batches, ends=None) -> np.ndarray:
    """F(γ(s)) at the points s (P,) of an affine piece γ(s) = Σ_k c_k(s) B_k (module docstring).

    **Arguments:** `obj` the `Objective`; `basis`, `coef_fn` from the piece's `combination()`
    (`affine_coefficients(coef_fn)` must hold); `s` (P,) host array in [0, 1]; `batches` the padded
    data (x (nb, B, n), y (nb, B, …), w (nb, B)) in batches of at most `sweep_batch_rows(m)` rows
    (each batch is swept on its own and the loss sums are added).

    `ends`: `sweep_endpoints(basis, coef_fn)` when already computed.

    **Returns:** (P,) NumPy array of F values in the order of `s`.
    """
    from .._batching import bucket

    dtype = jnp.result_type(*jax.tree.leaves(basis))
    s = np.asarray(s)
    Pn = s.shape[0]
    na, nb, bounded = sweep_endpoints(basis, coef_fn) if ends is None else ends
    order = np.argsort(s, kind="stable")
    s_sorted = s[order].astype(np.dtype(dtype))
    # pad P to a bucketed size (repeating the last point) so that calls with varying P (refinement
    # rounds) reuse compiled kernels
    P_b = bucket(Pn)
    Pb = block_points(batches.x.shape[1], _num_rows(na), np.dtype(dtype).itemsize, P_b)
    P_b = -(-P_b // Pb) * Pb  # a whole number of blocks
    s_pad = np.concatenate([s_sorted, np.full(P_b - Pn, s_sorted[-1], s_sorted.dtype)])
    s_dev = jnp.asarray(s_pad)
    gaps = np.diff(s_sorted.astype(np.float64))
    uniform = bool(Pn > 2 and gaps.max() - gaps.min() <= 0.25 * gaps.mean() and gaps.min() > 0)
    total = np.zeros(s_pad.shape[0], np.float64)
    for xc, yc, wc in zip(batches.x, batches.y, batches.w, strict=True):
        A, D, tstar, point = _breakpoints(na, nb, xc, s_dev, jnp.asarray(Pn, jnp.int32), uniform)
        events, evpoint, bounds = _group_switches(np.asarray(point), s_pad.shape[0])
        # switches applied per scatter: about a quarter of the mean per block, at most 1024
        # (larger update blocks leave the caches: measured on the reference problem of
        # benchmarks/bench_paths.py, 8192 ran 1.4x slower than 2048 at P = 256)
        per_block = events.shape[0] * Pb / s_pad.shape[0]
        sub = int(min(max(2 ** math.ceil(math.log2(max(per_block / 4, 1))), 128), 1024))
        # pad the switch list to a bucketed length (+ one sub-block of slack for the last slice)
        size = bucket(events.shape[0] + 1) + sub
        ev = np.zeros(size, np.int32)
        ev[: events.shape[0]] = events
        evp = np.zeros(size, np.int32)
        evp[: events.shape[0]] = evpoint
        if Pb == 1:
            sums = _sweep_scan(obj, na, nb, s_dev, A, D, tstar, jnp.asarray(ev),
                               jnp.asarray(bounds), yc, wc, sub)
        else:
            sums = _sweep_blocks(obj, na, nb, s_dev, A, D, tstar, jnp.asarray(ev),
                                 jnp.asarray(evp), jnp.asarray(bounds), yc, wc, sub, Pb, _HEAD)
        total += np.asarray(sums, np.float64)
    kappa0 = _zero_penalty(obj, bounded)
    if kappa0 is None:
        pen = np.asarray(_penalties(obj, na, nb, s_dev), np.float64)
    else:  # κ·R with κ = ±0 and R finite: exactly ±0 at every point, not computed
        pen = np.full(s_pad.shape[0], kappa0, np.float64)
    vals = total / obj.num_samples + pen
    out = np.empty(Pn, np.dtype(dtype))
    out[order] = vals[:Pn]
    return out

