"""The real fixture model through ``SparseIREvaluator`` (default settings) on LIMIT-small reproduces
sentence-transformers' ``SparseInformationRetrievalEvaluator`` numbers stored in
``tests/fixtures/sparse_encoder/expected/eval_limit_small.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.fixtures import SE_FIXTURES
from jsplade.retrieval.beir import load_beir
from jsplade.splade.encoder import SparseEncoder
from jsplade.retrieval.evaluation import SparseIREvaluator, rank_topk

REPO = Path(__file__).resolve().parents[2]
EXPECTED = SE_FIXTURES / "expected"
# Accumulated in float32 by sentence-transformers: compared with the by-hand values instead (see below).
FLOAT32_ACCUMULATED = ("query_active_dims", "avg_flops")
TOL = 1e-6
ST_FLOAT32_TOL = 2e-6
TIE_TOL = 2e-6  # absolute, on scores of order 1-10


@pytest.fixture(scope="module")
def run():
    data = load_beir(REPO / "data" / "limit-small")
    encoder = SparseEncoder.load(SE_FIXTURES / "model")
    evaluator = SparseIREvaluator(data.queries, data.corpus, data.relevant_docs())
    rankings, _ = evaluator.retrieve(encoder)
    metrics = evaluator(encoder)
    expected = json.loads((EXPECTED / "eval_limit_small.json").read_text())
    return data, evaluator, rankings, metrics, expected


def test_every_metric_matches_sentence_transformers(run):
    """Every metric of the fixture within 1e-6, keys in the same order, except ``query_active_dims`` and
    ``avg_flops``: sentence-transformers accumulates those two in float32 (its stored query_active_dims is
    5.394999980926514 and its avg_flops 5.395001411437988, where the exact values are 5.395 and
    5.394999999999993). jsplade accumulates them exactly (integer counts, float64), so they are compared
    with the fixture's by-hand values ``query_active_dims_hand`` / ``avg_flops_hand`` within 1e-6, and with
    the float32 values of sentence-transformers within 2e-6 (its recorded float32 error is 1.4e-6)."""
    _, evaluator, _, metrics, expected = run
    st = expected["metrics"]
    assert list(metrics) == list(st)
    for key, value in st.items():
        if key not in FLOAT32_ACCUMULATED:
            assert abs(metrics[key] - value) <= TOL, (key, metrics[key], value)
    for key in FLOAT32_ACCUMULATED:
        assert abs(metrics[key] - expected[f"{key}_hand"]) <= TOL, (key, metrics[key], expected[f"{key}_hand"])
        assert abs(metrics[key] - st[key]) <= ST_FLOAT32_TOL, (key, metrics[key], st[key])
    assert abs(metrics["corpus_active_dims"] - expected["corpus_active_dims_hand"]) <= TOL
    assert evaluator.primary_metric == expected["primary_metric"]
    assert len(evaluator.query_ids) == expected["n_queries"] and len(evaluator.corpus) == expected["n_corpus"]


def test_rankings_equal_the_stored_score_matrix_ranking(run):
    """The complete rankings (all 46 documents of every query) equal the ranking of ST's stored [1000, 46]
    score matrix under the same rule (descending score, ties by ascending corpus id), up to float32 ties:
    where two documents' stored scores differ by at most ``TIE_TOL`` (ST's own rounding, ~1 ulp of a score
    near 5), jsplade may order them either way. Every other position must agree exactly, and the stored
    scores read along jsplade's ranking must be non-increasing within ``TIE_TOL``."""
    data, evaluator, rankings, _, _ = run
    with np.load(EXPECTED / "eval_limit_small_scores.npz") as f:
        scores, qids, cids = f["scores"], [str(x) for x in f["query_ids"]], [str(x) for x in f["corpus_ids"]]
    expected_ids, _ = rank_topk(scores, cids, evaluator.max_k)
    assert qids == evaluator.query_ids
    assert all(len(rankings[q]) == len(data.corpus) for q in qids)
    column = {c: j for j, c in enumerate(cids)}
    swapped = 0
    for i, q in enumerate(qids):
        ours, theirs = rankings[q], expected_ids[i]
        assert sorted(ours) == sorted(theirs)
        stored = scores[i, [column[c] for c in ours]]
        assert np.all(np.diff(stored) <= TIE_TOL), q
        for k, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                swapped += 1
                assert abs(scores[i, column[a]] - scores[i, column[b]]) <= TIE_TOL, (q, k, a, b)
    assert swapped <= 4  # 46,000 ranked positions; observed: one near-tie pair (query_879, 6e-7 apart)
