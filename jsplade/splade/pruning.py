"""Pruning and integer impact quantisation of sparse vocabulary vectors (scipy CSR rows of width V).

Pruning (``Pruning``) follows OpenSearch neural-search's ``prune_type`` / ``prune_ratio``
(``org.opensearch.neuralsearch.util.prune.PruneUtils`` / ``PruneType``: the ``sparse_encoding`` ingest
processor and the two-phase ``neural_sparse`` query). Per row, with weights w (all >= 0):

* ``none``: keep everything (OpenSearch rejects a ``prune_ratio`` here, so does ``Pruning``).
* ``top_k`` (k a positive integer): keep the k largest weights; rows with <= k entries are unchanged.
* ``max_ratio`` (r in [0, 1)): keep w >= r * max(row)  (>=: the value exactly at the threshold is kept).
* ``abs_value`` (t >= 0): keep w >= t  (>=, same).
* ``alpha_mass`` (a in [0, 1)): sort descending, let S_j be the running sum including the j-th weight; keep
  the j-th weight iff S_j <= a * sum(row). The weight that makes the sum exceed a * total is dropped, one that
  makes it exactly equal is kept; a = 0 keeps nothing (every stored weight is > 0).

Arithmetic is OpenSearch's float32 arithmetic: thresholds are ``float32(t)``, ``float32(float32(r) * max)``
and ``float32(float32(a) * total)`` with ``total`` the row sum in float64 rounded to float32, and the running
sum is accumulated in float32 in sorted order, so results agree with OpenSearch exactly, up to ties.
Ties: OpenSearch leaves the order among equal weights to a hash map; here equal weights are ordered by
token id, lower id first (the lower id is kept when a ``top_k`` / ``alpha_mass`` cut falls inside a tie).
Input weights must be finite and >= 0 (OpenSearch rejects values <= 0; stored zeros are simply dropped).
Every result is a new float32 CSR of the same shape, canonical (duplicates summed, indices sorted, no stored
zeros). Work is vectorised over rows: rows are grouped by length into blocks of bounded padded size, sorted
with one stable 2-D argsort per block (so memory stays bounded for millions of rows).

Quantisation (``Quantization``): d̂_i = floor(f * d_i + 0.5), Java's ``Math.round`` (half up), which is what
Anserini's sparse encoders use (``Math.round(weight / weightRange * quantRange)``) and how its SPLADE impact
collections were made (round(weight * 100)); entries that round to 0 are dropped, values outside the integer
dtype are an error. ``dequantize`` gives d̂_i / f as float32.

Error bounds (exact arithmetic; x = q·d with float q, d). For every entry, dropped ones included,
|f d_i - d̂_i| <= 1/2, and d̂_i = d_i = 0 off supp(d). Let S = supp(q) ∩ supp(d) (supports of the float
vectors, so that entries rounded to zero count).

1. Documents quantised at factor f, float query:
   q·d - q·d̂/f = (1/f) Σ_{i∈S} q_i (f d_i - d̂_i), hence |q·d - q·d̂/f| <= (1/(2f)) Σ_{i∈S} |q_i|
   <= (1/(2f)) ||q||_1, the last form holding for every document (``score_error_bound``).
2. Queries quantised too, at factor g: write u_i = q_i - q̂_i/g (|u_i| <= 1/(2g)), v_i = d_i - d̂_i/f
   (|v_i| <= 1/(2f)). Then q̂_i d̂_i/(gf) = (q_i - u_i)(d_i - v_i), so
   q·d - q̂·d̂/(gf) = Σ_{i∈S} (q_i v_i + d_i u_i - u_i v_i) and
   |q·d - q̂·d̂/(gf)| <= Σ_{i∈S} (|q_i|/(2f) + |d_i|/(2g) + 1/(4fg))  (``quantized_score_error_bound``);
   each term is attained when both entries round the same way by a full half, so the bound is sharp.
   With |d_i| <= M for all documents it becomes, for every document,
   ||q||_1/(2f) + |supp q| (M/(2g) + 1/(4fg)).
Floating-point rounding of the scores themselves comes on top of these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

PRUNE_KINDS = ("none", "top_k", "max_ratio", "abs_value", "alpha_mass")
QUANT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32")

# Upper bound on (rows in a block) x (longest row in the block) for the sorting kinds.
_BLOCK = 1 << 21


# ----------------------------------------------------------------------------- small helpers
def _fmt_number(x: float | int) -> str:
    """Shortest text that parses back to the same number (integral values without '.0')."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x)


def _as_number(value: Any, arg: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{arg} must be a number, got {value!r}")
    return float(value)


def _row_of(indptr: np.ndarray, pos: int) -> int:
    return int(np.searchsorted(indptr, pos, side="right") - 1)


def _canonical(m: Any, dtype: Any | None, what: str) -> sp.csr_matrix:
    """A canonical CSR copy (duplicates summed, sorted indices, no stored zeros)."""
    if not sp.issparse(m):
        raise TypeError(f"{what} must be a scipy.sparse matrix, got {type(m).__name__}")
    out = sp.csr_matrix(m, dtype=dtype, copy=True)
    out.sum_duplicates()
    out.eliminate_zeros()
    return out


def _check_weights(m: sp.csr_matrix, what: str, nonnegative: bool) -> None:
    d = m.data
    ok = np.isfinite(d)
    if nonnegative:
        ok &= d >= 0
    if not ok.all():
        pos = int(np.argmin(ok))
        need = "finite non-negative" if nonnegative else "finite"
        raise ValueError(f"{what}: row {_row_of(m.indptr, pos)} has weight {d[pos]!r}; {need} weights required")


def _subset(m: sp.csr_matrix, keep: np.ndarray, data: np.ndarray | None = None) -> sp.csr_matrix:
    """The entries of canonical ``m`` where ``keep`` is set (indices stay sorted)."""
    cum = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(keep, out=cum[1:])
    indptr = cum[m.indptr].astype(m.indptr.dtype, copy=False)
    values = (m.data if data is None else data)[keep]
    out = sp.csr_matrix((values, m.indices[keep], indptr), shape=m.shape, copy=False)
    out.has_sorted_indices = True
    return out


def _length_blocks(counts: np.ndarray, rows: np.ndarray):
    """Yield (row ids, longest length) in blocks of rows of similar length with padded size <= _BLOCK.

    ``rows`` must all have counts >= 1."""
    budget = max(1, int(_BLOCK))
    rows = rows[np.argsort(counts[rows], kind="stable")]
    lengths = counts[rows].astype(np.int64)
    p, n = 0, rows.size
    while p < n:
        w = min(n - p, budget)
        padded = np.arange(1, w + 1, dtype=np.int64) * lengths[p:p + w]  # non-decreasing
        e = p + max(1, int(np.searchsorted(padded, budget, side="right")))
        yield rows[p:e], int(lengths[e - 1])
        p = e


def _sorted_block(m: sp.csr_matrix, rows: np.ndarray, width: int):
    """Rows padded to ``width`` and sorted by (-weight, token): (sorted weights, their positions in m.data,
    valid mask). Padding sorts last."""
    start = m.indptr[rows].astype(np.int64)
    count = m.indptr[rows + 1].astype(np.int64) - start
    col = np.arange(width, dtype=np.int64)
    valid = col[None, :] < count[:, None]
    pos = np.where(valid, start[:, None] + col[None, :], 0)
    vals = np.where(valid, m.data[pos], np.float32(-1.0))
    order = np.argsort(-vals, axis=1, kind="stable")  # stable: equal weights keep ascending token order
    return np.take_along_axis(vals, order, axis=1), np.take_along_axis(pos, order, axis=1), valid


# ----------------------------------------------------------------------------- pruning
@dataclass(frozen=True)
class Pruning:
    """One OpenSearch prune rule: ``kind`` in ``PRUNE_KINDS``, ``value`` its ``prune_ratio``."""

    kind: str = "none"
    value: float | int | None = None

    def __post_init__(self) -> None:
        kind = self.kind
        if not isinstance(kind, str) or kind not in PRUNE_KINDS:
            raise ValueError(f"prune kind must be one of {', '.join(PRUNE_KINDS)}; got {kind!r}")
        v = self.value
        if kind == "none":
            if v is not None:
                raise ValueError(f"prune value must be None for kind 'none' (no prune_ratio), got {v!r}")
            return
        arg = f"{kind} value"
        if v is None:
            raise ValueError(f"{arg} is required")
        x = _as_number(v, arg)
        if kind == "top_k":
            if not (math.isfinite(x) and x.is_integer() and x >= 1):
                raise ValueError(f"{arg} must be a positive integer, got {v!r}")
            object.__setattr__(self, "value", int(x))
        elif kind in ("max_ratio", "alpha_mass"):
            if not 0.0 <= x < 1.0:
                raise ValueError(f"{arg} must be in the range [0, 1), got {v!r}")
            object.__setattr__(self, "value", x)
        else:  # abs_value
            if not (math.isfinite(x) and x >= 0.0):
                raise ValueError(f"{arg} must be finite and >= 0, got {v!r}")
            object.__setattr__(self, "value", x)

    # ---------------------------------------------------------------- text / dict forms
    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{_fmt_number(self.value)}"

    @classmethod
    def parse(cls, text: str) -> Pruning:
        """``"none"``, ``"top_k:100"``, ``"max_ratio=0.1"`` (``:`` or ``=``, surrounding blanks ignored)."""
        if not isinstance(text, str):
            raise ValueError(f"pruning spec must be a string, got {text!r}")
        s = text.strip().lower()
        if s in ("", "none"):
            return cls()
        for sep in (":", "="):
            if sep in s:
                kind, _, raw = s.partition(sep)
                kind, raw = kind.strip(), raw.strip()
                break
        else:
            raise ValueError(f"pruning spec {text!r}: expected 'none' or KIND:VALUE with KIND one of "
                             f"{', '.join(PRUNE_KINDS[1:])}")
        if kind not in PRUNE_KINDS[1:]:
            raise ValueError(f"pruning spec {text!r}: kind must be one of {', '.join(PRUNE_KINDS)}")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"pruning spec {text!r}: {raw!r} is not a number") from None
        return cls(kind, value)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def to_opensearch(self) -> dict[str, Any]:
        """The ingest-processor / query fields: ``{"prune_type": ..., "prune_ratio": ...}``."""
        out: dict[str, Any] = {"prune_type": self.kind}
        if self.kind != "none":
            out["prune_ratio"] = float(self.value)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Pruning:
        """Inverse of ``to_dict``; also reads ``to_opensearch``'s ``prune_type`` / ``prune_ratio``."""
        if not isinstance(raw, dict):
            raise ValueError(f"pruning: expected a dict, got {type(raw).__name__}")
        keys = set(raw)
        if keys <= {"kind", "value"}:
            return cls(raw.get("kind", "none"), raw.get("value"))
        if keys <= {"prune_type", "prune_ratio"}:
            return cls(raw.get("prune_type") or "none", raw.get("prune_ratio"))
        raise ValueError(f"pruning: unknown keys {sorted(keys)}; expected kind/value or prune_type/prune_ratio")

    # ---------------------------------------------------------------- applying
    def apply(self, m: Any) -> sp.csr_matrix:
        """A new canonical float32 CSR holding the kept entries of each row of ``m``."""
        m = _canonical(m, np.float32, "pruning input")
        _check_weights(m, "pruning input", nonnegative=True)
        kind, data, counts = self.kind, m.data, np.diff(m.indptr)
        if kind == "none" or data.size == 0:
            return m
        if kind == "abs_value":
            return _subset(m, data >= np.float32(self.value))
        if kind == "max_ratio":
            row_max = np.zeros(m.shape[0], dtype=np.float32)
            nonempty = np.flatnonzero(counts)
            row_max[nonempty] = np.maximum.reduceat(data, m.indptr[nonempty])
            threshold = np.float32(self.value) * row_max  # float32 product, as in Java
            return _subset(m, data >= np.repeat(threshold, counts))
        if kind == "top_k":
            k = self.value
            long_rows = np.flatnonzero(counts > k)
            keep = np.ones(data.size, dtype=bool)
            for rows, width in _length_blocks(counts, long_rows):
                _, pos, valid = _sorted_block(m, rows, width)
                keep[pos[:, k:][valid[:, k:]]] = False
            return _subset(m, keep)
        # alpha_mass
        alpha = np.float32(self.value)
        keep = np.zeros(data.size, dtype=bool)
        for rows, width in _length_blocks(counts, np.flatnonzero(counts)):
            vals, pos, valid = _sorted_block(m, rows, width)
            vals = np.where(valid, vals, np.float32(0.0))
            total = vals.sum(axis=1, dtype=np.float64).astype(np.float32)
            running = np.cumsum(vals, axis=1, dtype=np.float32)  # sequential float32 sums, as in Java
            kept = (running <= (alpha * total)[:, None]) & valid
            keep[pos[kept]] = True
        return _subset(m, keep)


# ----------------------------------------------------------------------------- quantisation
def _check_factor(factor: Any, arg: str = "factor") -> float:
    x = _as_number(factor, arg)
    if not (math.isfinite(x) and x > 0):
        raise ValueError(f"{arg} must be finite and > 0, got {factor!r}")
    return x


@dataclass(frozen=True)
class Quantization:
    """Integer impacts d̂ = floor(factor * w + 0.5) stored as ``dtype`` (one of ``QUANT_DTYPES``)."""

    factor: float = 100.0
    dtype: str = "int32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_factor(self.factor, "quantization factor"))
        if not isinstance(self.dtype, str) or self.dtype not in QUANT_DTYPES:
            raise ValueError(f"quantization dtype must be one of {', '.join(QUANT_DTYPES)}, got {self.dtype!r}")

    def __str__(self) -> str:
        return f"{self.dtype}:{_fmt_number(self.factor)}"

    @classmethod
    def parse(cls, text: str) -> Quantization:
        """``"int32:100"`` (or ``=``), ``"int:100"`` (int = int32) or a bare factor ``"100"`` (int32)."""
        if not isinstance(text, str):
            raise ValueError(f"quantization spec must be a string, got {text!r}")
        s = text.strip().lower()
        dtype, raw = "int32", s
        for sep in (":", "="):
            if sep in s:
                dtype, _, raw = s.partition(sep)
                dtype, raw = dtype.strip(), raw.strip()
                break
        dtype = "int32" if dtype == "int" else dtype
        if dtype not in QUANT_DTYPES:
            raise ValueError(f"quantization spec {text!r}: dtype must be int or one of {', '.join(QUANT_DTYPES)}")
        try:
            factor = float(raw)
        except ValueError:
            raise ValueError(f"quantization spec {text!r}: factor {raw!r} is not a number") from None
        return cls(factor, dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"factor": self.factor, "dtype": self.dtype}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Quantization:
        if not isinstance(raw, dict):
            raise ValueError(f"quantization: expected a dict, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"factor", "dtype"})
        if unknown:
            raise ValueError(f"quantization: unknown keys {unknown}; expected factor, dtype")
        return cls(**raw)

    def quantize(self, m: Any) -> sp.csr_matrix:
        """Integer CSR of ``floor(factor * w + 0.5)``; zeros dropped; out-of-range values raise (naming the row)."""
        m = _canonical(m, None, "quantization input")
        if m.dtype.kind not in "biuf":
            raise ValueError(f"quantization input must be real-valued, got dtype {m.dtype}")
        _check_weights(m, "quantization input", nonnegative=False)
        x = np.floor(m.data.astype(np.float64) * self.factor + 0.5)
        info = np.iinfo(self.dtype)
        bad = ~((x >= float(info.min)) & (x < float(int(info.max) + 1)))
        if bad.any():
            pos = int(np.argmax(bad))
            raise ValueError(f"quantization: row {_row_of(m.indptr, pos)} weight {m.data[pos]!r} becomes {x[pos]:g},"
                             f" outside {self.dtype} [{info.min}, {info.max}] at factor {_fmt_number(self.factor)}")
        q = x.astype(self.dtype)
        return _subset(m, q != 0, data=q)

    def dequantize(self, mq: Any) -> sp.csr_matrix:
        """float32 CSR of value / factor."""
        mq = _canonical(mq, None, "dequantization input")
        if mq.dtype.kind not in "iu":
            raise ValueError(f"dequantization input must hold integers, got dtype {mq.dtype}")
        out = sp.csr_matrix(((mq.data.astype(np.float64) / self.factor).astype(np.float32), mq.indices.copy(),
                             mq.indptr.copy()), shape=mq.shape)
        out.has_sorted_indices = True
        return out

    def score_error_bound(self, queries: Any, documents: Any | None = None) -> np.ndarray:
        """``score_error_bound(queries, self.factor, documents)``."""
        return score_error_bound(queries, self.factor, documents)


# ----------------------------------------------------------------------------- error bounds
def _abs_and_support(m: Any, what: str) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    m = _canonical(m, np.float64, what)
    _check_weights(m, what, nonnegative=False)
    a = m.copy()
    a.data = np.abs(a.data)
    s = m.copy()
    s.data = np.ones_like(s.data)
    return a, s


def _check_width(q: sp.csr_matrix, d: sp.csr_matrix) -> None:
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"queries have width {q.shape[1]} but documents {d.shape[1]}")


def score_error_bound(queries: Any, factor: float, documents: Any | None = None) -> np.ndarray:
    """Bound on |q·d - q·d̂/factor| for float queries against documents quantised at ``factor``.

    Without ``documents``: shape (n_queries,), ||q||_1 / (2 factor), valid for every document. With the
    (unquantised, float) ``documents``: shape (n_queries, n_documents), Σ_{i∈supp q ∩ supp d} |q_i| / (2 factor).
    """
    f = _check_factor(factor)
    aq, _ = _abs_and_support(queries, "queries")
    if documents is None:
        return 0.5 / f * np.asarray(aq.sum(axis=1), dtype=np.float64).ravel()
    _, sd = _abs_and_support(documents, "documents")
    _check_width(aq, sd)
    return 0.5 / f * (aq @ sd.T).toarray()


def quantized_score_error_bound(queries: Any, factor: float, documents: Any | None = None, *,
                                query_factor: float | None = None,
                                max_doc_weight: float | None = None) -> np.ndarray:
    """Bound on |q·d - q̂·d̂/(g f)| when documents are quantised at f = ``factor`` and queries at
    g = ``query_factor`` (default f); ``queries`` and ``documents`` are the float vectors.

    With ``documents``: shape (n_queries, n_documents), Σ_{i∈S} (|q_i|/(2f) + |d_i|/(2g) + 1/(4fg)),
    S = supp q ∩ supp d. Without: needs ``max_doc_weight`` M >= max |d_i|; shape (n_queries,),
    ||q||_1/(2f) + |supp q| (M/(2g) + 1/(4fg)), valid for every document.
    """
    f = _check_factor(factor)
    g = f if query_factor is None else _check_factor(query_factor, "query_factor")
    aq, sq = _abs_and_support(queries, "queries")
    if documents is None:
        if max_doc_weight is None:
            raise ValueError("max_doc_weight is required when documents are not given")
        big_m = _as_number(max_doc_weight, "max_doc_weight")
        if not (math.isfinite(big_m) and big_m >= 0):
            raise ValueError(f"max_doc_weight must be finite and >= 0, got {max_doc_weight!r}")
        l1 = np.asarray(aq.sum(axis=1), dtype=np.float64).ravel()
        support = np.diff(sq.indptr).astype(np.float64)
        return l1 / (2 * f) + support * (big_m / (2 * g) + 0.25 / (f * g))
    ad, sd = _abs_and_support(documents, "documents")
    _check_width(aq, ad)
    return ((aq @ sd.T).toarray() / (2 * f) + (sq @ ad.T).toarray() / (2 * g)
            + (sq @ sd.T).toarray() * (0.25 / (f * g)))
