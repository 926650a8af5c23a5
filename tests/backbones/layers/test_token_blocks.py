"""map_token_blocks (jsplade.backbones.layers.token_blocks): the per-token map over blocks equals the map itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jsplade.backbones.layers.token_blocks import map_token_blocks


def test_token_blocks_give_the_per_token_map():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 23, 4)), jnp.float32)
    fn = lambda t: jnp.tanh(t) * 2.0  # noqa: E731 - any per-token map
    np.testing.assert_array_equal(np.asarray(map_token_blocks(fn, x, 5)), np.asarray(fn(x)))  # ragged: 5·5 > 23
    np.testing.assert_array_equal(np.asarray(map_token_blocks(fn, x, 23)), np.asarray(fn(x)))  # one block


def test_the_output_width_may_differ_and_gradients_pass_through():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 9, 3)), jnp.float32)
    w = jnp.asarray(np.random.default_rng(3).standard_normal((3, 5)), jnp.float32)
    fn = lambda t: jnp.einsum("bcd,de->bce", t, w, precision="highest")  # noqa: E731
    assert map_token_blocks(fn, x, 4).shape == (1, 9, 5)
    np.testing.assert_allclose(np.asarray(jax.grad(lambda v: map_token_blocks(fn, v, 4).sum())(x)),
                               np.asarray(jax.grad(lambda v: fn(v).sum())(x)), rtol=1e-6)
