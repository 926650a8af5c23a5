"""jsplade.backbones.recipe: the fixtures' seeded weights against what each case.json of tests/fixtures/gte records
(written by the PyTorch reference's generator): the key list and shapes, the key count, the float64 sum of all
values (relative 1e-12) and the first values; and against the recipe of tests/fixtures/README.md written out here
over the recorded keys (bit-exact).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.fixtures import TINY_CASES, V3_CASES, load_gte_case

from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.recipe import recipe_shapes, recipe_state_dict


def _case(name: str):
    case = load_gte_case(name)
    return case, GteConfig.from_hf_dict(case.config_json)


def _readme_recipe(keys: dict[str, list[int]], seed: int) -> dict[str, np.ndarray]:
    """tests/fixtures/README.md, "Recipe weights", steps 2-3."""
    rs = np.random.RandomState(seed)
    norm_suffixes = ("LayerNorm.weight", "attn_ln.weight", "mlp_ln.weight", "lm_head.norm.weight")
    out = {}
    for key in sorted(keys):
        z = rs.standard_normal(size=tuple(keys[key]))
        out[key] = (1 + 0.1 * z if key.endswith(norm_suffixes) else 0.02 * z).astype(np.float32)
    return out


@pytest.mark.parametrize("name", TINY_CASES + V3_CASES)
def test_shapes_are_the_reference_checkpoint_keys(name):
    case, config = _case(name)
    recorded = case.case["weights"]["keys"]
    assert recipe_shapes(config) == {k: tuple(v) for k, v in recorded.items()}
    assert len(recorded) == case.case["weights"]["n_keys"]
    assert "lm_head.decoder.weight" not in recipe_shapes(config)  # tied to the word embeddings, never stored


@pytest.mark.parametrize("name", TINY_CASES)
def test_values_are_the_recorded_recipe(name):
    case, config = _case(name)
    weights = case.case["weights"]
    sd = recipe_state_dict(config, case.seed)
    assert all(v.dtype == np.float32 for v in sd.values())
    total = sum(float(np.sum(v, dtype=np.float64)) for v in sd.values())
    assert total == pytest.approx(weights["check_sum_of_all_recipe_values_float64"], rel=1e-12)
    first = sd[weights["check_first_key"]].reshape(-1)[:len(weights["check_first_values"])]
    np.testing.assert_allclose(first, weights["check_first_values"], rtol=1e-7)
    readme = _readme_recipe(weights["keys"], case.seed)
    assert list(sd) == list(readme)  # sorted order, as the generator drew them
    for key in readme:
        np.testing.assert_array_equal(sd[key], readme[key], err_msg=key)


def test_seed_changes_the_values_and_norm_weights_are_centred_on_one():
    _, config = _case("tiny_unpacked_rms")
    a, b = recipe_state_dict(config, 1), recipe_state_dict(config, 2)
    assert not np.array_equal(a["lm_head.dense.weight"], b["lm_head.dense.weight"])
    np.testing.assert_array_equal(recipe_state_dict(config, 1)["lm_head.dense.weight"], a["lm_head.dense.weight"])
    assert abs(a["new.encoder.layer.0.attn_ln.weight"].mean() - 1) < 0.05  # 1 + 0.1 z
    assert abs(a["new.encoder.layer.0.attention.q_proj.weight"].std() / 0.02 - 1) < 0.05  # 0.02 z
    assert "new.encoder.layer.0.attn_ln.bias" not in a  # RMSNorm: no bias tensor
