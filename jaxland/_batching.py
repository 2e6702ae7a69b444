"""Sizes of batches and chunks, shared by the engine, the constructions and the second-order kernels.

One helper per idea, used by every family that evaluates many points in fixed-shape chunks:

- `bucket(k)`: round a count up to a short list of sizes (2^e or 3·2^e), so that calls with varying
  numbers of points reuse a few compiled kernels;
- `pad_rows(a, total)`: pad a host array to `total` rows by repeating its last row (padding that is
  evaluated like real data and dropped afterwards, never zeros that could be invalid inputs);
- `pad_chunks(a, chunk)`: split a host array into chunks of `chunk` rows, the last one padded by
  `pad_rows`, with the mask of the real rows;
- `rows_per_chunk(m, chunk_size)`: how many rows of an (m, ·) × (·, m) product one chunk may hold so
  that its (rows, m) block stays within a fixed number of entries (the Lemma 9 cosine blocks).
"""

from __future__ import annotations

import numpy as np

#: Entries of one (rows, m) block chosen by `rows_per_chunk` by default: ≈ 4M numbers, 32 MiB in
#: float64.
DEFAULT_BLOCK_ENTRIES = 1 << 22


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


def pad_rows(a, total: int) -> np.ndarray:
    """`a` (P, …) with P ≥ 1, padded to `total` ≥ P rows by repeating its last row.

    **Returns:** a host array of shape (total, …) whose first P rows are `a`.
    """
    a = np.asarray(a)
    P = a.shape[0]
    if P == 0:
        raise ValueError("pad_rows needs at least one row to repeat; got an empty array")
    if total < P:
        raise ValueError(f"total must be >= the number of rows {P}; got {total}")
    if total == P:
        return a
    return np.concatenate([a, np.repeat(a[-1:], total - P, axis=0)])


def pad_chunks(a, chunk: int, *, num_chunks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split `a` (P, …) into chunks of `chunk` rows, the last one padded by repeating the last row.

    **Arguments:**
    - `a`: a host array with P ≥ 1 rows.
    - `chunk`: rows per chunk (≥ 1).
    - `num_chunks`: pad to this many chunks (≥ ⌈P/chunk⌉) instead of ⌈P/chunk⌉, e.g.
      ``bucket(⌈P/chunk⌉)`` so that varying P reuses a few compiled kernels.

    **Returns:** `(chunks, real)`: `chunks` of shape (nc, chunk, …) and the bool mask `real` (nc, chunk)
    of the rows that come from `a` (row-major order: ``chunks.reshape(-1, …)[:P]`` is `a`).
    """
    a = np.asarray(a)
    chunk = int(chunk)
    if chunk < 1:
        raise ValueError(f"chunk must be a positive integer; got {chunk}")
    P = a.shape[0]
    nc = -(-P // chunk)
    if num_chunks is not None:
        if num_chunks < nc:
            raise ValueError(f"num_chunks must be >= ceil(P / chunk) = {nc}; got {num_chunks}")
        nc = int(num_chunks)
    chunks = pad_rows(a, nc * chunk).reshape(nc, chunk, *a.shape[1:])
    real = (np.arange(nc * chunk) < P).reshape(nc, chunk)
    return chunks, real


def rows_per_chunk(m: int, chunk_size: object = None, *, max_entries: int = DEFAULT_BLOCK_ENTRIES,
                   name: str = "chunk_size") -> int:
    """Rows per chunk of an (m, ·)·(·, m) product computed block by block.

    **Arguments:** `m` the number of rows (and columns of each block); `chunk_size` the user's choice
    (a positive integer) or None for about `max_entries` entries per (rows, m) block, as the user
    passed it: this is its check (any other value raises ``ValueError`` naming `name`, the argument's
    name in the error message).

    **Returns:** min(chunk_size, m) as a Python int (at least 1).
    """
    if chunk_size is None:
        chunk_size = max(1, max_entries // max(int(m), 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"{name} must be a positive integer; got {chunk_size!r}")
    return int(max(1, min(int(chunk_size), int(m))))
