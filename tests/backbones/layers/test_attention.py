"""jsplade.backbones.layers.attention, the full-score path ("xla", and "chunked" built on it): its hand-written backward
pass equals autodiff of the textbook formula, with key padding, packing segments, dropout and bfloat16."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import max_rel

from jsplade.backbones.layers.attention import attention
from jsplade.backbones.layers.scores import key_bias
from jsplade.backbones.layers.dropout import dropout


def _reference(q, k, v, mask, seg, rate=0.0, key=None):
    """softmax(q kᵀ/√d + bias) v written directly on [B, L, H, K] operands, differentiated by JAX."""
    bias = key_bias(mask, jnp.float32, seg, seg)
    scores = jnp.einsum("bqhk,blhk->bhql", q, k, precision="highest").astype(jnp.float32)
    probs = jax.nn.softmax(scores / math.sqrt(q.shape[-1]) + bias, axis=-1)
    probs = dropout(probs, rate, key).astype(v.dtype)
    return jnp.einsum("bhql,blhk->bqhk", probs, v, precision="highest")


def _inputs(seed, b=2, length=23, h=3, d=8):
    rng = np.random.default_rng(seed)
    q, k, v, cot = (jnp.asarray(rng.standard_normal((b, length, h, d)), jnp.float32) for _ in range(4))
    mask = np.ones((b, length), np.int32)
    mask[1, 15:] = 0
    seg = np.ones((b, length), np.int32)
    seg[:, 9:] = 2
    return q, k, v, cot, jnp.asarray(mask), jnp.asarray(seg)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_full_score_path_matches_autodiff_of_the_formula(packed, rate):
    q, k, v, cot, mask, seg = _inputs(int(packed) + 2 * int(rate > 0))
    seg = seg if packed else None
    key = jax.random.key(7) if rate else None

    def ours(q, k, v):
        return attention(q, k, v, mask, segment_ids=seg, impl="xla", dropout_rate=rate, dropout_key=key,
                         precision="highest")

    def ref(q, k, v):
        return _reference(q, k, v, mask, seg, rate, key)

    assert max_rel(ours(q, k, v), ref(q, k, v)) < 1e-6
    g_ours = jax.jit(jax.grad(lambda *a: jnp.sum(ours(*a) * cot), argnums=(0, 1, 2)))(q, k, v)
    g_ref = jax.grad(lambda *a: jnp.sum(ref(*a) * cot), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(g_ours, g_ref):
        assert max_rel(a, b) < 1e-5


def test_dropout_changes_the_output_and_its_gradient_consistently():
    q, k, v, cot, mask, _ = _inputs(5)
    plain = attention(q, k, v, mask, impl="xla")
    dropped = attention(q, k, v, mask, impl="xla", dropout_rate=0.5, dropout_key=jax.random.key(1))
    assert max_rel(dropped, plain) > 1e-2
    # Finite differences of the dropped path agree with its gradient (same mask in forward and backward).
    f = lambda q: jnp.sum(attention(q, k, v, mask, impl="xla", dropout_rate=0.5, dropout_key=jax.random.key(1),
                                    precision="highest") * cot)
    direction = jnp.asarray(np.random.default_rng(0).standard_normal(q.shape), jnp.float32)
    eps = 1e-2
    numeric = (f(q + eps * direction) - f(q - eps * direction)) / (2 * eps)
    analytic = jnp.sum(jax.grad(f)(q) * direction)
    assert abs(float(numeric) - float(analytic)) < 2e-3 * max(1.0, abs(float(analytic)))


def test_bfloat16_gradients_keep_their_dtype_and_track_float32():
    q, k, v, cot, mask, _ = _inputs(9)

    def loss(dtype):
        return lambda q, k, v: jnp.sum(
            attention(q.astype(dtype), k.astype(dtype), v.astype(dtype), mask, impl="xla").astype(jnp.float32) * cot)

    g16 = jax.grad(loss(jnp.bfloat16), argnums=(0, 1, 2))(q, k, v)
    g32 = jax.grad(loss(jnp.float32), argnums=(0, 1, 2))(q, k, v)
    out16 = attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), mask, impl="xla")
    assert out16.dtype == jnp.bfloat16
    for a, b in zip(g16, g32):
        assert max_rel(a, b) < 3e-2


def test_chunked_inference_path_equals_the_full_path():
    q, k, v, _, mask, seg = _inputs(11, length=70)
    for segments in (None, seg):
        full = attention(q, k, v, mask, segment_ids=segments, impl="xla")
        assert max_rel(attention(q, k, v, mask, segment_ids=segments, impl="chunked", chunk_size=16), full) < 1e-6


@pytest.mark.parametrize("head_dim", [64, 12])  # 1/√d folded into q (exact), and divided out
def test_encoding_path_without_a_probability_matrix_equals_the_formula(head_dim):
    # Nothing differentiated: the weights stay unnormalised and the output is divided by their sum.
    q, k, v, _, mask, _ = _inputs(13, length=30, d=head_dim)
    mask = mask.at[0].set(0)  # a row with no allowed key: a uniform average of every value, as the reference
    out = jax.jit(lambda q, k, v: attention(q, k, v, mask, impl="xla", precision="highest"))(q, k, v)
    assert max_rel(out, _reference(q, k, v, mask, None)) < 1e-6
    np.testing.assert_allclose(out[0], jnp.broadcast_to(jnp.mean(v[0], axis=0), v[0].shape), rtol=1e-5, atol=1e-6)
    # The differentiated forward (normalised probabilities, kept for the backward) gives the same values.
    out_fwd, _ = jax.vjp(lambda q: attention(q, k, v, mask, impl="xla", precision="highest"), q)
    assert max_rel(out_fwd, out) < 1e-6
    out16 = attention(q.astype(jnp.bfloat16), k.astype(jnp.bfloat16), v.astype(jnp.bfloat16), mask, impl="xla")
    assert out16.dtype == jnp.bfloat16
    assert max_rel(out16, out) < 1e-2
