"""BM25 baseline (bm25s + English stopwords + Snowball stemmer), scored by the shared evaluation code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.bm25 import BM25Retriever
from jsplade.retrieval.evaluation import evaluate_rankings

DATA = Path(__file__).resolve().parents[2] / "data"
# anchors.md gives the reference numbers rounded to 3 decimals: allow half a unit of the last digit.
ROUNDED = 5e-4 + 1e-12
KS = dict(precision_recall_at_k=(2, 10, 100), ndcg_at_k=(10,), mrr_at_k=(), accuracy_at_k=(), map_at_k=())


def evaluate(folder: Path) -> dict[str, float]:
    ds = load_beir(folder)
    rankings = BM25Retriever(ds.corpus).search(ds.queries, k=100)
    assert all(len(r) == min(100, len(ds.corpus)) for r in rankings.values())
    return evaluate_rankings(rankings, ds.relevant_docs(), score_function="bm25", **KS)


def test_limit_small_sane():
    m = evaluate(DATA / "limit-small")
    assert m["bm25_recall@10"] == 1.0                       # anchors.md: BM25 R@10 1.0 on LIMIT-small
    assert abs(m["bm25_recall@2"] - 0.978) <= ROUNDED       # anchors.md: R@2 0.978
    assert m["bm25_recall@100"] == 1.0 and 0.95 < m["bm25_ndcg@10"] <= 1.0


def test_limit_rebuilt_corpus_matches_anchors():
    """LIMIT (rebuilt corpus), 50k documents: about 5 s on the 2-core development machine."""
    m = evaluate(DATA / "limit")
    assert abs(m["bm25_recall@2"] - 0.882) <= ROUNDED
    assert abs(m["bm25_recall@10"] - 0.895) <= ROUNDED
    assert abs(m["bm25_recall@100"] - 0.933) <= ROUNDED
    assert abs(m["bm25_ndcg@10"] - 0.890) <= ROUNDED


def test_scores_ranking_rule_and_tokenization():
    import bm25s
    import Stemmer

    corpus = {"b": "red apples", "a": "red apples", "c": "green pears", "d": "the apple of my eye"}
    r = BM25Retriever(corpus)
    s = r.scores(["Apple!", "the of", "", "zebra"])
    assert s.shape == (4, 4) and s.dtype == np.float32
    # stemming: "Apple!" matches "apples" and "apple"; stopword-only, empty and unseen queries score 0
    assert s[0, 0] > 0 and s[0, 1] == s[0, 0] and s[0, 3] > 0 and s[0, 2] == 0
    assert not s[1:].any()
    # same numbers as bm25s used directly with the same settings
    stem = Stemmer.Stemmer("english")
    ref = bm25s.BM25()
    ref.index(bm25s.tokenize(list(corpus.values()), stopwords="en", stemmer=stem, show_progress=False),
              show_progress=False)
    docs, ref_scores = ref.retrieve(bm25s.tokenize(["Apple!"], stopwords="en", stemmer=stem, show_progress=False),
                                    k=4, show_progress=False)
    np.testing.assert_allclose(np.sort(s[0])[::-1], ref_scores[0], rtol=1e-6)
    # ties ("a" and "b" have identical texts) are broken by ascending id, zero scores too
    assert r.search({"q": "apples", "z": ""}, k=4) == {"q": ["a", "b", "d", "c"], "z": ["a", "b", "c", "d"]}
    assert r.search({"q": "apples"}, k=2, query_batch_size=1) == {"q": ["a", "b"]}


def test_errors():
    with pytest.raises(ValueError, match="corpus is empty"):
        BM25Retriever({})
    with pytest.raises(ValueError, match="stemmer_language 'klingon'"):
        BM25Retriever({"a": "xylophone"}, stemmer_language="klingon")
    with pytest.raises(TypeError, match="corpus\\['a'\\] must be a str"):
        BM25Retriever({"a": 3})
    with pytest.raises(ValueError, match="no indexable term"):
        BM25Retriever({"a": "x", "b": "the"})
    r = BM25Retriever({"a": "xylophone"})
    with pytest.raises(TypeError, match="not a single str"):
        r.scores("abc")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        r.search({"q": "xylophone"}, k=0)
