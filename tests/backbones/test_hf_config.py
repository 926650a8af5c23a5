"""HfConfigMethods: validation on construction and replace, the JSON file round trip, and the canonical
hash that makes configs with dict-valued fields usable as static jit arguments."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import pytest

from jsplade.backbones.bert_config import BertConfig
from jsplade.backbones.gte_config import GteConfig, v3_gte_config
from jsplade.backbones.hf_config import HfConfigMethods


@dataclass(frozen=True)
class ToyConfig(HfConfigMethods):
    width: int = 4
    extra: dict[str, Any] = field(default_factory=dict)

    __hash__ = HfConfigMethods.canonical_hash

    def validate(self) -> None:
        if self.width <= 0:
            raise ValueError(f"width: must be positive, got {self.width}")

    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> ToyConfig:
        if "width" not in raw:
            raise ValueError(f"{source}: no width")
        return cls(width=raw["width"], extra={k: v for k, v in raw.items() if k != "width"})

    def to_hf_dict(self, naming: str | None = None) -> dict[str, Any]:
        return {"width": self.width, **self.extra}


def test_validated_on_construction_and_replace():
    with pytest.raises(ValueError, match="width: must be positive, got 0"):
        ToyConfig(width=0)
    cfg = ToyConfig(width=3)
    assert cfg.replace(width=5).width == 5 and cfg.width == 3
    with pytest.raises(ValueError, match="got -2"):
        cfg.replace(width=-2)


def test_json_file_round_trip_and_errors_name_the_file(tmp_path):
    cfg = ToyConfig(width=7, extra={"note": {"a": 1}})
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json_string())
    assert json.loads(path.read_text()) == {"width": 7, "note": {"a": 1}}
    assert ToyConfig.from_json_file(path) == cfg
    path.write_text("{}")
    with pytest.raises(ValueError, match=f"{path}: no width"):
        ToyConfig.from_json_file(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json"):
        ToyConfig.from_json_file(path)
    with pytest.raises(FileNotFoundError):
        ToyConfig.from_json_file(tmp_path / "missing.json")


@pytest.mark.parametrize("make", [lambda: ToyConfig(width=2, extra={"d": {"x": [1]}}), v3_gte_config,
                                  lambda: BertConfig(extra={"architectures": ["BertForMaskedLM"]})])
def test_dict_fields_hash_canonically(make):
    a, b = make(), make()
    assert a is not b and a == b and hash(a) == hash(b)
    assert hash(a) == a.canonical_hash()
    assert hash(a.replace(extra={**a.extra, "extra_key": 1})) != hash(a)


def test_a_config_is_a_static_jit_argument():
    """Equal configs (distinct objects) hit the same compiled function; a different one compiles anew."""
    traced = []

    def scaled(x, cfg):
        traced.append(cfg)
        return x * cfg.width

    fn = jax.jit(scaled, static_argnums=1)
    assert float(fn(jnp.float32(2.0), ToyConfig(width=3, extra={"d": {}}))) == 6.0
    assert float(fn(jnp.float32(2.0), ToyConfig(width=3, extra={"d": {}}))) == 6.0
    assert len(traced) == 1
    assert float(fn(jnp.float32(2.0), ToyConfig(width=4, extra={"d": {}}))) == 8.0
    assert len(traced) == 2
    for cfg_type in (GteConfig, BertConfig):
        assert int(jax.jit(lambda x, cfg: x + cfg.hidden_size, static_argnums=1)(jnp.int32(0), cfg_type())) == \
            cfg_type().hidden_size
