"""Exact sparse retrieval: a CSR document index and a bounded-memory running top-k.

Ranking rule used everywhere in jsplade (sentence-transformers 6.x rule): documents are ordered by
descending score, ties by ascending corpus id compared as strings (Python ``str`` order, i.e. by code
point). Ids are turned into integer *ranks* (position in the sorted id list) once, so that every tie is
broken by comparing two integers.

Scores are dot products computed by scipy in float32 (the dtype of the encodings), chunk by chunk; only
``k`` candidates per query are kept between chunks, so memory is bounded by the chunk sizes, not by the
corpus size.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_write_bytes
from jsplade.splade.sparse import as_csr
from jsplade.retrieval.shards import read_shards

__all__ = ["SparseIndex", "TopKAccumulator", "id_ranks", "select_topk", "accumulate_topk", "check_ids"]

FORMAT_TAG = "jsplade.SparseIndex/1"
_PAD_RANK = np.iinfo(np.int64).max - 1   # rank of an empty slot: loses every tie against a real document
_NOT_PICKED = np.iinfo(np.int64).max


def check_ids(ids: Sequence[str], arg: str) -> list[str]:
    """``ids`` as a list of non-empty strings without NUL characters and without duplicates."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{arg} must be a sequence of strings, not a single {type(ids).__name__}")
    out = list(ids)
    seen: set[str] = set()
    for i, x in enumerate(out):
        if not isinstance(x, str):
            raise TypeError(f"{arg}[{i}] must be a str, got {type(x).__name__}")
        if not x or "\x00" in x:
            raise ValueError(f"{arg}[{i}] must be a non-empty string without NUL characters, got {x!r}")
        if x in seen:
            raise ValueError(f"{arg}: duplicate id {x!r}")
        seen.add(x)
    return out


def id_ranks(ids: Sequence[str]) -> np.ndarray:
    """int64 [N]: position of each id in ascending string order (ids must be distinct)."""
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ranks = np.empty(len(ids), dtype=np.int64)
    ranks[np.asarray(order, dtype=np.int64)] = np.arange(len(ids), dtype=np.int64)
    return ranks


def select_topk(scores_QxN: np.ndarray, ranks_QxN: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``min(k, N)`` entries of every row, ordered by (descending score, ascending rank).

    ``ranks_QxN`` (anything broadcastable to the scores' shape) must hold distinct values within a row,
    except for empty slots marked with the pad rank. Returns (scores_QxK, ranks_QxK). Exact: the
    selection is decided by the (score, rank) key, never by the order of the input.
    """
    scores_QxN = np.asarray(scores_QxN)
    q, n = scores_QxN.shape
    ranks_QxN = np.broadcast_to(np.asarray(ranks_QxN, dtype=np.int64), (q, n))
    kk = min(int(k), n)
    if kk == 0:
        return scores_QxN[:, :0], ranks_QxN[:, :0].copy()
    if kk < n:
        # k-th largest score per row; rows keep every entry above it plus the lowest-ranked ties at it.
        kth_Q = np.partition(scores_QxN, n - kk, axis=1)[:, n - kk]
        above = scores_QxN > kth_Q[:, None]
        at = scores_QxN == kth_Q[:, None]
        pick_key_QxN = np.where(above, np.int64(-1), np.where(at, ranks_QxN, _NOT_PICKED))
        cols_QxK = np.argpartition(pick_key_QxN, kk - 1, axis=1)[:, :kk]
        scores_QxK = np.take_along_axis(scores_QxN, cols_QxK, axis=1)
        ranks_QxK = np.take_along_axis(ranks_QxN, cols_QxK, axis=1)
    else:
        scores_QxK, ranks_QxK = scores_QxN, np.array(ranks_QxN)
    order_QxK = np.lexsort((ranks_QxK, -scores_QxK), axis=-1)
    return (np.take_along_axis(scores_QxK, order_QxK, axis=1),
            np.take_along_axis(ranks_QxK, order_QxK, axis=1))


class TopKAccumulator:
    """A running top-k per query over documents that arrive in chunks.

    Holds float64 scores (exact for float32 inputs) and int64 id ranks of the best ``k`` documents seen
    so far per query (empty slots: score -inf, pad rank). Every query row must see the same documents.
    """

    def __init__(self, n_queries: int, k: int):
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)
        self.scores_QxK = np.full((n_queries, self.k), -np.inf, dtype=np.float64)
        self.ranks_QxK = np.full((n_queries, self.k), _PAD_RANK, dtype=np.int64)
        self.seen_Q = np.zeros(n_queries, dtype=np.int64)

    def update(self, scores_BxC: np.ndarray, ranks_C: np.ndarray, rows: slice = slice(None)) -> None:
        """Merge the scores of C new documents (id ranks ``ranks_C``) for the query rows ``rows``."""
        scores_BxC = np.asarray(scores_BxC, dtype=np.float64)
        if np.isnan(scores_BxC).any():
            raise ValueError("scores contain NaN; cannot rank")
        b = scores_BxC.shape[0]
        best_s, best_r = self.scores_QxK[rows], self.ranks_QxK[rows]
        if best_s.shape[0] != b or scores_BxC.shape[1] != len(ranks_C):
            raise ValueError(f"scores of shape {list(scores_BxC.shape)} do not match {best_s.shape[0]} query rows "
                             f"and {len(ranks_C)} document ranks")
        merged_s = np.concatenate([best_s, scores_BxC], axis=1)
        merged_r = np.concatenate([best_r, np.broadcast_to(np.asarray(ranks_C, np.int64), scores_BxC.shape)], axis=1)
        self.scores_QxK[rows], self.ranks_QxK[rows] = select_topk(merged_s, merged_r, self.k)
        self.seen_Q[rows] += scores_BxC.shape[1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(scores_QxK float64, ranks_QxK int64) with K = min(k, documents seen), best first."""
        if self.seen_Q.size and (self.seen_Q != self.seen_Q[0]).any():
            raise RuntimeError("query rows saw different numbers of documents")
        width = min(self.k, int(self.seen_Q[0]) if self.seen_Q.size else 0)
        return self.scores_QxK[:, :width].copy(), self.ranks_QxK[:, :width].copy()


def accumulate_topk(acc: TopKAccumulator, queries_QxV: sp.csr_matrix, docs_DxV: sp.csr_matrix,
                    ranks_D: np.ndarray, chunk_size: int = 8192, query_batch_size: int = 256) -> None:
    """Score every query against every document (dot product) and merge into ``acc``.

    The dense score block never exceeds ``query_batch_size x chunk_size``.
    """
    for name, value in (("chunk_size", chunk_size), ("query_batch_size", query_batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    n_q, n_d = queries_QxV.shape[0], docs_DxV.shape[0]
    for lo in range(0, n_d, chunk_size):
        hi = min(lo + chunk_size, n_d)
        docs_T = docs_DxV[lo:hi].T.tocsc()
        for qlo in range(0, n_q, query_batch_size):
            qhi = min(qlo + query_batch_size, n_q)
            scores_BxC = (queries_QxV[qlo:qhi] @ docs_T).toarray()
            acc.update(scores_BxC, ranks_D[lo:hi], rows=slice(qlo, qhi))


def _check_csr(x: Any, vocab_size: int, rows: int | None, arg: str) -> sp.csr_matrix:
    """Canonical float32 CSR copy (duplicates summed, zeros dropped, indices sorted) of ``x``."""
    m = as_csr(x, vocab_size=vocab_size, arg=arg).copy()
    if rows is not None and m.shape[0] != rows:
        raise ValueError(f"{arg} has {m.shape[0]} rows, expected {rows}")
    if not np.isfinite(m.data).all():
        raise ValueError(f"{arg} contains NaN or infinite values")
    m.sum_duplicates()
    m.eliminate_zeros()
    m.sort_indices()
    m.indices = m.indices.astype(np.int32, copy=False)
    m.indptr = m.indptr.astype(np.int64, copy=False)
    return m


class SparseIndex:
    """Document encodings (CSR float32 [N, V]) with their ids, searched exactly by dot product."""

    def __init__(self, vocab_size: int):
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
        self.vocab_size = int(vocab_size)
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._blocks: list[sp.csr_matrix] = []
        self._matrix: sp.csr_matrix | None = self._empty()
        self._ranks: np.ndarray | None = None
        self._sorted_ids: np.ndarray | None = None

    def _empty(self) -> sp.csr_matrix:
        return sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(1, np.int64)),
                             shape=(0, self.vocab_size))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids in insertion order (row i of ``matrix`` is ``ids[i]``)."""
        return list(self._ids)

    @property
    def matrix(self) -> sp.csr_matrix:
        """All document encodings, CSR float32 [N, V], canonical (sorted indices, no explicit zeros)."""
        if self._blocks:
            parts = ([self._matrix] if self._matrix is not None and self._matrix.shape[0] else []) + self._blocks
            m = sp.vstack(parts, format="csr", dtype=np.float32) if len(parts) > 1 else parts[0]
            m.indices = m.indices.astype(np.int32, copy=False)
            m.indptr = m.indptr.astype(np.int64, copy=False)
            self._matrix, self._blocks = m, []
        return self._matrix

    def add(self, doc_ids: Sequence[str], encodings: Any) -> None:
        """Append documents: ``doc_ids`` (N distinct new ids) and their encodings (CSR or dense [N, V]).

        An id already in the index, a width other than ``vocab_size`` or non-finite values raise
        ``ValueError`` and leave the index unchanged.
        """
        ids = check_ids(doc_ids, "doc_ids")
        for x in ids:
            if x in self._id_set:
                raise ValueError(f"doc_ids: id {x!r} is already in the index")
        block = _check_csr(encodings, self.vocab_size, len(ids), "encodings")
        self._blocks.append(block)
        self._ids.extend(ids)
        self._id_set.update(ids)
        self._ranks = None
        self._sorted_ids = None

    def _id_ranks(self) -> tuple[np.ndarray, np.ndarray]:
        """(rank of each row's id, ids in ascending order as an object array)."""
        if self._ranks is None:
            self._ranks = id_ranks(self._ids)
            self._sorted_ids = np.asarray(sorted(self._ids), dtype=object)
        return self._ranks, self._sorted_ids

    def search(self, queries: Any, k: int, chunk_size: int = 8192,
               query_batch_size: int = 256) -> tuple[list[list[str]], np.ndarray]:
        """Exact top-k by dot product for each query row (CSR or dense [Q, V]).

        Returns (ids [Q][K], scores_QxK float32) with K = min(k, len(index)), best first, ties by
        ascending document id. Memory: one ``query_batch_size x chunk_size`` score block at a time.
        """
        q = _check_csr(queries, self.vocab_size, None, "queries")
        acc = TopKAccumulator(q.shape[0], k)
        ranks_N, sorted_ids = self._id_ranks()
        accumulate_topk(acc, q, self.matrix, ranks_N, chunk_size, query_batch_size)
        scores_QxK, ranks_QxK = acc.result()
        return [list(row) for row in sorted_ids[ranks_QxK]], scores_QxK.astype(np.float32)

    @classmethod
    def from_encoder(cls, encoder: Any, corpus: Mapping[str, str], batch_size: int = 32,
                     show_progress_bar: bool | None = None, max_active_dims: int | None = None,
                     encode_chunk_size: int = 50000) -> "SparseIndex":
        """Encode ``corpus`` (id -> text) with ``encoder.encode_document`` in chunks and index it."""
        if not isinstance(corpus, Mapping):
            raise TypeError(f"corpus must be a mapping id -> text, got {type(corpus).__name__}")
        index = cls(int(encoder.vocab_size))
        ids = list(corpus)
        for lo in range(0, len(ids), encode_chunk_size):
            chunk_ids = ids[lo:lo + encode_chunk_size]
            texts = [corpus[i] for i in chunk_ids]
            enc = encoder.encode_document(texts, batch_size=batch_size, max_active_dims=max_active_dims,
                                          show_progress_bar=show_progress_bar)
            index.add(chunk_ids, enc)
        return index

    @classmethod
    def from_shards(cls, folder: str | Path) -> "SparseIndex":
        """The documents of a finished encoded-corpus shard directory (``jsplade.retrieval.shards``), part by
        part; quantised impacts are divided back by the quantisation factor (float32 weights)."""
        shards = read_shards(folder)
        index = cls(shards.vocab_size)
        for ids, m in shards.iter_vectors():
            index.add(ids, m)
        return index

    def save(self, path: str | Path) -> None:
        """Write the index to ONE ``.npz`` file (no pickled objects), atomically."""
        path = Path(path)
        m = self.matrix
        arrays = {
            "format": np.array(FORMAT_TAG),
            "vocab_size": np.array(self.vocab_size, dtype=np.int64),
            "data": m.data.astype(np.float32, copy=False),
            "indices": m.indices.astype(np.int32, copy=False),
            "indptr": m.indptr.astype(np.int64, copy=False),
            "ids": np.array(self._ids, dtype=str) if self._ids else np.zeros(0, dtype="<U1"),
        }
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getbuffer())

    @classmethod
    def load(cls, path: str | Path) -> "SparseIndex":
        """Read a file written by ``save``; anything malformed raises ``ValueError`` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: sparse index file not found")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("expected an .npz archive, found a single array")
            with loaded as f:
                arrays = {key: f[key] for key in f.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise ValueError(f"{path}: not a readable jsplade sparse index ({exc})") from None
        missing = {"format", "vocab_size", "data", "indices", "indptr", "ids"} - set(arrays)
        if missing:
            raise ValueError(f"{path}: not a jsplade sparse index (missing arrays {sorted(missing)})")
        if arrays["format"].shape != () or str(arrays["format"]) != FORMAT_TAG:
            raise ValueError(f"{path}: unknown index format {arrays['format']!r}, expected {FORMAT_TAG!r}")
        data, indices, indptr, ids = arrays["data"], arrays["indices"], arrays["indptr"], arrays["ids"]
        vocab = arrays["vocab_size"]
        problems = []
        if vocab.shape != () or vocab.dtype.kind != "i" or int(vocab) < 1:
            problems.append("vocab_size must be a positive integer scalar")
        if data.dtype != np.float32 or data.ndim != 1:
            problems.append("data must be a 1-D float32 array")
        if indices.dtype.kind != "i" or indices.ndim != 1 or indices.shape != data.shape:
            problems.append("indices must be a 1-D integer array as long as data")
        if indptr.dtype.kind != "i" or indptr.ndim != 1 or ids.ndim != 1 or ids.dtype.kind != "U":
            problems.append("indptr must be 1-D integers and ids a 1-D unicode array")
        if not problems:
            if indptr.shape[0] != ids.shape[0] + 1 or indptr[0] != 0 or indptr[-1] != data.shape[0] \
                    or (np.diff(indptr) < 0).any():
                problems.append("indptr does not describe len(ids) rows of the stored entries")
            elif indices.size and (indices.min() < 0 or indices.max() >= int(vocab)):
                problems.append("indices outside [0, vocab_size)")
            elif not np.isfinite(data).all():
                problems.append("data holds NaN or infinite values")
        if problems:
            raise ValueError(f"{path}: corrupt sparse index: {'; '.join(problems)}")
        index = cls(int(vocab))
        try:
            index.add([str(x) for x in ids], sp.csr_matrix((data, indices.astype(np.int32), indptr.astype(np.int64)),
                                                          shape=(ids.shape[0], int(vocab))))
        except ValueError as exc:
            raise ValueError(f"{path}: corrupt sparse index: {exc}") from None
        return index
