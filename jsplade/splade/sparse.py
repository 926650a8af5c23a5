"""Small helpers for sparse vocabulary vectors (CSR rows of width V).

``max_active_dims`` (sentence-transformers semantics): keep the k entries of largest |value| per row,
zero the rest; rows with at most k non-zeros are unchanged. Ties at the cut keep the lower token id
(torch's topk picks arbitrarily among exact ties).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def check_max_active_dims(k, arg: str = "max_active_dims") -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{arg} must be a positive integer or None, got {k!r}")
    return int(k)


def topk_dense_rows(x_BxV: np.ndarray, k: int | None) -> np.ndarray:
    """Copy of ``x_BxV`` keeping the k largest-|value| entries of each row."""
    if k is None or k >= x_BxV.shape[1]:
        return x_BxV
    order = np.argsort(-np.abs(x_BxV), axis=1, kind="stable")[:, :k]
    out = np.zeros_like(x_BxV)
    rows = np.arange(x_BxV.shape[0])[:, None]
    out[rows, order] = x_BxV[rows, order]
    return out


def topk_csr_rows(m: sp.csr_matrix, k: int | None) -> sp.csr_matrix:
    """Same rule on CSR rows."""
    if k is None:
        return m
    m = m.tocsr()
    m.sort_indices()
    counts = np.diff(m.indptr)
    if counts.size == 0 or counts.max() <= k:
        return m
    data, indices, indptr = [], [], [0]
    for r in range(m.shape[0]):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        d, c = m.data[lo:hi], m.indices[lo:hi]
        if hi - lo > k:
            keep = np.sort(np.argsort(-np.abs(d), kind="stable")[:k])
            d, c = d[keep], c[keep]
        data.append(d)
        indices.append(c)
        indptr.append(indptr[-1] + len(d))
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.asarray(indptr)),
                         shape=m.shape, dtype=m.dtype)


def dense_to_csr(x_BxV: np.ndarray) -> sp.csr_matrix:
    """CSR float32 holding exactly the non-zero entries."""
    m = sp.csr_matrix(np.asarray(x_BxV, dtype=np.float32))
    m.eliminate_zeros()
    return m


def as_csr(x, vocab_size: int | None = None, arg: str = "embeddings") -> sp.csr_matrix:
    """Accept CSR/any scipy sparse, a dense 1-D/2-D array; return CSR float32 2-D."""
    if sp.issparse(x):
        m = sp.csr_matrix(x, dtype=np.float32)
    elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        arr = np.asarray(x, dtype=np.float32)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"{arg} must be 1-D or 2-D, got shape {list(arr.shape)}")
        m = dense_to_csr(arr)
    else:
        raise TypeError(f"{arg} must be a scipy sparse matrix or a numpy array, got {type(x).__name__}")
    if vocab_size is not None and m.shape[1] != vocab_size:
        raise ValueError(f"{arg} has {m.shape[1]} columns, expected the vocabulary size {vocab_size}")
    return m


def sparsity(m: sp.csr_matrix) -> dict[str, float]:
    """Mean non-zeros per row (``active_dims``; explicitly stored zeros do not count) and ``1 - active_dims / V``."""
    m = as_csr(m)
    if m.shape[0] == 0:
        active = 0.0
    else:
        rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
        active = float(np.mean(np.bincount(rows[m.data != 0], minlength=m.shape[0])))
    return {"active_dims": active, "sparsity_ratio": 1.0 - active / m.shape[1]}


def canonical_csr(x, vocab_size: int | None = None, rows: int | None = None, arg: str = "encodings") -> sp.csr_matrix:
    """``as_csr(x)`` as a new canonical matrix (duplicates summed, explicit zeros removed, indices sorted),
    checked: ``rows`` rows when given, finite values (a ``ValueError`` naming ``arg`` otherwise)."""
    m = as_csr(x, vocab_size=vocab_size, arg=arg).copy()
    if rows is not None and m.shape[0] != rows:
        raise ValueError(f"{arg} has {m.shape[0]} rows, expected {rows} (one per doc id)")
    if not np.isfinite(m.data).all():
        raise ValueError(f"{arg} contains NaN or infinite values")
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    return m
