"""Pruning and impact quantisation (``jsplade.splade.pruning``).

Each prune kind is checked against a by-hand version of OpenSearch's definition written here: a loop over rows
on Python lists sorted by (-weight, token id), with OpenSearch's float32 arithmetic spelled out on numpy float32
scalars. The random matrices mix weights from a small dyadic grid (many exact ties, values exactly at
thresholds) with arbitrary float32 weights, and include empty rows and one-entry rows, so the comparison
direction (>= / <=) and the tie rule (lower token id first) are both exercised; pruned matrices must match
exactly. The quantisation bounds are checked on random data in float64 and must also be reasonably tight.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

import jsplade.splade.pruning as pruning
from jsplade.splade.pruning import Pruning, Quantization, quantized_score_error_bound, score_error_bound

F32 = np.float32


# ----------------------------------------------------------------------------- data
def _random_csr(seed: int, rows: int = 60, width: int = 25) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = np.zeros((rows, width), dtype=np.float32)
    for r in range(rows):
        n = int(rng.choice([0, 1, 2, 3, 5, 8, width // 2, width]))
        cols = rng.choice(width, size=n, replace=False)
        grid = rng.integers(1, 9, size=n).astype(np.float32) / 8  # 0.125 .. 1: ties, exact thresholds
        free = rng.random(n).astype(np.float32) * 2 + F32(1e-3)
        dense[r, cols] = np.where(rng.random(n) < 0.6, grid, free)
    return sp.csr_matrix(dense)


MATRICES = [_random_csr(s) for s in range(4)]


def _rows(m: sp.csr_matrix) -> list[list[tuple[int, np.float32]]]:
    m = m.tocsr()
    return [[(int(j), F32(v)) for j, v in zip(m.indices[m.indptr[r]:m.indptr[r + 1]],
                                              m.data[m.indptr[r]:m.indptr[r + 1]]) if v != 0]
            for r in range(m.shape[0])]


def _from_rows(rows, width: int) -> sp.csr_matrix:
    dense = np.zeros((len(rows), width), dtype=np.float32)
    for r, entries in enumerate(rows):
        for j, v in entries:
            dense[r, j] = v
    return sp.csr_matrix(dense)


def _by_hand(kind: str, value, m: sp.csr_matrix) -> sp.csr_matrix:
    out = []
    for entries in _rows(m):
        ranked = sorted(entries, key=lambda e: (-float(e[1]), e[0]))  # equal weights: lower token id first
        if kind == "none":
            kept = entries
        elif kind == "top_k":
            kept = ranked[:value]
        elif kind == "abs_value":
            kept = [e for e in entries if e[1] >= F32(value)]
        elif kind == "max_ratio":
            top = max((v for _, v in entries), default=F32(0))
            kept = [e for e in entries if e[1] >= F32(F32(value) * top)]
        elif kind == "alpha_mass":
            total = F32(math.fsum(float(v) for _, v in entries))
            limit = F32(F32(value) * total)
            running, kept = F32(0), []
            for e in ranked:
                running = F32(running + e[1])
                if running <= limit:
                    kept.append(e)
        else:
            raise AssertionError(kind)
        out.append(kept)
    return _from_rows(out, m.shape[1])


def _assert_same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    assert a.shape == b.shape
    assert a.dtype == np.float32
    assert a.has_sorted_indices
    assert np.all(a.data != 0)
    b = b.tocsr()
    b.sort_indices()
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)


CASES = ([("none", None)]
         + [("top_k", k) for k in (1, 2, 3, 5, 100)]
         + [("max_ratio", r) for r in (0.0, 0.25, 0.5, 0.75, 0.9, 0.999)]
         + [("abs_value", t) for t in (0.0, 0.125, 0.5, 0.875, 1.0, 1e9)]
         + [("alpha_mass", a) for a in (0.0, 0.1, 0.5, 0.75, 0.8, 0.999999)])


# ----------------------------------------------------------------------------- pruning
@pytest.mark.parametrize("kind,value", CASES)
def test_prune_matches_definition(kind, value):
    for m in MATRICES:
        before = m.copy()
        _assert_same(Pruning(kind, value).apply(m), _by_hand(kind, value, m))
        assert (m != before).nnz == 0  # input untouched


@pytest.mark.parametrize("kind,value", [("top_k", 2), ("top_k", 5), ("alpha_mass", 0.5), ("alpha_mass", 0.9)])
def test_prune_in_many_small_blocks(monkeypatch, kind, value):
    """Force the length-grouped blocks to be tiny (many blocks, one-row blocks for long rows)."""
    monkeypatch.setattr(pruning, "_BLOCK", 7)
    for m in MATRICES:
        _assert_same(Pruning(kind, value).apply(m), _by_hand(kind, value, m))


def test_opensearch_examples_and_comparison_direction():
    def kept(kind, value, weights):
        m = sp.csr_matrix(np.asarray([weights], dtype=np.float32))
        return Pruning(kind, value).apply(m).toarray()[0].tolist()

    # OpenSearch's own unit-test examples (PruneUtilsTests)
    assert kept("top_k", 2, [5, 3, 4, 1]) == [5, 0, 4, 0]
    assert kept("max_ratio", 0.7, [10, 8, 5, 2]) == [10, 8, 0, 0]
    assert kept("abs_value", 3.0, [5, 3, 2, 1]) == [5, 3, 0, 0]
    assert kept("alpha_mass", 0.8, [10, 6, 3, 1]) == [10, 6, 0, 0]  # running sum 16 == 0.8 * 20: kept
    # exactly at the threshold is kept, the crossing weight is dropped
    assert kept("max_ratio", 0.5, [1.0, 0.5, 0.25]) == [1.0, 0.5, 0]
    assert kept("alpha_mass", 0.5, [4, 3, 2, 1]) == [4, 0, 0, 0]  # 4 <= 5 < 7
    assert kept("alpha_mass", 0.7, [4, 3, 2, 1]) == [4, 3, 0, 0]  # 7 <= 7 < 9
    assert kept("alpha_mass", 0.0, [4, 3, 2, 1]) == [0, 0, 0, 0]
    assert kept("alpha_mass", 0.3, [4, 3, 2, 1]) == [0, 0, 0, 0]  # the largest alone already exceeds 3
    # ties: the lower token id wins
    assert kept("top_k", 2, [1, 2, 2, 2]) == [0, 2, 2, 0]
    assert kept("alpha_mass", 0.5, [1, 1, 1, 1]) == [1, 1, 0, 0]


def test_prune_canonicalises_input():
    m = sp.csr_matrix((np.array([0.5, 0.0, 0.25, 0.25, 1.0], dtype=np.float64),
                       np.array([3, 1, 0, 0, 2]), np.array([0, 2, 5, 5])), shape=(3, 4))
    out = Pruning().apply(m)
    assert out.dtype == np.float32 and out.has_sorted_indices and out.shape == (3, 4)
    np.testing.assert_array_equal(out.toarray(), [[0, 0, 0, 0.5], [0.5, 0, 1.0, 0], [0, 0, 0, 0]])
    assert out.nnz == 3
    empty = sp.csr_matrix((5, 7), dtype=np.float32)
    for kind, value in CASES:
        res = Pruning(kind, value).apply(empty)
        assert res.shape == (5, 7) and res.nnz == 0


@pytest.mark.parametrize("bad", [-0.5, np.nan, np.inf])
def test_prune_rejects_bad_weights(bad):
    m = sp.csr_matrix(np.array([[1, 0], [0, bad]], dtype=np.float32))
    with pytest.raises(ValueError, match="row 1"):
        Pruning("top_k", 1).apply(m)


@pytest.mark.parametrize("kind,value", [("top_k", 1), ("top_k", 3), ("abs_value", 0.5), ("abs_value", 0.3),
                                        ("max_ratio", 0.5)])
def test_prune_idempotent(kind, value):
    p = Pruning(kind, value)
    for m in MATRICES:
        once = p.apply(m)
        _assert_same(p.apply(once), once)


@pytest.mark.parametrize("kind,value,message", [
    ("top_k", 0, "top_k value must be a positive integer"),
    ("top_k", -1, "positive integer"),
    ("top_k", 1.5, "positive integer"),
    ("top_k", True, "must be a number"),
    ("top_k", None, "top_k value is required"),
    ("max_ratio", 1.0, r"max_ratio value must be in the range \[0, 1\)"),
    ("max_ratio", -0.1, r"\[0, 1\)"),
    ("max_ratio", float("nan"), r"\[0, 1\)"),
    ("alpha_mass", 1.0, r"alpha_mass value must be in the range \[0, 1\)"),
    ("alpha_mass", "0.5", "must be a number"),
    ("abs_value", -0.1, "abs_value value must be finite and >= 0"),
    ("abs_value", float("inf"), ">= 0"),
    ("none", 3, "must be None"),
    ("top-k", 3, "prune kind must be one of"),
])
def test_pruning_validation(kind, value, message):
    with pytest.raises(ValueError, match=message):
        Pruning(kind, value)


def test_pruning_text_and_dict_forms():
    for kind, value in CASES:
        p = Pruning(kind, value)
        assert Pruning.parse(str(p)) == p
        assert Pruning.from_dict(p.to_dict()) == p
        assert Pruning.from_dict(p.to_opensearch()) == p
    assert str(Pruning()) == "none" and Pruning.parse(" None ") == Pruning()
    assert str(Pruning("top_k", 100.0)) == "top_k:100"
    assert Pruning("top_k", 100.0) == Pruning("top_k", 100) and isinstance(Pruning("top_k", 100.0).value, int)
    assert Pruning.parse("max_ratio=0.1") == Pruning("max_ratio", 0.1)
    assert str(Pruning("alpha_mass", 0.1)) == "alpha_mass:0.1"
    assert Pruning("top_k", 7).to_opensearch() == {"prune_type": "top_k", "prune_ratio": 7.0}
    assert Pruning().to_opensearch() == {"prune_type": "none"}
    for bad in ("top_k", "top_k:x", "topk:3", "top_k:0", "max_ratio:1"):
        with pytest.raises(ValueError):
            Pruning.parse(bad)
    with pytest.raises(ValueError, match="unknown keys"):
        Pruning.from_dict({"kind": "top_k", "ratio": 3})


# ----------------------------------------------------------------------------- quantisation
def test_quantize_values_zeros_and_dequantize():
    w = np.array([[0.1, 0.125, 0.375, 0.625, 1.0, 0.0], [0.124, 2.5, 0, 0, 0, 3.0]], dtype=np.float32)
    q = Quantization(4.0).quantize(sp.csr_matrix(w))
    assert q.dtype == np.int32 and q.shape == w.shape and q.has_sorted_indices
    # floor(4w + 0.5): 0.4 -> 0 (dropped), 0.5 -> 1, 1.5 -> 2, 2.5 -> 3 (half up), 0.496 -> 0, 10 -> 10
    np.testing.assert_array_equal(q.toarray(), [[0, 1, 2, 3, 4, 0], [0, 10, 0, 0, 0, 12]])
    assert q.nnz == 6 and np.all(q.data != 0)
    back = Quantization(4.0).dequantize(q)
    assert back.dtype == np.float32 and back.shape == w.shape
    np.testing.assert_array_equal(back.toarray(), q.toarray() / 4.0)

    rng = np.random.default_rng(0)
    m = sp.random(50, 300, density=0.1, random_state=1, dtype=np.float32)
    m.data = (rng.random(m.nnz) * 3).astype(np.float32)
    for factor in (1.0, 10.0, 100.0, 333.3):
        qz = Quantization(factor)
        mq = qz.quantize(m)
        expected = np.floor(m.toarray().astype(np.float64) * factor + 0.5)
        np.testing.assert_array_equal(mq.toarray(), expected)
        err = np.abs(qz.dequantize(mq).toarray().astype(np.float64) - m.toarray())
        assert err.max() <= 0.5 / factor * (1 + 1e-6)


def test_quantize_dtypes_and_overflow():
    m = sp.csr_matrix(np.array([[1.27, 0], [0, 1.28]], dtype=np.float32))
    np.testing.assert_array_equal(Quantization(100, "int8").quantize(m[:1]).toarray(), [[127, 0]])
    with pytest.raises(ValueError, match=r"row 1 .*outside int8"):
        Quantization(100, "int8").quantize(m)
    assert Quantization(100, "int16").quantize(m).dtype == np.int16
    with pytest.raises(ValueError, match="row 0"):
        Quantization(1, "uint8").quantize(sp.csr_matrix(np.array([[-2.0, 1.0]], dtype=np.float32)))
    with pytest.raises(ValueError, match="row 0"):
        Quantization(1).quantize(sp.csr_matrix(np.array([[np.nan, 1.0]], dtype=np.float32)))
    with pytest.raises(ValueError, match="outside int32"):
        Quantization(1e10).quantize(m)
    with pytest.raises(ValueError, match="integers"):
        Quantization().dequantize(m)


def test_quantization_validation_and_forms():
    for bad in (0, -1, float("inf"), float("nan"), True, "100"):
        with pytest.raises(ValueError, match="quantization factor"):
            Quantization(bad)
    with pytest.raises(ValueError, match="quantization dtype must be one of"):
        Quantization(100, "float32")
    for qz in (Quantization(), Quantization(4.0, "uint8"), Quantization(0.1, "int64"), Quantization(333.3, "int16")):
        assert Quantization.parse(str(qz)) == qz
        assert Quantization.from_dict(qz.to_dict()) == qz
    assert str(Quantization()) == "int32:100"
    for text in ("int:100", "100", "int32=100", " INT32 : 100.0 "):
        assert Quantization.parse(text) == Quantization()
    for bad in ("int32:", "float:3", "int8:-1", "x"):
        with pytest.raises(ValueError):
            Quantization.parse(bad)
    with pytest.raises(ValueError, match="unknown keys"):
        Quantization.from_dict({"factor": 3, "bits": 8})


# ----------------------------------------------------------------------------- error bounds
def _bound_data(seed: int):
    rng = np.random.default_rng(seed)
    width = 40
    q = np.zeros((30, width))
    for r in range(30):
        cols = rng.choice(width, size=int(rng.integers(1, 8)), replace=False)
        q[r, cols] = rng.random(cols.size) * 3
    d = rng.random((400, width)) * 2
    d[rng.random(d.shape) < 0.6] = 0
    return sp.csr_matrix(q.astype(np.float32)), sp.csr_matrix(d.astype(np.float32))


def _deq(mq: sp.csr_matrix, factor: float) -> np.ndarray:
    return mq.toarray().astype(np.float64) / factor


@pytest.mark.parametrize("factor", [1.0, 3.0, 10.0, 100.0])
def test_score_bound_documents_quantised(factor):
    q, d = _bound_data(int(factor))
    exact = q.toarray().astype(np.float64) @ d.toarray().astype(np.float64).T
    approx = q.toarray().astype(np.float64) @ _deq(Quantization(factor).quantize(d), factor).T
    err = np.abs(exact - approx)
    pair = score_error_bound(q, factor, d)
    per_query = score_error_bound(q, factor)
    assert pair.shape == (30, 400) and per_query.shape == (30,)
    np.testing.assert_allclose(per_query, 0.5 / factor * np.abs(q.toarray().astype(np.float64)).sum(axis=1),
                               rtol=1e-12)
    np.testing.assert_allclose(Quantization(factor).score_error_bound(q, d), pair)
    slack = 1 + 1e-9
    assert np.all(err <= pair * slack + 1e-12)
    assert np.all(err <= per_query[:, None] * slack + 1e-12)
    assert np.all(pair <= per_query[:, None] * slack)
    # not vacuous
    assert (err / np.where(pair > 0, pair, np.inf)).max() > 0.5
    assert (err.max(axis=1) / per_query).max() > 0.1


@pytest.mark.parametrize("factor,query_factor", [(1.0, None), (10.0, None), (100.0, 10.0), (5.0, 50.0)])
def test_score_bound_both_quantised(factor, query_factor):
    g = factor if query_factor is None else query_factor
    q, d = _bound_data(7 + int(factor))
    qq = _deq(Quantization(g).quantize(q), g)
    dq = _deq(Quantization(factor).quantize(d), factor)
    exact = q.toarray().astype(np.float64) @ d.toarray().astype(np.float64).T
    err = np.abs(exact - qq @ dq.T)
    pair = quantized_score_error_bound(q, factor, d, query_factor=query_factor)
    qd, dd = np.abs(q.toarray().astype(np.float64)), d.toarray().astype(np.float64)
    by_hand = np.array([[sum(qd[i, t] / (2 * factor) + dd[j, t] / (2 * g) + 0.25 / (factor * g)
                             for t in range(q.shape[1]) if qd[i, t] and dd[j, t]) for j in range(0, 400, 37)]
                        for i in range(30)])
    np.testing.assert_allclose(pair[:, ::37], by_hand, rtol=1e-12, atol=1e-15)
    per_query = quantized_score_error_bound(q, factor, query_factor=query_factor, max_doc_weight=float(dd.max()))
    slack = 1 + 1e-9
    assert np.all(err <= pair * slack + 1e-12)
    assert np.all(pair <= per_query[:, None] * slack)
    assert (err / np.where(pair > 0, pair, np.inf)).max() > 0.5
    with pytest.raises(ValueError, match="max_doc_weight"):
        quantized_score_error_bound(q, factor)


def test_score_bound_is_attained():
    """Entries a full half below the next integer: every rounding error has the same sign and size ~1/2."""
    factor = 10.0
    d = sp.csr_matrix(np.array([[0.0499, 0.1499, 0.2499, 0.0]], dtype=np.float32))  # 0.499, 1.499, 2.499
    q = sp.csr_matrix(np.array([[1.0, 2.0, 0.5, 4.0]], dtype=np.float32))
    exact = (q @ d.T).toarray().astype(np.float64)[0, 0]
    approx = (q.astype(np.float64) @ _deq(Quantization(factor).quantize(d), factor).T)[0, 0]
    pair = score_error_bound(q, factor, d)[0, 0]
    assert pair == pytest.approx(3.5 / 20)
    assert abs(exact - approx) == pytest.approx(pair, rel=1e-2)
    with pytest.raises(ValueError, match="width"):
        score_error_bound(q, factor, sp.csr_matrix((1, 3), dtype=np.float32))
