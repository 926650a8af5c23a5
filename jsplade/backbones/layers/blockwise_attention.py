"""Blockwise (online-softmax, "flash") attention in plain JAX, with its own backward pass.

The (query, key) plane is cut into tiles of ``q_block`` × ``k_block``: for each query block the forward
scans key blocks keeping a running max m, normaliser l and accumulator; the backward (custom VJP)
rescans the same tiles from the saved m and l. Memory is linear in the length and each tile's
[B, H, q_block, k_block] scores stay small enough for the CPU caches, so no [L, L] matrix exists in
either direction. Same masking semantics as ``jsplade.backbones.layers.attention``: disallowed keys (padding, or another
segment when packing) get + finfo(float32).min — a row with no allowed key averages uniformly, as the
reference does — and the block-padding tail beyond L gets −inf (it is not a key at all).

Shapes: q/k/v [B, L, H, K]; key_mask [B, L]; segment_ids [B, L] or None. Output [B, L, H, K].

The forward's output and its (m, l) statistics carry the checkpoint name ``SAVE_NAME``: a rematerialised
layer that saves them (``jsplade.backbones.gte``, ``ComputeOptions.remat_keeps_attention``) runs the backward
without redoing the attention forward. Tile products take bfloat16 operands where the inputs are bfloat16
and accumulate in float32.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jsplade.backbones.layers.scores import float32_product, heads_first, split_scale

_NEG = float(jnp.finfo(jnp.float32).min)
SAVE_NAME = "blockwise_attention"


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
    xs = {"k": _blocks(heads_first(k), k_block, 2), "v": _blocks(heads_first(v), k_block, 2),
          "mask": _blocks(key_mask.astype(bool), k_block, 1, fill=False),
          "exists": _blocks(jnp.ones((length,), bool), k_block, 0, fill=False)}
    if segment_ids is not None:
        xs["seg"] = _blocks(segment_ids, k_block, 1, fill=-1)
    else:  # blocks whose every key is a real, allowed key for every row: their tiles need no bias
        xs["open"] = jnp.logical_and(jnp.all(xs["mask"], axis=(1, 2)), jnp.all(xs["exists"], axis=1))
    return xs


def _per_key_block(tile_step):
    """``tile_step(carry, kb, biased)`` as a scan step that adds the mask bias only to tiles that need it.

    Without packing, a key block whose keys are all allowed takes the branch without the bias: one pass
    less over each [B, H, Q, C] score tile (every block of an unpadded long document). Same values.
    """
    def step(carry, kb):
        if "open" not in kb:
            return tile_step(carry, kb, True)
        return jax.lax.cond(kb["open"], functools.partial(tile_step, biased=False),
                            functools.partial(tile_step, biased=True), carry, kb)
    return step


def _query_blocks(q, segment_ids, q_block):
    xs = {"q": _blocks(heads_first(q), q_block, 2)}
    if segment_ids is not None:
        xs["seg"] = _blocks(segment_ids, q_block, 1, fill=-2)
    return xs


def _scores(q_blk, kb, q_seg, divisor, precision, biased):
    s = float32_product("bhqk,bhck->bhqc", q_blk, kb["k"], precision)
    if divisor is not None:
        s = s / divisor
    return s + _bias(kb["mask"], q_seg, kb.get("seg"), kb["exists"]) if biased else s


def _tiles(q, k, v, key_mask, segment_ids, k_block, q_block):
    """What forward and backward both scan: key blocks, query blocks (of the scaled q), the score divisor.

    Blocks are [n, B, H, block, K] (``_blocks``); their sizes are read back from these shapes."""
    length, dim = q.shape[1], q.shape[3]
    k_block, q_block = _sizes(length, k_block, q_block)
    q_scaled, divisor = split_scale(q, dim)
    return (_key_blocks(k, v, key_mask, segment_ids, k_block, length),
            _query_blocks(q_scaled, segment_ids, q_block), divisor)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def blockwise_attention(q, k, v, key_mask, segment_ids, block_size=512, precision=None, q_block=None):
    out, _ = _forward(q, k, v, key_mask, segment_ids, block_size, precision, q_block)
    return out


def _sizes(length, k_block, q_block):
    k_block = min(k_block, length)
    q_block = min(q_block or k_block, length)
    return k_block, q_block


def _forward(q, k, v, key_mask, segment_ids, k_block, precision, q_block):
    length = q.shape[1]
    kbs, qbs, divisor = _tiles(q, k, v, key_mask, segment_ids, k_block, q_block)

    def one_query_block(qb):
        q_blk, q_seg = qb["q"], qb.get("seg")

        def step(carry, kb, biased):
            m_i, l_i, acc = carry  # [B,H,Q], [B,H,Q], [B,H,Q,K]
            s = _scores(q_blk, kb, q_seg, divisor, precision, biased)
            m_new = jnp.maximum(m_i, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m_i - m_new)
            p_v = p.astype(v.dtype)
            # Low precision: the normaliser sums the rounded weights the product uses (one pass writing
            # bfloat16 instead of a float32 tile plus a rounding pass).
            l_new = l_i * corr + jnp.sum(p_v.astype(jnp.float32), axis=-1)
            pv = float32_product("bhqc,bhck->bhqk", p_v, kb["v"], precision)
            return (m_new, l_new, acc * corr[..., None] + pv), None

        rows = q_blk.shape[:3]  # [B, H, Q]
        init = (jnp.full(rows, -jnp.inf, jnp.float32), jnp.zeros(rows, jnp.float32),
                jnp.zeros(q_blk.shape, jnp.float32))
        (m_i, l_i, acc), _ = jax.lax.scan(_per_key_block(step), init, kbs)
        return acc / l_i[..., None], m_i, l_i  # [B,H,Q,K], [B,H,Q] ×2

    out_blocks, m_blocks, l_blocks = jax.lax.map(one_query_block, qbs)
    out = _unblock_heads(out_blocks, length).astype(v.dtype)
    # m and l are kept apart (not as m + log l): for a row whose keys are all disallowed m = finfo.min,
    # and finfo.min + log l rounds back to finfo.min in float32.
    return out, (m_blocks, l_blocks)


def _fwd(q, k, v, key_mask, segment_ids, k_block, precision, q_block):
    out, stats = _forward(q, k, v, key_mask, segment_ids, k_block, precision, q_block)
    out, stats = checkpoint_name((out, stats), SAVE_NAME)
    return out, (q, k, v, key_mask, segment_ids, out, stats)


def _bwd(k_block, precision, q_block, res, d_out):
    q, k, v, key_mask, segment_ids, out, (m_blocks, l_blocks) = res
    length, dim = q.shape[1], q.shape[3]
    kbs, qbs, divisor = _tiles(q, k, v, key_mask, segment_ids, k_block, q_block)
    rows = qbs["q"].shape[3]  # the (clamped) query block size
    qbs["do"] = _blocks(heads_first(d_out.astype(jnp.float32)), rows, 2)
    qbs["o"] = _blocks(heads_first(out.astype(jnp.float32)), rows, 2)
    qbs["m"], qbs["l"] = m_blocks, l_blocks

    # dK and dV are formed transposed, [B, H, K, C] per key block (dVᵀ = dOᵀ·P, dKᵀ = Q'ᵀ·dS): a product
    # that contracts the query axis of a [Q, C] tile runs at half speed on XLA:CPU when it has to write
    # [C, K] (it transposes the tile first), at full speed when it writes [K, C]. Every tile product takes
    # its operands in the compute dtype and accumulates in float32 (bfloat16: P and dS rounded once).
    compute = q.dtype

    def one_query_block(dkv_t, qb):
        q_blk, q_seg, do, m_i, l_i = qb["q"], qb.get("seg"), qb["do"], qb["m"], qb["l"]
        do_c = do.astype(compute)
        # Head-dim-major copies of the query block's small operands ([B, H, K, Q]): dVᵀ and dKᵀ then are
        # plain [K, Q]·[Q, C] products, which XLA:CPU runs on its fast kernels in bfloat16 too (contracting
        # the tiles' query axis directly made it convert both operands to float32 first).
        do_t, q_t = jnp.swapaxes(do_c, -1, -2), jnp.swapaxes(q_blk, -1, -2)
        delta = jnp.sum(do * qb["o"], axis=-1)  # rowsum(dO ∘ O) [B,H,Q]

        def step(dq, kb, biased):
            s = _scores(q_blk, kb, q_seg, divisor, precision, biased)
            p = jnp.exp(s - m_i[..., None]) / l_i[..., None]  # [B,H,Q,C] probabilities
            dv_t = float32_product("bhkq,bhqc->bhkc", do_t, p.astype(compute), precision)
            dp = float32_product("bhqk,bhck->bhqc", do_c, kb["v"].astype(compute), precision)
            ds = p * (dp - delta[..., None])  # gradient of the scores as the tile forms them
            if divisor is not None:
                ds = ds / divisor
            ds_c = ds.astype(compute)
            dq = dq + float32_product("bhqc,bhck->bhqk", ds_c, kb["k"].astype(compute), precision)
            dk_t = float32_product("bhkq,bhqc->bhkc", q_t, ds_c, precision)
            return dq, (dk_t, dv_t)

        dq_init = jnp.zeros(q_blk.shape, jnp.float32)
        dq, (dk_t_blocks, dv_t_blocks) = jax.lax.scan(_per_key_block(step), dq_init, kbs)
        dk_t, dv_t = dkv_t
        return (dk_t + dk_t_blocks, dv_t + dv_t_blocks), dq

    zeros = jnp.swapaxes(jnp.zeros(kbs["k"].shape, jnp.float32), -1, -2)  # [n, B, H, K, C]
    (dk_t_blocks, dv_t_blocks), dq_blocks = jax.lax.scan(one_query_block, (zeros, zeros), qbs)
    dq = _unblock_heads(dq_blocks, length)
    if divisor is None:  # the scores took q·(1/√d): chain rule through the folded scale
        dq = dq * jnp.float32(1.0 / math.sqrt(dim))
    dk, dv = (_unblock_heads(jnp.swapaxes(x, -1, -2), length) for x in (dk_t_blocks, dv_t_blocks))
    seg_ct = None if segment_ids is None else _zero_cotangent(segment_ids)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), _zero_cotangent(key_mask), seg_ct


def _zero_cotangent(x):
    if jnp.issubdtype(x.dtype, jnp.floating):
        return jnp.zeros_like(x)
    return jnp.zeros(x.shape, jax.dtypes.float0)


blockwise_attention.defvjp(_fwd, _bwd)
