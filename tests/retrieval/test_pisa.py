"""PISA (pyterrier_pisa): exact top-10 of the quantised scores, the exact index's top-10 within the derived
quantisation bound on LIMIT-small and a generated 3,000-document corpus, persistence, no Java, bad input.

Encodings (no training): BM25 document weights (k1 0.9, b 0.4) over the bert-base-uncased WordPiece ids of
each text, and inference-free queries weighting each distinct query token by its BM25 IDF (as in
test_qdrant.py). Equal document lengths give exact ties, before and after quantisation.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.bm25_vectors import bert_tokenizer, generated_vectors, limit_small_vectors


from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.pisa import PisaSparseIndex, quantize, token_string

K = 10


@pytest.fixture(scope="module")
def tokenizer():
    return bert_tokenizer()


@pytest.fixture(scope="module")
def limit_small(tokenizer):
    return limit_small_vectors(tokenizer)


@pytest.fixture(scope="module")
def generated(tokenizer):
    return generated_vectors(tokenizer, query_stride=3, max_queries=300)


def topk_by_rule(S, doc_ids, k):
    """Row-wise top-k columns of the score matrix S by (score desc, id asc)."""
    id_rank = np.argsort(np.argsort(np.asarray(doc_ids, dtype=object)))
    return [np.lexsort((id_rank, -row))[:k] for row in S]


def check_against_exact(index, docs, queries, ids, k):
    """PISA == exact top-k of its integer scores; and within 2*beta of the exact float top-k. Returns the
    number of queries whose list equals the exact index's."""
    got_ids, raw = index.search(queries, k, raw_scores=True)
    _, scaled = index.search(queries, k)
    np.testing.assert_array_equal(scaled, (raw / (index.factor * index.query_factor)).astype(np.float32))
    dhat, qhat = quantize(docs, index.factor), index.quantize_queries(queries)
    Shat = (qhat @ dhat.T).toarray()
    assert Shat.max() < 2 ** 24                     # PISA's float32 sums are exact integers here
    S = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    beta = index.score_bound(queries)
    pos = {d: j for j, d in enumerate(ids)}
    qfix = Shat / (index.factor * index.query_factor)
    assert (np.abs(qfix - S) <= beta[:, None] + 1e-9).all()      # the bound holds for every document
    kk = min(k, len(ids))
    exact = SparseIndex(docs.shape[1])
    exact.add(ids, docs)
    exact_ids, _ = exact.search(queries, k)
    identical = 0
    wanted = zip(got_ids, topk_by_rule(Shat, ids, kk), topk_by_rule(S, ids, kk))
    for i, (row, want_int, want_exact) in enumerate(wanted):
        assert row == [ids[j] for j in want_int]                   # exact on the quantised scores, ties by id
        np.testing.assert_array_equal(raw[i], Shat[i, want_int])
        kth = S[i, want_exact[-1]]
        for d in set(row) ^ {ids[j] for j in want_exact}:
            assert abs(S[i, pos[d]] - kth) <= 2 * beta[i] + 1e-9, (i, d)
        identical += row == exact_ids[i]
    return identical


def test_limit_small_top10(limit_small):
    ids, docs, queries = limit_small
    index = PisaSparseIndex(ids, docs)                 # factor 100, block_max_wand
    assert len(index) == 46 and index.ids == ids
    identical = check_against_exact(index, docs, queries, ids, K)
    # At factor 100 the token "likes" (in every document, BM25 weight about 0.01) quantises to impact 1 for
    # all documents, so the tail of most lists is one big tie (measured: 55 of 1000 lists equal the float
    # ranking, all within the bound); the leading documents agree (measured 977 of 1000 top-2 lists).
    exact = SparseIndex(docs.shape[1])
    exact.add(ids, docs)
    exact_ids, _ = exact.search(queries, K)
    got_ids, _ = index.search(queries, K)
    assert sum(a[:2] == b[:2] for a, b in zip(got_ids, exact_ids)) >= 950
    for algorithm in ("maxscore", "ranked_or", "wand", "block_max_maxscore"):
        other_ids, other_scores = index.search(queries[:200], K, query_algorithm=algorithm)
        base_ids, base_scores = index.search(queries[:200], K)
        assert other_ids == base_ids, algorithm
        np.testing.assert_array_equal(other_scores, base_scores)
    # a finer quantisation tightens the bound and agrees more often with the float ranking
    # (factor * query_factor is limited by PISA's float32 sums: 1000 * 1000 gives scores above 2**24 here)
    fine = PisaSparseIndex(ids, docs, factor=500.0, query_factor=500.0, query_algorithm="maxscore")
    assert (fine.score_bound(queries) < index.score_bound(queries) / 4).all()
    fine_identical = check_against_exact(fine, docs, queries, ids, K)
    assert fine_identical > 3 * identical, (fine_identical, identical)
    index.close()
    fine.close()


def test_generated_corpus_persisted_and_reopened(generated, tmp_path):
    ids, docs, queries = generated
    path = tmp_path / "pisa"
    index = PisaSparseIndex(ids, docs, path=path, factor=100.0)
    identical = check_against_exact(index, docs, queries, ids, K)
    assert identical >= 0.8 * queries.shape[0]
    got = index.search(queries, K)
    index.close()
    assert path.is_dir()
    again = PisaSparseIndex.open(path, query_algorithm="maxscore")
    assert again.ids == ids and again.factor == 100.0 and again.vocab_size == docs.shape[1]
    again_ids, again_scores = again.search(queries, K)
    assert again_ids == got[0]
    np.testing.assert_array_equal(again_scores, got[1])
    with pytest.raises(FileExistsError):
        PisaSparseIndex(ids[:3], docs[:3], path=path)
    replaced = PisaSparseIndex(ids[:3], docs[:3], path=path, overwrite=True)
    assert len(PisaSparseIndex.open(path)) == 3 and len(replaced) == 3


def test_quantisation_rounds_and_empty_rows():
    w = np.array([[0.004, 0.006, 0.0149, 1.234, 0.0]], np.float32)
    np.testing.assert_array_equal(quantize(w, 100.0).toarray(), [[0, 1, 1, 123, 0]])
    assert token_string(30521) == "t30521"
    docs = sp.csr_matrix(np.array([[0.5, 0, 0], [0, 0, 0], [0.5, 0.25, 0], [0.004, 0, 0]], np.float32))
    ids = ["b", "c", "a", "d"]
    index = PisaSparseIndex(ids, docs)
    queries = sp.csr_matrix(np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0.004, 0], [0, 2, 0]], np.float32))
    got_ids, got = index.search(queries, 3, raw_scores=True)
    # "d" has impact round(0.4) = 0: no positive score; ties (a, b at 5000) by id; the rest at 0 by id
    assert got_ids == [["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"]]
    np.testing.assert_array_equal(got, [[5000, 5000, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [5000, 0, 0]])
    ids10, s10 = index.search(queries[:1], 10)
    assert ids10 == [["a", "b", "c", "d"]] and s10.dtype == np.float32 and s10.shape == (1, 4)
    np.testing.assert_allclose(s10, [[0.5, 0.5, 0, 0]])
    assert index.search(sp.csr_matrix((0, 3), dtype=np.float32), 2)[1].shape == (0, 2)
    index.close()


def test_no_java_needed(tmp_path):
    """Build and search with ``jnius`` made unimportable, no JAVA_HOME and no java on PATH."""
    code = textwrap.dedent("""
        import sys
        sys.modules["jnius"] = None          # any attempt to start a JVM through pyjnius fails
        import shutil
        assert shutil.which("java") is None
        import numpy as np, scipy.sparse as sp
        from jsplade.retrieval.pisa import PisaSparseIndex
        docs = sp.random(50, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
        index = PisaSparseIndex([f"d{i}" for i in range(50)], docs)
        ids, scores = index.search(docs[:5], 3)
        import pyterrier as pt
        print("ok", pt.java.started(), ids[0][0])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "JDK_HOME", "JRE_HOME")}
    env["PATH"] = os.path.dirname(sys.executable)
    env.setdefault("HOME", str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:-1] == ["ok", "False"]


def test_bad_input():
    docs = sp.random(4, 10, density=0.5, format="csr", random_state=0, dtype=np.float32)
    ids = ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="encodings has 4 rows, expected 3"):
        PisaSparseIndex(ids[:3], docs)
    neg = docs.copy()
    neg.data[0] = -0.5
    with pytest.raises(ValueError, match="negative weights"):
        PisaSparseIndex(ids, neg)
    with pytest.raises(ValueError, match="doc_ids is empty"):
        PisaSparseIndex([], docs[:0])
    for factor in (0, -1.0, float("inf"), "100"):
        with pytest.raises(ValueError, match="factor must be a positive finite number"):
            PisaSparseIndex(ids, docs, factor=factor)
    with pytest.raises(ValueError, match="query_algorithm must be one of"):
        PisaSparseIndex(ids, docs, query_algorithm="bm25")
    with pytest.raises(ValueError, match="uint32"):
        PisaSparseIndex(ids, docs * 1e9)
    index = PisaSparseIndex(ids, docs)
    with pytest.raises(ValueError, match="queries has 11 columns, expected the vocabulary size 10"):
        index.search(np.ones((1, 11), np.float32), 3)
    with pytest.raises(ValueError, match="queries has negative weights"):
        index.search(-np.ones((1, 10), np.float32), 3)
    with pytest.raises(ValueError, match="lower query_factor"):
        index.search(np.full((1, 10), 1000.0, np.float32), 3)
    for k in (0, -2, False, 1.5):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(docs[:1], k)
    with pytest.raises(FileNotFoundError):
        PisaSparseIndex.open("/nonexistent/pisa-folder")
