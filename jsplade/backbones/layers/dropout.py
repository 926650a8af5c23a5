"""Inverted dropout with masks from a counter-based hash.

A mask element is kept when ``mix(index, seed) >= round(rate · 2³²)``: ``index`` is the element's
row-major position in the array, ``seed`` two 32-bit words drawn once per call from the site's JAX key,
and ``mix`` two rounds of the murmur3 32-bit finaliser (a bijective avalanche mixer) around the seed.
Why not ``jax.random.bernoulli``: threefry costs ~20 rounds of integer work per 32 bits. Measured on the
2-core CPU, the masks of one v3-gte training step at 16 × 256 tokens ([4096, 4608] per layer) took 2.7 s
with threefry and 0.25 s with this hash (~10 integer operations per element). Like threefry in its
partitionable mode, the mask is a pure function of (key, index), so every device mesh draws the same mask.

The keep probability is exact to 2⁻³² (``1 − rate`` rounded to a multiple of 2⁻³²); the arrays a single
call masks should stay under 2³² elements (indices wrap beyond, which repeats the mask).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_M1 = 0x85EBCA6B
_M2 = 0xC2B2AE35
_GOLDEN = 0x9E3779B9


def _fmix32(h: jnp.ndarray) -> jnp.ndarray:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_M1)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(_M2)
    return h ^ (h >> 16)


def _flat_index(shape) -> jnp.ndarray:
    """Row-major element index (uint32, wrapping) built from per-axis iotas (partitions without communication)."""
    index = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        if shape[axis] > 1:
            index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride % (1 << 32))
        stride *= shape[axis]
    return index


def hash_bits(key: jax.Array, shape) -> jnp.ndarray:
    """Uniform uint32 bits of ``shape``: a pure function of (key, element index)."""
    seed = jax.random.bits(key, (2,), jnp.uint32)
    h = _fmix32((_flat_index(tuple(shape)) * jnp.uint32(_GOLDEN)) ^ seed[0])
    return _fmix32(h + seed[1])


def keep_mask(key: jax.Array, rate: float, shape) -> jnp.ndarray:
    """Boolean mask, each element True with probability 1 − rate (to 2⁻³²)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
    threshold = min(int(round(rate * 2.0**32)), 2**32 - 1)
    return hash_bits(key, shape) >= jnp.uint32(threshold)


def dropout(x: jnp.ndarray, rate: float, key: jax.Array | None) -> jnp.ndarray:
    """Inverted dropout; identity when ``key`` is None or ``rate`` is 0."""
    if key is None or rate <= 0.0:
        return x
    keep = keep_mask(key, rate, x.shape)
    # scale in float32 (1 / 0.9 is 0.16% off in bfloat16), round once to the activation dtype
    scaled = (x.astype(jnp.promote_types(x.dtype, jnp.float32)) / (1.0 - rate)).astype(x.dtype)
    return jnp.where(keep, scaled, jnp.zeros_like(x))
