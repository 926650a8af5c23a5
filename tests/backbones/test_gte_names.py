"""GTE's weight-name tables (new-impl and native namings) through the backbone's conversion both ways."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.fixtures import TINY_CASES, load_gte_case

from jsplade.backbones.gte import GTE
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.gte_names import detect_naming, rules_for
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.backbones.weight_map import WeightMismatchError

hf_to_params, params_to_hf = GTE.hf_to_params, GTE.params_to_hf


def _config(case: str) -> GteConfig:
    return GteConfig.from_hf_dict(load_gte_case(case).config_json)


@pytest.mark.parametrize("case", TINY_CASES)
def test_new_naming_round_trip_is_bit_exact(case):
    cfg = _config(case)
    sd = recipe_state_dict(cfg, 3)
    params = hf_to_params(sd, cfg, "new")
    back = params_to_hf(params, cfg, "new")
    assert set(back) == set(sd)
    for k in sd:
        np.testing.assert_array_equal(back[k], sd[k])


@pytest.mark.parametrize("case", ["tiny_ntk", "tiny_logn_types"])
def test_gte_naming_is_a_repacking_of_new(case):
    cfg = _config(case)
    sd = recipe_state_dict(cfg, 5)
    params = hf_to_params(sd, cfg, "new")
    native = params_to_hf(params, cfg, "gte")
    # q/k/v are the three row blocks of qkv_proj; up/gate the two row blocks of up_gate_proj.
    d, i = cfg.hidden_size, cfg.intermediate_size
    qkv = sd["new.encoder.layer.1.attention.qkv_proj.weight"]
    np.testing.assert_array_equal(native["gte.layers.1.self_attn.k_proj.weight"], qkv[d:2 * d])
    ug = sd["new.encoder.layer.0.mlp.up_gate_proj.weight"]
    np.testing.assert_array_equal(native["gte.layers.0.mlp.up_proj.weight"], ug[:i])
    np.testing.assert_array_equal(native["gte.layers.0.mlp.gate_proj.weight"], ug[i:])
    np.testing.assert_array_equal(native["lm_head.layer_norm.weight"], sd["lm_head.norm.weight"])
    again = hf_to_params(native, cfg, "gte")
    for k in params:
        np.testing.assert_array_equal(again[k], params[k])
    assert detect_naming(native) == "gte" and detect_naming(sd) == "new"


def test_packed_and_unpacked_qkv_give_the_same_parameter():
    cfg = _config("tiny_unpacked_rms")
    sd = recipe_state_dict(cfg, 1)
    params = hf_to_params(sd, cfg)
    q = sd["new.encoder.layer.0.attention.q_proj.weight"]
    k = cfg.head_dim
    # head 1 of q is rows k..2k of q_proj: parameter [D, 3, H, K][:, 0, 1, :] is their transpose.
    np.testing.assert_array_equal(params["layers.0.attention.qkv_kernel"][:, 0, 1, :], q[k:2 * k].T)
    assert "layers.0.attn_norm.bias" not in params  # RMSNorm has no bias
    assert len(rules_for(cfg)) == len(params)


def test_mismatches_are_reported_together():
    cfg = _config("tiny_ntk")
    sd = recipe_state_dict(cfg, 1)
    sd.pop("new.encoder.layer.0.mlp.down_proj.bias")
    sd["new.embeddings.word_embeddings.weight"] = np.zeros((999, cfg.hidden_size), np.float32)
    sd["new.pooler.dense.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(WeightMismatchError) as err:
        hf_to_params(sd, cfg, "new", source="m/model.safetensors")
    msg = str(err.value)
    assert "m/model.safetensors" in msg
    assert "missing tensor 'new.encoder.layer.0.mlp.down_proj.bias'" in msg
    assert "[999, 128]" in msg and "[1000, 128]" in msg
    assert "new.pooler.dense.weight" in msg


def test_untied_decoder_is_refused_and_tied_copy_accepted():
    cfg = _config("tiny_ntk")
    sd = recipe_state_dict(cfg, 1)
    sd["lm_head.decoder.weight"] = sd["new.embeddings.word_embeddings.weight"].copy()
    hf_to_params(sd, cfg)  # an explicit tied copy is fine
    sd["lm_head.decoder.weight"][0, 0] += 1
    with pytest.raises(WeightMismatchError, match="not equal to the word embeddings"):
        hf_to_params(sd, cfg)


def test_bare_encoder_is_recognised():
    with pytest.raises(WeightMismatchError, match="bare encoder"):
        detect_naming(["embeddings.word_embeddings.weight", "encoder.layer.0.attn_ln.weight"])


def test_unknown_naming_names_the_known_ones():
    cfg = _config("tiny_ntk")
    with pytest.raises(ValueError, match=r"naming must be one of \('new', 'gte'\)"):
        params_to_hf({}, cfg, "bert")
    with pytest.raises(ValueError, match="naming must be one of"):
        rules_for(cfg, "bert")
