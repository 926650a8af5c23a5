"""Layer normalisation: LayerNorm (two-pass biased variance) or RMSNorm, accumulated in float32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

NORM_KINDS = ("layer_norm", "rms_norm")


class Norm(nnx.Module):
    """``scale`` [D] (and ``bias`` [D] for LayerNorm); output in the input's dtype."""

    def __init__(self, dim: int, eps: float, kind: str = "layer_norm"):
        if kind not in NORM_KINDS:
            raise ValueError(f"norm kind must be one of {NORM_KINDS}, got {kind!r}")
        self.eps = float(eps)
        self.kind = kind
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        if kind == "layer_norm":
            self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32))

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x32 = x.astype(jnp.float32)
        if self.kind == "layer_norm":
            mean = jnp.mean(x32, axis=-1, keepdims=True)
            centered = x32 - mean
            var = jnp.mean(centered * centered, axis=-1, keepdims=True)
            y = centered * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]
            return y.astype(x.dtype)
        # RMSNorm as the reference: normalise in float32, cast back, then multiply by the weight.
        var = jnp.mean(x32 * x32, axis=-1, keepdims=True)
        y = (x32 * jax.lax.rsqrt(var + self.eps)).astype(x.dtype)
        return self.scale[...].astype(x.dtype) * y
