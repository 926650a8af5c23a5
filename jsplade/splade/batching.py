"""Length bucketing: pad batches to a fixed ladder of lengths so a corpus compiles a bounded number of
programs (one per (rows, length) shape), not one per batch.

Two ladders, because a new shape costs very different amounts in the two places that pad:

* ``LENGTH_LADDER`` (training batches): a training step compiles for a minute or more, so the steps are
  coarse — 16 tokens up to 256, 64 up to 512, then ×1.25–1.5: at most 34 distinct lengths up to 16384.
* ``ENCODE_LENGTH_LADDER`` (``SparseEncoder.encode_document``): an encoding program compiles in about a
  second at passage lengths (v3-gte, 32 × 176 tokens, 2-core CPU), so below 512 tokens the steps are
  finer — 8 tokens up to 256, 32 up to 512 — and padding costs less: 2,000 LIMIT documents (159 tokens on
  average, batches of 32) pad to 324,864 tokens instead of 332,544 (317,224 real), with 6 programs
  instead of 4. Above 512 tokens it is the training ladder.
"""

from __future__ import annotations

import numpy as np

LENGTH_LADDER = tuple(range(16, 257, 16)) + (320, 384, 448, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072,
                                             4096, 5120, 6144, 8192, 10240, 12288, 16384)
ENCODE_LENGTH_LADDER = (tuple(range(8, 257, 8)) + tuple(range(288, 513, 32))
                        + tuple(n for n in LENGTH_LADDER if n > 512))


def padded_length(n_tokens: int, max_length: int, ladder: tuple[int, ...] = LENGTH_LADDER) -> int:
    """The smallest ``ladder`` length >= n_tokens, capped at ``max_length`` (beyond the ladder: max_length)."""
    for length in ladder:
        if length >= n_tokens:
            return min(length, max_length)
    return max_length


def pow2_at_least(n: int) -> int:
    """Row counts are padded to powers of two for the same reason."""
    return 1 << max(0, (n - 1).bit_length())


def length_batches(lengths: np.ndarray, batch_size: int, tokens_per_batch: int, max_length: int,
                   ladder: tuple[int, ...] = ENCODE_LENGTH_LADDER) -> list[tuple[np.ndarray, int]]:
    """The encoder's batches: (row indices, padded length) of rows sorted by length (longest first, stable),
    each batch at most ``batch_size`` rows and ``tokens_per_batch`` padded tokens."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        pad_len = padded_length(int(lengths[order[start]]), max_length, ladder)
        size = max(1, min(batch_size, tokens_per_batch // pad_len))
        batches.append((order[start:start + size], pad_len))
        start += size
    return batches


def pad_rows(ids, rows: np.ndarray, pad_len: int, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(input ids, attention mask) [n_rows, pad_len] int32 of ``ids[r]`` for r in ``rows``; filler rows
    beyond ``len(rows)`` hold one attended pad token (their outputs are discarded)."""
    ids_BxL = np.zeros((n_rows, pad_len), np.int32)
    mask_BxL = np.zeros((n_rows, pad_len), np.int32)
    for i, r in enumerate(rows):
        ids_BxL[i, :len(ids[r])] = ids[r]
        mask_BxL[i, :len(ids[r])] = 1
    mask_BxL[len(rows):, 0] = 1
    return ids_BxL, mask_BxL
