"""Activation functions by their Hugging Face ``hidden_act`` names."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish")


def activation(name: str):
    """HF ``hidden_act`` → function ("gelu" is the exact erf GELU)."""
    if name == "gelu":
        return gelu_erf
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    if name == "relu":
        return jax.nn.relu
    if name in ("silu", "swish"):
        return jax.nn.silu
    raise ValueError(f"unsupported activation {name!r} (supported: {SUPPORTED_ACTIVATIONS})")


def gelu_erf(x: jnp.ndarray) -> jnp.ndarray:
    """Exact GELU written as PyTorch writes it, x · ½(1 + erf(x/√2)).

    ``jax.nn.gelu(approximate=False)`` computes the same function through erfc, which XLA:CPU expands
    with an exponential: the GLU's activation forward and backward took 76 ms per layer at 16 × 256
    tokens against 46 ms in this form; the two agree within 1.2e-6 absolute in float32.
    """
    half = jnp.asarray(0.5, x.dtype)
    return x * (half + half * jax.lax.erf(x * jnp.asarray(1 / math.sqrt(2), x.dtype)))
