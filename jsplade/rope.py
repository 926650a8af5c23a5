"""Rotary position embedding of GTE "new" (gte_architecture.md §3.3).

Frequencies ω_k (k = 0 … d_h/2 − 1), float32, computed with the reference's sequence of float32
operations:

* no scaling:           ω = 1 / θ^(2k/d_h)
* fixed NTK (factor s): ω = (1 / (θ·s)^(2k/d_h)) / s^(2/d_h)
* mixed NTK (s, b):     ω = (1 / θ^(2k/d_h)) / λ_{k+1},  λ_j = exp(a·j^b),  a = ln s / (d_h/2)^b

The reference's NTK module builds its cache for max_position_embeddings·s positions at construction,
which exceeds max_position_embeddings for s > 1, so the *scaled* frequencies are installed immediately
and used for every input length. Positions beyond any cache are computed with the same formula (the
reference rebuilds its table, no discontinuity). Here tables are computed on the fly for the positions
needed, so there is no cache and no state.

Angles are a single float32 product t·ω (the reference's float32 rounding at large t is reproduced);
rotation is the half-split ("NeoX") layout: dimension j pairs with j + d_h/2.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from jsplade.config import GteConfig


@functools.lru_cache(maxsize=64)
def rope_frequencies(config: GteConfig) -> np.ndarray:
    """The d_h/2 rotary frequencies ω the reference uses for every position, float32 [d_h/2]."""
    dim = config.head_dim
    exponents = (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)).astype(np.float32)
    factor = config.ntk_factor
    mixed_b = config.ntk_mixed_b
    base = float(config.rope_theta)
    if factor is not None and mixed_b is None:
        base = base * factor
    inv_freq = (np.float32(1.0) / np.power(np.float32(base), exponents, dtype=np.float32)).astype(np.float32)
    if factor is None:
        out = inv_freq
    elif mixed_b is None:
        out = (inv_freq / np.float32(factor ** (2.0 / dim))).astype(np.float32)
    else:
        a = np.float32(np.log(np.float32(factor))) / np.float32((dim / 2) ** mixed_b)
        j = np.arange(1, dim // 2 + 1, dtype=np.float32)
        lam = np.exp((a * np.power(j, np.float32(mixed_b), dtype=np.float32)).astype(np.float32)).astype(np.float32)
        out = (inv_freq / lam).astype(np.float32)
    out.setflags(write=False)  # cached: shared between callers
    return out


def rope_cos_sin(positions_BxL: jnp.ndarray, inv_freq: jnp.ndarray, dtype=jnp.float32):
    """cos/sin tables [B, L, d_h] for integer positions: halves concatenated ([φ, φ])."""
    angles = positions_BxL.astype(jnp.float32)[..., None] * inv_freq.astype(jnp.float32)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles).astype(dtype), jnp.sin(angles).astype(dtype)


def apply_rope(x_BxLxHxK: jnp.ndarray, cos_BxLxK: jnp.ndarray, sin_BxLxK: jnp.ndarray) -> jnp.ndarray:
    """x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁] (halves of the head dim)."""
    half = x_BxLxHxK.shape[-1] // 2
    x1, x2 = x_BxLxHxK[..., :half], x_BxLxHxK[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos = cos_BxLxK[:, :, None, :]
    sin = sin_BxLxK[:, :, None, :]
    return x_BxLxHxK * cos + rotated * sin
