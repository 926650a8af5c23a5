"""Hard-negative mining and teacher scores: distillation rows made with jsplade itself.

For every query that has positives, ``mine_hard_negatives`` ranks the corpus with a retriever, drops the
query's positives and keeps the K best remaining documents as its hard negatives; a teacher ``SparseEncoder``
then scores the query against the positive and each negative (the dot product of the teacher's query vector
and document vector). ``MiningResult.records`` gives the rows in the shape the trainer reads
(``jsplade.training.data.load_pairs``)::

    {"query": q, "positive": p, "negative_1": n1, ..., "negative_K": nK,
     "label": [s(q, p), s(q, n1), ..., s(q, nK)]}                  # labels="scores" (default)
     "label": [s(q, p) - s(q, n1), ..., s(q, p) - s(q, nK)]         # labels="margins"

The scores form is what ``SparseDistillKLDivLoss`` needs and ``SparseMarginMSELoss`` accepts too (it turns
scores into margins itself); the margins form serves ``SparseMarginMSELoss`` only.

Rules
-----
* Retrievers. ``"sparse"``: the miner's document vectors in an exact ``SparseIndex``, its query vectors
  (``encode_query``), dot-product scores. ``"bm25"``: ``BM25Retriever`` with its defaults. ``"fused"``: both,
  combined by reciprocal-rank fusion (below).
* Candidates. A candidate of a query is a document that is not one of its positives and that the retriever
  scores above 0 (a document scored 0 has nothing in common with the query; its place among the others would
  be decided by its id alone). Each retriever's candidates are ranked by descending score, ties by ascending
  document id (the ``SparseIndex`` rule), and the K first are the negatives.
* Fusion (``"fused"``). Each retriever contributes its first ``fusion_depth`` candidates, ranked 1, 2, ...; a
  document's fused score is the sum, over the lists that hold it, of ``1 / (rrf_k + rank)`` (``rrf_k`` = 60
  unless given). Sums are computed as exact fractions, so equal sums are true ties; they go to the lower
  document id. The fused candidates are the union of both lists.
* Too few candidates. Every row must have exactly K negatives (the trainer stacks rows of one length), so a
  query with fewer than K candidates yields no row at all; its id is listed in ``MiningResult.skipped``.
  Queries without positives are not mined (and not counted as skipped).
* Rows. One row per (query, positive): queries in the order of ``queries``, a query's positives in ascending
  id order; the K negatives (best first) are the same in every row of a query.
* Teacher scores are float64 dot products of the teacher's float32 vectors. The teacher may be the miner
  (the default) or any other encoder; when it is the miner itself and the miner's vectors exist (``"sparse"``,
  ``"fused"``), those vectors are reused instead of encoding the texts again.

Deterministic: nothing is sampled; the same inputs give the same rows, in the same order.
"""

from __future__ import annotations

import json
import math
import numbers
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_open
from jsplade.retrieval.index import SparseIndex, check_ids, id_ranks, select_topk

__all__ = ["METHODS", "LABEL_FORMATS", "DEFAULT_RRF_K", "MinedRow", "MiningResult", "mine_hard_negatives",
           "reciprocal_rank_fusion", "write_rows_jsonl"]

METHODS = ("sparse", "bm25", "fused")
LABEL_FORMATS = ("scores", "margins")
DEFAULT_RRF_K = 60
DEFAULT_FUSION_DEPTH = 100
# Progress bars turn on by themselves above this many queries (the encoder's rule for texts).
_AUTO_PROGRESS = 2000


@dataclass(frozen=True)
class MinedRow:
    """One training row by ids: a query, one of its positives, its K hard negatives (best first) and the
    teacher's scores ``(s(q, positive), s(q, negative_1), ..., s(q, negative_K))``."""

    query_id: str
    positive_id: str
    negative_ids: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def margins(self) -> tuple[float, ...]:
        """``s(q, positive) - s(q, negative_k)`` for k = 1 … K."""
        return tuple(self.scores[0] - s for s in self.scores[1:])

    def record(self, queries: Mapping[str, str], corpus: Mapping[str, str],
               labels: str = "scores") -> dict[str, Any]:
        """The row as the trainer reads it: texts under query/positive/negative_k, then ``label``."""
        _check_choice(labels, LABEL_FORMATS, "labels")
        out: dict[str, Any] = {"query": queries[self.query_id], "positive": corpus[self.positive_id]}
        for j, doc_id in enumerate(self.negative_ids, start=1):
            out[f"negative_{j}"] = corpus[doc_id]
        out["label"] = list(self.scores if labels == "scores" else self.margins)
        return out


@dataclass(frozen=True)
class MiningResult:
    """What ``mine_hard_negatives`` produced.

    rows:    the rows, in output order (see the module's rules)
    mined:   ids of the queries that gave rows, in order
    skipped: ids of the queries with positives but fewer than ``negatives`` candidates (no row), in order
    """

    rows: tuple[MinedRow, ...]
    mined: tuple[str, ...]
    skipped: tuple[str, ...]
    method: str
    negatives: int

    def records(self, queries: Mapping[str, str], corpus: Mapping[str, str],
                labels: str = "scores") -> list[dict[str, Any]]:
        """Every row as a trainer record (``MinedRow.record``)."""
        _check_choice(labels, LABEL_FORMATS, "labels")
        return [row.record(queries, corpus, labels) for row in self.rows]


def _check_choice(value: Any, options: Sequence[str], arg: str) -> None:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{arg} must be one of {', '.join(repr(o) for o in options)}, got {value!r}")


def _positive_int(value: Any, arg: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{arg} must be a positive integer, got {value!r}")
    return int(value)


def _check_rrf_k(value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"rrf_k must be a finite number >= 0, got {value!r}")
    if isinstance(value, numbers.Rational):
        return Fraction(int(value.numerator), int(value.denominator))
    return Fraction(float(value))


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: float = DEFAULT_RRF_K) -> list[tuple[str, Fraction]]:
    """Fuse ranked id lists: ``score(d) = Σ_lists 1 / (k + rank)`` (rank 1-based; a list without ``d``
    adds nothing). Returns (id, exact score) for every id of any list, best first, ties by ascending id."""
    kk = _check_rrf_k(k)
    total: dict[str, Fraction] = {}
    for r, ranking in enumerate(rankings):
        if isinstance(ranking, str):
            raise TypeError(f"rankings[{r}] must be a sequence of ids, not a single str")
        seen: set[str] = set()
        for rank, doc_id in enumerate(ranking, start=1):
            if doc_id in seen:
                raise ValueError(f"rankings[{r}]: id {doc_id!r} is listed twice")
            seen.add(doc_id)
            total[doc_id] = total.get(doc_id, Fraction(0)) + 1 / (kk + rank)
    return sorted(total.items(), key=lambda item: (-item[1], item[0]))


def _check_inputs(queries: Any, corpus: Any, positives: Any) -> dict[str, list[str]]:
    """Type and id checks; returns query id -> its positives in ascending id order (empty sets dropped)."""
    for name, value in (("queries", queries), ("corpus", corpus), ("positives", positives)):
        if not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a mapping, got {type(value).__name__}")
    if not corpus:
        raise ValueError("corpus is empty: there is nothing to mine negatives from")
    check_ids(list(corpus), "corpus ids")
    for doc_id, text in corpus.items():
        if not isinstance(text, str):
            raise TypeError(f"corpus[{doc_id!r}] must be a str, got {type(text).__name__}")
    for qid, text in queries.items():
        if not isinstance(qid, str):
            raise TypeError(f"queries: ids must be strings, got {type(qid).__name__} {qid!r}")
        if not isinstance(text, str):
            raise TypeError(f"queries[{qid!r}] must be a str, got {type(text).__name__}")
    out: dict[str, list[str]] = {}
    for qid, docs in positives.items():
        if qid not in queries:
            raise ValueError(f"positives: query id {qid!r} is not in queries")
        if isinstance(docs, (str, bytes)) or not isinstance(docs, Iterable):
            raise TypeError(f"positives[{qid!r}] must be a set of document ids, got {type(docs).__name__}")
        docs = set(docs)
        for doc_id in docs:
            if doc_id not in corpus:
                raise ValueError(f"positives[{qid!r}]: document id {doc_id!r} is not in the corpus")
        if docs:
            out[qid] = sorted(docs)
    return out


def _candidates(ids: Sequence[str], scores: Sequence[float], excluded: list[str], depth: int) -> list[str]:
    """The first ``depth`` ids of a ranked list that score above 0 and are not ``excluded``."""
    skip = set(excluded)
    out = []
    for doc_id, score in zip(ids, scores):
        if score <= 0:
            break  # lists are ranked by descending score: nothing after this scores above 0
        if doc_id not in skip:
            out.append(doc_id)
            if len(out) == depth:
                break
    return out


class _Bm25Lists:
    """BM25 candidate lists, scored in full rows and ranked by the (score, id) rule."""

    def __init__(self, corpus: Mapping[str, str]):
        from jsplade.retrieval.bm25 import BM25Retriever

        self.retriever = BM25Retriever(corpus)
        self.ranks = id_ranks(self.retriever.corpus_ids)
        self.sorted_ids = np.asarray(sorted(self.retriever.corpus_ids), dtype=object)

    def lists(self, texts: list[str], excluded: list[list[str]], depth: int) -> list[list[str]]:
        k = depth + max(len(e) for e in excluded)
        scores_QxK, ranks_QxK = select_topk(self.retriever.scores(texts), self.ranks, k)
        return [_candidates(self.sorted_ids[r], s, e, depth) for r, s, e in zip(ranks_QxK, scores_QxK, excluded)]


def _progress_bar(total: int, show: bool | None, desc: str):
    if show is False or (show is None and total <= _AUTO_PROGRESS):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="query", file=sys.stderr)


def _row_dots(q_QxV: sp.csr_matrix, d_QxV: sp.csr_matrix) -> np.ndarray:
    """float64 [Q]: dot product of row i of each matrix."""
    return np.asarray(q_QxV.astype(np.float64).multiply(d_QxV.astype(np.float64)).sum(axis=1)).reshape(-1)


def mine_hard_negatives(queries: Mapping[str, str], corpus: Mapping[str, str],
                        positives: Mapping[str, Iterable[str]], model: Any = None, *, teacher: Any = None,
                        method: str = "sparse", negatives: int = 4, rrf_k: float = DEFAULT_RRF_K,
                        fusion_depth: int = DEFAULT_FUSION_DEPTH, batch_size: int = 32,
                        max_active_dims: int | None = None, query_batch_size: int = 256,
                        show_progress_bar: bool | None = None) -> MiningResult:
    """Mine ``negatives`` hard negatives per query and score every (query, positive, negatives…) row.

    queries:   query id -> text; corpus: document id -> text (non-empty); positives: query id -> document ids
               (every id must be in ``queries`` / ``corpus``; queries missing here are not mined)
    model:     the miner, a ``SparseEncoder`` (needed for ``"sparse"`` and ``"fused"``)
    teacher:   the encoder that scores the rows (default: ``model``; required when ``model`` is None)
    method:    ``"sparse"``, ``"bm25"`` or ``"fused"`` (see the module's rules)
    rrf_k, fusion_depth: the fusion constant and how many candidates each retriever contributes
               (``"fused"`` only; ``fusion_depth >= negatives``)
    batch_size, max_active_dims: passed to every ``encode_query`` / ``encode_document`` call
    query_batch_size: queries ranked at a time (bounds the dense score block of BM25 and the index)
    show_progress_bar: a bar over the queries (None: only above 2,000 queries); the encoders draw their own

    Bad input raises ``TypeError`` / ``ValueError`` naming the argument before anything is encoded.
    """
    _check_choice(method, METHODS, "method")
    k = _positive_int(negatives, "negatives")
    _positive_int(query_batch_size, "query_batch_size")
    rrf = _check_rrf_k(rrf_k)
    depth = k
    if method == "fused":
        depth = _positive_int(fusion_depth, "fusion_depth")
        if depth < k:
            raise ValueError(f"fusion_depth ({depth}) must be >= negatives ({k})")
    if method != "bm25" and model is None:
        raise ValueError(f"method {method!r} needs a model (the SparseEncoder that ranks the corpus)")
    teacher = model if teacher is None else teacher
    if teacher is None:
        raise ValueError("a teacher is needed to score the rows: pass model or teacher")
    pos = _check_inputs(queries, corpus, positives)
    qids = [q for q in queries if q in pos]
    enc_kw = dict(batch_size=batch_size, max_active_dims=max_active_dims)

    index = q_miner = None
    if method != "bm25":
        index = SparseIndex.from_encoder(model, corpus, show_progress_bar=show_progress_bar, **enc_kw)
        q_miner = model.encode_query([queries[q] for q in qids], show_progress_bar=show_progress_bar, **enc_kw)
    bm25 = _Bm25Lists(corpus) if method != "sparse" else None

    negatives_of: dict[str, list[str]] = {}
    skipped: list[str] = []
    bar = _progress_bar(len(qids), show_progress_bar, f"mining ({method})")
    for lo in range(0, len(qids), query_batch_size):
        block = qids[lo:lo + query_batch_size]
        excluded = [pos[q] for q in block]
        lists: list[list[list[str]]] = []
        if index is not None:
            ids, scores = index.search(q_miner[lo:lo + len(block)], depth + max(len(e) for e in excluded))
            lists.append([_candidates(i, s, e, depth) for i, s, e in zip(ids, scores, excluded)])
        if bm25 is not None:
            lists.append(bm25.lists([queries[q] for q in block], excluded, depth))
        for j, qid in enumerate(block):
            if method == "fused":
                ranked = [doc_id for doc_id, _ in reciprocal_rank_fusion([lists[0][j], lists[1][j]], rrf)]
            else:
                ranked = lists[0][j]
            if len(ranked) < k:
                skipped.append(qid)
            else:
                negatives_of[qid] = ranked[:k]
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()

    mined = [q for q in qids if q in negatives_of]
    rows = _score_rows(mined, pos, negatives_of, queries, corpus, teacher,
                       reuse=(index, q_miner, qids) if teacher is model and index is not None else None,
                       show_progress_bar=show_progress_bar, **enc_kw)
    return MiningResult(rows=tuple(rows), mined=tuple(mined), skipped=tuple(skipped), method=method, negatives=k)


def _score_rows(mined: list[str], pos: dict[str, list[str]], negatives_of: dict[str, list[str]],
                queries: Mapping[str, str], corpus: Mapping[str, str], teacher: Any, reuse: tuple | None,
                show_progress_bar: bool | None, **enc_kw) -> list[MinedRow]:
    """Teacher scores of every (query, positive, negatives…) row."""
    if not mined:
        return []
    if reuse is not None:  # the teacher is the miner: its vectors are already there
        index, q_all, qids = reuse
        row_of_query = {q: i for i, q in enumerate(qids)}
        q_rows = q_all[[row_of_query[q] for q in mined]]
        row_of_doc = {d: i for i, d in enumerate(index.ids)}
        needed = list(dict.fromkeys(d for q in mined for d in pos[q] + negatives_of[q]))
        d_rows = index.matrix[[row_of_doc[d] for d in needed]]
    else:
        q_rows = teacher.encode_query([queries[q] for q in mined], show_progress_bar=show_progress_bar, **enc_kw)
        wanted = {d for q in mined for d in pos[q] + negatives_of[q]}
        needed = [d for d in corpus if d in wanted]  # corpus order
        d_rows = teacher.encode_document([corpus[d] for d in needed], show_progress_bar=show_progress_bar, **enc_kw)
    q_rows, d_rows = sp.csr_matrix(q_rows), sp.csr_matrix(d_rows)
    col_of_doc = {d: i for i, d in enumerate(needed)}
    rows: list[MinedRow] = []
    for i, qid in enumerate(mined):
        docs = pos[qid] + negatives_of[qid]
        q_rep = q_rows[np.full(len(docs), i)]
        dots = _row_dots(q_rep, d_rows[[col_of_doc[d] for d in docs]])
        n_pos = len(pos[qid])
        negs = tuple(negatives_of[qid])
        for p, doc_id in enumerate(pos[qid]):
            rows.append(MinedRow(qid, doc_id, negs, (float(dots[p]),) + tuple(float(x) for x in dots[n_pos:])))
    return rows


def write_rows_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write trainer records as JSON lines (UTF-8, non-ASCII kept) atomically; returns the row count."""
    n = 0
    with atomic_open(path, "w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n
