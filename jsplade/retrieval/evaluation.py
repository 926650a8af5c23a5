"""Information-retrieval evaluation with the definitions of sentence-transformers'
``SparseInformationRetrievalEvaluator`` (6.x ranking rule).

Relevance is binary. For one query with ranked list r_1..r_n (1 = relevant) and R relevant documents:

=============  ==========================================================================
accuracy@k     1 if any of r_1..r_k is 1
precision@k    (sum_{i<=k} r_i) / k          (k, even when fewer than k documents are ranked)
recall@k       (sum_{i<=k} r_i) / R
mrr@k          1 / (rank of the first relevant document) if it is within k, else 0
ndcg@k         sum_{i<=k} r_i / log2(i+1)  divided by  sum_{i<=min(k,R)} 1 / log2(i+1)
map@k          sum over relevant i<=k of (relevant among the first i) / i, divided by min(k, R)
=============  ==========================================================================

Each metric is the mean over the queries that have at least one relevant document; other queries are
left out (as sentence-transformers does). Rankings order documents by descending score, ties by
ascending corpus id (string order).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.retrieval.shards import read_shards
from jsplade.retrieval.index import TopKAccumulator, accumulate_topk, check_ids, id_ranks, select_topk
from jsplade.files import atomic_write_json
from jsplade.splade.sparse import as_csr, check_max_active_dims

__all__ = ["ir_metrics", "rank_topk", "evaluate_rankings", "SparseIREvaluator", "format_table",
           "write_results_json", "sparsity_stats"]

DEFAULT_TABLE_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@10")


def _check_ks(ks: Iterable[int], arg: str) -> tuple[int, ...]:
    if isinstance(ks, (int, np.integer)):
        raise TypeError(f"{arg} must be a sequence of positive integers, e.g. (10,), got {ks!r}")
    out = tuple(ks)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"{arg} must hold positive integers, got {k!r}")
    return tuple(int(k) for k in out)


def rank_topk(scores_QxD: np.ndarray, corpus_ids: Sequence[str], k: int) -> tuple[list[list[str]], np.ndarray]:
    """Top-k corpus ids per query row of a score matrix.

    Order: descending score, ties by ascending corpus id (string order). Returns (ids [Q][K],
    scores_QxK in the input dtype) with K = min(k, D). NaN scores raise ``ValueError``.
    """
    scores_QxD = np.asarray(scores_QxD)
    if scores_QxD.ndim != 2 or scores_QxD.dtype.kind != "f":
        raise ValueError(f"scores_QxD must be a 2-D float array, got shape {list(scores_QxD.shape)} "
                         f"dtype {scores_QxD.dtype}")
    ids = check_ids(corpus_ids, "corpus_ids")
    if len(ids) != scores_QxD.shape[1]:
        raise ValueError(f"corpus_ids has {len(ids)} ids but scores_QxD has {scores_QxD.shape[1]} columns")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if np.isnan(scores_QxD).any():
        raise ValueError("scores_QxD contains NaN; cannot rank")
    top_scores_QxK, top_ranks_QxK = select_topk(scores_QxD, id_ranks(ids)[None, :], k)
    sorted_ids = np.asarray(sorted(ids), dtype=object)
    return [list(row) for row in sorted_ids[top_ranks_QxK]], top_scores_QxK


def _per_query(ranked: Sequence[str], relevant: Collection[str], mrr_at_k, ndcg_at_k, accuracy_at_k,
               precision_recall_at_k, map_at_k) -> dict[str, float]:
    """Every metric of one query (see the module docstring)."""
    hits = [1 if cid in relevant else 0 for cid in ranked]
    cum = np.cumsum(hits) if hits else np.zeros(0, dtype=np.int64)
    n_rel = len(relevant)

    def hits_at(k: int) -> int:
        return int(cum[min(k, len(cum)) - 1]) if len(cum) and k >= 1 else 0

    out: dict[str, float] = {}
    for k in accuracy_at_k:
        out[f"accuracy@{k}"] = 1.0 if hits_at(k) > 0 else 0.0
    for k in precision_recall_at_k:
        out[f"precision@{k}"] = hits_at(k) / k
    for k in precision_recall_at_k:
        out[f"recall@{k}"] = hits_at(k) / n_rel
    for k in ndcg_at_k:
        dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits[:k]))
        idcg = sum(1.0 / math.log2(i + 2) for i in range(min(k, n_rel)))
        out[f"ndcg@{k}"] = dcg / idcg
    for k in mrr_at_k:
        first = next((i for i, h in enumerate(hits[:k]) if h), None)
        out[f"mrr@{k}"] = 0.0 if first is None else 1.0 / (first + 1)
    for k in map_at_k:
        ap = sum(cum[i] / (i + 1) for i, h in enumerate(hits[:k]) if h)
        out[f"map@{k}"] = float(ap) / min(k, n_rel)
    return out


def ir_metrics(topk_ids_per_query: Mapping[str, Sequence[str]], relevant: Mapping[str, Collection[str]],
               mrr_at_k: Sequence[int] = (10,), ndcg_at_k: Sequence[int] = (10,),
               accuracy_at_k: Sequence[int] = (1, 3, 5, 10), precision_recall_at_k: Sequence[int] = (1, 3, 5, 10),
               map_at_k: Sequence[int] = (100,)) -> dict[str, float]:
    """Mean IR metrics (unprefixed keys such as ``ndcg@10``) over queries with >= 1 relevant document.

    ``topk_ids_per_query``: query id -> ranked corpus ids, best first (at least max k of them when the
    corpus allows; duplicates are an error). ``relevant``: query id -> relevant corpus ids. Every query
    with relevant documents must have a ranking; rankings of other queries are ignored.
    Key order: accuracy, precision, recall, ndcg, mrr, map (as sentence-transformers).
    """
    ks = dict(mrr_at_k=_check_ks(mrr_at_k, "mrr_at_k"), ndcg_at_k=_check_ks(ndcg_at_k, "ndcg_at_k"),
              accuracy_at_k=_check_ks(accuracy_at_k, "accuracy_at_k"),
              precision_recall_at_k=_check_ks(precision_recall_at_k, "precision_recall_at_k"),
              map_at_k=_check_ks(map_at_k, "map_at_k"))
    if not isinstance(topk_ids_per_query, Mapping) or not isinstance(relevant, Mapping):
        raise TypeError("topk_ids_per_query and relevant must be mappings keyed by query id")
    totals: dict[str, float] = {}
    n = 0
    for qid, rel in relevant.items():
        if isinstance(rel, str):
            raise TypeError(f"relevant[{qid!r}] must be a collection of corpus ids, not a str")
        rel = set(rel)
        if not rel:
            continue
        if qid not in topk_ids_per_query:
            raise ValueError(f"topk_ids_per_query has no ranking for query {qid!r}")
        ranked = list(topk_ids_per_query[qid])
        if len(set(ranked)) != len(ranked):
            raise ValueError(f"topk_ids_per_query[{qid!r}] ranks some corpus id more than once")
        for key, value in _per_query(ranked, rel, **ks).items():
            totals[key] = totals.get(key, 0.0) + value
        n += 1
    if n == 0:
        raise ValueError("relevant: no query has a relevant document; nothing to evaluate")
    return {key: value / n for key, value in totals.items()}


def _prefix(name: str) -> str:
    return f"{name}_" if name else ""


def evaluate_rankings(rankings: Mapping[str, Sequence[str]], relevant_docs: Mapping[str, Collection[str]],
                      name: str = "", score_function: str = "dot", mrr_at_k: Sequence[int] = (10,),
                      ndcg_at_k: Sequence[int] = (10,), accuracy_at_k: Sequence[int] = (1, 3, 5, 10),
                      precision_recall_at_k: Sequence[int] = (1, 3, 5, 10),
                      map_at_k: Sequence[int] = (100,)) -> dict[str, float]:
    """``ir_metrics`` with sentence-transformers key names ``{name}_{score_function}_{metric}@{k}``
    (no ``{name}_`` when ``name`` is empty). Used for every retriever (sparse encoder, index, BM25)."""
    metrics = ir_metrics(rankings, relevant_docs, mrr_at_k, ndcg_at_k, accuracy_at_k, precision_recall_at_k,
                         map_at_k)
    return {f"{_prefix(name)}{score_function}_{key}": value for key, value in metrics.items()}


def nonzero_counts(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(non-zeros per row, rows with a non-zero per column) of a CSR matrix, explicit zeros ignored."""
    nz = m.data != 0
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))[nz]
    per_row = np.bincount(rows, minlength=m.shape[0])
    per_col = np.bincount(m.indices[nz], minlength=m.shape[1])
    return per_row, per_col


def sparsity_stats(query_col_counts_V: np.ndarray, n_queries: int, query_nnz: int,
                   doc_col_counts_V: np.ndarray, n_docs: int, doc_nnz: int) -> dict[str, float]:
    """The evaluator's sparsity statistics from non-zero counts (see ``SparseIREvaluator``)."""
    v = int(query_col_counts_V.shape[0])
    q_active = query_nnz / n_queries
    d_active = doc_nnz / n_docs
    p_q = query_col_counts_V.astype(np.float64) / n_queries
    p_d = doc_col_counts_V.astype(np.float64) / n_docs
    return {"query_active_dims": q_active, "query_sparsity_ratio": 1.0 - q_active / v,
            "corpus_active_dims": d_active, "corpus_sparsity_ratio": 1.0 - d_active / v,
            "avg_flops": float(np.dot(p_q, p_d))}


def _check_text_map(x: Any, arg: str) -> dict[str, str]:
    if not isinstance(x, Mapping):
        raise TypeError(f"{arg} must be a mapping id -> text, got {type(x).__name__}")
    for key, text in x.items():
        if not isinstance(key, str) or not isinstance(text, str):
            raise TypeError(f"{arg} must map str ids to str texts; entry {key!r} -> {type(text).__name__}")
    return dict(x)


class SparseIREvaluator:
    """Retrieval evaluation of a sparse encoder (sentence-transformers ``SparseInformationRetrievalEvaluator``).

    ``queries`` / ``corpus``: id -> text; ``relevant_docs``: query id -> relevant corpus ids (every id must be
    a known query / document). Queries without relevant documents are left out (not encoded). Queries are
    encoded with ``encoder.encode_query`` in one call; the corpus is encoded with ``encoder.encode_document``
    ``corpus_chunk_size`` documents at a time, each chunk scored against all queries (dot product) and
    merged into a running top-k (k = the largest of all cut-offs), so memory does not grow with the corpus.

    ``__call__(encoder)`` returns the metrics of ``evaluate_rankings`` plus
    ``query_active_dims`` (mean non-zeros per query), ``query_sparsity_ratio`` (1 - that / V),
    ``corpus_active_dims`` (mean non-zeros per document), ``corpus_sparsity_ratio``, and
    ``avg_flops`` = sum_j p_q(j) * p_d(j) with p_q(j) / p_d(j) the fraction of queries / documents whose
    dimension j is non-zero; all with the ``{name}_`` prefix when a name is given.
    """

    score_function = "dot"

    def __init__(self, queries: Mapping[str, str], corpus: Mapping[str, str],
                 relevant_docs: Mapping[str, Collection[str]], name: str = "",
                 mrr_at_k: Sequence[int] = (10,), ndcg_at_k: Sequence[int] = (10,),
                 accuracy_at_k: Sequence[int] = (1, 3, 5, 10), precision_recall_at_k: Sequence[int] = (1, 3, 5, 10),
                 map_at_k: Sequence[int] = (100,), batch_size: int = 32, corpus_chunk_size: int = 50000,
                 max_active_dims: int | None = None, show_progress_bar: bool | None = None):
        self.queries = _check_text_map(queries, "queries")
        self.corpus = _check_text_map(corpus, "corpus")
        if not self.corpus:
            raise ValueError("corpus is empty")
        if not isinstance(relevant_docs, Mapping):
            raise TypeError(f"relevant_docs must be a mapping query id -> corpus ids, "
                            f"got {type(relevant_docs).__name__}")
        self.relevant_docs: dict[str, set[str]] = {}
        for qid, rel in relevant_docs.items():
            if isinstance(rel, str):
                raise TypeError(f"relevant_docs[{qid!r}] must be a collection of corpus ids, not a str")
            if qid not in self.queries:
                raise ValueError(f"relevant_docs names query id {qid!r} that is not in queries")
            rel = set(rel)
            unknown = sorted(rel - self.corpus.keys())
            if unknown:
                raise ValueError(f"relevant_docs[{qid!r}] names corpus id {unknown[0]!r} that is not in corpus")
            if rel:
                self.relevant_docs[qid] = rel
        self.query_ids = [qid for qid in self.queries if qid in self.relevant_docs]
        if not self.query_ids:
            raise ValueError("relevant_docs: no query has a relevant document; nothing to evaluate")
        self.name = str(name)
        self.ks = dict(mrr_at_k=_check_ks(mrr_at_k, "mrr_at_k"), ndcg_at_k=_check_ks(ndcg_at_k, "ndcg_at_k"),
                       accuracy_at_k=_check_ks(accuracy_at_k, "accuracy_at_k"),
                       precision_recall_at_k=_check_ks(precision_recall_at_k, "precision_recall_at_k"),
                       map_at_k=_check_ks(map_at_k, "map_at_k"))
        all_ks = [k for ks in self.ks.values() for k in ks]
        if not all_ks or not self.ks["ndcg_at_k"]:
            raise ValueError("ndcg_at_k must hold at least one cut-off (it defines the primary metric)")
        self.max_k = max(all_ks)
        for arg, value in (("batch_size", batch_size), ("corpus_chunk_size", corpus_chunk_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        self.batch_size = int(batch_size)
        self.corpus_chunk_size = int(corpus_chunk_size)
        self.max_active_dims = check_max_active_dims(max_active_dims)
        self.show_progress_bar = show_progress_bar

    @property
    def primary_metric(self) -> str:
        """Key of the main metric: ``{name}_dot_ndcg@{largest ndcg k}``."""
        return f"{_prefix(self.name)}{self.score_function}_ndcg@{max(self.ks['ndcg_at_k'])}"

    def _encode(self, fn, texts: list[str], vocab_size: int, what: str) -> sp.csr_matrix:
        out = fn(texts, batch_size=self.batch_size, max_active_dims=self.max_active_dims,
                 show_progress_bar=self.show_progress_bar)
        m = as_csr(out, vocab_size=vocab_size, arg=f"{what} output")
        if m.shape[0] != len(texts):
            raise ValueError(f"{what} returned {m.shape[0]} rows for {len(texts)} texts")
        return m

    def _document_chunks(self, encoder: Any, corpus_ids: list[str], vocab_size: int):
        """(row slice of ``corpus_ids``, encodings) chunk by chunk, encoded now."""
        for lo in range(0, len(corpus_ids), self.corpus_chunk_size):
            hi = min(lo + self.corpus_chunk_size, len(corpus_ids))
            yield np.arange(lo, hi), self._encode(encoder.encode_document, [self.corpus[c] for c in corpus_ids[lo:hi]],
                                                  vocab_size, "encoder.encode_document")

    def _shard_chunks(self, encoder: Any, corpus_shards: Any, corpus_ids: list[str], vocab_size: int):
        """The same from an encoded-corpus shard directory (``jsplade.retrieval.shards``), one part at a time;
        the directory must be the encoder's (same fingerprint) and hold exactly the evaluator's corpus ids."""
        shards = read_shards(corpus_shards)
        if shards.settings["model"] != encoder.fingerprint():
            raise ValueError(f"{shards.folder}: encoded by another model ({shards.settings['model']}) than the "
                             f"encoder evaluated ({encoder.fingerprint()})")
        if shards.n_docs != len(corpus_ids):
            raise ValueError(f"{shards.folder}: holds {shards.n_docs} documents, the evaluator's corpus "
                             f"{len(corpus_ids)}")
        row_of = {c: i for i, c in enumerate(corpus_ids)}
        for ids, m in shards.iter_vectors():
            rows = np.fromiter((row_of.get(i, -1) for i in ids), np.int64, len(ids))
            if (rows < 0).any():
                raise ValueError(f"{shards.folder}: document id {ids[int(np.argmax(rows < 0))]!r} is not in the "
                                 "evaluator's corpus")
            yield rows, m

    def retrieve(self, encoder: Any, corpus_shards: Any = None) -> tuple[dict[str, list[str]], dict[str, float]]:
        """(query id -> top max_k corpus ids, sparsity statistics) for ``encoder``; with ``corpus_shards``
        (a directory written by ``jsplade-encode`` / ``encode_corpus``) the documents are read from it
        instead of encoded (pruned / quantised as it was written; quantised impacts divided by the factor)."""
        vocab_size = int(encoder.vocab_size)
        q_QxV = self._encode(encoder.encode_query, [self.queries[q] for q in self.query_ids], vocab_size,
                             "encoder.encode_query")
        q_rows, q_cols = nonzero_counts(q_QxV)
        corpus_ids = list(self.corpus)
        ranks_D = id_ranks(corpus_ids)
        acc = TopKAccumulator(len(self.query_ids), self.max_k)
        d_cols = np.zeros(vocab_size, dtype=np.int64)
        d_nnz = 0
        chunks = (self._document_chunks(encoder, corpus_ids, vocab_size) if corpus_shards is None
                  else self._shard_chunks(encoder, corpus_shards, corpus_ids, vocab_size))
        for rows_C, d_CxV in chunks:
            rows, cols = nonzero_counts(d_CxV)
            d_cols += cols
            d_nnz += int(rows.sum())
            accumulate_topk(acc, q_QxV, d_CxV, ranks_D[rows_C])
        _, top_ranks_QxK = acc.result()
        sorted_ids = np.asarray(sorted(corpus_ids), dtype=object)
        rankings = {qid: list(sorted_ids[row]) for qid, row in zip(self.query_ids, top_ranks_QxK)}
        stats = sparsity_stats(q_cols, len(self.query_ids), int(q_rows.sum()), d_cols, len(corpus_ids), d_nnz)
        return rankings, stats

    def __call__(self, encoder: Any, corpus_shards: Any = None) -> dict[str, float]:
        """All metrics for ``encoder`` (see the class docstring for the keys); ``corpus_shards`` as in
        ``retrieve``."""
        rankings, stats = self.retrieve(encoder, corpus_shards)
        metrics = evaluate_rankings(rankings, self.relevant_docs, self.name, self.score_function, **self.ks)
        metrics.update({f"{_prefix(self.name)}{key}": value for key, value in stats.items()})
        return metrics


def _lookup(result: Mapping[str, float], metric: str, system: str) -> float | None:
    if metric in result:
        return result[metric]
    found = [key for key in result if key.endswith("_" + metric)]
    if len(found) > 1:
        raise ValueError(f"results[{system!r}]: metric {metric!r} is ambiguous ({', '.join(sorted(found))})")
    return result[found[0]] if found else None


def format_table(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str] = DEFAULT_TABLE_METRICS,
                 digits: int = 4) -> str:
    """A Markdown table: one row per metric, one column per system (``results``: system -> metrics).

    A metric matches a key equal to it or ending in ``_<metric>`` (so ``ndcg@10`` finds
    ``dot_ndcg@10`` or ``bm25_ndcg@10``); a system without it shows ``n/a``.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping system -> metrics")
    if isinstance(metrics, str):
        raise TypeError("metrics must be a sequence of metric names, not a single str")
    systems = list(results)
    lines = ["| metric | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for metric in metrics:
        cells = []
        for system in systems:
            value = _lookup(results[system], metric, system)
            cells.append("n/a" if value is None else f"{value:.{digits}f}")
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_json(path: str | Path, results: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``{"metadata": ..., "results": ...}`` as indented JSON, atomically."""
    payload = {"metadata": dict(metadata or {}), "results": dict(results)}
    atomic_write_json(path, payload)
