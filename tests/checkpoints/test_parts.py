"""EncoderParts: reading the sentence-transformers fixture directories and jsplade checkpoint directories.

References are independent of the reader: the static query weights are rebuilt from the fixture's recipe
(``RandomState(11)``, special tokens zeroed; sparse_encoder/README.md), parameters are compared with the
tensors of the fixture's safetensors files (including the HF → jsplade layout of the packed QKV kernel,
written out here), the meta JSON with the fixture's ``config.json`` and the documented settings. Every value
is compared exactly (no arithmetic happens between file and array; tolerance zero). Bad inputs must raise
the documented exception type with a message naming the file or directory at fault.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade.backbones.compute import ComputeOptions
from jsplade.checkpoints.orbax_dir import META_FILE, STEPS_DIR, TEMPLATE_DIR, CheckpointSteps, copy_template, write_meta
from jsplade.checkpoints.parts import (MLM_PREFIX, QUERY_PARAM, EncoderParts, check_path_arg, check_step,
                                       read_checkpoint, read_sparse_encoder, template_folders)
from jsplade.checkpoints.safetensors_io import read_safetensors

HUB, NATIVE = SE_FIXTURES / "model", SE_FIXTURES / "model_st_native"
QUERY_FOLDER = "query_0_SparseStaticEmbedding"
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
N_MLM_PARAMETERS = 1_029_466  # sparse_encoder/README.md
V = 30522


def _reference_query_weights() -> np.ndarray:
    w = np.random.RandomState(11).uniform(0.5, 8.0, V).astype(np.float32)
    w[[0, 101, 102, 103]] = 0
    return w


@pytest.fixture(scope="module")
def hub():
    return read_sparse_encoder(HUB)


@pytest.fixture(scope="module")
def native():
    return read_sparse_encoder(str(NATIVE))


@pytest.fixture(scope="module")
def run(hub, tmp_path_factory):
    """A jsplade checkpoint directory of the fixture model, written from the parts with the orbax_dir writers."""
    run = tmp_path_factory.mktemp("ckpt") / "run"
    run.mkdir()
    copy_template(hub.source, run)
    write_meta(run, hub.checkpoint_meta())
    steps = CheckpointSteps(run, keep=None)
    steps.save(0, hub.flat_params())
    steps.close()
    return run


def _variant(run: Path, dst: Path, params: dict | None = None, template: Path | None = None, **meta_changes) -> Path:
    """A checkpoint directory at ``dst`` sharing ``run``'s template and steps (links) unless replaced: ``params``
    saves a step 0 of its own, ``template`` is used instead of the shared one; meta keys changed (None: removed)."""
    dst.mkdir(parents=True)
    meta = json.loads((run / META_FILE).read_text())
    for key, value in meta_changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (dst / META_FILE).write_text(json.dumps(meta))
    if template is None:
        os.symlink(run / TEMPLATE_DIR, dst / TEMPLATE_DIR)
    else:
        shutil.copytree(template, dst / TEMPLATE_DIR)
    if params is None:
        os.symlink(run / STEPS_DIR, dst / STEPS_DIR)
    else:
        steps = CheckpointSteps(dst, keep=None)
        steps.save(0, params)
        steps.close()
    return dst


def _drop_last_token(folder: Path) -> None:
    """Remove the last vocabulary entry ('##～', id 30521) from a tokenizer folder's tokenizer.json and vocab.txt."""
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    last = max(vocab, key=vocab.get)
    assert vocab[last] == V - 1
    del vocab[last]
    (folder / "tokenizer.json").write_text(json.dumps(tok), encoding="utf-8")
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (folder / "vocab.txt").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")


def _assert_same_flat(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k


# ----------------------------------------------------------------------------- sentence-transformers directories
@pytest.mark.parametrize("layout", ["hub", "native"])
def test_read_sparse_encoder_gives_the_documented_fields(layout, hub, native):
    parts, root = (hub, HUB) if layout == "hub" else (native, NATIVE)
    assert isinstance(parts, EncoderParts)
    cfg = parts.mlm.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads,
            cfg.max_position_embeddings) == (V, 32, 2, 2, 8192)
    assert parts.query_weights.dtype == np.float32 and parts.query_weights.shape == (V,)
    np.testing.assert_array_equal(parts.query_weights, _reference_query_weights())
    assert abs(float(parts.query_weights[100]) - 2.886404) < 1e-6  # [UNK] keeps its weight (README)
    for tok in (parts.document_tokenizer, parts.query_tokenizer):
        assert tok.vocab_size == V
        assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 100, 101, 102, 103]
    assert parts.query_tokenizer is not parts.document_tokenizer  # the query module has tokenizer files of its own
    assert (parts.pooling_strategy, parts.activation) == ("max", "log1p_relu")
    assert parts.max_seq_length == 8192
    assert parts.similarity_fn_name == "dot"
    assert parts.prompts == {"query": "", "document": ""}
    assert parts.default_prompt_name is None and parts.max_active_dims is None
    assert parts.source == root
    assert parts.mlm.compute == ComputeOptions()


def test_both_layouts_give_identical_parameters(hub, native):
    _assert_same_flat(hub.flat_params(), native.flat_params())


def test_flat_params_hold_the_safetensors_tensors(hub):
    flat = hub.flat_params()
    assert QUERY_PARAM in flat and all(k == QUERY_PARAM or k.startswith(MLM_PREFIX) for k in flat)
    assert len(flat) == 31  # 30 stored document tensors (the decoder is tied) + the static weight
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in flat.values())
    assert sum(v.size for k, v in flat.items() if k != QUERY_PARAM) == N_MLM_PARAMETERS
    hf = read_safetensors(HUB / "model.safetensors")
    assert flat["mlm.embeddings.word.embedding"].tobytes() == hf["new.embeddings.word_embeddings.weight"].tobytes()
    assert flat["mlm.head.decoder_bias"].tobytes() == hf["lm_head.decoder.bias"].tobytes()
    # torch Linear weight [3·H·K, D] → kernel [D, 3, H, K]
    qkv = hf["new.encoder.layer.1.attention.qkv_proj.weight"]
    np.testing.assert_array_equal(flat["mlm.layers.1.attention.qkv_kernel"], qkv.T.reshape(32, 3, 2, 16))
    static = read_safetensors(HUB / QUERY_FOLDER / "model.safetensors")["weight"]
    assert flat[QUERY_PARAM].tobytes() == np.asarray(static, np.float32).tobytes()


def test_flat_params_cast_the_static_weight_to_float32(hub):
    wide = dataclasses.replace(hub, query_weights=hub.query_weights.astype(np.float64))
    out = wide.flat_params()[QUERY_PARAM]
    assert out.dtype == np.float32 and out.tobytes() == hub.query_weights.tobytes()


def test_checkpoint_meta(hub):
    meta = hub.checkpoint_meta()
    assert meta == {
        "config": json.loads((HUB / "config.json").read_text()),
        "pooling": {"pooling_strategy": "max", "activation_function": "log1p_relu"},
        "max_seq_length": 8192,
        "similarity_fn_name": "dot",
        "prompts": {"query": "", "document": ""},
        "default_prompt_name": None,
        "max_active_dims": None,
        "source": str(HUB),
        "shape": "inference_free",
    }
    assert json.loads(json.dumps(meta)) == meta  # plain JSON
    meta["prompts"]["query"] = "changed"
    assert hub.prompts["query"] == ""  # a copy, not the parts' own dict
    custom = dataclasses.replace(hub, source=None, prompts={"query": "q: "}, default_prompt_name="query",
                                 max_active_dims=64, max_seq_length=np.int64(512))
    meta = custom.checkpoint_meta()
    assert (meta["source"], meta["prompts"], meta["default_prompt_name"], meta["max_active_dims"]) == \
        (None, {"query": "q: "}, "query", 64)
    assert meta["max_seq_length"] == 512 and type(meta["max_seq_length"]) is int


def test_compute_options_reach_the_model():
    parts = read_sparse_encoder(HUB, compute=ComputeOptions(head="plain", head_chunk=16))
    assert parts.mlm.compute.head == "plain" and parts.mlm.compute.head_chunk == 16


def test_a_query_module_without_tokenizer_files_shares_the_document_tokenizer(tmp_path):
    src = tmp_path / "model"
    shutil.copytree(HUB, src)
    for name in TOKENIZER_FILES:
        (src / QUERY_FOLDER / name).unlink()
    parts = read_sparse_encoder(src)
    assert parts.query_tokenizer is parts.document_tokenizer
    np.testing.assert_array_equal(parts.query_weights, _reference_query_weights())


def test_a_damaged_query_tokenizer_is_an_error_naming_it(tmp_path):
    """Damaged tokenizer files in the query module are refused (not silently replaced by the document's)."""
    src = tmp_path / "model"
    shutil.copytree(HUB, src)
    (src / QUERY_FOLDER / "tokenizer.json").write_text("{broken")
    with pytest.raises(ValueError, match=re.escape(str(src / QUERY_FOLDER / "tokenizer.json"))):
        read_sparse_encoder(src)


def test_read_sparse_encoder_bad_arguments(tmp_path):
    for bad in (None, 3, [str(HUB)]):
        with pytest.raises(TypeError, match="path_or_hub_id must be a str or Path"):
            read_sparse_encoder(bad)
    with pytest.raises(ValueError, match="no such directory") as info:
        read_sparse_encoder(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(info.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file: not a directory"):
        read_sparse_encoder(tmp_path / "file")


def test_disagreeing_vocabulary_sizes_name_all_three_files(tmp_path):
    src = tmp_path / "model"
    shutil.copytree(HUB, src)
    _drop_last_token(src)  # the document tokenizer loses one token; config and static weight keep 30522
    with pytest.raises(ValueError, match="vocabulary sizes disagree") as info:
        read_sparse_encoder(src)
    msg = str(info.value)
    assert f"{src / 'config.json'} vocab_size=30522" in msg
    assert f"tokenizer in {src} has 30521 tokens" in msg
    assert f"{src / QUERY_FOLDER / 'model.safetensors'} has 30522 entries" in msg


def test_routes_with_different_vocabularies_are_an_error_naming_both_folders(tmp_path):
    """A query tokenizer of the same size but another token → id map would score queries against the wrong
    document dimensions: refused, naming the first differing token and both tokenizer folders."""
    src = tmp_path / "model"
    shutil.copytree(HUB, src)
    path = src / QUERY_FOLDER / "tokenizer.json"
    tok = json.loads(path.read_text(encoding="utf-8"))
    vocab = tok["model"]["vocab"]
    vocab["paris"], vocab["berlin"] = vocab["berlin"], vocab["paris"]
    path.write_text(json.dumps(tok), encoding="utf-8")
    token = "berlin"  # both swapped tokens touch the same smallest id; ties go to the smaller string
    with pytest.raises(ValueError, match="the query and document routes use different vocabularies") as info:
        read_sparse_encoder(src)
    msg = str(info.value)
    assert f"token {token!r}" in msg and "2 tokens differ" in msg
    assert f"query tokenizer ({src / QUERY_FOLDER})" in msg and f"document tokenizer ({src})" in msg


# ----------------------------------------------------------------------------- jsplade checkpoint directories
def test_read_checkpoint_rebuilds_the_parts(hub, run):
    parts = read_checkpoint(run)
    _assert_same_flat(parts.flat_params(), hub.flat_params())
    assert parts.mlm.config == hub.mlm.config
    for name in ("pooling_strategy", "activation", "max_seq_length", "similarity_fn_name", "prompts",
                 "default_prompt_name", "max_active_dims"):
        assert getattr(parts, name) == getattr(hub, name), name
    assert parts.source == run / TEMPLATE_DIR
    assert parts.document_tokenizer.vocab_size == parts.query_tokenizer.vocab_size == V
    assert parts.query_tokenizer is not parts.document_tokenizer  # read from template/query_0_.../
    assert parts.checkpoint_meta()["config"] == hub.checkpoint_meta()["config"]
    again = read_checkpoint(str(run), np.int64(0), compute=ComputeOptions(head="plain"))
    assert again.mlm.compute.head == "plain"
    _assert_same_flat(again.flat_params(), hub.flat_params())


def test_read_checkpoint_picks_the_latest_step(hub, run, tmp_path):
    params = hub.flat_params()
    later = dict(params, **{QUERY_PARAM: params[QUERY_PARAM] * 2})
    dst = _variant(run, tmp_path / "run", params=params)
    steps = CheckpointSteps(dst, keep=None)
    steps.save(9, later)
    steps.close()
    np.testing.assert_array_equal(read_checkpoint(dst).query_weights, later[QUERY_PARAM])
    np.testing.assert_array_equal(read_checkpoint(dst, 0).query_weights, params[QUERY_PARAM])


def test_meta_defaults_and_settings(run, tmp_path):
    dst = _variant(run, tmp_path / "a", pooling=None, prompts=None, similarity_fn_name=None, default_prompt_name=None,
                   max_active_dims=None)
    parts = read_checkpoint(dst)
    assert (parts.pooling_strategy, parts.activation) == ("max", "log1p_relu")
    assert parts.prompts == {} and parts.similarity_fn_name == "dot"
    assert parts.default_prompt_name is None and parts.max_active_dims is None
    dst = _variant(run, tmp_path / "b", pooling={"pooling_strategy": "sum", "activation_function": "relu"},
                   prompts={"query": "q: ", "document": "d: "}, default_prompt_name="document", max_active_dims=16,
                   max_seq_length=256)
    parts = read_checkpoint(dst)
    assert (parts.pooling_strategy, parts.activation) == ("sum", "relu")
    assert parts.prompts == {"query": "q: ", "document": "d: "} and parts.default_prompt_name == "document"
    assert parts.max_active_dims == 16 and parts.max_seq_length == 256


@pytest.mark.parametrize("changes, pattern", [
    ({"config": [1]}, r"key 'config' must hold the model's HF config object"),
    ({"pooling": {"pooling_strategy": "mean"}}, r"key 'pooling': pooling_strategy must be one of \('max', 'sum'\)"),
    ({"pooling": {"activation_function": "gelu"}}, r"key 'pooling': activation_function must be one of"),
    ({"pooling": "max"}, r"key 'pooling': pooling_strategy must be one of .*got None"),
    ({"max_seq_length": 0}, r"key 'max_seq_length' must be a positive integer, got 0"),
    ({"max_seq_length": True}, r"key 'max_seq_length' must be a positive integer, got True"),
    ({"max_seq_length": "512"}, r"key 'max_seq_length' must be a positive integer, got '512'"),
    ({"max_seq_length": None}, r"key 'max_seq_length' must be a positive integer, got None"),
    ({"prompts": {"query": 1}}, r"key 'prompts' must be an object of strings"),
    ({"prompts": ["q: "]}, r"key 'prompts' must be an object of strings"),
    ({"similarity_fn_name": "cosine"}, r"similarity_fn_name 'cosine' is not supported \(only 'dot'\)"),
    ({"default_prompt_name": "passage"}, r"default_prompt_name 'passage' is not one of the prompts"),
    ({"max_active_dims": 0}, r"key 'max_active_dims' must be a positive integer or null, got 0"),
    ({"max_active_dims": 2.5}, r"key 'max_active_dims' must be a positive integer or null, got 2.5"),
    ({"max_active_dims": False}, r"key 'max_active_dims' must be a positive integer or null, got False"),
])
def test_bad_meta_values_name_the_meta_file(run, tmp_path, changes, pattern):
    dst = _variant(run, tmp_path / "run", **changes)
    with pytest.raises(ValueError, match=pattern) as info:
        read_checkpoint(dst)
    assert str(info.value).startswith(f"{dst / META_FILE}")


def test_bad_arguments_and_missing_directories(run, tmp_path):
    for bad in (None, "", 3):
        with pytest.raises(TypeError, match="run_dir must be a non-empty str or Path"):
            read_checkpoint(bad)
    for bad in (-1, True, 1.0, "0"):
        with pytest.raises(ValueError, match="step must be a non-negative integer or None"):
            read_checkpoint(run, bad)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="file: not a directory"):
        read_checkpoint(tmp_path / "file")
    no_steps = tmp_path / "no_steps"
    no_steps.mkdir()
    shutil.copy(run / META_FILE, no_steps / META_FILE)
    os.symlink(run / TEMPLATE_DIR, no_steps / TEMPLATE_DIR)
    with pytest.raises(FileNotFoundError, match="holds no saved steps") as info:
        read_checkpoint(no_steps)
    assert str(no_steps / STEPS_DIR) in str(info.value)
    (no_steps / STEPS_DIR).mkdir()
    with pytest.raises(FileNotFoundError, match=f"{no_steps / STEPS_DIR}: the checkpoint directory holds no saved"):
        read_checkpoint(no_steps)


def test_parameters_missing_unexpected_or_misshapen(hub, run, tmp_path):
    params = hub.flat_params()
    dst = _variant(run, tmp_path / "a", params=dict(params, **{"extra.x": np.zeros(2, np.float32)}))
    with pytest.raises(ValueError, match=r"checkpoints/0: 'params' must hold 'query.weight' and 'mlm.\*' entries "
                                         r"\(missing: \[\], unexpected: \['extra.x'\]\)"):
        read_checkpoint(dst)
    dst = _variant(run, tmp_path / "b", params=dict(params, **{QUERY_PARAM: params[QUERY_PARAM][None, :]}))
    with pytest.raises(ValueError, match=r"checkpoints/0: parameter 'query.weight' must be 1-D \[vocab\], "
                                         r"got shape \[1, 30522\]"):
        read_checkpoint(dst)
    dst = _variant(run, tmp_path / "c", params={k: v for k, v in params.items() if k != "mlm.head.decoder_bias"})
    with pytest.raises(ValueError, match=r"checkpoints/0: checkpoint parameters 'mlm\.\*' do not fit the model "
                                         r"config in .*jsplade_model.json \(key 'config'\): missing parameters: "
                                         r"\['head.decoder_bias'\]"):
        read_checkpoint(dst)


@pytest.mark.parametrize("damage", ["no_params_item", "empty_step"])
def test_a_damaged_step_names_the_step_directory(run, tmp_path, damage):
    dst = tmp_path / "run"
    dst.mkdir()
    shutil.copy(run / META_FILE, dst / META_FILE)
    os.symlink(run / TEMPLATE_DIR, dst / TEMPLATE_DIR)
    shutil.copytree(run / STEPS_DIR, dst / STEPS_DIR)
    step_dir = dst / STEPS_DIR / "0"
    shutil.rmtree(step_dir / "params")
    if damage == "empty_step":
        shutil.rmtree(step_dir)
        step_dir.mkdir()
    with pytest.raises(ValueError, match="cannot read the orbax step") as info:
        read_checkpoint(dst)
    assert str(info.value).startswith(f"{step_dir}:")


def test_query_tokenizer_of_the_template(run, tmp_path):
    """The template's query module: its own tokenizer must agree in size; without tokenizer files it shares
    the document tokenizer."""
    template = tmp_path / "template"
    shutil.copytree(run / TEMPLATE_DIR, template)
    _drop_last_token(template / QUERY_FOLDER)
    dst = _variant(run, tmp_path / "a", template=template)
    with pytest.raises(ValueError, match=r"vocabulary sizes disagree: .*query tokenizer \(.*query_0_SparseStatic"
                                         r"Embedding\) = 30521") as info:
        read_checkpoint(dst)
    assert str(info.value).startswith(f"{dst}:")
    for name in TOKENIZER_FILES:
        (template / QUERY_FOLDER / name).unlink()
    dst = _variant(run, tmp_path / "b", template=template)
    parts = read_checkpoint(dst)
    assert parts.query_tokenizer is parts.document_tokenizer


def test_template_folders_of_both_layouts(tmp_path):
    for name, ref in (("hub", HUB), ("native", NATIVE)):
        template = copy_template(ref, tmp_path / name)
        doc, query = template_folders(template)
        assert query == template / QUERY_FOLDER
        assert doc == (template if name == "hub" else template / "document_0_MLMTransformer")
        assert (doc / "config.json").is_file()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'absent'}: the checkpoint has no template/ directory"):
        template_folders(tmp_path / "absent")


# ----------------------------------------------------------------------------- argument checks
def test_check_path_arg():
    assert check_path_arg("a/b", "src") == "a/b"
    assert check_path_arg(Path("a/b"), "src") == "a/b"
    for bad in ("", None, 3, b"a"):
        with pytest.raises(TypeError, match="dst must be a non-empty str or Path"):
            check_path_arg(bad, "dst")


def test_check_step():
    assert check_step(None) is None
    assert check_step(0) == 0
    out = check_step(np.int64(7))
    assert out == 7 and type(out) is int
    for bad in (-1, True, 1.5, "3", np.float32(2)):
        with pytest.raises(ValueError, match="step must be a non-negative integer or None"):
            check_step(bad)
