"""SparseEncoder on several devices (data-parallel MLM batches) against one device, and the pieces of
``encode_document`` that corpus encoding calls on their own (tokenize_documents, encode_document_ids,
fingerprint).

Tolerance: the same active entries, values within 1e-5 relative to the largest (a row's batch shape moves
float32 rounding; measured 3.7e-7 on the fixture model, 1.5e-6 on the tiny copy-friendly one); the same
device count gives the same bits.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import SE_FIXTURES
from helpers.tiny_encoder import random_texts, tiny_encoder

from jsplade import SparseEncoder
from jsplade.splade.encoder import resolve_devices


@pytest.fixture(scope="module")
def fixture_encoder():
    return SparseEncoder.from_pretrained(SE_FIXTURES / "model")


def _texts(encoder, n=120, seed=0):
    rng = np.random.default_rng(seed)
    tok = encoder.document_tokenizer.id_to_token
    return [" ".join(tok(int(i)) for i in rng.integers(2000, 20000, rng.integers(1, 50))) for _ in range(n)]


def _same(a, b):
    pa, pb = a.copy(), b.copy()
    pa.data[:] = 1
    pb.data[:] = 1
    assert (pa != pb).nnz == 0  # the same active entries
    assert abs(a - b).max() <= 1e-5 * abs(a).max()


def test_the_default_is_one_cpu_device_and_local_is_all_eight(fixture_encoder):
    assert jax.local_device_count() == 8
    assert fixture_encoder.devices == (jax.local_devices()[0],)
    assert resolve_devices("local") == tuple(jax.local_devices())
    assert resolve_devices(3) == tuple(jax.local_devices()[:3])
    mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()).reshape(2, 4), ("data", "fsdp"))
    assert set(resolve_devices(mesh)) == set(jax.local_devices())


@pytest.mark.parametrize("devices", ["local", 3])
def test_several_devices_equal_one(fixture_encoder, devices):
    texts = _texts(fixture_encoder)
    one = fixture_encoder.set_devices(None).encode_document(texts, batch_size=16)
    try:
        many = fixture_encoder.set_devices(devices).encode_document(texts, batch_size=16)
        again = fixture_encoder.encode_document(texts, batch_size=16)
        packed_many = fixture_encoder.encode_document(texts, packing=True, pack_length=64)
    finally:
        fixture_encoder.set_devices(None)
    _same(one, many)
    assert (many != again).nnz == 0  # deterministic on a fixed device count
    packed_one = fixture_encoder.encode_document(texts, packing=True, pack_length=64)
    _same(packed_one, packed_many)


def test_symmetric_queries_run_on_the_devices_too():
    enc = tiny_encoder()
    enc.model.query = None  # queries through the document MLM
    texts = random_texts(40, seed=3)
    one = enc.encode_query(texts)
    many = enc.set_devices("local").encode_query(texts)
    _same(one, many)


@pytest.mark.parametrize("devices, message", [
    ("all", "devices must be None, 'local'"), (0, "has 8 local devices"), (9, "has 8 local devices"),
    ([], "non-empty list of jax devices"), (["cpu:0"], "non-empty list of jax devices"),
    (object(), "devices must be None"),
])
def test_bad_devices(devices, message):
    with pytest.raises((ValueError, TypeError), match=message):
        resolve_devices(devices)
    with pytest.raises(ValueError, match="twice"):
        resolve_devices([jax.local_devices()[0]] * 2)


def test_tokenize_then_encode_ids_is_encode_document():
    enc = tiny_encoder()
    texts = random_texts(30, seed=1)
    ids, n_truncated = enc.tokenize_documents(texts)
    assert n_truncated == 0 and all(x[0] == 2 and x[-1] == 3 for x in ids)
    assert (enc.encode_document_ids(ids) != enc.encode_document(texts)).nnz == 0


@pytest.mark.parametrize("ids, message", [
    ([np.zeros(0, np.int32)], r"ids\[0\] must be a non-empty"), ([np.array([1.5, 2.0])], "integer array"),
    ([np.array([2, 300, 3])], "outside"), ([np.full(65, 5)], "more than max_seq_length"),
])
def test_bad_token_ids(ids, message):
    with pytest.raises(ValueError, match=message):
        tiny_encoder().encode_document_ids(ids)


def test_the_fingerprint_follows_what_decides_a_vector(tmp_path):
    enc = tiny_encoder()
    fp = enc.fingerprint()
    assert fp.startswith("sha256:") and fp == tiny_encoder().fingerprint()
    enc.save(tmp_path / "m")
    assert SparseEncoder.from_pretrained(tmp_path / "m").fingerprint() == fp  # survives a save and load
    assert tiny_encoder(seed=1).fingerprint() != fp
    other = tiny_encoder()
    flat = nnx.to_flat_state(nnx.state(other.model.mlm, nnx.Param))
    _, var = flat[0]
    var.set_value(var.get_value() + 1e-3)  # one weight tensor moved
    assert other.fingerprint() != fp
    assert tiny_encoder(max_seq_length=32).fingerprint() != fp
