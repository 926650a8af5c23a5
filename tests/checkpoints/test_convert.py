"""to_jax / to_hf / load_checkpoint_encoder: lossless round trips and every bad input refused with nothing written.

Round trips are compared bit for bit (parameters with ``array_equal``, encodings with ``array_equal``): the
same float32 values pass through safetensors and orbax unchanged, so any difference is a bug.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade import SparseEncoder
from jsplade.checkpoints import convert as convert_mod
from jsplade.backbones.gte_config import v3_gte_config
from jsplade.backbones.protocol import ConfigError
from jsplade.checkpoints.convert import to_hf, to_jax
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.checkpoints.safetensors_io import write_safetensors
from jsplade.checkpoints.st_export import list_files
from jsplade.checkpoints.orbax_dir import META_FILE, CheckpointSteps

TEXTS = json.loads((SE_FIXTURES / "expected" / "texts.json").read_text())
QUERIES = TEXTS["queries"]
DOCS = [d for d in TEXTS["documents"] if len(d) < 2000]


@pytest.fixture(scope="module")
def fixture_encoder():
    return SparseEncoder.from_pretrained(SE_FIXTURES / "model")


@pytest.fixture(scope="module")
def fixture_checkpoint(tmp_path_factory):
    """A jsplade checkpoint of the fixture model (shared, read-only in the tests that use it)."""
    dst = tmp_path_factory.mktemp("ckpt") / "run"
    to_jax(SE_FIXTURES / "model", dst)
    return dst


def _assert_same_params(a: SparseEncoder, b: SparseEncoder) -> None:
    pa, pb = a.to_parts().flat_params(), b.to_parts().flat_params()
    assert set(pa) == set(pb) and "query.weight" in pa
    for k in pa:
        assert pa[k].dtype == pb[k].dtype == np.float32, k
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


def _copy_meta(run, dst, **changes):
    """A copy of checkpoint ``run`` at ``dst`` with meta keys (or meta['config'] keys) changed."""
    shutil.copytree(run, dst)
    meta = json.loads((dst / META_FILE).read_text())
    for key, value in changes.items():
        if key.startswith("config."):
            meta["config"][key[len("config."):]] = value
        elif value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    (dst / META_FILE).write_text(json.dumps(meta))
    return dst


# ----------------------------------------------------------------------------- round trips
def test_fixture_round_trip_is_bit_exact(fixture_encoder, fixture_checkpoint, tmp_path):
    """HF → jsplade → HF → jsplade: parameters and encodings bit-exact, and the HF directories written on
    the way are the fixture's files byte for byte (model card aside)."""
    run1 = fixture_checkpoint
    assert (run1 / META_FILE).is_file() and (run1 / "template" / "tokenizer.json").is_file()
    assert not list((run1 / "template").rglob("*.safetensors"))
    enc1 = SparseEncoder.from_checkpoint(run1)
    _assert_same_params(fixture_encoder, enc1)
    for layout, ref in (("opensearch", "model"), ("st", "model_st_native")):
        hf = tmp_path / f"hf_{layout}"
        summary = to_hf(run1, hf, layout=layout)
        assert summary.n_tensors == 31
        for name, _ in list_files(SE_FIXTURES / ref):
            if name != "README.md":
                assert (hf / name).read_bytes() == (SE_FIXTURES / ref / name).read_bytes(), name
        run2 = tmp_path / f"run_{layout}"
        to_jax(hf, run2)
        enc2 = SparseEncoder.from_checkpoint(run2)
        _assert_same_params(fixture_encoder, enc2)
        np.testing.assert_array_equal(enc2.encode_query(QUERIES, dense=True),
                                      fixture_encoder.encode_query(QUERIES, dense=True))
        np.testing.assert_array_equal(enc2.encode_document(DOCS, dense=True),
                                      fixture_encoder.encode_document(DOCS, dense=True))
    assert (enc2.max_seq_length, enc2.prompts, enc2.similarity_fn_name) == (8192, {"query": "", "document": ""}, "dot")
    assert enc2.source == run2 / "template"


def test_native_gte_naming_round_trips_too(fixture_encoder, fixture_checkpoint, tmp_path):
    to_hf(fixture_checkpoint, tmp_path / "hf", layout="opensearch", naming="gte")
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "gte"
    to_jax(tmp_path / "hf", tmp_path / "run")
    _assert_same_params(fixture_encoder, SparseEncoder.from_checkpoint(tmp_path / "run"))


@pytest.mark.slow
def test_v3_gte_shaped_round_trip_is_bit_exact(tmp_path):
    """Full v3-gte shape (12 layers, 768 wide, 137M parameters) with recipe weights; 2 documents × ≤32 tokens."""
    src = tmp_path / "src"
    top = str(SE_FIXTURES / "model")
    shutil.copytree(top, src, ignore=lambda d, names: ["config.json", "model.safetensors"] if d == top else [])
    config = v3_gte_config()
    (src / "config.json").write_text(config.to_json_string("new"))
    write_safetensors(src / "model.safetensors", recipe_state_dict(config, seed=1234), {"format": "pt"})

    to_jax(src, tmp_path / "run1")
    summary = to_hf(tmp_path / "run1", tmp_path / "hf", layout="opensearch")
    assert summary.n_parameters == 137_394_234 + 30522  # gte_architecture.md §7 + static weights
    assert (tmp_path / "hf" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    to_jax(tmp_path / "hf", tmp_path / "run2")
    final = SparseEncoder.from_checkpoint(tmp_path / "run2")
    original = SparseEncoder.from_pretrained(src)
    _assert_same_params(original, final)
    docs = ["word " * 30, "another document about sparse retrieval " * 5]
    assert [len(x) for x in original.document_tokenizer.encode_documents(docs, 8192)[0]] == [32, 27]
    np.testing.assert_array_equal(final.encode_document(docs, dense=True), original.encode_document(docs, dense=True))
    np.testing.assert_array_equal(final.encode_query(QUERIES, dense=True), original.encode_query(QUERIES, dense=True))


# ----------------------------------------------------------------------------- steps, meta
def test_latest_step_by_default_and_a_chosen_step(fixture_encoder, fixture_checkpoint, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fixture_checkpoint, run)
    params = fixture_encoder.to_parts().flat_params()
    trained = dict(params, **{"query.weight": params["query.weight"] * 0.5})
    steps = CheckpointSteps(run, keep=None)
    steps.save(7, trained, force=True)
    steps.close()
    np.testing.assert_array_equal(SparseEncoder.from_checkpoint(run).query_weights, trained["query.weight"])
    np.testing.assert_array_equal(SparseEncoder.from_checkpoint(run, step=0).query_weights, params["query.weight"])
    to_hf(run, tmp_path / "hf7", layout="opensearch")
    idf = json.loads((tmp_path / "hf7" / "idf.json").read_text(encoding="utf-8"))
    assert idf["the"] == float(trained["query.weight"][fixture_encoder.query_tokenizer.token_to_id("the")])
    to_hf(run, tmp_path / "hf0", step=0)
    np.testing.assert_array_equal(SparseEncoder.from_pretrained(tmp_path / "hf0").query_weights, params["query.weight"])
    with pytest.raises(FileNotFoundError, match=r"no step 3 \(saved steps: \[0, 7\]\)"):
        to_hf(run, tmp_path / "hf3", step=3)
    assert not (tmp_path / "hf3").exists()


def test_checkpoint_meta_written_by_the_trainer_is_read(fixture_encoder, fixture_checkpoint, tmp_path):
    """The trainer's meta has no default_prompt_name / max_active_dims; encoder settings come from the meta."""
    run = _copy_meta(fixture_checkpoint, tmp_path / "run", default_prompt_name=None, max_active_dims=None,
                     max_seq_length=512, prompts={"query": "q: ", "document": ""})
    enc = SparseEncoder.from_checkpoint(run)
    assert enc.max_seq_length == 512 and enc.prompts["query"] == "q: " and enc.max_active_dims is None
    _assert_same_params(fixture_encoder, enc)
    meta = json.loads((fixture_checkpoint / META_FILE).read_text())
    assert {"config", "pooling", "max_seq_length", "similarity_fn_name", "prompts", "source"} <= set(meta)


def test_a_trainer_run_directory_converts_both_ways(tmp_path):
    """The orbax checkpoints the trainer writes: the latest step rebuilds the trained encoder bit for bit,
    exports like the trainer's own export, and converts back losslessly; an earlier step is reachable."""
    from jsplade.training.config import TrainConfig
    from jsplade.training.trainer import Trainer

    log = json.loads((SE_FIXTURES / "expected" / "train_batch4" / "train_log.json").read_text())
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in log["data"]["rows"]))
    config = TrainConfig(base_model=str(SE_FIXTURES / "model"), train_data=str(data), columns=log["data"]["columns"],
                         output_dir=str(tmp_path / "run"), batch_size=4, epochs=1, learning_rate=1e-3,
                         checkpoint_every=2, progress_bar=False, tensorboard=False)
    result = Trainer(config).fit()
    run = tmp_path / "run"
    assert CheckpointSteps(run, read_only=True).all_steps() == [2, 4]
    trained = SparseEncoder.from_checkpoint(run)
    _assert_same_params(result.encoder, trained)
    to_hf(run, tmp_path / "hf")
    for name, _ in list_files(result.export_dir):
        if name != "README.md":
            assert (tmp_path / "hf" / name).read_bytes() == (result.export_dir / name).read_bytes(), name
    to_jax(tmp_path / "hf", tmp_path / "back")
    _assert_same_params(result.encoder, SparseEncoder.from_checkpoint(tmp_path / "back"))
    earlier = SparseEncoder.from_checkpoint(run, step=2).to_parts().flat_params()
    assert not np.array_equal(earlier["query.weight"], trained.to_parts().flat_params()["query.weight"])


# ----------------------------------------------------------------------------- bad input
def test_source_that_is_not_a_model_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"empty/modules.json: not found"):
        to_jax(empty, tmp_path / "a")
    with pytest.raises(FileNotFoundError, match=r"empty/modules.json: not found"):
        to_hf(empty, tmp_path / "a")
    with pytest.raises(ValueError, match="file.txt: not a directory"):
        to_jax(tmp_path / "file.txt", tmp_path / "a")
    with pytest.raises(ValueError, match="no such directory"):
        to_hf(tmp_path / "x" / "y" / "absent", tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="jsplade_model.json: not a jsplade checkpoint"):
        SparseEncoder.from_checkpoint(empty)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt"]


def test_wrong_direction_and_source_as_destination(fixture_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="already a jsplade checkpoint directory"):
        to_jax(fixture_checkpoint, tmp_path / "a")
    with pytest.raises(ValueError, match="step=0 applies only to jsplade checkpoint directories"):
        to_hf(SE_FIXTURES / "model", tmp_path / "a", step=0)
    with pytest.raises(ValueError, match="the destination is the source directory"):
        to_hf(fixture_checkpoint, fixture_checkpoint, overwrite=True)
    with pytest.raises(ValueError, match="step must be a non-negative integer"):
        to_hf(fixture_checkpoint, tmp_path / "a", step=-1)
    with pytest.raises(ValueError, match="layout must be one of"):
        to_hf(fixture_checkpoint, tmp_path / "a", layout="flat")
    with pytest.raises(TypeError, match="src must be"):
        to_jax(None, tmp_path / "a")
    assert list(tmp_path.iterdir()) == []
    assert (fixture_checkpoint / META_FILE).is_file()


def test_checkpoint_shapes_that_do_not_fit_the_config(fixture_checkpoint, tmp_path):
    run = _copy_meta(fixture_checkpoint, tmp_path / "run", **{"config.intermediate_size": 48})
    with pytest.raises(ValueError, match=r"checkpoints/0: checkpoint parameters 'mlm\.\*' do not fit the model "
                                         r"config in .*jsplade_model.json \(key 'config'\): parameter 'layers.0.mlp.\w+': "
                                         r"shape \[64, 32\] does not match \[48, 32\]"):
        to_hf(run, tmp_path / "hf")
    run2 = _copy_meta(fixture_checkpoint, tmp_path / "run2", **{"config.num_hidden_layers": 3})
    with pytest.raises(ValueError, match=r"do not fit the model config.*missing parameters: \['layers.2"):
        SparseEncoder.from_checkpoint(run2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run2"]


def test_vocabulary_mismatch(fixture_checkpoint, tmp_path):
    run = _copy_meta(fixture_checkpoint, tmp_path / "run", **{"config.vocab_size": 30000})
    with pytest.raises(ValueError, match=r"vocabulary sizes disagree: jsplade_model.json config vocab_size = 30000, "
                                         r"document tokenizer .* = 30522"):
        to_hf(run, tmp_path / "hf")
    # a SparseEncoder directory whose static weight is one entry short
    src = tmp_path / "src"
    shutil.copytree(SE_FIXTURES / "model", src)
    short = {"weight": np.ones(30521, np.float32)}
    write_safetensors(src / "query_0_SparseStaticEmbedding" / "model.safetensors", short)
    with pytest.raises(ValueError,
                       match=r"vocabulary sizes disagree.*static query weight .*model.safetensors has 30521"):
        to_jax(src, tmp_path / "jax")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "src"]


def test_unsupported_config_option(fixture_checkpoint, tmp_path):
    run = _copy_meta(fixture_checkpoint, tmp_path / "run", **{"config.rope_scaling": {"type": "yarn", "factor": 2.0}})
    with pytest.raises(ConfigError,
                       match=r"jsplade_model.json \(key 'config'\).*rope_scaling.*'yarn' is not implemented"):
        to_hf(run, tmp_path / "hf")
    src = tmp_path / "src"
    shutil.copytree(SE_FIXTURES / "model", src)
    cfg = json.loads((src / "config.json").read_text())
    cfg["layer_norm_type"] = "batch_norm"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"src/config.json.*layer_norm_type.*'batch_norm' is not supported"):
        to_jax(src, tmp_path / "jax")
    with pytest.raises(ConfigError, match="layer_norm_type"):
        to_hf(src, tmp_path / "hf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "src"]


def test_damaged_checkpoints(fixture_encoder, fixture_checkpoint, tmp_path):
    no_template = tmp_path / "a"
    shutil.copytree(fixture_checkpoint, no_template)
    shutil.rmtree(no_template / "template")
    with pytest.raises(FileNotFoundError, match="has no template/ directory"):
        to_hf(no_template, tmp_path / "hf")
    no_query = tmp_path / "b"
    shutil.copytree(fixture_checkpoint, no_query, ignore=shutil.ignore_patterns("checkpoints"))
    steps = CheckpointSteps(no_query, keep=None)
    steps.save(0, {k: v for k, v in fixture_encoder.to_parts().flat_params().items() if k != "query.weight"}, force=True)
    steps.close()
    with pytest.raises(ValueError, match=r"checkpoints/0: 'params' must hold 'query.weight'"):
        SparseEncoder.from_checkpoint(no_query)
    bad_meta = tmp_path / "c"
    shutil.copytree(fixture_checkpoint, bad_meta)
    (bad_meta / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="jsplade_model.json: malformed JSON"):
        to_hf(bad_meta, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_to_jax_is_atomic_and_refuses_an_existing_destination(tmp_path, monkeypatch):
    dst = tmp_path / "run"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with pytest.raises(FileExistsError, match="destination exists"):
        to_jax(SE_FIXTURES / "model", dst)

    def crash(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert_mod.CheckpointSteps, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        to_jax(SE_FIXTURES / "model", dst, overwrite=True)
    with pytest.raises(OSError, match="No space left"):
        to_jax(SE_FIXTURES / "model", tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert [p.name for p in dst.iterdir()] == ["old.txt"]
    monkeypatch.undo()
    to_jax(SE_FIXTURES / "model", dst, overwrite=True)
    assert (dst / META_FILE).is_file() and not (dst / "old.txt").exists()


@pytest.mark.parametrize("shape", ["inference_free", "symmetric", "asymmetric"])
@pytest.mark.parametrize("backbone", ["bert", "distilbert"])
def test_bert_family_round_trips_through_a_checkpoint_bit_exact(tmp_path, backbone, shape):
    """A sentence-transformers directory of every shape on BERT and DistilBERT (written by the installed
    sentence-transformers) → ``to_jax`` → ``to_hf``: every safetensors file of the export holds the very
    tensors (names, dtypes, bytes) of the corresponding file sentence-transformers wrote, and the pooling
    configs say the same."""
    from helpers.st_models import build_st_sparse_encoder
    from safetensors.numpy import load_file

    _, folder = build_st_sparse_encoder(tmp_path / "base", backbone, shape)
    to_jax(folder, tmp_path / "ckpt")
    to_hf(tmp_path / "ckpt", tmp_path / "back")
    originals = sorted(p.relative_to(folder) for p in folder.rglob("*.safetensors"))
    assert originals == sorted(p.relative_to(tmp_path / "back") for p in (tmp_path / "back").rglob("*.safetensors"))
    assert len(originals) == {"inference_free": 2, "symmetric": 1, "asymmetric": 2}[shape]
    for rel in originals:
        want, got = load_file(folder / rel), load_file(tmp_path / "back" / rel)
        assert set(got) == set(want), rel
        for name, value in want.items():
            assert got[name].dtype == value.dtype and np.array_equal(got[name], value), (rel, name)
    for pooling in folder.rglob("*SpladePooling/config.json"):
        mine = json.loads((tmp_path / "back" / pooling.relative_to(folder)).read_text())
        theirs = json.loads(pooling.read_text())
        for key in ("pooling_strategy", "activation_function"):
            assert mine[key] == theirs.get(key, {"pooling_strategy": "max", "activation_function": "relu"}[key])
