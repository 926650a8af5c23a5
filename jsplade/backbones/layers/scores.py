"""Pieces every attention implementation shares: the key-mask bias, score products with float32
accumulation, the 1/√d split and the head-major layout.

Used by the plain and chunked paths (``attention``) and by the blockwise kernel (``blockwise_attention``),
so both compute their scores with the same arithmetic.
"""

from __future__ import annotations

import math

import jax.numpy as jnp


def key_bias(key_mask_BxL: jnp.ndarray, dtype, query_segments_BxL=None, key_segments_BxL=None):
    """Additive bias [B, 1, Lq or 1, Lk]: 0 where attention is allowed, finfo(dtype).min elsewhere."""
    allowed = key_mask_BxL.astype(bool)[:, None, None, :]
    if query_segments_BxL is not None:
        same = query_segments_BxL[:, None, :, None] == key_segments_BxL[:, None, None, :]
        allowed = jnp.logical_and(allowed, same)
    return jnp.where(allowed, jnp.zeros((), dtype), jnp.asarray(jnp.finfo(dtype).min, dtype))


def float32_product(spec, a, b, precision):
    """An attention product (einsum) with float32 accumulation and result, whatever the operands' dtype.

    For bfloat16 operands the scores reach the float32 softmax without a bfloat16 rounding in between, as
    in flash kernels (test inputs with their scores ×4: output error against float32 1.1e-2 → 8.7e-3), and
    XLA:CPU runs the product on its bfloat16 kernel (one returning bfloat16 runs at float32 speed there).
    """
    return jnp.einsum(spec, a, b, precision=precision, preferred_element_type=jnp.float32)


def split_scale(q, dim):
    """(q·f, c) with scores = ⟨q·f, k⟩ / c equal to ⟨q, k⟩ / √d (c None: no division).

    Where √d is a power of two (d = 64 in v3-gte), 1/√d is folded into q: exact in any float format,
    and one multiply per query element instead of one divide per score. Otherwise the scores are
    divided (c = √d, f = 1).
    """
    root = math.sqrt(dim)
    if root == 2.0 ** round(math.log2(root)):
        return q * jnp.asarray(1.0 / root, q.dtype), None
    return q, jnp.float32(root)


def heads_first(x_BxLxHxK):
    """[B, L, H, K] ↔ [B, H, L, K] (its own inverse): every product is then a plain batched matmul."""
    return jnp.swapaxes(x_BxLxHxK, 1, 2)
