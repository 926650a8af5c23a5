"""The GTE "new" masked-language model (``NewForMaskedLM``) in Flax NNX.

Forward math: gte_architecture.md §3 (post-LN BERT blocks, packed QKV, rotary attention, GLU MLP with
*up first, gate second*, MLM head with the decoder tied to the word embeddings and its own bias).

Parameter layout (Flax convention, kernels are [in, …out]); the mapping to HF names lives in
``jsplade.backbones.weight_map``::

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

The projections run through ``jsplade.backbones.layers.dense`` and the GLU through ``gated_unit``: both have written-out
backward passes (the same gradients as autodiff's, laid out so that XLA:CPU needs no transposed copies).

Dropout is active only when a ``dropout_key`` is passed (training); every site derives its own key
from it, so a step is a pure function of (params, batch, key).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jsplade.backbones.layers.attention import attention
from jsplade.backbones.layers.blockwise_attention import SAVE_NAME as BLOCKWISE_SAVE_NAME
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.layers.dense import dense
from jsplade.backbones.layers.dropout import dropout
from jsplade.backbones.layers.rope import apply_rope, rope_tables

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "default": None}


@dataclass(frozen=True)
class ComputeOptions:
    """How the forward runs (not part of the checkpoint).

    dtype:      activation/matmul dtype; parameters stay float32 ("master weights"). Softmax and
                norms accumulate in float32 either way.
    attention:  "auto" | "xla" | "chunked" (see jsplade.backbones.layers.attention).
    remat:      rematerialise each encoder layer in the backward pass (memory for compute).
    remat_keeps_attention: with ``remat``, also keep each layer's blockwise-attention output and softmax
                statistics (one [B, L, D] tensor and two [B, H, L] ones per layer, in the compute dtype /
                float32), so the backward pass recomputes the layer without its attention, the costliest
                part of a long document's forward (8192 tokens, 2-core CPU: about 1.3 s of a layer's 2.2 s).
                Applies where the blockwise implementation runs; False: keep only each layer's input.
    precision:  float32 matmul precision: "highest" (exact float32, default; no TF32 on GPUs) or "default".
    head:       "fused" (default): the tiled SPLADE head of ``jsplade.splade.fused_head`` — the [B, L, V] logits
                never exist, forward or backward, and it is faster; "plain": full logits (reference path).
                Same values and gradients either way.
    head_chunk: tokens per block of the fused head (None: automatic).
    vocab_tile: vocabulary entries per block of the fused head (None: per backend, see
                ``jsplade.splade.fused_head.default_vocab_tile``).
    mlp_chunk:  inputs longer than twice this many tokens run each layer's MLP in blocks of this many
                tokens (a loop), so its [B, L, 2·I] intermediates exist one block at a time: the largest
                activations of a long document (at 8192 tokens 96–192 MB each). Only without dropout
                (inference, dropout-free training); None: never. Same values either way (the MLP is per token).
    """

    dtype: str = "float32"
    attention: str = "auto"
    remat: bool = False
    remat_keeps_attention: bool = True
    precision: str = "highest"
    head: str = "fused"
    head_chunk: int | None = None
    vocab_tile: int | None = None
    mlp_chunk: int | None = 1024

    def __post_init__(self):
        if self.dtype not in _DTYPES:
            raise ValueError(f"ComputeOptions.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
        if self.head not in ("fused", "plain"):
            raise ValueError(f"ComputeOptions.head must be 'fused' or 'plain', got {self.head!r}")
        if self.mlp_chunk is not None and (isinstance(self.mlp_chunk, bool) or not isinstance(self.mlp_chunk, int)
                                           or self.mlp_chunk < 1):
            raise ValueError(f"ComputeOptions.mlp_chunk must be a positive int or None, got {self.mlp_chunk!r}")
        if self.precision not in _PRECISIONS:
            raise ValueError(f"ComputeOptions.precision must be one of {sorted(_PRECISIONS)}, got {self.precision!r}")

    @property
    def jnp_dtype(self):
        return _DTYPES[self.dtype]

    @property
    def lax_precision(self):
        return _PRECISIONS[self.precision] if self.dtype == "float32" else None


def activation(name: str):
    """HF ``hidden_act`` → function ("gelu" is the exact erf GELU)."""
    if name == "gelu":
        return gelu_erf
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    if name in ("silu", "swish"):
        return jax.nn.silu
    raise ValueError(f"unsupported activation {name!r}")


def gelu_erf(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU written as PyTorch writes it, x · ½(1 + erf(x/√2)).

    ``jax.nn.gelu(approximate=False)`` computes the same function through erfc, which XLA:CPU expands
    with an exponential: the GLU's activation forward and backward took 76 ms per layer at 16 × 256
    tokens against 46 ms in this form; the two agree within 1.2e-6 absolute in float32.
    """
    half = jnp.asarray(0.5, x.dtype)
    return x * (half + half * jax.lax.erf(x * jnp.asarray(1 / math.sqrt(2), x.dtype)))


class Norm(nnx.Module):
    """LayerNorm (two-pass biased variance) or RMSNorm, accumulated in float32."""

    def __init__(self, dim: int, eps: float, kind: str = "layer_norm"):
        self.eps = float(eps)
        self.kind = kind
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        if kind == "layer_norm":
            self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        if self.kind == "layer_norm":
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            centered = x32 - mean
            var = jnp.mean(centered * centered, axis=-1, keepdims=True)
            y = centered * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
            return y.astype(x.dtype)
        # RMSNorm as the reference: normalise in float32, cast back, then multiply by the weight.
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * y


class Embed(nnx.Module):
    def __init__(self, rows: int, dim: int, *, rngs: nnx.Rngs, std: float):
        self.embedding = nnx.Param(std * jax.random.normal(rngs.params(), (rows, dim), jnp.float32))

    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
        return jnp.take(self.embedding[...], ids, axis=0)


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


def _normal(rngs: nnx.Rngs, shape, std):
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)


class Attention(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        d, h, k = config.hidden_size, config.num_attention_heads, config.head_dim
        std = config.initializer_range
        self.qkv_kernel = nnx.Param(_normal(rngs, (d, 3, h, k), std))
        self.qkv_bias = nnx.Param(jnp.zeros((3, h, k), jnp.float32))
        self.out_kernel = nnx.Param(_normal(rngs, (h, k, d), std))
        self.out_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Mlp(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        d, i = config.hidden_size, config.intermediate_size
        std = config.initializer_range
        self.up_gate_kernel = nnx.Param(_normal(rngs, (d, 2, i), std))
        self.down_kernel = nnx.Param(_normal(rngs, (i, d), std))
        self.down_bias = nnx.Param(jnp.zeros((d,), jnp.float32))


class Layer(nnx.Module):
    """One post-LN encoder block."""

    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        self.attention = Attention(config, rngs=rngs)
        self.attn_norm = Norm(config.hidden_size, config.layer_norm_eps, config.layer_norm_type)
        self.mlp = Mlp(config, rngs=rngs)
        self.mlp_norm = Norm(config.hidden_size, config.layer_norm_eps, config.layer_norm_type)


class MlmHead(nnx.Module):
    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs):
        d = config.hidden_size
        self.dense_kernel = nnx.Param(_normal(rngs, (d, d), config.initializer_range))
        self.dense_bias = nnx.Param(jnp.zeros((d,), jnp.float32))
        # The head norm is always a LayerNorm.
        self.norm = Norm(d, config.layer_norm_eps, "layer_norm")
        self.decoder_bias = nnx.Param(jnp.zeros((config.vocab_size,), jnp.float32))


@dataclass(frozen=True)
class _Site:
    """Dropout site ids (folded into the step key)."""

    EMBED = 0
    ATTN_PROBS = 1
    ATTN_OUT = 2
    GLU = 3
    MLP_OUT = 4


class GteForMaskedLM(nnx.Module):
    """``NewForMaskedLM``: ``model(input_ids, attention_mask) -> logits [B, L, V]`` (float32)."""

    def __init__(self, config: GteConfig, *, rngs: nnx.Rngs | None = None,
                 compute: ComputeOptions | None = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        self.config = config
        self.compute = compute or ComputeOptions()
        self.embeddings = Embeddings(config, rngs=rngs)
        self.layers = nnx.List([Layer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
        self.head = MlmHead(config, rngs=rngs)

    # ------------------------------------------------------------------ options
    def with_compute(self, **changes) -> GteForMaskedLM:
        """Switch compute options in place (dtype, attention impl, remat, precision); returns self."""
        self.compute = dataclasses.replace(self.compute, **changes)
        return self

    # ------------------------------------------------------------------ forward pieces
    def encode(
        self,
        input_ids_BxL: jnp.ndarray,
        attention_mask_BxL: jnp.ndarray | None = None,
        token_type_ids_BxL: jnp.ndarray | None = None,
        *,
        position_ids_BxL: jnp.ndarray | None = None,
        segment_ids_BxL: jnp.ndarray | None = None,
        dropout_key: jax.Array | None = None,
    ) -> jnp.ndarray:
        """Encoder output (``last_hidden_state``) [B, L, D] in the compute dtype.

        ``position_ids`` default to 0 … L−1 for every row (padded-tensor indices, as the reference);
        ``segment_ids`` (packing) make attention block-diagonal; dropout only with ``dropout_key``.
        """
        cfg, opts = self.config, self.compute
        dtype = opts.jnp_dtype
        input_ids_BxL = jnp.asarray(input_ids_BxL, jnp.int32)
        batch, length = input_ids_BxL.shape
        if attention_mask_BxL is None:
            attention_mask_BxL = jnp.ones((batch, length), jnp.int32)
        key_mask_BxL = jnp.asarray(attention_mask_BxL) != 0

        x_BxLxD = self.embeddings(input_ids_BxL, token_type_ids_BxL).astype(dtype)
        x_BxLxD = dropout(x_BxLxD, cfg.hidden_dropout_prob, _site_key(dropout_key, -1, _Site.EMBED))

        cos_BxLxK, sin_BxLxK = rope_tables(cfg, length, position_ids_BxL, dtype)  # [1 or B, L, K]
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
            return _remat_layers(list(self.layers), x_BxLxD, run_layer, layer_keys,
                                 opts.remat_keeps_attention)
        for layer, layer_key in zip(self.layers, layer_keys):
            x_BxLxD = run_layer(layer, x_BxLxD, layer_key)
        return x_BxLxD

    def head_features(self, hidden_BxLxD: jnp.ndarray) -> jnp.ndarray:
        """MLM head transform before the vocabulary projection: LN(act(H W + b)) [B, L, D]."""
        opts = self.compute
        dtype = opts.jnp_dtype
        h = self.head
        t = dense(hidden_BxLxD.astype(dtype), h.dense_kernel[...].astype(dtype), precision=opts.lax_precision)
        t = t + h.dense_bias[...].astype(dtype)
        t = activation(self.config.hidden_act)(t)
        return h.norm(t)

    def decoder_weight(self) -> jnp.ndarray:
        """The tied decoder weight [V, D] (= the word-embedding matrix)."""
        return self.embeddings.word.embedding[...]

    def project(self, features_BxLxD: jnp.ndarray) -> jnp.ndarray:
        """Vocabulary logits [B, L, V] (float32) from head features."""
        opts = self.compute
        dtype = opts.jnp_dtype
        logits = jnp.einsum("bld,vd->blv", features_BxLxD.astype(dtype), self.decoder_weight().astype(dtype),
                            precision=opts.lax_precision, preferred_element_type=jnp.float32)
        return logits + self.head.decoder_bias[...]

    def __call__(self, input_ids_BxL, attention_mask_BxL=None, token_type_ids_BxL=None, *,
                 position_ids_BxL=None, segment_ids_BxL=None, dropout_key=None) -> jnp.ndarray:
        hidden_BxLxD = self.encode(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL,
                                   position_ids_BxL=position_ids_BxL, segment_ids_BxL=segment_ids_BxL,
                                   dropout_key=dropout_key)
        return self.project(self.head_features(hidden_BxLxD))


def _site_key(key, layer: int, site: int):
    if key is None:
        return None
    return jax.random.fold_in(jax.random.fold_in(key, layer + 1000), site)


def _remat_layers(layers: list[Layer], x_BxLxD, run_layer, layer_keys, keep_attention: bool):
    """Run the encoder layers with per-layer rematerialisation, as a ``lax.scan`` over their stacked weights.

    The layer inputs are kept for the backward pass (and, with ``keep_attention``, what the blockwise
    attention's backward needs: its output and softmax statistics); the rest of each layer's activations
    are recomputed there.
    A scan (not a Python loop of ``jax.checkpoint`` calls) because XLA:CPU schedules unrolled checkpointed
    layers as if nothing were rematerialised (measured: identical temporary memory with and without); a
    loop body is recomputed one iteration at a time on every backend. The parameter layout (one module per
    layer) is unchanged: the stacking happens inside the traced function and its gradient unstacks.
    """
    split = [nnx.split(layer) for layer in layers]
    graphdef, states = split[0][0], [state for _, state in split]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    keys = None if layer_keys[0] is None else jnp.stack(layer_keys)

    policy = jax.checkpoint_policies.save_only_these_names(BLOCKWISE_SAVE_NAME) if keep_attention else None

    @functools.partial(jax.checkpoint, prevent_cse=False, policy=policy)
    def body(x, slice_):
        state, key = slice_
        return run_layer(nnx.merge(graphdef, state), x, key), None

    x_BxLxD, _ = jax.lax.scan(body, x_BxLxD, (stacked, keys))
    return x_BxLxD


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
        segment_ids_BxL=segment_ids_BxL, impl=opts.attention,
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
        mlp_BxLxD = _mlp_in_blocks(layer.mlp, x_BxLxD, cfg, dtype, prec, chunk)
    else:
        mlp_BxLxD = _mlp(layer.mlp, x_BxLxD, cfg, dtype, prec, glu_key)
    mlp_BxLxD = dropout(mlp_BxLxD, cfg.hidden_dropout_prob, _site_key(layer_key, 0, _Site.MLP_OUT))
    return layer.mlp_norm(x_BxLxD + mlp_BxLxD)


def _mlp(mlp: "Mlp", x_BxLxD, cfg: GteConfig, dtype, prec, glu_key):
    """GLU MLP without its output dropout: down(act(gate) · up) + bias."""
    kernels = (mlp.up_gate_kernel[...].astype(dtype), mlp.down_kernel[...].astype(dtype),
               mlp.down_bias[...].astype(dtype))
    if not _glu_dropout(glu_key, cfg):
        return _glu_mlp(x_BxLxD, *kernels, cfg.hidden_act, prec)
    return _glu_mlp_whole(x_BxLxD, *kernels, cfg.hidden_act, prec, glu_key, float(cfg.hidden_dropout_prob))


def _glu_dropout(glu_key, cfg: GteConfig) -> bool:
    """Whether the GLU drops anything (a key and a positive rate); the dropout-free MLP has faster forms."""
    return glu_key is not None and cfg.hidden_dropout_prob > 0.0


def _glu_mlp_whole(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act: str, prec, glu_key=None, rate=0.0):
    ug_BxLx2xI = dense(x_BxLxD, up_gate_Dx2xI, precision=prec)
    glu_BxLxI = gated_unit(ug_BxLx2xI, glu_key, act, rate)
    return dense(glu_BxLxI, down_IxD, precision=prec) + down_bias_D


# Columns of the up/gate projection per block in the encoding path on CPUs (see ``_glu_mlp``).
MLP_COLUMN_BLOCK = 768


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _glu_mlp(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act: str, prec):
    """The dropout-free GLU MLP. Where nothing is differentiated (encoding) on a CPU, the up/gate
    projection runs in blocks of ``MLP_COLUMN_BLOCK`` intermediate columns, each block's GLU applied to
    it at once, and the down projection takes the joined result: XLA:CPU's float32 kernel runs the
    [tokens, 768] · [768, 2·768] products faster than one [tokens, 768] · [768, 6144] product (one v3-gte
    layer at 32 × 176 tokens on the 2-core CPU: 436 instead of 484 ms). Same values (each output column
    is the same dot product). Differentiated, it is the whole-matrix form (the blocked form's backward
    was slower) and its gradients."""
    intermediate = up_gate_Dx2xI.shape[-1]
    if jax.default_backend() != "cpu" or intermediate <= MLP_COLUMN_BLOCK:
        return _glu_mlp_whole(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act, prec)
    blocks = [gated_unit(dense(x_BxLxD, up_gate_Dx2xI[:, :, i:i + MLP_COLUMN_BLOCK], precision=prec), None, act, 0.0)
              for i in range(0, intermediate, MLP_COLUMN_BLOCK)]
    return dense(jnp.concatenate(blocks, axis=-1), down_IxD, precision=prec) + down_bias_D


def _glu_mlp_fwd(x_BxLxD, up_gate_Dx2xI, down_IxD, down_bias_D, act, prec):
    return jax.vjp(functools.partial(_glu_mlp_whole, act=act, prec=prec), x_BxLxD, up_gate_Dx2xI, down_IxD,
                   down_bias_D)


def _glu_mlp_bwd(act, prec, pullback, g_BxLxD):
    return pullback(g_BxLxD)


_glu_mlp.defvjp(_glu_mlp_fwd, _glu_mlp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def gated_unit(ug_Tx2xI: jnp.ndarray, key, act: str, rate: float) -> jnp.ndarray:
    """dropout(act(gate) · up) from the up/gate projection [..., 2, I] (index 0 = up, 1 = gate).

    The backward pass is written out so that both halves of the gradient are produced by one fused
    loop straight into the [..., 2, I] layout of the projection (autodiff builds it from two padded
    halves and an add, and evaluates the mask and the activation's derivative in separate passes).
    """
    up, gate = ug_Tx2xI[..., 0, :], ug_Tx2xI[..., 1, :]
    return dropout(activation(act)(gate) * up, rate, key)


def _gated_unit_fwd(ug_Tx2xI, key, act, rate):
    return gated_unit(ug_Tx2xI, key, act, rate), (ug_Tx2xI, key)


def _gated_unit_bwd(act, rate, residuals, g_TxI):
    ug_Tx2xI, key = residuals
    up, gate = ug_Tx2xI[..., 0, :], ug_Tx2xI[..., 1, :]
    g_TxI = dropout(g_TxI.astype(up.dtype), rate, key)  # the mask's transpose is the mask
    act_gate, act_slope = jax.jvp(activation(act), (gate,), (jnp.ones_like(gate),))
    return jnp.stack([g_TxI * act_gate, g_TxI * up * act_slope], axis=-2), None


gated_unit.defvjp(_gated_unit_fwd, _gated_unit_bwd)


def _mlp_in_blocks(mlp: "Mlp", x_BxLxD, cfg: GteConfig, dtype, prec, chunk: int):
    """``_mlp`` (no dropout) over blocks of ``chunk`` tokens, one block live at a time."""
    batch, length, dim = x_BxLxD.shape
    n = -(-length // chunk)
    x_pad = jnp.pad(x_BxLxD, ((0, 0), (0, n * chunk - length), (0, 0)))
    blocks_NxBxCxD = jnp.moveaxis(x_pad.reshape(batch, n, chunk, dim), 1, 0)
    out = jax.lax.map(lambda x_BxCxD: _mlp(mlp, x_BxCxD, cfg, dtype, prec, None), blocks_NxBxCxD)
    return jnp.moveaxis(out, 0, 1).reshape(batch, n * chunk, dim)[:, :length]


def count_parameters(model: GteForMaskedLM) -> int:
    """Unique trainable parameters (the decoder weight is tied, so counted once)."""
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
