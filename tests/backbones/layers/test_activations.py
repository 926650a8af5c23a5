"""Activations by HF name: the exact erf GELU and the name table."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsplade.backbones.layers.activations import SUPPORTED_ACTIVATIONS, activation, gelu_erf


def test_gelu_is_the_exact_erf_form():
    erf = np.vectorize(math.erf)

    x = np.linspace(-12, 12, 2001).astype(np.float32)
    want = 0.5 * x.astype(np.float64) * (1 + erf(x.astype(np.float64) / np.sqrt(2)))
    got = np.asarray(gelu_erf(jnp.asarray(x)), np.float64)
    assert np.max(np.abs(got - want)) < 2e-6
    np.testing.assert_allclose(np.asarray(gelu_erf(jnp.asarray(x))), np.asarray(jax.nn.gelu(x, approximate=False)),
                               atol=2e-6)


def test_every_supported_name_is_the_function_transformers_means():
    x = jnp.linspace(-6, 6, 101, dtype=jnp.float32)
    want = {"gelu": jax.nn.gelu(x, approximate=False), "gelu_new": jax.nn.gelu(x, approximate=True),
            "gelu_pytorch_tanh": jax.nn.gelu(x, approximate=True), "gelu_fast": jax.nn.gelu(x, approximate=True),
            "relu": jax.nn.relu(x), "silu": jax.nn.silu(x), "swish": jax.nn.silu(x)}
    assert set(want) == set(SUPPORTED_ACTIVATIONS)
    for name, ref in want.items():
        np.testing.assert_allclose(np.asarray(activation(name)(x)), np.asarray(ref), atol=2e-6, err_msg=name)
    with pytest.raises(ValueError, match="unsupported activation 'tanh'"):
        activation("tanh")
