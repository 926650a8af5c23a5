"""SPLADE pooling of MLM logits into one vocabulary-sized vector per document.

Exactly sentence-transformers' ``SpladePooling`` (sparse_encoder_format.md §3.3):

* activation ``relu``:       a(x) = log1p(relu(x))
* activation ``log1p_relu``: a(x) = log1p(log1p(relu(x)))     (two log1p's despite the name)
* strategy ``max``: d_j = max_t a(logits[t, j] · mask[t]);  ``sum``: d_j = Σ_t a(logits[t, j] · mask[t])

Padded positions are multiplied by 0, so they contribute a(0) = 0 and never win the max. Because a is
non-decreasing, the max strategy pools the raw logits first and activates once (B×V work instead of
B×L×V; bitwise the same values). The sum strategy must activate every position.

``pool_from_features`` computes the vocabulary projection and the pooling chunk by chunk over tokens
(``jsplade.splade.fused_head``), so the [B, L, V] logits never exist at once, forward or backward.
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
                       chunk_size: int | None = None, precision=None) -> jnp.ndarray:
    """``splade_pool(features @ decoderᵀ + bias, mask)`` without materialising the [B, L, V] logits:
    the fused, chunked head of ``jsplade.splade.fused_head`` (forward and backward). Returns [B, V]."""
    from jsplade.splade.fused_head import fused_splade_pool, mask_to_group

    return fused_splade_pool(features_BxLxD, decoder_VxD, bias_V, mask_to_group(mask_BxL), 1, strategy,
                             activation, chunk_size, precision)[:, 0]
