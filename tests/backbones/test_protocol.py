"""jsplade.backbones.protocol: GTE's model and config satisfy the ``MaskedLM`` / ``BackboneConfig`` protocols (and the
model's call is the documented composition); the ``GTE`` ``Backbone`` record is consistent; its config reader round
trips ``to_hf_dict``; ``check_naming`` refuses unknown namings listing the known ones; naming detection, the tied
decoder and ``hf_shapes`` / ``n_tensors`` agree with the recipe checkpoint (new-impl names) and with transformers'
native ``GteForMaskedLM`` state dict ('gte' names); every parameter has logical axes of its rank.

The forward check compares two jitted float32 evaluations of the same arithmetic: 1e-6 relative (``max_rel``).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx
from helpers.fixtures import TINY_CASES, load_gte_case, max_rel

from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.gte import GTE, GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.layers.embedding import Embed
from jsplade.backbones.params import build_with_params, flat_params
from jsplade.backbones.protocol import Backbone, BackboneConfig, ConfigError, MaskedLM
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.backbones.weight_map import WeightMismatchError

TINY = GteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 type_vocab_size=2, max_position_embeddings=64, hidden_dropout_prob=0.0)


def _abstract(config=TINY) -> GteForMaskedLM:
    return nnx.eval_shape(lambda: GTE.new_model(config))


def test_gte_satisfies_the_protocols():
    model = _abstract()
    assert isinstance(model, MaskedLM)
    assert isinstance(TINY, BackboneConfig) and isinstance(model.config, BackboneConfig)
    assert isinstance(model.compute, ComputeOptions)
    assert isinstance(model.word_embeddings(), Embed)
    # objects without the interface do not pass for one
    assert not isinstance(model.word_embeddings(), MaskedLM)
    assert not isinstance({"vocab_size": 1}, BackboneConfig)
    assert issubclass(ConfigError, ValueError)


def test_backbone_record_is_consistent():
    assert isinstance(GTE, Backbone)
    assert (GTE.name, GTE.display_name, GTE.model_types) == ("gte", "GTE", ("new", "gte"))
    assert GTE.config_class is GteConfig and GTE.model_class is GteForMaskedLM
    assert GTE.default_naming == "new" and set(GTE.namings) == {"new", "gte"}
    assert set(GTE.naming_cards) == set(GTE.namings) == set(GTE.tied_decoder)
    assert set(GTE.remote_code_namings) <= set(GTE.namings)
    with pytest.raises(AttributeError):
        GTE.name = "other"  # frozen


@pytest.mark.parametrize("case", TINY_CASES)
def test_config_from_hf_dict_round_trips(case):
    raw = load_gte_case(case).config_json
    config = GTE.config_from_hf_dict(raw)
    assert isinstance(config, GteConfig)
    assert GTE.config_from_hf_dict(config.to_hf_dict()) == config
    assert config.to_hf_dict() == raw


def test_config_from_hf_dict_names_the_source():
    with pytest.raises(ConfigError, match=r"^my/config.json: unknown model_type 'bert'"):
        GTE.config_from_hf_dict({"model_type": "bert"}, source="my/config.json")
    native = TINY.to_hf_dict("gte")
    assert GTE.config_from_hf_dict(native).to_hf_dict("gte") == native


class _CountingRngs:
    """Stands in for ``nnx.Rngs``: counts the ``params`` draws made from it (a fresh key for each)."""

    def __init__(self):
        self.calls = 0

    def params(self):
        self.calls += 1
        return jax.random.key(self.calls)


def test_new_model_builds_the_family_model_with_its_options():
    rngs = _CountingRngs()
    model = nnx.eval_shape(lambda: GTE.new_model(TINY, compute=ComputeOptions(dtype="bfloat16"), rngs=rngs))
    assert isinstance(model, GteForMaskedLM) and model.config == TINY
    assert model.compute == ComputeOptions(dtype="bfloat16")
    # every randomly initialised tensor is drawn from the given rngs: word and token-type tables, four
    # kernels per layer (qkv, out, up_gate, down), the head's dense kernel
    assert rngs.calls == 2 + 4 * TINY.num_hidden_layers + 1
    assert _abstract().compute == ComputeOptions()  # compute=None: the defaults


def _random_model(config=TINY) -> GteForMaskedLM:
    rng = np.random.default_rng(0)
    hf = {k: (0.3 * rng.standard_normal(s)).astype(np.float32) for k, s in GTE.hf_shapes(config).items()}
    return build_with_params(lambda: GTE.new_model(config), GTE.hf_to_params(hf, config))


def test_masked_lm_call_is_project_of_head_features_of_encode():
    model = _random_model()
    assert model.with_compute(attention="xla") is model and model.compute.attention == "xla"
    ids = jnp.asarray(np.random.default_rng(0).integers(0, TINY.vocab_size, (2, 7)), jnp.int32)
    mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
    logits, parts = jax.jit(lambda m, i, a: (m(i, a), m.project(m.head_features(m.encode(i, a)))))(model, ids, mask)
    assert logits.shape == (2, 7, TINY.vocab_size) and logits.dtype == jnp.float32
    assert max_rel(logits, parts) < 1e-6
    # the decoder weight is the word-embedding table, the bias the head's
    assert model.decoder_weight() is model.word_embeddings().embedding[...]
    assert model.decoder_bias() is model.head.decoder_bias[...]


def test_check_naming_defaults_and_refuses_unknown_namings():
    assert GTE.check_naming(None) == "new"
    assert GTE.check_naming("gte") == "gte"
    assert GTE.check_naming(None, TINY) == "new"
    for bad in ("bert", "NEW", ""):
        with pytest.raises(ValueError, match=re.escape(f"naming must be one of ('new', 'gte') for gte weights, "
                                                       f"got {bad!r}")):
            GTE.check_naming(bad)
    with pytest.raises(ValueError, match="naming must be one of"):
        GTE.hf_shapes(TINY, "roberta")
    with pytest.raises(ValueError, match="naming must be one of"):
        GTE.n_tensors(TINY, "roberta")


@pytest.mark.parametrize("case", TINY_CASES)
def test_hf_shapes_and_n_tensors_describe_the_recipe_checkpoint(case):
    config = GteConfig.from_hf_dict(load_gte_case(case).config_json)
    sd = recipe_state_dict(config, 0)
    assert GTE.hf_shapes(config) == GTE.hf_shapes(config, "new") == {k: v.shape for k, v in sd.items()}
    assert GTE.n_tensors(config) == GTE.n_tensors(config, "new") == len(sd)


def test_gte_naming_shapes_are_transformers_native_state_dict():
    hf = {k: v for k, v in TINY.to_hf_dict("gte").items() if k not in ("architectures", "model_type")}
    native = transformers.GteForMaskedLM(transformers.GteConfig(**hf))
    shapes = {k: tuple(v.shape) for k, v in native.state_dict().items()}
    tied = GTE.tied_decoder["gte"][0]
    assert tied in shapes  # the tied decoder weight: in torch's state dict, never stored by jsplade
    shapes.pop(tied)
    assert GTE.hf_shapes(TINY, "gte") == shapes
    assert GTE.n_tensors(TINY, "gte") == len(shapes)


@pytest.mark.parametrize("naming", ["new", "gte"])
def test_hf_to_params_detects_the_naming_and_accepts_the_tied_copy(naming):
    rng = np.random.default_rng(1)
    hf = {k: rng.standard_normal(s).astype(np.float32) for k, s in GTE.hf_shapes(TINY, naming).items()}
    params = GTE.hf_to_params(hf, TINY)  # naming detected from the names
    explicit = GTE.hf_to_params(hf, TINY, naming)
    assert set(params) == set(explicit)
    for k in params:
        np.testing.assert_array_equal(params[k], explicit[k])
    back = GTE.params_to_hf(params, TINY, naming)
    tied_key, tied_param = GTE.tied_decoder[naming]
    assert tied_key not in back and set(back) == set(hf)
    hf[tied_key] = params[tied_param].copy()
    GTE.hf_to_params(hf, TINY)  # a stored copy of the tied weight is accepted
    other = "gte" if naming == "new" else "new"
    with pytest.raises(WeightMismatchError, match="missing tensor"):  # the other naming's table
        GTE.hf_to_params(hf, TINY, other)


def test_every_parameter_has_logical_axes_of_its_rank():
    for name, value in flat_params(_abstract(TINY.replace(layer_norm_type="rms_norm"))).items():
        axes = next((ax for pattern, ax in GTE.logical_axes if re.search(pattern, name)), None)
        assert axes is not None, name
        assert len(axes) == len(value.shape), (name, axes, value.shape)
