"""The backbone families jsplade knows, found by a config's ``model_type`` or by a model's class.

Adding a family: its model module defines a ``jsplade.backbones.protocol.Backbone``; list it in ``BACKBONES``.
"""

from __future__ import annotations

from typing import Any

from jsplade.backbones.bert import BERT
from jsplade.backbones.gte import GTE
from jsplade.backbones.protocol import Backbone, BackboneConfig, ConfigError, MaskedLM

BACKBONES: tuple[Backbone, ...] = (GTE, BERT)


def known_model_types() -> list[str]:
    return [t for family in BACKBONES for t in family.model_types]


def known_namings() -> list[str]:
    """Every weight naming of every family, in registration order (each family accepts its own)."""
    return list(dict.fromkeys(n for family in BACKBONES for n in family.namings))


def backbone_for_model_type(model_type: Any, source: str = "config.json") -> Backbone:
    """The family that reads ``model_type``; a ConfigError naming ``source`` and the known types otherwise."""
    for family in BACKBONES:
        if model_type in family.model_types:
            return family
    known = ", ".join(f"{t!r} ({family.display_name})" for family in BACKBONES for t in family.model_types)
    raise ConfigError(f"{source}: unknown model_type {model_type!r}; jsplade reads masked-language models of "
                      f"model_type {known}")


def config_from_hf_dict(raw: Any, source: str = "config.json") -> BackboneConfig:
    """A backbone config from a parsed HF ``config.json`` object, of the family its ``model_type`` names."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    return backbone_for_model_type(raw.get("model_type"), source).config_from_hf_dict(raw, source)


def backbone_of(model_or_config: MaskedLM | BackboneConfig) -> Backbone:
    """The family of a model or of a config object."""
    for family in BACKBONES:
        if isinstance(model_or_config, (family.model_class, family.config_class)):
            return family
    raise TypeError(f"{type(model_or_config).__name__} is not a model or config of a jsplade backbone "
                    f"(families: {', '.join(f.name for f in BACKBONES)})")
