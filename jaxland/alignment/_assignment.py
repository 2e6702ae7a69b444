"""The linear assignment problem of weight and activation matching: `linear_assignment(cost) -> perm`.

Given a d × d cost matrix C, find the permutation π minimising Σ_i C[i, π(i)].

**Dense** (d < `SPARSE_FROM`): `scipy.optimize.linear_sum_assignment` (a shortest augmenting path
Jonker–Volgenant variant, exact). Its time grows like d^2.7 on the similarity matrices of `align`
(0.9–1.0 s at d = 4096, ≈ 40 s at d = 16 384 on an idle 2-core CPU, 5–6 solves per `align` at
that width: 67–89 % of its time, issue 20).

**Candidate graph** (d ≥ `SPARSE_FROM`). Entry (i, j) is kept if it is below row i's or column j's
estimated (k/d)-quantile (k = `candidates`, 128 by default; the quantiles estimated on a block of
1024 columns / rows, so about k entries per row and per column, ≈ 2·k·d edges, found in one blocked
pass over C with no d × d temporary), and `scipy.sparse.csgraph.min_weight_full_bipartite_matching`
(LAPJVsp, exact on that graph) solves the sparse problem. The optimum of the dense problem uses,
in every row, a column among its cheapest few; where the graph misses one, the answer is the best
assignment within the candidate edges (not exact). If the graph has no perfect matching, k is
doubled (the dense solver once 4k ≥ d).

Measured (2 loaded CPU cores; `benchmarks/bench_align.py --solvers` for d ≤ 4096):
- on the hidden group's matrices of `align` (two independent SkipNet draws) at d = 4096 and
  d = 16 384: the same permutation as the dense solver on every matrix (k = 64 and 128), and at
  d = 16 384 `align` gave the same matching objective J (13146.954093999084 both), the same
  values of F at 257 points of the segment to a and the aligned b (max difference 0.0) and so the
  same barrier, in 151 s against 925 s with the dense solver (load ≈ 12; 6.1×);
- on unstructured random low-rank costs (d = 4096): k = 64 a relative objective gap of 1.4·10⁻⁶
  (98 % of the entries equal), k = 128 the same permutation.

Alternatives measured and not chosen (same matrices): the LAPJV packages `lapjv` 1.3 and `lap` 0.5
(exact; 0.65–1.9× scipy's time at d = 4096: the same d^2.7 growth); a NumPy ε-scaling forward
auction (exact to rounding at ε = 10⁻⁶ of the cost range, but 1.6–3.7× slower than scipy at
d = 4096: ≈ 11 000 vectorised bidding rounds, the last ones bidding one row at a time);
`optax.assignment.hungarian_algorithm` (optax 0.2.8; exact and jittable, suited to a GPU; on CPU
0.45–0.52 s against scipy's 0.11–0.13 s at d = 1024, 4× slower, and O(d³)). At d = 4096 on the
`align` matrices (`bench_align.py --solvers`, load ≈ 12): scipy 5.7–8.4 s, `lapjv` 6.4–6.5 s,
`lap` 7.2–9.5 s, the candidate graph 2.7–2.9 s, all four the same permutation.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import ArrayLike
from scipy.optimize import linear_sum_assignment
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

SPARSE_FROM = 4096  # the candidate graph from this size on (below it the dense solver is fast)
CANDIDATES = 128  # entries kept per row and per column (about)
_BLOCK_ENTRIES = 2**22  # entries of C compared at once when selecting candidates
_SAMPLE = 1024  # columns (rows) on which the per-row (per-column) thresholds are estimated


def _thresholds(sample: np.ndarray, q: float, axis: int) -> np.ndarray:
    """Per line of `sample` (along `axis`), the q-quantile of its entries."""
    n = sample.shape[axis]
    j = min(n - 1, max(0, int(q * n)))
    return np.partition(sample, j, axis=axis).take(j, axis=axis)


def _candidates(cost: np.ndarray, k: int, rng: np.random.Generator):
    """Edges (rows, cols) of the candidate graph: entry (i, j) is kept if it is below row i's or
    column j's estimated (k / d)-quantile (estimated on a block of `_SAMPLE` consecutive columns / rows at a random offset), so about
    k entries per row and per column are kept; one blocked pass over `cost`, no d × d temporary."""
    d = cost.shape[0]
    q = min(1.0, k / d)
    s = min(d, _SAMPLE)
    off = int(rng.integers(0, d - s + 1))  # the units' order is arbitrary: a block is a sample
    thr_r = _thresholds(cost[:, off:off + s], q, 1)
    thr_c = _thresholds(cost[off:off + s, :], q, 0)
    step = max(1, _BLOCK_ENTRIES // d)
    rows, cols = [], []
    for i in range(0, d, step):
        blk = cost[i:i + step]
        r, c = np.nonzero((blk <= thr_r[i:i + step, None]) | (blk <= thr_c[None, :]))
        rows.append(r + i)
        cols.append(c)
    return np.concatenate(rows), np.concatenate(cols)


def _candidate_matching(cost: np.ndarray, k: int) -> np.ndarray | None:
    """The optimal assignment within the candidate graph, or None if it has no perfect matching."""
    d = cost.shape[0]
    rows, cols = _candidates(cost, k, np.random.default_rng(0))
    vals = cost[rows, cols].astype(np.float64)
    # the sparse solver needs no explicit zeros (they would be read as missing edges): shift to ≥ 1
    vals = vals - vals.min() + 1.0
    graph = csr_matrix((vals, (rows, cols)), shape=(d, d))
    try:
        r, c = min_weight_full_bipartite_matching(graph)
    except ValueError:  # no perfect matching within the candidates
        return None
    perm = np.empty(d, np.int64)
    perm[r] = c
    return perm


def linear_assignment(cost: ArrayLike, *, candidates: int | None = CANDIDATES) -> np.ndarray:
    """The permutation π minimising Σ_i cost[i, π(i)] of a square cost matrix.

    Args:
        cost: (d, d) real matrix (not modified).
        candidates: about this many entries kept per row and per column for d ≥ `SPARSE_FROM`
            (see the module docstring); None solves the dense problem exactly at every size.

    Returns:
        perm: (d,) int64, a permutation of 0 … d − 1; row i is assigned column perm[i].
    """
    c = np.asarray(cost)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"linear_assignment: cost must be a square (d, d) matrix; got shape {c.shape}")
    if not np.issubdtype(c.dtype, np.number) or np.iscomplexobj(c):
        raise ValueError(f"linear_assignment: cost must be real; got dtype {c.dtype}")
    if candidates is not None and (not isinstance(candidates, (int, np.integer)) or candidates < 1):
        raise ValueError(f"linear_assignment: candidates must be a positive int or None; got {candidates!r}")
    d = c.shape[0]
    if d == 0:
        return np.zeros(0, np.int64)
    if not np.all(np.isfinite(c)):
        raise ValueError("linear_assignment: cost must be finite; it has NaN or infinite entries")
    if candidates is not None and d >= SPARSE_FROM:
        k = int(candidates)
        while 4 * k < d:
            perm = _candidate_matching(c, k)
            if perm is not None:
                return perm
            k *= 2
    return linear_sum_assignment(c)[1].astype(np.int64)
