"""HF state-dict names ⇄ jsplade parameters: one table, used in both directions.

Each ``TensorRule`` says which jsplade parameter (a dotted path with ``{i}`` for the layer index)
is built from which HF tensor(s), and how:

* ``embedding``: copied as is ([rows, D] in both worlds).
* ``vector``:    HF 1-D tensors concatenated, then reshaped to the parameter's dims.
* ``kernel``:    HF ``Linear`` weights ([out, in] each) concatenated along ``out``, transposed to
                 [in, out] and reshaped to ``in_dims + out_dims``. Several HF keys = packing: new-impl's
                 ``qkv_proj`` is one [3D, D] tensor, transformers' native gte has q/k/v separately;
                 ``up_gate_proj`` (up first, gate second) vs native ``up_proj`` + ``gate_proj``.

Symbolic dims: D hidden, H heads, K head dim, I intermediate, V vocab, T type vocab.
Namings: ``"new"`` = new-impl ``NewForMaskedLM`` (the hub checkpoint), ``"gte"`` = transformers'
native ``GteForMaskedLM``. The decoder weight is tied to the word embeddings and never stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from jsplade.backbones.gte_config import GteConfig

NAMINGS = ("new", "gte")
TIED_DECODER_KEY = {"new": "lm_head.decoder.weight", "gte": "lm_head.decoder.weight"}


@dataclass(frozen=True)
class TensorRule:
    param: str
    hf: tuple[str, ...]
    kind: str  # "embedding" | "vector" | "kernel"
    in_dims: tuple[str, ...] = ()
    out_dims: tuple[str, ...] = ()


# --------------------------------------------------------------------------- the tables
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
        TensorRule("embeddings.word.embedding", (prefix + "embeddings.word_embeddings.weight",), "embedding"),
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
                                   (prefix + "embeddings.token_type_embeddings.weight",), "embedding"))
    return rules


def rules_for(config: GteConfig, naming: str = "new") -> list[TensorRule]:
    """Every rule, layer templates expanded for each layer index."""
    if naming not in NAMINGS:
        raise ValueError(f"naming must be one of {NAMINGS}, got {naming!r}")
    template = _new_layer_rules(config) if naming == "new" else _gte_layer_rules(config)
    rules = _outer_rules(config, naming)
    for i in range(config.num_hidden_layers):
        for r in template:
            rules.append(TensorRule(r.param.format(i=i), tuple(k.format(i=i) for k in r.hf),
                                    r.kind, r.in_dims, r.out_dims))
    return rules


# --------------------------------------------------------------------------- shapes
def _dims(config: GteConfig) -> dict[str, int]:
    return {"D": config.hidden_size, "H": config.num_attention_heads, "K": config.head_dim,
            "I": config.intermediate_size, "V": config.vocab_size, "T": config.type_vocab_size,
            "2": 2, "3": 3}


def param_shape(rule: TensorRule, config: GteConfig) -> tuple[int, ...]:
    d = _dims(config)
    if rule.kind == "embedding":
        rows = config.vocab_size if "word" in rule.param else config.type_vocab_size
        return (rows, config.hidden_size)
    return tuple(d[s] for s in rule.in_dims + rule.out_dims)


def hf_shapes(rule: TensorRule, config: GteConfig) -> list[tuple[int, ...]]:
    """Expected shape of each HF tensor of a rule (equal split of the output axis)."""
    d = _dims(config)
    if rule.kind == "embedding":
        return [param_shape(rule, config)]
    out = int(np.prod([d[s] for s in rule.out_dims])) // len(rule.hf)
    if rule.kind == "vector":
        return [(out,)] * len(rule.hf)
    inn = int(np.prod([d[s] for s in rule.in_dims]))
    return [(out, inn)] * len(rule.hf)


# --------------------------------------------------------------------------- conversion
class WeightMismatchError(ValueError):
    """Checkpoint tensors that do not fit the config (missing, unexpected, wrong shape)."""


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


def hf_to_params(tensors: Mapping[str, np.ndarray], config: GteConfig, naming: str | None = None,
                 source: str = "checkpoint") -> dict[str, np.ndarray]:
    """HF state dict → {param path: float32 array}. Strict: every mismatch is reported at once."""
    naming = naming or detect_naming(tensors.keys())
    rules = rules_for(config, naming)
    problems: list[str] = []
    used: set[str] = set()
    params: dict[str, np.ndarray] = {}
    for rule in rules:
        expected = hf_shapes(rule, config)
        parts = []
        for key, shape in zip(rule.hf, expected):
            if key not in tensors:
                problems.append(f"missing tensor {key!r} (expected shape {list(shape)})")
                continue
            used.add(key)
            arr = np.asarray(tensors[key])
            if tuple(arr.shape) != shape:
                problems.append(f"tensor {key!r} has shape {list(arr.shape)}, the config implies {list(shape)}")
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                problems.append(f"tensor {key!r} has dtype {arr.dtype}, expected a float type")
                continue
            parts.append(arr.astype(np.float32))
        if len(parts) != len(rule.hf):
            continue
        params[rule.param] = _to_param(rule, parts, config)
    decoder_key = TIED_DECODER_KEY[naming]
    if decoder_key in tensors:
        used.add(decoder_key)
        word = params.get("embeddings.word.embedding")
        dec = np.asarray(tensors[decoder_key])
        if word is not None and (dec.shape != word.shape or not np.array_equal(dec.astype(np.float32), word)):
            problems.append(f"tensor {decoder_key!r} is not equal to the word embeddings; jsplade requires "
                            "the tied MLM decoder of NewForMaskedLM")
    unexpected = sorted(k for k in tensors if k not in used)
    if unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:8])
        more = f" and {len(unexpected) - 8} more" if len(unexpected) > 8 else ""
        problems.append(f"unexpected tensors not used by this config: {shown}{more}")
    if problems:
        raise WeightMismatchError(f"{source}: weights do not fit the config:\n  - " + "\n  - ".join(problems))
    return params


def params_to_hf(params: Mapping[str, np.ndarray], config: GteConfig, naming: str = "new") -> dict[str, np.ndarray]:
    """{param path: array} → HF state dict (float32, contiguous; the tied decoder weight omitted)."""
    out: dict[str, np.ndarray] = {}
    for rule in rules_for(config, naming):
        if rule.param not in params:
            raise WeightMismatchError(f"parameter {rule.param!r} is missing")
        value = np.asarray(params[rule.param], dtype=np.float32)
        expected = param_shape(rule, config)
        if tuple(value.shape) != expected:
            raise WeightMismatchError(f"parameter {rule.param!r} has shape {list(value.shape)}, "
                                      f"the config implies {list(expected)}")
        for key, part in zip(rule.hf, _from_param(rule, value, config)):
            out[key] = np.ascontiguousarray(part)
    return out


def _to_param(rule: TensorRule, parts: list[np.ndarray], config: GteConfig) -> np.ndarray:
    shape = param_shape(rule, config)
    if rule.kind == "embedding":
        return parts[0]
    if rule.kind == "vector":
        return np.concatenate(parts, axis=0).reshape(shape)
    return np.concatenate(parts, axis=0).T.reshape(shape)


def _from_param(rule: TensorRule, value: np.ndarray, config: GteConfig) -> list[np.ndarray]:
    if rule.kind == "embedding":
        return [value]
    n = len(rule.hf)
    if rule.kind == "vector":
        return np.split(value.reshape(-1), n, axis=0)
    d = _dims(config)
    inn = int(np.prod([d[s] for s in rule.in_dims]))
    full = value.reshape(inn, -1).T  # [out, in]
    return np.split(full, n, axis=0)
