"""The real engines fed from jsplade-encode shards: LIMIT-small encoded by a jsplade model (the demo's
copy-friendly GTE initialisation with IDF query weights, documents pruned to top_k:128; 300 of the
1,000 queries: Qdrant's local mode scores in Python), then the exact index,
Qdrant (local mode) and PISA all built from the shard directory and searched with jsplade's query vectors.

Qdrant: the exact index's top-10, up to documents within float32 rounding of the 10th score (its scores
within (nnz+1)·2⁻²⁴·max). PISA, from shards quantised at factor 100: exactly the top-10 of its integer scores
(ties by id), and against the float ranking only documents within 2β of the 10th score swap (β the
quantisation bound of jsplade.retrieval.pisa).
"""

from __future__ import annotations

import numpy as np
import pytest

from jsplade.limit.data import limit_paths
from jsplade.limit.demo import DemoSettings, build_encoder
from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.corpus import encode_corpus, load_encoded
from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.pisa import PisaSparseIndex
from jsplade.retrieval.qdrant import QdrantSparseIndex

K = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    data = load_beir(limit_paths().limit_small)
    enc = build_encoder(DemoSettings.quick_settings("unused"), list(data.corpus.values()))
    out = tmp_path_factory.mktemp("engines")
    # pruned to each document's 128 largest weights (the untrained initialisation activates ~8,800)
    encode_corpus(enc, limit_paths().limit_small, out / "float", pruning="top_k:128", show_progress_bar=False)
    encode_corpus(enc, limit_paths().limit_small, out / "int", pruning="top_k:128", quantization="int32:100",
                  show_progress_bar=False)
    queries = enc.encode_query(list(data.queries.values())[:300])
    return out, queries


def test_qdrant_from_shards_matches_the_exact_index(setup):
    out, queries = setup
    exact = SparseIndex.from_shards(out / "float")
    ids, docs = load_encoded(out / "float")
    S = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    tol = (np.diff(queries.indptr) + 1) * 2.0 ** -24 * np.abs(S).max(axis=1) + 1e-12
    with QdrantSparseIndex.from_shards(out / "float") as engine:
        got_ids, got_scores = engine.search(queries, K)
    want_ids, want_scores = exact.search(queries, K)
    pos = {d: j for j, d in enumerate(ids)}
    identical = 0
    for i in range(queries.shape[0]):
        np.testing.assert_allclose(got_scores[i], S[i, [pos[d] for d in got_ids[i]]], rtol=0, atol=tol[i])
        kth = float(want_scores[i, -1])
        for d in set(got_ids[i]) ^ set(want_ids[i]):
            assert abs(S[i, pos[d]] - kth) <= 2 * tol[i], (i, d)
        identical += got_ids[i] == want_ids[i]
    assert identical >= 290, identical  # measured: all but near-ties identical


def test_pisa_from_quantised_shards(setup):
    out, queries = setup
    ids, docs = load_encoded(out / "float")
    qids, deq = load_encoded(out / "int")
    assert qids == ids
    engine = PisaSparseIndex.from_shards(out / "int")
    assert engine.factor == 100.0
    with pytest.raises(ValueError, match="quantised with factor 100.0, not 10"):
        PisaSparseIndex.from_shards(out / "int", factor=10)
    got_ids, raw = engine.search(queries, K, raw_scores=True)
    dhat = np.rint(deq.astype(np.float64) * 100).astype(np.int64)  # the shard's own impacts
    qhat = engine.quantize_queries(queries)
    Shat = (qhat @ dhat.T).toarray()
    S = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    beta = engine.score_bound(queries)
    assert (np.abs(Shat / (100.0 * engine.query_factor) - S) <= beta[:, None] + 1e-9).all()
    id_rank = np.argsort(np.argsort(np.asarray(ids, dtype=object)))
    pos = {d: j for j, d in enumerate(ids)}
    for i in range(queries.shape[0]):
        want = np.lexsort((id_rank, -Shat[i]))[:K]
        assert got_ids[i] == [ids[j] for j in want]
        np.testing.assert_array_equal(raw[i], Shat[i, want])
        exact = np.lexsort((id_rank, -S[i]))[:K]
        kth = S[i, exact[-1]]
        for d in set(got_ids[i]) ^ {ids[j] for j in exact}:
            assert abs(S[i, pos[d]] - kth) <= 2 * beta[i] + 1e-9
    engine.close()
