"""Exact sparse index: chunked top-k equals brute force, save/load, incremental building, errors."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from jsplade.retrieval.index import SparseIndex, TopKAccumulator

V = 40


def random_csr(rng, rows, density, integer):
    m = sp.random(rows, V, density=density, format="csr", random_state=rng, dtype=np.float64)
    m.data = np.ceil(m.data * 3) if integer else m.data * 2
    return m.astype(np.float32)


def brute_force(q, d, ids, k):
    """Full float32 score matrix from scipy, sorted by (-score, id) with Python's sort."""
    scores = (q @ d.T).toarray()
    out_ids, out_scores = [], []
    for row in scores:
        order = sorted(range(len(ids)), key=lambda j: (-row[j], ids[j]))[:k]
        out_ids.append([ids[j] for j in order])
        out_scores.append(row[order])
    return out_ids, np.array(out_scores, dtype=np.float32)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in rng.permutation(300)]   # string order differs from numeric and insertion order
    return ids, random_csr(rng, 300, 0.08, True), random_csr(rng, 300, 0.08, False), rng


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize("chunk_size,query_batch_size", [(1, 1000), (7, 3), (64, 16), (10_000, 1000)])
def test_search_equals_brute_force(data, integer, chunk_size, query_batch_size):
    ids, docs_int, docs_float, _ = data
    docs = docs_int if integer else docs_float
    rng = np.random.default_rng(1)
    queries = random_csr(rng, 25, 0.15, integer)
    index = SparseIndex(V)
    index.add(ids, docs)
    for k in (1, 10, 300, 500):
        got_ids, got_scores = index.search(queries, k, chunk_size=chunk_size, query_batch_size=query_batch_size)
        want_ids, want_scores = brute_force(queries, docs, ids, k)
        assert got_ids == want_ids
        assert got_scores.dtype == np.float32
        np.testing.assert_array_equal(got_scores, want_scores)
    if integer:   # integer data: many exact ties, resolved by id
        full = (queries @ docs.T).toarray()
        assert any(len(np.unique(r)) < len(r) for r in full)
    # float32 scores agree with a float64 dense product to float32 precision
    dense = queries.toarray().astype(np.float64) @ docs.toarray().astype(np.float64).T
    top_ids, top_scores = index.search(queries, 5)
    pos = {c: j for j, c in enumerate(ids)}
    ref = np.array([[dense[i, pos[c]] for c in row] for i, row in enumerate(top_ids)])
    np.testing.assert_allclose(top_scores, ref, rtol=1e-6, atol=1e-6 * np.abs(dense).max())


def test_tie_break_uses_string_order():
    index = SparseIndex(3)
    index.add(["b", "10", "a", "9"], np.array([[1, 0, 0]] * 4, np.float32))
    ids, scores = index.search(np.array([[1, 0, 0], [0, 0, 1]], np.float32), 3)
    assert ids == [["10", "9", "a"], ["10", "9", "a"]]
    np.testing.assert_array_equal(scores, [[1, 1, 1], [0, 0, 0]])


def test_incremental_add_equals_one_shot(data):
    ids, docs, _, _ = data
    one = SparseIndex(V)
    one.add(ids, docs)
    inc = SparseIndex(V)
    for lo, hi in [(0, 1), (1, 100), (100, 100), (100, 250), (250, 300)]:
        inc.add(ids[lo:hi], docs[lo:hi])
    queries = random_csr(np.random.default_rng(2), 10, 0.2, True)
    assert inc.ids == one.ids == ids and len(inc) == 300
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(inc.matrix, name), getattr(one.matrix, name))
    # adding after a search (ranks cached) keeps results right
    a = SparseIndex(V)
    a.add(ids[:150], docs[:150])
    a.search(queries, 3)
    a.add(ids[150:], docs[150:])
    (a_ids, a_scores), (o_ids, o_scores) = a.search(queries, 20), one.search(queries, 20)
    assert a_ids == o_ids
    np.testing.assert_array_equal(a_scores, o_scores)


def test_add_canonicalises_and_validates():
    index = SparseIndex(4)
    m = sp.csr_matrix((np.array([0.0, 2.0, 1.0, 3.0], np.float32), np.array([1, 3, 0, 3]), np.array([0, 2, 4])),
                      shape=(2, 4))
    index.add(["x", "y"], m)
    np.testing.assert_array_equal(index.matrix.toarray(), [[0, 0, 0, 2], [1, 0, 0, 3]])
    assert index.matrix.nnz == 3 and index.matrix.dtype == np.float32
    with pytest.raises(ValueError, match="id 'x' is already in the index"):
        index.add(["z", "x"], np.ones((2, 4), np.float32))
    assert index.ids == ["x", "y"] and index.matrix.shape == (2, 4)   # unchanged after the error
    with pytest.raises(ValueError, match="duplicate id 'z'"):
        index.add(["z", "z"], np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="5 columns, expected the vocabulary size 4"):
        index.add(["z"], np.ones((1, 5), np.float32))
    with pytest.raises(ValueError, match="2 rows, expected 1"):
        index.add(["z"], np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.add(["z"], np.array([[np.nan, 0, 0, 0]], np.float32))
    with pytest.raises(TypeError, match="doc_ids\\[0\\] must be a str"):
        index.add([3], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="non-empty string"):
        index.add([""], np.ones((1, 4), np.float32))
    with pytest.raises(ValueError, match="vocab_size"):
        SparseIndex(0)
    empty_ids, empty_scores = SparseIndex(4).search(np.ones((2, 4), np.float32), 3)
    assert empty_ids == [[], []] and empty_scores.shape == (2, 0)


def test_save_load_round_trip_bit_exact(tmp_path, data):
    ids, _, docs, _ = data
    index = SparseIndex(V)
    index.add(ids, docs)
    path = tmp_path / "index.npz"
    index.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.npz"]   # one file, no temporaries left
    with np.load(path, allow_pickle=False) as f:
        assert f["ids"].dtype.kind == "U"
    back = SparseIndex.load(path)
    assert back.ids == ids and back.vocab_size == V
    for name in ("data", "indices", "indptr"):
        a, b = getattr(back.matrix, name), getattr(index.matrix, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    q = random_csr(np.random.default_rng(5), 8, 0.2, False)
    assert back.search(q, 10)[0] == index.search(q, 10)[0]
    # an empty index round-trips too
    SparseIndex(7).save(tmp_path / "empty.npz")
    empty = SparseIndex.load(tmp_path / "empty.npz")
    assert len(empty) == 0 and empty.vocab_size == 7


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        SparseIndex.load(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz"):
        SparseIndex.load(junk)
    good = SparseIndex(3)
    good.add(["a", "b"], np.array([[1, 0, 2], [0, 3, 0]], np.float32))
    good.save(tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as f:
        arrays = {k: f[k] for k in f.files}

    def write(name, **changes):
        p = tmp_path / name
        np.savez(p, **{k: v for k, v in {**arrays, **changes}.items() if v is not None})
        return p

    with pytest.raises(ValueError, match="missing arrays \\['ids'\\]"):
        SparseIndex.load(write("noids.npz", ids=None))
    with pytest.raises(ValueError, match="indptr does not describe"):
        SparseIndex.load(write("ptr.npz", indptr=np.array([0, 2, 1])))
    with pytest.raises(ValueError, match="indices outside"):
        SparseIndex.load(write("idx.npz", indices=np.array([0, 2, 5], np.int32)))
    with pytest.raises(ValueError, match="unknown index format"):
        SparseIndex.load(write("fmt.npz", format=np.array("something else")))
    with pytest.raises(ValueError, match="duplicate id 'a'"):
        SparseIndex.load(write("dup.npz", ids=np.array(["a", "a"])))
    with pytest.raises(ValueError, match="obj.npz"):   # pickled object arrays are never loaded
        SparseIndex.load(write("obj.npz", ids=np.array(["a", None], dtype=object)))
    np.save(tmp_path / "single.npy", np.arange(3))
    with pytest.raises(ValueError, match="single.npy: .*found a single array"):
        SparseIndex.load(tmp_path / "single.npy")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes((tmp_path / "good.npz").read_bytes()[:200])
    with pytest.raises(ValueError, match="trunc.npz"):
        SparseIndex.load(trunc)
    assert zipfile.is_zipfile(tmp_path / "good.npz")


class FakeEncoder:
    def __init__(self, rows: dict[str, np.ndarray], vocab_size: int):
        self.rows, self.vocab_size, self.calls = rows, vocab_size, []

    def encode_document(self, texts, batch_size=32, max_active_dims=None, show_progress_bar=None):
        self.calls.append((len(texts), batch_size, max_active_dims, show_progress_bar))
        return sp.csr_matrix(np.stack([self.rows[t] for t in texts]).astype(np.float32))


def test_from_encoder_streams_chunks(data):
    ids, docs, _, _ = data
    dense = docs.toarray()
    corpus = {cid: f"text of {cid}" for cid in ids[:11]}
    enc = FakeEncoder({f"text of {cid}": dense[j] for j, cid in enumerate(ids[:11])}, V)
    index = SparseIndex.from_encoder(enc, corpus, batch_size=4, show_progress_bar=False, encode_chunk_size=5)
    assert enc.calls == [(5, 4, None, False), (5, 4, None, False), (1, 4, None, False)]
    assert index.ids == ids[:11]
    np.testing.assert_array_equal(index.matrix.toarray(), dense[:11])


def test_accumulator_rejects_nan():
    acc = TopKAccumulator(1, 2)
    with pytest.raises(ValueError, match="NaN"):
        acc.update(np.array([[np.nan, 1.0]]), np.array([0, 1]))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopKAccumulator(1, 0)
