"""SPLADE pooling of MLM logits into one vocabulary-sized vector per document.

Exactly sentence-transformers' ``SpladePooling`` (sparse_encoder_format.md §3.3):

* activation ``relu``:       a(x) = log1p(relu(x))
* activation ``log1p_relu``: a(x) = log1p(log1p(relu(x)))     (two log1p's despite the name)
* strategy ``max``: d_j = max_t a(logits[t, j] · mask[t]);  ``sum``: d_j = Σ_t a(logits[t, j] · mask[t])

Padded positions are multiplied by 0, so they contribute a(0) = 0 and never win the max. Because a is
non-decreasing, the max strategy pools the raw logits first and activates once (B×V work instead of
B×L×V; bitwise the same values). The sum strategy must activate every position.

``pool_from_features`` computes the vocabulary projection and the pooling chunk by chunk over tokens,
so the [B, L, V] logits never exist at once (inference of long documents).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

POOLING_STRATEGIES = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")


def check_pooling(strategy: str, activation: str) -> None:
    if strategy not in POOLING_STRATEGIES:
        raise ValueError(f"pooling_strategy must be one of {POOLING_STRATEGIES}, got {strategy!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got {activation!r}")


def splade_activation(x: jnp.ndarray, activation: str = "log1p_relu") -> jnp.ndarray:
    y = jnp.log1p(jax.nn.relu(x))
    return jnp.log1p(y) if activation == "log1p_relu" else y


def splade_pool(logits_BxLxV: jnp.ndarray, mask_BxL: jnp.ndarray, strategy: str = "max",
                activation: str = "log1p_relu") -> jnp.ndarray:
    """Pooled document vectors [B, V] from full logits."""
    check_pooling(strategy, activation)
    mask = (jnp.asarray(mask_BxL) != 0)[:, :, None]
    if strategy == "max":
        neg = jnp.asarray(-jnp.inf, logits_BxLxV.dtype)
        max_BxV = jnp.max(jnp.where(mask, logits_BxLxV, neg), axis=1)
        return splade_activation(max_BxV, activation)
    masked = jnp.where(mask, logits_BxLxV, jnp.zeros((), logits_BxLxV.dtype))
    return jnp.sum(splade_activation(masked, activation), axis=1)


def pool_from_features(features_BxLxD: jnp.ndarray, decoder_VxD: jnp.ndarray, bias_V: jnp.ndarray,
                       mask_BxL: jnp.ndarray, strategy: str = "max", activation: str = "log1p_relu",
                       chunk_size: int = 256, precision=None) -> jnp.ndarray:
    """``splade_pool(features @ decoderᵀ + bias, mask)`` with token chunks of ``chunk_size``.

    Live memory is B·chunk·V instead of B·L·V. Values equal the unchunked path (same per-entry
    arithmetic; the max is exact, the sum is accumulated chunk by chunk).
    """
    check_pooling(strategy, activation)
    batch, length, dim = features_BxLxD.shape
    vocab = decoder_VxD.shape[0]
    if length <= chunk_size:
        logits = jnp.einsum("bld,vd->blv", features_BxLxD, decoder_VxD.astype(features_BxLxD.dtype),
                            precision=precision, preferred_element_type=jnp.float32) + bias_V
        return splade_pool(logits, mask_BxL, strategy, activation)
    n_chunks = -(-length // chunk_size)
    pad = n_chunks * chunk_size - length
    feats = jnp.pad(features_BxLxD, ((0, 0), (0, pad), (0, 0)))
    mask = jnp.pad(jnp.asarray(mask_BxL) != 0, ((0, 0), (0, pad)))
    feats = feats.reshape(batch, n_chunks, chunk_size, dim).swapaxes(0, 1)
    mask = mask.reshape(batch, n_chunks, chunk_size).swapaxes(0, 1)
    weight = decoder_VxD.astype(features_BxLxD.dtype)

    def step(carry_BxV, xs):
        f_BxCxD, m_BxC = xs
        logits = jnp.einsum("bcd,vd->bcv", f_BxCxD, weight, precision=precision,
                            preferred_element_type=jnp.float32) + bias_V
        if strategy == "max":
            part = jnp.max(jnp.where(m_BxC[:, :, None], logits, -jnp.inf), axis=1)
            return jnp.maximum(carry_BxV, part), None
        act = splade_activation(jnp.where(m_BxC[:, :, None], logits, 0.0), activation)
        return carry_BxV + jnp.sum(act, axis=1), None

    init = jnp.full((batch, vocab), -jnp.inf if strategy == "max" else 0.0, jnp.float32)
    out_BxV, _ = jax.lax.scan(step, init, (feats, mask))
    return splade_activation(out_BxV, activation) if strategy == "max" else out_BxV
