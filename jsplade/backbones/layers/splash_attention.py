"""TPU attention through the Pallas splash-attention kernel (used by ``attention(impl="splash")``).

Key padding and packing are both expressed as segment ids: real tokens carry their document's segment
(1 when unpacked), pads carry 0, and a query only sees keys of its own segment. Real-token outputs are
those of the reference; pad rows (never pooled) attend to pads instead of averaging everything.
Requires a TPU backend and a length that is a multiple of 128 (``resolve_impl`` checks both);
interpret mode (``interpret=True``) runs it on CPU for tests.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=32)
def _kernel(length: int, heads: int, interpret: bool):
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

    mask = sm.MultiHeadMask([sm.FullMask((length, length)) for _ in range(heads)])
    return sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q, k, v, key_mask, segment_ids=None, interpret: bool = False):
    """Attention of q, k, v [B, L, H, K] with ``key_mask`` [B, L] and optional packing ``segment_ids`` [B, L]
    through the splash kernel; [B, L, H, K] in the dtype of ``v``."""
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, key_mask_BxL, segment_ids_BxL = q, k, v, key_mask, segment_ids
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk

    batch, length, heads, dim = q_BxLxHxK.shape
    real = jnp.asarray(key_mask_BxL) != 0
    seg = jnp.where(real, 1 if segment_ids_BxL is None else segment_ids_BxL, 0).astype(jnp.int32)
    q = jnp.swapaxes(q_BxLxHxK, 1, 2) / jnp.asarray(math.sqrt(dim), q_BxLxHxK.dtype)
    k = jnp.swapaxes(k_BxLxHxK, 1, 2)
    v = jnp.swapaxes(v_BxLxHxK, 1, 2)
    kernel = _kernel(length, heads, interpret)
    out = jax.vmap(lambda q1, k1, v1, s1: kernel(q1, k1, v1, segment_ids=sk.SegmentIds(q=s1, kv=s1)))(q, k, v, seg)
    return jnp.swapaxes(out, 1, 2).astype(v_BxLxHxK.dtype)
