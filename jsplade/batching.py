"""Length bucketing: pad batches to a small fixed ladder of lengths so a corpus compiles a handful of
programs (one per (rows, length) shape), not one per batch."""

from __future__ import annotations

# Roughly ×1.5 apart: padding wastes at most a third; at most ~20 distinct lengths up to 16384.
LENGTH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
                 6144, 8192, 12288, 16384)


def padded_length(n_tokens: int, max_length: int) -> int:
    """The smallest ladder length >= n_tokens, capped at ``max_length`` (beyond the ladder: max_length)."""
    for length in LENGTH_LADDER:
        if length >= n_tokens:
            return min(length, max_length)
    return max_length


def pow2_at_least(n: int) -> int:
    """Row counts are padded to powers of two for the same reason."""
    return 1 << max(0, (n - 1).bit_length())
