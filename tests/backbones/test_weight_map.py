"""jsplade.backbones.weight_map: the three rule kinds against an element-by-element numpy reference of the
documented layout (bit-exact), the inverse map (bit-exact, float32, contiguous), hf → params → hf round trips of
GTE's 'new' and 'gte' tables on a tiny config with random tensors (bit-exact, parameter shapes those of the model),
and the ``WeightMismatchError`` messages naming each missing, unexpected, mis-shaped or non-float tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from jsplade.backbones import gte_names
from jsplade.backbones.gte import GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.weight_map import (TensorRule, WeightMismatchError, hf_shapes, hf_to_params, param_shape,
                                          params_to_hf)

DIMS = {"V": 5, "D": 4, "H": 2, "K": 3, "3": 3}
RULES = [
    TensorRule("emb", ("e.weight",), "embedding", ("V",), ("D",)),
    TensorRule("qkv_kernel", ("q.weight", "k.weight", "v.weight"), "kernel", ("D",), ("3", "H", "K")),
    TensorRule("qkv_bias", ("q.bias", "k.bias", "v.bias"), "vector", (), ("3", "H", "K")),
    TensorRule("out_kernel", ("o.weight",), "kernel", ("H", "K"), ("D",)),
    TensorRule("out_bias", ("o.bias",), "vector", (), ("D",)),
]
TIED = ("decoder.weight", "emb")


def _hf(seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = {"e.weight": (5, 4), "q.weight": (6, 4), "k.weight": (6, 4), "v.weight": (6, 4), "q.bias": (6,),
              "k.bias": (6,), "v.bias": (6,), "o.weight": (4, 6), "o.bias": (4,)}
    return {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}


def _reference(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The documented layout written element by element: Linear weights are [out, in]; packed outputs are the
    row blocks of the HF tensors in order; the parameter is [in…, out…] with the out axes in row-major order."""
    V, D, H, K = DIMS["V"], DIMS["D"], DIMS["H"], DIMS["K"]
    qkv_k, qkv_b, out_k = np.empty((D, 3, H, K)), np.empty((3, H, K)), np.empty((H, K, D))
    for j, name in enumerate("qkv"):
        for h in range(H):
            for k in range(K):
                qkv_b[j, h, k] = hf[f"{name}.bias"][h * K + k]
                for i in range(D):
                    qkv_k[i, j, h, k] = hf[f"{name}.weight"][h * K + k, i]
                    out_k[h, k, i] = hf["o.weight"][i, h * K + k]
    emb = np.array([[hf["e.weight"][v, d] for d in range(D)] for v in range(V)])
    return {"emb": emb, "qkv_kernel": qkv_k, "qkv_bias": qkv_b, "out_kernel": out_k, "out_bias": hf["o.bias"]}


def test_shapes_of_each_rule_kind():
    expected = {"emb": ((5, 4), [(5, 4)]), "qkv_kernel": ((4, 3, 2, 3), [(6, 4)] * 3),
                "qkv_bias": ((3, 2, 3), [(6,)] * 3), "out_kernel": ((2, 3, 4), [(4, 6)]), "out_bias": ((4,), [(4,)])}
    for rule in RULES:
        assert (param_shape(rule, DIMS), hf_shapes(rule, DIMS)) == expected[rule.param], rule.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_hf_to_params_is_the_documented_layout(dtype):
    hf = _hf(1, dtype)
    params = hf_to_params(hf, RULES, DIMS)
    ref = _reference(hf)
    assert set(params) == set(ref)
    for name, value in params.items():
        assert value.dtype == np.float32, name  # every float type is read, as float32
        np.testing.assert_array_equal(value, ref[name].astype(np.float32), err_msg=name)


def test_params_to_hf_inverts_it_bit_exactly():
    hf = _hf(2)
    back = params_to_hf(hf_to_params(hf, RULES, DIMS), RULES, DIMS)
    assert set(back) == set(hf)
    for key, value in back.items():
        assert value.dtype == np.float32 and value.flags["C_CONTIGUOUS"], key
        np.testing.assert_array_equal(value, hf[key], err_msg=key)
    # float64 parameters are written as float32
    as64 = {k: v.astype(np.float64) for k, v in hf_to_params(hf, RULES, DIMS).items()}
    assert all(v.dtype == np.float32 for v in params_to_hf(as64, RULES, DIMS).values())


TINY = GteConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
                 type_vocab_size=2, max_position_embeddings=64)


@pytest.mark.parametrize("config", [TINY, TINY.replace(pack_qkv=False)], ids=["packed", "unpacked"])
@pytest.mark.parametrize("naming", ["new", "gte"])
def test_gte_tables_round_trip_random_tensors_bit_exactly(naming, config):
    rules, dims = gte_names.rules_for(config, naming), gte_names.dims(config)
    rng = np.random.default_rng(3)
    hf = {key: rng.standard_normal(shape).astype(np.float32)
          for rule in rules for key, shape in zip(rule.hf, hf_shapes(rule, dims))}
    assert all(k.startswith((naming + ".", "lm_head.")) for k in hf)
    params = hf_to_params(hf, rules, dims, gte_names.TIED_DECODER[naming])
    back = params_to_hf(params, rules, dims)
    assert set(back) == set(hf)
    for key in hf:
        np.testing.assert_array_equal(back[key], hf[key], err_msg=key)
    # the parameters are exactly the model's, by path and shape
    model = nnx.eval_shape(lambda: GteForMaskedLM(config))
    model_shapes = {".".join(map(str, p)): tuple(v.get_value().shape)
                    for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
    assert {k: v.shape for k, v in params.items()} == model_shapes


def test_mismatches_name_every_tensor_at_once():
    hf = _hf(4)
    hf.pop("k.weight")
    hf["o.bias"] = np.zeros((5,), np.float32)
    hf["q.bias"] = np.arange(6, dtype=np.int64)
    hf["pooler.weight"] = np.zeros((2, 2), np.float32)
    with pytest.raises(WeightMismatchError) as err:
        hf_to_params(hf, RULES, DIMS, source="some/model.safetensors")
    msg = str(err.value)
    assert msg.startswith("some/model.safetensors: weights do not fit the config")
    assert "missing tensor 'k.weight' (expected shape [6, 4])" in msg
    assert "tensor 'o.bias' has shape [5], the config implies [4]" in msg
    assert "tensor 'q.bias' has dtype int64, expected a float type" in msg
    assert "unexpected tensors not used by this config: 'pooler.weight'" in msg
    assert isinstance(err.value, ValueError)


def test_many_unexpected_tensors_are_counted():
    hf = _hf(5)
    hf.update({f"extra.{i:02d}": np.zeros(1, np.float32) for i in range(11)})
    with pytest.raises(WeightMismatchError, match=r"'extra\.07' and 3 more") as err:
        hf_to_params(hf, RULES, DIMS)
    assert "'extra.08'" not in str(err.value)


def test_tied_decoder_copy_is_accepted_and_a_different_one_refused():
    hf = _hf(6)
    assert "emb" in hf_to_params(hf, RULES, DIMS, TIED)  # absent: fine
    hf["decoder.weight"] = hf["e.weight"].copy()
    params = hf_to_params(hf, RULES, DIMS, TIED)  # an exact copy: fine, and not "unexpected"
    np.testing.assert_array_equal(params["emb"], hf["e.weight"])
    with pytest.raises(WeightMismatchError, match="unexpected tensors not used by this config: 'decoder.weight'"):
        hf_to_params(hf, RULES, DIMS)  # without a tied-decoder rule it is just an extra tensor
    hf["decoder.weight"] = hf["e.weight"] + np.float32(1e-3)
    with pytest.raises(WeightMismatchError, match="'decoder.weight' is not equal to the word embeddings"):
        hf_to_params(hf, RULES, DIMS, TIED)
    hf["decoder.weight"] = hf["e.weight"][:3]
    with pytest.raises(WeightMismatchError, match="'decoder.weight' is not equal to the word embeddings"):
        hf_to_params(hf, RULES, DIMS, TIED)


def test_params_to_hf_names_a_missing_or_mis_shaped_parameter():
    params = hf_to_params(_hf(7), RULES, DIMS)
    missing = {k: v for k, v in params.items() if k != "qkv_bias"}
    with pytest.raises(WeightMismatchError, match="parameter 'qkv_bias' is missing"):
        params_to_hf(missing, RULES, DIMS)
    params["out_kernel"] = params["out_kernel"].reshape(6, 4)
    with pytest.raises(WeightMismatchError, match=r"parameter 'out_kernel' has shape \[6, 4\], the config implies "
                                                  r"\[2, 3, 4\]"):
        params_to_hf(params, RULES, DIMS)
