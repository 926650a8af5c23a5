"""Files for Elasticsearch learned-sparse search: ``sparse_vector`` bulk ndjson, index mapping, query bodies.

The Elasticsearch counterpart of ``jsplade.retrieval.opensearch``, with the same conventions (token strings
from ``token_table``, tokens in ascending token-id order, weights as the shortest decimal that reads back
to the same float32, atomic writes, optional ``prune_ratio`` pruning below ``prune_ratio * row max``).
Documents go into a ``sparse_vector`` field (Elasticsearch 8.11 and later); queries are ``sparse_vector``
queries with an explicit ``query_vector`` token -> weight (no inference endpoint needed)::

    {"index": {"_index": "<index name>", "_id": "<doc id>"}}
    {"<field>": {"<feature>": <weight>, ...}, "<text_field>": "<text>"}

    {"query": {"sparse_vector": {"field": "<field>", "query_vector": {"<feature>": <weight>, ...},
                                 "prune": false}}, "size": <k>}

What Elasticsearch does with these values (read from its ``SparseVectorFieldMapper``, ``XFeatureField`` and
``WeightedTokensUtils`` sources and its field documentation):

* **Positive values only.** A document weight must be a finite float of at least ``FLOAT32_MIN_NORMAL``
  (1.1754944e-38, the smallest normal float32; Lucene's feature field refuses smaller values), so negative
  and subnormal weights are refused here. Query weights become Lucene ``BoostQuery`` boosts, which may not
  be negative either. Only documents sharing a token with the query match (``minimum_should_match`` 1).
* **Stored precision.** A weight is stored as its float32 bit pattern shifted right by 15 bits (the term
  frequency of a Lucene feature): the low 15 of the 23 mantissa bits are dropped, keeping 9 significant bits.
  The dropping truncates, so the stored value ``stored_value(w)`` is never above ``w`` and is above
  ``w * (1 - 2**-8)`` (relative error below 0.39%, the "about 0.4%" of the documentation). Query weights are
  not quantised. The score of a document is ``sum_i q_i * stored(d_i)``, hence for non-negative weights
  ``(1 - 2**-8) * q.d < score <= q.d`` up to Lucene's float32 summation.
* **Query pruning.** Indices created by Elasticsearch 8.19 / 9.1 and later prune "non-significant" query
  tokens by default, which makes scores approximate. ``query_body`` therefore writes ``"prune": false``
  (accepted by the ``sparse_vector`` query since 8.15) unless told otherwise; ``index_mapping(prune=False)``
  sets the field default instead (``index_options`` exists only from 8.19 / 9.1 on).
* **Dots in feature names.** Elasticsearch 8.11 to 8.15 reject a document whose ``sparse_vector`` map holds a
  feature name with a dot (``"[sparse_vector] fields do not support dots in feature names but found [.]"``);
  since elastic/elasticsearch#111981 (8.16) the mapper escapes dots internally and keeps such names as
  literal feature names, never as object paths. WordPiece vocabularies hold such tokens (bert-base-uncased:
  ``.``, ``...``, ``##.``), so the choice is explicit, the ``dots`` argument of every function here:
  ``"keep"`` (default: feature names are the tokens, for 8.16 and later), ``"escape"`` (every ``%`` becomes
  ``%25`` and every ``.`` becomes ``%2E``, a reversible encoding without dots that works on every version;
  documents and queries must use the same setting) or ``"error"`` (refuse dotted tokens).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_write_json
from jsplade.retrieval.bulk import check_fields, check_ratio, check_texts, prune_rows, read_pairs, write_pairs
from jsplade.retrieval.index import check_ids
from jsplade.retrieval.opensearch import token_table
from jsplade.splade.pruning import Pruning
from jsplade.splade.sparse import canonical_csr

__all__ = ["write_bulk_ndjson", "read_bulk_ndjson", "index_mapping", "write_index_mapping", "query_body",
           "feature_names", "escape_feature", "unescape_feature", "stored_value", "stored_weights",
           "DEFAULT_FIELD", "DOT_POLICIES", "FLOAT32_MIN_NORMAL", "STORED_RELATIVE_ERROR"]

DEFAULT_FIELD = "passage_embedding"
DOT_POLICIES = ("keep", "escape", "error")
FLOAT32_MIN_NORMAL = float(np.finfo(np.float32).tiny)
STORED_RELATIVE_ERROR = 2.0 ** -8   # stored_value(w) > w * (1 - STORED_RELATIVE_ERROR), and <= w
_DROPPED_BITS = 15
_ESCAPE = re.compile(r"%(2E|25)")


# --------------------------------------------------------------------------- feature names
def _check_dots(dots: str) -> str:
    if dots not in DOT_POLICIES:
        raise ValueError(f"dots must be one of {', '.join(map(repr, DOT_POLICIES))}, got {dots!r}")
    return dots


def escape_feature(token: str) -> str:
    """``token`` with ``%`` written as ``%25`` and ``.`` as ``%2E`` (injective; no dot remains)."""
    return token.replace("%", "%25").replace(".", "%2E")


def unescape_feature(name: str) -> str:
    """Inverse of ``escape_feature``; a name that ``escape_feature`` cannot produce raises ``ValueError``."""
    if "." in name or "%" in _ESCAPE.sub("", name):
        raise ValueError(f"feature name {name!r} is not an escaped token (bare '.' or '%' not followed by 2E/25)")
    return _ESCAPE.sub(lambda m: "." if m.group(1) == "2E" else "%", name)


def feature_names(tokenizer: Any, vocab_size: int, dots: str = "keep") -> list[str]:
    """The feature name of every token id below ``vocab_size`` under the ``dots`` policy."""
    _check_dots(dots)
    tokens = token_table(tokenizer, vocab_size)
    if dots == "escape":
        return [escape_feature(t) for t in tokens]
    if dots == "error":
        dotted = [(i, t) for i, t in enumerate(tokens) if "." in t]
        if dotted:
            shown = ", ".join(f"{t!r} (id {i})" for i, t in dotted[:5])
            raise ValueError(f"{len(dotted)} tokens contain '.', which Elasticsearch before 8.16 refuses in "
                             f"sparse_vector feature names: {shown}; use dots='escape' (any version) or "
                             f"dots='keep' (8.16 and later)")
    return tokens


# --------------------------------------------------------------------------- precision model
def stored_value(weights: Any) -> np.ndarray:
    """The value Elasticsearch stores (and scores with) for each float32 weight: the float32 with its low
    15 mantissa bits cleared (9 significant bits, truncated towards zero). float32 array, same shape."""
    w = np.ascontiguousarray(np.asarray(weights, dtype=np.float32))
    bits = w.view(np.uint32) & np.uint32(~((1 << _DROPPED_BITS) - 1) & 0xFFFFFFFF)
    return bits.view(np.float32)


def stored_weights(encodings: Any) -> sp.csr_matrix:
    """The document encodings (CSR/dense [N, V]) as Elasticsearch stores them (``stored_value`` of every
    entry); exact ES scores of a query ``q`` are ``q @ stored_weights(docs).T`` up to float32 summation."""
    m = canonical_csr(encodings, rows=None, arg="encodings")
    m.data = stored_value(m.data)
    return m


# --------------------------------------------------------------------------- rows
def _row_features(m: sp.csr_matrix, row: int, names: Sequence[str], prune_ratio: float | None, what: str,
                  document: bool) -> dict[str, float]:
    """feature name -> weight of the non-zero entries of canonical CSR row ``row`` (ascending token id)."""
    lo, hi = m.indptr[row], m.indptr[row + 1]
    cols, vals = m.indices[lo:hi], m.data[lo:hi]
    if (vals < 0).any():
        raise ValueError(f"{what} has negative weights; Elasticsearch sparse_vector "
                         f"{'fields' if document else 'query weights (boosts)'} accept only positive values")
    if document and (vals < FLOAT32_MIN_NORMAL).any():
        tiny = float(vals[vals < FLOAT32_MIN_NORMAL].min())
        raise ValueError(f"{what} has a weight {tiny!r} below the smallest normal float32 {FLOAT32_MIN_NORMAL!r}, "
                         f"which Elasticsearch refuses; prune such weights before export")
    if prune_ratio is not None and vals.size:
        keep = vals >= np.float32(prune_ratio) * vals.max()
        cols, vals = cols[keep], vals[keep]
    # str(np.float32) is the shortest decimal that reads back as the same float32 value.
    return {names[int(c)]: float(str(np.float32(v))) for c, v in zip(cols, vals)}


# --------------------------------------------------------------------------- bulk files
def write_bulk_ndjson(path: str | Path, index_name: str, doc_ids: Sequence[str], encodings: Any, tokenizer: Any,
                      texts: Sequence[str] | None = None, field: str = DEFAULT_FIELD, text_field: str = "text",
                      prune_ratio: float | None = None, dots: str = "keep",
                      pruning: Pruning | str | None = None) -> int:
    """Write an Elasticsearch ``_bulk`` ndjson file (see the module docstring); returns the number of documents.

    ``encodings``: CSR (or dense) [N, V] document encodings, row i belonging to ``doc_ids[i]``;
    ``tokenizer``: anything with ``id_to_token(i)``; ``texts``: optional document texts stored under
    ``text_field``; ``dots``: the feature-name policy for tokens with a dot; ``pruning``: any rule of
    ``jsplade.splade.pruning`` (as in the shards and the OpenSearch file). The file is written atomically;
    negative or subnormal weights raise ``ValueError`` naming the row before anything is written.
    """
    check_fields(index_name, field, text_field)
    ids = check_ids(doc_ids, "doc_ids")
    m = prune_rows(canonical_csr(encodings, rows=len(ids), arg="encodings"), pruning, "encodings", "Elasticsearch sparse_vector")
    ratio = check_ratio(prune_ratio)
    texts = check_texts(texts, len(ids))
    names = feature_names(tokenizer, m.shape[1], dots)
    rows = [_row_features(m, i, names, ratio, f"encodings row {i} ({doc_id!r})", document=True)
            for i, doc_id in enumerate(ids)]
    return write_pairs(path, index_name, ids, rows, field, texts, text_field)


def read_bulk_ndjson(path: str | Path, tokenizer: Any, vocab_size: int, field: str = DEFAULT_FIELD,
                     text_field: str = "text", dots: str = "keep") -> tuple[list[str], sp.csr_matrix, list[str | None]]:
    """Parse a bulk file written by ``write_bulk_ndjson``: (doc ids, CSR float32 [N, vocab_size], texts).

    ``tokenizer`` needs ``token_to_id(token)``; ``dots`` must be the policy the file was written with
    (``"escape"`` decodes the names). Malformed lines, unknown features, non-positive weights and duplicate
    ids raise ``ValueError`` naming the file and line.
    """
    _check_dots(dots)

    def feature_id(name: str) -> int | None:
        return tokenizer.token_to_id(unescape_feature(name) if dots == "escape" else name)

    def weight_problem(w: Any) -> str | None:
        return None if not isinstance(w, bool) and isinstance(w, (int, float)) and w > 0 else "a positive number"

    return read_pairs(path, vocab_size, field, text_field, feature_id, weight_problem)


# --------------------------------------------------------------------------- mapping and queries
def _check_prune(prune: bool | None) -> bool | None:
    if prune is not None and not isinstance(prune, bool):
        raise ValueError(f"prune must be None, True or False, got {prune!r}")
    return prune


def index_mapping(field: str = DEFAULT_FIELD, text_field: str = "text", prune: bool | None = None) -> dict[str, Any]:
    """Index-creation body: ``field`` as ``sparse_vector``, ``text_field`` as ``text``.

    ``prune`` (True/False) adds ``"index_options": {"prune": ...}``, the field's default for query token
    pruning (Elasticsearch 8.19 / 9.1 and later only; older versions refuse the parameter); None leaves it out.
    """
    spec: dict[str, Any] = {"type": "sparse_vector"}
    if _check_prune(prune) is not None:
        spec["index_options"] = {"prune": prune}
    return {"mappings": {"properties": {field: spec, text_field: {"type": "text"}}}}


def write_index_mapping(path: str | Path, field: str = DEFAULT_FIELD, text_field: str = "text",
                        prune: bool | None = None) -> None:
    """Write ``index_mapping(...)`` as JSON, atomically."""
    atomic_write_json(path, index_mapping(field, text_field, prune))


def query_body(query: Any, tokenizer: Any, field: str = DEFAULT_FIELD, size: int | None = None,
               prune_ratio: float | None = None, prune: bool | None = False, dots: str = "keep") -> dict[str, Any]:
    """``{"query": {"sparse_vector": {"field": field, "query_vector": {feature: weight}, "prune": false}}}``
    for ONE encoded query (CSR/dense row of width V).

    ``size`` adds a top-level ``"size"``; ``prune`` False (default) asks for every query token, so scores are
    the dot products of the module docstring; True lets Elasticsearch prune with its default configuration;
    None leaves the decision to the field's ``index_options`` / the index version. Negative weights and a
    query without any positive weight raise ``ValueError``.
    """
    m = canonical_csr(query, rows=None, arg="query")
    if m.shape[0] != 1:
        raise ValueError(f"query must be one row, got {m.shape[0]} rows")
    if not isinstance(field, str) or not field:
        raise ValueError(f"field must be a non-empty string, got {field!r}")
    names = feature_names(tokenizer, m.shape[1], dots)
    vector = _row_features(m, 0, names, check_ratio(prune_ratio), "query", document=False)
    if not vector:
        raise ValueError("query has no positive weight; a sparse_vector query needs at least one token")
    spec: dict[str, Any] = {"field": field, "query_vector": vector}
    if _check_prune(prune) is not None:
        spec["prune"] = prune
    body: dict[str, Any] = {"query": {"sparse_vector": spec}}
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        body["size"] = size
    return body
