"""export_sparse_encoder / export_mlm: file sets, formats, loading in the PyTorch tools, atomicity, errors.

References: the fixture directories ``model/`` (OpenSearch hub layout) and ``model_st_native/`` (ST 5.1.2
``save()``), sentence-transformers' ``SparseEncoder`` and transformers' native ``GteForMaskedLM``.
Tolerances: float32 encodings and logits 1e-5 relative to the largest value (NATIVE_GTE.md measures ~1e-7
between the two float32 codes on this tiny model); parameters and query vectors exact.
"""

from __future__ import annotations

import json
import shutil
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES, max_rel

from jsplade import SparseEncoder, load_mlm
from jsplade.checkpoints import st_export
from jsplade.backbones.protocol import ConfigError
from jsplade.backbones.params import assign_params
from jsplade.checkpoints.st_export import export_mlm, list_files
from jsplade.splade.encoder import export_sparse_encoder
from jsplade.checkpoints.st_format import read_sparse_encoder_dir

TEXTS = json.loads((SE_FIXTURES / "expected" / "texts.json").read_text())
QUERIES = TEXTS["queries"]
DOCS = [d for d in TEXTS["documents"] if len(d) < 2000]  # all but the 9040-token document (slow in torch)
REFERENCE_DIR = {"st": "model_st_native", "opensearch": "model"}


@pytest.fixture(scope="module")
def encoder():
    return SparseEncoder.from_pretrained(SE_FIXTURES / "model")


@pytest.fixture(scope="module")
def reference_encodings(encoder):
    return encoder.encode_query(QUERIES, dense=True), encoder.encode_document(DOCS, dense=True)


def _safetensors_header(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in header.items()}, meta


def _json_keys(obj):
    """The key structure of a JSON value (nested keys; values ignored)."""
    if isinstance(obj, dict):
        return {k: _json_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_keys(v) for v in obj]
    return None


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("layout", ["st", "opensearch"])
def test_export_reproduces_the_fixture_directory_byte_for_byte(encoder, tmp_path, layout):
    """Untrained fixture model, new-impl naming: the same files as the reference directory, and every file
    but the model card identical byte for byte (so JSON keys, tensor names, shapes, dtypes, metadata,
    idf.json and query_token_weights.txt are all exactly the reference's)."""
    ref = SE_FIXTURES / REFERENCE_DIR[layout]
    summary = export_sparse_encoder(encoder, tmp_path / "out", layout=layout)
    out = tmp_path / "out"
    assert {n for n, _ in list_files(out)} == {n for n, _ in list_files(ref)}
    assert summary.files == list_files(out) and summary.path == out
    for name, _ in list_files(ref):
        if name != "README.md":
            assert (out / name).read_bytes() == (ref / name).read_bytes(), name
    assert summary.n_tensors == 31 and summary.n_parameters == 1_029_466 + 30522  # fixture README counts
    spec = read_sparse_encoder_dir(out)
    assert (spec.layout, spec.dialect) == ({"st": "st_native", "opensearch": "opensearch"}[layout], "st5")


@pytest.mark.parametrize("layout", ["st", "opensearch"])
def test_trained_weights_keep_the_format_and_regenerate_the_side_files(encoder, tmp_path, layout):
    """After a change of weights: same files, JSON keys and tensor headers as the reference; the static
    weight file, idf.json and query_token_weights.txt all hold the new weights."""
    enc = SparseEncoder.from_pretrained(SE_FIXTURES / "model")
    w = enc.query_weights.copy()
    w[[2000, 5000, 100, 0]] = [1.25, -0.5, 0.0, 3.0e-3]  # incl. a negative weight, [UNK] and [PAD]
    enc.model.query.weight.set_value(jnp.asarray(w))
    mlm_params = enc.to_parts().flat_params()
    bias = "mlm.head.decoder_bias"
    assign_params(enc.model.mlm, {bias[4:]: mlm_params[bias] + 0.5}, strict=False)

    out = tmp_path / "out"
    export_sparse_encoder(enc, out, layout=layout)
    ref = SE_FIXTURES / REFERENCE_DIR[layout]
    assert {n for n, _ in list_files(out)} == {n for n, _ in list_files(ref)}
    for name, _ in list_files(ref):
        if name.endswith(".json") and name != "idf.json":
            assert _json_keys(json.loads((out / name).read_text())) == _json_keys(json.loads((ref / name).read_text()))
        if name.endswith(".safetensors"):
            assert _safetensors_header(out / name) == _safetensors_header(ref / name), name
    q_file = out / "query_0_SparseStaticEmbedding" / "model.safetensors"
    assert q_file.read_bytes() != (ref / "query_0_SparseStaticEmbedding" / "model.safetensors").read_bytes()
    again = SparseEncoder.from_pretrained(out)
    np.testing.assert_array_equal(again.query_weights, w)
    np.testing.assert_array_equal(again.to_parts().flat_params()[bias], mlm_params[bias] + 0.5)
    if layout == "opensearch":
        vocab = enc.query_tokenizer.get_vocab()
        idf = json.loads((out / "idf.json").read_text(encoding="utf-8"))
        assert len(idf) == 30522
        idf_w = np.zeros(30522, np.float32)
        for token, value in idf.items():
            idf_w[vocab[token]] = value
        np.testing.assert_array_equal(idf_w, w)
        lines = (out / "query_token_weights.txt").read_text(encoding="utf-8").split("\n")
        assert lines[-1] == "" and len(lines) == 30523
        parsed = [line.split("\t") for line in lines[:-1]]
        assert [vocab[t] for t, _ in parsed] == list(range(30522))  # id order
        np.testing.assert_array_equal(np.asarray([float(x) for _, x in parsed], np.float32), w)


def test_model_card_describes_the_model_and_shows_metrics(encoder, tmp_path):
    export_sparse_encoder(encoder, tmp_path / "new", naming="new",
                          model_card_metrics={"LIMIT nDCG@10": 0.86912, "queries": 1000})
    card = (tmp_path / "new" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "| LIMIT nDCG@10 | 0.86912 |" in card and "| queries | 1000 |" in card
    assert "2 layers, hidden size 32" in card and "30522" in card and "8192 tokens" in card
    assert "trust_remote_code=True" in card and "SparseEncoder.from_pretrained" in card
    export_sparse_encoder(encoder, tmp_path / "gte", naming="gte")
    card = (tmp_path / "gte" / "README.md").read_text()
    assert "trust_remote_code" not in card and "## Metrics" not in card and "GteForMaskedLM" in card


def test_non_default_length_is_kept_in_the_hub_layout(tmp_path):
    enc = SparseEncoder.from_pretrained(SE_FIXTURES / "model")
    enc.max_seq_length = 512
    export_sparse_encoder(enc, tmp_path / "out", layout="opensearch")
    assert json.loads((tmp_path / "out" / "sentence_bert_config.json").read_text())["max_seq_length"] == 512
    assert SparseEncoder.from_pretrained(tmp_path / "out").max_seq_length == 512


# ----------------------------------------------------------------------------- loading elsewhere
@pytest.mark.parametrize("layout,shard", [("st", None), ("opensearch", 1_000_000)])
def test_native_gte_export_loads_in_sentence_transformers(encoder, reference_encodings, tmp_path, layout, shard):
    """naming "gte": sentence-transformers loads the folder without remote code and encodes like jsplade."""
    st = pytest.importorskip("sentence_transformers")
    out = tmp_path / "out"
    export_sparse_encoder(encoder, out, layout=layout, naming="gte", max_shard_bytes=shard or 5 * 1024**3)
    doc_dir = out / "document_0_MLMTransformer" if layout == "st" else out
    assert json.loads((doc_dir / "config.json").read_text())["model_type"] == "gte"
    assert "auto_map" not in json.loads((doc_dir / "config.json").read_text())
    assert (doc_dir / "model.safetensors.index.json").is_file() == (shard is not None)
    model = st.SparseEncoder(str(out), device="cpu")  # trust_remote_code left at its default (False)
    q_ref, d_ref = reference_encodings
    q = model.encode_query(QUERIES, convert_to_sparse_tensor=False).numpy()
    d = model.encode_document(DOCS, convert_to_sparse_tensor=False).numpy()
    np.testing.assert_array_equal(q, q_ref)  # static lookups: exact
    assert max_rel(d, d_ref) < 1e-5
    assert max_rel(model.similarity(q, d).numpy(), encoder.similarity(q_ref, d_ref)) < 1e-5
    # and jsplade reads its own export back bit for bit
    again = SparseEncoder.from_pretrained(out)
    ref_params, got = encoder.to_parts().flat_params(), again.to_parts().flat_params()
    assert set(got) == set(ref_params)
    assert all(np.array_equal(got[k], ref_params[k]) for k in ref_params)


@pytest.mark.parametrize("naming", ["new", "gte"])
def test_transformers_native_gte_loads_the_exported_weights(encoder, tmp_path, naming):
    """NATIVE_GTE.md recipe: GteForMaskedLM with the GteConfig of ``to_hf_dict("gte")`` loads the new-impl
    weights (and, with naming "gte", the folder as written) and computes jsplade's logits."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    out = tmp_path / "out"
    export_sparse_encoder(encoder, out, layout="st", naming=naming)
    folder = out / "document_0_MLMTransformer"
    cfg = encoder.model.mlm.config
    if naming == "new":
        native_cfg = transformers.GteConfig(**{k: v for k, v in cfg.to_hf_dict("gte").items()
                                              if k not in ("architectures", "model_type")})
        native = transformers.GteForMaskedLM.from_pretrained(folder, config=native_cfg)
    else:
        native = transformers.GteForMaskedLM.from_pretrained(folder)
    native.eval()
    ids, _ = encoder.document_tokenizer.encode_documents(DOCS[:2], 8192)
    length = max(len(x) for x in ids)
    ids_BxL = np.zeros((2, length), np.int32)
    mask_BxL = np.zeros((2, length), np.int32)
    for i, row in enumerate(ids):
        ids_BxL[i, :len(row)], mask_BxL[i, :len(row)] = row, 1
    with torch.inference_mode():
        ref = native(input_ids=torch.from_numpy(ids_BxL.astype(np.int64)),
                     attention_mask=torch.from_numpy(mask_BxL.astype(np.int64))).logits.numpy()
    got = np.asarray(encoder.model.mlm(ids_BxL, mask_BxL))
    real = mask_BxL.astype(bool)
    assert max_rel(got[real], ref[real]) < 1e-5


# ----------------------------------------------------------------------------- atomicity and refusal
def test_existing_destination_is_refused_unless_overwrite(encoder, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("old")
    with pytest.raises(FileExistsError, match="destination exists.*overwrite"):
        export_sparse_encoder(encoder, dst)
    assert [p.name for p in dst.iterdir()] == ["keep.txt"] and _siblings(dst) == ["out"]
    export_sparse_encoder(encoder, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and (dst / "modules.json").is_file()
    assert _siblings(dst) == ["out"]  # no temporary or old copies left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        export_sparse_encoder(encoder, tmp_path / "file", overwrite=True)


def test_a_crash_mid_write_leaves_no_directory_and_keeps_the_old_one(encoder, tmp_path, monkeypatch):
    calls = []

    def failing_write(path, tensors, metadata=None, progress=None):
        calls.append(path)
        raise OSError(28, "No space left on device")

    # the document weights are written first, then the static weight: fail on the second file
    monkeypatch.setattr(st_export, "write_safetensors", failing_write)
    dst = tmp_path / "new"
    with pytest.raises(OSError, match="No space left"):
        export_sparse_encoder(encoder, dst)
    assert calls and not dst.exists() and _siblings(dst) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "modules.json").write_text("previous export")
    with pytest.raises(OSError, match="No space left"):
        export_sparse_encoder(encoder, old, overwrite=True)
    assert [p.name for p in old.iterdir()] == ["modules.json"]
    assert (old / "modules.json").read_text() == "previous export" and _siblings(old) == ["old"]


def test_progress_reports_bytes_up_to_the_total(encoder, tmp_path):
    seen = []
    export_sparse_encoder(encoder, tmp_path / "out", progress=lambda done, total: seen.append((done, total)))
    dones = [d for d, _ in seen]
    total = seen[-1][1]
    assert dones == sorted(dones) and dones[-1] == total and len(seen) == 31
    assert total == (1_029_466 + 30522) * 4


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_are_reported_and_nothing_is_written(encoder, tmp_path):
    dst = tmp_path / "out"
    cases = [
        (dict(layout="hub"), ValueError, "layout must be one of"),
        (dict(naming="bert"), ValueError, "naming must be one of"),
        (dict(max_shard_bytes=0), ValueError, "max_shard_bytes"),
        (dict(model_card_metrics=[1, 2]), TypeError, "model_card_metrics must be a mapping"),
        (dict(model_card_metrics={"ndcg": [1]}), TypeError, r"model_card_metrics\['ndcg'\]"),
        (dict(progress=3), TypeError, "progress must be a callable"),
        (dict(overwrite="yes"), TypeError, "overwrite must be True or False"),
    ]
    for kwargs, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            export_sparse_encoder(encoder, dst, **kwargs)
    with pytest.raises(TypeError, match="encoder must be a jsplade.SparseEncoder"):
        export_sparse_encoder(encoder.model, dst)
    with pytest.raises(TypeError, match="dst must be"):
        export_sparse_encoder(encoder, None)
    assert list(tmp_path.iterdir()) == []


def test_vocabulary_mismatch_is_refused(tmp_path):
    enc = SparseEncoder.from_pretrained(SE_FIXTURES / "model")
    enc.model.query.weight.set_value(jnp.zeros(30521, jnp.float32))
    with pytest.raises(ValueError,
                       match="vocabulary sizes disagree: config vocab_size 30522, static query weight 30521"):
        export_sparse_encoder(enc, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_config_native_gte_cannot_express_is_refused_before_writing(tmp_path):
    """logn attention scaling has no equivalent in transformers' GteConfig: naming "gte" is refused
    (nothing written); naming "new" keeps the option."""
    src = tmp_path / "src"
    shutil.copytree(SE_FIXTURES / "model", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["logn_attention_scale"] = True
    (src / "config.json").write_text(json.dumps(cfg))
    enc = SparseEncoder.from_pretrained(src)
    with pytest.raises(ConfigError, match="logn_attention_scale.*naming='new'"):
        export_sparse_encoder(enc, tmp_path / "gte", naming="gte")
    assert not (tmp_path / "gte").exists()
    export_sparse_encoder(enc, tmp_path / "new", naming="new")
    assert json.loads((tmp_path / "new" / "document_0_MLMTransformer" / "config.json").read_text())[
        "logn_attention_scale"] is True


# ----------------------------------------------------------------------------- bare MLM
def test_export_mlm_writes_a_loadable_folder(encoder, tmp_path):
    mlm = encoder.model.mlm
    summary = export_mlm(mlm, tmp_path / "mlm", "gte", tokenizer=encoder.document_tokenizer, max_shard_bytes=1_500_000)
    names = {n for n, _ in summary.files}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "vocab.txt"} <= names
    assert summary.n_tensors == 40 and summary.n_parameters == 1_029_466  # native gte: q/k/v, up/gate split
    again = load_mlm(tmp_path / "mlm")
    ids = np.asarray([[101, 2054, 2003, 102]], np.int32)
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(mlm(ids)))
    with pytest.raises(FileExistsError):
        export_mlm(mlm, tmp_path / "mlm")
    with pytest.raises(TypeError, match="mlm must be"):
        export_mlm(encoder, tmp_path / "x")
    assert not (tmp_path / "x").exists()
