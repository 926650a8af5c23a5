"""The fused (chunked, custom-VJP) SPLADE head equals the plain head: values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.splade.fused_head import default_vocab_tile, fused_splade_pool, mask_to_group
from jsplade.splade.pooling import splade_activation, splade_pool


def _data(rng, b, length, d, v):
    f = jnp.asarray(rng.standard_normal((b, length, d)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((v, d)) * 0.5, jnp.float32)
    bias = jnp.asarray(rng.standard_normal((v,)) * 0.1, jnp.float32)
    mask = np.ones((b, length), np.int32)
    if b > 1:
        mask[1, length // 2:] = 0
        mask[-1, 3:] = 0
    return f, w, bias, mask


@pytest.mark.parametrize("strategy", ["max", "sum"])
@pytest.mark.parametrize("activation", ["log1p_relu", "relu"])
@pytest.mark.parametrize("chunk,tile", [(1, 7), (6, 50), (64, 16), (None, 512)])
def test_values_and_gradients(strategy, activation, chunk, tile):
    rng = np.random.default_rng(tile)
    f, w, bias, mask = _data(rng, 3, 37, 8, 50)
    cot = jnp.asarray(rng.standard_normal((3, 50)), jnp.float32)

    def plain(f, w, b):
        return splade_pool(jnp.einsum("bld,vd->blv", f, w) + b, mask, strategy, activation)

    def fused(f, w, b):
        return fused_splade_pool(f, w, b, mask_to_group(mask), 1, strategy, activation, chunk_size=chunk,
                                 vocab_tile=tile)[:, 0]

    np.testing.assert_allclose(np.asarray(fused(f, w, bias)), np.asarray(plain(f, w, bias)), rtol=1e-6, atol=1e-6)
    g_plain = jax.grad(lambda *a: jnp.sum(plain(*a) * cot), argnums=(0, 1, 2))(f, w, bias)
    g_fused = jax.jit(jax.grad(lambda *a: jnp.sum(fused(*a) * cot), argnums=(0, 1, 2)))(f, w, bias)
    for a, b in zip(g_plain, g_fused):
        assert max_rel(b, a) < 1e-5


def test_groups_pool_each_document_separately():
    rng = np.random.default_rng(3)
    f, w, bias, _ = _data(rng, 1, 40, 8, 30)
    group = np.full((1, 40), -1)
    spans = [(0, 10), (10, 25), (25, 33)]
    for g, (s, e) in enumerate(spans):
        group[0, s:e] = g
    out = fused_splade_pool(f, w, bias, group, 3, chunk_size=4, vocab_tile=7)
    for g, (s, e) in enumerate(spans):
        ref = splade_pool(jnp.einsum("bld,vd->blv", f[:, s:e], w) + bias, np.ones((1, e - s)))
        np.testing.assert_allclose(np.asarray(out[0, g]), np.asarray(ref[0]), rtol=1e-6, atol=0)


@pytest.mark.slow
def test_long_case_4096_tokens():
    """One 4096-token row with a 30522-wide vocabulary: the plain head's [1, 4096, V] logits (0.5 GB)
    against the fused head (chunks of 256 tokens), values and gradients."""
    rng = np.random.default_rng(9)
    f = jnp.asarray(rng.standard_normal((1, 4096, 32)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((30522, 32)) * 0.2, jnp.float32)
    bias = jnp.asarray(rng.standard_normal((30522,)) * 0.1, jnp.float32)
    mask = np.ones((1, 4096), np.int32)
    mask[0, 4090:] = 0
    cot = jnp.asarray(rng.random((1, 30522)), jnp.float32)
    plain = lambda f, w, b: splade_pool(jnp.einsum("bld,vd->blv", f, w) + b, mask)  # noqa: E731
    fused = lambda f, w, b: fused_splade_pool(f, w, b, mask_to_group(mask), 1, chunk_size=256)[:, 0]  # noqa: E731
    # Same per-entry arithmetic; XLA may block the two matmuls differently (1 ulp).
    np.testing.assert_allclose(np.asarray(jax.jit(fused)(f, w, bias)), np.asarray(jax.jit(plain)(f, w, bias)),
                               rtol=1e-6, atol=0)
    g_plain = jax.jit(jax.grad(lambda *a: jnp.sum(plain(*a) * cot), argnums=(0, 1, 2)))(f, w, bias)
    g_fused = jax.jit(jax.grad(lambda *a: jnp.sum(fused(*a) * cot), argnums=(0, 1, 2)))(f, w, bias)
    for a, b in zip(g_plain, g_fused):
        assert max_rel(b, a) < 1e-5


@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_bfloat16_matches_plain_bfloat16_head(strategy):
    """bfloat16 features: the fused head's backward runs its matmuls on bfloat16 operands with float32
    accumulation, as autodiff of the plain bfloat16 head does; both are within bfloat16 rounding of the
    float32 result on the same operands (observed ≤ 7e-3), and of each other (observed ≤ 3e-3)."""
    rng = np.random.default_rng(21)
    f32, w, bias, mask = _data(rng, 3, 64, 16, 300)
    cot = jnp.asarray(rng.standard_normal((3, 300)), jnp.float32)
    f16 = f32.astype(jnp.bfloat16)

    def plain(f, w, b):
        logits = jnp.einsum("bld,vd->blv", f, w.astype(f.dtype), preferred_element_type=jnp.float32) + b
        return splade_pool(logits, mask, strategy)

    def fused(f, w, b):
        return fused_splade_pool(f, w, b, mask_to_group(mask), 1, strategy, chunk_size=16, vocab_tile=128)[:, 0]

    w_rounded = w.astype(jnp.bfloat16).astype(jnp.float32)  # the float32 reference sees the same operands
    ref = jax.grad(lambda *a: jnp.sum(plain(*a) * cot), argnums=(0, 1, 2))(f16.astype(jnp.float32), w_rounded, bias)
    g_plain = jax.grad(lambda *a: jnp.sum(plain(*a) * cot), argnums=(0, 1, 2))(f16, w, bias)
    g_fused = jax.jit(jax.grad(lambda *a: jnp.sum(fused(*a) * cot), argnums=(0, 1, 2)))(f16, w, bias)
    np.testing.assert_allclose(np.asarray(fused(f16, w, bias)), np.asarray(plain(f16, w, bias)), rtol=1e-6, atol=1e-6)
    assert g_fused[0].dtype == jnp.bfloat16 and g_fused[1].dtype == jnp.float32
    def norm_rel(a, b):  # ‖a − b‖ / ‖b‖: bfloat16 sums cancel, so elementwise ratios are meaningless
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.linalg.norm(a - b) / np.linalg.norm(b)

    for fu, pl, r in zip(g_fused, g_plain, ref):
        assert norm_rel(fu, r) < 1e-2 and norm_rel(pl, r) < 1e-2
        assert norm_rel(fu, pl) < 1e-2


def test_default_vocab_tile_per_backend():
    assert default_vocab_tile(30522, "cpu") == 512  # cache-sized blocks: 60 tiles
    assert default_vocab_tile(30522, "gpu") == 7680  # 4 tiles of a multiple of 128 (30720 ≥ 30522)
    assert default_vocab_tile(30522, "tpu") == 7680
    assert default_vocab_tile(8193, "gpu") == 4224
    assert default_vocab_tile(300, "gpu") == 300 and default_vocab_tile(300, "cpu") == 300
    for vocab in (1000, 8192, 8193, 30522, 250002):
        tile = default_vocab_tile(vocab, "gpu")
        n = -(-vocab // tile)
        assert tile <= 8192 and n * tile - vocab < 128 * n  # padding under one 128-row per tile


@pytest.mark.parametrize("backward", ["gather", "matmul"])
@pytest.mark.parametrize("chunk,tile,groups", [(None, 512, 1), (6, 7, 1), (5, 16, 3)])
def test_max_backward_both_formulations(monkeypatch, backward, chunk, tile, groups):
    """Max pooling's backward exists twice — gather/scatter (CPUs) and one-hot matmuls (accelerators): each
    equals autodiff of the plain head, with packed groups too."""
    import jsplade.splade.fused_head as fh

    monkeypatch.setattr(fh, "_GATHER_MAX_BWD_BACKENDS", ("cpu",) if backward == "gather" else ())
    rng = np.random.default_rng(5 + groups)
    f, w, bias, _ = _data(rng, 2, 33, 8, 40)
    group = np.full((2, 33), -1)
    bounds = np.linspace(0, 30, groups + 1).astype(int)
    for g in range(groups):
        group[:, bounds[g]:bounds[g + 1]] = g
    group[1, 20:] = -1  # a shorter second row: its last group may be empty
    cot = jnp.asarray(rng.standard_normal((2, groups, 40)), jnp.float32)

    def plain(f, w, b):
        act = splade_activation(jnp.einsum("bld,vd->blv", f, w) + b)
        out = [jnp.max(jnp.where((group == g)[:, :, None], act, 0.0), axis=1) for g in range(groups)]
        return jnp.stack(out, 1)

    def fused(f, w, b):
        return fused_splade_pool(f, w, b, group, groups, chunk_size=chunk, vocab_tile=tile)

    np.testing.assert_allclose(np.asarray(fused(f, w, bias)), np.asarray(plain(f, w, bias)), rtol=1e-6, atol=1e-6)
    g_plain = jax.grad(lambda *a: jnp.sum(plain(*a) * cot), argnums=(0, 1, 2))(f, w, bias)
    g_fused = jax.jit(jax.grad(lambda *a: jnp.sum(fused(*a) * cot), argnums=(0, 1, 2)))(f, w, bias)
    for a, b in zip(g_plain, g_fused):
        assert max_rel(b, a) < 1e-5


@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_no_copy_of_the_decoder_when_the_tile_does_not_divide_the_vocabulary(strategy):
    """30,522 = 59 × 512 + 314: the last tile overlaps its neighbour instead of padding a copy of the [V, D]
    decoder (which, at XLM-R's 250,002 entries, cost as much again as the weights), and the weight gradient is
    accumulated in one buffer. XLA's plan for the pooled vectors and for their gradient needs scratch memory
    far below the decoder's size (measured: 2.2 MiB / 8 MiB against 30 MiB of weights)."""
    vocab, dim = 30522, 256
    f = jax.ShapeDtypeStruct((2, 128, dim), jnp.float32)
    w = jax.ShapeDtypeStruct((vocab, dim), jnp.float32)
    b = jax.ShapeDtypeStruct((vocab,), jnp.float32)
    g = jax.ShapeDtypeStruct((2, 128), jnp.int32)

    def pooled(f, w, b, g):
        return fused_splade_pool(f, w, b, g, 1, strategy, vocab_tile=512)

    def grads(f, w, b, g):
        return jax.grad(lambda *a: jnp.sum(pooled(*a, g)), argnums=(0, 1, 2))(f, w, b)

    weight_bytes = vocab * dim * 4
    for fn in (pooled, grads):
        plan = jax.jit(fn).lower(f, w, b, g).compile().memory_analysis()
        assert plan.temp_size_in_bytes < weight_bytes / 4, (fn.__name__, plan.temp_size_in_bytes, weight_bytes)
