"""Hard-negative mining: each method against a ranking written out by hand, fusion computed by hand, positives
never mined, zero scores never mined, skipping, ties by id, teacher scores = the encoder's dot products, rows the
trainer reads, determinism, and every bad input named."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse as sp

from helpers.fixtures import SE_FIXTURES
from jsplade.retrieval.bm25 import BM25Retriever
from jsplade.retrieval.mining import (MiningResult, mine_hard_negatives, reciprocal_rank_fusion,
                                      write_rows_jsonl)
from jsplade.splade.encoder import SparseEncoder
from jsplade.training.data import load_pairs

# d7 repeats d3's text: the two always tie, and the tie goes to the lower id (d3).
CORPUS = {"d1": "Ann likes apples and pears.", "d2": "Bob likes trains.", "d3": "Cid likes apples.",
          "d4": "Dee likes chess and trains.", "d5": "Eve likes opera.", "d6": "Fay likes pears.",
          "d7": "Cid likes apples.", "d8": "Gus likes pears and opera."}
QUERIES = {"q1": "Who likes apples?", "q2": "Who likes trains?", "q3": "Who likes pears?",
           "q4": "Who likes opera?", "q5": "Who likes chess?"}
POSITIVES = {"q1": {"d1", "d3"}, "q2": {"d4", "d2"}, "q3": {"d6"}, "q5": {"d4"}}  # q4: no positives
MINED = ["q1", "q2", "q3", "q5"]


@pytest.fixture(scope="module")
def encoder():
    return SparseEncoder.from_pretrained(SE_FIXTURES / "model")


@pytest.fixture(scope="module")
def full_scores(encoder):
    """Every query against every document, by the encoder's own similarity and by BM25: [Q, D] each."""
    q = encoder.encode_query(list(QUERIES.values()))
    d = encoder.encode_document(list(CORPUS.values()))
    return {"sparse": encoder.similarity(q, d), "bm25": BM25Retriever(CORPUS).scores(list(QUERIES.values())),
            "teacher": (q.astype(np.float64) @ d.astype(np.float64).T).toarray()}


def hand_ranking(scores_D: np.ndarray, excluded: set[str]) -> list[str]:
    """Documents scored above 0 and not excluded, by descending score, ties by ascending id."""
    ids = list(CORPUS)
    keep = [j for j in range(len(ids)) if scores_D[j] > 0 and ids[j] not in excluded]
    return [ids[j] for j in sorted(keep, key=lambda j: (-scores_D[j], ids[j]))]


def hand_rrf(lists: list[list[str]], k: int = 60) -> list[str]:
    total: dict[str, Fraction] = {}
    for ranking in lists:
        for position, doc in enumerate(ranking):
            total[doc] = total.get(doc, Fraction(0)) + Fraction(1, k + position + 1)
    return sorted(total, key=lambda doc: (-total[doc], doc))


def expected_negatives(full_scores, method: str, k: int, depth: int = 100, rrf_k: int = 60) -> dict[str, list[str]]:
    qindex = list(QUERIES)
    out = {}
    for qid in MINED:
        row = qindex.index(qid)
        lists = {m: hand_ranking(full_scores[m][row], POSITIVES[qid]) for m in ("sparse", "bm25")}
        ranked = hand_rrf([lists["sparse"][:depth], lists["bm25"][:depth]], rrf_k) if method == "fused" \
            else lists[method]
        if len(ranked) >= k:
            out[qid] = ranked[:k]
    return out


@pytest.mark.parametrize("method", ["sparse", "bm25", "fused"])
def test_negatives_match_the_hand_ranking(encoder, full_scores, method):
    k = 3
    result = mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, method=method, negatives=k)
    expected = expected_negatives(full_scores, method, k)
    assert isinstance(result, MiningResult) and result.method == method and result.negatives == k
    assert list(result.mined) == [q for q in MINED if q in expected]
    assert list(result.skipped) == [q for q in MINED if q not in expected]
    rows = [(r.query_id, r.positive_id, list(r.negative_ids)) for r in result.rows]
    assert rows == [(q, p, expected[q]) for q in result.mined for p in sorted(POSITIVES[q])]
    for r in result.rows:
        assert not set(r.negative_ids) & POSITIVES[r.query_id] and len(set(r.negative_ids)) == k
    if method == "sparse":  # the identical texts d3 / d7 tie: d3, the lower id, comes first
        q2 = hand_ranking(full_scores["sparse"][1], POSITIVES["q2"])
        assert full_scores["sparse"][1][2] == full_scores["sparse"][1][6] and q2.index("d3") == q2.index("d7") - 1
        mined = mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, negatives=5).rows
        q2_negatives = next(r.negative_ids for r in mined if r.query_id == "q2")
        assert q2_negatives == tuple(q2[:5]) and q2_negatives.index("d3") == q2_negatives.index("d7") - 1


def test_fusion_by_hand_on_a_small_case():
    # a: 1/61; b: 1/62 + 1/62; c: 1/63 + 1/61; d: 1/63 -> c > b > a > d
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "b", "d"]])
    assert [d for d, _ in fused] == ["c", "b", "a", "d"]
    assert dict(fused) == {"a": Fraction(1, 61), "b": Fraction(2, 62), "c": Fraction(1, 63) + Fraction(1, 61),
                           "d": Fraction(1, 63)}
    # exact ties (mirror images) go to the lower id; another constant
    assert [d for d, _ in reciprocal_rank_fusion([["y", "x"], ["x", "y"]], k=0)] == ["x", "y"]
    assert dict(reciprocal_rank_fusion([["y"]], k=1.5)) == {"y": Fraction(2, 5)}
    with pytest.raises(ValueError, match="listed twice"):
        reciprocal_rank_fusion([["a", "a"]])


def test_fused_depth_and_constant_reach_the_rule(encoder, full_scores):
    result = mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, method="fused", negatives=2,
                                 fusion_depth=2, rrf_k=1)
    expected = expected_negatives(full_scores, "fused", 2, depth=2, rrf_k=1)
    assert {r.query_id: list(r.negative_ids) for r in result.rows} == expected


class TableEncoder:
    """A stand-in encoder: fixed vectors per text over a 4-token vocabulary (exact small integers)."""

    vocab_size = 4

    def __init__(self, queries: dict[str, list[float]], documents: dict[str, list[float]]):
        self.q, self.d = queries, documents

    def encode_query(self, texts, **kwargs):
        return sp.csr_matrix(np.asarray([self.q[t] for t in texts], np.float32).reshape(-1, 4))

    def encode_document(self, texts, **kwargs):
        return sp.csr_matrix(np.asarray([self.d[t] for t in texts], np.float32).reshape(-1, 4))


def test_zero_scores_ties_and_skipping():
    corpus = {"b": "B", "a": "A", "c": "C", "z": "Z", "p": "P"}
    queries = {"q": "Q", "r": "R", "s": "S"}
    table = TableEncoder({"Q": [1, 0, 0, 0], "R": [0, 1, 0, 0], "S": [0, 0, 0, 1]},
                         {"B": [2, 1, 0, 0], "A": [2, 0, 0, 0], "C": [1, 0, 0, 0], "Z": [0, 0, 1, 0],
                          "P": [5, 0, 0, 1]})
    positives = {"q": ["p"], "r": {"b"}, "s": ["p"]}
    result = mine_hard_negatives(queries, corpus, positives, table, negatives=3)
    # q: a and b tie at 2 -> a first; c at 1; z scores 0 and is never a candidate
    assert [(r.query_id, r.negative_ids) for r in result.rows] == [("q", ("a", "b", "c"))]
    # r: only b scores > 0 and it is the positive; s: nothing scores > 0 but the positive -> skipped
    assert result.skipped == ("r", "s") and result.mined == ("q",)
    assert result.rows[0].scores == (5.0, 2.0, 2.0, 1.0) and result.rows[0].margins == (3.0, 3.0, 4.0)
    assert mine_hard_negatives(queries, corpus, positives, table, negatives=4).mined == ()


def test_teacher_scores_are_the_encoders_dot_products(encoder, full_scores):
    ids, qids = list(CORPUS), list(QUERIES)

    def check(result, scores_QxD):
        assert result.rows
        for r in result.rows:
            got = np.asarray(r.scores)
            want = np.asarray([scores_QxD[qids.index(r.query_id), ids.index(d)]
                               for d in (r.positive_id,) + r.negative_ids])
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)

    # the teacher is the miner (vectors reused), another encoder object with the same weights (re-encoded),
    # and an encoder of other weights entirely
    check(mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, method="fused", negatives=2),
          full_scores["teacher"])
    other = SparseEncoder.from_pretrained(SE_FIXTURES / "model")
    check(mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, teacher=other, negatives=2),
          full_scores["teacher"])
    rng = np.random.default_rng(1)
    table = TableEncoder({t: list(rng.integers(0, 3, 4)) for t in QUERIES.values()},
                         {t: list(rng.integers(1, 4, 4)) for t in CORPUS.values()})
    exact = (table.encode_query(list(QUERIES.values())) @ table.encode_document(list(CORPUS.values())).T).toarray()
    check(mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, teacher=table, negatives=2), exact)
    # BM25 needs no miner: the teacher alone
    check(mine_hard_negatives(QUERIES, CORPUS, POSITIVES, method="bm25", teacher=encoder, negatives=2),
          full_scores["teacher"])


@pytest.mark.parametrize("labels", ["scores", "margins"])
def test_rows_file_reads_back_in_the_trainer(encoder, tmp_path, labels):
    k = 2
    result = mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, method="fused", negatives=k)
    path = tmp_path / "rows.jsonl"
    records = result.records(QUERIES, CORPUS, labels)
    assert write_rows_jsonl(path, records) == len(result.rows)
    data = load_pairs(path)
    assert list(data.columns) == ["query", "positive", "negative_1", "negative_2"] and data.label_column == "label"
    assert len(data) == len(result.rows)
    assert data.label_shape == ((k + 1,) if labels == "scores" else (k,))
    labels_NxC = data.label_array(range(len(data)))
    want = [r.scores if labels == "scores" else r.margins for r in result.rows]
    np.testing.assert_array_equal(labels_NxC, np.asarray(want, np.float32))
    first = result.rows[0]
    assert data[0] == (QUERIES[first.query_id], CORPUS[first.positive_id]) + tuple(CORPUS[d] for d in first.negative_ids)


def test_deterministic(encoder):
    runs = [mine_hard_negatives(QUERIES, CORPUS, POSITIVES, encoder, method="fused", negatives=3, query_batch_size=b)
            for b in (256, 1, 2)]
    assert runs[0] == runs[1] == runs[2]


def test_bad_input_is_named(encoder):
    def mine(**kw):
        args = dict(queries=QUERIES, corpus=CORPUS, positives=POSITIVES, model=encoder)
        args.update(kw)
        return mine_hard_negatives(**args)

    cases = [
        (dict(method="dense"), ValueError, "method must be one of"),
        (dict(negatives=0), ValueError, "negatives must be a positive integer"),
        (dict(negatives=2.0), ValueError, "negatives must be a positive integer"),
        (dict(method="fused", negatives=5, fusion_depth=4), ValueError, r"fusion_depth \(4\) must be >= negatives"),
        (dict(method="fused", rrf_k=-1), ValueError, "rrf_k must be a finite number >= 0"),
        (dict(model=None), ValueError, "method 'sparse' needs a model"),
        (dict(model=None, method="bm25"), ValueError, "a teacher is needed"),
        (dict(corpus={}), ValueError, "corpus is empty"),
        (dict(corpus=[("d1", "x")]), TypeError, "corpus must be a mapping"),
        (dict(corpus={"d1": 3}), TypeError, r"corpus\['d1'\] must be a str"),
        (dict(positives={"q9": {"d1"}}), ValueError, "positives: query id 'q9' is not in queries"),
        (dict(positives={"q1": {"d9"}}), ValueError, r"positives\['q1'\]: document id 'd9' is not in the corpus"),
        (dict(positives={"q1": "d1"}), TypeError, r"positives\['q1'\] must be a set of document ids"),
        (dict(queries={"q1": None}), TypeError, r"queries\['q1'\] must be a str"),
        (dict(query_batch_size=0), ValueError, "query_batch_size must be a positive integer"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            mine(**kwargs)
    with pytest.raises(ValueError, match="labels must be one of"):
        mine(negatives=1).records(QUERIES, CORPUS, labels="probabilities")
