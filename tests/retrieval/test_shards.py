"""The encoded-corpus shard format (jsplade.retrieval.shards): canonical bytes, readable by the safetensors
library, every consistency check of the reader, the manifest checks and the bucketed duplicate-id check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.numpy
import scipy.sparse as sp

from jsplade.retrieval import shards as fmt

SETTINGS = {"model": "sha256:x", "vocab_size": 50, "shard_size": 4}


def part(ids, seed=0, settings=SETTINGS, k=0):
    rng = np.random.default_rng(seed)
    m = sp.random(len(ids), 50, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    return m, fmt.encode_part(ids, m, [3] * len(ids), part=k, first_row=4 * k, settings=settings)


def test_bytes_are_canonical_and_readable_by_safetensors(tmp_path):
    ids = ["a", "bé", "c/3", "日本"]
    m, data = part(ids)
    assert data == part(ids)[1] and int.from_bytes(data[:8], "little") % 8 == 0  # same input, same bytes
    path = tmp_path / fmt.part_name(0)
    fmt.write_part(path, data)
    t = safetensors.numpy.load_file(str(path))
    assert t["doc_ids"].tobytes().decode() == "".join(ids)
    got_ids, got, n_tokens = fmt.read_part(path)
    assert got_ids == ids and (got != m).nnz == 0 and got.dtype == np.float32 and n_tokens.tolist() == [3] * 4
    meta, settings = fmt.part_settings(path)
    assert settings == SETTINGS and meta["settings_digest"] == fmt.settings_digest(SETTINGS) and meta["n_docs"] == "4"
    q = m.copy()
    q.data = np.round(q.data * 100).astype(np.int32)
    fmt.write_part(path, fmt.encode_part(ids, q, [1] * 4, part=0, first_row=0, settings=SETTINGS))
    assert fmt.read_part(path)[1].dtype == np.int32


def test_inconsistent_or_foreign_files_are_refused(tmp_path):
    path = tmp_path / fmt.part_name(0)
    m, _ = part(["a", "b"])
    tensors = {"indptr": m.indptr.astype(np.int64), "token_ids": m.indices.astype(np.int32),
               "weights": m.data, "doc_ids": np.frombuffer(b"ab", np.uint8).copy(),
               "doc_id_offsets": np.array([0, 1, 2]), "n_tokens": np.array([1, 1], np.int32)}
    meta = {"format": fmt.PART_FORMAT, "settings": json.dumps(SETTINGS)}
    bad = dict(tensors, token_ids=tensors["token_ids"] + 50)  # a token id past the vocabulary
    path.write_bytes(safetensors.numpy.save(bad, metadata=meta))
    with pytest.raises(ValueError, match="inconsistent shard part"):
        fmt.read_part(path)
    path.write_bytes(safetensors.numpy.save(tensors, metadata={"format": "other"}))
    with pytest.raises(ValueError, match="not a jsplade shard part"):
        fmt.part_settings(path)
    path.write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match="not a readable shard part"):
        fmt.part_settings(path)
    with pytest.raises(FileNotFoundError, match="shard part not found"):
        fmt.part_settings(tmp_path / "gone.safetensors")


def test_manifest_checks(tmp_path):
    entries = []
    for k in range(2):
        _, data = part([f"d{k}{i}" for i in range(4)], seed=k, k=k)
        fmt.write_part(tmp_path / fmt.part_name(k), data)
        entries.append({"file": fmt.part_name(k), "docs": 4, "nnz": 0, "bytes": len(data)})
    with pytest.raises(ValueError, match=r"unfinished shard directory \(2 parts, no manifest.json\)"):
        fmt.read_shards(tmp_path)
    fmt.write_manifest(tmp_path, SETTINGS, 50, entries)
    shards = fmt.read_shards(tmp_path)
    assert shards.n_docs == 8 and shards.load()[0] == [f"d{k}{i}" for k in range(2) for i in range(4)]
    fmt.write_manifest(tmp_path, dict(SETTINGS, shard_size=5), 50, entries)
    with pytest.raises(ValueError, match="written under other settings than"):
        fmt.read_shards(tmp_path)
    fmt.write_manifest(tmp_path, SETTINGS, 50, [dict(entries[0], bytes=1), entries[1]])
    with pytest.raises(ValueError, match="bytes, the manifest says 1"):
        fmt.read_shards(tmp_path)
    with pytest.raises(FileNotFoundError, match="shard directory not found"):
        fmt.read_shards(tmp_path / "nope")


@pytest.mark.parametrize("buckets", [1, 3])
def test_duplicate_ids_across_parts(tmp_path, buckets):
    paths = []
    for k, ids in enumerate((["a", "b", "c"], ["d", "e"], ["f", "b"])):
        p = tmp_path / fmt.part_name(k)
        fmt.write_part(p, part(ids, k=k)[1])
        paths.append(p)
    assert fmt.find_duplicate_ids(paths, buckets=buckets) == ("b", (0, 1), (2, 1))
    assert fmt.find_duplicate_ids(paths[:2], buckets=buckets) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dupcheck")]  # its buckets are removed
