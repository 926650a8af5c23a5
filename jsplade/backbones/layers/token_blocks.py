"""Per-token maps over blocks of tokens, one block live at a time: how a long input's MLP runs without its
[B, L, intermediate] activations (any backbone's MLP, any per-token function)."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def map_token_blocks(fn, x, chunk: int):
    """``fn`` (a per-token map [B, C, D] → [B, C, D']) over blocks of ``chunk`` tokens of x [B, L, D], one
    block live at a time (a ``lax.map``); the same values as ``fn(x)``."""
    batch, length, dim = x.shape
    n = -(-length // chunk)
    x_pad = jnp.pad(x, ((0, 0), (0, n * chunk - length), (0, 0)))
    blocks_NxBxCxD = jnp.moveaxis(x_pad.reshape(batch, n, chunk, dim), 1, 0)
    out = jax.lax.map(fn, blocks_NxBxCxD)
    return jnp.moveaxis(out, 0, 1).reshape(batch, n * chunk, out.shape[-1])[:, :length]
