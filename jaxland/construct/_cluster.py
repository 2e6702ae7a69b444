"""Lemma 9: clusters of hidden units at small angles, and the merge plan of step 2 of Theorem 11.

Everything here works on the m rows w_{1,i} of W1 (shape (m, n)) and is jittable: fixed shapes, masks
and `lax` loops. Cosines are computed with matrix products, `chunk_size` rows at a time, so the m × m
cosine matrix is never formed (m = 100 000 rows need O(chunk_size · m) memory).

**Zero rows.** A zero row has no direction. Policy, everywhere in this module: zero rows are in no
cluster (they are never in `AngleCluster.mask`, never counted as anybody's neighbour, never a merge
representative). In a merge plan they are freed *first*, with representative −1 and merge angle 0:
a unit with w_{1,i} = 0 has σ(w_{1,i}·x) = 0, so its outgoing columns can be removed without changing
f, which is exactly what step 2 needs.

**Angles.** The angle between rows u, v is ∠(u, v) = 2·atan2(‖û − v̂‖, ‖û + v̂‖) (û = u/‖u‖), which is
accurate also for tiny angles. Cluster membership compares cosines from a matrix product with cos ε, so
its resolution is that of cos near 1: about 3e-4 rad in float32, 1e-8 rad in float64.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, Int

from .._batching import rows_per_chunk
from .._checks import is_concrete


def check_eta(eta, name: str = "eta"):
    """η ∈ (0, 1) of Lemma 9 and Theorem 11 (the paper's 0 < η < 1), a real scalar.

    A concrete η is checked on the host (``ValueError`` naming the argument and the value) and
    returned as a Python float; a traced η (inside `jax.jit`) is returned as an array behind an
    `equinox.error_if`, so the check still fires when the compiled function runs.
    """
    if isinstance(eta, (bool, np.bool_)) or isinstance(eta, str) or eta is None:
        raise ValueError(f"{name} must be a number in (0, 1); got {eta!r}")
    if is_concrete(eta):
        try:
            e = np.asarray(eta, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in (0, 1); got {eta!r}") from None
        if e.shape != ():
            raise ValueError(f"{name} must be a scalar in (0, 1); got shape {e.shape}")
        if not (np.isfinite(e) and 0 < e < 1):
            raise ValueError(f"{name} must be a number in (0, 1); got {float(e)}")
        return float(e)
    if jnp.shape(eta) != ():
        raise ValueError(f"{name} must be a scalar in (0, 1); got shape {jnp.shape(eta)}")
    bad = ~((eta > 0) & (eta < 1))  # NaN fails both comparisons
    return eqx.error_if(eta, bad, f"{name} must be a number in (0, 1) (checked under jit)")


def lemma9_eps(m: int, n: int, eta):
    """The paper's angle ε_{m,η} = m^{(η−1)/n} of Lemma 9 and Theorem 11.

    **Arguments:** `m` the number of rows (hidden units), `n` their dimension (Python ints), `eta`
    η ∈ (0, 1) (0 < η < 1 in Theorem 1 and Theorem 11; may be traced, then checked with
    `equinox.error_if`).

    **Returns:** ε as a Python float, or a scalar array when η is traced (the clusters of Lemma 9
    have pairwise angles ≤ 2ε).
    """
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"m must be a positive integer; got {m!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    eta = check_eta(eta)
    if isinstance(eta, float):
        return float(m) ** ((eta - 1.0) / n)
    return jnp.asarray(float(m), jnp.result_type(eta)) ** ((eta - 1.0) / n)


def lemma9_size_bound(m: int, n: int, eps: float) -> int:
    """The cluster size that `angle_cluster(rows, eps)` is guaranteed to reach: ⌈m / (1 + 1/sin(ε/4))ⁿ⌉.

    Here m counts the **nonzero** rows and n is their dimension. Proof (pigeonhole, as in Freeman &
    Bruna's Corollary 2.5, with the constant the paper drops kept): a maximal δ-separated subset of
    S^{n−1} has at most (1 + 2/δ)ⁿ points (disjoint balls of radius δ/2 inside the ball of radius
    1 + δ/2) and covers the sphere at Euclidean (chordal) distance δ, i.e. at angle 2·arcsin(δ/2). With
    δ = 2 sin(ε/4) two rows in one cell are at angle ≤ ε, so some cell holds ≥ m/(1 + 1/sin(ε/4))ⁿ rows,
    and any row of that cell has all of them in its ε-neighbourhood. `angle_cluster` returns a set at
    least as large as the largest ε-neighbourhood. With the paper's ε = m^{(η−1)/n} the bound behaves
    like m^η / 4ⁿ: "≥ m^η" holds only up to that constant (the paper, following Freeman & Bruna 2017,
    drops it).

    **Returns:** the bound as a Python int (0 when m = 0; m when ε ≥ π, every row then being within ε).
    """
    if m < 0:
        raise ValueError(f"m must be >= 0; got {m!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0; got {eps!r}")
    if m == 0:
        return 0
    if eps >= math.pi:
        return int(m)
    cells = (1.0 + 1.0 / math.sin(eps / 4.0)) ** n
    return int(math.ceil(m / cells - 1e-12))


def row_angles(u: Float[Array, "... n"], v: Float[Array, "... n"]) -> Float[Array, ...]:
    """∠(u, v) = 2·atan2(‖û − v̂‖, ‖û + v̂‖) row by row, in [0, π] (0 where u or v is zero)."""
    nu = jnp.linalg.norm(u, axis=-1, keepdims=True)
    nv = jnp.linalg.norm(v, axis=-1, keepdims=True)
    ok = (nu[..., 0] > 0) & (nv[..., 0] > 0)
    uh = u / jnp.where(nu > 0, nu, 1)
    vh = v / jnp.where(nv > 0, nv, 1)
    a = 2 * jnp.arctan2(jnp.linalg.norm(uh - vh, axis=-1), jnp.linalg.norm(uh + vh, axis=-1))
    return jnp.where(ok, a, 0.0)


def _unit_rows(rows):
    norms = jnp.linalg.norm(rows, axis=1)
    valid = norms > 0
    u = rows / jnp.where(valid, norms, 1)[:, None]
    return u, valid


def _neighbour_stats(u, valid, cos_eps, chunk: int):
    """Per row: #valid rows with cos ≥ cos_eps (self included), nearest other valid row and its cosine.

    The rows are processed `chunk` at a time with `lax.map`; the (chunk, m) cosine block is the only
    large temporary.
    """
    m = u.shape[0]
    nb = -(-m // chunk)
    pad = nb * chunk - m
    up = jnp.pad(u, ((0, pad), (0, 0))).reshape(nb, chunk, -1)
    vp = jnp.pad(valid, (0, pad)).reshape(nb, chunk)
    ip = jnp.arange(nb * chunk).reshape(nb, chunk)
    cols = jnp.arange(m)

    def block(args):
        ub, vb, ib = args
        c = ub @ u.T  # (chunk, m)
        both = vb[:, None] & valid[None, :]
        count = jnp.sum(both & (c >= cos_eps), axis=1).astype(jnp.int32)
        other = both & (ib[:, None] != cols[None, :])
        cm = jnp.where(other, c, -jnp.inf)
        nn = jnp.argmax(cm, axis=1).astype(jnp.int32)
        best = jnp.max(cm, axis=1)
        return count, nn, best

    count, nn, best = lax.map(block, (up, vp, ip))
    return count.reshape(-1)[:m], nn.reshape(-1)[:m], best.reshape(-1)[:m]


def check_rows(rows, name: str = "rows"):
    """An (m, n) floating-point matrix with m, n ≥ 1 and finite entries.

    The shape and dtype are checked always; the values on the host when `rows` is concrete (naming
    the first row with a NaN or inf), and with `equinox.error_if` when it is traced, so a NaN row is
    refused under jit too instead of silently dropping out of every cosine comparison.

    **Returns:** `rows` (behind the `error_if` when traced).
    """
    s = getattr(rows, "shape", None)
    if s is None or len(s) != 2:
        raise ValueError(f"{name} must be a matrix of shape (m, n); got shape {s}")
    if s[0] < 1 or s[1] < 1:
        raise ValueError(f"{name} must have at least one row and one column; got shape {tuple(s)}")
    if not jnp.issubdtype(rows.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array; got dtype {rows.dtype}")
    finite = jnp.all(jnp.isfinite(rows), axis=1)
    if is_concrete(rows):
        if not bool(jnp.all(finite)):
            bad = np.nonzero(~np.asarray(finite))[0]
            raise ValueError(
                f"{name} must be finite; row {int(bad[0])} holds NaN or inf ({bad.size} such "
                f"row{'s' if bad.size > 1 else ''} of {s[0]})"
            )
        return rows
    return eqx.error_if(rows, ~jnp.all(finite), f"{name} must be finite: a row holds NaN or inf "
                        "(checked under jit)")


def check_eps(eps, dtype, name: str = "eps"):
    """The angle ε ∈ (0, π] as a scalar array of `dtype`: checked on the host when concrete
    (``ValueError`` naming the argument and the value), behind an `equinox.error_if` when traced."""
    if isinstance(eps, (bool, np.bool_, str)):
        raise ValueError(f"{name} must be an angle in (0, π]; got {eps!r}")
    if is_concrete(eps):
        try:
            e = np.asarray(eps, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an angle in (0, π]; got {eps!r}") from None
        if e.shape != ():
            raise ValueError(f"{name} must be a scalar; got shape {e.shape}")
        if not (np.isfinite(e) and 0 < e <= math.pi):
            raise ValueError(f"{name} must be an angle in (0, π]; got {float(e)}")
        return jnp.asarray(eps, dtype)
    if jnp.shape(eps) != ():
        raise ValueError(f"{name} must be a scalar; got shape {jnp.shape(eps)}")
    e = jnp.asarray(eps, dtype)
    # compared in the argument's own dtype: π rounded to float32 lies above π, so the float32
    # angle π (the default for "every direction") passes
    bad = ~((eps > 0) & (eps <= jnp.asarray(math.pi, jnp.result_type(eps))))
    return eqx.error_if(e, bad, f"{name} must be an angle in (0, π] (checked under jit)")


class AngleCluster(NamedTuple):
    """What `angle_cluster` returns.

    - `mask`: (m,) bool, the rows of the cluster: every nonzero row within angle ε of `center`.
    - `center`: () int32, the row whose ε-neighbourhood is largest (ties: the smallest index).
    - `size`: () int32, `mask.sum()` = the size of the largest ε-neighbourhood (0 if all rows are 0).
    - `counts`: (m,) int32, the size of every row's ε-neighbourhood (itself included; 0 for zero rows).
    """

    mask: Bool[Array, " m"]
    center: Int[Array, ""]
    size: Int[Array, ""]
    counts: Int[Array, " m"]


def angle_cluster(
    rows: Float[Array, "m n"], eps, *, chunk_size: int | None = None
) -> AngleCluster:
    """Lemma 9: a large set of rows whose pairwise angles are all ≤ 2ε.

    For every nonzero row i count N_ε(i) = #{j : ∠(w_i, w_j) ≤ ε} (chunked matrix products of unit
    rows), pick the centre c with the largest count, and return the mask of N_ε(c). By the triangle
    inequality for angles on the sphere every two rows of the mask are at angle ≤ 2ε, and the mask is
    as large as the largest ε-neighbourhood of any row, hence at least `lemma9_size_bound(m', n, ε)`
    with m' the number of nonzero rows. Zero rows are in no cluster (see the module docstring).

    **Arguments:**
    - `rows`: (m, n), the rows w_{1,i} (e.g. `net.W1`); any norms, finite (a NaN or inf row is
      refused, also under jit).
    - `eps`: the angle ε ∈ (0, π] (scalar; may be traced, then checked with `equinox.error_if`).
      `lemma9_eps(m, n, η)` gives the paper's.
    - `chunk_size`: rows per cosine block (default: about 4M cosines per block).

    **Returns:** `AngleCluster(mask, center, size, counts)`. Jittable (`eps` may be traced,
    `chunk_size` is static).
    """
    rows = check_rows(rows)
    eps = check_eps(eps, rows.dtype)
    chunk = rows_per_chunk(rows.shape[0], chunk_size)
    return _angle_cluster(rows, eps, chunk)


def _cos_threshold(eps):
    # Keep rows whose computed cosine with the centre rounds to just below cos ε: a few ulps of slack
    # so that a row at angle exactly ε (or the centre itself, cos = 1 − ulp) is not dropped.
    return jnp.cos(eps) - 4 * jnp.finfo(eps.dtype).eps


@functools.partial(jax.jit, static_argnums=(2,))
def _angle_cluster(rows, eps, chunk):
    u, valid = _unit_rows(rows)
    counts, _, _ = _neighbour_stats(u, valid, _cos_threshold(eps), chunk)
    center = jnp.argmax(counts).astype(jnp.int32)
    # A few more ulps of slack than the counts, so the mask contains every row counted for the centre
    # even if the matrix-vector product rounds differently from the chunked matrix product.
    mask = valid & (u @ u[center] >= _cos_threshold(eps) - 4 * jnp.finfo(eps.dtype).eps) & valid[center]
    return AngleCluster(mask, center, jnp.sum(mask).astype(jnp.int32), counts)


class MergePlan(NamedTuple):
    """What `merge_plan` returns: which l units step 2 frees and where their weights go.

    - `freed`: (l,) int32, the freed units in the order they were chosen (smallest angle first for
      the greedy plan). Step 3 places the l units of ξ* in these slots.
    - `target`: (l,) int32, the final representative of each freed unit (never itself freed: chains
      a → b → c are resolved to c), or −1 for a zero row.
    - `angles`: (l,) the merge angle ∠(w_{1,i}, w_{1,target(i)}) (0 for zero rows).
    - `max_angle`: () the largest merge angle used.
    - `freed_mask`: (m,) bool, `freed` as a mask.
    - `n_freed`: () int32, how many units could be freed (= l whenever l ≤ m/2).
    - `method`: () int32, 0 if the greedy plan was used, 1 for the cluster (Lemma 9) plan.
    - `cluster_size`: () int32, the size of the largest ε-neighbourhood (the Lemma 9 cluster);
      −1 when the plan was computed without ε (method "greedy").
    """

    freed: Int[Array, " l"]
    target: Int[Array, " l"]
    angles: Float[Array, " l"]
    max_angle: Float[Array, ""]
    freed_mask: Bool[Array, " m"]
    n_freed: Int[Array, ""]
    method: Int[Array, ""]
    cluster_size: Int[Array, ""]


_METHODS = ("best", "greedy", "cluster")


def merge_plan(
    rows: Float[Array, "m n"],
    l: int,
    eps=None,
    *,
    method: str = "best",
    chunk_size: int | None = None,
) -> MergePlan:
    """Choose l hidden units to free by merging each into a unit at a small angle (step 2, Theorem 11).

    Merging unit i into unit j moves i's outgoing columns (of W2 and V2) onto j; Lemma 10 bounds the
    change of f by the angle ∠(w_{1,i}, w_{1,j}). Zero rows are freed first (angle 0, target −1).
    Two plans:

    - **greedy**: every nonzero row's nearest neighbour and angle a(i) are computed (chunked); rows are
      visited by increasing a(i); a visited row is freed unless it is already some freed row's
      representative, and its representative is its nearest neighbour — or, if that one was freed
      before, that one's representative (chains resolved on the fly; representatives are never freed).
      Each freed row protects at most one other, so at least half the nonzero rows can be freed.
    - **cluster** (Lemma 9): the centre c of `angle_cluster(rows, eps)` keeps its unit and the l rows
      nearest to c are merged into it. If N_ε(c) holds ≥ l + 1 rows (guaranteed when
      `lemma9_size_bound(m', n, ε) ≥ l + 1`), every merge angle is ≤ ε (pairwise ≤ 2ε).
    - **best** (default): both, keeping the one with the smaller largest angle (so the Lemma 9
      guarantee holds and the greedy plan's usually much smaller angles are used when they are).

    **Arguments:**
    - `rows`: (m, n), the rows of W1 (finite; checked under jit too).
    - `l`: the number of units to free, 1 ≤ l ≤ m/2 (static).
    - `eps`: the angle ε ∈ (0, π] of the cluster plan (needed for "cluster" and "best"; may be
      traced, then checked with `equinox.error_if`).
    - `method`: "best", "greedy" or "cluster" (static).
    - `chunk_size`: rows per cosine block.

    **Returns:** `MergePlan`. Jittable (`l`, `method`, `chunk_size` static).
    """
    rows = check_rows(rows)
    m = rows.shape[0]
    if not isinstance(l, (int, np.integer)) or not 1 <= l <= m // 2:
        raise ValueError(f"l must be an integer with 1 <= l <= m/2 = {m // 2} (m = {m} rows); got {l!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}; got {method!r}")
    if eps is None and method != "greedy":
        raise ValueError(f"eps is needed for method={method!r} (the Lemma 9 cluster angle)")
    if eps is not None:
        eps = check_eps(eps, rows.dtype)
    return _merge_plan(rows, int(l), eps, method, rows_per_chunk(m, chunk_size))


@functools.partial(jax.jit, static_argnums=(1, 3, 4))
def _merge_plan(rows, l, eps, method, chunk):
    m = rows.shape[0]
    u, valid = _unit_rows(rows)
    cos_eps = _cos_threshold(eps) if eps is not None else jnp.asarray(2.0, rows.dtype)
    counts, nn, best = _neighbour_stats(u, valid, cos_eps, chunk)
    plans = []
    if method in ("best", "greedy"):
        plans.append(_greedy(rows, u, valid, nn, best, l))
    if method in ("best", "cluster"):
        plans.append(_cluster_plan(rows, u, valid, counts, l))
    if len(plans) == 1:
        freed, target, n_freed = plans[0]
        which = jnp.asarray(0 if method == "greedy" else 1, jnp.int32)
    else:
        (f0, t0, n0), (f1, t1, n1) = plans
        a0 = _max_angle(rows, f0, t0, n0)
        a1 = _max_angle(rows, f1, t1, n1)
        # Prefer the plan that frees l units, then the one with the smaller largest angle.
        use1 = (n1 > n0) | ((n1 == n0) & (a1 < a0))
        freed = jnp.where(use1, f1, f0)
        target = jnp.where(use1, t1, t0)
        n_freed = jnp.where(use1, n1, n0)
        which = use1.astype(jnp.int32)
    angles = _plan_angles(rows, freed, target) * (jnp.arange(l) < n_freed)
    freed_mask = jnp.zeros(m, bool).at[freed].set(jnp.arange(l) < n_freed, mode="drop")
    csize = jnp.max(counts) if eps is not None else jnp.asarray(-1, jnp.int32)
    return MergePlan(freed, target, angles, jnp.max(angles), freed_mask, n_freed, which, csize)


def _plan_angles(rows, freed, target):
    ok = target >= 0
    return jnp.where(ok, row_angles(rows[freed], rows[jnp.where(ok, target, 0)]), 0.0)


def _max_angle(rows, freed, target, n_freed):
    a = _plan_angles(rows, freed, target)
    return jnp.max(jnp.where(jnp.arange(freed.shape[0]) < n_freed, a, 0.0))


def _greedy(rows, u, valid, nn, best, l):
    m = rows.shape[0]
    has_nn = jnp.isfinite(best)
    a = 2 * jnp.arcsin(jnp.clip(jnp.sqrt(jnp.maximum(2 - 2 * best, 0)) / 2, 0, 1))
    key = jnp.where(valid, jnp.where(has_nn, a, jnp.inf), -1.0)
    order = jnp.argsort(key, stable=True).astype(jnp.int32)

    def cond(st):
        pos, count = st[0], st[1]
        return (pos < m) & (count < l)

    def body(st):
        pos, count, freed, prot, target, slots = st
        i = order[pos]
        zero = ~valid[i]
        j = nn[i]
        rep = jnp.where(freed[j], target[j], j)
        can = zero | (has_nn[i] & ~prot[i])
        rep = jnp.where(zero, -1, rep)
        freed = freed.at[i].set(can)
        target = target.at[i].set(jnp.where(can, rep, target[i]))
        prot = prot.at[jnp.where(can & ~zero, rep, m)].set(True, mode="drop")
        slots = slots.at[count].set(jnp.where(can, i, slots[count]))
        return pos + 1, count + can.astype(jnp.int32), freed, prot, target, slots

    st0 = (
        jnp.asarray(0, jnp.int32),
        jnp.asarray(0, jnp.int32),
        jnp.zeros(m, bool),
        jnp.zeros(m, bool),
        jnp.arange(m, dtype=jnp.int32),
        jnp.zeros(l, jnp.int32),
    )
    _, count, _, _, target, slots = lax.while_loop(cond, body, st0)
    return slots, target[slots], count


def _cluster_plan(rows, u, valid, counts, l):
    center = jnp.argmax(counts).astype(jnp.int32)
    cos_c = u @ u[center]
    idx = jnp.arange(rows.shape[0])
    key = jnp.where(valid, jnp.where(idx == center, -jnp.inf, cos_c), 3.0)
    _, freed = lax.top_k(key, l)
    freed = freed.astype(jnp.int32)
    target = jnp.where(valid[freed], center, -1).astype(jnp.int32)
    n_freed = jnp.sum(jnp.isfinite(key[freed])).astype(jnp.int32)
    return freed, target, n_freed
