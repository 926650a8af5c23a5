from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.fixtures import GTE_FIXTURES, SE_FIXTURES, TINY_CASES, V3_CASES

from jsplade.backbones.gte_config import GteConfig, v3_gte_config
from jsplade.backbones.layers.rope import RotarySpec, rope_frequencies
from jsplade.backbones.protocol import ConfigError


@pytest.mark.parametrize("case", TINY_CASES + V3_CASES)
def test_new_config_round_trips_exactly(case):
    raw = json.loads((GTE_FIXTURES / case / "config.json").read_text())
    cfg = GteConfig.from_hf_dict(raw)
    assert cfg.to_hf_dict("new") == raw  # every key and value, extra keys (auto_map, dtype, ...) included


def test_fixture_fields_are_read():
    cfg = GteConfig.from_json_file(GTE_FIXTURES / "tiny_unpacked_rms" / "config.json")
    assert (cfg.pack_qkv, cfg.layer_norm_type) == (False, "rms_norm")
    cfg = GteConfig.from_json_file(GTE_FIXTURES / "tiny_mixed_ntk" / "config.json")
    assert cfg.ntk_factor == 4.0 and cfg.ntk_mixed_b == 0.6
    cfg = GteConfig.from_json_file(SE_FIXTURES / "model" / "config.json")
    assert (cfg.vocab_size, cfg.hidden_size, cfg.type_vocab_size) == (30522, 32, 0)


@pytest.mark.parametrize("case", ["tiny_ntk", "tiny_plain_rope_rebuild", "v3gte_short"])
def test_native_gte_dialect_round_trip(case):
    cfg = GteConfig.from_json_file(GTE_FIXTURES / case / "config.json")
    native = cfg.to_hf_dict("gte")
    assert native["model_type"] == "gte" and native["tie_word_embeddings"] is True
    back = GteConfig.from_hf_dict(native)
    for f in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "rope_theta", "rope_scaling"):
        assert getattr(back, f) == getattr(cfg, f), f
    np.testing.assert_array_equal(rope_frequencies(back.rotary), rope_frequencies(cfg.rotary))


def test_v3gte_native_rope_is_linear_equivalent():
    # NATIVE_GTE.md: theta' = theta*s = 1e6, factor = s^(2/64) = 2^(1/32).
    rope = v3_gte_config().to_hf_dict("gte")["rope_parameters"]
    assert rope == {"rope_type": "linear", "rope_theta": 1000000.0, "factor": 2 ** (1 / 32)}


@pytest.mark.parametrize("change, field", [
    ({"position_embedding_type": "absolute"}, "position_embedding_type"),
    ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "rope_scaling"),
    ({"rope_scaling": {"type": "ntk", "factor": 0.5}}, "rope_scaling"),
    ({"hidden_act": "mish"}, "hidden_act"),
    ({"layer_norm_type": "batch_norm"}, "layer_norm_type"),
    ({"hidden_size": 100, "num_attention_heads": 3}, "hidden_size"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
])
def test_unsupported_options_are_rejected(change, field):
    raw = json.loads((GTE_FIXTURES / "tiny_ntk" / "config.json").read_text())
    raw.update(change)
    with pytest.raises(ConfigError, match=field):
        GteConfig.from_hf_dict(raw, source="x/config.json")


def test_unknown_model_type_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="unknown model_type 'bert'"):
        GteConfig.from_hf_dict({"model_type": "bert"})
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        GteConfig.from_json_file(bad)
    with pytest.raises((FileNotFoundError, ValueError), match="nope"):
        GteConfig.from_json_file(tmp_path / "nope" / "config.json")


def test_native_dialect_refuses_what_it_cannot_express():
    cfg = GteConfig.from_json_file(GTE_FIXTURES / "tiny_mixed_ntk" / "config.json")
    with pytest.raises(ConfigError, match="mixed NTK"):
        cfg.to_hf_dict("gte")
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        GteConfig.from_hf_dict({"model_type": "gte", "tie_word_embeddings": False})


def test_config_is_hashable_and_immutable():
    a, b = v3_gte_config(), v3_gte_config()
    assert hash(a) == hash(b) and a == b
    with pytest.raises(Exception):
        a.hidden_size = 5  # type: ignore[misc]


def test_rotary_settings_and_model_card_rows():
    cfg = v3_gte_config()
    assert cfg.rotary == RotarySpec(head_dim=64, theta=500000.0, ntk_factor=2.0, ntk_mixed_b=None)
    assert dict(cfg.describe()) == {
        "document encoder": "GTE, 12 layers, hidden size 768, 12 attention heads, GLU width 3072",
        "positions": "rotary (base 500000, NTK scaling factor 2)"}
    plain = cfg.replace(rope_scaling=None, rope_theta=10000.0)
    assert plain.rotary.ntk_factor is None and dict(plain.describe())["positions"] == "rotary (base 10000)"
    assert cfg.to_hf_dict() == cfg.to_hf_dict("new")  # the canonical naming is new-impl's
