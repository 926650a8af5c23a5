"""The backbone interface: what the rest of jsplade needs from a masked-language model, and nothing more.

Two pieces, both small:

* ``MaskedLM``: the model object. The SPLADE head and the fused head read the encoder output, the head
  features, the tied decoder weight and the decoder bias; the trainer differentiates the model's
  ``nnx.Param`` s and switches its ``ComputeOptions`` (dtype, attention kernel, remat); the SPLADE
  initialisations reach the word embeddings and the head through ``word_embeddings`` and ``head``.
* ``Backbone``: the family, as data: which ``config.json`` ``model_type`` s it reads, its config class
  and model class, its weight-name namings and their tables (``jsplade.backbones.weight_map`` applies
  them, in both directions), and the logical axes of its parameters for the sharding rules.

The checkpoints, the SPLADE side and the trainer talk only to these two; ``jsplade.backbones.registry``
finds the family of a config or a model. A new backbone is one model module (defining its ``Backbone``)
plus one names module (its table), added to the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from jsplade.backbones import weight_map
from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.layers.embedding import Embed
from jsplade.backbones.layers.mlm_head import MlmHead
from jsplade.backbones.weight_map import TensorRule


class ConfigError(ValueError):
    """A config.json that jsplade cannot represent exactly."""


@runtime_checkable
class BackboneConfig(Protocol):
    """A backbone's config: a frozen, hashable dataclass that round-trips the HF ``config.json``."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int

    def to_hf_dict(self, naming: str | None = None) -> dict[str, Any]:
        """The ``config.json`` object in one of the family's namings (default: its canonical one)."""

    def to_json_string(self, naming: str | None = None) -> str: ...

    def replace(self, **changes: Any) -> BackboneConfig: ...

    def describe(self) -> list[tuple[str, str]]:
        """(part, value) rows describing the architecture (model cards)."""


@runtime_checkable
class MaskedLM(Protocol):
    """A masked-language model with a tied decoder. Arguments take Hugging Face's names; arrays are
    [B, L] token ids / masks, outputs [B, L, D] hidden states or [B, L, V] logits."""

    config: BackboneConfig
    compute: ComputeOptions
    head: MlmHead

    def with_compute(self, **changes: Any) -> MaskedLM:
        """Switch ``ComputeOptions`` fields in place; returns the model."""

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
               segment_ids=None, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """The encoder output (``last_hidden_state``) in the compute dtype. ``segment_ids`` (packing:
        several documents per row, with ``position_ids`` restarting per document) make attention
        block-diagonal; dropout only with a ``dropout_key``."""

    def head_features(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """The MLM head's transform of the hidden states, before the vocabulary projection."""

    def word_embeddings(self) -> Embed:
        """The word-embedding table [V, D], which is also the decoder weight."""

    def decoder_weight(self) -> jnp.ndarray:
        """The tied decoder weight [V, D]."""

    def decoder_bias(self) -> jnp.ndarray:
        """The decoder bias [V]."""

    def project(self, features: jnp.ndarray) -> jnp.ndarray:
        """Vocabulary logits [B, L, V] (float32) of head features."""

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
                 segment_ids=None, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Logits [B, L, V] float32: ``project(head_features(encode(...)))``."""


@dataclass(frozen=True)
class Backbone:
    """A backbone family as data (see the module docstring)."""

    name: str                                  # short name ("gte")
    display_name: str                          # as prose says it ("GTE")
    model_types: tuple[str, ...]              # config.json model_type values read as this family
    config_class: type
    model_class: type
    namings: Mapping[str, str]                 # weight naming -> what it is (shown in exports)
    naming_cards: Mapping[str, str]            # weight naming -> its line in a model card (Markdown)
    default_naming: str
    remote_code_namings: tuple[str, ...]       # namings whose config.json needs trust_remote_code
    rules: Callable[[Any, str], list[TensorRule]]
    dims: Callable[[Any], dict[str, int]]
    detect_naming: Callable[[Any], str]
    tied_decoder: Mapping[str, tuple[str, str]]  # naming -> (HF key, parameter path)
    logical_axes: tuple[tuple[str, tuple[str | None, ...]], ...]
    # The naming a config implies, where it is the config's (one naming per model type); None: default_naming.
    config_naming: Callable[[Any], str] | None = None
    # (naming, HF key) -> whether loading skips the tensor (pre-training heads, buffers); None: nothing skipped.
    ignored: Callable[[str, str], bool] | None = None

    def config_from_hf_dict(self, raw: dict[str, Any], source: str = "config.json") -> BackboneConfig:
        return self.config_class.from_hf_dict(raw, source=source)

    def new_model(self, config, *, compute: ComputeOptions | None = None, rngs=None) -> MaskedLM:
        return self.model_class(config, compute=compute, rngs=rngs)

    def check_naming(self, naming: str | None, config=None) -> str:
        """``naming`` (for None: the one ``config`` implies, else the default), or a ValueError naming the
        family's namings (or the config's only one)."""
        implied = None if config is None or self.config_naming is None else self.config_naming(config)
        if naming is None:
            naming = implied or self.default_naming
        if naming not in self.namings:
            raise ValueError(f"naming must be one of {tuple(self.namings)} for {self.name} weights, got {naming!r}")
        if implied is not None and naming != implied:
            raise ValueError(f"naming must be {implied!r} for this {self.display_name} config, got {naming!r}")
        return naming

    def hf_to_params(self, tensors: Mapping[str, np.ndarray], config, naming: str | None = None,
                     source: str = "checkpoint") -> dict[str, np.ndarray]:
        """HF state dict (``naming`` detected from the names when None) → flat float32 parameters."""
        naming = self.check_naming(naming or self.detect_naming(tensors.keys()), config)
        if self.ignored is not None:
            tensors = {k: v for k, v in tensors.items() if not self.ignored(naming, k)}
        return weight_map.hf_to_params(tensors, self.rules(config, naming), self.dims(config),
                                       self.tied_decoder.get(naming), source)

    def params_to_hf(self, params: Mapping[str, np.ndarray], config, naming: str | None = None) -> dict[str, np.ndarray]:
        """Flat parameters → HF state dict in ``naming`` (the tied decoder weight omitted)."""
        naming = self.check_naming(naming, config)
        return weight_map.params_to_hf(params, self.rules(config, naming), self.dims(config))

    def hf_shapes(self, config, naming: str | None = None) -> dict[str, tuple[int, ...]]:
        """HF key → shape of every stored tensor of ``config`` in ``naming``."""
        dims = self.dims(config)
        return {key: shape for rule in self.rules(config, self.check_naming(naming, config))
                for key, shape in zip(rule.hf, weight_map.hf_shapes(rule, dims))}

    def n_tensors(self, config, naming: str | None = None) -> int:
        """How many tensors a checkpoint of ``config`` stores in ``naming``."""
        return sum(len(rule.hf) for rule in self.rules(config, self.check_naming(naming, config)))
