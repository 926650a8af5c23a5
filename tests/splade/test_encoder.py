"""SparseEncoder against the sentence-transformers reference outputs of tests/fixtures/sparse_encoder.

Tolerances (sparse_encoder/README.md suggests rtol 1e-5 / atol 1e-6): query vectors are exact lookups
(compared exactly); document vectors 1e-5 relative to the largest value; scores 1e-5 relative.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
from helpers.fixtures import SE_FIXTURES, max_rel
from helpers.st_models import BACKBONES, SHAPES, build_st_sparse_encoder, st_encode

from jsplade import SparseEncoder
from jsplade.splade.batching import padded_length

EXPECTED = SE_FIXTURES / "expected"
TEXTS = json.loads((EXPECTED / "texts.json").read_text())
INFO = json.loads((EXPECTED / "encode_info.json").read_text())


@pytest.fixture(scope="module")
def expected():
    with np.load(EXPECTED / "encode.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module", params=["model", "model_st_native"])
def encoder(request):
    return SparseEncoder.from_pretrained(SE_FIXTURES / request.param)


@pytest.fixture(scope="module")
def encoded(encoder):
    q = encoder.encode_query(TEXTS["queries"])
    d = encoder.encode_document(TEXTS["documents"], batch_size=4)
    return q, d


def test_both_layouts_load_the_same_model(encoder):
    assert encoder.vocab_size == 30522
    assert encoder.max_seq_length == 8192
    assert (encoder.model.pooling_strategy, encoder.model.activation) == ("max", "log1p_relu")
    other = SparseEncoder.from_pretrained(SE_FIXTURES / "model_st_native")
    np.testing.assert_array_equal(encoder.query_weights, other.query_weights)


def test_query_encodings_are_exact(encoded, expected):
    q, _ = encoded
    assert isinstance(q, sp.csr_matrix) and q.dtype == np.float32 and q.shape == (10, 30522)
    np.testing.assert_array_equal(q.toarray(), expected["query_emb"])
    for i, info in enumerate(INFO["queries"]):
        assert q[i].nnz == info["active_dims"], info["kind"]


def test_document_encodings_and_scores(encoder, encoded, expected):
    q, d = encoded
    assert isinstance(d, sp.csr_matrix) and d.shape == (10, 30522)
    assert max_rel(d.toarray(), expected["doc_emb"]) < 1e-5
    for i, info in enumerate(INFO["documents"]):
        assert d[i].nnz == info["active_dims"], info["kind"]
    scores = encoder.similarity(q, d)
    assert isinstance(scores, np.ndarray) and scores.shape == (10, 10)
    assert max_rel(scores, expected["scores"]) < 1e-5


def test_max_active_dims(encoder, expected):
    q8 = encoder.encode_query(TEXTS["queries"], max_active_dims=8)
    d8 = encoder.encode_document(TEXTS["documents"], batch_size=4, max_active_dims=8)
    np.testing.assert_array_equal(q8.toarray(), expected["query_emb_k8"])
    assert max_rel(d8.toarray(), expected["doc_emb_k8"]) < 1e-5
    assert np.array_equal(d8.toarray() != 0, expected["doc_emb_k8"] != 0)  # same kept entries
    assert max_rel(encoder.similarity(q8, d8), expected["scores_k8"]) < 1e-5
    for i, info in enumerate(INFO["queries"]):
        assert q8[i].nnz == info["active_dims_k8"]


def test_dense_output_and_single_text(encoder, encoded):
    q, d = encoded
    dense = encoder.encode_query(TEXTS["queries"], dense=True)
    assert isinstance(dense, np.ndarray) and dense.dtype == np.float32
    np.testing.assert_array_equal(dense, q.toarray())
    for i, text in enumerate(TEXTS["documents"][:8]):  # each text alone equals its batched row
        alone = encoder.encode_document([text], dense=True)[0]
        assert np.max(np.abs(alone - d[i].toarray()[0])) <= 1e-6 * max(1.0, np.abs(alone).max())


def test_edge_case_texts_behave_as_recorded(encoder, encoded):
    q, d = encoded
    kinds = TEXTS["query_kinds"]
    for kind in ("empty", "whitespace"):
        assert q[kinds.index(kind)].nnz == 0
    only_empty = encoder.encode_query(["", "   "])
    assert only_empty.shape == (2, 30522) and only_empty.nnz == 0
    assert q[kinds.index("repeat")].nnz == 1  # "now now now": binary presence
    unk = q[kinds.index("unk")]
    assert 100 in unk.indices  # [UNK] kept, weighted by w[100]
    assert unk[0, 100] == pytest.approx(encoder.query_weights[100])
    docs = encoder.encode_document(["", "   "], dense=True)
    np.testing.assert_array_equal(docs[0], docs[1])  # whitespace = empty = [CLS] [SEP]
    assert (docs[0] != 0).sum() == INFO["documents"][TEXTS["document_kinds"].index("empty")]["active_dims"]
    assert encoder.encode_query([]).shape == (0, 30522)
    assert encoder.encode_document([]).shape == (0, 30522)


def test_truncation_warns_once_per_call(encoder, caplog):
    long_text = TEXTS["documents"][TEXTS["document_kinds"].index("long")]
    with caplog.at_level(logging.WARNING, logger="jsplade"):
        encoder.encode_document([long_text, long_text, "short"], batch_size=2)
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 3" in warnings[0].getMessage()


def test_rows_come_back_in_input_order_and_shapes_are_bucketed(encoder):
    rng = np.random.default_rng(0)
    words = TEXTS["documents"][3].split()
    texts = [" ".join(words[: int(n)]) for n in rng.integers(1, 120, size=37)]
    before = encoder._doc_fn._cache_size()
    out = encoder.encode_document(texts, batch_size=8)
    compiled = encoder._doc_fn._cache_size() - before
    assert compiled <= 8, compiled  # a handful of (rows, length) programs for 37 lengths
    for i in (0, 5, 36):
        np.testing.assert_allclose(out[i].toarray(), encoder.encode_document([texts[i]], dense=True), rtol=1e-5,
                                   atol=1e-6)


def test_documents_pad_to_the_encoding_ladder(encoder, monkeypatch):
    """Batches pad to ``ENCODE_LENGTH_LADDER`` (8-token steps at passage lengths), not the training ladder."""
    words = (TEXTS["documents"][3] + " " + TEXTS["documents"][4]).split() * 20
    text = next(t for t in (" ".join(words[:n]) for n in range(1, len(words)))
                if len(encoder.document_tokenizer.encode_documents([t], 8192)[0][0]) >= 130)
    n_tokens = len(encoder.document_tokenizer.encode_documents([text], 8192)[0][0])
    assert padded_length(n_tokens, 8192) > -(-n_tokens // 8) * 8  # the two ladders differ at this length
    shapes = []
    run = encoder._doc_fn
    monkeypatch.setattr(encoder, "_doc_fn", lambda graphdef, state, ids, mask: (shapes.append(ids.shape),
                                                                                 run(graphdef, state, ids, mask))[1])
    encoder.encode_document([text])
    assert shapes == [(1, -(-n_tokens // 8) * 8)], (n_tokens, shapes)


def test_packing_gives_the_padded_vectors(encoder, encoded):
    _, d = encoded
    packed = encoder.encode_document(TEXTS["documents"], batch_size=4, packing=True)
    assert max_rel(packed.toarray(), d.toarray()) < 1e-5


def test_decode(encoder, encoded):
    q, _ = encoded
    top = encoder.decode(q[0], top_k=3)
    weights = encoder.query_weights
    ids = [encoder.tokenizer.token_to_id(t) for t, _ in top]
    assert [w for _, w in top] == sorted((float(weights[i]) for i in ids), reverse=True)
    assert len(encoder.decode(q[0], top_k=None)) == q[0].nnz
    with pytest.raises(ValueError, match="one vector"):
        encoder.decode(q[:2])


@pytest.mark.parametrize("bad, exc, msg", [
    (None, TypeError, "texts"),
    (b"bytes", TypeError, "texts"),
    ("a bare string", TypeError, r"list of strings"),
    (["ok", 3], TypeError, r"texts\[1\] must be a str"),
    (["ok", None], TypeError, r"texts\[1\] must be a str"),
])
def test_wrong_input_types(encoder, bad, exc, msg):
    with pytest.raises(exc, match=msg):
        encoder.encode_query(bad)
    with pytest.raises(exc, match=msg):
        encoder.encode_document(bad)


def test_bad_arguments(encoder):
    with pytest.raises(ValueError, match="batch_size"):
        encoder.encode_document(["x"], batch_size=0)
    with pytest.raises(ValueError, match="max_active_dims"):
        encoder.encode_query(["x"], max_active_dims=-1)
    with pytest.raises(ValueError, match="columns"):
        encoder.similarity(np.ones((1, 5)), np.ones((1, 5)))


def _copy(tmp_path, name="model"):
    dst = tmp_path / name
    shutil.copytree(SE_FIXTURES / name, dst)
    return dst


def test_vocab_size_disagreement_names_the_files(tmp_path):
    d = _copy(tmp_path)
    from jsplade.checkpoints.safetensors_io import write_safetensors

    write_safetensors(d / "query_0_SparseStaticEmbedding" / "model.safetensors", {"weight": np.ones(30000, np.float32)})
    with pytest.raises(ValueError, match=r"(?s)vocab.*30522.*30000|30000.*30522"):
        SparseEncoder.from_pretrained(d)


def test_loading_errors_name_the_file(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match="nowhere"):
        SparseEncoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="path_or_hub_id"):
        SparseEncoder.from_pretrained(None)
    d = _copy(tmp_path)
    (d / "modules.json").write_text("{broken")
    with pytest.raises(ValueError, match="modules.json"):
        SparseEncoder.from_pretrained(d)
    d2 = _copy(tmp_path / "b")
    raw = json.loads((d2 / "config.json").read_text())
    raw["model_type"] = "albert"
    (d2 / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"config.json.*model_type 'albert'"):
        SparseEncoder.from_pretrained(d2)
    d3 = _copy(tmp_path / "c")
    (d3 / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        SparseEncoder.from_pretrained(d3)
    d4 = _copy(tmp_path / "d")
    (d4 / "config.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="config.json"):
        SparseEncoder.from_pretrained(d4)


def test_progress_bar_when_asked(encoder, capsys):
    encoder.encode_document(["a", "b", "c"], batch_size=1, show_progress_bar=True)
    assert "Encoding documents" in capsys.readouterr().err
    encoder.encode_document(["a", "b", "c"], batch_size=1)  # small input: no bar unless asked
    assert "Encoding documents" not in capsys.readouterr().err


def test_save_and_load_round_trip(encoder, encoded, tmp_path):
    q, d = encoded
    encoder.save(tmp_path / "saved", layout="opensearch", naming="gte")
    again = SparseEncoder.load(tmp_path / "saved")
    np.testing.assert_array_equal(again.encode_query(TEXTS["queries"]).toarray(), q.toarray())
    np.testing.assert_array_equal(again.encode_document(TEXTS["documents"][:3]).toarray(),
                                  encoder.encode_document(TEXTS["documents"][:3]).toarray())
    with pytest.raises(FileExistsError):
        encoder.save(tmp_path / "saved")


# ----------------------------------------------------------------------------- other backbones and shapes
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backbone", BACKBONES)
def test_other_backbones_and_symmetric_models_match_sentence_transformers(tmp_path, backbone, shape):
    """Inference-free (the doc-v2/v3-distill shape), symmetric SPLADE and an asymmetric Router (an MLM on each
    route, the query route with its own activation and length) on BERT and DistilBERT, built by the
    installed sentence-transformers: encodings and scores within 1e-5 of its own; jsplade's export loads
    back in sentence-transformers with the same encodings."""
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder

    st, folder = build_st_sparse_encoder(tmp_path, backbone, shape)
    queries, docs = TEXTS["queries"][:4], TEXTS["documents"][:5]

    q_ref, d_ref = st_encode(st, queries, docs)
    enc = SparseEncoder.from_pretrained(folder)
    assert enc.shape == shape and (enc.query_weights is None) == (shape != "inference_free")
    q, d = enc.encode_query(queries, dense=True), enc.encode_document(docs, dense=True)
    if shape == "inference_free":
        np.testing.assert_array_equal(q, q_ref)  # static lookups: exact
    else:
        assert max_rel(q, q_ref) < 1e-5
    assert max_rel(d, d_ref) < 1e-5
    assert max_rel(enc.similarity(q, d), q_ref @ d_ref.T) < 1e-5
    enc.save(tmp_path / "export")
    q_back, d_back = st_encode(StSparseEncoder(str(tmp_path / "export")).eval(), queries, docs)
    assert max_rel(q_back, q_ref) < 1e-5 and max_rel(d_back, d_ref) < 1e-5
    again = SparseEncoder.from_pretrained(tmp_path / "export")
    assert again.shape == shape
    np.testing.assert_array_equal(again.encode_query(queries, dense=True), q)
    if shape != "inference_free":
        with pytest.raises(ValueError, match=f"(a|an) {shape} model is written in the sentence-transformers layout"):
            enc.save(tmp_path / "os", layout="opensearch")
