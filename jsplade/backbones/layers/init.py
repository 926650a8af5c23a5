"""Parameter initialisers of the layers (float32 master weights)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def normal(rngs: nnx.Rngs, shape, std: float) -> jnp.ndarray:
    """N(0, std²) float32 of ``shape``, drawn from the ``params`` stream of ``rngs``."""
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)
