"""Encoded-corpus shards: the on-disk format that ``jsplade-encode`` writes and the index, the evaluator and
every export read back.

A shard directory holds ``part-NNNNN.safetensors`` files and, once every part is written, ``manifest.json``.
Part k holds the corpus rows ``[k * shard_size, (k + 1) * shard_size)`` in corpus order, as safetensors
(readable from any language) with these tensors:

    indptr          int64  [n + 1]   CSR row pointers: document i owns entries indptr[i]:indptr[i+1]
    token_ids       int32  [nnz]     vocabulary ids, ascending within a document
    weights         float32 [nnz]    the weights (int32 impacts when the directory is quantised)
    doc_ids         uint8  [bytes]   the document ids, UTF-8, concatenated
    doc_id_offsets  int64  [n + 1]   document i's id is doc_ids[doc_id_offsets[i]:doc_id_offsets[i+1]]
    n_tokens        int32  [n]       tokens the model read (special tokens included, after truncation)

and string metadata ``format``, ``part`` (k), ``first_row``, ``n_docs``, ``nnz``, ``settings`` (the JSON below, canonical) and
``settings_digest``. ``settings`` is everything that decides a part's bytes: the model's fingerprint
(``SparseEncoder.fingerprint``), ``max_active_dims``, pruning and quantisation, the empty-text rule, the
shard size, the batch size (batch composition moves float rounding) and the number of devices; a part
written under other settings is refused, never mixed in.

``manifest.json`` (``format`` = ``MANIFEST_FORMAT``) repeats the settings and lists every part with its
document and entry counts and byte size, the total document count and ``vocab_size``. It is written last,
after the duplicate-id check over all parts, so a directory without it is unfinished: readers refuse it
and rerunning the same command finishes it. Nothing in a part or the manifest depends on time, paths or the
machine, so a run that was killed and rerun leaves the same bytes as an uninterrupted one.

Every file is written atomically (temporary sibling, fsync, rename); a failed write (a full disk) leaves no
partial part behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_write_bytes, atomic_write_json, read_json_object
from jsplade.splade.pruning import Quantization

__all__ = ["PART_FORMAT", "MANIFEST_FORMAT", "MANIFEST_NAME", "part_name", "part_index", "manifest_entry", "encode_part", "write_part",
           "read_part", "part_settings", "EncodedShards", "read_shards", "settings_digest", "find_duplicate_ids"]

PART_FORMAT = "jsplade.EncodedPart/1"
MANIFEST_FORMAT = "jsplade.EncodedShards/1"
MANIFEST_NAME = "manifest.json"
_PART_RE = re.compile(r"^part-(\d{5,})\.safetensors$")
_TENSORS = ("indptr", "token_ids", "weights", "doc_ids", "doc_id_offsets", "n_tokens")


def part_name(k: int) -> str:
    return f"part-{k:05d}.safetensors"


def part_index(name: str) -> int | None:
    """k of a file named ``part_name(k)``; None for any other name."""
    m = _PART_RE.match(name)
    return int(m.group(1)) if m else None


def manifest_entry(path: Path) -> dict:
    """The manifest's record of one part (from its header)."""
    meta, _ = part_settings(path)
    return {"file": path.name, "docs": int(meta["n_docs"]), "nnz": int(meta["nnz"]), "bytes": path.stat().st_size}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def settings_digest(settings: dict) -> str:
    return hashlib.sha256(_canonical(settings).encode()).hexdigest()


def encode_part(doc_ids: Sequence[str], vectors: sp.csr_matrix, n_tokens: Sequence[int], *, part: int,
                first_row: int, settings: dict) -> bytes:
    """The bytes of one part file (deterministic: the same inputs give the same bytes)."""
    m = vectors.tocsr()
    m.sort_indices()
    if m.shape[0] != len(doc_ids) or len(n_tokens) != len(doc_ids):
        raise ValueError(f"part {part}: {len(doc_ids)} ids, {m.shape[0]} vectors, {len(n_tokens)} token counts")
    encoded = [d.encode("utf-8") for d in doc_ids]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    weights = m.data if np.issubdtype(m.data.dtype, np.integer) else m.data.astype(np.float32)
    tensors = {
        "indptr": m.indptr.astype(np.int64), "token_ids": m.indices.astype(np.int32),
        "weights": np.ascontiguousarray(weights.astype(np.int32) if np.issubdtype(weights.dtype, np.integer)
                                        else weights),
        "doc_ids": np.frombuffer(b"".join(encoded), np.uint8).copy(), "doc_id_offsets": offsets,
        "n_tokens": np.asarray(n_tokens, np.int32),
    }
    metadata = {"format": PART_FORMAT, "part": str(part), "first_row": str(first_row), "n_docs": str(len(doc_ids)),
                "nnz": str(m.nnz),
                "settings": _canonical(settings), "settings_digest": settings_digest(settings)}
    return _safetensors_bytes(tensors, metadata)


_ST_DTYPES = {np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.float32): "F32",
              np.dtype(np.uint8): "U8"}


def _safetensors_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """A safetensors file with a canonical header (keys sorted, tensors laid out in name order, the header
    padded with spaces to a multiple of 8 bytes): the same tensors and metadata always give the same bytes
    (the ``safetensors`` writer orders its header by hash, which differs from run to run)."""
    header: dict[str, object] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def write_part(path: Path, data: bytes) -> None:
    """Atomically write a part; a full disk is an OSError that says what was kept."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, f"{path}: no space left on the device for this part ({len(data):,} bytes); "
                                     "no partial part was left and the parts already written are kept: free "
                                     "space and rerun the same command to resume") from None
        raise


def part_settings(path: Path) -> tuple[dict, dict]:
    """(metadata, settings) of a part file, read from its header only; a ValueError for a damaged file."""
    import safetensors

    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: shard part not found") from None
    except Exception as exc:  # safetensors' own error for a truncated or foreign file
        raise ValueError(f"{path}: not a readable shard part ({exc})") from None
    if meta.get("format") != PART_FORMAT or names != set(_TENSORS):
        raise ValueError(f"{path}: not a jsplade shard part (format {meta.get('format')!r}, tensors {sorted(names)})")
    try:
        settings = json.loads(meta["settings"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: shard part with unreadable settings ({exc})") from None
    return meta, settings


def read_part(path: Path, vocab_size: int | None = None) -> tuple[list[str], sp.csr_matrix, np.ndarray]:
    """(doc ids, CSR vectors [n, V], n_tokens) of one part; every array is checked for consistency."""
    import safetensors.numpy

    meta, settings = part_settings(path)
    t = safetensors.numpy.load_file(str(path))
    indptr, cols, vals = t["indptr"], t["token_ids"], t["weights"]
    offsets, raw, n_tokens = t["doc_id_offsets"], t["doc_ids"].tobytes(), t["n_tokens"]
    n = len(indptr) - 1
    V = int(vocab_size if vocab_size is not None else settings["vocab_size"])
    ok = (n >= 0 and len(offsets) == n + 1 and len(n_tokens) == n and indptr[0] == 0 and indptr[-1] == len(cols)
          and len(vals) == len(cols) and np.all(np.diff(indptr) >= 0) and offsets[0] == 0
          and offsets[-1] == len(raw) and np.all(np.diff(offsets) >= 0)
          and (len(cols) == 0 or (cols.min() >= 0 and cols.max() < V)))
    if not ok:
        raise ValueError(f"{path}: inconsistent shard part (row pointers, ids or token ids out of range)")
    ids = [raw[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n)]
    return ids, sp.csr_matrix((vals, cols, indptr), shape=(n, V)), n_tokens


def find_duplicate_ids(paths: Sequence[Path], buckets: int | None = None) -> tuple[str, tuple[int, int], tuple[int, int]] | None:
    """The first repeated document id over the parts (id, (part, row), (part, row)), or None.

    Memory stays flat in the corpus size: ids are hashed (64-bit) into bucket files on disk next to the
    parts, each bucket is sorted on its own, and only hash collisions are compared as strings."""
    import tempfile

    if not paths:
        return None
    folder = Path(paths[0]).parent
    total = sum(int(part_settings(p)[0].get("n_docs", 0) or 0) for p in paths)  # 0 when unknown: one pass sizes it
    n_buckets = buckets or max(1, min(256, total // 1_000_000 + 1))  # open files stay well under ulimit -n
    with tempfile.TemporaryDirectory(prefix=".dupcheck-", dir=folder) as tmp:
        files = [open(Path(tmp) / f"b{j}", "wb") for j in range(n_buckets)]
        try:
            for k, p in enumerate(paths):
                ids, _, _ = read_part(p)
                h = np.array([int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little")
                              for i in ids], np.uint64)
                rec = np.zeros(len(ids), dtype=[("h", "<u8"), ("part", "<i4"), ("row", "<i4")])
                rec["h"], rec["part"], rec["row"] = h, k, np.arange(len(ids))
                which = (h % np.uint64(n_buckets)).astype(np.int64)
                for j in np.unique(which):
                    files[j].write(rec[which == j].tobytes())
        finally:
            for f in files:
                f.close()
        cache: dict[int, list[str]] = {}
        for j in range(n_buckets):
            rec = np.fromfile(Path(tmp) / f"b{j}", dtype=[("h", "<u8"), ("part", "<i4"), ("row", "<i4")])
            if len(rec) < 2:
                continue
            rec = rec[np.argsort(rec["h"], kind="stable")]
            same = np.nonzero(rec["h"][1:] == rec["h"][:-1])[0]
            for i in same:
                a, b = rec[i], rec[i + 1]
                for part in (int(a["part"]), int(b["part"])):
                    if part not in cache:
                        cache[part] = read_part(paths[part])[0]
                ida, idb = cache[int(a["part"])][int(a["row"])], cache[int(b["part"])][int(b["row"])]
                if ida == idb:
                    return ida, (int(a["part"]), int(a["row"])), (int(b["part"]), int(b["row"]))
    return None


@dataclass(frozen=True)
class EncodedShards:
    """A finished shard directory: ``manifest`` and the part paths in corpus order."""

    folder: Path
    manifest: dict
    parts: tuple[Path, ...]

    @property
    def settings(self) -> dict:
        return self.manifest["settings"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["vocab_size"])

    @property
    def n_docs(self) -> int:
        return int(self.manifest["n_docs"])

    @property
    def quantization(self) -> dict | None:
        return self.settings.get("quantization")

    def iter_parts(self) -> Iterator[tuple[list[str], sp.csr_matrix]]:
        """(doc ids, vectors) of each part in corpus order, one part in memory at a time."""
        for p in self.parts:
            ids, m, _ = read_part(p, self.vocab_size)
            yield ids, m

    def iter_vectors(self) -> Iterator[tuple[list[str], sp.csr_matrix]]:
        """(doc ids, float32 vectors) of each part, quantised impacts divided back by their factor."""
        q = None if self.quantization is None else Quantization.from_dict(self.quantization)
        for ids, m in self.iter_parts():
            yield ids, (m if q is None else q.dequantize(m)).astype(np.float32)

    def load(self) -> tuple[list[str], sp.csr_matrix]:
        """Every document id and vector (CSR [n_docs, V]); float32 weights, or int32 impacts when quantised."""
        ids: list[str] = []
        mats = []
        for part_ids, m in self.iter_parts():
            ids += part_ids
            mats.append(m)
        return ids, sp.vstack(mats, format="csr") if mats else sp.csr_matrix((0, self.vocab_size), dtype=np.float32)


def read_shards(folder: str | Path) -> EncodedShards:
    """The finished shard directory ``folder`` (its manifest checked against the parts' headers)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: shard directory not found")
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        n = len([p for p in folder.iterdir() if part_index(p.name) is not None])
        raise ValueError(f"{folder}: unfinished shard directory ({n} parts, no {MANIFEST_NAME}); rerun the "
                         "jsplade-encode command that wrote it to finish it")
    manifest = read_json_object(mpath, "shard manifest")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{mpath}: not a jsplade shard manifest (format {manifest.get('format')!r})")
    digest = settings_digest(manifest["settings"])
    parts = []
    for k, entry in enumerate(manifest["parts"]):
        p = folder / entry["file"]
        if entry["file"] != part_name(k):
            raise ValueError(f"{mpath}: part {k} is named {entry['file']!r}, expected {part_name(k)!r}")
        meta, _ = part_settings(p)
        if meta.get("settings_digest") != digest:
            raise ValueError(f"{p}: written under other settings than {mpath} (digest {meta.get('settings_digest')} "
                             f"vs {digest})")
        if p.stat().st_size != entry["bytes"]:
            raise ValueError(f"{p}: {p.stat().st_size} bytes, the manifest says {entry['bytes']}")
        parts.append(p)
    return EncodedShards(folder, manifest, tuple(parts))


def write_manifest(folder: Path, settings: dict, vocab_size: int, entries: list[dict]) -> dict:
    manifest = {"format": MANIFEST_FORMAT, "settings": settings, "vocab_size": int(vocab_size),
                "n_docs": int(sum(e["docs"] for e in entries)), "nnz": int(sum(e["nnz"] for e in entries)),
                "parts": entries}
    atomic_write_json(folder / MANIFEST_NAME, manifest, indent=1)
    return manifest
