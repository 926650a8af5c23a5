"""GTE "new" encoder configuration: a plain dataclass that round-trips HF ``config.json``.

Two dialects are read and written:

* ``model_type: "new"`` — the remote-code ``NewConfig`` of ``Alibaba-NLP/new-impl`` that
  ``opensearch-neural-sparse-encoding-doc-v3-gte`` ships (``rope_theta`` + ``rope_scaling``).
* ``model_type: "gte"`` — transformers' native ``GteConfig`` (``rope_parameters``). New-impl's fixed
  NTK scaling (θ, s) is exactly transformers' ``linear`` rope with θ' = θ·s and factor s^(2/d_h).

Options the port does not implement are rejected when the config is built, with the offending key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from jsplade.backbones.hf_config import HfConfigMethods
from jsplade.backbones.layers.activations import SUPPORTED_ACTIVATIONS
from jsplade.backbones.layers.rope import RotarySpec
from jsplade.backbones.protocol import ConfigError

# Keys of NewConfig that the model reads; everything else in a config.json is carried in ``extra``.
_NEW_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "layer_norm_type",
    "layer_norm_eps",
    "position_embedding_type",
    "rope_theta",
    "rope_scaling",
    "pack_qkv",
    "unpad_inputs",
    "use_memory_efficient_attention",
    "logn_attention_scale",
    "logn_attention_clip1",
    "pad_token_id",
    "classifier_dropout",
)

# The auto_map of the hub checkpoint (read as names only; jsplade never runs remote code).
NEW_IMPL_AUTO_MAP = {
    "AutoConfig": "Alibaba-NLP/new-impl--configuration.NewConfig",
    "AutoModel": "Alibaba-NLP/new-impl--modeling.NewModel",
    "AutoModelForMaskedLM": "Alibaba-NLP/new-impl--modeling.NewForMaskedLM",
    "AutoModelForMultipleChoice": "Alibaba-NLP/new-impl--modeling.NewForMultipleChoice",
    "AutoModelForQuestionAnswering": "Alibaba-NLP/new-impl--modeling.NewForQuestionAnswering",
    "AutoModelForSequenceClassification": "Alibaba-NLP/new-impl--modeling.NewForSequenceClassification",
    "AutoModelForTokenClassification": "Alibaba-NLP/new-impl--modeling.NewForTokenClassification",
}


@dataclass(frozen=True)
class GteConfig(HfConfigMethods):
    """Every field of new-impl's ``NewConfig`` (defaults = its constructor defaults)."""

    vocab_size: int = 30528
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.0
    max_position_embeddings: int = 2048
    type_vocab_size: int = 1
    initializer_range: float = 0.02
    layer_norm_type: str = "layer_norm"
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    pack_qkv: bool = True
    unpad_inputs: bool = False
    use_memory_efficient_attention: bool = False
    logn_attention_scale: bool = False
    logn_attention_clip1: bool = False
    pad_token_id: int = 0
    classifier_dropout: float | None = None
    # Keys of the source config.json that the model does not read (architectures, auto_map,
    # dtype, transformers_version, ...), kept so that a round trip writes them back.
    extra: dict[str, Any] = field(default_factory=dict)

    __hash__ = HfConfigMethods.canonical_hash  # dict-valued fields: hash the canonical config.json

    # ------------------------------------------------------------------ derived values
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def ntk_factor(self) -> float | None:
        """The NTK scaling factor s, or None without rope scaling."""
        return None if self.rope_scaling is None else float(self.rope_scaling["factor"])

    @property
    def ntk_mixed_b(self) -> float | None:
        if self.rope_scaling is None:
            return None
        b = self.rope_scaling.get("mixed_b")
        return None if b is None else float(b)

    @property
    def rotary(self) -> RotarySpec:
        """What the rotary tables depend on (``jsplade.backbones.layers.rope``)."""
        return RotarySpec(self.head_dim, float(self.rope_theta), self.ntk_factor, self.ntk_mixed_b)

    def describe(self) -> list[tuple[str, str]]:
        """(part, value) rows of the architecture, for model cards."""
        if self.rope_scaling is None:
            rope = f"rotary (base {self.rope_theta:g})"
        else:
            rope = f"rotary (base {self.rope_theta:g}, NTK scaling factor {self.ntk_factor:g})"
        return [("document encoder", f"GTE, {self.num_hidden_layers} layers, hidden size {self.hidden_size}, "
                                     f"{self.num_attention_heads} attention heads, GLU width {self.intermediate_size}"),
                ("positions", rope)]

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ConfigError naming the field for anything the port does not implement."""

        def bad(key: str, msg: str) -> ConfigError:
            return ConfigError(f"config field {key!r}: {msg}")

        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                    "intermediate_size", "max_position_embeddings"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(key, f"must be a positive integer, got {value!r}")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise bad("type_vocab_size", f"must be an integer >= 0, got {self.type_vocab_size!r}")
        if self.hidden_size % self.num_attention_heads:
            raise bad("hidden_size", f"{self.hidden_size} is not divisible by num_attention_heads "
                      f"{self.num_attention_heads}")
        if self.head_dim % 2:
            raise bad("num_attention_heads", f"head dim {self.head_dim} must be even for rotary embeddings")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise bad("hidden_act", f"{self.hidden_act!r} is not supported (supported: {SUPPORTED_ACTIVATIONS})")
        if self.layer_norm_type not in ("layer_norm", "rms_norm"):
            raise bad("layer_norm_type", f"{self.layer_norm_type!r} is not supported "
                      "(supported: 'layer_norm', 'rms_norm')")
        if self.position_embedding_type != "rope":
            raise bad("position_embedding_type", f"{self.position_embedding_type!r} is not implemented "
                      "by jsplade (only 'rope', which every GTE v1.5 / v3-gte checkpoint uses)")
        if not (isinstance(self.rope_theta, (int, float)) and self.rope_theta > 0):
            raise bad("rope_theta", f"must be a positive number, got {self.rope_theta!r}")
        if self.layer_norm_eps is None or not self.layer_norm_eps > 0:
            raise bad("layer_norm_eps", f"must be > 0, got {self.layer_norm_eps!r}")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, key)
            if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
                raise bad(key, f"must be in [0, 1), got {p!r}")
        if self.logn_attention_clip1 and not self.logn_attention_scale:
            # The reference only reads clip1 inside the logn branch: harmless, but keep it explicit.
            pass
        if self.rope_scaling is not None:
            rs = self.rope_scaling
            if not isinstance(rs, dict):
                raise bad("rope_scaling", f"must be an object or null, got {rs!r}")
            kind = rs.get("type", rs.get("rope_type"))
            if kind != "ntk":
                raise bad("rope_scaling", f"type {kind!r} is not implemented (new-impl supports only 'ntk')")
            factor = rs.get("factor")
            if not isinstance(factor, (int, float)) or isinstance(factor, bool):
                raise bad("rope_scaling", f"'factor' must be a number, got {factor!r}")
            if factor < 1.0:
                raise bad("rope_scaling", f"NTK factor {factor} < 1 is not supported: the reference "
                          "would switch frequencies depending on the call history")
            unknown = set(rs) - {"type", "rope_type", "factor", "mixed_b"}
            if unknown:
                raise bad("rope_scaling", f"unknown keys {sorted(unknown)}")
            mixed_b = rs.get("mixed_b")
            if mixed_b is not None and not (isinstance(mixed_b, (int, float)) and mixed_b > 0):
                raise bad("rope_scaling", f"'mixed_b' must be a positive number, got {mixed_b!r}")

    # ------------------------------------------------------------------ HF JSON
    @classmethod
    def from_hf_dict(cls, raw: dict[str, Any], source: str = "config.json") -> GteConfig:
        """Build from a parsed HF config (model_type ``new`` or native ``gte``)."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type")
        try:
            if model_type == "new":
                return cls._from_new_dict(raw)
            if model_type == "gte":
                return cls._from_gte_dict(raw)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        except TypeError as exc:  # wrong value types caught by the dataclass constructor
            raise ConfigError(f"{source}: {exc}") from None
        raise ConfigError(
            f"{source}: unknown model_type {model_type!r}; jsplade reads GTE encoders written as "
            "model_type 'new' (Alibaba-NLP/new-impl) or 'gte' (transformers' native GteConfig)"
        )

    @classmethod
    def _from_new_dict(cls, raw: dict[str, Any]) -> GteConfig:
        known = {k: raw[k] for k in _NEW_FIELDS if k in raw}
        extra = {k: v for k, v in raw.items() if k not in _NEW_FIELDS}
        if known.get("rope_scaling") is not None:
            known["rope_scaling"] = dict(known["rope_scaling"])
        return cls(**known, extra=extra)

    @classmethod
    def _from_gte_dict(cls, raw: dict[str, Any]) -> GteConfig:
        taken = {
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
            "type_vocab_size", "initializer_range", "layer_norm_eps", "pad_token_id", "classifier_dropout",
            "rope_parameters", "rope_theta", "rope_scaling",
        }
        # GteConfig defaults differ from NewConfig's (vocab 250048, theta 160000, type_vocab 1, pad 1).
        kwargs: dict[str, Any] = {
            "vocab_size": raw.get("vocab_size", 250048),
            "hidden_size": raw.get("hidden_size", 768),
            "num_hidden_layers": raw.get("num_hidden_layers", 12),
            "num_attention_heads": raw.get("num_attention_heads", 12),
            "intermediate_size": raw.get("intermediate_size", 3072),
            "hidden_act": raw.get("hidden_act", "gelu"),
            "hidden_dropout_prob": raw.get("hidden_dropout_prob", 0.1),
            "attention_probs_dropout_prob": raw.get("attention_probs_dropout_prob", 0.0),
            "max_position_embeddings": raw.get("max_position_embeddings", 8192),
            "type_vocab_size": raw.get("type_vocab_size", 1),
            "initializer_range": raw.get("initializer_range", 0.02),
            "layer_norm_eps": raw.get("layer_norm_eps", 1e-12),
            "pad_token_id": raw.get("pad_token_id", 1),
            "classifier_dropout": raw.get("classifier_dropout"),
        }
        if raw.get("tie_word_embeddings") is False:
            raise ConfigError("field 'tie_word_embeddings': false is not supported (the MLM decoder "
                              "must be tied to the word embeddings)")
        rope = raw.get("rope_parameters")
        if rope is None:  # transformers < 5 spelling
            rope = {"rope_type": "default", "rope_theta": raw.get("rope_theta", 160000.0)}
            if raw.get("rope_scaling"):
                rope.update(raw["rope_scaling"])
        if not isinstance(rope, dict):
            raise ConfigError(f"field 'rope_parameters': expected an object, got {rope!r}")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        theta = rope.get("rope_theta", raw.get("rope_theta", 160000.0))
        head_dim = kwargs["hidden_size"] // kwargs["num_attention_heads"]
        if rope_type == "default":
            kwargs["rope_theta"] = theta
            kwargs["rope_scaling"] = None
        elif rope_type == "linear":
            # linear(θ', f): ω_k = θ'^(-2k/d) / f  ==  new-impl NTK(θ, s): (θ s)^(-2k/d) / s^(2/d)
            factor = float(rope["factor"])
            s = _snap(factor ** (head_dim / 2))
            kwargs["rope_theta"] = _snap(theta / s)
            kwargs["rope_scaling"] = {"type": "ntk", "factor": s}
        else:
            raise ConfigError(f"field 'rope_parameters': rope_type {rope_type!r} has no new-impl "
                              "equivalent (supported: 'default', 'linear')")
        extra = {k: v for k, v in raw.items() if k not in taken}
        extra["model_type"] = "new"  # canonical internal dialect; to_hf_dict(naming="gte") rewrites it
        extra.pop("architectures", None)
        extra.pop("tie_word_embeddings", None)
        return cls(**kwargs, extra=extra)

    def to_hf_dict(self, naming: str | None = None) -> dict[str, Any]:
        """The config.json object for ``naming`` ``"new"`` (remote code; the default) or ``"gte"`` (native)."""
        naming = "new" if naming is None else naming
        if naming == "new":
            out = {k: v for k, v in self.extra.items() if k != "model_type"}
            for k in _NEW_FIELDS:
                v = getattr(self, k)
                out[k] = dict(v) if isinstance(v, dict) else v
            out["model_type"] = "new"
            out.setdefault("architectures", ["NewForMaskedLM"])
            out.setdefault("auto_map", dict(NEW_IMPL_AUTO_MAP))
            return dict(sorted(out.items()))
        if naming == "gte":
            self._check_native_expressible()
            if self.rope_scaling is None:
                rope = {"rope_type": "default", "rope_theta": float(self.rope_theta)}
            else:
                s = self.ntk_factor
                rope = {
                    "rope_type": "linear",
                    "rope_theta": float(self.rope_theta) * s,
                    "factor": s ** (2.0 / self.head_dim),
                }
            out = {
                "architectures": ["GteForMaskedLM"],
                "model_type": "gte",
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size,
                "initializer_range": self.initializer_range,
                "layer_norm_eps": self.layer_norm_eps,
                "pad_token_id": self.pad_token_id,
                "classifier_dropout": self.classifier_dropout,
                "tie_word_embeddings": True,
                "rope_parameters": rope,
            }
            for k in ("dtype", "torch_dtype", "transformers_version"):
                if k in self.extra:
                    out[k] = self.extra[k]
            return out
        raise ValueError(f"naming must be 'new' or 'gte', got {naming!r}")

    def _check_native_expressible(self) -> None:
        """transformers' GteForMaskedLM cannot express every new-impl option (NATIVE_GTE.md)."""
        problems = []
        if self.ntk_mixed_b is not None:
            problems.append("mixed NTK rope scaling (rope_scaling.mixed_b)")
        if self.logn_attention_scale:
            problems.append("logn_attention_scale")
        if not self.pack_qkv:
            pass  # weights are re-packed by name mapping; native gte always has q/k/v separately
        if self.layer_norm_type != "layer_norm":
            problems.append(f"layer_norm_type {self.layer_norm_type!r}")
        if self.hidden_act != "gelu":
            problems.append(f"hidden_act {self.hidden_act!r} (native GteLMHead always uses exact gelu)")
        if problems:
            raise ConfigError("cannot write transformers' native 'gte' config: it has no equivalent for "
                              + ", ".join(problems) + "; use naming='new'")


def _snap(x: float) -> float:
    """Round float noise from a pow/division round trip (2.0000000000000004 → 2.0)."""
    for digits in range(1, 13):
        r = float(f"{x:.{digits}g}")
        if math.isclose(r, x, rel_tol=1e-12, abs_tol=0.0):
            return int(r) if r.is_integer() and abs(r) < 2**53 else r
    return x


def v3_gte_config(**overrides: Any) -> GteConfig:
    """The configuration of opensearch-neural-sparse-encoding-doc-v3-gte (gte_architecture.md §1)."""
    base = dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.0, max_position_embeddings=8192, type_vocab_size=0,
        layer_norm_type="layer_norm", layer_norm_eps=1e-12, rope_theta=500000,
        rope_scaling={"type": "ntk", "factor": 2.0}, pack_qkv=True, pad_token_id=0,
    )
    base.update(overrides)
    return GteConfig(**base)
