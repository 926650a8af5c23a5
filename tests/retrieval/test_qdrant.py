"""Qdrant (qdrant-client local mode): same top-10 as the exact index on LIMIT-small and on a generated
LIMIT-style corpus of 3,000 documents, measured float32 score error, persistence, empty rows, bad input.

Encodings (no training): BM25 document weights (k1 0.9, b 0.4) over the bert-base-uncased WordPiece ids of
each text, and inference-free queries weighting each distinct query token by its BM25 IDF. Every LIMIT
document holds "likes", so every query shares a token with every document and equal document lengths
give exact score ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.bm25_vectors import bert_tokenizer, generated_vectors, limit_small_vectors


from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.qdrant import QdrantSparseIndex

K = 10


@pytest.fixture(scope="module")
def tokenizer():
    return bert_tokenizer()


@pytest.fixture(scope="module")
def limit_small(tokenizer):
    return limit_small_vectors(tokenizer)


@pytest.fixture(scope="module")
def generated(tokenizer):
    return generated_vectors(tokenizer, query_stride=7, max_queries=80)


def exact_scores(queries, docs):
    """float64 dot products of the float32 weights (products exact, sums to ~1e-16 relative)."""
    return (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()


def assert_same_topk(got_ids, got_scores, S, doc_ids, k, tol):
    """Engine top-k == exact top-k (rule: score desc, id asc) except documents within ``tol[q]`` of the exact
    k-th score; every engine score within ``tol[q]`` of the exact one. Returns the number of queries whose
    list equals the exact list."""
    pos = {d: j for j, d in enumerate(doc_ids)}
    id_rank = np.argsort(np.argsort(np.asarray(doc_ids, dtype=object)))
    kk = min(k, len(doc_ids))
    identical = 0
    for i, (ids, scores) in enumerate(zip(got_ids, got_scores)):
        order = np.lexsort((id_rank, -S[i]))[:kk]
        expected = [doc_ids[j] for j in order]
        assert len(ids) == kk and len(set(ids)) == kk
        cols = [pos[d] for d in ids]
        np.testing.assert_allclose(scores, S[i, cols], rtol=0, atol=tol[i])
        # the engine's own order follows the rule on its own scores
        assert [ids[j] for j in sorted(range(kk), key=lambda j: (-scores[j], id_rank[cols[j]]))] == ids
        kth = S[i, order[-1]]
        for d in set(ids) ^ set(expected):
            assert abs(S[i, pos[d]] - kth) <= 2 * tol[i], (i, d, S[i, pos[d]], kth)
        identical += ids == expected
    return identical


def float32_tolerance(queries, S):
    nnz = np.diff(queries.indptr)
    return (nnz + 1) * 2.0 ** -24 * np.abs(S).max(axis=1) + 1e-12


def test_limit_small_top10_matches_exact_index(limit_small):
    ids, docs, queries = limit_small
    index = QdrantSparseIndex(ids, docs)
    assert len(index) == 46 and index.vocab_size == docs.shape[1]
    got_ids, got_scores = index.search(queries, K)
    assert got_scores.shape == (1000, K) and got_scores.dtype == np.float32
    S = exact_scores(queries, docs)
    identical = assert_same_topk(got_ids, got_scores, S, ids, K, float32_tolerance(queries, S))
    exact = SparseIndex(docs.shape[1])
    exact.add(ids, docs)
    exact_ids, _ = exact.search(queries, K)
    # the data has ties (equal document lengths); on them both engines apply the id rule
    assert identical >= 990 and sum(a == b for a, b in zip(got_ids, exact_ids)) >= 990
    index.close()


def test_local_mode_score_error_is_one_float32_rounding(limit_small):
    """Measured: local mode rounds the float64 sum once, so |score - s| <= |s| * 2**-24 (half an ulp)."""
    ids, docs, queries = limit_small
    index = QdrantSparseIndex(ids, docs)
    got_ids, got_scores = index.search(queries, 46)
    S = exact_scores(queries, docs)
    pos = {d: j for j, d in enumerate(ids)}
    ref = np.stack([S[i, [pos[d] for d in row]] for i, row in enumerate(got_ids)])
    err = np.abs(got_scores.astype(np.float64) - ref)
    assert (err <= np.abs(ref) * 2.0 ** -24 * (1 + 1e-9) + 1e-300).all()
    assert err.max() > 0   # float32 really is coarser than the float64 reference
    rel = err[ref > 0] / ref[ref > 0]
    assert rel.max() <= 2.0 ** -24 * (1 + 1e-9)


def test_generated_corpus_persisted_and_reopened(generated, tmp_path):
    ids, docs, queries = generated
    path = tmp_path / "qdrant"
    index = QdrantSparseIndex(ids, docs, path=path, collection="limit", vector_name="bm25", batch_size=500)
    got = index.search(queries, K)
    index.close()
    S = exact_scores(queries, docs)
    identical = assert_same_topk(*got, S, ids, K, float32_tolerance(queries, S))
    assert identical >= queries.shape[0] - 2
    with QdrantSparseIndex.open(path, collection="limit") as again:
        assert again.ids == ids and again.vector_name == "bm25" and again.vocab_size == docs.shape[1]
        again_ids, again_scores = again.search(queries, K)
    assert again_ids == got[0]
    np.testing.assert_array_equal(again_scores, got[1])
    with pytest.raises(FileExistsError):
        QdrantSparseIndex(ids[:3], docs[:3], path=path)
    with pytest.raises(ValueError, match="no collection 'jsplade'"):
        QdrantSparseIndex.open(path)


def test_empty_rows_ties_and_negative_weights_match_exact_index():
    rng = np.random.default_rng(0)
    V = 40
    docs = sp.random(60, V, density=0.1, format="csr", random_state=rng, dtype=np.float64)
    docs.data = np.round(docs.data * 4) / 4 + 0.25      # quarter steps: many exact ties
    docs = docs.tolil()
    docs[5, :] = 0                                       # a document without entries
    docs[7, 3] = -1.5                                    # a negative weight
    docs = docs.tocsr().astype(np.float32)
    ids = [f"doc{i:02d}" for i in rng.permutation(60)]
    queries = sp.random(30, V, density=0.08, format="csr", random_state=rng, dtype=np.float64)
    queries.data = np.round(queries.data * 2) / 2 + 0.5
    queries = queries.tolil()
    queries[0, :] = 0                                    # an empty query row
    queries[1, :] = 0
    queries[1, 3] = 1.0                                  # matches the negative entry
    queries = queries.tocsr().astype(np.float32)
    index = QdrantSparseIndex(ids, docs)
    exact = SparseIndex(V)
    exact.add(ids, docs)
    for k in (1, 10, 60, 100):
        got_ids, got_scores = index.search(queries, k)
        exact_ids, exact_scores = exact.search(queries, k)
        assert got_ids == exact_ids                      # dyadic weights: exact scores, ties by id
        np.testing.assert_array_equal(got_scores, exact_scores)
    assert got_ids[0] == sorted(ids) and not got_scores[0].any()
    empty_ids, empty_scores = index.search(sp.csr_matrix((0, V), dtype=np.float32), 5)
    assert empty_ids == [] and empty_scores.shape == (0, 5)


def test_bad_input():
    docs = sp.random(4, 10, density=0.5, format="csr", random_state=0, dtype=np.float32)
    ids = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="encodings has 4 rows, expected 3"):
        QdrantSparseIndex(ids[:3], docs)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        QdrantSparseIndex(["a", "a", "c", "d"], docs)
    with pytest.raises(ValueError, match="doc_ids is empty"):
        QdrantSparseIndex([], docs[:0])
    bad = docs.copy()
    bad.data[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        QdrantSparseIndex(ids, bad)
    with pytest.raises(ValueError, match="batch_size"):
        QdrantSparseIndex(ids, docs, batch_size=0)
    with pytest.raises(ValueError, match="collection"):
        QdrantSparseIndex(ids, docs, collection="")
    index = QdrantSparseIndex(ids, docs)
    with pytest.raises(ValueError, match="queries has 11 columns, expected the vocabulary size 10"):
        index.search(np.ones((1, 11), np.float32), 3)
    for k in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(docs[:1], k)
    with pytest.raises(FileNotFoundError):
        QdrantSparseIndex.open("/nonexistent/qdrant-folder")
