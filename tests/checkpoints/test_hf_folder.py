"""load_mlm / save_mlm: folder handling, naming detection, and every error naming its file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.fixtures import load_gte_case, write_recipe_checkpoint

from jsplade import load_mlm
from jsplade.backbones.gte_config import ConfigError, GteConfig
from jsplade.checkpoints.hf_folder import mlm_state_dict, save_mlm
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.checkpoints.safetensors_io import write_safetensors
from jsplade.backbones.weight_map import WeightMismatchError


@pytest.fixture(scope="module")
def case():
    return load_gte_case("tiny_ntk")


@pytest.fixture
def folder(case, tmp_path):
    return write_recipe_checkpoint(case, tmp_path / "m")


def test_save_and_reload_in_both_namings_is_bit_exact(case, folder, tmp_path):
    model = load_mlm(folder)
    ids, mask = case.inputs["input_ids"], case.inputs["attention_mask"]
    ref = np.asarray(model(ids, mask))
    for naming in ("new", "gte"):
        out = tmp_path / naming
        save_mlm(model, out, naming=naming)
        cfg = json.loads((out / "config.json").read_text())
        assert cfg["model_type"] == naming
        again = load_mlm(out)
        for k, v in mlm_state_dict(model).items():
            np.testing.assert_array_equal(mlm_state_dict(again)[k], v)
        np.testing.assert_array_equal(np.asarray(again(ids, mask)), ref)


def test_sharded_checkpoint_loads(case, folder, tmp_path):
    model = load_mlm(folder)
    out = tmp_path / "sharded"
    paths = save_mlm(model, out, max_shard_bytes=200_000)
    assert (out / "model.safetensors.index.json") in paths and not (out / "model.safetensors").exists()
    np.testing.assert_array_equal(np.asarray(load_mlm(out)(case.inputs["input_ids"])),
                                  np.asarray(model(case.inputs["input_ids"])))


def test_errors_name_the_problem(case, folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_mlm(tmp_path / "absent")
    with pytest.raises(ValueError, match="got a file"):
        load_mlm(folder / "config.json")
    with pytest.raises(TypeError, match="folder"):
        load_mlm(None)

    no_cfg = tmp_path / "no_cfg"
    shutil.copytree(folder, no_cfg)
    (no_cfg / "config.json").unlink()
    with pytest.raises((FileNotFoundError, ValueError), match="config.json"):
        load_mlm(no_cfg)

    bad = tmp_path / "bad_json"
    shutil.copytree(folder, bad)
    (bad / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match="config.json"):
        load_mlm(bad)

    albert = tmp_path / "albert"
    shutil.copytree(folder, albert)
    raw = json.loads((albert / "config.json").read_text())
    raw["model_type"] = "albert"
    (albert / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match=r"albert/config.json: unknown model_type 'albert'.*'new'.*'gte'.*'bert'.*"
                                          r"'xlm-roberta'.*'distilbert'"):
        load_mlm(albert)
    # a known model type with options it cannot have: the offending key, in the file
    raw["model_type"] = "bert"
    (albert / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="albert/config.json: position_embedding_type"):
        load_mlm(albert)

    vocab = tmp_path / "vocab"
    shutil.copytree(folder, vocab)
    raw = json.loads((vocab / "config.json").read_text())
    raw["vocab_size"] = 1200
    (vocab / "config.json").write_text(json.dumps(raw))
    with pytest.raises(WeightMismatchError, match=r"model.safetensors.*\n.*word_embeddings.*\[1000, 128\].*\[1200, 128\]"):
        load_mlm(vocab)

    no_weights = tmp_path / "no_weights"
    shutil.copytree(folder, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_mlm(no_weights)


def test_remote_code_is_never_run(case, folder, tmp_path):
    """auto_map is a name; a modeling.py next to the weights is ignored."""
    evil = tmp_path / "evil"
    shutil.copytree(folder, evil)
    (evil / "modeling.py").write_text("raise SystemExit('remote code executed')\n")
    (evil / "configuration.py").write_text("raise SystemExit('remote code executed')\n")
    model = load_mlm(evil)
    assert model.config.extra["auto_map"]["AutoModelForMaskedLM"].endswith("NewForMaskedLM")


def test_missing_tensor_names_file(case, tmp_path):
    cfg = GteConfig.from_hf_dict(case.config_json)
    sd = recipe_state_dict(cfg, case.seed)
    del sd["lm_head.dense.bias"]
    d = tmp_path / "partial"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(case.config_json))
    write_safetensors(d / "model.safetensors", sd)
    with pytest.raises(WeightMismatchError, match="partial/model.safetensors.*\n.*missing tensor 'lm_head.dense.bias'"):
        load_mlm(d)
