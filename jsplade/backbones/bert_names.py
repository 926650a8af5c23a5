"""The BERT family's weight names: HF state-dict names ⇄ jsplade parameter paths, as data.

Namings (one per model type; the config's ``naming`` says which):

* ``"bert"``       — ``BertForMaskedLM``: ``bert.`` encoder, ``cls.predictions`` head.
* ``"roberta"``    — ``RobertaForMaskedLM`` / ``XLMRobertaForMaskedLM``: ``roberta.`` encoder, ``lm_head``.
* ``"distilbert"`` — ``DistilBertForMaskedLM``: ``distilbert.`` encoder (``q_lin``, ``ffn.lin1``, …),
  ``vocab_transform`` / ``vocab_layer_norm`` / ``vocab_projector`` head.

The decoder weight is tied to the word embeddings and not stored by transformers; a copy stored anyway
must equal them. Symbolic dims: D hidden, H heads, K head dim, I feed-forward, V vocab, P positions,
T token types. ``LOGICAL_AXES`` names each parameter's axes for the sharding rules.
"""

from __future__ import annotations

from jsplade.backbones.bert_config import BertConfig
from jsplade.backbones.weight_map import TensorRule, WeightMismatchError

NAMINGS = {"bert": "transformers BertForMaskedLM", "roberta": "transformers (XLM-)RobertaForMaskedLM",
           "distilbert": "transformers DistilBertForMaskedLM"}
NAMING_CARDS = {"bert": "transformers' `BertForMaskedLM` (`model_type` bert)",
                "roberta": "transformers' `RobertaForMaskedLM` / `XLMRobertaForMaskedLM`",
                "distilbert": "transformers' `DistilBertForMaskedLM` (`model_type` distilbert)"}
DEFAULT_NAMING = "bert"
REMOTE_CODE_NAMINGS: tuple[str, ...] = ()
TIED_DECODER = {"bert": ("cls.predictions.decoder.weight", "embeddings.word.embedding"),
                "roberta": ("lm_head.decoder.weight", "embeddings.word.embedding"),
                "distilbert": ("vocab_projector.weight", "embeddings.word.embedding")}
# Tensors a checkpoint may hold beside the MLM (pre-training heads, buffers, tied copies of the decoder bias):
# naming -> (HF key prefix or exact key) that loading ignores.
IGNORED = {"bert": ("bert.pooler.", "cls.seq_relationship.", "bert.embeddings.position_ids",
                    "cls.predictions.decoder.bias"),
           "roberta": ("roberta.pooler.", "roberta.embeddings.position_ids", "lm_head.decoder.bias"),
           "distilbert": ("distilbert.embeddings.position_ids",)}

LOGICAL_AXES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"embeddings\.word\.embedding$", ("vocab", "embed")),
    (r"embeddings\.(position|token_type)\.embedding$", (None, "embed")),
    (r"attention\.qkv_kernel$", ("embed", None, "heads", "kv")),
    (r"attention\.qkv_bias$", (None, "heads", "kv")),
    (r"attention\.out_kernel$", ("heads", "kv", "embed")),
    (r"mlp\.up_kernel$", ("embed", "mlp")),
    (r"mlp\.up_bias$", ("mlp",)),
    (r"mlp\.down_kernel$", ("mlp", "embed")),
    (r"head\.dense_kernel$", ("embed", "embed_out")),
    (r"head\.decoder_bias$", ("vocab",)),
    (r"(norm\.(scale|bias)|_bias)$", ("norm",)),
)


def _layer_names(naming: str) -> dict[str, tuple[str, ...]]:
    """Our per-layer parameter → HF key template(s) (``{i}`` = layer index)."""
    if naming == "distilbert":
        p = "distilbert.transformer.layer.{i}."
        return {
            "attention.qkv_kernel": tuple(p + f"attention.{n}_lin.weight" for n in "qkv"),
            "attention.qkv_bias": tuple(p + f"attention.{n}_lin.bias" for n in "qkv"),
            "attention.out_kernel": (p + "attention.out_lin.weight",),
            "attention.out_bias": (p + "attention.out_lin.bias",),
            "attn_norm.scale": (p + "sa_layer_norm.weight",), "attn_norm.bias": (p + "sa_layer_norm.bias",),
            "mlp.up_kernel": (p + "ffn.lin1.weight",), "mlp.up_bias": (p + "ffn.lin1.bias",),
            "mlp.down_kernel": (p + "ffn.lin2.weight",), "mlp.down_bias": (p + "ffn.lin2.bias",),
            "mlp_norm.scale": (p + "output_layer_norm.weight",), "mlp_norm.bias": (p + "output_layer_norm.bias",),
        }
    p = f"{naming}.encoder.layer.{{i}}."
    return {
        "attention.qkv_kernel": tuple(p + f"attention.self.{n}.weight" for n in ("query", "key", "value")),
        "attention.qkv_bias": tuple(p + f"attention.self.{n}.bias" for n in ("query", "key", "value")),
        "attention.out_kernel": (p + "attention.output.dense.weight",),
        "attention.out_bias": (p + "attention.output.dense.bias",),
        "attn_norm.scale": (p + "attention.output.LayerNorm.weight",),
        "attn_norm.bias": (p + "attention.output.LayerNorm.bias",),
        "mlp.up_kernel": (p + "intermediate.dense.weight",), "mlp.up_bias": (p + "intermediate.dense.bias",),
        "mlp.down_kernel": (p + "output.dense.weight",), "mlp.down_bias": (p + "output.dense.bias",),
        "mlp_norm.scale": (p + "output.LayerNorm.weight",), "mlp_norm.bias": (p + "output.LayerNorm.bias",),
    }


# Our per-layer parameter → (kind, in dims, out dims).
_LAYER_SHAPES = {
    "attention.qkv_kernel": ("kernel", ("D",), ("3", "H", "K")),
    "attention.qkv_bias": ("vector", (), ("3", "H", "K")),
    "attention.out_kernel": ("kernel", ("H", "K"), ("D",)),
    "attention.out_bias": ("vector", (), ("D",)),
    "attn_norm.scale": ("vector", (), ("D",)), "attn_norm.bias": ("vector", (), ("D",)),
    "mlp.up_kernel": ("kernel", ("D",), ("I",)), "mlp.up_bias": ("vector", (), ("I",)),
    "mlp.down_kernel": ("kernel", ("I",), ("D",)), "mlp.down_bias": ("vector", (), ("D",)),
    "mlp_norm.scale": ("vector", (), ("D",)), "mlp_norm.bias": ("vector", (), ("D",)),
}


def _outer_names(naming: str) -> dict[str, tuple[str, ...]]:
    e = f"{naming}.embeddings."
    names = {"embeddings.word.embedding": (e + "word_embeddings.weight",),
             "embeddings.position.embedding": (e + "position_embeddings.weight",),
             "embeddings.token_type.embedding": (e + "token_type_embeddings.weight",),
             "embeddings.norm.scale": (e + "LayerNorm.weight",), "embeddings.norm.bias": (e + "LayerNorm.bias",)}
    if naming == "bert":
        h = "cls.predictions."
        names.update({"head.dense_kernel": (h + "transform.dense.weight",),
                      "head.dense_bias": (h + "transform.dense.bias",),
                      "head.norm.scale": (h + "transform.LayerNorm.weight",),
                      "head.norm.bias": (h + "transform.LayerNorm.bias",), "head.decoder_bias": (h + "bias",)})
    elif naming == "roberta":
        names.update({"head.dense_kernel": ("lm_head.dense.weight",), "head.dense_bias": ("lm_head.dense.bias",),
                      "head.norm.scale": ("lm_head.layer_norm.weight",),
                      "head.norm.bias": ("lm_head.layer_norm.bias",), "head.decoder_bias": ("lm_head.bias",)})
    else:
        names.update({"head.dense_kernel": ("vocab_transform.weight",), "head.dense_bias": ("vocab_transform.bias",),
                      "head.norm.scale": ("vocab_layer_norm.weight",), "head.norm.bias": ("vocab_layer_norm.bias",),
                      "head.decoder_bias": ("vocab_projector.bias",)})
    return names


_OUTER_SHAPES = {
    "embeddings.word.embedding": ("embedding", ("V",), ("D",)),
    "embeddings.position.embedding": ("embedding", ("P",), ("D",)),
    "embeddings.token_type.embedding": ("embedding", ("T",), ("D",)),
    "embeddings.norm.scale": ("vector", (), ("D",)), "embeddings.norm.bias": ("vector", (), ("D",)),
    "head.dense_kernel": ("kernel", ("D",), ("D",)), "head.dense_bias": ("vector", (), ("D",)),
    "head.norm.scale": ("vector", (), ("D",)), "head.norm.bias": ("vector", (), ("D",)),
    "head.decoder_bias": ("vector", (), ("V",)),
}


def rules_for(config: BertConfig, naming: str | None = None) -> list[TensorRule]:
    """Every rule of ``config`` in ``naming`` (default and only choice: the config's own), layers expanded."""
    naming = config.naming if naming is None else naming
    if naming != config.naming:
        raise ValueError(f"naming must be {config.naming!r} for a {config.model_type} config, got {naming!r}")
    rules = []
    for param, hf in _outer_names(naming).items():
        if param == "embeddings.token_type.embedding" and config.type_vocab_size == 0:
            continue
        kind, in_dims, out_dims = _OUTER_SHAPES[param]
        rules.append(TensorRule(param, hf, kind, in_dims, out_dims))
    for i in range(config.num_hidden_layers):
        for param, hf in _layer_names(naming).items():
            kind, in_dims, out_dims = _LAYER_SHAPES[param]
            rules.append(TensorRule(f"layers.{i}.{param}", tuple(k.format(i=i) for k in hf), kind, in_dims, out_dims))
    return rules


def dims(config: BertConfig) -> dict[str, int]:
    return {"D": config.hidden_size, "H": config.num_attention_heads, "K": config.head_dim,
            "I": config.intermediate_size, "V": config.vocab_size, "P": config.max_position_embeddings,
            "T": config.type_vocab_size, "3": 3}


def detect_naming(keys) -> str:
    """The naming of a state dict, from its prefixes."""
    keys = list(keys)
    for naming in ("distilbert", "roberta", "bert"):
        if any(k.startswith(naming + ".") for k in keys):
            if naming != "distilbert" and not any(k.startswith(("cls.", "lm_head.")) for k in keys):
                raise WeightMismatchError(f"these weights have no MLM head (no 'cls.'/'lm_head.' tensors): a bare "
                                          f"{naming} encoder, not a masked-language model")
            return naming
    raise WeightMismatchError(f"cannot recognise the tensor names as BERT-family MLM weights "
                              f"(first keys: {sorted(keys)[:5]})")


def ignored(naming: str, key: str) -> bool:
    """Whether loading skips ``key`` (a pre-training head, a buffer, a tied copy of the decoder bias)."""
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED[naming])
