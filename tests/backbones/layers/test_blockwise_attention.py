"""Blockwise (online-softmax) attention equals the plain path: values and gradients.

Tolerance: 1e-5 relative to the largest value (observed ~5e-7: summation order only).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.backbones.layers.attention import attention, resolve_impl


def _qkv(rng, b, length, h, k):
    return tuple(jnp.asarray(rng.standard_normal((b, length, h, k)), jnp.float32) for _ in range(3))


def _mask_and_segments(b, length):
    mask = np.ones((b, length), np.int32)
    mask[-1, length // 2 + 3:] = 0
    seg = np.zeros((b, length), np.int32)
    cuts = [0, length // 3, length // 2 + 3, length]
    for i in range(3):
        seg[:, cuts[i]:cuts[i + 1]] = i + 1
    return mask, jnp.asarray(seg)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("length,block,head_dim", [(37, 8, 16), (300, 64, 16), (64, 64, 16), (300, 64, 12)])
def test_values_and_gradients_match_plain(packed, length, block, head_dim):
    """Unpacked, the padded last row leaves key blocks of both kinds: all keys allowed (no bias added) and
    some disallowed. Head size 16: 1/√d folded into q (exact); 12: the scores are divided, as in "xla"."""
    rng = np.random.default_rng(length)
    q, k, v = _qkv(rng, 2, length, 2, head_dim)
    mask, seg = _mask_and_segments(2, length)
    seg = seg if packed else None
    cot = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def loss(impl):
        return lambda q, k, v: jnp.sum(attention(q, k, v, mask, segment_ids=seg, impl=impl, chunk_size=block) * cot)

    ref = attention(q, k, v, mask, segment_ids=seg, impl="xla")
    for impl in ("blockwise", "chunked"):
        assert max_rel(attention(q, k, v, mask, segment_ids=seg, impl=impl, chunk_size=block), ref) < 1e-5
    g_ref = jax.grad(loss("xla"), argnums=(0, 1, 2))(q, k, v)
    g_blk = jax.jit(jax.grad(loss("blockwise"), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_ref, g_blk):
        assert max_rel(b, a) < 1e-5


def test_bfloat16_values_and_gradients_track_float32():
    """bfloat16 operands, float32 accumulation and softmax: values and gradients within bfloat16 rounding of
    the float32 plain path (relative Frobenius error; observed 3–5e-3), in the input dtype."""
    rng = np.random.default_rng(7)
    q, k, v = _qkv(rng, 2, 300, 2, 64)
    mask, _ = _mask_and_segments(2, 300)
    cot = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def loss(dtype, impl):
        def f(q, k, v):
            out = attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask, impl=impl, chunk_size=64)
            return jnp.sum(out.astype(jnp.float32) * cot)
        return f

    def rel(a, b):
        return float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))

    bf16 = tuple(x.astype(jnp.bfloat16) for x in (q, k, v))
    out16 = attention(*bf16, mask, impl="blockwise", chunk_size=64)
    assert out16.dtype == jnp.bfloat16
    assert rel(out16, attention(q, k, v, mask, impl="xla")) < 1e-2
    g16 = jax.jit(jax.grad(loss(jnp.bfloat16, "blockwise"), argnums=(0, 1, 2)))(*bf16)
    g32 = jax.grad(loss(jnp.float32, "xla"), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g16, g32):
        assert a.dtype == jnp.bfloat16
        assert rel(a, b) < 1e-2


def test_row_with_every_key_masked_averages_uniformly_like_the_reference():
    rng = np.random.default_rng(1)
    q, k, v = _qkv(rng, 2, 50, 1, 8)
    mask = np.ones((2, 50), np.int32)
    mask[0] = 0
    out = attention(q, k, v, mask, impl="blockwise", chunk_size=16)
    np.testing.assert_allclose(np.asarray(out[0]), np.broadcast_to(np.asarray(v[0]).mean(0), (50, 1, 8)), atol=1e-6)
    assert max_rel(out, attention(q, k, v, mask, impl="xla")) < 1e-5


@pytest.mark.slow
def test_long_case_4096_tokens_values_and_gradients():
    rng = np.random.default_rng(4096)
    q, k, v = _qkv(rng, 1, 4096, 2, 16)
    mask = np.ones((1, 4096), np.int32)
    mask[0, 4000:] = 0
    cot = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

    def loss(impl):
        return lambda q, k, v: jnp.sum(attention(q, k, v, mask, impl=impl, chunk_size=512) * cot)

    ref = attention(q, k, v, mask, impl="xla")
    assert max_rel(attention(q, k, v, mask, impl="blockwise", chunk_size=512), ref) < 1e-5
    g_ref = jax.jit(jax.grad(loss("xla"), argnums=(0, 1, 2)))(q, k, v)
    g_blk = jax.jit(jax.grad(loss("blockwise"), argnums=(0, 1, 2)))(q, k, v)
    for a, b in zip(g_ref, g_blk):
        assert max_rel(b, a) < 1e-5


def test_splash_kernel_in_interpret_mode_matches():
    """The TPU Pallas kernel, run by the Pallas interpreter on CPU (real tokens compared)."""
    pytest.importorskip("jax.experimental.pallas.ops.tpu.splash_attention")
    from jsplade.backbones.layers.splash_attention import splash_attention

    rng = np.random.default_rng(2)
    q, k, v = _qkv(rng, 2, 256, 2, 128)
    mask = np.ones((2, 256), np.int32)
    mask[1, 100:] = 0
    out = splash_attention(q, k, v, mask, interpret=True)
    ref = attention(q, k, v, mask, impl="xla")
    real = mask.astype(bool)
    assert max_rel(np.asarray(out)[real], np.asarray(ref)[real]) < 1e-5


def test_impl_resolution_and_fallbacks():
    f32, bf16 = jnp.float32, jnp.bfloat16
    assert resolve_impl("auto", 512, f32, False, False, 2048) == "xla"
    assert resolve_impl("auto", 4096, f32, False, False, 2048) == "blockwise"
    assert resolve_impl("cudnn", 512, bf16, False, False, 2048) == "blockwise"  # no GPU here
    assert resolve_impl("splash", 512, f32, False, False, 2048) == "blockwise"  # no TPU here
    assert resolve_impl("blockwise", 512, f32, False, True, 2048) == "xla"  # attention dropout needs probabilities
    with pytest.raises(ValueError, match="attention impl"):
        resolve_impl("flash9", 10, f32, False, False, 2048)
