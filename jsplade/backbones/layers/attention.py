"""Bidirectional attention with the reference's key-padding semantics (gte_architecture.md §3.4).

scores = ⟨q, k⟩ / √d_h + M, with M = finfo(dtype).min on padded keys (never −inf: a row whose
keys are all padded gets a finite uniform average, as in the reference); softmax over keys in the
activation dtype (float32 for float32 compute; float32 accumulation for bfloat16 compute).

Implementations behind one switch (``impl``), all giving the same numbers within float tolerance:

* ``"xla"``     the plain path: full [B, H, L, L] scores (its backward written out, see ``_attend``;
                where nothing is differentiated, normalised after the product: ``_attend_no_grad``).
* ``"chunked"`` exact same arithmetic as "xla", queries processed in blocks so the live score tensor
                is [B, H, block, L] (inference memory linear in L).
* ``"blockwise"`` online-softmax (flash) attention with its own backward pass
                (``blockwise_attention``): memory linear in L for training too.
* ``"cudnn"``   ``jax.nn.dot_product_attention(implementation="cudnn")`` (NVIDIA GPUs, bf16/fp16,
                key-padding masks without packing); falls back to "blockwise" where it does not apply.
* ``"splash"``  the Pallas splash-attention kernel on TPU (lengths multiple of 128, no dropout);
                falls back to "blockwise" where it does not apply.
* ``"auto"``    cuDNN on GPU (bf16), splash on TPU, otherwise "xla" up to ``chunk_threshold`` tokens
                and "blockwise" beyond.

Segment ids (packing) restrict attention to keys of the same segment (block-diagonal).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jsplade.backbones.layers.blockwise_attention import blockwise_attention
from jsplade.backbones.layers.dropout import dropout
from jsplade.backbones.layers.scores import float32_product, heads_first, key_bias, split_scale
from jsplade.backbones.layers.splash_attention import splash_attention

ATTENTION_IMPLS = ("auto", "xla", "chunked", "blockwise", "cudnn", "splash")


def resolve_impl(impl: str, length: int, dtype, packed: bool, with_dropout: bool, chunk_threshold: int) -> str:
    """The implementation that actually runs for a requested one (fallbacks documented above)."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    backend = jax.default_backend()
    low_precision = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if with_dropout:
        return "xla"  # attention-probability dropout needs the probability matrix
    if impl == "auto":
        if backend == "gpu" and low_precision and not packed:
            return "cudnn"
        if backend == "tpu" and length % 128 == 0:
            return "splash"
        return "blockwise" if length > chunk_threshold else "xla"
    if impl == "cudnn" and (backend != "gpu" or not low_precision or packed):
        return "blockwise"
    if impl == "splash" and (backend != "tpu" or length % 128):
        return "blockwise"
    return impl


def _attend_block(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, softmax_dtype, dropout_rate, dropout_key, precision):
    """Full-score softmax attention over one block of queries: [B, Q, H, K] in the dtype of ``v``."""
    return _attend(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, dropout_key, float(dropout_rate), precision,
                   jnp.dtype(softmax_dtype))


def _scale(head_dim: int, softmax_dtype):
    return jnp.asarray(math.sqrt(head_dim), softmax_dtype)


def _biased_scores(q_BxHxQxK, k_BxHxLxK, bias, softmax_dtype, precision):
    """⟨q, k⟩ / √d + bias [B, H, Q, L] in the softmax dtype (1/√d folded into q where exact, ``split_scale``:
    the same values as dividing the scores, since scaling by a power of two commutes with rounding)."""
    q_BxHxQxK, divisor = split_scale(q_BxHxQxK, q_BxHxQxK.shape[-1])
    scores_BxHxQxL = float32_product("bhqk,bhlk->bhql", q_BxHxQxK, k_BxHxLxK, precision).astype(softmax_dtype)
    if divisor is not None:
        scores_BxHxQxL = scores_BxHxQxL / divisor.astype(softmax_dtype)
    return scores_BxHxQxL + bias.astype(softmax_dtype)


def _probs(q_BxHxQxK, k_BxHxLxK, bias, softmax_dtype, precision):
    return jax.nn.softmax(_biased_scores(q_BxHxQxK, k_BxHxLxK, bias, softmax_dtype, precision), axis=-1)


# The backward pass is written out (the standard softmax-attention gradient, from the saved probabilities)
# so that every product runs on head-major [B, H, L, K] operands: autodiff of the same einsums on
# [B, L, H, K] inputs made XLA:CPU transpose the score-sized and value-sized operands of each backward
# product again and pick slow layouts for them (16 × 256 tokens, 12 heads: 190 ms forward + backward
# per layer, 125 ms in this form).
@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _attend(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, dropout_key, dropout_rate, precision, softmax_dtype):
    if dropout_key is None or dropout_rate <= 0.0:
        return _attend_no_grad(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, precision, softmax_dtype)
    return _attend_fwd(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, dropout_key, dropout_rate, precision,
                       softmax_dtype)[0]


def _attend_no_grad(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, precision, softmax_dtype):
    """The same attention where nothing is differentiated (encoding): no probability matrix is formed.

    The weights are left unnormalised, exp(s − max s), and the [Q, K] output is divided by their sum
    (one divide per output element instead of one per score), with 1/√d folded into q where exact.
    Equal to the normalised form up to float rounding; at 32 × 176 tokens on the 2-core CPU one layer's
    attention takes 38 instead of 66 ms.
    """
    q_h, k_h, v_h = heads_first(q_BxQxHxK), heads_first(k_BxLxHxK), heads_first(v_BxLxHxK)
    scores_BxHxQxL = _biased_scores(q_h, k_h, bias, softmax_dtype, precision)
    weights_BxHxQxL = jnp.exp(scores_BxHxQxL - jnp.max(scores_BxHxQxL, axis=-1, keepdims=True)).astype(v_h.dtype)
    # Low precision: the normaliser sums the rounded weights the product uses.
    total_BxHxQx1 = jnp.sum(weights_BxHxQxL.astype(softmax_dtype), axis=-1, keepdims=True)
    out_BxHxQxK = float32_product("bhql,bhlk->bhqk", weights_BxHxQxL, v_h, precision) / total_BxHxQx1
    return heads_first(out_BxHxQxK.astype(v_h.dtype))


def _attend_fwd(q_BxQxHxK, k_BxLxHxK, v_BxLxHxK, bias, dropout_key, dropout_rate, precision, softmax_dtype):
    q_h, k_h, v_h = heads_first(q_BxQxHxK), heads_first(k_BxLxHxK), heads_first(v_BxLxHxK)
    probs_BxHxQxL = _probs(q_h, k_h, bias, softmax_dtype, precision)
    kept_BxHxQxL = dropout(probs_BxHxQxL, dropout_rate, dropout_key).astype(v_h.dtype)
    out_BxHxQxK = float32_product("bhql,bhlk->bhqk", kept_BxHxQxL, v_h, precision).astype(v_h.dtype)
    return heads_first(out_BxHxQxK), (q_h, k_h, v_h, probs_BxHxQxL, dropout_key)


def _attend_bwd(dropout_rate, precision, softmax_dtype, residuals, g_BxQxHxK):
    q_h, k_h, v_h, probs_BxHxQxL, dropout_key = residuals
    g_h = heads_first(g_BxQxHxK).astype(v_h.dtype)
    kept_BxHxQxL = dropout(probs_BxHxQxL, dropout_rate, dropout_key).astype(v_h.dtype)
    dv_h = float32_product("bhql,bhqk->bhlk", kept_BxHxQxL, g_h, precision).astype(v_h.dtype)
    dkept_BxHxQxL = float32_product("bhqk,bhlk->bhql", g_h, v_h, precision)
    # Dropout is x ↦ mask · x / keep: its transpose is the same map.
    dprobs_BxHxQxL = dropout(dkept_BxHxQxL.astype(softmax_dtype), dropout_rate, dropout_key)
    row_BxHxQx1 = jnp.sum(dprobs_BxHxQxL * probs_BxHxQxL, axis=-1, keepdims=True)
    scale = _scale(q_h.shape[-1], softmax_dtype)
    dscores_BxHxQxL = (probs_BxHxQxL * (dprobs_BxHxQxL - row_BxHxQx1) / scale).astype(q_h.dtype)
    dq_h = float32_product("bhql,bhlk->bhqk", dscores_BxHxQxL, k_h, precision).astype(q_h.dtype)
    dk_h = float32_product("bhql,bhqk->bhlk", dscores_BxHxQxL, q_h, precision).astype(k_h.dtype)
    return heads_first(dq_h), heads_first(dk_h), heads_first(dv_h), None, None


_attend.defvjp(_attend_fwd, _attend_bwd)


def attention(
    q: jnp.ndarray,
    k: jnp.ndarray,
    v: jnp.ndarray,
    key_mask: jnp.ndarray,
    *,
    segment_ids: jnp.ndarray | None = None,
    impl: str = "auto",
    chunk_size: int = 512,
    chunk_threshold: int = 2048,
    dropout_rate: float = 0.0,
    dropout_key: jax.Array | None = None,
    precision=None,
) -> jnp.ndarray:
    """Softmax attention over keys: q, k, v [B, L, H, K], ``key_mask`` [B, L] (nonzero = a real key),
    ``segment_ids`` [B, L] (packing) or None; returns [B, L, H, K] in the dtype of ``v``."""
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL, segment_ids_BxL = q, k, v, key_mask, segment_ids
    length = q_BxLxHxK.shape[1]
    softmax_dtype = jnp.promote_types(q_BxLxHxK.dtype, jnp.float32)
    with_dropout = dropout_key is not None and dropout_rate > 0.0
    impl = resolve_impl(impl, length, q_BxLxHxK.dtype, segment_ids_BxL is not None, with_dropout, chunk_threshold)
    if impl == "cudnn":
        lengths_B = jnp.sum(key_mask_BxL != 0, axis=-1).astype(jnp.int32)
        return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_value_seq_lengths=lengths_B,
                                            implementation="cudnn")
    if impl == "splash":
        return splash_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL, segment_ids_BxL)
    if impl == "blockwise":
        # Tiles of 2·chunk queries × chunk keys: the fastest of the sizes measured on a 2-core CPU at 8192
        # tokens (512×1024 24.9 s, 512×512 25.7 s, 256×256 36.4 s for a 12-layer v3-gte forward).
        return blockwise_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL != 0, segment_ids_BxL,
                                   chunk_size, precision, 2 * chunk_size)
    if impl == "xla" or length <= chunk_size:
        bias = key_bias(key_mask_BxL, softmax_dtype, segment_ids_BxL, segment_ids_BxL)
        return _attend_block(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, bias, softmax_dtype,
                             dropout_rate, dropout_key, precision)

    # Query blocks: identical per-row arithmetic to the full path, bounded live memory.
    n_blocks = -(-length // chunk_size)
    padded = n_blocks * chunk_size
    pad = padded - length
    q_pad = jnp.pad(q_BxLxHxK, ((0, 0), (0, pad), (0, 0), (0, 0)))
    q_blocks = q_pad.reshape(q_pad.shape[0], n_blocks, chunk_size, *q_pad.shape[2:]).swapaxes(0, 1)
    if segment_ids_BxL is not None:
        seg_pad = jnp.pad(segment_ids_BxL, ((0, 0), (0, pad)), constant_values=-1)
        seg_blocks = seg_pad.reshape(seg_pad.shape[0], n_blocks, chunk_size).swapaxes(0, 1)
    else:
        seg_blocks = jnp.zeros((n_blocks, 1), jnp.int32)  # unused placeholder

    def one_block(args):
        q_blk, seg_blk = args
        if segment_ids_BxL is not None:
            bias = key_bias(key_mask_BxL, softmax_dtype, seg_blk, segment_ids_BxL)
        else:
            bias = key_bias(key_mask_BxL, softmax_dtype)
        return _attend_block(q_blk, k_BxLxHxK, v_BxLxHxK, bias, softmax_dtype, 0.0, None, precision)

    out_blocks = jax.lax.map(one_block, (q_blocks, seg_blocks))
    out = out_blocks.swapaxes(0, 1).reshape(q_pad.shape[0], padded, *q_pad.shape[2:])
    return out[:, :length]
