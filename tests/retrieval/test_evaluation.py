"""IR metrics, ranking rule, the streaming sparse evaluator and the report helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from helpers.fixtures import SE_FIXTURES
from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.evaluation import (SparseIREvaluator, evaluate_rankings, format_table, ir_metrics, rank_topk,
                                write_results_json)

REPO = Path(__file__).resolve().parents[2]
EXPECTED = SE_FIXTURES / "expected"
ONLY = dict(mrr_at_k=(), ndcg_at_k=(), accuracy_at_k=(), precision_recall_at_k=(), map_at_k=())


class FakeEncoder:
    """Returns stored rows: query text -> row, document text -> row (dense float32 arrays of width V)."""

    def __init__(self, query_rows: dict[str, np.ndarray], doc_rows: dict[str, np.ndarray], vocab_size: int):
        self.query_rows, self.doc_rows, self.vocab_size = query_rows, doc_rows, vocab_size
        self.calls: list[tuple[str, list[str], dict]] = []

    def _encode(self, table, texts, route, **kwargs):
        self.calls.append((route, list(texts), kwargs))
        rows = np.stack([table[t] for t in texts]).astype(np.float32) if texts else np.zeros((0, self.vocab_size))
        return sp.csr_matrix(rows, dtype=np.float32)

    def encode_query(self, texts, batch_size=32, max_active_dims=None, show_progress_bar=None):
        return self._encode(self.query_rows, texts, "query", batch_size=batch_size,
                            max_active_dims=max_active_dims, show_progress_bar=show_progress_bar)

    def encode_document(self, texts, batch_size=32, max_active_dims=None, show_progress_bar=None):
        return self._encode(self.doc_rows, texts, "document", batch_size=batch_size,
                            max_active_dims=max_active_dims, show_progress_bar=show_progress_bar)


@pytest.fixture(scope="module")
def limit_small_scores():
    with np.load(EXPECTED / "eval_limit_small_scores.npz") as f:
        scores, qids, cids = f["scores"], [str(x) for x in f["query_ids"]], [str(x) for x in f["corpus_ids"]]
    data = load_beir(REPO / "data" / "limit-small")
    # the stored matrix uses the file order of queries.jsonl / corpus.jsonl
    assert qids == list(data.queries) and cids == list(data.corpus)
    expected = json.loads((EXPECTED / "eval_limit_small.json").read_text())
    return scores, qids, cids, data, expected


# ---------------------------------------------------------------- reproduction of the ST evaluator numbers

IR_KEYS = [f"dot_{m}@{k}" for m in ("accuracy", "precision", "recall") for k in (1, 3, 5, 10)] + \
          ["dot_ndcg@10", "dot_mrr@10", "dot_map@100"]


def test_ir_metrics_from_stored_scores_match_sentence_transformers(limit_small_scores):
    scores, qids, cids, data, expected = limit_small_scores
    ids, top = rank_topk(scores, cids, 100)
    assert len(ids[0]) == 46 and top.shape == (1000, 46)
    got = evaluate_rankings(dict(zip(qids, ids)), data.relevant_docs())
    assert list(got) == IR_KEYS
    for key in IR_KEYS:
        assert abs(got[key] - expected["metrics"][key]) <= 1e-6, key


def test_streaming_evaluator_reproduces_stored_metrics(limit_small_scores):
    """An encoder whose dot products equal the stored scores: query i = unit vector e_i,
    document j = column j of the score matrix. Several corpus chunks exercise the running top-k."""
    scores, qids, cids, data, expected = limit_small_scores
    n_q = len(qids)
    eye = np.eye(n_q, dtype=np.float32)
    enc = FakeEncoder({data.queries[q]: eye[i] for i, q in enumerate(qids)},
                      {data.corpus[c]: scores[:, j] for j, c in enumerate(cids)}, vocab_size=n_q)
    ev = SparseIREvaluator(data.queries, data.corpus, data.relevant_docs(), corpus_chunk_size=7, batch_size=5,
                           show_progress_bar=False)
    got = ev(enc)
    for key in IR_KEYS:
        assert abs(got[key] - expected["metrics"][key]) <= 1e-6, key
    assert ev.primary_metric == expected["primary_metric"] == "dot_ndcg@10"
    # queries in one call, corpus in ceil(46 / 7) = 7 chunks, options passed through
    routes = [c[0] for c in enc.calls]
    assert routes == ["query"] + ["document"] * 7
    assert all(c[2] == {"batch_size": 5, "max_active_dims": None, "show_progress_bar": False} for c in enc.calls)
    assert got["query_active_dims"] == 1.0 and got["corpus_active_dims"] == float(np.count_nonzero(scores)) / 46


# ---------------------------------------------------------------- hand-made cases, one metric at a time

def one(ranked, relevant, **ks):
    return ir_metrics({"q": ranked}, {"q": relevant}, **{**ONLY, **ks})


def test_accuracy_and_mrr():
    ranked = ["a", "b", "c", "d"]
    assert one(ranked, {"c"}, accuracy_at_k=(1, 2, 3)) == {"accuracy@1": 0.0, "accuracy@2": 0.0, "accuracy@3": 1.0}
    assert one(ranked, {"c", "d"}, mrr_at_k=(2, 3, 4)) == {"mrr@2": 0.0, "mrr@3": 1 / 3, "mrr@4": 1 / 3}


def test_precision_divides_by_k_and_recall_by_R():
    # only 3 documents ranked but k = 5: precision still divides by 5
    got = one(["a", "b", "c"], {"a", "c", "x", "y"}, precision_recall_at_k=(1, 2, 5))
    assert got == {"precision@1": 1.0, "precision@2": 0.5, "precision@5": 2 / 5,
                   "recall@1": 1 / 4, "recall@2": 1 / 4, "recall@5": 2 / 4}


def test_ndcg_ideal_uses_min_k_R():
    ranked = ["x", "a", "y", "b"]
    # R = 2 < k = 4: ideal = 1 + 1/log2(3)
    got = one(ranked, {"a", "b"}, ndcg_at_k=(4,))["ndcg@4"]
    assert got == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)), abs=1e-15)
    # R = 5 > k = 2: ideal has only 2 terms
    got = one(ranked, {"a", "b", "c", "d", "e"}, ndcg_at_k=(2,))["ndcg@2"]
    assert got == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)), abs=1e-15)
    assert one(ranked, {"a", "b"}, ndcg_at_k=(1,))["ndcg@1"] == 0.0


def test_map_denominator_is_min_k_R():
    ranked = ["a", "x", "b", "y", "c"]
    # R = 3, k = 5: (1/1 + 2/3 + 3/5) / 3
    assert one(ranked, {"a", "b", "c"}, map_at_k=(5,))["map@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3, abs=1e-15)
    # R = 4 > k = 3: (1/1 + 2/3) / 3
    assert one(ranked, {"a", "b", "c", "z"}, map_at_k=(3,))["map@3"] == pytest.approx((1 + 2 / 3) / 3, abs=1e-15)
    # no relevant document in the top k
    assert one(ranked, {"c"}, map_at_k=(3,))["map@3"] == 0.0


def test_no_relevant_in_top_k_gives_zero_everywhere():
    got = one(["a", "b", "c"], {"z"}, mrr_at_k=(3,), ndcg_at_k=(3,), accuracy_at_k=(3,),
              precision_recall_at_k=(3,), map_at_k=(3,))
    assert set(got.values()) == {0.0} and len(got) == 6


def test_mean_over_queries_skips_queries_without_relevant_docs():
    rankings = {"q1": ["a", "b"], "q2": ["b", "a"], "q3": ["a", "b"]}
    got = ir_metrics(rankings, {"q1": {"a"}, "q2": {"a"}, "q3": set()}, **{**ONLY, "mrr_at_k": (2,)})
    assert got == {"mrr@2": (1 + 0.5) / 2}
    with pytest.raises(ValueError, match="no ranking for query 'q4'"):
        ir_metrics(rankings, {"q4": {"a"}})
    with pytest.raises(ValueError, match="no query has a relevant document"):
        ir_metrics(rankings, {"q1": set()})
    with pytest.raises(ValueError, match="more than once"):
        ir_metrics({"q": ["a", "a"]}, {"q": {"a"}})
    with pytest.raises(ValueError, match="positive integers"):
        ir_metrics(rankings, {"q1": {"a"}}, ndcg_at_k=(0,))


def test_evaluate_rankings_key_names():
    got = evaluate_rankings({"q": ["a"]}, {"q": {"a"}}, name="lim", score_function="bm25",
                            **{**ONLY, "ndcg_at_k": (10,)})
    assert got == {"lim_bm25_ndcg@10": 1.0}


# ---------------------------------------------------------------- ranking rule

def test_rank_topk_ties_by_ascending_string_id():
    ids = ["b", "a", "10", "9", "c"]
    scores = np.array([[1.0, 1.0, 2.0, 1.0, 0.5],
                       [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    top, vals = rank_topk(scores, ids, 3)
    assert top == [["10", "9", "a"], ["10", "9", "a"]]   # "10" < "9" < "a" < "b" as strings
    np.testing.assert_array_equal(vals, [[2.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    top, _ = rank_topk(scores, ids, 10)
    assert top[0] == ["10", "9", "a", "b", "c"] and top[1] == ["10", "9", "a", "b", "c"]


def test_rank_topk_matches_full_sort_on_random_ties():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(20, 50)).astype(np.float64)   # many ties
    ids = [f"d{rng.integers(1_000_000)}_{j}" for j in range(50)]
    for k in (1, 7, 50, 60):
        top, vals = rank_topk(scores, ids, k)
        for i in range(20):
            want = sorted(range(50), key=lambda j: (-scores[i, j], ids[j]))[:k]
            assert top[i] == [ids[j] for j in want]
            np.testing.assert_array_equal(vals[i], scores[i, want])


def test_rank_topk_errors():
    with pytest.raises(ValueError, match="NaN"):
        rank_topk(np.array([[np.nan, 1.0]]), ["a", "b"], 1)
    with pytest.raises(ValueError, match="2 ids but scores_QxD has 3 columns"):
        rank_topk(np.zeros((1, 3)), ["a", "b"], 1)
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        rank_topk(np.zeros((1, 2)), ["a", "a"], 1)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        rank_topk(np.zeros((1, 2)), ["a", "b"], 0)


# ---------------------------------------------------------------- sparsity statistics

def sparsity_case():
    V = 6
    q = {"q1": np.array([1, 0, 2, 0, 0, 0]), "q2": np.array([0, 0, 3, 0, 0, 1]), "q3": np.array([5, 0, 0, 0, 0, 0])}
    d = {"d1": np.array([1, 1, 0, 0, 0, 0]), "d2": np.array([0, 0, 1, 1, 1, 0]),
         "d3": np.array([0, 0, 2, 0, 0, 0]), "d4": np.array([0, 0, 0, 0, 0, 0])}
    enc = FakeEncoder({k: v.astype(np.float32) for k, v in q.items()},
                      {k: v.astype(np.float32) for k, v in d.items()}, V)
    return q, d, enc, V


def test_sparsity_stats_on_fake_encoder():
    q, d, enc, V = sparsity_case()
    queries = {k: k for k in q}
    corpus = {k: k for k in d}
    ev = SparseIREvaluator(queries, corpus, {"q1": {"d1"}, "q2": {"d3"}, "q3": {"d2"}}, name="tiny",
                           corpus_chunk_size=3)
    got = ev(enc)
    assert ev.primary_metric == "tiny_dot_ndcg@10"
    assert got["tiny_query_active_dims"] == pytest.approx(5 / 3, abs=1e-15)
    assert got["tiny_query_sparsity_ratio"] == pytest.approx(1 - 5 / 3 / V, abs=1e-15)
    assert got["tiny_corpus_active_dims"] == pytest.approx(6 / 4, abs=1e-15)
    assert got["tiny_corpus_sparsity_ratio"] == pytest.approx(1 - 6 / 4 / V, abs=1e-15)
    p_q = np.array([2, 0, 2, 0, 0, 1]) / 3
    p_d = np.array([1, 1, 2, 1, 1, 0]) / 4
    assert got["tiny_avg_flops"] == pytest.approx(float(p_q @ p_d), abs=1e-15)
    # q1 ranks d3 (4), d2 (2), d1 (1); q2 ranks d3 first; q3 ranks d1 (5), then d2 (0, id order)
    assert got["tiny_dot_mrr@10"] == pytest.approx((1 / 3 + 1 + 1 / 2) / 3, abs=1e-15)
    assert list(got)[-5:] == ["tiny_query_active_dims", "tiny_query_sparsity_ratio", "tiny_corpus_active_dims",
                              "tiny_corpus_sparsity_ratio", "tiny_avg_flops"]


def test_explicit_zeros_are_not_active_dims():
    q, d, enc, V = sparsity_case()

    class ExplicitZeros(FakeEncoder):
        def encode_document(self, texts, **kw):
            m = super().encode_document(texts, **kw).tocoo()
            rows = np.concatenate([m.row, np.arange(len(texts))])
            cols = np.concatenate([m.col, np.full(len(texts), V - 1)])
            vals = np.concatenate([m.data, np.zeros(len(texts), np.float32)])
            out = sp.csr_matrix((vals, (rows, cols)), shape=m.shape)
            assert out.nnz == m.nnz + len(texts)  # the zeros really are stored
            return out

    enc2 = ExplicitZeros(enc.query_rows, enc.doc_rows, V)
    args = ({k: k for k in q}, {k: k for k in d}, {"q1": {"d1"}})
    assert SparseIREvaluator(*args)(enc2) == SparseIREvaluator(*args)(enc)


def test_queries_without_relevant_docs_are_not_encoded_and_empty_query_scores_zero():
    q, d, enc, V = sparsity_case()
    enc.query_rows[""] = np.zeros(V, np.float32)
    queries = {"q1": "q1", "q2": "q2", "empty": ""}
    corpus = {k: k for k in d}
    ev = SparseIREvaluator(queries, corpus, {"q1": {"d1"}, "q2": set(), "empty": {"d2"}},
                           accuracy_at_k=(1,), precision_recall_at_k=(4,))
    rankings, stats = ev.retrieve(enc)
    assert enc.calls[0][1] == ["q1", ""]
    # the all-zero query ties every document at 0: ascending corpus id
    assert rankings["empty"] == ["d1", "d2", "d3", "d4"]
    assert stats["query_active_dims"] == 1.0  # (2 + 0) / 2


def test_evaluator_validation():
    q, d, enc, V = sparsity_case()
    queries, corpus = {k: k for k in q}, {k: k for k in d}
    with pytest.raises(ValueError, match="corpus id 'nope'"):
        SparseIREvaluator(queries, corpus, {"q1": {"nope"}})
    with pytest.raises(ValueError, match="query id 'qx'"):
        SparseIREvaluator(queries, corpus, {"qx": {"d1"}})
    with pytest.raises(ValueError, match="no query has a relevant document"):
        SparseIREvaluator(queries, corpus, {"q1": set()})
    with pytest.raises(ValueError, match="max_active_dims must be a positive integer"):
        SparseIREvaluator(queries, corpus, {"q1": {"d1"}}, max_active_dims=0)
    with pytest.raises(ValueError, match="corpus_chunk_size"):
        SparseIREvaluator(queries, corpus, {"q1": {"d1"}}, corpus_chunk_size=0)
    with pytest.raises(TypeError, match="relevant_docs\\['q1'\\]"):
        SparseIREvaluator(queries, corpus, {"q1": "d1"})

    class Short(FakeEncoder):
        def encode_document(self, texts, **kw):
            return super().encode_document(texts[:-1], **kw)

    with pytest.raises(ValueError, match="encode_document returned 3 rows for 4 texts"):
        SparseIREvaluator(queries, corpus, {"q1": {"d1"}})(Short(enc.query_rows, enc.doc_rows, V))

    with pytest.raises(ValueError, match="6 columns, expected the vocabulary size 7"):
        SparseIREvaluator(queries, corpus, {"q1": {"d1"}})(FakeEncoder(enc.query_rows, enc.doc_rows, 7))


# ---------------------------------------------------------------- report helpers

def test_format_table_and_json(tmp_path):
    results = {"bm25": {"bm25_ndcg@10": 0.89, "bm25_recall@2": 0.8816},
               "v3-gte": {"dot_ndcg@10": 0.5, "dot_recall@2": 0.387, "avg_flops": 1.7}}
    table = format_table(results, ["ndcg@10", "recall@2", "avg_flops"], digits=3)
    assert table == ("| metric | bm25 | v3-gte |\n"
                     "|---|---|---|\n"
                     "| ndcg@10 | 0.890 | 0.500 |\n"
                     "| recall@2 | 0.882 | 0.387 |\n"
                     "| avg_flops | n/a | 1.700 |\n")
    with pytest.raises(ValueError, match="ambiguous"):
        format_table({"x": {"a_ndcg@10": 1.0, "b_ndcg@10": 2.0}}, ["ndcg@10"])
    out = tmp_path / "res.json"
    write_results_json(out, results, {"data": "LIMIT (rebuilt corpus)"})
    assert json.loads(out.read_text()) == {"metadata": {"data": "LIMIT (rebuilt corpus)"}, "results": results}
    assert [p.name for p in tmp_path.iterdir()] == ["res.json"]
