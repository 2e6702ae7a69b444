"""Sizes of batches and chunks, shared by the engine, the constructions and the second-order kernels."""

from __future__ import annotations


def bucket(k: int) -> int:
    """The smallest number of the form 2^e or 3·2^e (e ≥ 0) that is ≥ k: chunk shapes come from a
    short list (at most a third wasted on padding), so repeated calls with varying P (refinement
    rounds, slices) reuse compiled kernels instead of compiling one per P."""
    k = max(int(k), 1)
    e = max(k - 1, 1).bit_length() - 1
    for c in sorted({2**e, 3 * 2 ** (e - 1) if e else 1, 2 ** (e + 1)}):
        if c >= k:
            return c
    return 2 ** (e + 1)  # pragma: no cover
