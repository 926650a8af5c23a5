"""Packing several short documents into one row (encoding and training).

Inside a row each document keeps its own rotary positions (restarting at 0), attends only to its own
tokens (segment ids → block-diagonal attention) and is pooled on its own (fused head with groups), so
a packed batch gives the vectors of the padded path (float rounding aside) with far less padding.

``pack_documents`` places documents first-fit-decreasing into rows of ``row_length`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PackedBatch:
    input_ids: np.ndarray     # [R, L] int32
    attention_mask: np.ndarray  # [R, L] int32 (1 on document tokens)
    position_ids: np.ndarray  # [R, L] int32, restart at 0 for every document
    segment_ids: np.ndarray   # [R, L] int32, 1..G per document in the row, 0 on padding
    group_ids: np.ndarray     # [R, L] int32, 0..G-1 per document, -1 on padding (pooling groups)
    doc_slot: np.ndarray      # [N, 2] int32: (row, group) of each input document
    n_groups: int             # G = most documents in one row

    @property
    def shape(self) -> tuple[int, int]:
        return self.input_ids.shape


def pack_documents(token_ids: list[np.ndarray], row_length: int, max_docs_per_row: int | None = None,
                   min_rows: int = 1) -> PackedBatch:
    """First-fit-decreasing packing of tokenized documents into rows of ``row_length``."""
    if not token_ids:
        raise ValueError("pack_documents needs at least one document")
    lengths = np.array([len(t) for t in token_ids])
    if lengths.max() > row_length:
        raise ValueError(f"a document of {lengths.max()} tokens does not fit in a row of {row_length}")
    if lengths.min() < 1:
        raise ValueError("documents must have at least one token")
    rows_fill: list[int] = []
    rows_docs: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        for r, fill in enumerate(rows_fill):
            if fill + n <= row_length and (max_docs_per_row is None or len(rows_docs[r]) < max_docs_per_row):
                rows_fill[r] += n
                rows_docs[r].append(int(i))
                break
        else:
            rows_fill.append(n)
            rows_docs.append([int(i)])
    while len(rows_docs) < min_rows:
        rows_docs.append([])
    n_rows = len(rows_docs)
    n_groups = max(1, max(len(d) for d in rows_docs))
    ids = np.zeros((n_rows, row_length), np.int32)
    mask = np.zeros_like(ids)
    pos = np.zeros_like(ids)
    seg = np.zeros_like(ids)
    grp = np.full_like(ids, -1)
    slot = np.zeros((len(token_ids), 2), np.int32)
    for r, docs in enumerate(rows_docs):
        start = 0
        for g, i in enumerate(docs):
            n = int(lengths[i])
            ids[r, start:start + n] = token_ids[i]
            mask[r, start:start + n] = 1
            pos[r, start:start + n] = np.arange(n)
            seg[r, start:start + n] = g + 1
            grp[r, start:start + n] = g
            slot[i] = (r, g)
            start += n
    return PackedBatch(ids, mask, pos, seg, grp, slot, n_groups)
