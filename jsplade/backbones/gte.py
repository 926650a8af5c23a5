"""The GTE "new" masked-language model (``NewForMaskedLM``) in Flax NNX.

Forward math: gte_architecture.md §3 (post-LN BERT blocks, packed QKV, rotary attention, GLU MLP with
*up first, gate second*, MLM head with the decoder tied to the word embeddings and its own bias).

Parameter layout (Flax convention, kernels are [in, …out]); the mapping to HF names lives in
``jsplade.backbones.gte_names``::

    embeddings.word.embedding            [V, D]
    embeddings.token_type.embedding      [T, D]            (only if type_vocab_size > 0)
    embeddings.norm.scale / .bias        [D]
    layers.{i}.attention.qkv_kernel      [D, 3, H, K]      (q, k, v; head h owns its K-slice)
    layers.{i}.attention.qkv_bias        [3, H, K]
    layers.{i}.attention.out_kernel      [H, K, D]
    layers.{i}.attention.out_bias        [D]
    layers.{i}.attn_norm.scale / .bias   [D]               (RMSNorm: scale only)
    layers.{i}.mlp.up_gate_kernel        [D, 2, I]         (index 0 = up, 1 = gate; no bias)
    layers.{i}.mlp.down_kernel           [I, D]
    layers.{i}.mlp.down_bias             [D]
    layers.{i}.mlp_norm.scale / .bias    [D]
    head.dense_kernel [D, D], head.dense_bias [D], head.norm.scale / .bias [D], head.decoder_bias [V]

The layers come from ``jsplade.backbones.layers``: the projections (``dense``) and the GLU (``glu``) have
written-out backward passes (the same gradients as autodiff's, laid out so that XLA:CPU needs no transposed
copies). ``GTE`` at the end describes the family for the rest of jsplade (``jsplade.backbones.protocol``).

Dropout is active only when a ``dropout_key`` is passed (training); every site derives its own key
from it, so a step is a pure function of (params, batch, key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from jsplade.backbones import gte_names
from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.layers.attention import attention
from jsplade.backbones.layers.blockwise_attention import SAVE_NAME as BLOCKWISE_SAVE_NAME
from jsplade.backbones.layers.dense import dense
from jsplade.backbones.layers.dropout import dropout
from jsplade.backbones.layers.embedding import Embed
from jsplade.backbones.layers.glu import glu_mlp
from jsplade.backbones.layers.token_blocks import map_token_blocks
from jsplade.backbones.layers.init import normal
from jsplade.backbones.layers.mlm_head import MlmHead, TiedMlmMethods
from jsplade.backbones.layers.norm import Norm
from jsplade.backbones.layers.remat import remat_layers
from jsplade.backbones.layers.rope import apply_rope, rope_tables
from jsplade.backbones.protocol import Backbone


class Embeddings(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        std = config.initializer_range
        self.word = Embed(config.vocab_size, config.hidden_size, rngs=rngs, std=std)
        self.token_type = (
            Embed(config.type_vocab_size, config.hidden_size, rngs=rngs, std=std)
            if config.type_vocab_size > 0 else None
        )
        # The embedding norm is always a LayerNorm, whatever layer_norm_type says.
        self.norm = Norm(config.hidden_size, config.layer_norm_eps, "layer_norm")

    def __call__(self, input_ids_BxL, token_type_ids_BxL=None):
        x_BxLxD = self.word(input_ids_BxL)
        if self.token_type is not None:
            if token_type_ids_BxL is None:
                token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
            x_BxLxD = x_BxLxD + self.token_type(token_type_ids_BxL)
        return self.norm(x_BxLxD)


class Attention(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        d, h, k = config.hidden_size, config.num_attention_heads, config.head_dim
        std = config.initializer_range
        self.qkv_kernel = nnx.Param(normal(rngs, (d, 3, h, k), std))
        self.qkv_bias = nnx.Param(jnp.zeros((3, h, k), jnp.float32))
        self.out_kernel = nnx.Param(normal(rngs, (h, k, d), std))
        self.out_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Mlp(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        d, i = config.hidden_size, config.intermediate_size
        std = config.initializer_range
        self.up_gate_kernel = nnx.Param(normal(rngs, (d, 2, i), std))
        self.down_kernel = nnx.Param(normal(rngs, (i, d), std))
        self.down_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Layer(nnx.Module):
    """One post-LN encoder block."""

    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        self.attention = Attention(config, rngs=rngs)
        self.attn_norm = Norm(config.hidden_size, config.layer_norm_eps, config.layer_norm_type)
        self.mlp = Mlp(config, rngs=rngs)
        self.mlp_norm = Norm(config.hidden_size, config.layer_norm_eps, config.layer_norm_type)


@dataclass(frozen=True)
class _Site:
    """Dropout site ids (folded into the step key)."""

    EMBED = 0
    ATTN_PROBS = 1
    ATTN_OUT = 2
    GLU = 3
    MLP_OUT = 4


class GteForMaskedLM(TiedMlmMethods, nnx.Module):
    """``NewForMaskedLM``: ``model(input_ids, attention_mask) -> logits [B, L, V]`` (float32); implements
    ``jsplade.backbones.protocol.MaskedLM``."""

    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs | None = None,
                 compute: ComputeOptions | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.compute = compute or ComputeOptions()
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.head = MlmHead(config.hidden_size, config.vocab_size, eps=config.layer_norm_eps, act=config.hidden_act,
                            rngs=rngs, std=config.initializer_range)

    # ------------------------------------------------------------------ forward pieces
    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
               segment_ids=None, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Encoder output (``last_hidden_state``) [B, L, D] in the compute dtype.

        ``position_ids`` default to 0 … L−1 for every row (padded-tensor indices, as the reference);
        ``segment_ids`` (packing) make attention block-diagonal; dropout only with ``dropout_key``.
        """
        cfg, opts = self.config, self.compute
        dtype = opts.jnp_dtype
        input_ids_BxL = jnp.asarray(input_ids, jnp.int32)
        batch, length = input_ids_BxL.shape
        attention_mask_BxL = jnp.ones((batch, length), jnp.int32) if attention_mask is None else attention_mask
        key_mask_BxL = jnp.asarray(attention_mask_BxL) != 0
        segment_ids_BxL = segment_ids

        x_BxLxD = self.embeddings(input_ids_BxL, token_type_ids).astype(dtype)
        x_BxLxD = dropout(x_BxLxD, cfg.hidden_dropout_prob, _site_key(dropout_key, -1, _Site.EMBED))

        cos_BxLxK, sin_BxLxK = rope_tables(cfg.rotary, length, position_ids, dtype)  # [1 or B, L, K]
        logn_BxL = None
        if cfg.logn_attention_scale:
            # γ = ln(n)/ln(max_pos) with n the real tokens of the row (of the token's document when packed).
            if segment_ids_BxL is None:
                n_real_BxL = jnp.broadcast_to(jnp.sum(key_mask_BxL, axis=-1, keepdims=True), (batch, length))
            else:
                seg = jnp.asarray(segment_ids_BxL, jnp.int32)
                counts = jax.vmap(lambda m, s: jax.ops.segment_sum(m.astype(jnp.int32), s, num_segments=length + 1))(
                    key_mask_BxL, seg)
                n_real_BxL = jnp.take_along_axis(counts, seg, axis=1)
            logn_BxL = jnp.log(jnp.maximum(n_real_BxL, 1).astype(jnp.float32)) / jnp.float32(math.log(cfg.max_position_embeddings))
            if cfg.logn_attention_clip1:
                logn_BxL = jnp.maximum(logn_BxL, jnp.float32(1.0))

        def run_layer(layer: Layer, x_BxLxD, layer_key):
            return _layer_forward(layer, x_BxLxD, cfg, opts, key_mask_BxL, segment_ids_BxL,
                                  cos_BxLxK, sin_BxLxK, logn_BxL, layer_key)

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


def _layer_forward(layer: Layer, x_BxLxD, cfg: GteConfig, opts: ComputeOptions, key_mask_BxL,
                   segment_ids_BxL, cos_BxLxK, sin_BxLxK, logn_BxL, layer_key):
    dtype = opts.jnp_dtype
    prec = opts.lax_precision
    att = layer.attention

    qkv = dense(x_BxLxD, att.qkv_kernel[...].astype(dtype), precision=prec)
    qkv = qkv + att.qkv_bias[...].astype(dtype)
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q_BxLxHxK = apply_rope(q_BxLxHxK, cos_BxLxK, sin_BxLxK)
    k_BxLxHxK = apply_rope(k_BxLxHxK, cos_BxLxK, sin_BxLxK)
    if logn_BxL is not None:
        q_BxLxHxK = q_BxLxHxK * logn_BxL.astype(dtype)[:, :, None, None]
    o_BxLxHxK = attention(
        q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL,
        segment_ids=segment_ids_BxL, impl=opts.attention,
        dropout_rate=cfg.attention_probs_dropout_prob,
        dropout_key=_site_key(layer_key, 0, _Site.ATTN_PROBS), precision=prec,
    )
    attn_BxLxD = dense(o_BxLxHxK, att.out_kernel[...].astype(dtype), n_in=2, precision=prec)
    attn_BxLxD = attn_BxLxD + att.out_bias[...].astype(dtype)
    attn_BxLxD = dropout(attn_BxLxD, cfg.hidden_dropout_prob, _site_key(layer_key, 0, _Site.ATTN_OUT))
    x_BxLxD = layer.attn_norm(x_BxLxD + attn_BxLxD)

    glu_key = _site_key(layer_key, 0, _Site.GLU)
    chunk = opts.mlp_chunk
    if chunk and x_BxLxD.shape[1] > 2 * chunk and not _glu_dropout(glu_key, cfg):
        mlp_BxLxD = map_token_blocks(lambda x_BxCxD: _mlp(layer.mlp, x_BxCxD, cfg, dtype, prec, None), x_BxLxD, chunk)
    else:
        mlp_BxLxD = _mlp(layer.mlp, x_BxLxD, cfg, dtype, prec, glu_key)
    mlp_BxLxD = dropout(mlp_BxLxD, cfg.hidden_dropout_prob, _site_key(layer_key, 0, _Site.MLP_OUT))
    return layer.mlp_norm(x_BxLxD + mlp_BxLxD)


def _mlp(mlp: Mlp, x_BxLxD, cfg: GteConfig, dtype, prec, glu_key):
    """GLU MLP without its output dropout: down(act(gate) · up) + bias."""
    rate = float(cfg.hidden_dropout_prob) if _glu_dropout(glu_key, cfg) else 0.0
    return glu_mlp(x_BxLxD, mlp.up_gate_kernel[...].astype(dtype), mlp.down_kernel[...].astype(dtype),
                   mlp.down_bias[...].astype(dtype), cfg.hidden_act, prec, glu_key if rate else None, rate)


def _glu_dropout(glu_key, cfg: GteConfig) -> bool:
    """Whether the GLU drops anything (a key and a positive rate); the dropout-free MLP has faster forms."""
    return glu_key is not None and cfg.hidden_dropout_prob > 0.0


GTE = Backbone(
    name="gte", display_name="GTE", model_types=("new", "gte"), config_class=GteConfig, model_class=GteForMaskedLM,
    namings=gte_names.NAMINGS, naming_cards=gte_names.NAMING_CARDS, default_naming=gte_names.DEFAULT_NAMING,
    remote_code_namings=gte_names.REMOTE_CODE_NAMINGS, rules=gte_names.rules_for, dims=gte_names.dims,
    detect_naming=gte_names.detect_naming, tied_decoder=gte_names.TIED_DECODER, logical_axes=gte_names.LOGICAL_AXES,
)
