"""GTE's weight names: the HF state-dict names ⇄ jsplade parameter paths table, as data.

Namings: ``"new"`` = new-impl ``NewForMaskedLM`` (the hub checkpoint of v3-gte: ``new.`` prefix, packed
``qkv_proj`` [3D, D] — or q/k/v separately when ``pack_qkv`` is false — and ``up_gate_proj``, up first,
gate second), ``"gte"`` = transformers' native ``GteForMaskedLM`` (``gte.`` prefix, q/k/v and up/gate
separately). The decoder weight is tied to the word embeddings and never stored. Symbolic dims: D hidden,
H heads, K head dim, I intermediate, V vocab, T type vocab (``dims``). ``LOGICAL_AXES`` names each
parameter's axes for the sharding rules.
"""

from __future__ import annotations

from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.weight_map import TensorRule, WeightMismatchError

NAMINGS = {"new": "new-impl (NewForMaskedLM, remote code)", "gte": "native transformers GteForMaskedLM"}
# naming -> how a model card names it
NAMING_CARDS = {"new": "new-impl `NewForMaskedLM` (`model_type` new, remote code Alibaba-NLP/new-impl)",
                "gte": "transformers' native `GteForMaskedLM` (`model_type` gte)"}
DEFAULT_NAMING = "new"
REMOTE_CODE_NAMINGS = ("new",)
# naming -> (HF key of the tied decoder weight, the parameter it must equal)
TIED_DECODER = {"new": ("lm_head.decoder.weight", "embeddings.word.embedding"),
                "gte": ("lm_head.decoder.weight", "embeddings.word.embedding")}

# Parameter path (regex on the dotted path, first match wins) → logical axis name per dimension.
LOGICAL_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embeddings\.word\.embedding$", ("vocab", "embed")),
    (r"embeddings\.token_type\.embedding$", (None, "embed")),
    (r"attention\.qkv_kernel$", ("embed", None, "heads", "kv")),
    (r"attention\.qkv_bias$", (None, "heads", "kv")),
    (r"attention\.out_kernel$", ("heads", "kv", "embed")),
    (r"mlp\.up_gate_kernel$", ("embed", None, "mlp")),
    (r"mlp\.down_kernel$", ("mlp", "embed")),
    (r"head\.dense_kernel$", ("embed", "embed_out")),
    (r"head\.decoder_bias$", ("vocab",)),
    (r"(norm\.(scale|bias)|_bias)$", ("norm",)),
)


def _new_layer_rules(config: GteConfig) -> list[TensorRule]:
    p = "new.encoder.layer.{i}."
    if config.pack_qkv:
        qkv_w, qkv_b = (p + "attention.qkv_proj.weight",), (p + "attention.qkv_proj.bias",)
    else:
        qkv_w = tuple(p + f"attention.{n}_proj.weight" for n in "qkv")
        qkv_b = tuple(p + f"attention.{n}_proj.bias" for n in "qkv")
    rules = [
        TensorRule("layers.{i}.attention.qkv_kernel", qkv_w, "kernel", ("D",), ("3", "H", "K")),
        TensorRule("layers.{i}.attention.qkv_bias", qkv_b, "vector", (), ("3", "H", "K")),
        TensorRule("layers.{i}.attention.out_kernel", (p + "attention.o_proj.weight",), "kernel", ("H", "K"), ("D",)),
        TensorRule("layers.{i}.attention.out_bias", (p + "attention.o_proj.bias",), "vector", (), ("D",)),
        TensorRule("layers.{i}.mlp.up_gate_kernel", (p + "mlp.up_gate_proj.weight",), "kernel", ("D",), ("2", "I")),
        TensorRule("layers.{i}.mlp.down_kernel", (p + "mlp.down_proj.weight",), "kernel", ("I",), ("D",)),
        TensorRule("layers.{i}.mlp.down_bias", (p + "mlp.down_proj.bias",), "vector", (), ("D",)),
    ]
    for ours, theirs in (("attn_norm", "attn_ln"), ("mlp_norm", "mlp_ln")):
        rules.append(TensorRule(f"layers.{{i}}.{ours}.scale", (p + f"{theirs}.weight",), "vector", (), ("D",)))
        if config.layer_norm_type == "layer_norm":
            rules.append(TensorRule(f"layers.{{i}}.{ours}.bias", (p + f"{theirs}.bias",), "vector", (), ("D",)))
    return rules


def _gte_layer_rules(config: GteConfig) -> list[TensorRule]:
    if config.layer_norm_type != "layer_norm":
        raise ValueError("transformers' native gte naming has no RMSNorm layers; use naming='new'")
    p = "gte.layers.{i}."
    return [
        TensorRule("layers.{i}.attention.qkv_kernel", tuple(p + f"self_attn.{n}_proj.weight" for n in "qkv"),
                   "kernel", ("D",), ("3", "H", "K")),
        TensorRule("layers.{i}.attention.qkv_bias", tuple(p + f"self_attn.{n}_proj.bias" for n in "qkv"),
                   "vector", (), ("3", "H", "K")),
        TensorRule("layers.{i}.attention.out_kernel", (p + "self_attn.o_proj.weight",), "kernel", ("H", "K"), ("D",)),
        TensorRule("layers.{i}.attention.out_bias", (p + "self_attn.o_proj.bias",), "vector", (), ("D",)),
        TensorRule("layers.{i}.mlp.up_gate_kernel", (p + "mlp.up_proj.weight", p + "mlp.gate_proj.weight"),
                   "kernel", ("D",), ("2", "I")),
        TensorRule("layers.{i}.mlp.down_kernel", (p + "mlp.down_proj.weight",), "kernel", ("I",), ("D",)),
        TensorRule("layers.{i}.mlp.down_bias", (p + "mlp.down_proj.bias",), "vector", (), ("D",)),
        TensorRule("layers.{i}.attn_norm.scale", (p + "post_attention_layernorm.weight",), "vector", (), ("D",)),
        TensorRule("layers.{i}.attn_norm.bias", (p + "post_attention_layernorm.bias",), "vector", (), ("D",)),
        TensorRule("layers.{i}.mlp_norm.scale", (p + "post_mlp_layernorm.weight",), "vector", (), ("D",)),
        TensorRule("layers.{i}.mlp_norm.bias", (p + "post_mlp_layernorm.bias",), "vector", (), ("D",)),
    ]


def _outer_rules(config: GteConfig, naming: str) -> list[TensorRule]:
    prefix = "new." if naming == "new" else "gte."
    head_norm = "lm_head.norm" if naming == "new" else "lm_head.layer_norm"
    rules = [
        TensorRule("embeddings.word.embedding", (prefix + "embeddings.word_embeddings.weight",), "embedding",
                   ("V",), ("D",)),
        TensorRule("embeddings.norm.scale", (prefix + "embeddings.LayerNorm.weight",), "vector", (), ("D",)),
        TensorRule("embeddings.norm.bias", (prefix + "embeddings.LayerNorm.bias",), "vector", (), ("D",)),
        TensorRule("head.dense_kernel", ("lm_head.dense.weight",), "kernel", ("D",), ("D",)),
        TensorRule("head.dense_bias", ("lm_head.dense.bias",), "vector", (), ("D",)),
        TensorRule("head.norm.scale", (head_norm + ".weight",), "vector", (), ("D",)),
        TensorRule("head.norm.bias", (head_norm + ".bias",), "vector", (), ("D",)),
        TensorRule("head.decoder_bias", ("lm_head.decoder.bias",), "vector", (), ("V",)),
    ]
    if config.type_vocab_size > 0:
        rules.insert(1, TensorRule("embeddings.token_type.embedding",
                                   (prefix + "embeddings.token_type_embeddings.weight",), "embedding", ("T",), ("D",)))
    return rules


def rules_for(config: GteConfig, naming: str = DEFAULT_NAMING) -> list[TensorRule]:
    """Every rule, layer templates expanded for each layer index."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {tuple(NAMINGS)}, got {naming!r}")
    template = _new_layer_rules(config) if naming == "new" else _gte_layer_rules(config)
    rules = _outer_rules(config, naming)
    for i in range(config.num_hidden_layers):
        for r in template:
            rules.append(TensorRule(r.param.format(i=i), tuple(k.format(i=i) for k in r.hf),
                                    r.kind, r.in_dims, r.out_dims))
    return rules


def dims(config: GteConfig) -> dict[str, int]:
    """The sizes of the symbolic dims the rules use."""
    return {"D": config.hidden_size, "H": config.num_attention_heads, "K": config.head_dim,
            "I": config.intermediate_size, "V": config.vocab_size, "T": config.type_vocab_size,
            "2": 2, "3": 3}


def detect_naming(keys) -> str:
    """'new' (new-impl, ``new.`` prefix) or 'gte' (native, ``gte.`` prefix) from the tensor names."""
    keys = list(keys)
    if any(k.startswith("new.") for k in keys):
        return "new"
    if any(k.startswith("gte.") for k in keys):
        return "gte"
    if any(k.startswith(("embeddings.", "encoder.layer.", "layers.")) for k in keys):
        raise WeightMismatchError(
            "these weights have no 'new.'/'gte.' prefix and no MLM head: it is a bare encoder "
            "(NewModel/GteModel), not a masked-language model; jsplade needs NewForMaskedLM / GteForMaskedLM weights")
    raise WeightMismatchError("cannot recognise the tensor names as GTE MLM weights "
                              f"(first keys: {sorted(keys)[:5]})")
