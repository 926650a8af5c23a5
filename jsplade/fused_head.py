"""Fused SPLADE head: vocabulary projection + pooling over tokens, chunked, with a custom VJP.

``fused_splade_pool(features_BxLxD, decoder_VxD, bias_V, group_BxL, n_groups, ...)`` returns the
pooled vectors [B, G, V] of G groups per row (G = 1 and group = 0 on real tokens, −1 on pads for plain
batches; G documents per row with packing). The [B, L, V] logits never exist: the forward scans token
chunks of size C keeping, for max pooling, the running maximum *and its token index*; the backward
rescans the chunks, routes each vocabulary entry's gradient to that arg-max token only (what
autodiff of a max does when there are no exact ties; the reference, torch.max over tokens, also
picks one index) and forms d features / d decoder / d bias chunk by chunk. Live memory is B·C·V.

Sum pooling (Σ_t a(logit)) recomputes each chunk's logits in the backward to apply a'(logit).
Values equal ``jsplade.pooling.splade_pool`` on the full logits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jsplade.pooling import check_pooling, splade_activation


def _chunks(x, chunk, fill):
    """[B, L, …] → [n, B, chunk, …] (padded with ``fill``)."""
    length = x.shape[1]
    n = -(-length // chunk)
    pad = n * chunk - length
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[1] = (0, pad)
        x = jnp.pad(x, widths, constant_values=fill)
    return jnp.moveaxis(x.reshape(x.shape[0], n, chunk, *x.shape[2:]), 1, 0)


def _logits(f_BxCxD, w_VxD, b_V, precision):
    return jnp.einsum("bcd,vd->bcv", f_BxCxD, w_VxD.astype(f_BxCxD.dtype), precision=precision,
                      preferred_element_type=jnp.float32) + b_V.astype(jnp.float32)


def _activation_grad(x, activation):
    """d a(x) / dx for the SPLADE activations (0 for x <= 0)."""
    pos = x > 0
    xp = jnp.where(pos, x, 0.0)
    d = 1.0 / (1.0 + xp)
    if activation == "log1p_relu":
        d = d / (1.0 + jnp.log1p(xp))
    return jnp.where(pos, d, 0.0)


# --------------------------------------------------------------------------- max pooling
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _group_max(features, weight, bias, group, n_groups, chunk, precision):
    return _group_max_fwd_impl(features, weight, bias, group, n_groups, chunk, precision)[0]


def _group_max_fwd_impl(features, weight, bias, group, n_groups, chunk, precision):
    batch, length, _ = features.shape
    vocab = weight.shape[0]
    f_chunks = _chunks(features, chunk, 0)
    g_chunks = _chunks(group, chunk, -1)
    starts = jnp.arange(f_chunks.shape[0], dtype=jnp.int32) * chunk

    def step(carry, xs):
        best, where = carry  # [B,G,V] float32, int32
        f_c, g_c, start = xs
        logits = _logits(f_c, weight, bias, precision)  # [B,C,V]
        new_best, new_where = [], []
        for g in range(n_groups):
            sel = (g_c == g)[:, :, None]
            masked = jnp.where(sel, logits, -jnp.inf)
            m = jnp.max(masked, axis=1)
            idx = jnp.argmax(masked, axis=1).astype(jnp.int32) + start
            better = m > best[:, g]  # strict: keep the first arg-max, like a left-to-right max
            new_best.append(jnp.where(better, m, best[:, g]))
            new_where.append(jnp.where(better, idx, where[:, g]))
        return (jnp.stack(new_best, 1), jnp.stack(new_where, 1)), None

    init = (jnp.full((batch, n_groups, vocab), -jnp.inf, jnp.float32),
            jnp.zeros((batch, n_groups, vocab), jnp.int32))
    (best, where), _ = jax.lax.scan(step, init, (f_chunks, g_chunks, starts))
    return best, where


def _group_max_fwd(features, weight, bias, group, n_groups, chunk, precision):
    best, where = _group_max_fwd_impl(features, weight, bias, group, n_groups, chunk, precision)
    return best, (features, weight, bias, group, best, where)


def _group_max_bwd(n_groups, chunk, precision, res, g_best):
    features, weight, bias, group, best, where = res
    batch, length, dim = features.shape
    g_best = jnp.where(jnp.isfinite(best), g_best, 0.0).astype(jnp.float32)  # empty groups: no gradient
    f_chunks = _chunks(features, chunk, 0)
    starts = jnp.arange(f_chunks.shape[0], dtype=jnp.int32) * chunk
    w32 = weight.astype(jnp.float32)

    def step(d_w, xs):
        f_c, start = xs
        positions = start + jnp.arange(chunk, dtype=jnp.int32)  # [C]
        # g_sel[b, c, v] = Σ_g g_best[b, g, v] · [where[b, g, v] == start + c]
        g_sel = jnp.zeros((batch, chunk, weight.shape[0]), jnp.float32)
        for g in range(n_groups):
            hit = where[:, g][:, None, :] == positions[None, :, None]
            g_sel = g_sel + jnp.where(hit, g_best[:, g][:, None, :], 0.0)
        d_f = jnp.einsum("bcv,vd->bcd", g_sel, w32, precision=precision)
        d_w = d_w + jnp.einsum("bcv,bcd->vd", g_sel, f_c.astype(jnp.float32), precision=precision)
        return d_w, d_f

    d_w, d_f_chunks = jax.lax.scan(step, jnp.zeros(weight.shape, jnp.float32), (f_chunks, starts))
    d_f = jnp.moveaxis(d_f_chunks, 0, 1).reshape(batch, -1, dim)[:, :length]
    d_b = jnp.sum(g_best, axis=(0, 1))
    return (d_f.astype(features.dtype), d_w.astype(weight.dtype), d_b.astype(bias.dtype),
            jnp.zeros(group.shape, jax.dtypes.float0))


_group_max.defvjp(_group_max_fwd, _group_max_bwd)


# --------------------------------------------------------------------------- sum pooling
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _group_sum(features, weight, bias, group, n_groups, chunk, activation, precision):
    batch, _, _ = features.shape
    f_chunks = _chunks(features, chunk, 0)
    g_chunks = _chunks(group, chunk, -1)

    def step(acc, xs):
        f_c, g_c = xs
        act = splade_activation(_logits(f_c, weight, bias, precision), activation)
        parts = [jnp.sum(jnp.where((g_c == g)[:, :, None], act, 0.0), axis=1) for g in range(n_groups)]
        return acc + jnp.stack(parts, 1), None

    init = jnp.zeros((batch, n_groups, weight.shape[0]), jnp.float32)
    out, _ = jax.lax.scan(step, init, (f_chunks, g_chunks))
    return out


def _group_sum_fwd(features, weight, bias, group, n_groups, chunk, activation, precision):
    out = _group_sum(features, weight, bias, group, n_groups, chunk, activation, precision)
    return out, (features, weight, bias, group)


def _group_sum_bwd(n_groups, chunk, activation, precision, res, g_out):
    features, weight, bias, group = res
    batch, length, dim = features.shape
    f_chunks = _chunks(features, chunk, 0)
    g_chunks = _chunks(group, chunk, -1)
    w32 = weight.astype(jnp.float32)

    def step(carry, xs):
        d_w, d_b = carry
        f_c, grp_c = xs
        logits = _logits(f_c, weight, bias, precision)
        upstream = jnp.zeros(logits.shape, jnp.float32)
        for g in range(n_groups):
            upstream = upstream + jnp.where((grp_c == g)[:, :, None], g_out[:, g][:, None, :], 0.0)
        g_logits = upstream * _activation_grad(logits, activation)
        d_f = jnp.einsum("bcv,vd->bcd", g_logits, w32, precision=precision)
        d_w = d_w + jnp.einsum("bcv,bcd->vd", g_logits, f_c.astype(jnp.float32), precision=precision)
        return (d_w, d_b + jnp.sum(g_logits, axis=(0, 1))), d_f

    init = (jnp.zeros(weight.shape, jnp.float32), jnp.zeros(bias.shape, jnp.float32))
    (d_w, d_b), d_f_chunks = jax.lax.scan(step, init, (f_chunks, g_chunks))
    d_f = jnp.moveaxis(d_f_chunks, 0, 1).reshape(batch, -1, dim)[:, :length]
    return (d_f.astype(features.dtype), d_w.astype(weight.dtype), d_b.astype(bias.dtype),
            jnp.zeros(group.shape, jax.dtypes.float0))


_group_sum.defvjp(_group_sum_fwd, _group_sum_bwd)


# --------------------------------------------------------------------------- public
def fused_splade_pool(features_BxLxD, decoder_VxD, bias_V, group_BxL, n_groups: int = 1,
                      strategy: str = "max", activation: str = "log1p_relu", chunk_size: int = 256,
                      precision=None) -> jnp.ndarray:
    """Pooled SPLADE vectors [B, G, V] float32 of each group (−1 = padding, never pooled)."""
    check_pooling(strategy, activation)
    group_BxL = jnp.asarray(group_BxL, jnp.int32)
    chunk = max(1, min(int(chunk_size), features_BxLxD.shape[1]))
    if strategy == "max":
        raw = _group_max(features_BxLxD, decoder_VxD, bias_V, group_BxL, int(n_groups), chunk, precision)
        return splade_activation(raw, activation)
    return _group_sum(features_BxLxD, decoder_VxD, bias_V, group_BxL, int(n_groups), chunk, activation, precision)


def mask_to_group(mask_BxL) -> jnp.ndarray:
    """Plain (unpacked) batches: group 0 on real tokens, −1 on pads."""
    return jnp.where(jnp.asarray(mask_BxL) != 0, 0, -1).astype(jnp.int32)
