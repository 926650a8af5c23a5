"""Configuration of the BERT-family encoders: BERT, RoBERTa / XLM-RoBERTa and DistilBERT.

The three are one architecture (post-LN blocks, learned absolute positions, a GELU feed-forward layer, an
MLM head with the decoder tied to the word embeddings) under three names; what differs is data:

* ``model_type: "bert"`` — positions 0 … L−1, token types (``type_vocab_size``), the head's activation is
  ``hidden_act``.
* ``model_type: "roberta"`` / ``"xlm-roberta"`` — positions counted from ``pad_token_id + 1`` over the
  non-padding tokens (transformers' ``create_position_ids_from_input_ids``; padding tokens take position
  ``pad_token_id``), the head's activation is always the exact GELU.
* ``model_type: "distilbert"`` — its own ``config.json`` keys (``dim``, ``n_layers``, ``n_heads``,
  ``hidden_dim``, ``activation``, ``dropout``, ``attention_dropout``), no token types, LayerNorm ε 1e-12.

``BertConfig`` holds the BERT names for every model type and writes each back in its own dialect; keys the
model does not read are carried in ``extra`` so that a round trip writes them back. Options the port does not
implement are refused when the config is built, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jsplade.backbones.hf_config import HfConfigMethods
from jsplade.backbones.layers.activations import SUPPORTED_ACTIVATIONS
from jsplade.backbones.protocol import ConfigError

MODEL_TYPES = ("bert", "roberta", "xlm-roberta", "distilbert")
ARCHITECTURES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM",
                 "xlm-roberta": "XLMRobertaForMaskedLM", "distilbert": "DistilBertForMaskedLM"}
DISPLAY = {"bert": "BERT", "roberta": "RoBERTa", "xlm-roberta": "XLM-RoBERTa", "distilbert": "DistilBERT"}

# BERT / RoBERTa config.json keys the model reads (everything else goes to ``extra``).
_BERT_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id")
# DistilBERT key -> BertConfig field.
_DISTILBERT_KEYS = {"vocab_size": "vocab_size", "dim": "hidden_size", "n_layers": "num_hidden_layers",
                    "n_heads": "num_attention_heads", "hidden_dim": "intermediate_size", "activation": "hidden_act",
                    "dropout": "hidden_dropout_prob", "attention_dropout": "attention_probs_dropout_prob",
                    "max_position_embeddings": "max_position_embeddings", "initializer_range": "initializer_range",
                    "pad_token_id": "pad_token_id"}
DISTILBERT_LAYER_NORM_EPS = 1e-12


@dataclass(frozen=True)
class BertConfig(HfConfigMethods):
    """A BERT-family encoder (defaults: transformers' ``BertConfig`` defaults)."""

    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    __hash__ = HfConfigMethods.canonical_hash  # dict-valued fields: hash the canonical config.json

    # ------------------------------------------------------------------ derived values
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def offset_positions(self) -> bool:
        """RoBERTa's position ids: counted from ``pad_token_id + 1`` over the non-padding tokens."""
        return self.model_type in ("roberta", "xlm-roberta")

    @property
    def head_act(self) -> str:
        """The MLM head transform's activation (RoBERTa's head always uses the exact GELU)."""
        return "gelu" if self.offset_positions else self.hidden_act

    @property
    def naming(self) -> str:
        """The weight naming of this model type (``jsplade.backbones.bert_names``)."""
        return {"bert": "bert", "roberta": "roberta", "xlm-roberta": "roberta", "distilbert": "distilbert"}[
            self.model_type]

    def describe(self) -> list[tuple[str, str]]:
        """(part, value) rows of the architecture, for model cards."""
        return [("document encoder", f"{DISPLAY[self.model_type]}, {self.num_hidden_layers} layers, hidden size "
                                     f"{self.hidden_size}, {self.num_attention_heads} attention heads, "
                                     f"feed-forward width {self.intermediate_size}"),
                ("positions", f"learned absolute ({self.max_position_embeddings})")]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"{key}: {msg}")

        if self.model_type not in MODEL_TYPES:
            raise bad("model_type", f"must be one of {MODEL_TYPES}, got {self.model_type!r}")
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                    "max_position_embeddings"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(key, f"must be a positive integer, got {value!r}")
        for key in ("type_vocab_size", "pad_token_id"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise bad(key, f"must be a non-negative integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise bad("hidden_size", f"{self.hidden_size} is not a multiple of num_attention_heads "
                                     f"{self.num_attention_heads}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise bad("hidden_act", f"{self.hidden_act!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise bad(key, f"must be a probability in [0, 1), got {value!r}")
        if isinstance(self.layer_norm_eps, bool) or not isinstance(self.layer_norm_eps, (int, float)) \
                or not self.layer_norm_eps > 0:
            raise bad("layer_norm_eps", f"must be a positive number, got {self.layer_norm_eps!r}")
        if self.pad_token_id >= self.vocab_size:
            raise bad("pad_token_id", f"{self.pad_token_id} is outside the vocabulary ({self.vocab_size})")
        if self.offset_positions and self.pad_token_id + 1 >= self.max_position_embeddings:
            raise bad("max_position_embeddings", f"{self.max_position_embeddings} leaves no position after the "
                                                 f"padding offset {self.pad_token_id + 1}")
        if self.model_type == "distilbert" and self.type_vocab_size:
            raise bad("type_vocab_size", "DistilBERT has no token types")
        if self.extra.get("position_embedding_type", "absolute") != "absolute":
            raise bad("position_embedding_type", f"{self.extra['position_embedding_type']!r} is not supported "
                                                 "(only 'absolute')")
        for key in ("is_decoder", "add_cross_attention"):
            if self.extra.get(key):
                raise bad(key, "decoder models are not masked-language encoders")
        for key in ("tie_word_embeddings", "tie_weights_"):
            if self.extra.get(key, True) is False:
                raise bad(key, "jsplade needs the MLM decoder tied to the word embeddings")

    # ------------------------------------------------------------------ HF JSON
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> BertConfig:
        """Build from a parsed HF config of any of the four model types."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        if model_type not in MODEL_TYPES:
            raise ConfigError(f"{source}: model_type {model_type!r} is not a BERT-family type {MODEL_TYPES}")
        try:
            if model_type == "distilbert":
                known = {ours: raw[theirs] for theirs, ours in _DISTILBERT_KEYS.items() if theirs in raw}
                extra = {k: v for k, v in raw.items() if k not in _DISTILBERT_KEYS and k != "model_type"}
                return cls(model_type=model_type, type_vocab_size=0, layer_norm_eps=DISTILBERT_LAYER_NORM_EPS,
                           **known, extra=extra)
            known = {k: raw[k] for k in _BERT_FIELDS if k in raw}
            extra = {k: v for k, v in raw.items() if k not in _BERT_FIELDS and k != "model_type"}
            if model_type != "bert":  # transformers' RobertaConfig defaults
                known.setdefault("pad_token_id", 1)
            return cls(model_type=model_type, **known, extra=extra)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:
            raise ConfigError(f"{source}: {exc}") from None

    def to_hf_dict(self, naming: str | None = None) -> dict[str, Any]:
        """The config.json object in this model type's own dialect (the only naming it has)."""
        if naming is not None and naming != self.naming:
            raise ValueError(f"naming must be {self.naming!r} for a {self.model_type} config, got {naming!r}")
        out = dict(self.extra)
        if self.model_type == "distilbert":
            for theirs, ours in _DISTILBERT_KEYS.items():
                out[theirs] = getattr(self, ours)
        else:
            for k in _BERT_FIELDS:
                out[k] = getattr(self, k)
        out["model_type"] = self.model_type
        out.setdefault("architectures", [ARCHITECTURES[self.model_type]])
        return dict(sorted(out.items()))
