"""jsplade.backbones.layers.scores: the key-mask bias against a numpy mask formula, the float32-accumulating product
against a float64 numpy einsum (and against the bfloat16-rounded product it avoids), the 1/√d split against the
direct ⟨q, k⟩/√d, and the head-major swap against ``np.swapaxes``.

Tolerances: the products 1e-6 relative to the largest |value| (``max_rel``; float32 accumulation of exact
bfloat16 or float32 operands); the power-of-two folding of 1/√d bit-exact, as the module claims.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.backbones.layers.scores import float32_product, heads_first, key_bias, split_scale

HIGHEST = jax.lax.Precision.HIGHEST


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_key_bias_without_segments(dtype):
    mask = np.array([[1, 1, 0, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    bias = key_bias(jnp.asarray(mask), dtype)
    assert bias.shape == (3, 1, 1, 5) and bias.dtype == dtype
    lowest = np.float32(jnp.finfo(dtype).min)
    want = np.where(mask.astype(bool), np.float32(0), lowest)[:, None, None, :]
    np.testing.assert_array_equal(np.asarray(bias.astype(jnp.float32)), want)
    assert np.all(np.isfinite(np.asarray(bias.astype(jnp.float32))))  # finfo.min, never −inf
    # any nonzero value marks a real key, bool masks too
    np.testing.assert_array_equal(key_bias(jnp.asarray(mask * 7), dtype), bias)
    np.testing.assert_array_equal(key_bias(jnp.asarray(mask.astype(bool)), dtype), bias)


def test_key_bias_with_segments_is_block_diagonal_and_masked():
    rng = np.random.default_rng(0)
    mask = rng.integers(0, 2, (2, 7)).astype(np.int32)
    q_seg = rng.integers(0, 3, (2, 4)).astype(np.int32)  # a block of queries
    k_seg = rng.integers(0, 3, (2, 7)).astype(np.int32)
    bias = np.asarray(key_bias(jnp.asarray(mask), jnp.float32, jnp.asarray(q_seg), jnp.asarray(k_seg)))
    assert bias.shape == (2, 1, 4, 7)
    want = np.empty((2, 1, 4, 7), np.float32)
    for b in range(2):
        for i in range(4):
            for j in range(7):
                allowed = mask[b, j] != 0 and q_seg[b, i] == k_seg[b, j]
                want[b, 0, i, j] = 0.0 if allowed else np.finfo(np.float32).min
    np.testing.assert_array_equal(bias, want)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_float32_product_accumulates_and_returns_float32(dtype):
    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.standard_normal((2, 3, 9, 64)), dtype)
    b = jnp.asarray(rng.standard_normal((2, 3, 11, 64)), dtype)
    out = float32_product("bhqk,bhlk->bhql", a, b, HIGHEST)
    assert out.dtype == jnp.float32 and out.shape == (2, 3, 9, 11)
    a64, b64 = (np.asarray(t.astype(jnp.float32), np.float64) for t in (a, b))  # the operands, exactly
    ref = np.einsum("bhqk,bhlk->bhql", a64, b64)
    assert max_rel(out, ref) < 1e-6
    if dtype == jnp.bfloat16:  # a product rounded to bfloat16 on the way would be ~1e-3 off
        rounded = jnp.einsum("bhqk,bhlk->bhql", a, b)
        assert rounded.dtype == jnp.bfloat16
        assert max_rel(rounded.astype(jnp.float32), ref) > 1e-3


@pytest.mark.parametrize("dim", [1, 4, 16, 64, 256])
def test_split_scale_folds_a_power_of_two_root_into_q_exactly(dim):
    rng = np.random.default_rng(dim)
    for dtype in (jnp.float32, jnp.bfloat16):
        q = jnp.asarray(rng.standard_normal((2, 5, 3, dim)), dtype)
        k = jnp.asarray(rng.standard_normal((2, 7, 3, dim)), dtype)
        scaled, divisor = split_scale(q, dim)
        assert divisor is None and scaled.dtype == dtype
        factor = 1.0 / math.sqrt(dim)
        # multiplying by a power of two is exact: the folded q is q·2^(-log2 √d) bit for bit
        np.testing.assert_array_equal(np.asarray(scaled.astype(jnp.float32)),
                                      np.asarray(q.astype(jnp.float32)) * np.float32(factor))
        folded = float32_product("bqhk,blhk->bhql", scaled, k, HIGHEST)
        direct = float32_product("bqhk,blhk->bhql", q, k, HIGHEST) * np.float32(factor)
        np.testing.assert_array_equal(np.asarray(folded), np.asarray(direct))


@pytest.mark.parametrize("dim", [2, 8, 32, 128])
def test_split_scale_divides_the_scores_otherwise(dim):
    rng = np.random.default_rng(dim)
    q = jnp.asarray(rng.standard_normal((1, 6, 2, dim)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((1, 6, 2, dim)), jnp.float32)
    scaled, divisor = split_scale(q, dim)
    assert scaled is q  # q is left as it is
    assert divisor.dtype == jnp.float32 and float(divisor) == np.float32(math.sqrt(dim))
    scores = float32_product("bqhk,blhk->bhql", scaled, k, HIGHEST) / divisor
    ref = np.einsum("bqhk,blhk->bhql", np.asarray(q, np.float64), np.asarray(k, np.float64)) / math.sqrt(dim)
    assert max_rel(scores, ref) < 1e-6


def test_heads_first_swaps_length_and_heads_and_is_its_own_inverse():
    x = np.random.default_rng(3).standard_normal((2, 5, 3, 4)).astype(np.float32)
    y = heads_first(jnp.asarray(x))
    assert y.shape == (2, 3, 5, 4)
    np.testing.assert_array_equal(np.asarray(y), np.swapaxes(x, 1, 2))
    np.testing.assert_array_equal(np.asarray(heads_first(y)), x)
