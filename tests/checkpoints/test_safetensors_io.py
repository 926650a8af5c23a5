from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from jsplade.checkpoints.safetensors_io import (SafetensorsError, read_safetensors, read_weights_dir, write_safetensors,
                                    write_weights_dir)


def _tensors(rng):
    return {"a.weight": rng.standard_normal((3, 5)).astype(np.float32),
            "b.bias": rng.standard_normal((7,)).astype(np.float32),
            "c.half": rng.standard_normal((2, 2)).astype(np.float16),
            "d.bf16": rng.standard_normal((4,)).astype(ml_dtypes.bfloat16)}


def test_round_trip_and_interop_with_the_safetensors_library(tmp_path):
    t = _tensors(np.random.default_rng(0))
    write_safetensors(tmp_path / "x.safetensors", t, {"format": "pt"})
    back = read_safetensors(tmp_path / "x.safetensors")
    for k in t:
        assert back[k].dtype == t[k].dtype
        np.testing.assert_array_equal(back[k], t[k])
    # The reference library reads our file, and we read its files.
    lib = safetensors.numpy.load_file(tmp_path / "x.safetensors")
    np.testing.assert_array_equal(lib["a.weight"], t["a.weight"])
    safetensors.numpy.save_file({"z": t["a.weight"]}, tmp_path / "y.safetensors")
    np.testing.assert_array_equal(read_safetensors(tmp_path / "y.safetensors")["z"], t["a.weight"])


def test_sharded_directory(tmp_path):
    t = _tensors(np.random.default_rng(1))
    paths = write_weights_dir(tmp_path, t, max_shard_bytes=64)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(paths) >= 3 and set(index["weight_map"]) == set(t)
    back, files = read_weights_dir(tmp_path)
    assert len(files) == len(paths) - 1
    for k in t:
        np.testing.assert_array_equal(back[k], t[k])


def test_bad_files(tmp_path):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="m.safetensors"):
        read_safetensors(p)
    write_safetensors(p, {"w": np.ones((100,), np.float32)})
    p.write_bytes(p.read_bytes()[:-40])  # truncated data
    with pytest.raises(SafetensorsError, match="does not fit"):
        read_safetensors(p)
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    d = tmp_path / "only_bin"
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pickle checkpoints are never loaded"):
        read_weights_dir(d)
    d2 = tmp_path / "sharded"
    d2.mkdir()
    (d2 / "model.safetensors.index.json").write_text('{"weight_map": {"w": "missing.safetensors"}}')
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        read_weights_dir(d2)
