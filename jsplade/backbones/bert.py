"""The BERT-family masked-language models (BERT, RoBERTa / XLM-RoBERTa, DistilBERT) in Flax NNX.

Forward math, as transformers computes it: embeddings = LayerNorm(word + position [+ token type]); each
post-LN block ``x = LN(x + Attn(x))``, ``x = LN(x + W₂·act(W₁·x + b₁) + b₂)`` with softmax attention over
the real keys (scores scaled by 1/√K); the MLM head ``LN(act(h·W + b))·Eᵀ + bias`` with E the word
embeddings (``jsplade.backbones.layers.mlm_head``). The model types differ only in data
(``jsplade.backbones.bert_config``): RoBERTa's positions are offset by the padding index, DistilBERT has no
token types. HF names: ``jsplade.backbones.bert_names``.

Parameters (Flax layout, kernels [in, …out])::

    embeddings.word.embedding [V, D], embeddings.position.embedding [P, D],
    embeddings.token_type.embedding [T, D] (if T > 0), embeddings.norm.scale / .bias [D]
    layers.{i}.attention.qkv_kernel [D, 3, H, K], .qkv_bias [3, H, K], .out_kernel [H, K, D], .out_bias [D]
    layers.{i}.attn_norm.scale / .bias [D]
    layers.{i}.mlp.up_kernel [D, I], .up_bias [I], .down_kernel [I, D], .down_bias [D]
    layers.{i}.mlp_norm.scale / .bias [D]
    head.dense_kernel [D, D], head.dense_bias [D], head.norm.scale / .bias [D], head.decoder_bias [V]

Packing: ``position_ids`` given with ``segment_ids`` are offsets within each document (0, 1, …), as
``jsplade.splade.packing`` lays them out; for RoBERTa they are shifted past the padding index here, so
that a packed document sees the positions it would see alone (``packed_position_ids``).
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from jsplade.backbones import bert_names
from jsplade.backbones.bert_config import BertConfig
from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.layers.activations import activation
from jsplade.backbones.layers.attention import attention
from jsplade.backbones.layers.blockwise_attention import SAVE_NAME as BLOCKWISE_SAVE_NAME
from jsplade.backbones.layers.dense import dense
from jsplade.backbones.layers.dropout import dropout
from jsplade.backbones.layers.embedding import Embed
from jsplade.backbones.layers.token_blocks import map_token_blocks
from jsplade.backbones.layers.init import normal
from jsplade.backbones.layers.mlm_head import MlmHead, TiedMlmMethods
from jsplade.backbones.layers.norm import Norm
from jsplade.backbones.layers.remat import remat_layers
from jsplade.backbones.protocol import Backbone

# Dropout sites (folded into each layer's key).
_EMBED, _ATTN_PROBS, _ATTN_OUT, _MLP_OUT = 0, 1, 2, 3


class Embeddings(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        std = config.initializer_range
        self.word = Embed(config.vocab_size, config.hidden_size, rngs=rngs, std=std)
        self.position = Embed(config.max_position_embeddings, config.hidden_size, rngs=rngs, std=std)
        self.token_type = (Embed(config.type_vocab_size, config.hidden_size, rngs=rngs, std=std)
                           if config.type_vocab_size > 0 else None)
        self.norm = Norm(config.hidden_size, config.layer_norm_eps, "layer_norm")

    def __call__(self, input_ids_BxL, position_ids_BxL, token_type_ids_BxL=None):
        x_BxLxD = self.word(input_ids_BxL) + self.position(position_ids_BxL)
        if self.token_type is not None:
            if token_type_ids_BxL is None:
                token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
            x_BxLxD = x_BxLxD + self.token_type(jnp.asarray(token_type_ids_BxL, jnp.int32))
        return self.norm(x_BxLxD)


class Attention(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d, h, k = config.hidden_size, config.num_attention_heads, config.head_dim
        std = config.initializer_range
        self.qkv_kernel = nnx.Param(normal(rngs, (d, 3, h, k), std))
        self.qkv_bias = nnx.Param(jnp.zeros((3, h, k), jnp.float32))
        self.out_kernel = nnx.Param(normal(rngs, (h, k, d), std))
        self.out_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Mlp(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        d, i = config.hidden_size, config.intermediate_size
        std = config.initializer_range
        self.up_kernel = nnx.Param(normal(rngs, (d, i), std))
        self.up_bias = nnx.Param(jnp.zeros((i,), jnp.float32))
        self.down_kernel = nnx.Param(normal(rngs, (i, d), std))
        self.down_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Layer(nnx.Module):
    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
        self.attention = Attention(config, rngs=rngs)
        self.attn_norm = Norm(config.hidden_size, config.layer_norm_eps, "layer_norm")
        self.mlp = Mlp(config, rngs=rngs)
        self.mlp_norm = Norm(config.hidden_size, config.layer_norm_eps, "layer_norm")


class BertForMaskedLM(TiedMlmMethods, nnx.Module):
    """``model(input_ids, attention_mask, token_type_ids, position_ids) -> logits [B, L, V]`` (float32) for
    every BERT-family model type; implements ``jsplade.backbones.protocol.MaskedLM``."""

    def __init__(self, config: BertConfig, *, rngs: nnx.Rngs | None = None, compute: ComputeOptions | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.compute = compute or ComputeOptions()
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.head = MlmHead(config.hidden_size, config.vocab_size, eps=config.layer_norm_eps, act=config.head_act,
                            rngs=rngs, std=config.initializer_range)

    # ------------------------------------------------------------------ positions
    def default_position_ids(self, input_ids_BxL) -> jnp.ndarray:
        """transformers' positions when none are given: 0 … L−1 (BERT, DistilBERT); for RoBERTa the running
        count of non-padding tokens plus the padding index (padding tokens at the padding index)."""
        batch, length = input_ids_BxL.shape
        if not self.config.offset_positions:
            return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        pad = self.config.pad_token_id
        real = (input_ids_BxL != pad).astype(jnp.int32)
        return jnp.cumsum(real, axis=1) * real + pad

    def packed_position_ids(self, offsets_BxL) -> jnp.ndarray:
        """Position ids of packed documents from their offsets 0, 1, … within each document."""
        offsets_BxL = jnp.asarray(offsets_BxL, jnp.int32)
        return offsets_BxL + (self.config.pad_token_id + 1) if self.config.offset_positions else offsets_BxL

    # ------------------------------------------------------------------ forward pieces
    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
               segment_ids=None, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Encoder output (``last_hidden_state``) [B, L, D] in the compute dtype. With ``segment_ids``
        (packing), ``position_ids`` are offsets within each document (see the module docstring)."""
        cfg, opts = self.config, self.compute
        dtype = opts.jnp_dtype
        input_ids_BxL = jnp.asarray(input_ids, jnp.int32)
        batch, length = input_ids_BxL.shape
        attention_mask_BxL = jnp.ones((batch, length), jnp.int32) if attention_mask is None else attention_mask
        key_mask_BxL = jnp.asarray(attention_mask_BxL) != 0
        if position_ids is None:
            position_ids_BxL = self.default_position_ids(input_ids_BxL)
        elif segment_ids is not None:
            position_ids_BxL = self.packed_position_ids(position_ids)
        else:
            position_ids_BxL = jnp.broadcast_to(jnp.asarray(position_ids, jnp.int32), (batch, length))

        x_BxLxD = self.embeddings(input_ids_BxL, position_ids_BxL, token_type_ids).astype(dtype)
        x_BxLxD = dropout(x_BxLxD, cfg.hidden_dropout_prob, _site_key(dropout_key, -1, _EMBED))

        def run_layer(layer: Layer, x_BxLxD, layer_key):
            return _layer_forward(layer, x_BxLxD, cfg, opts, key_mask_BxL, segment_ids, layer_key)

        layer_keys = [None if dropout_key is None else jax.random.fold_in(dropout_key, i + 1)
                      for i in range(len(self.layers))]
        if opts.remat:
            saved = (BLOCKWISE_SAVE_NAME,) if opts.remat_keeps_attention else ()
            return remat_layers(list(self.layers), x_BxLxD, run_layer, layer_keys, saved)
        for layer, layer_key in zip(self.layers, layer_keys):
            x_BxLxD = run_layer(layer, x_BxLxD, layer_key)
        return x_BxLxD



def _site_key(key, layer: int, site: int):
    if key is None:
        return None
    return jax.random.fold_in(jax.random.fold_in(key, layer + 1000), site)


def _layer_forward(layer: Layer, x_BxLxD, cfg: BertConfig, opts: ComputeOptions, key_mask_BxL, segment_ids_BxL,
                   layer_key):
    dtype, prec = opts.jnp_dtype, opts.lax_precision
    att = layer.attention
    qkv = dense(x_BxLxD, att.qkv_kernel[...].astype(dtype), precision=prec) + att.qkv_bias[...].astype(dtype)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    o_BxLxHxK = attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL, segment_ids=segment_ids_BxL,
                          impl=opts.attention, dropout_rate=cfg.attention_probs_dropout_prob,
                          dropout_key=_site_key(layer_key, 0, _ATTN_PROBS), precision=prec)
    attn_BxLxD = dense(o_BxLxHxK, att.out_kernel[...].astype(dtype), n_in=2, precision=prec)
    attn_BxLxD = attn_BxLxD + att.out_bias[...].astype(dtype)
    attn_BxLxD = dropout(attn_BxLxD, cfg.hidden_dropout_prob, _site_key(layer_key, 0, _ATTN_OUT))
    x_BxLxD = layer.attn_norm(x_BxLxD + attn_BxLxD)

    def mlp(x_BxCxD):
        up = dense(x_BxCxD, layer.mlp.up_kernel[...].astype(dtype), precision=prec) + layer.mlp.up_bias[...].astype(dtype)
        down = dense(activation(cfg.hidden_act)(up), layer.mlp.down_kernel[...].astype(dtype), precision=prec)
        return down + layer.mlp.down_bias[...].astype(dtype)

    chunk = opts.mlp_chunk
    if chunk and x_BxLxD.shape[1] > 2 * chunk:
        mlp_BxLxD = map_token_blocks(mlp, x_BxLxD, chunk)
    else:
        mlp_BxLxD = mlp(x_BxLxD)
    mlp_BxLxD = dropout(mlp_BxLxD, cfg.hidden_dropout_prob, _site_key(layer_key, 0, _MLP_OUT))
    return layer.mlp_norm(x_BxLxD + mlp_BxLxD)


BERT = Backbone(
    name="bert", display_name="BERT family", model_types=("bert", "roberta", "xlm-roberta", "distilbert"),
    config_class=BertConfig, model_class=BertForMaskedLM, namings=bert_names.NAMINGS,
    naming_cards=bert_names.NAMING_CARDS, default_naming=bert_names.DEFAULT_NAMING,
    remote_code_namings=bert_names.REMOTE_CODE_NAMINGS, rules=bert_names.rules_for, dims=bert_names.dims,
    detect_naming=bert_names.detect_naming, tied_decoder=bert_names.TIED_DECODER,
    logical_axes=bert_names.LOGICAL_AXES, config_naming=lambda config: config.naming, ignored=bert_names.ignored,
)
