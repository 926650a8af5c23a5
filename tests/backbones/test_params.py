"""jsplade.backbones.params: the flat dotted-path view of a module's parameters (its paths are the ones GTE's weight
table names, its arrays the module's own), writing values in place (strict name checks, exact shapes, the
requested dtype), building a module abstractly from values, and the unique-parameter count against the fixture's
``unique_parameter_count`` (tests/fixtures/gte/tiny_ntk/case.json, counted by the PyTorch reference).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import load_gte_case

from jsplade.backbones.gte import GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.gte_names import dims, rules_for
from jsplade.backbones.params import (assign_params, build_with_params, count_parameters, flat_params,
                                      flat_state_dict, path_str)
from jsplade.backbones.weight_map import param_shape


class Inner(nnx.Module):
    def __init__(self):
        self.scale = nnx.Param(jnp.ones((3,), jnp.float32))


class Toy(nnx.Module):
    """Two parameters at the top, a nested module and a list of modules; one static attribute."""

    abstract_seen: list[bool] = []

    def __init__(self):
        Toy.abstract_seen.append(isinstance(jnp.zeros(()), jax.core.Tracer))
        self.kernel = nnx.Param(jnp.arange(6, dtype=jnp.float32).reshape(2, 3))
        self.bias = nnx.Param(jnp.zeros((3,), jnp.float32))
        self.inner = Inner()
        self.blocks = nnx.List([Inner(), Inner()])
        self.name = "toy"


TOY_SHAPES = {"kernel": (2, 3), "bias": (3,), "inner.scale": (3,), "blocks.0.scale": (3,), "blocks.1.scale": (3,)}
TINY = GteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 type_vocab_size=2, max_position_embeddings=64)


def _values(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in TOY_SHAPES.items()}


def test_path_str_joins_keys_and_indices():
    assert path_str(("layers", 0, "attention", "qkv_kernel")) == "layers.0.attention.qkv_kernel"
    assert path_str(()) == ""


def test_flat_params_are_the_module_arrays_by_dotted_path():
    toy = Toy()
    flat = flat_params(toy)
    assert {k: tuple(v.shape) for k, v in flat.items()} == TOY_SHAPES
    assert flat["kernel"] is toy.kernel.get_value()  # not copied
    assert flat["blocks.1.scale"] is toy.blocks[1].scale.get_value()
    split_state = nnx.split(toy, nnx.Param)[1]
    from_state = flat_state_dict(split_state)
    assert set(from_state) == set(flat) and all(from_state[k] is flat[k] for k in flat)


def test_flat_state_dict_of_a_gradient_state():
    toy = Toy()
    graphdef, state = nnx.split(toy)
    grads = jax.grad(lambda s: jnp.sum(nnx.merge(graphdef, s).kernel[...] ** 2))(state)
    flat = flat_state_dict(grads)
    assert set(flat) == set(TOY_SHAPES)
    np.testing.assert_array_equal(flat["kernel"], 2 * np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(flat["inner.scale"], 0.0)


@pytest.mark.parametrize("naming", ["new", "gte"])
def test_gte_parameter_paths_are_those_of_the_weight_table(naming):
    flat = flat_params(nnx.eval_shape(lambda: GteForMaskedLM(TINY)))  # shapes only: no initialisation
    rules = rules_for(TINY, naming)
    assert {k: tuple(v.shape) for k, v in flat.items()} == {r.param: param_shape(r, dims(TINY)) for r in rules}


def test_assign_params_writes_every_value_as_float32():
    toy = Toy()
    values = _values(1, np.float64)
    assign_params(toy, values)
    for name, value in flat_params(toy).items():
        assert value.dtype == jnp.float32, name
        np.testing.assert_array_equal(np.asarray(value), values[name].astype(np.float32), err_msg=name)
    np.testing.assert_array_equal(toy.blocks[0].scale[...], values["blocks.0.scale"].astype(np.float32))
    assign_params(toy, values, dtype=jnp.bfloat16)
    assert toy.inner.scale[...].dtype == jnp.bfloat16


def test_assign_params_strict_refuses_missing_and_unexpected_names():
    toy = Toy()
    values = _values(2)
    values.pop("inner.scale")
    values["head.bias"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"missing \['inner.scale'\], unexpected \['head.bias'\]"):
        assign_params(toy, values)
    np.testing.assert_array_equal(toy.bias[...], 0.0)  # nothing was written


def test_assign_params_non_strict_updates_only_what_it_is_given():
    toy = Toy()
    assign_params(toy, {"bias": np.full(3, 2.5), "not.a.param": np.zeros(1)}, strict=False)
    np.testing.assert_array_equal(toy.bias[...], 2.5)
    np.testing.assert_array_equal(toy.kernel[...], np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(toy.inner.scale[...], 1.0)


def test_assign_params_refuses_a_wrong_shape_naming_the_parameter():
    with pytest.raises(ValueError, match=r"parameter 'kernel': shape \[3, 2\] does not match the model's \[2, 3\]"):
        assign_params(Toy(), {"kernel": np.zeros((3, 2))}, strict=False)


def test_build_with_params_constructs_abstractly_and_fills_the_values():
    values = _values(3, np.float64)
    Toy.abstract_seen.clear()
    toy = build_with_params(Toy, values)
    assert Toy.abstract_seen == [True]  # the constructor ran once, traced (no concrete initial arrays)
    assert isinstance(toy, Toy) and toy.name == "toy"
    for name, value in flat_params(toy).items():
        assert isinstance(value, jax.Array) and value.dtype == jnp.float32, name
        np.testing.assert_array_equal(np.asarray(value), values[name].astype(np.float32), err_msg=name)


def test_build_with_params_names_missing_unexpected_and_mis_shaped_values():
    values = _values(4)
    with pytest.raises(ValueError, match=r"missing parameters: \['blocks.1.scale'\]"):
        build_with_params(Toy, {k: v for k, v in values.items() if k != "blocks.1.scale"})
    with pytest.raises(ValueError, match=r"unexpected parameters: \['extra'\]"):
        build_with_params(Toy, {**values, "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"parameter 'bias': shape \[4\] does not match \[3\]"):
        build_with_params(Toy, {**values, "bias": np.zeros(4)})


def test_count_parameters_matches_the_reference_count():
    case = load_gte_case("tiny_ntk")
    config = GteConfig.from_hf_dict(case.config_json)
    model = nnx.eval_shape(lambda: GteForMaskedLM(config))
    # the PyTorch reference's unique parameters (the tied decoder weight counted once)
    assert count_parameters(model) == case.case["unique_parameter_count"] == 476_008
    assert count_parameters(Toy()) == 6 + 3 * 4
