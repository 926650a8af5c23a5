"""Dropout masks from the counter hash: rate, independence, determinism, scaling, mesh-independence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsplade.backbones.layers.dropout import dropout, hash_bits, keep_mask


def test_keep_rate_and_bits_are_uniform():
    n = 1 << 22
    for rate in (0.1, 0.5, 0.03):
        kept = float(np.mean(np.asarray(keep_mask(jax.random.key(3), rate, (n,)))))
        sigma = np.sqrt(rate * (1 - rate) / n)
        assert abs(kept - (1 - rate)) < 5 * sigma, (rate, kept)
    bits = np.asarray(hash_bits(jax.random.key(4), (1 << 20,)))
    per_bit = np.unpackbits(bits.view(np.uint8)).reshape(-1, 32).mean(axis=0)
    assert np.all(np.abs(per_bit - 0.5) < 5 * 0.5 / np.sqrt(1 << 20))
    # neighbouring elements and rows are uncorrelated
    m = np.asarray(keep_mask(jax.random.key(5), 0.5, (1024, 1024)), np.float64)
    for a, b in ((m[:, :-1], m[:, 1:]), (m[:-1], m[1:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / 1024


def test_keys_give_independent_masks_and_same_key_the_same():
    shape = (256, 768)
    a = np.asarray(keep_mask(jax.random.key(0), 0.1, shape))
    np.testing.assert_array_equal(a, np.asarray(keep_mask(jax.random.key(0), 0.1, shape)))
    for other in (jax.random.key(1), jax.random.fold_in(jax.random.key(0), 1)):
        b = np.asarray(keep_mask(other, 0.1, shape))
        both = np.mean(a & b)  # independent: P(both kept) = 0.81
        assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / a.size)


def test_mask_is_a_function_of_the_element_index():
    """A sub-array's mask is the slice of the big array's mask at the same indices only when the shapes
    agree; what must hold is shape-determinism and that the flat index (not the shape) drives the bits."""
    key = jax.random.key(9)
    flat = np.asarray(hash_bits(key, (6 * 7 * 5,)))
    cube = np.asarray(hash_bits(key, (6, 7, 5)))
    np.testing.assert_array_equal(cube.ravel(), flat)


def test_dropout_scales_kept_values_and_zeroes_the_rest():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((64, 300)), jnp.float32)
    key = jax.random.key(2)
    y = np.asarray(dropout(x, 0.1, key))
    keep = np.asarray(keep_mask(key, 0.1, x.shape))
    np.testing.assert_array_equal(y[~keep], 0.0)
    np.testing.assert_allclose(y[keep], np.asarray(x)[keep] / 0.9, rtol=2.4e-7)  # 1 ulp: XLA may multiply by 1/0.9
    assert dropout(x, 0.1, None) is x and dropout(x, 0.0, key) is x
    # bfloat16: scaled in float32 and rounded once (1/0.9 in bfloat16 would be 0.16% off)
    xb = x.astype(jnp.bfloat16)
    yb = np.asarray(dropout(xb, 0.1, key), np.float32)
    expected = np.asarray((np.asarray(xb, np.float32) / 0.9).astype(jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(yb[keep], expected[keep])


def test_bad_rate_is_refused():
    with pytest.raises(ValueError, match="dropout rate"):
        keep_mask(jax.random.key(0), 1.0, (3,))


def test_same_mask_on_a_sharded_array():
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = np.array(jax.devices()[:8]).reshape(2, -1)
    if devices.size < 2:
        pytest.fail("the test-suite runs with 8 host CPU devices (conftest)")
    mesh = Mesh(devices, ("a", "b"))
    x = jnp.ones((16, 64, 96), jnp.float32)
    key = jax.random.key(11)
    single = np.asarray(jax.jit(lambda x: dropout(x, 0.1, key))(x))
    sharded_x = jax.device_put(x, NamedSharding(mesh, P("a", None, "b")))
    sharded = jax.jit(lambda x: dropout(x, 0.1, key), out_shardings=NamedSharding(mesh, P("a", None, "b")))(sharded_x)
    np.testing.assert_array_equal(np.asarray(sharded), single)
