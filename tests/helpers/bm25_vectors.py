"""BM25-weighted sparse vectors without any model, for the engine tests (test_qdrant, test_pisa): document
weights BM25 (k1 0.9, b 0.4) over bert-base-uncased WordPiece ids, queries each distinct token at its IDF.
Every LIMIT document holds "likes", and equal document lengths give exact score ties."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jsplade.backbones.tokenizer import WordPieceTokenizer
from jsplade.limit.data import generate_limit_corpus, limit_paths
from jsplade.retrieval.beir import load_beir


def bm25_encodings(tok, doc_texts, query_texts, k1=0.9, b=0.4):
    """(documents CSR float32 [N, V], queries CSR float32 [Q, V]): BM25 document weights, IDF query weights."""
    V = tok.vocab_size
    rows, cols, vals = [], [], []
    for i, ids in enumerate(tok.encode_queries(list(doc_texts), max_length=None)):
        u, c = np.unique(ids, return_counts=True)
        rows += [i] * len(u)
        cols += u.tolist()
        vals += c.tolist()
    tf = sp.csr_matrix((np.asarray(vals, np.float64), (rows, cols)), shape=(len(doc_texts), V))
    n = tf.shape[0]
    df = np.bincount(tf.indices, minlength=V)
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    dl = np.asarray(tf.sum(axis=1)).ravel()
    norm = k1 * (1 - b + b * dl / dl.mean())
    docs = tf.copy()
    docs.data = idf[docs.indices] * docs.data * (k1 + 1) / (docs.data + np.repeat(norm, np.diff(docs.indptr)))
    qrows, qcols = [], []
    for i, ids in enumerate(tok.encode_queries(list(query_texts), max_length=None)):
        u = np.unique(ids)
        qrows += [i] * len(u)
        qcols += u.tolist()
    queries = sp.csr_matrix((idf[qcols], (qrows, qcols)), shape=(len(query_texts), V))
    return docs.astype(np.float32), queries.astype(np.float32)


def bert_tokenizer() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_dir(limit_paths().root / "bert-base-uncased")


def limit_small_vectors(tok):
    """(doc ids, documents, queries) of LIMIT-small."""
    data = load_beir(limit_paths().limit_small)
    ids = list(data.corpus)
    docs, queries = bm25_encodings(tok, [data.corpus[i] for i in ids], list(data.queries.values()))
    return ids, docs, queries


def generated_vectors(tok, query_stride: int, max_queries: int):
    """(doc ids in reverse insertion order, documents, queries) of a generated 3,000-document LIMIT corpus."""
    paths = limit_paths()
    data = generate_limit_corpus(paths.items, [paths.limit / "queries.jsonl", paths.limit_small / "queries.jsonl"],
                                 n_documents=3000, seed=3)
    ids = list(data.corpus)[::-1]   # insertion order unlike id order
    qtexts = list(data.queries.values())[::query_stride][:max_queries]
    docs, queries = bm25_encodings(tok, [data.corpus[i] for i in ids], qtexts)
    return ids, docs, queries
