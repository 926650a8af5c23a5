"""Blockwise (online-softmax, "flash") attention in plain JAX, with its own backward pass.

The (query, key) plane is cut into tiles of ``q_block`` × ``k_block``: for each query block the forward
scans key blocks keeping a running max m, normaliser l and accumulator; the backward (custom VJP)
rescans the same tiles from the saved m and l. Memory is linear in the length and each tile's
[B, H, q_block, k_block] scores stay small enough for the CPU caches, so no [L, L] matrix exists in
either direction. Same masking semantics as ``jsplade.attention``: disallowed keys (padding, or another
segment when packing) get + finfo(float32).min — a row with no allowed key averages uniformly, as the
reference does — and the block-padding tail beyond L gets −inf (it is not a key at all).

Shapes: q/k/v [B, L, H, K]; key_mask [B, L]; segment_ids [B, L] or None. Output [B, L, H, K].
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

_NEG = float(jnp.finfo(jnp.float32).min)


def _blocks(x, block, axis, fill=0):
    """Pad ``axis`` to a multiple of ``block`` and split it into [n_blocks, …, block, …] (blocks first)."""
    n = x.shape[axis]
    n_blocks = -(-n // block)
    pad = n_blocks * block - n
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[axis] = (0, pad)
        x = jnp.pad(x, widths, constant_values=fill)
    shape = list(x.shape)
    shape[axis:axis + 1] = [n_blocks, block]
    return jnp.moveaxis(x.reshape(shape), axis, 0)


def _heads_first(x_BxLxHxK):
    """[B, L, H, K] → [B, H, L, K]: every tile product is then a plain batched matmul (no per-tile transposes)."""
    return jnp.swapaxes(x_BxLxHxK, 1, 2)


def _unblock_heads(x, length):
    """Blocks [n, B, H, C, K] → [B, L, H, K]."""
    n, b, h, c, k = x.shape
    return jnp.transpose(x, (1, 0, 3, 2, 4)).reshape(b, n * c, h, k)[:, :length]


def _bias(key_mask_BxC, q_seg_BxQ, k_seg_BxC, exists_C):
    """Additive bias [B, 1, Q or 1, C] (float32) of one tile."""
    allowed = key_mask_BxC[:, None, None, :]
    if q_seg_BxQ is not None:
        allowed = jnp.logical_and(allowed, q_seg_BxQ[:, None, :, None] == k_seg_BxC[:, None, None, :])
    bias = jnp.where(allowed, 0.0, _NEG).astype(jnp.float32)
    return jnp.where(exists_C[None, None, None, :], bias, -jnp.inf)


def _key_blocks(k, v, key_mask, segment_ids, k_block, length):
    xs = {"k": _blocks(_heads_first(k), k_block, 2), "v": _blocks(_heads_first(v), k_block, 2),
          "mask": _blocks(key_mask.astype(bool), k_block, 1, fill=False),
          "exists": _blocks(jnp.ones((length,), bool), k_block, 0, fill=False)}
    if segment_ids is not None:
        xs["seg"] = _blocks(segment_ids, k_block, 1, fill=-1)
    return xs


def _query_blocks(q, segment_ids, q_block):
    xs = {"q": _blocks(_heads_first(q), q_block, 2)}
    if segment_ids is not None:
        xs["seg"] = _blocks(segment_ids, q_block, 1, fill=-2)
    return xs


def _scores(q_blk, kb, q_seg, scale, precision):
    s = jnp.einsum("bhqk,bhck->bhqc", q_blk, kb["k"], precision=precision,
                   preferred_element_type=jnp.float32) / scale
    return s + _bias(kb["mask"], q_seg, kb.get("seg"), kb["exists"])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def blockwise_attention(q, k, v, key_mask, segment_ids, block_size=512, precision=None, q_block=None):
    out, _ = _forward(q, k, v, key_mask, segment_ids, block_size, precision, q_block)
    return out


def _sizes(length, k_block, q_block):
    k_block = min(k_block, length)
    q_block = min(q_block or k_block, length)
    return k_block, q_block


def _forward(q, k, v, key_mask, segment_ids, k_block, precision, q_block):
    batch, length, heads, dim = q.shape
    k_block, q_block = _sizes(length, k_block, q_block)
    scale = jnp.float32(math.sqrt(dim))
    kbs = _key_blocks(k, v, key_mask, segment_ids, k_block, length)
    qbs = _query_blocks(q, segment_ids, q_block)

    def one_query_block(qb):
        q_blk, q_seg = qb["q"], qb.get("seg")

        def step(carry, kb):
            m_i, l_i, acc = carry  # [B,H,Q], [B,H,Q], [B,H,Q,K]
            s = _scores(q_blk, kb, q_seg, scale, precision)
            m_new = jnp.maximum(m_i, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m_i - m_new)
            l_new = l_i * corr + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bhqc,bhck->bhqk", p.astype(v.dtype), kb["v"], precision=precision,
                            preferred_element_type=jnp.float32)
            return (m_new, l_new, acc * corr[..., None] + pv), None

        init = (jnp.full((batch, heads, q_block), -jnp.inf, jnp.float32),
                jnp.zeros((batch, heads, q_block), jnp.float32),
                jnp.zeros((batch, heads, q_block, dim), jnp.float32))
        (m_i, l_i, acc), _ = jax.lax.scan(step, init, kbs)
        return acc / l_i[..., None], m_i, l_i  # [B,H,Q,K], [B,H,Q] ×2

    out_blocks, m_blocks, l_blocks = jax.lax.map(one_query_block, qbs)
    out = _unblock_heads(out_blocks, length).astype(v.dtype)
    # m and l are kept apart (not as m + log l): for a row whose keys are all disallowed m = finfo.min,
    # and finfo.min + log l rounds back to finfo.min in float32.
    return out, (m_blocks, l_blocks)


def _fwd(q, k, v, key_mask, segment_ids, k_block, precision, q_block):
    out, stats = _forward(q, k, v, key_mask, segment_ids, k_block, precision, q_block)
    return out, (q, k, v, key_mask, segment_ids, out, stats)


def _bwd(k_block, precision, q_block, res, d_out):
    q, k, v, key_mask, segment_ids, out, (m_blocks, l_blocks) = res
    batch, length, heads, dim = q.shape
    k_block, q_block = _sizes(length, k_block, q_block)
    scale = jnp.float32(math.sqrt(dim))
    kbs = _key_blocks(k, v, key_mask, segment_ids, k_block, length)
    qbs = _query_blocks(q, segment_ids, q_block)
    qbs["do"] = _blocks(_heads_first(d_out.astype(jnp.float32)), q_block, 2)
    qbs["o"] = _blocks(_heads_first(out.astype(jnp.float32)), q_block, 2)
    qbs["m"], qbs["l"] = m_blocks, l_blocks
    n_k = kbs["k"].shape[0]

    def one_query_block(dkv, qb):
        q_blk, q_seg, do, m_i, l_i = qb["q"], qb.get("seg"), qb["do"], qb["m"], qb["l"]
        delta = jnp.sum(do * qb["o"], axis=-1)  # rowsum(dO ∘ O) [B,H,Q]

        def step(dq, kb):
            s = _scores(q_blk, kb, q_seg, scale, precision)
            p = jnp.exp(s - m_i[..., None]) / l_i[..., None]  # [B,H,Q,C] probabilities
            dv_j = jnp.einsum("bhqc,bhqk->bhck", p, do, precision=precision)
            dp = jnp.einsum("bhqk,bhck->bhqc", do, kb["v"].astype(jnp.float32), precision=precision)
            ds = p * (dp - delta[..., None]) / scale
            dq = dq + jnp.einsum("bhqc,bhck->bhqk", ds, kb["k"].astype(jnp.float32), precision=precision)
            dk_j = jnp.einsum("bhqc,bhqk->bhck", ds, q_blk.astype(jnp.float32), precision=precision)
            return dq, (dk_j, dv_j)

        dq, (dk_blocks, dv_blocks) = jax.lax.scan(step, jnp.zeros(q_blk.shape, jnp.float32), kbs)
        dk, dv = dkv
        return (dk + dk_blocks, dv + dv_blocks), dq

    zeros = jnp.zeros((n_k, batch, heads, k_block, dim), jnp.float32)
    (dk_blocks, dv_blocks), dq_blocks = jax.lax.scan(one_query_block, (zeros, zeros), qbs)
    dq, dk, dv = (_unblock_heads(x, length) for x in (dq_blocks, dk_blocks, dv_blocks))
    seg_ct = None if segment_ids is None else _zero_cotangent(segment_ids)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), _zero_cotangent(key_mask), seg_ct


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.zeros_like(x)
    return jnp.zeros(x.shape, jax.dtypes.float0)


blockwise_attention.defvjp(_fwd, _bwd)
