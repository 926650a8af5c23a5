"""Approximate sparse retrieval with Seismic (the ``pyseismic-lsr`` package, optional dependency).

Seismic builds a pruned, clustered inverted index with block summaries and answers dot-product top-k
queries approximately. This wrapper feeds it the same CSR encodings as ``jsplade.retrieval.index.SparseIndex``,
using the tokenizer's token strings as components, and measures its recall against the exact index.

Seismic stores values in reduced precision, so its scores are close to, not equal to, the float32 dot
products; query tokens that occur in no document are ignored; an empty query returns no result.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from jsplade.retrieval.index import SparseIndex, check_ids
from jsplade.retrieval.opensearch import token_table
from jsplade.splade.sparse import as_csr

__all__ = ["SeismicIndex"]


def _seismic():
    try:
        import seismic
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("jsplade.retrieval.seismic needs the optional package pyseismic-lsr "
                          "(pip install pyseismic-lsr)") from exc
    return seismic


class SeismicIndex:
    """A Seismic index over documents ``doc_ids`` with encodings ``encodings`` (CSR/dense [N, V]).

    ``tokenizer`` (``id_to_token``) names the components. The build parameters are Seismic's:
    ``n_postings`` (average posting-list length kept after pruning), ``centroid_fraction`` (clusters per
    list), ``summary_energy`` (fraction of a block's mass its summary keeps), ``doc_cut``; larger values
    trade speed for recall. ``num_threads`` 0 lets Seismic choose.
    """

    def __init__(self, doc_ids: Sequence[str], encodings: Any, tokenizer: Any, n_postings: int = 3500,
                 centroid_fraction: float = 0.1, summary_energy: float = 0.4, doc_cut: int = 15,
                 num_threads: int = 0):
        seismic = _seismic()
        ids = check_ids(doc_ids, "doc_ids")
        m = as_csr(encodings, arg="encodings").copy()
        if m.shape[0] != len(ids):
            raise ValueError(f"encodings has {m.shape[0]} rows, expected {len(ids)} (one per doc id)")
        if not len(ids):
            raise ValueError("doc_ids is empty; Seismic needs at least one document")
        if not np.isfinite(m.data).all():
            raise ValueError("encodings contain NaN or infinite values")
        m.sum_duplicates()
        m.eliminate_zeros()
        self.vocab_size = m.shape[1]
        self._string = seismic.get_seismic_string()
        width = np.dtype(self._string).itemsize // 4
        tokens = token_table(tokenizer, self.vocab_size)
        too_long = [t for t in tokens if len(t) > width]
        if too_long:
            raise ValueError(f"token {too_long[0]!r} is longer than Seismic's {width}-character limit")
        self._tokens = np.asarray(tokens, dtype=self._string)
        dataset = seismic.SeismicDataset()
        for i, doc_id in enumerate(ids):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            dataset.add_document(doc_id, self._tokens[m.indices[lo:hi]], m.data[lo:hi].astype(np.float32))
        self._index = seismic.SeismicIndex.build_from_dataset(
            dataset, n_postings=int(n_postings), centroid_fraction=float(centroid_fraction),
            summary_energy=float(summary_energy), doc_cut=int(doc_cut), num_threads=int(num_threads))
        self._present_V = np.zeros(self.vocab_size, dtype=bool)
        self._present_V[m.indices] = True
        self.n_docs = len(ids)

    @classmethod
    def from_sparse_index(cls, index: SparseIndex, tokenizer: Any, **build_kwargs: Any) -> "SeismicIndex":
        """Build from the documents of an exact ``SparseIndex``."""
        return cls(index.ids, index.matrix, tokenizer, **build_kwargs)

    def search(self, queries: Any, k: int, query_cut: int = 50, heap_factor: float = 0.9,
               num_threads: int = 0) -> tuple[list[list[str]], list[np.ndarray]]:
        """Approximate top-k per query row: (ids [Q][<=k], scores [Q] float32 arrays), best first.

        ``query_cut``: the query's largest entries Seismic uses; ``heap_factor`` < 1 prunes blocks whose
        summary score is below that fraction of the current k-th score (1.0 = less pruning, slower).
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = as_csr(queries, vocab_size=self.vocab_size, arg="queries").copy()
        if not np.isfinite(q.data).all():
            raise ValueError("queries contain NaN or infinite values")
        q.sum_duplicates()
        q.eliminate_zeros()
        qids = np.asarray([str(i) for i in range(q.shape[0])], dtype=self._string)
        comps, vals, nonempty = [], [], []
        for i in range(q.shape[0]):
            lo, hi = q.indptr[i], q.indptr[i + 1]
            keep = self._present_V[q.indices[lo:hi]]
            if keep.any():
                comps.append(self._tokens[q.indices[lo:hi][keep]])
                vals.append(q.data[lo:hi][keep].astype(np.float32))
                nonempty.append(i)
        ids: list[list[str]] = [[] for _ in range(q.shape[0])]
        scores: list[np.ndarray] = [np.zeros(0, np.float32) for _ in range(q.shape[0])]
        if nonempty:
            results = self._index.batch_search(qids[nonempty], comps, vals, k=int(k), query_cut=int(query_cut),
                                               heap_factor=float(heap_factor), num_threads=int(num_threads))
            # each hit is (query id, score, doc id); map by the query id rather than trusting the list order
            for hits in results:
                if not hits:
                    continue
                row = int(hits[0][0])
                hits = sorted(hits, key=lambda h: (-h[1], h[2]))
                ids[row] = [h[2] for h in hits]
                scores[row] = np.asarray([h[1] for h in hits], dtype=np.float32)
        return ids, scores

    def recall_against(self, exact_index: SparseIndex, queries: Any, k: int, **search_kwargs: Any) -> float:
        """Mean over queries of |approximate top-k ∩ exact top-k| / |exact top-k|.

        The exact top-k counts only documents with a positive score (documents sharing no token with the
        query all score 0 and are not retrievable by an inverted index); queries without any are left out,
        and with none left the recall is 1.0 by convention.
        """
        exact_ids, exact_scores = exact_index.search(queries, k)
        approx_ids, _ = self.search(queries, k, **search_kwargs)
        values = []
        for approx, ids, scores in zip(approx_ids, exact_ids, exact_scores):
            expected = {i for i, s in zip(ids, scores) if s > 0}
            if expected:
                values.append(len(set(approx) & expected) / len(expected))
        return float(np.mean(values)) if values else 1.0
