"""Seismic approximate index: recall against the exact index (needs pyseismic-lsr, a test dependency)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.seismic import SeismicIndex

V = 300


class NumberedTokenizer:
    def id_to_token(self, i):
        return f"tok{i}" if 0 <= i < V else None


def random_rows(seed, n, density):
    rng = np.random.default_rng(seed)
    m = sp.random(n, V, density=density, format="csr", random_state=rng, dtype=np.float64)
    m.data = rng.gamma(1.0, 1.0, size=m.nnz) + 0.01          # positive, heavy-ish tail like SPLADE weights
    return m.astype(np.float32)


@pytest.fixture(scope="module")
def built():
    docs = random_rows(0, 2000, 0.04)
    ids = [f"d{i}" for i in range(2000)]
    exact = SparseIndex(V)
    exact.add(ids, docs)
    approx = SeismicIndex.from_sparse_index(exact, NumberedTokenizer(), n_postings=2000, centroid_fraction=0.2,
                                            summary_energy=0.9, doc_cut=30, num_threads=1)
    return exact, approx


def test_recall_against_exact_index(built):
    exact, approx = built
    queries = random_rows(1, 40, 0.03)
    recall = approx.recall_against(exact, queries, k=10, query_cut=30, heap_factor=1.0, num_threads=1)
    assert 0.9 <= recall <= 1.0
    ids, scores = approx.search(queries, 10, query_cut=30, heap_factor=1.0, num_threads=1)
    exact_ids, exact_scores = exact.search(queries, 10)
    for row_ids, row_scores, e_ids in zip(ids, scores, exact_ids):
        assert len(row_ids) <= 10 and np.all(np.diff(row_scores) <= 0)
    # scores are close to the exact dot products (Seismic stores values in reduced precision)
    pos = {c: j for j, c in enumerate(exact.ids)}
    dense = (queries @ exact.matrix.T).toarray()
    for i, (row_ids, row_scores) in enumerate(zip(ids, scores)):
        ref = dense[i, [pos[c] for c in row_ids]]
        np.testing.assert_allclose(row_scores, ref, rtol=5e-3, atol=1e-3)


def test_aggressive_pruning_lowers_recall_measurably(built):
    """The measurement is real: a heavily pruned index loses recall the generous one keeps."""
    exact, _ = built
    queries = random_rows(1, 40, 0.03)
    tight = SeismicIndex.from_sparse_index(exact, NumberedTokenizer(), n_postings=5, centroid_fraction=0.05,
                                           summary_energy=0.1, doc_cut=2, num_threads=1)
    assert tight.recall_against(exact, queries, k=10, query_cut=1, heap_factor=0.3, num_threads=1) < 0.8


def test_empty_and_unknown_queries(built):
    exact, approx = built
    q = np.zeros((2, V), np.float32)
    ids, scores = approx.search(q, 5)
    assert ids == [[], []] and all(s.size == 0 for s in scores)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        approx.search(q, 0)
    with pytest.raises(ValueError, match="columns, expected the vocabulary size"):
        approx.search(np.ones((1, V + 1), np.float32), 5)
    with pytest.raises(ValueError, match="doc_ids is empty"):
        SeismicIndex([], sp.csr_matrix((0, V), dtype=np.float32), NumberedTokenizer())
