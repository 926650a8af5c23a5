"""Reading and writing safetensors files (single or sharded with an index), never pickle.

The reader parses the format itself (8-byte little-endian header length, JSON header, raw data) so
that every dtype numpy/ml_dtypes knows is supported (including bfloat16) and a malformed file gives
an error naming the file, not a crash. Writers are atomic (temp file + fsync + rename).
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Callable, Mapping

import ml_dtypes
import numpy as np

from jsplade.files import atomic_write_json

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class SafetensorsError(ValueError):
    """A file that is not a readable safetensors file."""


def read_header(path: str | Path) -> tuple[dict, dict, int]:
    """(tensor entries, metadata, data offset) of a safetensors file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise SafetensorsError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw_len)
            if n == 0 or n > _MAX_HEADER:
                raise SafetensorsError(f"{path}: not a safetensors file (header length {n})")
            header_bytes = f.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SafetensorsError(f"{path}: is a directory, expected a .safetensors file") from None
    if len(header_bytes) != n:
        raise SafetensorsError(f"{path}: truncated safetensors header")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: malformed safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: malformed safetensors header (not an object)")
    metadata = header.pop("__metadata__", None) or {}
    return header, metadata, 8 + n


def read_safetensors(path: str | Path, names: set[str] | None = None) -> dict[str, np.ndarray]:
    """All (or the named) tensors of one file as numpy arrays (memory-mapped, read-only)."""
    path = Path(path)
    header, _, offset = read_header(path)
    size = path.stat().st_size
    out: dict[str, np.ndarray] = {}
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > offset else np.zeros((0,), np.uint8)
    for name, entry in header.items():
        if names is not None and name not in names:
            continue
        try:
            dtype = _DTYPES[entry["dtype"]]
            shape = tuple(int(s) for s in entry["shape"])
            start, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has an invalid header entry {entry!r}") from None
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - start != nbytes or start < 0 or offset + end > size:
            raise SafetensorsError(f"{path}: tensor {name!r} data range [{start}, {end}) does not fit its "
                                   f"shape {list(shape)} / dtype {entry['dtype']} or the file size")
        out[name] = mm[offset + start: offset + end].view(dtype).reshape(shape)
    return out


def read_weights_dir(folder: str | Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Tensors of ``model.safetensors`` or of the shards listed in ``model.safetensors.index.json``."""
    folder = Path(folder)
    index = folder / INDEX_NAME
    single = folder / SINGLE_NAME
    if single.is_file():
        return read_safetensors(single), [single]
    if index.is_file():
        try:
            idx = json.loads(index.read_text())
            weight_map = idx["weight_map"]
            assert isinstance(weight_map, dict)
        except Exception as exc:  # noqa: BLE001 - any malformed index is one clear error
            raise SafetensorsError(f"{index}: malformed index file ({exc})") from None
        tensors: dict[str, np.ndarray] = {}
        files = sorted(set(weight_map.values()))
        for fname in files:
            shard = folder / fname
            if Path(fname).name != fname:
                raise SafetensorsError(f"{index}: shard name {fname!r} must be a plain file name")
            if not shard.is_file():
                raise FileNotFoundError(f"{shard}: shard listed in {index.name} is missing")
            wanted = {k for k, v in weight_map.items() if v == fname}
            got = read_safetensors(shard, wanted)
            if set(got) != wanted:
                raise SafetensorsError(f"{shard}: tensors {sorted(wanted - set(got))[:5]} listed in the index are missing")
            tensors.update(got)
        return tensors, [folder / f for f in files]
    pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
    hint = (f" (found {pickles}: pickle checkpoints are never loaded; convert them to safetensors "
            "with the PyTorch tools first)") if pickles else ""
    raise FileNotFoundError(f"{folder}: no {SINGLE_NAME} or {INDEX_NAME}{hint}")


def _serialize(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None) -> tuple[bytes, list]:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    pos = 0
    arrays = []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _CODES:
            raise ValueError(f"tensor {name!r}: dtype {arr.dtype} cannot be stored in safetensors")
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
        arrays.append(arr)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * ((8 - len(head) % 8) % 8)  # keep data 8-byte aligned
    return struct.pack("<Q", len(head)) + head, arrays


def write_safetensors(path: str | Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None,
                      progress: Callable[[int], None] | None = None) -> int:
    """Atomically write one safetensors file; returns its size in bytes."""
    path = Path(path)
    prefix, arrays = _serialize(tensors, metadata)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(prefix)
            for arr in arrays:
                f.write(memoryview(arr.reshape(-1).view(np.uint8)))
                if progress is not None:
                    progress(arr.nbytes)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path.stat().st_size


def write_weights_dir(folder: str | Path, tensors: Mapping[str, np.ndarray], *, max_shard_bytes: int | None = None,
                      metadata: Mapping[str, str] | None = None,
                      progress: Callable[[int], None] | None = None) -> list[Path]:
    """``model.safetensors``, or ``model-0000i-of-0000n.safetensors`` + index when over ``max_shard_bytes``."""
    folder = Path(folder)
    total = sum(np.asarray(t).nbytes for t in tensors.values())
    if max_shard_bytes is None or total <= max_shard_bytes:
        write_safetensors(folder / SINGLE_NAME, tensors, metadata, progress)
        return [folder / SINGLE_NAME]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in sorted(tensors):
        nbytes = np.asarray(tensors[name]).nbytes
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensors[name]
        size += nbytes
    n = len(shards)
    weight_map = {}
    paths = []
    for i, shard in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{n:05d}.safetensors"
        write_safetensors(folder / fname, shard, metadata, progress)
        weight_map.update({k: fname for k in shard})
        paths.append(folder / fname)
    index = {"metadata": {"total_size": int(total)}, "weight_map": dict(sorted(weight_map.items()))}
    atomic_write_json(folder / INDEX_NAME, index)
    paths.append(folder / INDEX_NAME)
    return paths
