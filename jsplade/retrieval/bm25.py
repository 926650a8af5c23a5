"""BM25 baseline built on the ``bm25s`` library (lexical retrieval for comparison tables).

Defaults follow the LIMIT baseline of the project's anchors: bm25s' Lucene variant (k1 1.5, b 0.75),
its English stopword list and the Snowball English stemmer from PyStemmer. Rankings use jsplade's rule
(descending score, ties by ascending corpus id), computed from the full score row of each query, so
``jsplade.retrieval.evaluation.evaluate_rankings`` scores them with exactly the code used for sparse encoders.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from jsplade.retrieval.index import TopKAccumulator, check_ids, id_ranks

__all__ = ["BM25Retriever"]


class BM25Retriever:
    """A bm25s index over ``corpus`` (id -> text).

    ``k1``, ``b``, ``method`` are bm25s' parameters; ``stopwords`` is a bm25s stopword spec (``"en"``,
    a list of words, or ``None``); ``stemmer_language`` names a PyStemmer algorithm (``None``: no stemming).
    Queries are tokenized exactly like the documents.
    """

    def __init__(self, corpus: Mapping[str, str], k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: str | Sequence[str] | None = "en", stemmer_language: str | None = "english",
                 show_progress: bool = False):
        import bm25s

        if not isinstance(corpus, Mapping):
            raise TypeError(f"corpus must be a mapping id -> text, got {type(corpus).__name__}")
        if not corpus:
            raise ValueError("corpus is empty")
        self.corpus_ids = check_ids(list(corpus), "corpus ids")
        texts = list(corpus.values())
        for cid, text in zip(self.corpus_ids, texts):
            if not isinstance(text, str):
                raise TypeError(f"corpus[{cid!r}] must be a str, got {type(text).__name__}")
        self._stopwords = stopwords
        self._stemmer = self._make_stemmer(stemmer_language)
        self._show_progress = bool(show_progress)
        tokens = bm25s.tokenize(texts, stopwords=stopwords, stemmer=self._stemmer, show_progress=show_progress)
        if not tokens.vocab:
            raise ValueError("corpus has no indexable term (every text is empty, stopwords or 1-character words)")
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self._bm25.index(tokens, show_progress=show_progress)
        self._ranks_D = id_ranks(self.corpus_ids)
        self._sorted_ids = np.asarray(sorted(self.corpus_ids), dtype=object)

    @staticmethod
    def _make_stemmer(language: str | None) -> Any:
        if language is None:
            return None
        import Stemmer

        try:
            return Stemmer.Stemmer(language)
        except KeyError:
            raise ValueError(f"stemmer_language {language!r} is not a PyStemmer algorithm "
                             f"(known: {', '.join(Stemmer.algorithms())})") from None

    def scores(self, query_texts: Sequence[str]) -> np.ndarray:
        """float32 [Q, D]: BM25 score of every document (corpus order) for each query text.

        A query with no indexed term (empty, only stopwords, or unseen words) scores 0 everywhere.
        """
        import bm25s

        if isinstance(query_texts, str):
            raise TypeError("query_texts must be a sequence of strings, not a single str")
        texts = list(query_texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"query_texts[{i}] must be a str, got {type(t).__name__}")
        out = np.zeros((len(texts), len(self.corpus_ids)), dtype=np.float32)
        if not texts:
            return out
        tokenized = bm25s.tokenize(texts, stopwords=self._stopwords, stemmer=self._stemmer, return_ids=False,
                                   show_progress=False)
        for row, words in enumerate(tokenized):
            term_ids = self._bm25.get_tokens_ids(list(words))
            if term_ids:
                out[row] = self._bm25.get_scores_from_ids(term_ids)
        return out

    def search(self, queries: Mapping[str, str], k: int, query_batch_size: int = 64) -> dict[str, list[str]]:
        """query id -> the ``min(k, D)`` best corpus ids (descending score, ties by ascending id).

        Memory: one ``query_batch_size x D`` score block at a time.
        """
        if not isinstance(queries, Mapping):
            raise TypeError(f"queries must be a mapping id -> text, got {type(queries).__name__}")
        qids = list(queries)
        out: dict[str, list[str]] = {}
        for lo in range(0, len(qids), query_batch_size):
            block = qids[lo:lo + query_batch_size]
            acc = TopKAccumulator(len(block), k)
            acc.update(self.scores([queries[q] for q in block]), self._ranks_D)
            _, ranks_BxK = acc.result()
            out.update({qid: list(self._sorted_ids[row]) for qid, row in zip(block, ranks_BxK)})
        return out
