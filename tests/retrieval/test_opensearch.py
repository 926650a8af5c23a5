"""OpenSearch export: exact bulk/mapping/query JSON of a tiny case, round trip on the real vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from helpers.fixtures import SE_FIXTURES
from jsplade.retrieval.opensearch import (index_mapping, query_body, read_bulk_ndjson, write_bulk_ndjson,
                                       write_index_mapping)


class TinyTokenizer:
    vocab = ["[PAD]", "hello", "world", "##s", "."]

    def id_to_token(self, i):
        return self.vocab[i] if 0 <= i < len(self.vocab) else None

    def token_to_id(self, t):
        return self.vocab.index(t) if t in self.vocab else None


def tiny_docs():
    # d1: hello 0.5, ##s 1.25 (stored out of column order); d2: [PAD] 0.1, . 2.0, world explicit zero
    return sp.csr_matrix((np.array([1.25, 0.5, 2.0, 0.1, 0.0], np.float32), np.array([3, 1, 4, 0, 2]),
                          np.array([0, 2, 5])), shape=(2, 5))


def test_bulk_file_exact_json(tmp_path):
    out = tmp_path / "bulk.ndjson"
    n = write_bulk_ndjson(out, "limit", ["d1", "d2"], tiny_docs(), TinyTokenizer(), texts=["hellos", "Zoë ."])
    assert n == 2
    assert out.read_text(encoding="utf-8") == (
        '{"index": {"_index": "limit", "_id": "d1"}}\n'
        '{"passage_embedding": {"hello": 0.5, "##s": 1.25}, "text": "hellos"}\n'
        '{"index": {"_index": "limit", "_id": "d2"}}\n'
        '{"passage_embedding": {"[PAD]": 0.1, ".": 2.0}, "text": "Zoë ."}\n')
    # pruning below 10% of the row max drops nothing here; 50% drops [PAD] (0.1 < 1.0) and hello (0.5 < 0.625)
    write_bulk_ndjson(out, "limit", ["d1", "d2"], tiny_docs(), TinyTokenizer(), field="emb", prune_ratio=0.5)
    assert out.read_text().splitlines()[1::2] == ['{"emb": {"##s": 1.25}}', '{"emb": {".": 2.0}}']
    assert [p.name for p in tmp_path.iterdir()] == ["bulk.ndjson"]


def test_round_trip_real_vocabulary(tmp_path):
    from jsplade.backbones.tokenizer import WordPieceTokenizer

    tok = WordPieceTokenizer.from_dir(SE_FIXTURES / "model")
    V = tok.vocab_size
    rng = np.random.default_rng(0)
    m = sp.random(20, V, density=0.003, format="csr", random_state=rng, dtype=np.float64).astype(np.float32)
    m.data = (m.data * 3 + np.float32(1e-3)).astype(np.float32)   # positive, awkward float32 values
    m.data[:5] = [1e-7, 3.4e38, 0.1, 1 / 3, 123456.78]
    ids = [f"doc-{i}" for i in range(20)]
    texts = [f"text {i} é" for i in range(20)]
    path = tmp_path / "b.ndjson"
    write_bulk_ndjson(path, "idx", ids, m, tok, texts=texts)
    back_ids, back, back_texts = read_bulk_ndjson(path, tok, V)
    assert back_ids == ids and back_texts == texts
    m.sort_indices()
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    assert back.dtype == np.float32 and back.shape == m.shape
    # a query body built with the same tokenizer reads back to the row's tokens
    body = query_body(m[3], tok, size=10)
    tokens = body["query"]["neural_sparse"]["passage_embedding"]["query_tokens"]
    assert body["size"] == 10
    assert {tok.token_to_id(t): np.float32(w) for t, w in tokens.items()} == dict(zip(m[3].indices, m[3].data))


def test_mapping_and_query_body(tmp_path):
    assert index_mapping() == {"mappings": {"properties": {"passage_embedding": {"type": "rank_features"},
                                                           "text": {"type": "text"}}}}
    write_index_mapping(tmp_path / "mapping.json", field="emb", text_field="body")
    assert json.loads((tmp_path / "mapping.json").read_text()) == {
        "mappings": {"properties": {"emb": {"type": "rank_features"}, "body": {"type": "text"}}}}
    q = np.array([0, 1.5, 0, 0.25, 0], np.float32)
    assert json.dumps(query_body(q, TinyTokenizer())) == (
        '{"query": {"neural_sparse": {"passage_embedding": {"query_tokens": {"hello": 1.5, "##s": 0.25}}}}}')
    assert query_body(q, TinyTokenizer(), field="emb", prune_ratio=0.5) == {
        "query": {"neural_sparse": {"emb": {"query_tokens": {"hello": 1.5}}}}}


def test_errors(tmp_path):
    tok = TinyTokenizer()
    out = tmp_path / "bulk.ndjson"
    out.write_text("previous content\n")
    neg = sp.csr_matrix(np.array([[0, 1, 0, 0, 0], [0, -1, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match=r"encodings row 1 \('b'\) has negative weights"):
        write_bulk_ndjson(out, "i", ["a", "b"], neg, tok)
    assert out.read_text() == "previous content\n"          # failed write leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["bulk.ndjson"]
    with pytest.raises(ValueError, match="1 rows, expected 2"):
        write_bulk_ndjson(out, "i", ["a", "b"], np.ones((1, 5), np.float32), tok)
    with pytest.raises(ValueError, match="texts has 1 entries"):
        write_bulk_ndjson(out, "i", ["a", "b"], np.ones((2, 5), np.float32), tok, texts=["x"])
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        write_bulk_ndjson(out, "i", ["a", "a"], np.ones((2, 5), np.float32), tok)
    with pytest.raises(ValueError, match="prune_ratio"):
        write_bulk_ndjson(out, "i", ["a"], np.ones((1, 5), np.float32), tok, prune_ratio=1.0)
    with pytest.raises(ValueError, match=r"id_to_token\(5\) returned None"):
        write_bulk_ndjson(out, "i", ["a"], np.ones((1, 6), np.float32), tok)
    with pytest.raises(ValueError, match="index_name"):
        write_bulk_ndjson(out, "", ["a"], np.ones((1, 5), np.float32), tok)
    with pytest.raises(ValueError, match="query must be one row"):
        query_body(np.ones((2, 5), np.float32), tok)
    with pytest.raises(ValueError, match="query has negative weights"):
        query_body(np.array([0, -1, 0, 0, 0], np.float32), tok)
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"index": {"_id": "a"}}\n{"passage_embedding": {"nope": 1.0}}\n')
    with pytest.raises(ValueError, match=r"bad.ndjson:2: token 'nope' is not in the vocabulary"):
        read_bulk_ndjson(bad, tok, 5)
    bad.write_text('{"index": {"_id": "a"}}\n{"passage_embedding": {"hello": 1.0}\n')
    with pytest.raises(ValueError, match=r"bad.ndjson:2: malformed JSON"):
        read_bulk_ndjson(bad, tok, 5)
    bad.write_text('{"index": {"_id": "a"}}\n')
    with pytest.raises(ValueError, match="odd number of lines"):
        read_bulk_ndjson(bad, tok, 5)


def test_any_pruning_rule_applies_as_in_the_shards(tmp_path):
    from jsplade.splade.pruning import Pruning

    rng = np.random.default_rng(7)
    m = sp.random(6, 30, density=0.5, format="csr", dtype=np.float32, random_state=rng)
    tok = _Tok()
    for rule in ("top_k:3", "alpha_mass:0.6", "abs_value:0.5", "max_ratio:0.4"):
        write_bulk_ndjson(tmp_path / "b.ndjson", "i", [f"d{i}" for i in range(6)], m, tok, pruning=rule)
        _, got, _ = read_bulk_ndjson(tmp_path / "b.ndjson", tok, 30)
        assert (got != Pruning.parse(rule).apply(m)).nnz == 0, rule
        body = query_body(m[0], tok, pruning=rule)
        assert len(body["query"]["neural_sparse"]["passage_embedding"]["query_tokens"]) == Pruning.parse(rule).apply(m[0]).nnz
    with pytest.raises(ValueError, match="top_k"):
        write_bulk_ndjson(tmp_path / "b.ndjson", "i", ["a"], m[:1], tok, pruning="top_k:0")


class _Tok:
    def id_to_token(self, i):
        return f"t{i}" if 0 <= i < 30 else None

    def token_to_id(self, t):
        return int(t[1:]) if t.startswith("t") else None
