"""jsplade.backbones.layers.splash_attention: the TPU Pallas splash kernel run by the Pallas interpreter on CPU
(``interpret=True``, as the module provides for tests), against softmax attention written in float64 numpy with
the module's segment rule — real tokens carry their segment (1 when unpacked), pads segment 0, a query sees the keys
of its own segment — so real rows are compared with the reference attention and pad rows with attention over pads.

Tolerances (relative to the largest |value|, ``max_rel``): float32 2e-6 (observed 5e-7); bfloat16 1e-2 (observed
2e-3) against the float64 result of the bfloat16 inputs. The TPU-only path choice (``resolve_impl``) is tested
with ``attention`` in test_blockwise_attention.py.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from helpers.fixtures import max_rel

from jsplade.backbones.layers.splash_attention import splash_attention

B, L, H, K = 2, 128, 2, 64  # the kernel needs lengths that are multiples of 128


def _reference(q, k, v, key_mask, segment_ids=None):
    """softmax(q kᵀ/√K restricted to same-segment keys) v in float64, [B, L, H, K]."""
    q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
    real = np.asarray(key_mask) != 0
    seg = np.where(real, 1 if segment_ids is None else np.asarray(segment_ids), 0)
    scores = np.einsum("bqhk,blhk->bhql", q, k) / np.sqrt(q.shape[-1])
    allowed = seg[:, None, :, None] == seg[:, None, None, :]
    scores = np.where(allowed, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhql,blhk->bqhk", probs, v)


def _qkv(seed: int, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal((B, L, H, K)), dtype) for _ in range(3))


def _mask_and_segments():
    mask = np.ones((B, L), np.int32)
    mask[0, 100:] = 0
    mask[1, 61:] = 0
    seg = np.zeros((B, L), np.int32)
    seg[0, :30], seg[0, 30:70], seg[0, 70:100] = 1, 2, 3  # three packed documents, then pads
    seg[1, :20], seg[1, 20:61] = 1, 2
    seg[mask == 0] = 7  # whatever a pad carries, the module gives it segment 0
    return mask, seg


def test_packed_rows_real_and_pad_tokens_match_the_formula():
    q, k, v = _qkv(0)
    mask, seg = _mask_and_segments()
    out = splash_attention(q, k, v, mask, seg, interpret=True)
    assert out.shape == (B, L, H, K) and out.dtype == jnp.float32
    ref = _reference(q, k, v, mask, seg)
    real = mask.astype(bool)
    assert max_rel(np.asarray(out)[real], ref[real]) < 2e-6
    # pad rows attend to the pads (segment 0) only, not to every key
    assert max_rel(np.asarray(out)[~real], ref[~real]) < 2e-6
    everything = _reference(q, k, v, np.ones((B, L)), None)
    assert max_rel(np.asarray(out)[~real], everything[~real]) > 1e-2


def test_unpacked_padding_and_mask_forms_agree():
    q, k, v = _qkv(1)
    mask, _ = _mask_and_segments()
    out = splash_attention(q, k, v, mask, interpret=True)
    ref = _reference(q, k, v, mask)
    assert max_rel(out, ref) < 2e-6  # real rows see the real keys, pad rows the pads
    np.testing.assert_array_equal(np.asarray(splash_attention(q, k, v, mask.astype(bool), interpret=True)),
                                  np.asarray(out))
    ones = np.where(mask != 0, 1, 0)  # explicit segment 1 for every real token: the unpacked case
    np.testing.assert_array_equal(np.asarray(splash_attention(q, k, v, mask, ones, interpret=True)), np.asarray(out))


def test_bfloat16_output_keeps_the_dtype_of_v():
    q, k, v = _qkv(2, jnp.bfloat16)
    mask, seg = _mask_and_segments()
    out = splash_attention(q, k, v, mask, seg, interpret=True)
    assert out.dtype == jnp.bfloat16
    ref = _reference(*(t.astype(jnp.float32) for t in (q, k, v)), mask, seg)
    assert max_rel(out.astype(jnp.float32), ref) < 1e-2
