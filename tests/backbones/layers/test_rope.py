"""Rotary tables (jsplade.backbones.layers.rope): host-computed constants against an independent float32 cos/sin (torch's,
the reference's library), the position look-up and its on-device fallback, and that a model forward
with default positions evaluates no cos/sin on the device."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jsplade.backbones.layers.rope import RotarySpec, rope_cos_sin, rope_frequencies, rope_table, rope_tables

ULP_AT_ONE = float(np.finfo(np.float32).eps)  # 1.19e-7: one float32 ulp of the largest table entries


@pytest.fixture(scope="module")
def config():
    """v3-gte's rotary settings (head dim 64, θ 5e5, fixed NTK factor 2; ``GteConfig.rotary`` of its config)."""
    return RotarySpec(head_dim=64, theta=500000.0, ntk_factor=2.0)


def _torch_tables(config, positions):
    """The reference's arithmetic in torch: float32 angles t·ω, [φ, φ], float32 cos/sin."""
    t = torch.as_tensor(np.asarray(positions, np.float32))
    angles = t[..., None] * torch.as_tensor(np.array(rope_frequencies(config)))  # a writable copy
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().numpy(), angles.sin().numpy()


def test_table_matches_torch_float32_cos_sin_to_an_ulp(config):
    length = 8192  # the model's longest input: angles up to ~8191 rad in the first frequency
    cos, sin = rope_table(config, length)
    assert cos.shape == sin.shape == (length, config.head_dim) and cos.dtype == np.float32
    ref_cos, ref_sin = _torch_tables(config, np.arange(length))
    np.testing.assert_allclose(cos, ref_cos, rtol=0, atol=1.0 * ULP_AT_ONE)
    np.testing.assert_allclose(sin, ref_sin, rtol=0, atol=1.0 * ULP_AT_ONE)
    # Halves repeat ([φ, φ]) and position 0 is the identity rotation.
    half = config.head_dim // 2
    np.testing.assert_array_equal(cos[:, :half], cos[:, half:])
    np.testing.assert_array_equal(cos[0], 1.0)
    np.testing.assert_array_equal(sin[0], 0.0)


def test_table_agrees_with_the_device_formula(config):
    cos, sin = rope_table(config, 512)
    dev_cos, dev_sin = rope_cos_sin(jnp.arange(512)[None], jnp.asarray(rope_frequencies(config)))
    np.testing.assert_allclose(cos, np.asarray(dev_cos)[0], rtol=0, atol=2 * ULP_AT_ONE)
    np.testing.assert_allclose(sin, np.asarray(dev_sin)[0], rtol=0, atol=2 * ULP_AT_ONE)


def test_table_is_cached_and_read_only(config):
    first, _ = rope_table(config, 64)
    assert rope_table(config, 64)[0] is first
    with pytest.raises(ValueError):
        first[0, 0] = 2.0


def test_table_length_must_be_positive(config):
    with pytest.raises(ValueError, match="at least 1"):
        rope_table(config, 0)


def test_default_positions_are_the_table_for_every_row(config):
    cos, sin = rope_tables(config, 48, None, jnp.float32)
    assert cos.shape == (1, 48, config.head_dim)
    np.testing.assert_array_equal(np.asarray(cos)[0], rope_table(config, 48)[0])
    np.testing.assert_array_equal(np.asarray(sin)[0], rope_table(config, 48)[1])
    cos16, _ = rope_tables(config, 48, None, jnp.bfloat16)
    assert cos16.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(cos16, np.float32), np.asarray(cos.astype(jnp.bfloat16), np.float32))


def test_positions_in_range_are_looked_up(config):
    # Packed rows: positions restart at 0 for each document, all below the row length.
    positions = np.array([[0, 1, 2, 0, 1, 2, 3, 0], [0, 1, 2, 3, 4, 5, 6, 7]], np.int32)
    cos, sin = jax.jit(lambda p: rope_tables(config, 8, p))(positions)
    table_cos, table_sin = rope_table(config, 8)
    np.testing.assert_array_equal(np.asarray(cos), table_cos[positions])
    np.testing.assert_array_equal(np.asarray(sin), table_sin[positions])
    # Row 1 holds the default positions: bitwise the default path's tables (packed = padded).
    default_cos, _ = rope_tables(config, 8, None)
    np.testing.assert_array_equal(np.asarray(cos)[1], np.asarray(default_cos)[0])


@pytest.mark.parametrize("positions", [[[5, 6, 7, 8, 9]], [[0, 1, -1, 2, 3]]], ids=["beyond_length", "negative"])
def test_positions_outside_the_table_use_the_device_formula(config, positions):
    positions = np.asarray(positions, np.int32)
    cos, sin = jax.jit(lambda p: rope_tables(config, 5, p))(positions)
    want_cos, want_sin = rope_cos_sin(jnp.asarray(positions), jnp.asarray(rope_frequencies(config)))
    np.testing.assert_array_equal(np.asarray(cos), np.asarray(want_cos))
    np.testing.assert_array_equal(np.asarray(sin), np.asarray(want_sin))
    ref_cos, ref_sin = _torch_tables(config, positions)  # and the values are right, not only equal
    np.testing.assert_allclose(np.asarray(cos), ref_cos, rtol=0, atol=2 * ULP_AT_ONE)
    np.testing.assert_allclose(np.asarray(sin), ref_sin, rtol=0, atol=2 * ULP_AT_ONE)
