"""The ``_bulk`` ndjson layout that the OpenSearch (``rank_features``) and Elasticsearch (``sparse_vector``)
exports share: argument checks, the pruning step, writing and reading action/source line pairs.

    {"index": {"_index": "<index name>", "_id": "<doc id>"}}
    {"<field>": {"<feature>": <weight>, ...}, "<text_field>": "<text>"}

The engine modules decide how a row becomes a feature map (token strings, weight rules) and how a feature
name is read back; everything else is here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_open
from jsplade.retrieval.index import check_ids
from jsplade.splade.pruning import Pruning

__all__ = ["check_ratio", "check_fields", "check_texts", "prune_rows", "write_pairs", "read_pairs"]


def check_ratio(prune_ratio: float | None) -> float | None:
    if prune_ratio is None:
        return None
    if isinstance(prune_ratio, bool) or not isinstance(prune_ratio, (int, float)) or not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"prune_ratio must be None or a number in [0, 1), got {prune_ratio!r}")
    return float(prune_ratio)


def check_fields(index_name: str | None, field: str, text_field: str) -> None:
    if index_name is not None and (not isinstance(index_name, str) or not index_name):
        raise ValueError(f"index_name must be a non-empty string, got {index_name!r}")
    if not (isinstance(field, str) and field and isinstance(text_field, str) and text_field) or field == text_field:
        raise ValueError(f"field and text_field must be distinct non-empty strings, got {field!r}, {text_field!r}")


def check_texts(texts: Sequence[str] | None, n: int) -> list[str] | None:
    if texts is None:
        return None
    texts = list(texts)
    if len(texts) != n:
        raise ValueError(f"texts has {len(texts)} entries, expected {n} (one per doc id)")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
    return texts


def prune_rows(m: sp.csr_matrix, pruning: Pruning | str | None, arg: str, engine: str) -> sp.csr_matrix:
    """``m`` with a ``jsplade.splade.pruning`` rule applied to every row (the rule of the shards and the index)."""
    if pruning is None:
        return m
    rule = Pruning.parse(pruning) if isinstance(pruning, str) else pruning
    if not isinstance(rule, Pruning):
        raise TypeError(f"pruning must be a jsplade.splade.pruning.Pruning or a rule string, got {type(pruning).__name__}")
    if (m.data < 0).any():
        raise ValueError(f"{arg} has negative weights; {engine} accepts only positive values")
    return rule.apply(m)


def write_pairs(path: str | Path, index_name: str, ids: Sequence[str], features: Sequence[dict[str, float]],
                field: str, texts: Sequence[str] | None, text_field: str) -> int:
    """Write the action/source pairs atomically; returns the number of documents."""
    with atomic_open(Path(path), "w") as f:
        for i, (doc_id, feats) in enumerate(zip(ids, features)):
            source: dict[str, Any] = {field: feats}
            if texts is not None:
                source[text_field] = texts[i]
            f.write(json.dumps({"index": {"_index": index_name, "_id": doc_id}}, ensure_ascii=False) + "\n")
            f.write(json.dumps(source, ensure_ascii=False) + "\n")
    return len(ids)


def _json_line(path: Path, lines: list[str], n: int) -> Any:
    try:
        return json.loads(lines[n])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{n + 1}: malformed JSON ({exc.msg})") from None


def read_pairs(path: str | Path, vocab_size: int, field: str, text_field: str,
               feature_id: Callable[[str], int | None], check_weight: Callable[[Any], str | None],
               noun: str = "feature") -> tuple[list[str], sp.csr_matrix, list[str | None]]:
    """(doc ids, CSR float32 [N, vocab_size], texts) of a bulk file. ``feature_id(name)`` is the token id of a
    feature name (None: unknown; a ValueError is reported with the line); ``check_weight(w)`` returns what is
    wrong with a weight, or None. Errors name the file and line; duplicate ids are refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: bulk file not found")
    ids: list[str] = []
    texts: list[str | None] = []
    data: list[float] = []
    indices: list[int] = []
    indptr = [0]
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f]
    if len(lines) % 2:
        raise ValueError(f"{path}: odd number of lines ({len(lines)}); expected action/source pairs")
    for n in range(0, len(lines), 2):
        action, source = _json_line(path, lines, n), _json_line(path, lines, n + 1)
        meta = action.get("index") if isinstance(action, dict) else None
        if not isinstance(meta, dict) or not isinstance(meta.get("_id"), str):
            raise ValueError(f"{path}:{n + 1}: expected an {{'index': {{'_id': ...}}}} action line")
        if not isinstance(source, dict) or not isinstance(source.get(field), dict):
            raise ValueError(f"{path}:{n + 2}: expected a source object with a '{field}' map")
        row = []
        for name, w in source[field].items():
            try:
                tid = feature_id(name)
            except ValueError as exc:
                raise ValueError(f"{path}:{n + 2}: {exc}") from None
            if tid is None or not 0 <= tid < vocab_size:
                raise ValueError(f"{path}:{n + 2}: {noun} {name!r} is not in the vocabulary")
            problem = check_weight(w)
            if problem:
                raise ValueError(f"{path}:{n + 2}: weight of {name!r} is not {problem}")
            row.append((tid, w))
        row.sort()
        indices.extend(t for t, _ in row)
        data.extend(w for _, w in row)
        indptr.append(len(indices))
        ids.append(meta["_id"])
        texts.append(source.get(text_field))
    check_ids(ids, f"{path}: document ids")
    m = sp.csr_matrix((np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int32),
                       np.asarray(indptr, dtype=np.int64)), shape=(len(ids), vocab_size))
    return ids, m, texts
