"""Files for OpenSearch neural-sparse search: bulk ingest ndjson, index mapping, query bodies.

Documents become ``rank_features`` maps token -> weight (token strings from the tokenizer's vocabulary,
weights from the sparse encodings); queries become ``neural_sparse`` queries with explicit
``query_tokens`` (the inference-free query side needs no model at search time).

Bulk file layout (one pair of lines per document, newline-terminated, as the ``_bulk`` API expects)::

    {"index": {"_index": "<index name>", "_id": "<doc id>"}}
    {"<field>": {"<token>": <weight>, ...}, "<text_field>": "<text>"}

Tokens are written in ascending token-id order; weights as the shortest decimal that reads back to the
same float32. ``rank_features`` only accepts positive values, so negative weights are refused. Optional
pruning (``prune_ratio``) drops the entries of a row below ``prune_ratio * row max``, as OpenSearch's
``max_ratio`` pruning does at ingest; ``pruning`` takes any rule of ``jsplade.splade.pruning`` (OpenSearch's
``top_k``, ``max_ratio``, ``abs_value``, ``alpha_mass``); the default keeps everything. Note that OpenSearch stores feature
values with reduced precision, so its scores differ slightly from the float32 dot products.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.retrieval.index import check_ids
from jsplade.files import atomic_open, atomic_write_json
from jsplade.splade.pruning import Pruning
from jsplade.splade.sparse import as_csr

__all__ = ["token_table", "row_to_features", "write_bulk_ndjson", "read_bulk_ndjson", "index_mapping",
           "write_index_mapping", "query_body", "DEFAULT_FIELD"]

DEFAULT_FIELD = "passage_embedding"


def token_table(tokenizer: Any, vocab_size: int) -> list[str]:
    """``[tokenizer.id_to_token(i) for i in range(vocab_size)]``; every id must map to a distinct string."""
    table = [tokenizer.id_to_token(i) for i in range(vocab_size)]
    for i, tok in enumerate(table):
        if not isinstance(tok, str) or not tok:
            raise ValueError(f"tokenizer.id_to_token({i}) returned {tok!r}; every id below {vocab_size} needs a token")
    if len(set(table)) != len(table):
        raise ValueError("tokenizer maps two ids to the same token string; rank_features keys would collide")
    return table


def _check_ratio(prune_ratio: float | None) -> float | None:
    if prune_ratio is None:
        return None
    if isinstance(prune_ratio, bool) or not isinstance(prune_ratio, (int, float)) or not 0.0 <= prune_ratio < 1.0:
        raise ValueError(f"prune_ratio must be None or a number in [0, 1), got {prune_ratio!r}")
    return float(prune_ratio)


def row_to_features(m: sp.csr_matrix, row: int, tokens: Sequence[str], prune_ratio: float | None = None,
                    what: str = "row") -> dict[str, float]:
    """token -> weight of the non-zero entries of CSR row ``row`` (ascending token id), pruned if asked.

    Weights are Python floats holding the shortest decimal that reads back as the same float32 value.
    Negative weights raise ``ValueError``.
    """
    lo, hi = m.indptr[row], m.indptr[row + 1]
    cols, vals = m.indices[lo:hi], m.data[lo:hi]
    keep = vals != 0
    cols, vals = cols[keep], vals[keep]
    if (vals < 0).any():
        raise ValueError(f"{what} has negative weights; OpenSearch rank_features accepts only positive values")
    if prune_ratio is not None and vals.size:
        keep = vals >= np.float32(prune_ratio) * vals.max()
        cols, vals = cols[keep], vals[keep]
    order = np.argsort(cols, kind="stable")
    # str(np.float32) is the shortest decimal that reads back as the same float32 value.
    return {tokens[int(c)]: float(str(np.float32(v))) for c, v in zip(cols[order], vals[order])}


def _canonical(encodings: Any, rows: int | None, arg: str) -> sp.csr_matrix:
    m = as_csr(encodings, arg=arg)
    if rows is not None and m.shape[0] != rows:
        raise ValueError(f"{arg} has {m.shape[0]} rows, expected {rows}")
    if not np.isfinite(m.data).all():
        raise ValueError(f"{arg} contains NaN or infinite values")
    m = m.copy()
    m.sum_duplicates()
    return m


def _prune(m: sp.csr_matrix, pruning: Pruning | str | None, arg: str) -> sp.csr_matrix:
    if pruning is None:
        return m
    rule = Pruning.parse(pruning) if isinstance(pruning, str) else pruning
    if not isinstance(rule, Pruning):
        raise TypeError(f"pruning must be a jsplade.splade.pruning.Pruning or a rule string, got {type(pruning).__name__}")
    if (m.data < 0).any():
        raise ValueError(f"{arg} has negative weights; OpenSearch rank_features accepts only positive values")
    return rule.apply(m)


def write_bulk_ndjson(path: str | Path, index_name: str, doc_ids: Sequence[str], encodings: Any, tokenizer: Any,
                      texts: Sequence[str] | None = None, field: str = DEFAULT_FIELD, text_field: str = "text",
                      prune_ratio: float | None = None, pruning: Pruning | str | None = None) -> int:
    """Write an OpenSearch ``_bulk`` ndjson file (see the module docstring); returns the number of documents.

    ``pruning``: any rule of ``jsplade.splade.pruning`` ("top_k:K", "max_ratio:R", "abs_value:T",
    "alpha_mass:A"), applied to every row as in the shards and the index; ``prune_ratio`` R is "max_ratio:R".

    ``encodings``: CSR (or dense) [N, V] document encodings, row i belonging to ``doc_ids[i]``;
    ``tokenizer``: anything with ``id_to_token(i)``; ``texts``: optional document texts stored under
    ``text_field``. The file is written atomically.
    """
    if not isinstance(index_name, str) or not index_name:
        raise ValueError(f"index_name must be a non-empty string, got {index_name!r}")
    if not (isinstance(field, str) and field and isinstance(text_field, str) and text_field) or field == text_field:
        raise ValueError(f"field and text_field must be distinct non-empty strings, got {field!r}, {text_field!r}")
    ids = check_ids(doc_ids, "doc_ids")
    m = _prune(_canonical(encodings, len(ids), "encodings"), pruning, "encodings")
    ratio = _check_ratio(prune_ratio)
    if texts is not None:
        texts = list(texts)
        if len(texts) != len(ids):
            raise ValueError(f"texts has {len(texts)} entries, expected {len(ids)} (one per doc id)")
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
    tokens = token_table(tokenizer, m.shape[1])
    path = Path(path)
    with atomic_open(path, "w") as f:
        for i, doc_id in enumerate(ids):
            features = row_to_features(m, i, tokens, ratio, what=f"encodings row {i} ({doc_id!r})")
            source: dict[str, Any] = {field: features}
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


def read_bulk_ndjson(path: str | Path, tokenizer: Any, vocab_size: int, field: str = DEFAULT_FIELD,
                     text_field: str = "text") -> tuple[list[str], sp.csr_matrix, list[str | None]]:
    """Parse a bulk file written by ``write_bulk_ndjson``: (doc ids, CSR float32 [N, vocab_size], texts).

    ``tokenizer`` needs ``token_to_id(token)``. Malformed lines, unknown tokens and duplicate ids raise
    ``ValueError`` naming the file and line.
    """
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
        for tok, w in source[field].items():
            tid = tokenizer.token_to_id(tok)
            if tid is None or not 0 <= tid < vocab_size:
                raise ValueError(f"{path}:{n + 2}: token {tok!r} is not in the vocabulary")
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ValueError(f"{path}:{n + 2}: weight of {tok!r} is not a number")
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


def index_mapping(field: str = DEFAULT_FIELD, text_field: str = "text") -> dict[str, Any]:
    """Index-creation body: ``field`` as ``rank_features``, ``text_field`` as ``text``."""
    return {"mappings": {"properties": {field: {"type": "rank_features"}, text_field: {"type": "text"}}}}


def write_index_mapping(path: str | Path, field: str = DEFAULT_FIELD, text_field: str = "text") -> None:
    """Write ``index_mapping(...)`` as JSON, atomically."""
    atomic_write_json(path, index_mapping(field, text_field))


def query_body(query: Any, tokenizer: Any, field: str = DEFAULT_FIELD, size: int | None = None,
               prune_ratio: float | None = None, pruning: Pruning | str | None = None) -> dict[str, Any]:
    """``{"query": {"neural_sparse": {field: {"query_tokens": {token: weight}}}}}`` for ONE encoded query
    (CSR/dense row of width V); ``size`` adds a top-level ``"size"``; ``pruning`` as in ``write_bulk_ndjson``.
    Negative weights raise ``ValueError``."""
    m = _prune(_canonical(query, None, "query"), pruning, "query")
    if m.shape[0] != 1:
        raise ValueError(f"query must be one row, got {m.shape[0]} rows")
    tokens = token_table(tokenizer, m.shape[1])
    body: dict[str, Any] = {"query": {"neural_sparse": {field: {
        "query_tokens": row_to_features(m, 0, tokens, _check_ratio(prune_ratio), what="query")}}}}
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        body["size"] = size
    return body
