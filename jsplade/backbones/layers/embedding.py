"""A lookup table of learned vectors (word, token-type or position embeddings)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from jsplade.backbones.layers.init import normal


class Embed(nnx.Module):
    """``embedding`` [rows, D] float32; ``embed(ids) -> [..., D]``."""

    def __init__(self, rows: int, dim: int, *, rngs: nnx.Rngs, std: float):
        self.embedding = nnx.Param(normal(rngs, (rows, dim), std))

    def __call__(self, ids: jnp.ndarray) -> jnp.ndarray:
        return jnp.take(self.embedding[...], ids, axis=0)
