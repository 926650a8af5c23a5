"""Learned-sparse retrieval with PISA, through ``pyterrier_pisa`` (optional dependency).

PISA is an inverted-index engine whose postings hold integer impacts; its "quantized" scorer scores a
document as ``sum_i w_i * impact_i`` over the query terms, with dynamic pruning (MaxScore, WAND,
Block-Max WAND, ...) that returns the exact top-k of those integer scores. This wrapper indexes CSR encodings
as such impacts and searches with pre-tokenised queries (``query_toks``), using PISA's own query processor.

**What pyterrier_pisa does with weights** (read from its ``PisaToksIndexer`` and ``_pisathon.cpp``):
documents given as ``toks`` (term -> number) are stored as ``int(number * scale)`` (truncation towards zero;
entries that become <= 0 are dropped); a query's ``query_toks`` weight ``w`` is multiplied by ``toks_scale``
and the term is then repeated ``floor(w * toks_scale)`` times, PISA counting the repetitions as the term's
query weight (so weights below 1 vanish). Both steps truncate. This wrapper quantises itself, by rounding:

    document impact  d^_i = round(factor * d_i)          (d_i the float32 document weight)
    query weight     q^_i = round(query_factor * q_i)    (query_factor defaults to factor)

(round = floor(x + 1/2), ``jsplade.splade.pruning.Quantization``; ``from_shards`` indexes a shard directory
written by ``jsplade-encode``, whose quantised impacts are then exactly PISA's.)

and hands PISA exactly these integers (``scale=1``, ``toks_scale=1``, so its truncation changes nothing).
PISA's score is the integer ``S = sum_i q^_i d^_i``; ``search`` reports ``S / (factor * query_factor)``.
Impacts and document impact sums must fit PISA's uint32 postings; PISA adds scores in float32, which is
exact while ``S < 2**24`` (``score_bound`` accounts for larger sums). Weights must be non-negative.

**Quantisation bound.** With ``f = factor``, ``g = query_factor``, ``|d^_i - f d_i| <= 1/2`` and
``|q^_i - g q_i| <= 1/2``, every shared term satisfies the identity

    q^_i d^_i - g f q_i d_i = d^_i (q^_i - g q_i) + g q_i (d^_i - f d_i)

so ``|q^_i d^_i / (g f) - q_i d_i| <= (d^_i + g q_i) / (2 g f)`` (also when either rounds to 0). Summed
over the query's terms, for ``s = q.d`` (exact) and ``s^ = S / (g f)`` (PISA)::

    |s^ - s| <= beta(q, d) = sum_{i in supp q, d_i > 0} (d^_i + g q_i) / (2 g f)
             <= beta(q)    = sum_{i in supp q, i indexed} (M_i + g q_i) / (2 g f),  M_i = max_d d^_i

``score_bound`` returns ``beta(q)``. Consequence for rankings: let ``s_k`` be the exact k-th score. If a
document ``x`` is in PISA's top-k but not the exact one, an exact top-k document ``y`` is missing from PISA's
and ``s^_x >= s^_y``; then ``s_k - 2 beta <= s_y - 2 beta <= s_x <= s_k`` and likewise
``s_k <= s_y <= s_k + 2 beta``. So only documents whose exact score lies within ``2 beta(q)`` of ``s_k`` can
swap in or out.

**Token strings.** Term ``i`` is the string ``"t<i>"`` (``t0``, ``t1``, ...): ASCII letters and digits only,
so no vocabulary character (spaces, newlines, ``#``, punctuation, non-ASCII) can break PISA's line-based
lexicon and document files; no tokenizer is needed. Documents are handed to PISA in ascending document-id
order under the document numbers ``"0"``, ``"1"``, ..., so PISA's internal document numbers follow the id
order and its result sort (score, then document number) is jsplade's rule. PISA's top-k heap, though, keeps
an arbitrary subset of the documents tied at its k-th score (found on LIMIT-small, where 44 documents tie);
``search`` therefore asks for more results (doubling) until every document it keeps scores strictly above
the last one returned, or PISA returns fewer than asked (then it returned every positive score). The result
is the exact top-k of the integer scores ``S`` with ties by id; a huge tie at the cut costs extra rounds.

**No Java.** ``pyterrier`` starts a JVM only for Terrier's own (Java) components; building and searching a
PISA index goes through the compiled ``_pisathon`` extension, so no JVM is started and no Java installation
is needed (``tests/retrieval/test_pisa.py`` checks it with ``jnius`` made unimportable and no Java on
``PATH``).

Results follow ``SparseIndex.search``: ``min(k, N)`` documents, documents without any positive quantised
score (PISA returns none of them) filling the tail at score 0 in ascending id order. The index folder holds
PISA's files plus ``jsplade_pisa.json`` (ids, factors, vocabulary size) and ``jsplade_pisa_terms.npz``
(per-term maximum impact); ``PisaSparseIndex.open(path)`` reopens it. PISA's native code prints progress
on the process's stdout/stderr; ``quiet=True`` (default) diverts it while PISA works and replays it on
stderr only if PISA fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import math
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_directory, atomic_write_bytes, atomic_write_json, read_json_object
from jsplade.retrieval.corpus import load_encoded
from jsplade.retrieval.shards import read_shards
from jsplade.retrieval.index import check_ids, id_ranks
from jsplade.splade.pruning import Quantization
from jsplade.splade.sparse import canonical_csr

__all__ = ["PisaSparseIndex", "quantize", "token_string", "FORMAT_TAG", "QUERY_ALGORITHMS"]

FORMAT_TAG = "jsplade.PisaSparseIndex/1"
META_FILE = "jsplade_pisa.json"
TERMS_FILE = "jsplade_pisa_terms.npz"
QUERY_ALGORITHMS = ("block_max_wand", "block_max_maxscore", "maxscore", "wand", "ranked_or",
                    "ranked_and", "block_max_ranked_and")   # pyterrier_pisa.PisaQueryAlgorithm values
MAX_QUERY_WEIGHT = 1 << 16   # pyterrier_pisa repeats a term once per unit of query weight
_UINT32 = 1 << 32
_EXACT_FLOAT32 = 1 << 24


def _pisa():
    try:
        import pandas
        import pyterrier_pisa
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("jsplade.retrieval.pisa needs the optional package pyterrier-pisa "
                          "(pip install 'jsplade[pisa]' or pip install pyterrier-pisa)") from exc
    return pyterrier_pisa, pandas


def token_string(token_id: int) -> str:
    """PISA's term string for token id ``token_id``: ``"t<id>"``."""
    return f"t{int(token_id)}"


def _factor(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _canonical(x: Any, vocab_size: int | None, rows: int | None, arg: str) -> sp.csr_matrix:
    m = canonical_csr(x, vocab_size, rows, arg)
    if (m.data < 0).any():
        raise ValueError(f"{arg} has negative weights; PISA impacts and query weights are non-negative integers")
    return m


def quantize(encodings: Any, factor: float = 100.0, arg: str = "encodings") -> sp.csr_matrix:
    """``floor(factor * w + 1/2)`` of every entry (CSR int64, same pattern; entries rounding to 0 dropped):
    ``jsplade.splade.pruning.Quantization``, the rule of the shards and the other exports.

    Negative, NaN or infinite weights raise ``ValueError``.
    """
    m = _canonical(encodings, None, None, arg)
    return Quantization(factor=_factor(factor, "factor"), dtype="int64").quantize(m)


@contextlib.contextmanager
def _native_output_diverted(enabled: bool) -> Iterator[None]:
    """Send file descriptors 1 and 2 to a temporary file for the block (PISA's C++ progress output);
    the captured text goes to stderr if the block raises."""
    if not enabled:
        yield
        return

    def flush():
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)

    flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            except BaseException:
                flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                log.seek(0)
                os.write(saved[1], log.read()[-8000:])
                raise
            finally:
                flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


class PisaSparseIndex:
    """A PISA index over documents ``doc_ids`` with encodings ``encodings`` (CSR/dense [N, V], non-negative).

    ``factor`` scales document weights to integer impacts and ``query_factor`` (default ``factor``) query
    weights (see the module docstring for the quantisation and its bound). ``path`` None builds in a
    temporary folder removed with the object (or by ``close()``); a folder path persists the index there
    (built in a temporary sibling, moved into place when complete; an existing folder is refused unless
    ``overwrite``). ``query_algorithm`` is PISA's query processor (``QUERY_ALGORITHMS``), ``threads`` its
    thread count.
    """

    def __init__(self, doc_ids: Sequence[str], encodings: Any, path: str | Path | None = None,
                 factor: float = 100.0, query_factor: float | None = None,
                 query_algorithm: str = "block_max_wand", threads: int = 1, overwrite: bool = False,
                 quiet: bool = True):
        pisa, _ = _pisa()
        ids = check_ids(doc_ids, "doc_ids")
        if not ids:
            raise ValueError("doc_ids is empty; a PISA index needs at least one document")
        m = _canonical(encodings, None, len(ids), "encodings")
        factor = _factor(factor, "factor")
        query_factor = factor if query_factor is None else _factor(query_factor, "query_factor")
        algorithm = self._check_algorithm(query_algorithm)
        threads = self._check_threads(threads)
        impacts = quantize(m, factor)
        if impacts.nnz and int(impacts.data.max()) >= _UINT32:
            raise ValueError(f"encodings: an impact round({factor} * w) reaches {int(impacts.data.max())}, beyond "
                             f"PISA's uint32 postings; lower factor")
        if impacts.nnz and int(np.asarray(impacts.sum(axis=1)).max()) >= _UINT32:
            raise ValueError("encodings: a document's impact sum exceeds PISA's uint32 document length; lower factor")
        vocab_size = int(m.shape[1])
        max_impact = np.zeros(vocab_size, np.int64)
        np.maximum.at(max_impact, impacts.indices, impacts.data)
        indexed = np.zeros(vocab_size, bool)
        indexed[m.indices] = True
        ranks = id_ranks(ids)
        meta = {"format": FORMAT_TAG, "vocab_size": vocab_size, "factor": factor, "query_factor": query_factor,
                "n_docs": len(ids), "ids": ids}

        def build(folder: Path) -> None:
            by_rank = np.argsort(ranks)

            def documents():
                for number, row in enumerate(by_rank):
                    lo, hi = impacts.indptr[row], impacts.indptr[row + 1]
                    cols, vals = impacts.indices[lo:hi], impacts.data[lo:hi]
                    yield {"docno": str(number), "toks": {token_string(c): float(v) for c, v in zip(cols, vals)}}

            with _native_output_diverted(quiet):
                index = pisa.PisaIndex(str(folder), stemmer="none", stops="none", threads=threads)
                index.toks_indexer(scale=1.0).index(documents())
                index.quantized(num_results=1, query_algorithm=algorithm, toks_scale=1.0)   # builds PISA's files
            buf = io.BytesIO()
            np.savez(buf, max_impact=max_impact, indexed=indexed)
            atomic_write_bytes(folder / TERMS_FILE, buf.getvalue())
            atomic_write_json(folder / META_FILE, meta, indent=None)

        self._cleanup = None
        if path is None:
            folder = Path(tempfile.mkdtemp(prefix="jsplade-pisa-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(folder), True)
            build(folder)
            self.path = None
        else:
            folder = Path(path)
            with atomic_directory(folder, overwrite=overwrite) as tmp:
                build(tmp)
            self.path = folder
        self._setup(folder, meta, max_impact, indexed, algorithm, threads, quiet)

    @classmethod
    def from_shards(cls, folder: str | Path, **kwargs: Any) -> "PisaSparseIndex":
        """The documents of an encoded-corpus shard directory; a quantised one keeps its own factor (its
        impacts become PISA's impacts unchanged), an unquantised one takes ``factor`` from ``kwargs``."""
        q = read_shards(folder).quantization
        if q is not None:
            if "factor" in kwargs and float(kwargs["factor"]) != float(q["factor"]):
                raise ValueError(f"{folder}: quantised with factor {q['factor']}, not {kwargs['factor']}")
            kwargs["factor"] = float(q["factor"])
        ids, m = load_encoded(folder)
        return cls(ids, m, **kwargs)

    @staticmethod
    def _check_algorithm(name: Any) -> str:
        if name not in QUERY_ALGORITHMS:
            raise ValueError(f"query_algorithm must be one of {', '.join(QUERY_ALGORITHMS)}, got {name!r}")
        return name

    @staticmethod
    def _check_threads(threads: Any) -> int:
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return int(threads)

    def _setup(self, folder: Path, meta: dict, max_impact: np.ndarray, indexed: np.ndarray, algorithm: str,
               threads: int, quiet: bool) -> None:
        pisa, self._pandas = _pisa()
        self._folder = folder
        self._ids = list(meta["ids"])
        self._sorted_ids = sorted(self._ids)         # PISA document number j holds _sorted_ids[j]
        self.vocab_size = int(meta["vocab_size"])
        self.factor = float(meta["factor"])
        self.query_factor = float(meta["query_factor"])
        self.query_algorithm = algorithm
        self.threads = threads
        self.quiet = quiet
        self._max_impact = max_impact
        self._indexed = indexed
        with _native_output_diverted(quiet):
            self._index = pisa.PisaIndex(str(folder), stemmer="none", stops="none", threads=threads)
        self._retrievers: dict[tuple[int, str], Any] = {}

    @classmethod
    def open(cls, path: str | Path, query_algorithm: str = "block_max_wand", threads: int = 1,
             quiet: bool = True) -> "PisaSparseIndex":
        """Reopen a folder written with ``PisaSparseIndex(..., path=path)``."""
        _pisa()
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: PISA index folder not found")
        meta = read_json_object(path / META_FILE, "PisaSparseIndex metadata")
        if meta.get("format") != FORMAT_TAG:
            raise ValueError(f"{path / META_FILE}: format {meta.get('format')!r}, expected {FORMAT_TAG!r}")
        ids = check_ids(meta.get("ids", ()), f"{path / META_FILE}: ids")
        if len(ids) != meta.get("n_docs"):
            raise ValueError(f"{path / META_FILE}: {len(ids)} ids for n_docs={meta.get('n_docs')!r}")
        try:
            with np.load(path / TERMS_FILE) as z:
                max_impact, indexed = z["max_impact"].astype(np.int64), z["indexed"].astype(bool)
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path / TERMS_FILE}: unreadable term statistics ({exc})") from None
        if max_impact.shape != (meta["vocab_size"],) or indexed.shape != (meta["vocab_size"],):
            raise ValueError(f"{path / TERMS_FILE}: term statistics do not match vocab_size {meta['vocab_size']}")
        self = cls.__new__(cls)
        self._cleanup = None
        self.path = path
        self._setup(path, meta, max_impact, indexed, cls._check_algorithm(query_algorithm),
                    cls._check_threads(threads), quiet)
        return self

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids in the order they were given."""
        return list(self._ids)

    def close(self) -> None:
        """Drop PISA's handles; a temporary index folder (``path=None``) is removed."""
        self._retrievers.clear()
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "PisaSparseIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    def quantize_queries(self, queries: Any) -> sp.csr_matrix:
        """The integer query weights ``round(query_factor * q)`` PISA searches with (CSR int64 [Q, V])."""
        q = quantize(_canonical(queries, self.vocab_size, None, "queries"), self.query_factor, "queries")
        if q.nnz and int(q.data.max()) > MAX_QUERY_WEIGHT:
            raise ValueError(f"queries: a quantised query weight reaches {int(q.data.max())} > {MAX_QUERY_WEIGHT} "
                             f"(pyterrier_pisa repeats the term that many times); lower query_factor")
        return q

    def score_bound(self, queries: Any) -> np.ndarray:
        """float64 [Q]: ``beta(q)`` of the module docstring, a bound on |PISA score - exact dot product| for
        every document, plus the float32 summation error where the integer scores could reach 2**24."""
        q = _canonical(queries, self.vocab_size, None, "queries")
        qhat = self.quantize_queries(q)
        g, f = self.query_factor, self.factor
        out = np.zeros(q.shape[0], np.float64)
        for i in range(q.shape[0]):
            lo, hi = q.indptr[i], q.indptr[i + 1]
            cols, vals = q.indices[lo:hi], q.data[lo:hi].astype(np.float64)
            keep = self._indexed[cols]
            cols, vals = cols[keep], vals[keep]
            out[i] = float(np.sum(self._max_impact[cols] + g * vals)) / (2 * g * f)
            qlo, qhi = qhat.indptr[i], qhat.indptr[i + 1]
            reach = int(np.sum(qhat.data[qlo:qhi] * self._max_impact[qhat.indices[qlo:qhi]]))
            if reach >= _EXACT_FLOAT32:
                out[i] += 2.0 * float(qhi - qlo) * float(reach) * 2.0 ** -24 / (g * f)
        return out

    def _retriever(self, k: int, algorithm: str):
        key = (k, algorithm)
        if key not in self._retrievers:
            pisa, _ = _pisa()
            with _native_output_diverted(self.quiet):
                self._retrievers[key] = pisa.PisaRetrieve(self._index, scorer="quantized", num_results=k,
                                                          threads=self.threads, query_algorithm=algorithm,
                                                          query_weighted=True, toks_scale=1.0)
        return self._retrievers[key]

    def search(self, queries: Any, k: int, query_algorithm: str | None = None,
               raw_scores: bool = False) -> tuple[list[list[str]], np.ndarray]:
        """Top-k by PISA for each query row (CSR or dense [Q, V], non-negative).

        Returns (ids [Q][K], scores [Q, K]) with K = min(k, N), best first, ties by ascending document id:
        scores are ``S / (factor * query_factor)`` as float32, or the integer PISA scores ``S`` (int64) with
        ``raw_scores``. Rows without entries (or whose weights all round to 0) score every document 0.
        ``query_algorithm`` overrides the index's query processor for this call.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        algorithm = self.query_algorithm if query_algorithm is None else self._check_algorithm(query_algorithm)
        qhat = self.quantize_queries(queries)
        n = len(self._ids)
        kk = min(int(k), n)
        qids, toks = [], []
        for i in range(qhat.shape[0]):
            lo, hi = qhat.indptr[i], qhat.indptr[i + 1]
            cols, vals = qhat.indices[lo:hi], qhat.data[lo:hi]
            keep = self._indexed[cols]
            if keep.any():
                qids.append(str(i))
                toks.append({token_string(c): float(v) for c, v in zip(cols[keep], vals[keep])})
        hits: list[list[tuple[int, int]]] = [[] for _ in range(qhat.shape[0])]
        pending = list(range(len(qids)))
        limit = min(n, 2 * kk)
        while pending:
            frame = self._pandas.DataFrame({"qid": [qids[j] for j in pending],
                                            "query_toks": [toks[j] for j in pending]})
            with _native_output_diverted(self.quiet):
                res = self._retriever(limit, algorithm).transform(frame)
            found: dict[int, list[tuple[int, int]]] = {int(qids[j]): [] for j in pending}
            for qid, docno, s in zip(res["qid"].to_numpy(), res["docno"].to_numpy(),
                                     np.rint(res["score"].to_numpy(dtype=np.float64))):
                found[int(qid)].append((int(docno), int(s)))
            unsettled = []
            for j in pending:
                row = found[int(qids[j])]
                # PISA keeps every document scoring above its k-th score but picks arbitrarily among the
                # documents tied at it; a shorter list than asked for holds every positive score.
                if len(row) < limit or limit >= n:
                    hits[int(qids[j])] = row
                    continue
                last = min(sc for _, sc in row)
                above = [h for h in row if h[1] > last]
                if len(above) >= kk:
                    hits[int(qids[j])] = above
                else:
                    unsettled.append(j)
            pending, limit = unsettled, min(n, 2 * limit)
        out_ids: list[list[str]] = []
        scores = np.zeros((qhat.shape[0], kk), dtype=np.int64)
        for i, row in enumerate(hits):
            row = sorted((h for h in row if h[1] > 0), key=lambda h: (-h[1], h[0]))[:kk]
            taken = {d for d, _ in row}
            j = 0
            while len(row) < kk:   # the documents without a positive score, ascending id
                if j not in taken:
                    row.append((j, 0))
                j += 1
            out_ids.append([self._sorted_ids[d] for d, _ in row])
            scores[i] = [s for _, s in row]
        if raw_scores:
            return out_ids, scores
        return out_ids, (scores / (self.factor * self.query_factor)).astype(np.float32)
