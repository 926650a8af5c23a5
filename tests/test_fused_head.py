"""The fused (chunked, custom-VJP) SPLADE head equals the plain head: values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import max_rel

from jsplade.fused_head import fused_splade_pool, mask_to_group
from jsplade.pooling import splade_pool


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
