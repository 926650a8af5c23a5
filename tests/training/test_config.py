"""TrainConfig (jsplade.training.config): TOML loading ([sections], overrides, paths relative to the file),
validation errors that name the key and the file, export_naming checked against the backbone registry, and
the to_dict → from_dict round trip the trainer's ``train_config.json`` relies on.

(Covered in tests/training/test_trainer.py and not repeated here: an unknown key with a "did you mean" hint,
a string for ``batch_size`` in a file, and the shipped configs under train/configs/.)
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from jsplade.backbones.registry import known_namings
from jsplade.training.config import TrainConfig


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- defaults and round trips
def test_defaults_validate_and_to_dict_lists_every_setting_but_extra():
    cfg = TrainConfig()
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert list(cfg.to_dict()) == [n for n in names if n != "extra"]
    # optional settings start unset; the two lambdas and the warm-up ratio have their documented values
    for key in ("max_steps", "warmup_steps", "sampler_seed", "replay_batches", "mesh", "export_naming",
                "checkpoint_every", "eval_every", "columns"):
        assert cfg.to_dict()[key] is None, key
    assert (cfg.regularizer_warmup_ratio, cfg.regularizer_schedule) == (1 / 3, "quadratic")


def test_to_dict_round_trips_through_json_and_from_dict(tmp_path):
    cfg = TrainConfig(base_model="some/hub-id", train_data=str(tmp_path / "d.jsonl"), columns=["q", "p", "n"],
                      max_steps=7, warmup_ratio=None, warmup_steps=3, lambda_q=None, export_naming=known_namings()[0],
                      mesh="data=2,fsdp=4", compute_dtype="bfloat16", export_layout="opensearch")
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert TrainConfig(**cfg.to_dict()) == cfg


# ----------------------------------------------------------------------------- loading files
def test_sections_are_flattened_and_every_value_typed(tmp_path):
    path = _write(tmp_path, """
base_model = "org/model"
[data]
columns = ["query", "document", "negative"]
[schedule]
batch_size = 4
learning_rate = 1e-4
max_steps = 9
[loss]
lambda_q = 2e-4
regularizer_schedule = "linear"
[compute]
remat = true
""")
    cfg = TrainConfig.from_file(path)
    assert cfg.base_model == "org/model"
    assert cfg.columns == ["query", "document", "negative"]
    assert (cfg.batch_size, cfg.learning_rate, cfg.max_steps) == (4, 1e-4, 9)
    assert (cfg.lambda_q, cfg.regularizer_schedule, cfg.remat) == (2e-4, "linear", True)
    assert cfg.epochs == TrainConfig().epochs  # untouched keys keep their defaults


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "conf" / "local_model").mkdir(parents=True)
    path = _write(tmp_path / "conf", 'base_model = "local_model"\ntrain_data = "data/pairs.jsonl"\n'
                                    'replay_batches = "replay.json"\noutput_dir = "../runs/a"\n')
    cfg = TrainConfig.from_file(path)
    conf = (tmp_path / "conf").resolve()
    assert cfg.base_model == str(conf / "local_model")  # an existing directory next to the file
    assert cfg.train_data == str(conf / "data" / "pairs.jsonl")  # data need not exist yet to be resolved
    assert cfg.replay_batches == str(conf / "replay.json")
    assert cfg.output_dir == str((tmp_path / "runs" / "a").resolve())


def test_hub_ids_absolute_paths_and_urls_are_kept(tmp_path):
    absolute = str(tmp_path / "elsewhere" / "d.jsonl")
    path = _write(tmp_path, f'base_model = "org/not-a-local-dir"\ntrain_data = "{absolute}"\n'
                            'output_dir = "gs://bucket/run"\n')
    cfg = TrainConfig.from_file(path)
    assert (cfg.base_model, cfg.train_data, cfg.output_dir) == ("org/not-a-local-dir", absolute, "gs://bucket/run")


def test_overrides_replace_file_values(tmp_path):
    path = _write(tmp_path, '[schedule]\nbatch_size = 4\nlearning_rate = 1e-4\n')
    cfg = TrainConfig.from_file(path, {"batch_size": 2, "dropout": False, "base_model": "org/other"})
    assert (cfg.batch_size, cfg.learning_rate, cfg.dropout, cfg.base_model) == (2, 1e-4, False, "org/other")
    assert TrainConfig.from_file(path).batch_size == 4  # the file itself is untouched


def test_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.toml"
    with pytest.raises(FileNotFoundError, match=f"{missing}: config file not found"):
        TrainConfig.from_file(missing)
    bad = _write(tmp_path, "batch_size = = 3\n", "bad.toml")
    with pytest.raises(ValueError, match=f"{bad}: malformed TOML"):
        TrainConfig.from_file(bad)
    twice = _write(tmp_path, "seed = 1\n[data]\nseed = 2\n", "twice.toml")
    with pytest.raises(ValueError, match=f"{twice}: key 'seed' given twice"):
        TrainConfig.from_file(twice)
    wrong = _write(tmp_path, "[schedule]\nepochs = 0\n", "wrong.toml")
    with pytest.raises(ValueError, match=f"{wrong}: config key 'epochs' must be >= 1, got 0"):
        TrainConfig.from_file(wrong)


def test_a_bad_override_is_reported_with_the_file(tmp_path):
    path = _write(tmp_path, "batch_size = 4\n")
    with pytest.raises(ValueError, match=f"{path}: config key 'grad_accum_steps' must be of type int"):
        TrainConfig.from_file(path, {"grad_accum_steps": "2"})
    with pytest.raises(ValueError, match=f"{path}: unknown config key.*'no_such_setting'"):
        TrainConfig.from_file(path, {"no_such_setting": 1})


def test_unknown_keys_are_all_listed_with_hints_only_where_close(tmp_path):
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict({"epoch": 2, "zzzzzz": 1}, source="my.toml")
    message = str(info.value)
    assert message.startswith("my.toml: unknown config key(s): ")
    assert "'epoch' (did you mean 'epochs'?)" in message
    assert "'zzzzzz'" in message and "'zzzzzz' (did you mean" not in message
    with pytest.raises(ValueError, match="my.toml: expected a table of settings, got list"):
        TrainConfig.from_dict([("seed", 1)], source="my.toml")


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("key, value, message", [
    ("batch_size", True, "'batch_size' must be of type int, got bool"),
    ("learning_rate", "fast", "'learning_rate' must be of type float, got str"),
    ("dropout", 1, "'dropout' must be of type bool, got int"),
    ("columns", ["query", 2], "'columns' must be of type list"),
    ("columns", "query,document", "'columns' must be of type list"),
    ("max_steps", 2.5, "'max_steps' must be of type int, got float"),
    ("base_model", None, "'base_model' must be of type str, got NoneType"),
    ("batch_size", 0, "'batch_size' must be >= 1, got 0"),
    ("keep_checkpoints", -1, "'keep_checkpoints' must be >= 1"),
    ("max_steps", 0, "'max_steps' must be >= 1 or unset, got 0"),
    ("pack_length", -8, "'pack_length' must be >= 1 or unset"),
    ("learning_rate", -1e-5, "'learning_rate' must be a finite number >= 0"),
    ("learning_rate", math.inf, "'learning_rate' must be a finite number >= 0"),
    ("learning_rate", math.nan, "'learning_rate' must be a finite number >= 0"),
    ("warmup_ratio", 1.5, r"'warmup_ratio' must be in \[0, 1\], got 1.5"),
    ("warmup_steps", -1, "'warmup_steps' must be >= 0"),
    ("regularizer_schedule", "cubic", "'regularizer_schedule' must be 'quadratic' or 'linear', got 'cubic'"),
    ("regularizer_warmup_ratio", 0.0, r"'regularizer_warmup_ratio' must be in \(0, 1\]"),
    ("compute_dtype", "float16", "'compute_dtype' must be 'float32' or 'bfloat16', got 'float16'"),
    ("export_layout", "flat", "'export_layout' must be 'st' or 'opensearch', got 'flat'"),
    ("lambda_d", -1.0, "'lambda_d'/'lambda_q' must be >= 0"),
    ("lambda_q", -1.0, "'lambda_d'/'lambda_q' must be >= 0"),
    ("columns", ["query"], "'columns' needs at least 2 columns"),
    ("adam_beta1", 1.0, r"'adam_beta1' must be in \[0, 1\)"),
    ("adam_beta2", -0.1, r"'adam_beta2' must be in \[0, 1\)"),
])
def test_each_bad_value_is_refused_naming_the_key(key, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{key: value})


def test_boundary_values_are_accepted():
    cfg = TrainConfig(learning_rate=0, warmup_ratio=1.0, warmup_steps=0, regularizer_warmup_ratio=1.0,
                      adam_beta1=0.0, lambda_d=0.0, lambda_q=None, columns=["q", "d"], max_steps=1)
    assert cfg.learning_rate == 0 and cfg.warmup_ratio == 1.0 and cfg.lambda_q is None


def test_toml_nan_is_refused_naming_the_file(tmp_path):
    path = _write(tmp_path, "learning_rate = nan\n")
    with pytest.raises(ValueError, match=f"{path}: config key 'learning_rate' must be a finite number"):
        TrainConfig.from_file(path)


def test_validate_rechecks_a_changed_config():
    cfg = TrainConfig()
    cfg.grad_accum_steps = 0
    with pytest.raises(ValueError, match="'grad_accum_steps' must be >= 1, got 0"):
        cfg.validate()


# ----------------------------------------------------------------------------- export_naming
def test_export_naming_accepts_every_registry_naming_and_none():
    namings = known_namings()
    assert namings  # the registry knows at least one family
    for naming in namings:
        assert TrainConfig(export_naming=naming).export_naming == naming
    assert TrainConfig(export_naming=None).export_naming is None


def test_export_naming_outside_the_registry_is_refused_listing_the_known_ones(tmp_path):
    bogus = "not-a-" + "-".join(known_namings())
    with pytest.raises(ValueError) as info:
        TrainConfig(export_naming=bogus)
    message = str(info.value)
    assert "'export_naming'" in message and repr(bogus) in message
    assert all(repr(n) in message for n in known_namings())
    path = _write(tmp_path, f'[output]\nexport_naming = "{bogus}"\n')
    with pytest.raises(ValueError, match=f"{path}: config key 'export_naming'"):
        TrainConfig.from_file(path)


def test_base_loss_and_its_parameters_from_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[loss_section]\nloss = "distill_kl"\nuse_document_regularizer_only = true\n'
                    '[loss_params]\ntemperature = 1.0\n')
    cfg = TrainConfig.from_file(path)
    assert cfg.loss == "distill_kl" and cfg.loss_spec_name() == "SparseDistillKLDivLoss"
    assert cfg.loss_params == {"temperature": 1.0} and cfg.use_document_regularizer_only
    path.write_text('loss = "SparseCoSENTLoss"\nloss_params = { scale = 10.0, similarity_fct = "pairwise_dot_score" }\n')
    assert TrainConfig.from_file(path).loss_params == {"scale": 10.0, "similarity_fct": "pairwise_dot_score"}
    path.write_text('loss = "SparseMarginMSELoss"\n[loss_params]\ntemperature = 1.0\n')
    with pytest.raises(ValueError, match=r"c.toml.*'loss'.*temperature"):
        TrainConfig.from_file(path)


@pytest.mark.parametrize("kwargs,message", [
    ({"loss": "InfoNCE"}, "InfoNCE.*SparseMultipleNegativesRankingLoss"),
    ({"loss": "SparseDistillKLDivLoss", "loss_params": {"temperature": -1.0}}, "temperature"),
    ({"loss_params": {"scale": 20.0}, "scale": 5.0}, "'scale' and 'loss_params.scale'"),
    ({"cached_mini_batch_size": 0}, "'cached_mini_batch_size' must be >= 1"),
    ({"cached_mini_batch_size": 8, "pack_documents": True}, "cannot be combined"),
])
def test_bad_loss_settings_are_refused_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)
