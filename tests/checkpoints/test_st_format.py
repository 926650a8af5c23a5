"""Reading sentence-transformers SparseEncoder directories (jsplade.checkpoints.st_format)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.fixtures import SE_FIXTURES
from jsplade.checkpoints.safetensors_io import write_safetensors
from jsplade.checkpoints.st_format import (QueryModuleSpec, read_query_weights, read_sparse_encoder_dir,
                               resolve_model_path)
from jsplade.backbones.tokenizer import WordPieceTokenizer

HUB = SE_FIXTURES / "model"                # OpenSearch layout, Router key ""
NATIVE = SE_FIXTURES / "model_st_native"   # ST-native layout, document_0_MLMTransformer/
V = 30522

ST6_TYPES = {
    "query_0_SparseStaticEmbedding":
        "sentence_transformers.sparse_encoder.modules.sparse_static_embedding.SparseStaticEmbedding",
    "document_0_MLMTransformer": "sentence_transformers.sparse_encoder.modules.mlm_transformer.MLMTransformer",
    "document_1_SpladePooling": "sentence_transformers.sparse_encoder.modules.splade_pooling.SpladePooling",
}


def copy_model(src: Path, dst: Path) -> Path:
    """A writable copy; the transformer weights (never read here) are symlinked to save time."""
    for path in src.rglob("*"):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.name == "model.safetensors" and "SparseStaticEmbedding" not in path.parent.name:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path.resolve())
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return dst


def load_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def dump_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=4), encoding="utf-8")


def edit_json(path: Path, fn) -> None:
    """Apply ``fn`` to the parsed file in place (its return value is ignored) and write it back."""
    obj = load_json(path)
    fn(obj)
    dump_json(path, obj)


def to_st6(folder: Path) -> Path:
    """Rewrite a 5.x ST-native directory into the 6.x dialect (format spec §2.2, §2.4, §7)."""
    edit_json(folder / "modules.json",
              lambda m: m[0].__setitem__("type", "sentence_transformers.base.modules.router.Router"))

    def router(cfg):
        cfg["types"] = dict(ST6_TYPES)
        cfg["parameters"]["route_mappings"] = {}
    edit_json(folder / "router_config.json", router)

    def pooling(cfg):
        cfg["embedding_dimension"] = cfg.pop("word_embedding_dimension")
    edit_json(folder / "document_1_SpladePooling" / "config.json", pooling)
    dump_json(folder / "document_0_MLMTransformer" / "sentence_bert_config.json", {
        "transformer_task": "fill-mask",
        "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
        "module_output_name": "token_embeddings"})
    for sub in ("document_0_MLMTransformer", "query_0_SparseStaticEmbedding"):
        (folder / sub / "vocab.txt").unlink()
        (folder / sub / "special_tokens_map.json").unlink()
    return folder


@pytest.fixture(scope="module")
def w_ref() -> np.ndarray:
    """The fixture's static weights from idf.json (token → float for all tokens), in id order."""
    vocab = WordPieceTokenizer.from_dir(HUB).get_vocab()
    idf = load_json(HUB / "idf.json")
    w = np.zeros(V, np.float32)
    for token, value in idf.items():
        w[vocab[token]] = value
    assert len(idf) == V
    return w


# ----------------------------------------------------------------------------- the two fixture layouts
def test_hub_layout_spec():
    spec = read_sparse_encoder_dir(HUB)
    assert spec.root == HUB and spec.layout == "opensearch" and spec.dialect == "st5"
    assert spec.document.folder == HUB and spec.document.max_seq_length is None
    assert spec.query.folder == HUB / "query_0_SparseStaticEmbedding" and spec.query.frozen is False
    assert spec.query.weight_file == HUB / "query_0_SparseStaticEmbedding" / "model.safetensors"
    assert spec.query.json_weights_file is None
    assert (spec.pooling.pooling_strategy, spec.pooling.activation_function, spec.pooling.embedding_dimension) == \
        ("max", "log1p_relu", V)
    assert spec.similarity_fn_name == "dot" and spec.prompts == {"query": "", "document": ""}
    assert spec.default_prompt_name is None and spec.max_active_dims is None and spec.default_route == "document"


def test_native_layout_spec_is_equivalent():
    hub, native = read_sparse_encoder_dir(HUB), read_sparse_encoder_dir(NATIVE)
    assert native.layout == "st_native" and native.dialect == "st5"
    assert native.document.folder == NATIVE / "document_0_MLMTransformer"
    assert native.document.max_seq_length == 8192  # from sentence_bert_config.json
    assert native.document.do_lower_case is False
    same = dict(root=hub.root, layout=hub.layout, document=hub.document,
                query=dataclasses.replace(native.query, folder=hub.query.folder, weight_file=hub.query.weight_file))
    assert dataclasses.replace(native, **same) == hub


def test_query_weights_equal_idf_json_in_both_layouts(w_ref):
    w_hub = read_query_weights(read_sparse_encoder_dir(HUB).query)
    w_native = read_query_weights(read_sparse_encoder_dir(NATIVE).query)
    assert w_hub.dtype == np.float32 and w_hub.shape == (V,)
    np.testing.assert_array_equal(w_hub, w_native)
    np.testing.assert_array_equal(w_hub, w_ref)
    assert w_hub[[0, 101, 102, 103]].tolist() == [0, 0, 0, 0] and abs(w_hub[100] - 2.886404) < 1e-6
    w_hub[0] = 5.0  # the result is a writable copy, not a view of the file
    assert read_query_weights(read_sparse_encoder_dir(HUB).query)[0] == 0


def test_query_token_weights_txt_agrees(w_ref):
    lines = (HUB / "query_token_weights.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == V
    values = np.array([float(line.rsplit("\t", 1)[1]) for line in lines], np.float32)
    np.testing.assert_array_equal(values, w_ref)


# ----------------------------------------------------------------------------- dialects and spellings
def test_st6_dialect(tmp_path, w_ref):
    folder = to_st6(copy_model(NATIVE, tmp_path / "m"))
    spec = read_sparse_encoder_dir(folder)
    assert spec.dialect == "st6" and spec.layout == "st_native"
    assert spec.document.folder == folder / "document_0_MLMTransformer"
    assert spec.document.max_seq_length is None  # 6.x keeps the length in the tokenizer
    assert spec.pooling.embedding_dimension == V and spec.pooling.activation_function == "log1p_relu"
    np.testing.assert_array_equal(read_query_weights(spec.query), w_ref)
    tok = WordPieceTokenizer.from_dir(spec.document.folder)  # tokenizer.json + tokenizer_config.json only
    assert tok.vocab_size == V and tok.model_max_length == 8192


def test_st6_plain_transformer_with_fill_mask(tmp_path):
    folder = to_st6(copy_model(NATIVE, tmp_path / "m"))
    edit_json(folder / "router_config.json", lambda c: c["types"].__setitem__(
        "document_0_MLMTransformer", "sentence_transformers.base.modules.transformer.Transformer"))
    spec = read_sparse_encoder_dir(folder)
    assert spec.dialect == "st6" and spec.document.folder == folder / "document_0_MLMTransformer"

    edit_json(folder / "document_0_MLMTransformer" / "sentence_bert_config.json",
              lambda c: c.__setitem__("transformer_task", "feature-extraction"))
    with pytest.raises(ValueError, match=r"sentence_bert_config\.json.*fill-mask.*feature-extraction"):
        read_sparse_encoder_dir(folder)
    (folder / "document_0_MLMTransformer" / "sentence_bert_config.json").unlink()
    with pytest.raises(ValueError, match="fill-mask"):
        read_sparse_encoder_dir(folder)


def test_st5_short_type_spellings(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c.__setitem__("types", {
        "query_0_SparseStaticEmbedding": "sentence_transformers.sparse_encoder.models.SparseStaticEmbedding",
        "document_0_MLMTransformer": "sentence_transformers.sparse_encoder.models.MLMTransformer",
        "document_1_SpladePooling": "sentence_transformers.sparse_encoder.models.SpladePooling"}))
    spec = read_sparse_encoder_dir(folder)
    assert spec.dialect == "st5" and spec.document.max_seq_length == 8192


def test_dot_router_key_is_the_root(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")

    def to_dot(c):
        c["types"] = {("." if k == "" else k): v for k, v in c["types"].items()}
        c["structure"]["document"] = [".", "document_1_SpladePooling"]
    edit_json(folder / "router_config.json", to_dot)
    spec = read_sparse_encoder_dir(folder)
    assert spec.layout == "opensearch" and spec.document.folder == folder


def test_st_config_fields(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    edit_json(folder / "config_sentence_transformers.json", lambda c: c.update(
        prompts={"query": "query: ", "document": ""}, default_prompt_name="query", max_active_dims=64,
        similarity_fn_name=None))
    spec = read_sparse_encoder_dir(folder)
    assert spec.prompts == {"query": "query: ", "document": ""} and spec.default_prompt_name == "query"
    assert spec.max_active_dims == 64 and spec.similarity_fn_name == "dot"
    (folder / "config_sentence_transformers.json").unlink()
    spec = read_sparse_encoder_dir(folder)
    assert spec.similarity_fn_name == "dot" and spec.prompts == {} and spec.max_active_dims is None


@pytest.mark.parametrize("change, pattern", [
    ({"max_active_dims": 0}, "max_active_dims"),
    ({"model_type": "SentenceTransformer"}, "model_type"),
    ({"prompts": {"query": 3}}, "prompts"),
    ({"default_prompt_name": "passage"}, "default_prompt_name"),
])
def test_st_config_errors(tmp_path, change, pattern):
    folder = copy_model(HUB, tmp_path / "m")
    edit_json(folder / "config_sentence_transformers.json", lambda c: c.update(change))
    with pytest.raises(ValueError, match=rf"config_sentence_transformers\.json: {pattern}"):
        read_sparse_encoder_dir(folder)


def test_json_weight_path(tmp_path, w_ref):
    folder = copy_model(HUB, tmp_path / "m")
    dump_json(folder / "query_0_SparseStaticEmbedding" / "config.json", {"frozen": True, "path": "idf.json"})
    spec = read_sparse_encoder_dir(folder)
    assert spec.query.frozen is True and spec.query.json_weights_file == folder / "idf.json"
    vocab = WordPieceTokenizer.from_dir(spec.query.folder).get_vocab()
    np.testing.assert_array_equal(read_query_weights(spec.query, vocab), w_ref)
    with pytest.raises(ValueError, match=r"idf\.json: JSON query weights need the tokenizer vocabulary"):
        read_query_weights(spec.query)


def test_json_weights_unlisted_zero_and_unknown_to_unk(tmp_path):
    path = tmp_path / "w.json"
    dump_json(path, {"hello": 1.5, "world": 2, "zzzunknown": 7.25})
    vocab = {"[PAD]": 0, "[UNK]": 1, "hello": 2, "world": 3, "x": 4}
    spec = QueryModuleSpec(folder=tmp_path, frozen=False, weight_file=None, json_weights_file=path)
    assert read_query_weights(spec, vocab).tolist() == [0.0, 7.25, 1.5, 2.0, 0.0]
    dump_json(path, {"hello": "1.5"})
    with pytest.raises(ValueError, match=r"w\.json: weight of token 'hello'"):
        read_query_weights(spec, vocab)


def test_missing_json_weight_path(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    dump_json(folder / "query_0_SparseStaticEmbedding" / "config.json", {"frozen": False, "path": "nope.json"})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_sparse_encoder_dir(folder)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_real_sentence_transformers_save(tmp_path):
    """A directory written by the installed sentence-transformers (6.x) itself."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    st_modules = pytest.importorskip("sentence_transformers.sparse_encoder.modules")
    from sentence_transformers import SparseEncoder

    src = tmp_path / "bert"
    src.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        shutil.copy(HUB / name, src / name)
    cfg = transformers.BertConfig(vocab_size=V, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                  intermediate_size=16, max_position_embeddings=64)
    transformers.BertForMaskedLM(cfg).save_pretrained(src)
    mlm = st_modules.MLMTransformer(str(src))
    static = st_modules.SparseStaticEmbedding(tokenizer=mlm.tokenizer, frozen=False)
    router = st_modules.Router.for_query_document(
        query_modules=[static], document_modules=[mlm, st_modules.SpladePooling("max", "log1p_relu")])
    out = tmp_path / "saved"
    SparseEncoder(modules=[router], similarity_fn_name="dot").save(str(out))

    spec = read_sparse_encoder_dir(out)
    assert spec.layout == "st_native"
    import sentence_transformers
    assert spec.dialect == ("st6" if int(sentence_transformers.__version__.split(".")[0]) >= 6 else "st5")
    assert (spec.pooling.pooling_strategy, spec.pooling.activation_function) == ("max", "log1p_relu")
    np.testing.assert_array_equal(read_query_weights(spec.query), static.weight.detach().numpy())


# ----------------------------------------------------------------------------- errors
def test_not_a_directory(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*not a directory"):
        read_sparse_encoder_dir(tmp_path / "nowhere")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match=r"file\.txt.*not a directory"):
        read_sparse_encoder_dir(f)


def test_no_modules_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"modules\.json"):
        read_sparse_encoder_dir(tmp_path)


@pytest.mark.parametrize("name", ["modules.json", "router_config.json", "config_sentence_transformers.json",
                                  "document_1_SpladePooling/config.json", "query_0_SparseStaticEmbedding/config.json"])
def test_malformed_json(tmp_path, name):
    folder = copy_model(HUB, tmp_path / "m")
    (folder / name).write_text('{"oops": ')
    with pytest.raises(ValueError, match=rf"{name.split('/')[-1].replace('.', '[.]')}: malformed JSON"):
        read_sparse_encoder_dir(folder)


def test_classic_sentence_transformer_module_list(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    dump_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}])
    with pytest.raises(ValueError, match=r"modules\.json: unsupported module list .*Transformer.*Pooling.*"
                                         r"must be \[MLMTransformer, SpladePooling\]"):
        read_sparse_encoder_dir(folder)
    dump_json(folder / "modules.json", [{"idx": i, "name": str(i), "path": "", "type": "sentence_transformers.models.Router"}
                                        for i in range(3)])
    with pytest.raises(ValueError, match=r"modules\.json: expected a Router module .* found 3 entries"):
        read_sparse_encoder_dir(folder)
    dump_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}])
    with pytest.raises(ValueError, match=r"modules\.json: the only module must be a Router"):
        read_sparse_encoder_dir(folder)


def test_unknown_module_type(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["types"].__setitem__(
        "document_1_SpladePooling", "my_package.CustomPooling"))
    with pytest.raises(ValueError, match=r"router_config\.json: unknown module type 'my_package\.CustomPooling'"):
        read_sparse_encoder_dir(folder)


def test_symmetric_splade_is_rejected(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["structure"].__setitem__(
        "query", ["document_0_MLMTransformer", "document_1_SpladePooling"]))
    with pytest.raises(ValueError, match=r"router_config\.json: unsupported architecture .*'query': "
                                         r"\['MLMTransformer', 'SpladePooling'\].*inference-free asymmetric"):
        read_sparse_encoder_dir(folder)


def test_extra_route_and_missing_route_are_rejected(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["structure"].__setitem__(
        "passage", ["document_0_MLMTransformer", "document_1_SpladePooling"]))
    with pytest.raises(ValueError, match="unsupported architecture"):
        read_sparse_encoder_dir(folder)
    def drop(c):
        del c["structure"]["passage"], c["structure"]["query"]
    edit_json(folder / "router_config.json", drop)
    with pytest.raises(ValueError, match="unsupported architecture"):
        read_sparse_encoder_dir(folder)


def test_route_module_without_type(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["types"].pop("document_1_SpladePooling"))
    with pytest.raises(ValueError, match=r"router_config\.json: module 'document_1_SpladePooling'.*no entry"):
        read_sparse_encoder_dir(folder)


def test_missing_sub_folder(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    shutil.rmtree(folder / "document_1_SpladePooling")
    with pytest.raises(ValueError, match=r"router_config\.json: module 'document_1_SpladePooling' has no sub-folder"):
        read_sparse_encoder_dir(folder)


def test_module_id_outside_the_model(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")

    def escape(c):
        c["types"]["../elsewhere"] = c["types"].pop("document_1_SpladePooling")
        c["structure"]["document"][1] = "../elsewhere"
    edit_json(folder / "router_config.json", escape)
    with pytest.raises(ValueError, match="must be a sub-folder name inside the model"):
        read_sparse_encoder_dir(folder)


def test_missing_transformer_config(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    (folder / "document_0_MLMTransformer" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"document_0_MLMTransformer/config\.json"):
        read_sparse_encoder_dir(folder)


def test_bad_pooling_config(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    cfg = folder / "document_1_SpladePooling" / "config.json"
    edit_json(cfg, lambda c: c.__setitem__("pooling_strategy", "mean"))
    with pytest.raises(ValueError, match=r"config\.json: pooling_strategy.*'mean'"):
        read_sparse_encoder_dir(folder)
    edit_json(cfg, lambda c: c.update(pooling_strategy="max", activation_function="gelu"))
    with pytest.raises(ValueError, match=r"config\.json: activation_function.*'gelu'"):
        read_sparse_encoder_dir(folder)


def test_missing_weight_file(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    weight = folder / "query_0_SparseStaticEmbedding" / "model.safetensors"
    weight.unlink()
    with pytest.raises(FileNotFoundError, match=r"query_0_SparseStaticEmbedding/model\.safetensors: static query "
                                                r"weights not found$"):
        read_sparse_encoder_dir(folder)
    (weight.parent / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin.*pickle files are never loaded"):
        read_sparse_encoder_dir(folder)


@pytest.mark.parametrize("tensors, pattern", [
    ({"emb": np.ones(V, np.float32)}, r"exactly one tensor named 'weight', found \['emb'\]"),
    ({"weight": np.ones(V, np.float32), "bias": np.ones(3, np.float32)},
     r"exactly one tensor named 'weight', found \['bias', 'weight'\]"),
    ({"weight": np.ones((2, V), np.float32)}, r"must be 1-D \[vocab_size\], found shape \[2, 30522\]"),
    ({"weight": np.ones(V, np.int32)}, r"must be floating point, found I32"),
    ({"weight": np.full(V, np.nan, np.float32)}, r"non-finite"),
])
def test_wrong_weight_tensor(tmp_path, tensors, pattern):
    folder = copy_model(HUB, tmp_path / "m")
    weight = folder / "query_0_SparseStaticEmbedding" / "model.safetensors"
    weight.unlink()
    write_safetensors(weight, tensors)
    spec = read_sparse_encoder_dir(folder)
    with pytest.raises(ValueError, match=rf"model\.safetensors: .*{pattern}"):
        read_query_weights(spec.query)


def test_float16_weight_becomes_float32(tmp_path):
    folder = copy_model(HUB, tmp_path / "m")
    weight = folder / "query_0_SparseStaticEmbedding" / "model.safetensors"
    weight.unlink()
    w16 = np.linspace(0, 4, V).astype(np.float16)
    write_safetensors(weight, {"weight": w16})
    w = read_query_weights(read_sparse_encoder_dir(folder).query)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, w16.astype(np.float32))


# ----------------------------------------------------------------------------- resolve_model_path
def test_resolve_local_directory(tmp_path):
    assert resolve_model_path(str(HUB)) == HUB
    assert resolve_model_path(HUB) == HUB  # type: ignore[arg-type]


def test_resolve_rejects_files_and_non_hub_ids(tmp_path, monkeypatch):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        resolve_model_path(str(f))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # relative names resolve where nothing exists ("../x" included)
    for bad in (str(tmp_path / "missing"), "plainname", "a/b/c", "../x", "owner/../name"):
        with pytest.raises(ValueError, match="no such directory, and not a Hugging Face hub id"):
            resolve_model_path(bad)
    with pytest.raises(TypeError):
        resolve_model_path(3)  # type: ignore[arg-type]


def test_resolve_hub_id_offline_gives_clear_error(tmp_path):
    code = ("from jsplade.checkpoints.st_format import resolve_model_path\n"
            "try:\n    resolve_model_path('some-owner/some-model-that-is-not-cached')\n"
            "except ValueError as e:\n    print('VALUEERROR:', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "VALUEERROR:" in done.stdout
    assert "could not be fetched from the Hugging Face hub" in done.stdout
    assert "Pass a local directory" in done.stdout
