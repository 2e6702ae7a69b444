"""The shared chunking helpers (jaxland/_batching.py): bucket sizes, padded chunks, rows per block."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from jaxland._batching import DEFAULT_BLOCK_ENTRIES, bucket, pad_chunks, pad_rows, rows_per_chunk


def _is_bucket(c: int) -> bool:
    while c % 2 == 0:
        c //= 2
    return c in (1, 3)


@given(st.integers(1, 100_000))
def test_bucket_is_the_smallest_size_of_the_list(k):
    c = bucket(k)
    assert c >= k and _is_bucket(c)
    # no smaller 2^e or 3·2^e is ≥ k, and at most a third of the bucket is padding beyond k ≥ 2
    assert not any(_is_bucket(d) for d in range(k, c))
    assert k == 1 or (c - k) <= c / 3 + 1


@given(st.integers(1, 40), st.integers(1, 9), st.integers(0, 3), st.integers(0, 2))
def test_pad_chunks_round_trip(P, chunk, extra_chunks, trailing):
    a = np.arange(P * 2 * max(trailing, 1)).reshape(P, -1)[:, : max(trailing, 1)] * 1.5
    nc = -(-P // chunk)
    chunks, real = pad_chunks(a, chunk, num_chunks=nc + extra_chunks)
    assert chunks.shape == (nc + extra_chunks, chunk, a.shape[1]) and real.shape == chunks.shape[:2]
    flat = chunks.reshape(-1, a.shape[1])
    np.testing.assert_array_equal(flat[:P], a)  # row-major order gives a back
    np.testing.assert_array_equal(flat[P:], np.broadcast_to(a[-1], flat[P:].shape))  # last row
    np.testing.assert_array_equal(real.reshape(-1), np.arange(flat.shape[0]) < P)


def test_pad_rows_and_errors():
    np.testing.assert_array_equal(pad_rows(np.array([3, 4]), 4), [3, 4, 4, 4])
    with pytest.raises(ValueError, match="total must be >= the number of rows 2"):
        pad_rows(np.array([3, 4]), 1)
    with pytest.raises(ValueError, match="at least one row"):
        pad_rows(np.zeros((0, 2)), 3)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        pad_chunks(np.arange(3), 0)
    with pytest.raises(ValueError, match=r"num_chunks must be >= ceil\(P / chunk\) = 2"):
        pad_chunks(np.arange(3), 2, num_chunks=1)


def test_rows_per_chunk():
    assert rows_per_chunk(10) == 10  # a small matrix fits in one block
    assert rows_per_chunk(10**6) == DEFAULT_BLOCK_ENTRIES // 10**6
    assert rows_per_chunk(10**8) == 1
    assert rows_per_chunk(50, 7) == 7 and rows_per_chunk(5, 7) == 5
    for bad in (0, -1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
            rows_per_chunk(10, bad)
