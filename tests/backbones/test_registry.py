"""jsplade.backbones.registry: finding the family by ``model_type`` (every registered family's types, GTE's two
dialects in detail), by model and by config; building a config from a parsed config.json (equal to the family's own
reader); and the errors for anything else, which name the source, the offending value and every known model type.
Written against whatever ``BACKBONES`` lists, so that a new family extends these checks rather than breaking them.
"""

from __future__ import annotations

import pytest
from flax import nnx
from helpers.fixtures import load_gte_case

from jsplade.backbones.gte import GTE, GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.protocol import ConfigError
from jsplade.backbones.registry import (BACKBONES, backbone_for_model_type, backbone_of, config_from_hf_dict,
                                        known_model_types, known_namings)

TINY = GteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24)


def test_known_families_types_and_namings():
    assert GTE in BACKBONES and BACKBONES[0] is GTE
    assert len({family.name for family in BACKBONES}) == len(BACKBONES)
    assert known_model_types() == [t for family in BACKBONES for t in family.model_types]
    assert known_model_types()[:2] == ["new", "gte"]
    assert len(set(known_model_types())) == len(known_model_types())  # no type is claimed twice
    namings = known_namings()
    assert len(set(namings)) == len(namings)
    assert set(namings) == {n for family in BACKBONES for n in family.namings} and namings[:2] == ["new", "gte"]


def test_family_by_model_type():
    for family in BACKBONES:
        for model_type in family.model_types:
            assert backbone_for_model_type(model_type) is family, model_type
    assert backbone_for_model_type("new") is GTE and backbone_for_model_type("gte") is GTE


@pytest.mark.parametrize("model_type", ["not-a-model", None, 7, "NEW"])
def test_unknown_model_type_names_source_value_and_known_types(model_type):
    with pytest.raises(ConfigError) as err:
        backbone_for_model_type(model_type, source="run/config.json")
    msg = str(err.value)
    assert msg.startswith(f"run/config.json: unknown model_type {model_type!r};")
    assert "'new' (GTE)" in msg and "'gte' (GTE)" in msg
    for family in BACKBONES:
        for t in family.model_types:
            assert f"{t!r} ({family.display_name})" in msg


def test_config_from_both_dialects_equals_the_family_reader():
    case = load_gte_case("tiny_ntk")
    config = config_from_hf_dict(case.config_json)
    assert isinstance(config, GteConfig)
    assert config == GteConfig.from_hf_dict(case.config_json)
    native = config.to_hf_dict("gte")
    assert native["model_type"] == "gte"
    assert config_from_hf_dict(native) == GteConfig.from_hf_dict(native)


def test_config_from_anything_else_is_refused():
    with pytest.raises(ConfigError, match=r"^x/config.json: expected a JSON object, got list$"):
        config_from_hf_dict([{"model_type": "new"}], source="x/config.json")
    with pytest.raises(ConfigError, match=r"^x/config.json: unknown model_type None;.*'new' \(GTE\)"):
        config_from_hf_dict({"hidden_size": 16}, source="x/config.json")
    with pytest.raises(ConfigError, match=r"^x/config.json: unknown model_type 'not-a-model'"):
        config_from_hf_dict({"model_type": "not-a-model"}, source="x/config.json")
    # the family's own validation still applies, with the source
    with pytest.raises(ConfigError, match=r"x/config.json: .*'hidden_size'"):
        config_from_hf_dict({"model_type": "new", "hidden_size": 15, "num_attention_heads": 2},
                            source="x/config.json")


def test_family_of_a_model_or_config():
    assert backbone_of(TINY) is GTE
    assert backbone_of(nnx.eval_shape(lambda: GteForMaskedLM(TINY))) is GTE
    families = ", ".join(family.name for family in BACKBONES)
    with pytest.raises(TypeError) as err:
        backbone_of({"model_type": "new"})
    assert str(err.value) == f"dict is not a model or config of a jsplade backbone (families: {families})"
    assert "gte" in families
