"""Blockwise (online-softmax, "flash") attention in plain JAX, with its own backward pass.

Memory is linear in the length: the forward scans key blocks keeping a running max m, normaliser l
and accumulator per query; the backward (custom VJP) rescans key blocks from the saved max and normaliser,
so no [L, L] matrix exists in either direction. Same masking semantics as ``jsplade.attention``:
scores of disallowed keys get + finfo(float32).min (a row with no allowed key averages uniformly,
as the reference does), allowed/disallowed = key padding mask and, with packing, equal segment ids.

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
    x = x.reshape(shape)
    return jnp.moveaxis(x, axis, 0)


def _bias(key_mask_blk_BxC, q_seg_BxL, k_seg_blk_BxC, exists_blk_C):
    """Additive bias [B, 1, L, C] (float32) for one key block: 0 allowed, finfo.min disallowed (as the
    reference), −inf for the block-padding tail beyond L (not a key at all)."""
    allowed = key_mask_blk_BxC[:, None, None, :]
    if q_seg_BxL is not None:
        allowed = jnp.logical_and(allowed, (q_seg_BxL[:, None, :, None] == k_seg_blk_BxC[:, None, None, :]))
    bias = jnp.where(allowed, 0.0, _NEG).astype(jnp.float32)
    return jnp.where(exists_blk_C[None, None, None, :], bias, -jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def blockwise_attention(q, k, v, key_mask, segment_ids, block_size=512, precision=None):
    out, _ = _forward(q, k, v, key_mask, segment_ids, block_size, precision)
    return out


def _forward(q, k, v, key_mask, segment_ids, block_size, precision):
    batch, length, heads, dim = q.shape
    scale = math.sqrt(dim)
    block = min(block_size, length)
    k_blocks = _blocks(k, block, 1)
    v_blocks = _blocks(v, block, 1)
    m_blocks = _blocks(key_mask.astype(bool), block, 1, fill=False)
    seg_blocks = _blocks(segment_ids, block, 1, fill=-1) if segment_ids is not None else None
    e_blocks = _blocks(jnp.ones((length,), bool), block, 0, fill=False)

    def step(carry, xs):
        m_i, l_i, acc = carry  # [B,H,L], [B,H,L], [B,H,L,K]
        k_j, v_j, mask_j, exists_j = xs[0], xs[1], xs[2], xs[3]
        seg_j = xs[4] if segment_ids is not None else None
        s = jnp.einsum("bqhk,bchk->bhqc", q, k_j, precision=precision,
                       preferred_element_type=jnp.float32) / jnp.float32(scale)
        s = s + _bias(mask_j, segment_ids, seg_j, exists_j)
        m_new = jnp.maximum(m_i, jnp.max(s, axis=-1))
        p = jnp.exp(s - m_new[..., None])
        corr = jnp.exp(m_i - m_new)
        l_new = l_i * corr + jnp.sum(p, axis=-1)
        acc = acc * corr[..., None] + jnp.einsum("bhqc,bchk->bhqk", p.astype(v.dtype), v_j, precision=precision,
                                                 preferred_element_type=jnp.float32)
        return (m_new, l_new, acc), None

    init = (jnp.full((batch, heads, length), -jnp.inf, jnp.float32),
            jnp.zeros((batch, heads, length), jnp.float32),
            jnp.zeros((batch, heads, length, dim), jnp.float32))
    xs = (k_blocks, v_blocks, m_blocks, e_blocks) + ((seg_blocks,) if segment_ids is not None else ())
    (m_i, l_i, acc), _ = jax.lax.scan(step, init, xs)
    out_BxHxLxK = acc / l_i[..., None]
    out = jnp.swapaxes(out_BxHxLxK, 1, 2).astype(v.dtype)
    # m and l are kept apart (not as m + log l): for a row whose keys are all disallowed m = finfo.min,
    # and finfo.min + log l rounds back to finfo.min in float32.
    return out, (m_i, l_i)


def _fwd(q, k, v, key_mask, segment_ids, block_size, precision):
    out, stats = _forward(q, k, v, key_mask, segment_ids, block_size, precision)
    return out, (q, k, v, key_mask, segment_ids, out, stats)


def _bwd(block_size, precision, res, d_out):
    q, k, v, key_mask, segment_ids, out, (m_i, l_i) = res
    batch, length, heads, dim = q.shape
    scale = jnp.float32(math.sqrt(dim))
    block = min(block_size, length)
    d_out32 = d_out.astype(jnp.float32)
    delta = jnp.einsum("bqhk,bqhk->bhq", d_out32, out.astype(jnp.float32))  # rowsum(dO ∘ O)
    k_blocks = _blocks(k, block, 1)
    v_blocks = _blocks(v, block, 1)
    m_blocks = _blocks(key_mask.astype(bool), block, 1, fill=False)
    seg_blocks = _blocks(segment_ids, block, 1, fill=-1) if segment_ids is not None else None
    e_blocks = _blocks(jnp.ones((length,), bool), block, 0, fill=False)

    def step(dq, xs):
        k_j, v_j, mask_j, exists_j = xs[0], xs[1], xs[2], xs[3]
        seg_j = xs[4] if segment_ids is not None else None
        s = jnp.einsum("bqhk,bchk->bhqc", q, k_j, precision=precision, preferred_element_type=jnp.float32) / scale
        s = s + _bias(mask_j, segment_ids, seg_j, exists_j)
        p = jnp.exp(s - m_i[..., None]) / l_i[..., None]  # [B,H,L,C] probabilities
        dv_j = jnp.einsum("bhqc,bqhk->bchk", p, d_out32, precision=precision)
        dp = jnp.einsum("bqhk,bchk->bhqc", d_out32, v_j.astype(jnp.float32), precision=precision)
        ds = p * (dp - delta[..., None]) / scale
        dq = dq + jnp.einsum("bhqc,bchk->bqhk", ds, k_j.astype(jnp.float32), precision=precision)
        dk_j = jnp.einsum("bhqc,bqhk->bchk", ds, q.astype(jnp.float32), precision=precision)
        return dq, (dk_j, dv_j)

    xs = (k_blocks, v_blocks, m_blocks, e_blocks) + ((seg_blocks,) if segment_ids is not None else ())
    dq, (dk_blocks, dv_blocks) = jax.lax.scan(step, jnp.zeros(q.shape, jnp.float32), xs)

    def unblock(x):  # [n, B, C, H, K] -> [B, L, H, K]
        x = jnp.moveaxis(x, 0, 1)
        x = x.reshape(batch, -1, heads, dim)
        return x[:, :length]

    dk, dv = unblock(dk_blocks), unblock(dv_blocks)
    seg_ct = None if segment_ids is None else _zero_cotangent(segment_ids)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), _zero_cotangent(key_mask), seg_ct


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.zeros_like(x)
    return jnp.zeros(x.shape, jax.dtypes.float0)


blockwise_attention.defvjp(_fwd, _bwd)
