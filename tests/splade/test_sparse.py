"""Sparse vocabulary-vector helpers (``jsplade.splade.sparse``) against references written here with numpy and
scipy.sparse: top-k by |value| per row with ties at the cut going to the lower token id (a Python sort on
(-|v|, id)), CSR conversions compared with ``scipy.sparse`` built from the same dense arrays, and active-dim
counts from ``numpy.count_nonzero``. No arithmetic on values happens here, so every comparison is exact.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp

from jsplade.splade.sparse import (as_csr, check_max_active_dims, dense_to_csr, sparsity, topk_csr_rows,
                                   topk_dense_rows)


def _reference_topk(x: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(x)
    for r, row in enumerate(x):
        nonzero = [(-abs(float(v)), j) for j, v in enumerate(row) if v != 0]
        for _, j in sorted(nonzero)[:k]:
            out[r, j] = row[j]
    return out


def _sparse_rows(seed: int, rows: int = 7, v: int = 40, density: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, v)).astype(np.float32)
    x[rng.random((rows, v)) > density] = 0
    x[0] = 0  # an empty row
    x[1, :3] = [2.0, -2.0, 2.0]  # exact |value| ties, more of them than k = 2 keeps
    x[1, 3:] = 0
    x[2, 5:9] = [-1.5, 1.5, -1.5, 0.25]
    x[2, 9:] = 0
    return x


def _assert_csr_equal(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert sp.isspmatrix_csr(a) and a.shape == b.shape and a.dtype == b.dtype
    assert (a != b).nnz == 0


# ----------------------------------------------------------------------------- argument check
def test_check_max_active_dims():
    assert check_max_active_dims(None) is None
    assert check_max_active_dims(1) == 1
    out = check_max_active_dims(np.int64(8))
    assert out == 8 and type(out) is int
    for bad in (0, -3, True, 2.0, "8", np.float32(4)):
        with pytest.raises(ValueError, match=r"max_active_dims must be a positive integer or None, got"):
            check_max_active_dims(bad)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        check_max_active_dims(0, arg="top_k")


# ----------------------------------------------------------------------------- top-k
@pytest.mark.parametrize("k", [1, 2, 3, 5, 12])
def test_topk_dense_rows_against_the_reference(k):
    x = _sparse_rows(k)
    got = topk_dense_rows(x, k)
    assert got.dtype == x.dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, _reference_topk(x, k))
    assert np.all(np.count_nonzero(got, axis=1) == np.minimum(np.count_nonzero(x, axis=1), k))
    assert got is not x and np.count_nonzero(x) > np.count_nonzero(got)  # the input is not modified in place


def test_topk_ties_keep_the_lower_token_id():
    x = np.array([[0, 3, -3, 1, 3, 0, -3]], np.float32)
    np.testing.assert_array_equal(topk_dense_rows(x, 2), [[0, 3, -3, 0, 0, 0, 0]])
    np.testing.assert_array_equal(topk_csr_rows(sp.csr_matrix(x), 3).toarray(), [[0, 3, -3, 0, 3, 0, 0]])


def test_topk_dense_rows_with_nothing_to_cut():
    x = _sparse_rows(0)
    assert topk_dense_rows(x, None) is x
    assert topk_dense_rows(x, x.shape[1]) is x
    np.testing.assert_array_equal(topk_dense_rows(x, x.shape[1] - 1), x)  # no row has that many non-zeros


@pytest.mark.parametrize("k", [1, 2, 3, 5, 12])
def test_topk_csr_rows_equals_the_dense_rule(k):
    x = _sparse_rows(10 + k)
    got = topk_csr_rows(sp.csr_matrix(x), k)
    _assert_csr_equal(got, sp.csr_matrix(_reference_topk(x, k)))
    assert got.has_sorted_indices and got.nnz == np.count_nonzero(_reference_topk(x, k))


def test_topk_csr_rows_unsorted_indices_other_formats_and_dtype():
    x = _sparse_rows(3)
    want = sp.csr_matrix(_reference_topk(x, 2))
    m = sp.csr_matrix(x)
    perm = np.concatenate([np.arange(m.indptr[r], m.indptr[r + 1])[::-1] for r in range(m.shape[0])])
    unsorted = sp.csr_matrix((m.data[perm], m.indices[perm], m.indptr), shape=m.shape)
    assert not unsorted.has_sorted_indices or unsorted.nnz < 2
    _assert_csr_equal(topk_csr_rows(unsorted, 2), want)
    _assert_csr_equal(topk_csr_rows(sp.coo_matrix(x), 2), want)
    wide = topk_csr_rows(sp.csr_matrix(x.astype(np.float64)), 2)
    assert wide.dtype == np.float64
    np.testing.assert_array_equal(wide.toarray(), want.toarray())


def test_topk_csr_rows_with_nothing_to_cut():
    m = sp.csr_matrix(_sparse_rows(4))
    assert topk_csr_rows(m, None) is m
    kept = topk_csr_rows(m, m.shape[1])
    _assert_csr_equal(kept, m)
    empty = topk_csr_rows(sp.csr_matrix((0, 9), dtype=np.float32), 2)
    assert empty.shape == (0, 9) and empty.nnz == 0


# ----------------------------------------------------------------------------- conversions
def test_dense_to_csr_stores_exactly_the_non_zeros():
    x = _sparse_rows(5).astype(np.float64)
    x[3, 0] = -0.0
    m = dense_to_csr(x)
    assert sp.isspmatrix_csr(m) and m.dtype == np.float32 and m.shape == x.shape
    assert m.nnz == np.count_nonzero(x) and np.all(m.data != 0)
    np.testing.assert_array_equal(m.toarray(), x.astype(np.float32))
    _assert_csr_equal(m, sp.csr_matrix(x.astype(np.float32)))


def test_as_csr_accepts_sparse_and_dense_inputs():
    x = _sparse_rows(6)
    half = x.astype(np.float16)
    for value, want in ((sp.csr_matrix(x), x), (sp.coo_matrix(x.astype(np.float64)), x), (sp.csc_matrix(x), x),
                        (x, x), (half, half.astype(np.float32)), (jnp.asarray(x), x)):
        got = as_csr(value, vocab_size=x.shape[1])
        assert sp.isspmatrix_csr(got) and got.dtype == np.float32 and got.shape == x.shape, type(value)
        np.testing.assert_array_equal(got.toarray(), want)
    row = as_csr(x[2])
    assert row.shape == (1, x.shape[1])
    np.testing.assert_array_equal(row.toarray()[0], x[2])
    assert row.nnz == np.count_nonzero(x[2])


def test_as_csr_bad_inputs_name_the_argument():
    with pytest.raises(ValueError, match=r"queries must be 1-D or 2-D, got shape \[2, 3, 4\]"):
        as_csr(np.zeros((2, 3, 4)), arg="queries")
    with pytest.raises(TypeError, match="documents must be a scipy sparse matrix or a numpy array, got list"):
        as_csr([[1.0, 0.0]], arg="documents")
    with pytest.raises(TypeError, match="embeddings must be a scipy sparse matrix or a numpy array, got NoneType"):
        as_csr(None)
    with pytest.raises(ValueError, match="embeddings has 5 columns, expected the vocabulary size 6"):
        as_csr(np.zeros((2, 5)), vocab_size=6)
    with pytest.raises(ValueError, match="q has 5 columns, expected the vocabulary size 6"):
        as_csr(sp.csr_matrix(np.zeros((2, 5))), vocab_size=6, arg="q")


# ----------------------------------------------------------------------------- sparsity
def test_sparsity_counts_active_dims():
    x = _sparse_rows(8, rows=9, v=50)
    stats = sparsity(sp.csr_matrix(x))
    active = np.count_nonzero(x, axis=1).mean()
    assert stats["active_dims"] == pytest.approx(active, rel=1e-12)
    assert stats["sparsity_ratio"] == pytest.approx(1 - active / 50, rel=1e-12)
    assert sparsity(x) == stats  # dense input too
    assert sparsity(np.zeros((0, 7), np.float32)) == {"active_dims": 0.0, "sparsity_ratio": 1.0}
    assert sparsity(np.ones((2, 4), np.float32)) == {"active_dims": 4.0, "sparsity_ratio": 0.0}


def test_sparsity_does_not_count_explicitly_stored_zeros():
    """A CSR matrix may store zeros (scipy keeps them until eliminate_zeros): they are not active dims."""
    m = sp.csr_matrix((np.array([1.0, 0.0, 2.0, 3.0]), np.array([0, 1, 2, 0]), np.array([0, 3, 3, 4])), shape=(3, 5))
    assert m.nnz == 4
    assert sparsity(m)["active_dims"] == pytest.approx(np.count_nonzero(m.toarray(), axis=1).mean(), rel=1e-12)
