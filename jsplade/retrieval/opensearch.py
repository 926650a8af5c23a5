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

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.retrieval.bulk import check_fields, check_ratio, check_texts, prune_rows, read_pairs, write_pairs
from jsplade.retrieval.index import check_ids
from jsplade.files import atomic_write_json
from jsplade.splade.pruning import Pruning
from jsplade.splade.sparse import canonical_csr

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
    check_fields(index_name, field, text_field)
    ids = check_ids(doc_ids, "doc_ids")
    m = prune_rows(canonical_csr(encodings, rows=len(ids), arg="encodings"), pruning, "encodings", "OpenSearch rank_features")
    ratio = check_ratio(prune_ratio)
    texts = check_texts(texts, len(ids))
    tokens = token_table(tokenizer, m.shape[1])
    features = [row_to_features(m, i, tokens, ratio, what=f"encodings row {i} ({doc_id!r})")
                for i, doc_id in enumerate(ids)]
    return write_pairs(path, index_name, ids, features, field, texts, text_field)


def read_bulk_ndjson(path: str | Path, tokenizer: Any, vocab_size: int, field: str = DEFAULT_FIELD,
                     text_field: str = "text") -> tuple[list[str], sp.csr_matrix, list[str | None]]:
    """Parse a bulk file written by ``write_bulk_ndjson``: (doc ids, CSR float32 [N, vocab_size], texts).

    ``tokenizer`` needs ``token_to_id(token)``. Malformed lines, unknown tokens and duplicate ids raise
    ``ValueError`` naming the file and line.
    """
    def weight_problem(w: Any) -> str | None:
        return "a number" if isinstance(w, bool) or not isinstance(w, (int, float)) else None

    return read_pairs(path, vocab_size, field, text_field, tokenizer.token_to_id, weight_problem, noun="token")


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
    m = prune_rows(canonical_csr(query, rows=None, arg="query"), pruning, "query", "OpenSearch rank_features")
    if m.shape[0] != 1:
        raise ValueError(f"query must be one row, got {m.shape[0]} rows")
    tokens = token_table(tokenizer, m.shape[1])
    body: dict[str, Any] = {"query": {"neural_sparse": {field: {
        "query_tokens": row_to_features(m, 0, tokens, check_ratio(prune_ratio), what="query")}}}}
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        body["size"] = size
    return body
