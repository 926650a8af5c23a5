"""jsplade.backbones.layers.embedding: ``Embed`` lookups against numpy indexing (bit-exact) and torch's
``F.embedding``, its gradient against a numpy scatter-add (``np.add.at``; exact up to float32 summation order,
1e-6 relative), and its initial table (float32, N(0, std²) from the ``params`` stream).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from helpers.fixtures import max_rel

from jsplade.backbones.layers.embedding import Embed

ROWS, DIM = 400, 64  # one table shape throughout: each new shape costs a compile of the initialiser


def _embed(seed: int = 0) -> tuple[Embed, np.ndarray]:
    table = np.random.default_rng(seed).standard_normal((ROWS, DIM)).astype(np.float32)
    embed = Embed(ROWS, DIM, rngs=nnx.Rngs(0), std=0.02)
    embed.embedding.set_value(jnp.asarray(table))
    return embed, table


def test_initial_table_shape_dtype_and_scale():
    embed = Embed(ROWS, DIM, rngs=nnx.Rngs(3), std=0.05)
    table = np.asarray(embed.embedding[...])
    assert table.shape == (ROWS, DIM) and table.dtype == np.float32
    # 25 600 draws: the sample std is within 2% of 0.05 and the mean within 4 standard errors of 0
    assert abs(table.std() / 0.05 - 1) < 0.02
    assert abs(table.mean()) < 4 * 0.05 / np.sqrt(table.size)
    again = Embed(ROWS, DIM, rngs=nnx.Rngs(3), std=0.05).embedding[...]
    np.testing.assert_array_equal(again, table)  # a function of the seed
    other = Embed(ROWS, DIM, rngs=nnx.Rngs(4), std=0.05).embedding[...]
    assert not np.array_equal(other, table)


def test_lookup_is_numpy_indexing_for_any_id_shape():
    embed, table = _embed()
    rng = np.random.default_rng(1)
    for shape in [(), (5,), (3, 11), (2, 3, 4)]:
        ids = rng.integers(0, ROWS, shape).astype(np.int32)
        out = embed(jnp.asarray(ids))
        assert out.shape == shape + (DIM,) and out.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(out), table[ids])


def test_lookup_matches_torch_embedding_under_jit():
    embed, table = _embed(2)
    ids = np.random.default_rng(3).integers(0, ROWS, (4, 9))
    ref = torch.nn.functional.embedding(torch.from_numpy(ids), torch.from_numpy(table)).numpy()
    out = jax.jit(lambda m, i: m(i))(embed, jnp.asarray(ids, jnp.int32))
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_gradient_is_a_scatter_add_over_repeated_ids():
    embed, _ = _embed(4)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 6, (3, 10)).astype(np.int32)  # only rows 0..5, many repeats
    cot = rng.standard_normal((3, 10, DIM)).astype(np.float32)
    graphdef, state = nnx.split(embed)

    def loss(state):
        return jnp.sum(nnx.merge(graphdef, state)(jnp.asarray(ids)) * cot)

    grad = np.asarray(jax.grad(loss)(state)["embedding"].get_value())
    ref = np.zeros((ROWS, DIM), np.float64)
    np.add.at(ref, ids.reshape(-1), cot.reshape(-1, DIM).astype(np.float64))
    assert max_rel(grad, ref) < 1e-6
    assert grad.shape == (ROWS, DIM)
    np.testing.assert_array_equal(grad[6:], 0.0)  # rows never looked up get no gradient
