"""Length bucketing: pad batches to a small fixed ladder of lengths so a corpus compiles a handful of
programs (one per (rows, length) shape), not one per batch."""

from __future__ import annotations

# Steps of 16 tokens up to 256 (where most passages are: padding wastes < 10%), of 64 up to 512, then
# ×1.25–1.5: at most 34 distinct lengths up to 16384, and a corpus of similar lengths compiles a few.
LENGTH_LADDER = tuple(range(16, 257, 16)) + (320, 384, 448, 512, 640, 768, 1024, 1280, 1536, 2048, 2560, 3072,
                                             4096, 5120, 6144, 8192, 10240, 12288, 16384)


def padded_length(n_tokens: int, max_length: int) -> int:
    """The smallest ladder length >= n_tokens, capped at ``max_length`` (beyond the ladder: max_length)."""
    for length in LENGTH_LADDER:
        if length >= n_tokens:
            return min(length, max_length)
    return max_length


def pow2_at_least(n: int) -> int:
    """Row counts are padded to powers of two for the same reason."""
    return 1 << max(0, (n - 1).bit_length())
