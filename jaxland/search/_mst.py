"""Many minima: the minimum spanning tree of pairwise barrier heights.

Minimax heights H_ij = min_γ max_t F(γ(t)) between minima concatenate ultrametrically,
H_ik ≤ max(H_ij, H_jk) (Draxler et al. 2018): join a path i → j to a path j → k. So from any matrix of
measured heights (upper bounds, one search per pair) the best heights implied by concatenation are the
minimax path lengths in the complete graph, which are read off its minimum spanning tree: `barrier_mst`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from jaxtyping import Array, PyTree

from ._depth import _as_list
from ._search_path import SEARCH_METHODS, search_path


class MSTResult(NamedTuple):
    """What `barrier_mst` returns.

    - `edges`: (K−1, 2) int, the tree's edges (i < j), in the order Prim's algorithm added them.
    - `weights`: (K−1,) the heights H_ij of those edges.
    - `minimax`: (K, K) the subdominant ultrametric: for i ≠ j, the largest edge weight on the tree
      path from i to j = the lowest height reachable by concatenating measured paths; the diagonal is
      the `diagonal` argument (the minima's own values, or 0).
    - `order`: (K−1,) edge indices sorted by weight (the merge order of a single-linkage dendrogram:
      at level λ the minima fall into the components of the tree with the edges of weight ≤ λ).
    """

    edges: np.ndarray
    weights: np.ndarray
    minimax: np.ndarray
    order: np.ndarray


def barrier_mst(heights, diagonal=None) -> MSTResult:
    """The minimum spanning tree of a symmetric matrix of pairwise heights (or barriers) between minima.

    Heights concatenate ultrametrically (H_ik ≤ max(H_ij, H_jk)), so the tree carries all the
    information: the minimax height between any two minima implied by the measured pairs is the
    largest weight on their tree path, and these values form an ultrametric (the subdominant
    ultrametric of the input: the largest ultrametric below it). Inf entries mean "no path measured".

    **Arguments:**
    - `heights`: (K, K), symmetric, entries H_ij for i ≠ j (the diagonal is ignored); NaN is refused.
    - `diagonal`: optional (K,) values for the diagonal of `minimax` (e.g. F at the minima); default 0.

    **Returns:** `MSTResult`. Raises ``ValueError`` if the matrix is not square and symmetric, or if
    the graph of finite entries is disconnected.
    """
    H = np.asarray(heights, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or H.shape[0] < 1:
        raise ValueError(f"heights must be a square (K, K) matrix; got shape {H.shape}")
    K = H.shape[0]
    off = ~np.eye(K, dtype=bool)
    if np.any(np.isnan(H[off])):
        raise ValueError("heights must not contain NaN off the diagonal")
    if not np.allclose(H[off], H.T[off], rtol=1e-6, atol=0.0, equal_nan=False) and not np.array_equal(
            H[off], H.T[off]):
        raise ValueError("heights must be symmetric (H_ij = H_ji)")
    diag = np.zeros(K) if diagonal is None else np.asarray(diagonal, np.float64)
    if diag.shape != (K,):
        raise ValueError(f"diagonal must have shape ({K},); got {diag.shape}")
    # Prim's algorithm, O(K²): K is the number of minima (small)
    in_tree = np.zeros(K, bool)
    in_tree[0] = True
    best = H[0].copy()
    parent = np.zeros(K, int)
    best[0] = np.inf
    edges, weights = [], []
    for _ in range(K - 1):
        cand = np.where(in_tree, np.inf, best)
        j = int(np.argmin(cand))
        if not np.isfinite(cand[j]):
            raise ValueError("the finite entries of heights do not connect all minima")
        i = int(parent[j])
        edges.append((min(i, j), max(i, j)))
        weights.append(float(H[i, j]))
        in_tree[j] = True
        upd = (~in_tree) & (H[j] < best)
        best = np.where(upd, H[j], best)
        parent = np.where(upd, j, parent)
    edges_a = np.asarray(edges, int).reshape(-1, 2)
    w = np.asarray(weights, np.float64)
    # minimax on the tree: add vertices in Prim order, each inherits max(edge, its parent's row)
    M = np.full((K, K), -np.inf)
    seen = [0]
    for (i, j), wt in zip(edges, weights, strict=True):
        new = j if j not in seen else i
        old = i if new == j else j
        for s in seen:
            M[new, s] = M[s, new] = wt if s == old else max(wt, M[old, s])
        seen.append(new)
    np.fill_diagonal(M, diag)
    return MSTResult(edges_a, w, M, np.argsort(w, kind="stable"))


def pairwise_heights(
    fn: Callable[[PyTree], Array],
    minima: Sequence[PyTree] | PyTree,
    *,
    method: str = "neb",
    **search_kwargs,
) -> tuple[np.ndarray, int]:
    """H_ij = max_t F(γ_ij(t)) for a searched path between every pair of minima (upper bounds on the
    minimax heights), and the F evaluations spent. Feed the matrix to `barrier_mst`.

    **Returns:** (H (K, K) with F(minimum_i) on the diagonal, evaluations).
    """
    if method not in SEARCH_METHODS:
        raise ValueError(f"method must be one of {SEARCH_METHODS}; got {method!r}")
    pts = _as_list(minima, "minima")
    K = len(pts)
    if K < 2:
        raise ValueError(f"minima must hold at least 2 points; got {K}")
    H = np.zeros((K, K))
    evals = 0
    for i in range(K):
        H[i, i] = float(fn(pts[i]))
        for j in range(i + 1, K):
            r = search_path(fn, pts[i], pts[j], method=method, **search_kwargs)
            H[i, j] = H[j, i] = r.f_max
            evals += int(r.evaluations)
    return H, evals
