"""The static query route (``jsplade.splade.static_embedding``) against two references:

* numpy written here: presence[b, j] = 1 iff token j occurs at an unmasked position of row b (repeats count
  once), q = presence · w; CSR rows built with ``scipy.sparse`` from those dense rows, zero weights not stored;
* sentence-transformers' ``SparseStaticEmbedding`` (torch) loaded from the fixture's query module and run on
  its own tokenization of the fixture queries (padding, repeats, [UNK], empty texts).

The route is a lookup and a product with 0 or 1, so every comparison is exact (tolerance zero).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from flax import nnx
from helpers.fixtures import SE_FIXTURES
from sentence_transformers.sparse_encoder.modules.sparse_static_embedding import SparseStaticEmbedding

from jsplade.splade.static_embedding import StaticQueryEmbedding, query_presence, query_rows_csr

QUERIES = json.loads((SE_FIXTURES / "expected" / "texts.json").read_text())["queries"]


def _reference_presence(ids: np.ndarray, mask: np.ndarray, v: int) -> np.ndarray:
    out = np.zeros((ids.shape[0], v), np.float32)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if mask[b, t] != 0:
                out[b, ids[b, t]] = 1.0
    return out


def _weights(v: int, seed: int = 0) -> np.ndarray:
    w = np.random.default_rng(seed).uniform(-2.0, 8.0, v).astype(np.float32)  # negative weights included
    w[[0, 3]] = 0.0
    return w


@pytest.fixture(scope="module")
def st_module():
    return SparseStaticEmbedding.load(str(SE_FIXTURES / "model" / "query_0_SparseStaticEmbedding")).eval()


# ----------------------------------------------------------------------------- presence
def test_presence_equals_the_reference():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 20, (6, 9)).astype(np.int32)
    mask = (rng.random((6, 9)) > 0.3).astype(np.int32)
    ids[0, :4] = [5, 5, 5, 7]  # a repeated token counts once
    mask[0, :4] = 1
    ids[1, :3], mask[1, :3] = [9, 9, 11], [1, 0, 0]  # the same id masked elsewhere does not remove it
    mask[2] = 0  # an empty row
    got = np.asarray(query_presence(jnp.asarray(ids), jnp.asarray(mask), 20))
    assert got.dtype == np.float32 and got.shape == (6, 20)
    np.testing.assert_array_equal(got, _reference_presence(ids, mask, 20))
    assert got[0, 5] == 1 and got[1, 9] == 1 and got[1, 11] == 0 and not got[2].any()
    assert set(np.unique(got)) <= {0.0, 1.0}


def test_presence_accepts_numpy_int64_and_bool_masks_and_jit():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 30, (3, 5))
    mask = rng.random((3, 5)) > 0.5
    want = _reference_presence(ids, mask, 30)
    np.testing.assert_array_equal(np.asarray(query_presence(ids, mask, 30)), want)
    jitted = jax.jit(query_presence, static_argnums=2)
    np.testing.assert_array_equal(np.asarray(jitted(ids.astype(np.int32), mask.astype(np.int32), 30)), want)


# ----------------------------------------------------------------------------- module
def test_module_multiplies_presence_by_the_weight():
    w = _weights(20)
    module = StaticQueryEmbedding(w)
    assert module.vocab_size == 20 and module.weight[...].dtype == jnp.float32
    presence = _reference_presence(np.array([[1, 2, 2, 4], [3, 0, 19, 7]]), np.ones((2, 4)), 20)
    got = np.asarray(module(jnp.asarray(presence)))
    np.testing.assert_array_equal(got, presence * w)
    assert got[0, 1] == w[1] and got[0, 2] == w[2]  # no relu/clamp: negative weights pass through
    assert (w < 0).any() and (got < 0).any()


def test_module_weight_dtype_and_shape():
    wide = np.arange(5, dtype=np.float64) / 3
    module = StaticQueryEmbedding(wide)
    assert module.weight[...].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(module.weight[...]), wide.astype(np.float32))
    for bad in (np.ones((2, 5), np.float32), np.float32(1.0)):
        with pytest.raises(ValueError, match=r"static query weight must be 1-D \[vocab\], got shape"):
            StaticQueryEmbedding(bad)


def test_module_weight_is_the_trainable_parameter():
    w = _weights(12, seed=3)
    module = StaticQueryEmbedding(w)
    presence = jnp.asarray(_reference_presence(np.array([[1, 5, 5], [5, 7, 11]]), np.ones((2, 3)), 12))
    cot = jnp.asarray([[2.0], [-3.0]], jnp.float32)
    grads = nnx.grad(lambda m: jnp.sum(m(presence) * cot))(module)
    np.testing.assert_array_equal(np.asarray(grads.weight[...]), np.sum(np.asarray(presence) * np.asarray(cot), 0))
    params = nnx.state(module, nnx.Param)
    assert [str(p[0]) for p, _ in nnx.to_flat_state(params)] == ["weight"]


def test_matches_sentence_transformers_on_the_fixture_queries(st_module):
    features = st_module.preprocess(QUERIES)  # ST's own tokenization: no special tokens, padding to the longest
    with torch.no_grad():
        want = st_module(dict(features))["sentence_embedding"].numpy()
    ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
    assert (mask == 0).any()  # padding is present
    weight = st_module.weight.detach().numpy()
    module = StaticQueryEmbedding(weight)
    got = np.asarray(module(query_presence(ids, mask, module.vocab_size)))
    np.testing.assert_array_equal(got, want)
    rows = query_rows_csr([i[m != 0] for i, m in zip(ids, mask)], weight)
    np.testing.assert_array_equal(rows.toarray(), want)


# ----------------------------------------------------------------------------- CSR rows
def test_query_rows_csr_equals_the_dense_route():
    w = _weights(25, seed=4)
    ids_per_query = [np.array([1, 2, 2, 24]), np.array([], np.int32), np.array([0, 3, 3]), np.array([7, 7, 7]),
                     np.array([24, 1, 9])]
    m = query_rows_csr(ids_per_query, w)
    assert sp.isspmatrix_csr(m) and m.dtype == np.float32 and m.shape == (5, 25)
    assert m.indices.dtype == np.int32 and m.has_sorted_indices
    dense = np.zeros((5, 25), np.float32)
    for r, ids in enumerate(ids_per_query):
        dense[r, ids] = w[ids]
    np.testing.assert_array_equal(m.toarray(), dense)
    want = sp.csr_matrix(dense)
    want.eliminate_zeros()
    assert m.nnz == want.nnz == np.count_nonzero(dense)  # weights of exactly 0 (ids 0 and 3) are not stored
    assert m[2].nnz == 0 and m[3].nnz == 1
    presence = _reference_presence(np.array([[1, 2, 2, 24]]), np.ones((1, 4)), 25)
    np.testing.assert_array_equal(m[0].toarray(), np.asarray(StaticQueryEmbedding(w)(jnp.asarray(presence))))


def test_query_rows_csr_of_no_queries():
    m = query_rows_csr([], _weights(9))
    assert m.shape == (0, 9) and m.nnz == 0 and m.dtype == np.float32
