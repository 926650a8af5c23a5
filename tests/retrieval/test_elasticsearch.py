"""Elasticsearch export (no server): exact bulk/mapping/query JSON of a tiny case, round trip on the real
vocabulary under every dot policy, the stored-precision model, refused inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from jsplade.backbones.tokenizer import WordPieceTokenizer
from jsplade.limit.data import limit_paths
from jsplade.retrieval.elasticsearch import (FLOAT32_MIN_NORMAL, STORED_RELATIVE_ERROR, escape_feature,
                                             feature_names, index_mapping, query_body, read_bulk_ndjson,
                                             stored_value, stored_weights, unescape_feature, write_bulk_ndjson,
                                             write_index_mapping)


class TinyTokenizer:
    vocab = ["[PAD]", "hello", "world", "##s", ".", "u.s", "100%"]

    def id_to_token(self, i):
        return self.vocab[i] if 0 <= i < len(self.vocab) else None

    def token_to_id(self, t):
        return self.vocab.index(t) if t in self.vocab else None


def tiny_docs():
    # d1: hello 0.5, ##s 1.25 (out of column order); d2: [PAD] 0.1, . 2.0, u.s 3.0, 100% 0.75, world explicit zero
    return sp.csr_matrix((np.array([1.25, 0.5, 2.0, 0.1, 0.0, 3.0, 0.75], np.float32), np.array([3, 1, 4, 0, 2, 5, 6]),
                          np.array([0, 2, 7])), shape=(2, 7))


@pytest.fixture(scope="module")
def bert():
    return WordPieceTokenizer.from_dir(limit_paths().root / "bert-base-uncased")


def test_bulk_file_exact_json(tmp_path):
    out = tmp_path / "bulk.ndjson"
    assert write_bulk_ndjson(out, "limit", ["d1", "d2"], tiny_docs(), TinyTokenizer(), texts=["hellos", "Zoë ."]) == 2
    assert out.read_text(encoding="utf-8") == (
        '{"index": {"_index": "limit", "_id": "d1"}}\n'
        '{"passage_embedding": {"hello": 0.5, "##s": 1.25}, "text": "hellos"}\n'
        '{"index": {"_index": "limit", "_id": "d2"}}\n'
        '{"passage_embedding": {"[PAD]": 0.1, ".": 2.0, "u.s": 3.0, "100%": 0.75}, "text": "Zoë ."}\n')
    write_bulk_ndjson(out, "limit", ["d1", "d2"], tiny_docs(), TinyTokenizer(), field="emb", dots="escape")
    assert out.read_text().splitlines()[1::2] == [
        '{"emb": {"hello": 0.5, "##s": 1.25}}', '{"emb": {"[PAD]": 0.1, "%2E": 2.0, "u%2Es": 3.0, "100%25": 0.75}}']
    # pruning below 50% of the row max drops hello (< 0.625), [PAD] and 100% (< 1.5)
    write_bulk_ndjson(out, "limit", ["d1", "d2"], tiny_docs(), TinyTokenizer(), field="emb", prune_ratio=0.5)
    assert out.read_text().splitlines()[1::2] == ['{"emb": {"##s": 1.25}}', '{"emb": {".": 2.0, "u.s": 3.0}}']
    assert [p.name for p in tmp_path.iterdir()] == ["bulk.ndjson"]


def test_dot_policies():
    tok = TinyTokenizer()
    assert feature_names(tok, 7) == tok.vocab
    assert feature_names(tok, 7, dots="escape") == ["[PAD]", "hello", "world", "##s", "%2E", "u%2Es", "100%25"]
    with pytest.raises(ValueError, match=r"2 tokens contain '\.'.*'\.' \(id 4\), 'u\.s' \(id 5\)"):
        feature_names(tok, 7, dots="error")
    with pytest.raises(ValueError, match="dots must be one of"):
        feature_names(tok, 7, dots="drop")
    tricky = ["%", "%2E", ".", "%25.", "a.b.c", "..%..", "%2", "%%", "plain"]
    escaped = [escape_feature(t) for t in tricky]
    assert all("." not in e for e in escaped) and len(set(escaped)) == len(tricky)
    assert [unescape_feature(e) for e in escaped] == tricky
    for bad in ("a.b", "%", "%2", "%41", "x%2e"):
        with pytest.raises(ValueError, match="not an escaped token"):
            unescape_feature(bad)


def test_round_trip_real_vocabulary(tmp_path, bert):
    V = bert.vocab_size
    dotted = [bert.token_to_id(t) for t in (".", "...", "##.")]
    assert None not in dotted
    rng = np.random.default_rng(0)
    m = sp.random(20, V, density=0.003, format="lil", random_state=rng, dtype=np.float64)
    m[0, dotted] = [0.25, 1.5, 2.0]                                   # every dotted token of the vocabulary
    m = m.tocsr().astype(np.float32)
    m.data = (m.data * 3 + np.float32(1e-3)).astype(np.float32)      # positive, awkward float32 values
    m.data[:5] = [FLOAT32_MIN_NORMAL, 3.4e38, 0.1, 1 / 3, 123456.78]
    ids = [f"doc-{i}" for i in range(20)]
    texts = [f"text {i} é" for i in range(20)]
    for dots in ("keep", "escape"):
        path = tmp_path / f"{dots}.ndjson"
        write_bulk_ndjson(path, "idx", ids, m, bert, texts=texts, dots=dots)
        back_ids, back, back_texts = read_bulk_ndjson(path, bert, V, dots=dots)
        assert back_ids == ids and back_texts == texts
        for name in ("data", "indices", "indptr"):
            np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
        assert back.dtype == np.float32 and back.shape == m.shape
        names = json.loads(path.read_text(encoding="utf-8").splitlines()[1])["passage_embedding"]
        assert ("." in "".join(names)) == (dots == "keep")
        body = query_body(m[0], bert, size=10, dots=dots)
        spec = body["query"]["sparse_vector"]
        assert body["size"] == 10 and spec["field"] == "passage_embedding" and spec["prune"] is False
        decode = unescape_feature if dots == "escape" else (lambda s: s)
        assert {bert.token_to_id(decode(t)): np.float32(w) for t, w in spec["query_vector"].items()} == \
            dict(zip(m[0].indices, m[0].data))
    with pytest.raises(ValueError, match="tokens contain '.'"):
        write_bulk_ndjson(tmp_path / "e.ndjson", "idx", ids, m, bert, dots="error")
    assert not (tmp_path / "e.ndjson").exists()
    # a file written with dots kept does not read as escaped, and the reverse fails on unknown features
    with pytest.raises(ValueError, match="not an escaped token"):
        read_bulk_ndjson(tmp_path / "keep.ndjson", bert, V, dots="escape")
    with pytest.raises(ValueError, match="is not in the vocabulary"):
        read_bulk_ndjson(tmp_path / "escape.ndjson", bert, V, dots="keep")


def test_mapping_and_query_body(tmp_path):
    assert index_mapping() == {"mappings": {"properties": {"passage_embedding": {"type": "sparse_vector"},
                                                           "text": {"type": "text"}}}}
    assert index_mapping("emb", "body", prune=False) == {"mappings": {"properties": {
        "emb": {"type": "sparse_vector", "index_options": {"prune": False}}, "body": {"type": "text"}}}}
    write_index_mapping(tmp_path / "mapping.json", field="ml.tokens")
    assert json.loads((tmp_path / "mapping.json").read_text()) == {
        "mappings": {"properties": {"ml.tokens": {"type": "sparse_vector"}, "text": {"type": "text"}}}}
    q = np.array([0, 1.5, 0, 0.25, 0, 0.5, 0], np.float32)
    assert json.dumps(query_body(q, TinyTokenizer())) == (
        '{"query": {"sparse_vector": {"field": "passage_embedding", '
        '"query_vector": {"hello": 1.5, "##s": 0.25, "u.s": 0.5}, "prune": false}}}')
    assert query_body(q, TinyTokenizer(), field="emb", size=3, prune=None, prune_ratio=0.2, dots="escape") == {
        "query": {"sparse_vector": {"field": "emb", "query_vector": {"hello": 1.5, "u%2Es": 0.5}}}, "size": 3}
    assert query_body(q, TinyTokenizer(), prune=True)["query"]["sparse_vector"]["prune"] is True


def test_stored_precision_model():
    # values with at most 8 explicit mantissa bits are stored exactly
    exact = np.array([1.0, 0.5, 1.5, 3.0, 1 + 2 ** -8, 255.0, 2.0 ** -100, FLOAT32_MIN_NORMAL], np.float32)
    np.testing.assert_array_equal(stored_value(exact), exact)
    # 1/3 = 1.0101...b x 2^-2: nine significant bits kept, the rest truncated
    assert stored_value(np.float32(1 / 3)) == np.float32(0b101010101 / 2 ** 10)
    assert stored_value(np.float32(1 + 2 ** -9)) == np.float32(1.0)              # truncation, not rounding
    rng = np.random.default_rng(1)
    w = np.exp(rng.uniform(-30, 30, 100_000)).astype(np.float32)
    s = stored_value(w)
    assert ((s.view(np.uint32) & 0x7FFF) == 0).all()                              # 15 low bits dropped
    rel = (w.astype(np.float64) - s) / w
    assert rel.min() >= 0 and rel.max() < STORED_RELATIVE_ERROR and rel.max() > 0.99 * STORED_RELATIVE_ERROR
    assert np.all(np.diff(stored_value(np.sort(w))) >= 0)                         # monotone
    # scores of the stored documents: (1 - 2^-8) q.d < q.stored(d) <= q.d for non-negative weights
    docs = sp.random(200, 50, density=0.2, format="csr", random_state=2, dtype=np.float32)
    queries = sp.random(20, 50, density=0.2, format="csr", random_state=3, dtype=np.float32)
    stored = stored_weights(docs)
    assert stored.nnz == docs.nnz and stored.dtype == np.float32
    exact_s = (queries.astype(np.float64) @ docs.astype(np.float64).T).toarray()
    es_s = (queries.astype(np.float64) @ stored.astype(np.float64).T).toarray()
    assert (es_s <= exact_s).all() and (es_s >= (1 - STORED_RELATIVE_ERROR) * exact_s).all()
    assert (es_s < exact_s).any()


def test_refused_inputs(tmp_path):
    tok = TinyTokenizer()
    out = tmp_path / "b.ndjson"
    neg = tiny_docs().toarray()
    neg[1, 4] = -2.0
    with pytest.raises(ValueError, match=r"encodings row 1 \('d2'\) has negative weights"):
        write_bulk_ndjson(out, "i", ["d1", "d2"], neg, tok)
    tiny = tiny_docs().toarray()
    tiny[0, 1] = 1e-40                                                             # subnormal float32
    with pytest.raises(ValueError, match="below the smallest normal float32"):
        write_bulk_ndjson(out, "i", ["d1", "d2"], tiny, tok)
    with pytest.raises(ValueError, match="encodings has 2 rows, expected 3"):
        write_bulk_ndjson(out, "i", ["d1", "d2", "d3"], tiny_docs(), tok)
    with pytest.raises(ValueError, match=r"tokenizer.id_to_token\(7\) returned None"):
        write_bulk_ndjson(out, "i", ["d1", "d2"], np.ones((2, 8), np.float32), tok)   # wider than the vocabulary
    with pytest.raises(ValueError, match="index_name"):
        write_bulk_ndjson(out, "", ["d1", "d2"], tiny_docs(), tok)
    with pytest.raises(ValueError, match="dots must be one of"):
        write_bulk_ndjson(out, "i", ["d1", "d2"], tiny_docs(), tok, dots="strip")
    assert not out.exists()
    with pytest.raises(ValueError, match="query has negative weights"):
        query_body(-np.ones(7, np.float32), tok)
    with pytest.raises(ValueError, match="no positive weight"):
        query_body(np.zeros(7, np.float32), tok)
    with pytest.raises(ValueError, match="query must be one row"):
        query_body(np.ones((2, 7), np.float32), tok)
    with pytest.raises(ValueError, match="size must be a positive integer"):
        query_body(np.ones(7, np.float32), tok, size=0)
    with pytest.raises(ValueError, match="prune must be None, True or False"):
        index_mapping(prune="no")
    out.write_text('{"index": {"_id": "x"}}\n{"passage_embedding": {"hello": 0}}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"b.ndjson:2: weight of 'hello' is not a positive number"):
        read_bulk_ndjson(out, tok, 7)


def test_pruning_rules_apply_as_in_the_shards(tmp_path):
    from jsplade.retrieval.elasticsearch import read_bulk_ndjson, write_bulk_ndjson
    from jsplade.splade.pruning import Pruning

    class Tok:
        def id_to_token(self, i):
            return f"t{i}" if 0 <= i < 40 else None

        def token_to_id(self, t):
            return int(t[1:]) if t.startswith("t") else None

    m = sp.random(5, 40, density=0.4, format="csr", dtype=np.float32, random_state=np.random.default_rng(3))
    m.data += 0.1
    for rule in ("top_k:4", "alpha_mass:0.5"):
        write_bulk_ndjson(tmp_path / "b.ndjson", "i", [f"d{i}" for i in range(5)], m, Tok(), pruning=rule)
        got = read_bulk_ndjson(tmp_path / "b.ndjson", Tok(), 40)[1]
        want = Pruning.parse(rule).apply(m)
        assert (got != want).nnz == 0, rule  # the file holds the float32 weights exactly
