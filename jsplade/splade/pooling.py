"""SPLADE pooling of MLM logits into one vocabulary-sized vector per document.

Exactly sentence-transformers' ``SpladePooling`` (sparse_encoder_format.md §3.3):

* activation ``relu``:       a(x) = log1p(relu(x))
* activation ``log1p_relu``: a(x) = log1p(log1p(relu(x)))     (two log1p's despite the name)
* strategy ``max``: d_j = max_t a(logits[t, j] · mask[t]);  ``sum``: d_j = Σ_t a(logits[t, j] · mask[t])

Padded positions are multiplied by 0, so they contribute a(0) = 0 and never win the max. Because a is
non-decreasing, the max strategy pools the raw logits first and activates once (B×V work instead of
B×L×V; bitwise the same values). The sum strategy must activate every position.

``jsplade.splade.fused_head`` computes the vocabulary projection and the pooling chunk by chunk over tokens,
so the [B, L, V] logits never exist at once, forward or backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The options of sentence-transformers' SpladePooling (what its config files may say).
from jsplade.checkpoints.st_format import ACTIVATIONS, POOLING_STRATEGIES


def check_pooling(strategy: str, activation: str) -> None:
    if strategy not in POOLING_STRATEGIES:
        raise ValueError(f"pooling_strategy must be one of {POOLING_STRATEGIES}, got {strategy!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got {activation!r}")


def splade_activation(x: jnp.ndarray, activation: str = "log1p_relu") -> jnp.ndarray:
    """log1p(relu(x)), or log1p of that for ``"log1p_relu"``."""
    y = jnp.log1p(jax.nn.relu(x))
    return jnp.log1p(y) if activation == "log1p_relu" else y


def splade_pool(logits: jnp.ndarray, attention_mask: jnp.ndarray, strategy: str = "max",
                activation: str = "log1p_relu") -> jnp.ndarray:
    """Pooled document vectors [B, V] from full logits [B, L, V] and the mask [B, L]."""
    logits_BxLxV, mask_BxL = logits, attention_mask
    check_pooling(strategy, activation)
    mask = (jnp.asarray(mask_BxL) != 0)[:, :, None]
    if strategy == "max":
        neg = jnp.asarray(-jnp.inf, logits_BxLxV.dtype)
        max_BxV = jnp.max(jnp.where(mask, logits_BxLxV, neg), axis=1)
        return splade_activation(max_BxV, activation)
    masked = jnp.where(mask, logits_BxLxV, jnp.zeros((), logits_BxLxV.dtype))
    return jnp.sum(splade_activation(masked, activation), axis=1)
