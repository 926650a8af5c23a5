"""Fused SPLADE head: vocabulary projection + pooling over tokens, tiled, with a custom VJP.

``fused_splade_pool(features_BxLxD, decoder_VxD, bias_V, group_BxL, n_groups, ...)`` returns the
pooled vectors [B, G, V] of G groups per row (G = 1 and group = 0 on real tokens, −1 on pads for plain
batches; G documents per row with packing). The [B, L, V] logits never exist: the work is split into
vocabulary tiles of ``vocab_tile`` entries (and, for long inputs, token chunks), so the live block is
B·C·T floats — small enough to stay in cache, which also makes it several times faster than the plain
head on CPUs.

Max pooling keeps, per vocabulary entry, the running maximum *and its token index*; the backward
routes each entry's gradient to that arg-max token only (what autodiff of a max does without exact
ties; the reference, torch.max over tokens, also picks one index) and forms d features / d decoder /
d bias tile by tile: on CPUs as a gather and a scatter-add (B·V·D work, no matmul), on accelerators as
products with the one-hot selection matrix (dense matmuls for the matrix units; bfloat16 operands when
the forward is bfloat16). Sum pooling (Σ_t a(logit)) recomputes each block's logits in the backward to
apply a'(logit). Values equal ``jsplade.splade.pooling.splade_pool`` on the full logits;
``pool_from_features`` is the one-document-per-row form.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jsplade.splade.pooling import check_pooling, splade_activation

# Live logits block budget (floats) and largest vocabulary tile, per backend, when none is given: small
# blocks that stay in cache on CPUs; on accelerators few large tiles (each a big matmul; a short loop).
_BLOCK_BUDGET = {"cpu": 1 << 24}
_DEFAULT_BLOCK_BUDGET = 1 << 27
_MAX_TILE = {"cpu": 512}
# Max pooling that is not differentiated (encoding) on CPUs: blocks of 2**19 floats (2 MiB, cache-sized):
# 32 x 160-token documents against V = 30,522 (hidden 64, 2-core Zen 4) pool at 151 GFLOP/s instead of 94
# with the 2**24 budget above; the training forward, which also records each maximum's token for the
# backward, keeps that budget (no gain measured there).
_INFER_BLOCK_BUDGET = {"cpu": 1 << 19}
_DEFAULT_MAX_TILE = 8192


def default_vocab_tile(vocab: int, backend: str | None = None) -> int:
    """Vocabulary tile for ``backend`` (default: JAX's): the vocabulary split into the fewest tiles of at most
    the backend's maximum, each rounded up to a multiple of 128 (30522 → 4 × 7680 on GPUs, 60 × 512 on CPUs)."""
    backend = backend or jax.default_backend()
    most = _MAX_TILE.get(backend, _DEFAULT_MAX_TILE)
    if most >= vocab:
        return vocab
    if backend == "cpu":
        return most
    n_tiles = -(-vocab // most)
    per_tile = -(-vocab // n_tiles)
    return min(most, -(-per_tile // 128) * 128)


def _token_chunks(x, chunk, fill):
    """[B, L, …] → [n, B, chunk, …] (padded with ``fill``)."""
    length = x.shape[1]
    n = -(-length // chunk)
    pad = n * chunk - length
    if pad:
        widths = [(0, 0)] * x.ndim
        widths[1] = (0, pad)
        x = jnp.pad(x, widths, constant_values=fill)
    return jnp.moveaxis(x.reshape(x.shape[0], n, chunk, *x.shape[2:]), 1, 0)


def _tile_starts(vocab, tile):
    """First entry of each vocabulary tile [n] int32. Tiles read the weights in place (no padded copy of the
    [V, D] decoder, which at V = 250,002 would cost as much as the weights): when ``tile`` does not divide V
    the last tile ends at V and overlaps its neighbour by ``n·tile − V`` entries, whose results it drops."""
    n = -(-vocab // tile)
    return jnp.minimum(jnp.arange(n, dtype=jnp.int32) * tile, vocab - tile)


def _weight_tile(x, start, tile):
    """The ``tile`` rows of ``x`` [V, …] from ``start`` (a slice of the weights, not a copy of all of them)."""
    return jax.lax.dynamic_slice_in_dim(x, start, tile, 0)


def _add_tile(acc_Vx, start, tile_Tx):
    """``acc[start : start + T] += tile`` in place (a scan carry), so the weight gradient is built in one
    [V, …] buffer instead of stacked tiles; the last tile's overlap carries zero cotangent and adds nothing."""
    rows = jax.lax.dynamic_slice_in_dim(acc_Vx, start, tile_Tx.shape[0], 0)
    return jax.lax.dynamic_update_slice_in_dim(acc_Vx, rows + tile_Tx, start, 0)


def _untile(x_nxBxGxT, vocab):
    """[n, B, G, T] → [B, G, V], dropping the last tile's overlap with its neighbour."""
    n, b, g, tile = x_nxBxGxT.shape
    flat = jnp.moveaxis(x_nxBxGxT, 0, 2).reshape(b, g, n * tile)
    overlap = n * tile - vocab
    if overlap:
        flat = jnp.concatenate([flat[:, :, : (n - 1) * tile], flat[:, :, (n - 1) * tile + overlap:]], axis=2)
    return flat


def _matmul_dtype(features):
    """Operand dtype of the backward's matmuls: the forward's (bfloat16 compute: bfloat16 operands, float32
    accumulation, as autodiff of the plain head does; float32: float32)."""
    return jnp.bfloat16 if features.dtype == jnp.bfloat16 else jnp.float32


def _logits(f_BxCxD, w_TxD, b_T, precision):
    return jnp.einsum("bcd,td->bct", f_BxCxD, w_TxD.astype(f_BxCxD.dtype), precision=precision,
                      preferred_element_type=jnp.float32) + b_T.astype(jnp.float32)


def _activation_grad(x, activation):
    """d a(x) / dx for the SPLADE activations (0 for x <= 0)."""
    pos = x > 0
    xp = jnp.where(pos, x, 0.0)
    d = 1.0 / (1.0 + xp)
    if activation == "log1p_relu":
        d = d / (1.0 + jnp.log1p(xp))
    return jnp.where(pos, d, 0.0)


def _layout(features, group, chunk, vocab, tile):
    """Token chunks of the features and group ids, each chunk's first position, each vocabulary tile's start."""
    f_chunks = _token_chunks(features, chunk, 0)
    g_chunks = _token_chunks(group, chunk, -1)
    starts = jnp.arange(f_chunks.shape[0], dtype=jnp.int32) * chunk
    return f_chunks, g_chunks, starts, _tile_starts(vocab, tile)


# --------------------------------------------------------------------------- max pooling
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _group_max(features, weight, bias, group, n_groups, chunk, tile, precision, infer_chunk):
    """Not differentiated (encoding): the maximum only, in token chunks of ``infer_chunk``."""
    return _group_max_fwd_impl(features, weight, bias, group, n_groups, infer_chunk, tile, precision,
                               with_index=False)[0]


def _group_max_fwd_impl(features, weight, bias, group, n_groups, chunk, tile, precision, with_index=True):
    """Running max (and, for the backward, its token index) per group and vocabulary entry."""
    batch = features.shape[0]
    f_chunks, g_chunks, starts, tile_starts = _layout(features, group, chunk, weight.shape[0], tile)

    def one_tile(tile_start):
        w_t, b_t = _weight_tile(weight, tile_start, tile), _weight_tile(bias, tile_start, tile)

        def step(carry, xs):
            best, where = carry  # [B,G,T] float32, int32
            f_c, g_c, start = xs
            logits = _logits(f_c, w_t, b_t, precision)  # [B,C,T]
            new_best, new_where = [], []
            for g in range(n_groups):
                masked = jnp.where((g_c == g)[:, :, None], logits, -jnp.inf)
                m = jnp.max(masked, axis=1)
                if not with_index:  # inference: the maximum only
                    new_best.append(jnp.maximum(m, best[:, g]))
                    continue
                idx = jnp.argmax(masked, axis=1).astype(jnp.int32) + start
                better = m > best[:, g]  # strict: keep the first arg-max, like a left-to-right max
                new_best.append(jnp.where(better, m, best[:, g]))
                new_where.append(jnp.where(better, idx, where[:, g]))
            if not with_index:
                return (jnp.stack(new_best, 1), where), None
            return (jnp.stack(new_best, 1), jnp.stack(new_where, 1)), None

        init = (jnp.full((batch, n_groups, tile), -jnp.inf, jnp.float32),
                jnp.zeros((batch, n_groups, tile), jnp.int32))
        (best, where), _ = jax.lax.scan(step, init, (f_chunks, g_chunks, starts))
        return best, where

    best, where = jax.lax.map(one_tile, tile_starts)
    vocab = weight.shape[0]
    return _untile(best, vocab), _untile(where, vocab)


def _group_max_fwd(features, weight, bias, group, n_groups, chunk, tile, precision, infer_chunk):
    best, where = _group_max_fwd_impl(features, weight, bias, group, n_groups, chunk, tile, precision)
    return best, (features, weight, bias, group, best, where)


def _tile_cotangent(x_BxGxV, tile):
    """[B, G, V] → [n, B, G, T], the inverse layout of ``_untile``: zeros where the last tile overlaps
    its neighbour, so the overlap adds nothing to any gradient."""
    b, g, vocab = x_BxGxV.shape
    n = -(-vocab // tile)
    overlap = n * tile - vocab
    if overlap:
        zeros = jnp.zeros((b, g, overlap), x_BxGxV.dtype)
        x_BxGxV = jnp.concatenate([x_BxGxV[:, :, : (n - 1) * tile], zeros, x_BxGxV[:, :, (n - 1) * tile:]], axis=2)
    return jnp.moveaxis(x_BxGxV.reshape(b, g, n, tile), 2, 0)


# Backends whose max-pooling backward gathers and scatters instead of multiplying by the one-hot matrix.
_GATHER_MAX_BWD_BACKENDS = ("cpu",)


def _group_max_bwd(n_groups, chunk, tile, precision, infer_chunk, res, g_best):
    features, weight, bias, group, best, where = res
    g_best = jnp.where(jnp.isfinite(best), g_best, 0.0).astype(jnp.float32)  # empty groups: no gradient
    if jax.default_backend() in _GATHER_MAX_BWD_BACKENDS:
        d_f, d_w = _group_max_bwd_gather(features, weight, g_best, where, tile, precision)
    else:
        d_f, d_w = _group_max_bwd_matmul(features, weight, g_best, where, n_groups, chunk, tile, precision)
    d_b = jnp.sum(g_best, axis=(0, 1))
    return (d_f.astype(features.dtype), d_w.astype(weight.dtype), d_b.astype(bias.dtype),
            jnp.zeros(group.shape, jax.dtypes.float0))


def _group_max_bwd_gather(features, weight, g_best, where, tile, precision):
    """Each (row, group, entry) routes its gradient to one token, so the backward needs no matmul:
    d weight[v] = Σ_(b,g) g[b,g,v] · features[b, where[b,g,v]]   (a gather per vocabulary tile),
    d features[b, where[b,g,v]] += g[b,g,v] · weight[v]          (a scatter-add).
    B·G·V·D multiply-adds instead of the 2·B·L·V·D of the one-hot products: on a 2-core CPU, 0.27 s instead
    of 1.6 s for 16 × 256 tokens and a 30522-entry vocabulary."""
    batch, length, dim = features.shape
    n_groups = g_best.shape[1]
    f32 = features.astype(jnp.float32)
    g_tiles = _tile_cotangent(g_best, tile).reshape(-1, batch * n_groups, tile)  # [n, B·G, T]
    where_tiles = _tile_cotangent(where, tile).reshape(-1, batch * n_groups, tile)
    row_base = (jnp.arange(batch, dtype=jnp.int32) * length).repeat(n_groups)[:, None]  # [B·G, 1]
    f_rows = f32.reshape(batch * length, dim)

    def one_tile(carry, xs):
        d_f_rows, d_w = carry
        tile_start, g_t, where_t = xs
        w_t = _weight_tile(weight, tile_start, tile)
        rows = (row_base + where_t).reshape(-1)  # [B·G·T] token rows of the flattened features
        picked = f_rows[rows].reshape(batch * n_groups, tile, dim)
        d_w = _add_tile(d_w, tile_start, jnp.einsum("rt,rtd->td", g_t, picked, precision=precision))
        d_f_rows = d_f_rows.at[rows].add((g_t[:, :, None] * w_t.astype(jnp.float32)[None]).reshape(-1, dim))
        return (d_f_rows, d_w), None

    init = (jnp.zeros((batch * length, dim), jnp.float32), jnp.zeros(weight.shape, jnp.float32))
    (d_f_rows, d_w), _ = jax.lax.scan(one_tile, init, (_tile_starts(weight.shape[0], tile), g_tiles, where_tiles))
    return d_f_rows.reshape(batch, length, dim), d_w


def _group_max_bwd_matmul(features, weight, g_best, where, n_groups, chunk, tile, precision):
    """The same gradients as products with the one-hot selection matrix, tile by tile: dense matmuls, which
    is what matrix units (GPU, TPU) do fastest."""
    batch, length, dim = features.shape
    f_chunks = _token_chunks(features, chunk, 0)
    starts = jnp.arange(f_chunks.shape[0], dtype=jnp.int32) * chunk
    g_tiles = _tile_cotangent(g_best, tile)  # [n, B, G, T]
    where_tiles = _tile_cotangent(where, tile)

    cdt = _matmul_dtype(features)

    def one_tile(carry, xs):
        d_f_chunks, d_w = carry
        tile_start, g_t, where_t = xs
        w_t = _weight_tile(weight, tile_start, tile)
        w_c = w_t.astype(cdt)

        def step(d_w, ys):
            f_c, start, d_f_c = ys
            positions = start + jnp.arange(chunk, dtype=jnp.int32)
            # g_sel[b, c, t] = Σ_g g_t[b, g, t] · [where_t[b, g, t] == start + c]
            g_sel = jnp.zeros((batch, chunk, tile), jnp.float32)
            for g in range(n_groups):
                hit = where_t[:, g][:, None, :] == positions[None, :, None]
                g_sel = g_sel + jnp.where(hit, g_t[:, g][:, None, :], 0.0)
            g_sel = g_sel.astype(cdt)
            d_f_c = d_f_c + jnp.einsum("bct,td->bcd", g_sel, w_c, precision=precision,
                                       preferred_element_type=jnp.float32)
            d_w = d_w + jnp.einsum("bct,bcd->td", g_sel, f_c.astype(cdt), precision=precision,
                                   preferred_element_type=jnp.float32)
            return d_w, d_f_c

        d_w_t, d_f_chunks = jax.lax.scan(step, jnp.zeros(w_t.shape, jnp.float32), (f_chunks, starts, d_f_chunks))
        return (d_f_chunks, _add_tile(d_w, tile_start, d_w_t)), None

    init = (jnp.zeros(f_chunks.shape, jnp.float32), jnp.zeros(weight.shape, jnp.float32))
    (d_f_chunks, d_w), _ = jax.lax.scan(one_tile, init, (_tile_starts(weight.shape[0], tile), g_tiles, where_tiles))
    d_f = jnp.moveaxis(d_f_chunks, 0, 1).reshape(batch, -1, dim)[:, :length]
    return d_f, d_w


_group_max.defvjp(_group_max_fwd, _group_max_bwd)


# --------------------------------------------------------------------------- sum pooling
@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _group_sum(features, weight, bias, group, n_groups, chunk, tile, activation, precision):
    batch = features.shape[0]
    f_chunks, g_chunks, _, tile_starts = _layout(features, group, chunk, weight.shape[0], tile)

    def one_tile(tile_start):
        w_t, b_t = _weight_tile(weight, tile_start, tile), _weight_tile(bias, tile_start, tile)

        def step(acc, xs):
            f_c, g_c = xs
            act = splade_activation(_logits(f_c, w_t, b_t, precision), activation)
            parts = [jnp.sum(jnp.where((g_c == g)[:, :, None], act, 0.0), axis=1) for g in range(n_groups)]
            return acc + jnp.stack(parts, 1), None

        acc, _ = jax.lax.scan(step, jnp.zeros((batch, n_groups, tile), jnp.float32), (f_chunks, g_chunks))
        return acc

    return _untile(jax.lax.map(one_tile, tile_starts), weight.shape[0])


def _group_sum_fwd(features, weight, bias, group, n_groups, chunk, tile, activation, precision):
    out = _group_sum(features, weight, bias, group, n_groups, chunk, tile, activation, precision)
    return out, (features, weight, bias, group)


def _group_sum_bwd(n_groups, chunk, tile, activation, precision, res, g_out):
    features, weight, bias, group = res
    batch, length, dim = features.shape
    f_chunks, g_chunks, _, tile_starts = _layout(features, group, chunk, weight.shape[0], tile)
    up_tiles = _tile_cotangent(g_out.astype(jnp.float32), tile)  # [n, B, G, T]

    cdt = _matmul_dtype(features)

    def one_tile(carry, xs):
        d_f_chunks, d_w, d_b = carry
        tile_start, up_t = xs
        w_t, b_t = _weight_tile(weight, tile_start, tile), _weight_tile(bias, tile_start, tile)
        w_c = w_t.astype(cdt)

        def step(carry, ys):
            d_w, d_b = carry
            f_c, grp_c, d_f_c = ys
            logits = _logits(f_c, w_t, b_t, precision)
            upstream = jnp.zeros(logits.shape, jnp.float32)
            for g in range(n_groups):
                upstream = upstream + jnp.where((grp_c == g)[:, :, None], up_t[:, g][:, None, :], 0.0)
            g_logits = upstream * _activation_grad(logits, activation)
            g_c = g_logits.astype(cdt)
            d_f_c = d_f_c + jnp.einsum("bct,td->bcd", g_c, w_c, precision=precision,
                                       preferred_element_type=jnp.float32)
            d_w = d_w + jnp.einsum("bct,bcd->td", g_c, f_c.astype(cdt), precision=precision,
                                   preferred_element_type=jnp.float32)
            return (d_w, d_b + jnp.sum(g_logits, axis=(0, 1))), d_f_c

        init = (jnp.zeros(w_t.shape, jnp.float32), jnp.zeros(b_t.shape, jnp.float32))
        (d_w_t, d_b_t), d_f_chunks = jax.lax.scan(step, init, (f_chunks, g_chunks, d_f_chunks))
        return (d_f_chunks, _add_tile(d_w, tile_start, d_w_t), _add_tile(d_b, tile_start, d_b_t)), None

    init = (jnp.zeros(f_chunks.shape, jnp.float32), jnp.zeros(weight.shape, jnp.float32),
            jnp.zeros(bias.shape, jnp.float32))
    (d_f_chunks, d_w, d_b), _ = jax.lax.scan(one_tile, init, (tile_starts, up_tiles))
    d_f = jnp.moveaxis(d_f_chunks, 0, 1).reshape(batch, -1, dim)[:, :length]
    return (d_f.astype(features.dtype), d_w.astype(weight.dtype), d_b.astype(bias.dtype),
            jnp.zeros(group.shape, jax.dtypes.float0))


_group_sum.defvjp(_group_sum_fwd, _group_sum_bwd)


# --------------------------------------------------------------------------- public
def fused_splade_pool(features, decoder_weight, decoder_bias, group_ids, n_groups: int = 1,
                      strategy: str = "max", activation: str = "log1p_relu", chunk_size: int | None = None,
                      precision=None, vocab_tile: int | None = None) -> jnp.ndarray:
    """Pooled SPLADE vectors [B, G, V] float32 of each group: head ``features`` [B, L, D], the tied
    ``decoder_weight`` [V, D] and ``decoder_bias`` [V], ``group_ids`` [B, L] (0 … G−1; −1 = padding, never pooled).

    ``vocab_tile``: vocabulary entries per tile (default: ``default_vocab_tile``).
    ``chunk_size``: tokens per block (default: all of them unless B·L·vocab_tile exceeds the backend's block
    budget: 2²⁴ floats on CPUs, 2²⁷ elsewhere; max pooling that is not differentiated uses 2¹⁹ on CPUs).
    """
    check_pooling(strategy, activation)
    features_BxLxD, decoder_VxD, bias_V = features, decoder_weight, decoder_bias
    group_BxL = jnp.asarray(group_ids, jnp.int32)
    batch, length = features_BxLxD.shape[:2]
    vocab = decoder_VxD.shape[0]
    tile = max(1, min(int(vocab_tile if vocab_tile is not None else default_vocab_tile(vocab)), vocab))
    auto_chunk = chunk_size is None
    if chunk_size is None:
        budget = _BLOCK_BUDGET.get(jax.default_backend(), _DEFAULT_BLOCK_BUDGET)
        chunk_size = max(1, budget // max(1, batch * tile))
    chunk = max(1, min(int(chunk_size), length))
    infer_chunk = chunk
    if auto_chunk and jax.default_backend() in _INFER_BLOCK_BUDGET:
        infer_chunk = max(1, min(length, _INFER_BLOCK_BUDGET[jax.default_backend()] // max(1, batch * tile)))
    if strategy == "max":
        raw = _group_max(features_BxLxD, decoder_VxD, bias_V, group_BxL, int(n_groups), chunk, tile, precision,
                         infer_chunk)
        return splade_activation(raw, activation)
    return _group_sum(features_BxLxD, decoder_VxD, bias_V, group_BxL, int(n_groups), chunk, tile, activation,
                      precision)


def mask_to_group(attention_mask) -> jnp.ndarray:
    """Plain (unpacked) batches: group 0 on real tokens, −1 on pads."""
    return jnp.where(jnp.asarray(attention_mask) != 0, 0, -1).astype(jnp.int32)


def pool_from_features(features, decoder_weight, decoder_bias, attention_mask, strategy: str = "max",
                       activation: str = "log1p_relu", chunk_size: int | None = None, precision=None) -> jnp.ndarray:
    """``splade_pool(features @ decoder_weightᵀ + decoder_bias, attention_mask)`` [B, V] of an unpacked batch,
    without materialising the [B, L, V] logits (``fused_splade_pool`` with one group per row)."""
    return fused_splade_pool(features, decoder_weight, decoder_bias, mask_to_group(attention_mask), 1, strategy,
                             activation, chunk_size, precision)[:, 0]
