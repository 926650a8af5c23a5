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


def test_a_router_with_an_mlm_on_each_route_is_asymmetric(tmp_path):
    """query route [MLMTransformer, SpladePooling] in folders of its own: shape "asymmetric", each route's
    transformer folder, pooling and length; the static query module is not needed."""
    folder = copy_model(NATIVE, tmp_path / "m")
    shutil.copytree(folder / "document_0_MLMTransformer", folder / "query_0_MLMTransformer", symlinks=True)
    dump_json(folder / "query_0_MLMTransformer" / "sentence_bert_config.json", {"max_seq_length": 32})
    (folder / "query_1_SpladePooling").mkdir()
    dump_json(folder / "query_1_SpladePooling" / "config.json", {"pooling_strategy": "sum",
                                                                 "activation_function": "relu"})
    shutil.rmtree(folder / "query_0_SparseStaticEmbedding")

    def edit(c):
        c["types"] = {"query_0_MLMTransformer": c["types"]["document_0_MLMTransformer"],
                      "query_1_SpladePooling": c["types"]["document_1_SpladePooling"],
                      "document_0_MLMTransformer": c["types"]["document_0_MLMTransformer"],
                      "document_1_SpladePooling": c["types"]["document_1_SpladePooling"]}
        c["structure"]["query"] = ["query_0_MLMTransformer", "query_1_SpladePooling"]
    edit_json(folder / "router_config.json", edit)
    spec = read_sparse_encoder_dir(folder)
    assert (spec.shape, spec.layout, spec.query) == ("asymmetric", "st_native", None)
    assert spec.query_mlm.folder == folder / "query_0_MLMTransformer" and spec.query_mlm.max_seq_length == 32
    assert (spec.query_pooling.pooling_strategy, spec.query_pooling.activation_function) == ("sum", "relu")
    assert spec.document.folder == folder / "document_0_MLMTransformer"
    assert spec.pooling.pooling_strategy == "max"


def test_a_router_sharing_one_mlm_between_routes_is_refused(tmp_path):
    """Both routes naming the same transformer folder is a symmetric model written wrongly: refused."""
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["structure"].__setitem__(
        "query", ["document_0_MLMTransformer", "document_1_SpladePooling"]))
    with pytest.raises(ValueError, match=r"router_config\.json: the query and document routes name the same "
                                         r"transformer folder .*document_0_MLMTransformer.*symmetric"):
        read_sparse_encoder_dir(folder)


def test_a_query_route_of_other_modules_is_rejected(tmp_path):
    folder = copy_model(NATIVE, tmp_path / "m")
    edit_json(folder / "router_config.json", lambda c: c["structure"].__setitem__(
        "query", ["document_1_SpladePooling"]))
    with pytest.raises(ValueError, match=r"router_config\.json: unsupported architecture .*'query': "
                                         r"\['SpladePooling'\].*\[SparseStaticEmbedding\] \(inference-free\) or "
                                         r"\[MLMTransformer, SpladePooling\] \(asymmetric\)"):
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


# ----------------------------------------------------------------------------- bare OpenSearch folders
BARE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def bare_folder(folder: Path, idf: dict | None = None, txt: str | None = None, *, from_hub: bool = False) -> Path:
    """A bare OpenSearch folder (no modules.json): the fixture's model config and tokenizer, its weights
    symlinked, and the given idf.json / query_token_weights.txt (``from_hub``: the fixture's own two)."""
    folder.mkdir(parents=True)
    for name in BARE_FILES:
        shutil.copy(HUB / name, folder / name)
    (folder / "model.safetensors").symlink_to((HUB / "model.safetensors").resolve())
    if from_hub:
        shutil.copy(HUB / "idf.json", folder / "idf.json")
        shutil.copy(HUB / "query_token_weights.txt", folder / "query_token_weights.txt")
    if idf is not None:
        dump_json(folder / "idf.json", idf)
    if txt is not None:
        (folder / "query_token_weights.txt").write_text(txt, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def hub_vocab() -> dict[str, int]:
    return WordPieceTokenizer.from_dir(HUB).get_vocab()


def bare_weights(folder: Path, vocab: dict[str, int]) -> np.ndarray:
    return read_query_weights(read_sparse_encoder_dir(folder).query, vocab)


@pytest.mark.parametrize("files", ["both", "idf.json", "query_token_weights.txt"])
def test_opensearch_bare_folder_spec(tmp_path, files, w_ref, hub_vocab):
    folder = bare_folder(tmp_path / "m", from_hub=True)
    if files != "both":
        (folder / ({"idf.json", "query_token_weights.txt"} - {files}).pop()).unlink()
    spec = read_sparse_encoder_dir(folder)
    assert (spec.root, spec.layout, spec.shape, spec.dialect) == (folder, "opensearch_bare", "inference_free", "st5")
    assert spec.document.folder == folder and spec.document.max_seq_length is None
    assert (spec.pooling.pooling_strategy, spec.pooling.activation_function) == ("max", "relu")
    assert spec.query.folder == folder and spec.query.weight_file is None and spec.query.frozen is False
    assert spec.query.json_weights_file == (None if files == "query_token_weights.txt" else folder / "idf.json")
    assert spec.query.txt_weights_file == (None if files == "idf.json" else folder / "query_token_weights.txt")
    assert spec.similarity_fn_name == "dot" and spec.prompts == {} and spec.max_active_dims is None
    np.testing.assert_array_equal(read_query_weights(spec.query, hub_vocab), w_ref)  # both tables: 30522 tokens


def test_opensearch_bare_unlisted_tokens_weigh_zero(tmp_path, hub_vocab):
    folder = bare_folder(tmp_path / "m", {"hello": 1.5, "[UNK]": 0.25},
                         "hello\t1.5\n[UNK]\t0.25\n")
    w = bare_weights(folder, hub_vocab)
    assert w.dtype == np.float32 and w.shape == (V,)
    assert (w[hub_vocab["hello"]], w[hub_vocab["[UNK]"]]) == (1.5, 0.25)
    assert np.count_nonzero(w) == 2


def test_opensearch_bare_tables_agree_as_float32(tmp_path, hub_vocab):
    """0.1 and 0.10000000001 are one float32: the tables agree; CRLF lines and a missing last newline are fine."""
    folder = bare_folder(tmp_path / "m", {"world": 0.10000000001, "hello": 2}, "hello\t2.0\r\nworld\t0.1")
    w = bare_weights(folder, hub_vocab)
    assert w[hub_vocab["world"]] == np.float32(0.1) and w[hub_vocab["hello"]] == 2.0


@pytest.mark.parametrize("text, pattern", [
    ("hello\t1.0\nworld 2.0\n", r"line 2: expected 'token<TAB>weight' \(two TAB-separated fields\), found 1"),
    ("hello\t1.0\t3\n", r"line 1: expected 'token<TAB>weight' .*found 3"),
    ("hello\t1.0\n\nworld\t2\n", r"line 2: expected 'token<TAB>weight' .*found 1"),
    ("hello\tabc\n", r"line 1: weight 'abc' of token 'hello' is not a number"),
    ("hello\t1\nworld\tnan\n", r"line 2: weight 'nan' of token 'world' is not finite"),
    ("hello\t-inf\n", r"line 1: weight '-inf' of token 'hello' is not finite"),
    ("hello\t1\nworld\t2\nhello\t1\n", r"line 3: token 'hello' is listed twice \(first on line 1\)"),
    ("hello\t1\nzzqxnotatoken\t2\n", r"line 2: token 'zzqxnotatoken' is not in the tokenizer vocabulary; the weight "
                                     r"table belongs to another tokenizer"),
])
def test_opensearch_bare_malformed_txt_names_file_and_line(tmp_path, hub_vocab, text, pattern):
    folder = bare_folder(tmp_path / "m", txt=text)
    with pytest.raises(ValueError, match=r"query_token_weights\.txt: " + pattern):
        bare_weights(folder, hub_vocab)


@pytest.mark.parametrize("table, pattern", [
    ({"hello": 1, "zzqxnotatoken": 2}, r"token 'zzqxnotatoken' is not in the tokenizer vocabulary; the weight table "
                                       r"belongs to another tokenizer"),
    ({"hello": "1.5"}, r"weight of token 'hello' must be a finite number, got '1\.5'"),
    ({"hello": True}, r"weight of token 'hello' must be a finite number, got True"),
    ({"hello": float("inf")}, r"weight of token 'hello' must be a finite number, got inf"),
])
def test_opensearch_bare_bad_idf_json_names_file_and_token(tmp_path, hub_vocab, table, pattern):
    folder = bare_folder(tmp_path / "m", table)
    with pytest.raises(ValueError, match=r"idf\.json: " + pattern):
        bare_weights(folder, hub_vocab)


@pytest.mark.parametrize("idf, txt, pattern", [
    ({"hello": 1, "world": 2}, "hello\t1\nworld\t2\nthe\t3\n", r"token 'the': missing idf\.json entry"),
    ({"hello": 1, "world": 2, "the": 3}, "hello\t1\nworld\t2\n", r"token 'the': missing query_token_weights\.txt entry"),
    ({"hello": 1, "world": 2.5}, "hello\t1\nworld\t2\n", r"token 'world': weighs 2\.5 in idf\.json and 2\.0 in "
                                                         r"query_token_weights\.txt"),
    # "the" (id 1996) comes before "hello" (7592) and "world" (2088) in the vocabulary: it is reported first
    ({"hello": 9, "world": 9, "the": 1}, "hello\t1\nworld\t2\n", r"token 'the': missing query_token_weights\.txt entry "
                                                                 r"\(it weighs 1\.0 in idf\.json\) \(3 token\(s\) differ\)"),
])
def test_opensearch_bare_tables_that_disagree_name_both_files(tmp_path, hub_vocab, idf, txt, pattern):
    folder = bare_folder(tmp_path / "m", idf, txt)
    with pytest.raises(ValueError, match=rf"{folder}/idf\.json and {folder}/query_token_weights\.txt disagree: "
                                         + pattern):
        bare_weights(folder, hub_vocab)


def test_bare_mlm_folder_without_weight_tables_keeps_the_old_error(tmp_path):
    folder = bare_folder(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match=rf"{folder}/modules\.json: not found; .* is not a sentence-transformers "
                                                "model folder"):
        read_sparse_encoder_dir(folder)
    (folder / "config.json").unlink()  # a weight table without a model config is no bare folder either
    (folder / "idf.json").write_text('{"hello": 1.0}')
    with pytest.raises(FileNotFoundError, match=r"modules\.json: not found"):
        read_sparse_encoder_dir(folder)


def test_st_json_path_keeps_its_unknown_token_rule_next_to_a_model_config(tmp_path, hub_vocab):
    """A SparseStaticEmbedding whose config ``path`` names an idf.json in its own folder keeps the
    sentence-transformers rule (an unknown token lands on [UNK]), not the bare-folder error."""
    folder = copy_model(HUB, tmp_path / "m")
    query_dir = folder / "query_0_SparseStaticEmbedding"
    (query_dir / "model.safetensors").unlink()
    dump_json(query_dir / "config.json", {"frozen": False, "path": "idf.json"})
    dump_json(query_dir / "idf.json", {"hello": 1.5, "zzqxnotatoken": 7.25})
    spec = read_sparse_encoder_dir(folder)
    assert spec.layout == "opensearch" and spec.query.json_weights_file == query_dir / "idf.json"
    assert spec.query.txt_weights_file is None
    w = read_query_weights(spec.query, hub_vocab)
    assert (w[hub_vocab["hello"]], w[hub_vocab["[UNK]"]], np.count_nonzero(w)) == (1.5, 7.25, 2)
