"""jsplade.splade.batching: the length ladders (training: coarse; encoding: finer below 512 tokens) and row padding."""

from __future__ import annotations

import numpy as np
import pytest

from jsplade.splade.batching import ENCODE_LENGTH_LADDER, LENGTH_LADDER, padded_length, pow2_at_least


@pytest.mark.parametrize("ladder", [LENGTH_LADDER, ENCODE_LENGTH_LADDER])
def test_ladders_are_increasing_multiples_of_8_up_to_16384(ladder):
    assert all(a < b for a, b in zip(ladder, ladder[1:]))
    assert all(n % 8 == 0 for n in ladder) and ladder[-1] == 16384
    assert len(ladder) <= 60  # a bounded number of programs whatever the corpus


def test_encode_ladder_is_finer_below_512_and_the_training_ladder_above():
    assert [padded_length(n, 8192, ENCODE_LENGTH_LADDER) - n for n in range(1, 257)] == [(-n) % 8 for n in range(1, 257)]
    assert max(padded_length(n, 8192, ENCODE_LENGTH_LADDER) - n for n in range(257, 513)) == 31
    assert [n for n in ENCODE_LENGTH_LADDER if n > 512] == [n for n in LENGTH_LADDER if n > 512]
    assert set(LENGTH_LADDER) <= set(ENCODE_LENGTH_LADDER)  # never pads more than the training ladder
    assert padded_length(130, 8192) == 144 and padded_length(130, 8192, ENCODE_LENGTH_LADDER) == 136


@pytest.mark.parametrize("ladder", [LENGTH_LADDER, ENCODE_LENGTH_LADDER])
def test_padded_length_is_the_smallest_ladder_length_capped_at_the_maximum(ladder):
    for n in np.random.default_rng(0).integers(1, 20000, size=300):
        got = padded_length(int(n), 20000, ladder)
        above = [length for length in ladder if length >= n]
        assert got == (above[0] if above else 20000)
    assert padded_length(300, 256, ladder) == 256  # capped at max_length
    assert padded_length(17000, 17500, ladder) == 17500  # beyond the ladder: max_length


def test_pow2_at_least():
    assert [pow2_at_least(n) for n in (1, 2, 3, 4, 5, 31, 32, 33)] == [1, 2, 4, 4, 8, 32, 32, 64]


def test_length_batches_sort_by_length_and_respect_both_budgets():
    import numpy as np

    from jsplade.splade.batching import length_batches, pad_rows

    lengths = np.array([5, 300, 17, 17, 9, 300, 1])
    batches = length_batches(lengths, batch_size=2, tokens_per_batch=640, max_length=512)
    assert [rows.tolist() for rows, _ in batches] == [[1, 5], [2, 3], [4, 0], [6]]  # longest first, stable
    assert [L for _, L in batches] == [320, 24, 16, 8]
    assert all(len(rows) * L <= 640 for rows, L in batches)
    assert [rows.tolist() for rows, _ in length_batches(lengths, 8, 600, 512)][0] == [1]  # 600 // 320 = 1 row
    ids = [np.arange(n) + 1 for n in lengths]
    a, m = pad_rows(ids, np.array([2, 6]), 24, 4)
    assert a.shape == m.shape == (4, 24) and a.dtype == np.int32
    assert a[0, :17].tolist() == list(range(1, 18)) and m[0].sum() == 17 and m[1].sum() == 1
    assert m[2:].sum(axis=1).tolist() == [1, 1] and a[2:].sum() == 0  # filler rows: one attended pad token
