"""Rotary position embedding of GTE "new" (gte_architecture.md §3.3).

Frequencies ω_k (k = 0 … d_h/2 − 1), float32, computed with the reference's sequence of float32
operations:

* no scaling:           ω = 1 / θ^(2k/d_h)
* fixed NTK (factor s): ω = (1 / (θ·s)^(2k/d_h)) / s^(2/d_h)
* mixed NTK (s, b):     ω = (1 / θ^(2k/d_h)) / λ_{k+1},  λ_j = exp(a·j^b),  a = ln s / (d_h/2)^b

The reference's NTK module builds its cache for max_position_embeddings·s positions at construction,
which exceeds max_position_embeddings for s > 1, so the *scaled* frequencies are installed immediately
and used for every input length. Positions beyond any cache are computed with the same formula (the
reference rebuilds its table, no discontinuity). Here tables are made for the positions needed, so the
model holds no cache and no state (host tables are memoised per length, see below).

Angles are a single float32 product t·ω (the reference's float32 rounding at large t is reproduced);
rotation is the half-split ("NeoX") layout: dimension j pairs with j + d_h/2.

The model takes its cos/sin tables from ``rope_tables``: for positions 0 … L−1 (every row of a padded
batch, and any packed row, whose positions restart below L) they are host-computed constants of the
compiled program (``rope_table``); other positions use the on-device formula (``rope_cos_sin``).
Constants matter on CPUs: XLA fuses an on-device cos/sin into each layer's rotation of q and of k and
evaluates it again for every head and layer (about 5% of a 32 × 176-token encoding on 2 cores).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class RotarySpec:
    """What the rotary tables depend on: the head dim d_h, the base θ and the NTK scaling (factor s, and
    b for mixed NTK; None: no scaling). A backbone config gives its own (``GteConfig.rotary``)."""

    head_dim: int
    theta: float
    ntk_factor: float | None = None
    ntk_mixed_b: float | None = None


@functools.lru_cache(maxsize=64)
def rope_frequencies(spec: RotarySpec) -> np.ndarray:
    """The d_h/2 rotary frequencies ω the reference uses for every position, float32 [d_h/2]."""
    dim = spec.head_dim
    exponents = (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)).astype(np.float32)
    factor = spec.ntk_factor
    mixed_b = spec.ntk_mixed_b
    base = float(spec.theta)
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


@functools.lru_cache(maxsize=16)
def rope_table(spec: RotarySpec, length: int) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [length, d_h] (float32) of positions 0 … length − 1, computed on the host.

    The angles are the same float32 products t·ω as ``rope_cos_sin``; cos and sin are evaluated in
    float64 and rounded once, so each entry is the float32 nearest the exact value (a float32 cos/sin,
    XLA's or the reference's, is within about an ulp of it).
    """
    if length < 1:
        raise ValueError(f"rope table length must be at least 1, got {length}")
    angles_LxK = _angles(np, np.arange(length), rope_frequencies(spec)).astype(np.float64)
    cos_LxK, sin_LxK = np.cos(angles_LxK).astype(np.float32), np.sin(angles_LxK).astype(np.float32)
    cos_LxK.setflags(write=False)  # cached: shared between callers
    sin_LxK.setflags(write=False)
    return cos_LxK, sin_LxK


def rope_tables(spec: RotarySpec, length: int, positions: jnp.ndarray | None = None, dtype=jnp.float32):
    """cos/sin tables for a batch of ``length`` tokens: [1, L, d_h] (positions 0 … L−1 in every row, the
    default) or [B, L, d_h] for given integer positions, in ``dtype``.

    Given positions are looked up in ``rope_table`` when all lie in [0, L) (packed rows restart their
    positions below L), otherwise computed on the device (``rope_cos_sin``); both ways a materialised table.
    """
    cos_LxK, sin_LxK = rope_table(spec, length)
    positions_BxL = positions
    if positions_BxL is None:
        return jnp.asarray(cos_LxK, dtype)[None], jnp.asarray(sin_LxK, dtype)[None]
    positions_BxL = jnp.asarray(positions_BxL, jnp.int32)

    def look_up(pos_BxL):
        return jnp.asarray(cos_LxK)[pos_BxL], jnp.asarray(sin_LxK)[pos_BxL]

    def compute(pos_BxL):
        return rope_cos_sin(pos_BxL, jnp.asarray(rope_frequencies(spec)))

    in_table = jnp.all(jnp.logical_and(positions_BxL >= 0, positions_BxL < length))
    cos_BxLxK, sin_BxLxK = jax.lax.cond(in_table, look_up, compute, positions_BxL)
    return cos_BxLxK.astype(dtype), sin_BxLxK.astype(dtype)


def _angles(xp, positions, inv_freq):
    """Angles [..., d_h] (float32) for integer positions, with ``xp`` numpy or jax.numpy: the single float32
    product t·ω per frequency, halves repeated ([φ, φ])."""
    angles = positions.astype(xp.float32)[..., None] * inv_freq.astype(xp.float32)
    return xp.concatenate([angles, angles], axis=-1)


def rope_cos_sin(positions: jnp.ndarray, inv_freq: jnp.ndarray):
    """cos/sin tables [B, L, d_h] (float32) for integer positions [B, L], computed on the device."""
    angles = _angles(jnp, positions, inv_freq)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """x·cos + rotate_half(x)·sin with rotate_half(x) = [−x₂, x₁] (halves of the head dim); x [B, L, H, K],
    cos/sin [1 or B, L, K]."""
    x_BxLxHxK, cos_BxLxK, sin_BxLxK = x, cos, sin
    half = x_BxLxHxK.shape[-1] // 2
    x1, x2 = x_BxLxHxK[..., :half], x_BxLxHxK[..., half:]
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos = cos_BxLxK[:, :, None, :]
    sin = sin_BxLxK[:, :, None, :]
    return x_BxLxHxK * cos + rotated * sin
