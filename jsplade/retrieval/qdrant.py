"""Learned-sparse retrieval in Qdrant, through ``qdrant-client``'s local mode (optional dependency).

Local mode runs Qdrant's collection logic inside the Python process (no server): in memory
(``path=None``) or persisted to a folder (``path=<dir>``, reopened with ``QdrantSparseIndex.open``). Every
document becomes a point whose id is its row number (Qdrant point ids must be integers or UUIDs), whose
named sparse vector holds the row's token ids as ``indices`` and its weights as ``values``, and whose payload
holds the document id (``{"doc_id": ...}``). Queries go through ``query_points`` with a
``models.SparseVector``; Qdrant's sparse similarity is the dot product.

Results follow ``SparseIndex.search`` exactly: ``min(k, N)`` documents per query, best first, ties by
ascending document id. Qdrant itself only returns documents that share a token with the query and orders
equal scores arbitrarily, so the wrapper asks for more hits until the cut is settled (every document it
keeps scores strictly above the last hit fetched, or all sharing documents are in), then breaks ties by
document id and fills the rest with the documents that share no token (score 0). Negative weights are
accepted (Qdrant takes them); they only make the filling need every sharing document.

Precision: local mode multiplies and sums the float32 weights in Python floats (float64) and rounds the
sum once to float32, so a score differs from the exact float64 dot product ``s`` by at most half a float32
ulp (``|s| * 2**-24``) plus the float64 summation error; a Qdrant server sums in float32 (about
``n * 2**-24 * sum_i |q_i d_i|`` for ``n`` shared tokens). ``FLOAT32_SCORE_BOUND`` states the bound that
covers both, ``(n + 1) * 2**-24 * sum_i |q_i d_i|``.

The collection's metadata records the format tag, vocabulary size, vector name and document count, so
``open`` needs only the folder (and the collection name if not the default). A folder is used by one client
at a time (Qdrant's own lock); ``close()`` releases it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from jsplade.files import atomic_directory
from jsplade.retrieval.corpus import load_encoded
from jsplade.retrieval.index import check_ids, id_ranks
from jsplade.splade.sparse import canonical_csr

__all__ = ["QdrantSparseIndex", "FORMAT_TAG", "FLOAT32_SCORE_BOUND"]

FORMAT_TAG = "jsplade.QdrantSparseIndex/1"
PAYLOAD_KEY = "doc_id"
FLOAT32_SCORE_BOUND = "(n + 1) * 2**-24 * sum_i |q_i d_i|"


def _qdrant():
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("jsplade.retrieval.qdrant needs the optional package qdrant-client "
                          "(pip install 'jsplade[qdrant]' or pip install qdrant-client)") from exc
    return QdrantClient, models


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _name(value: Any, arg: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{arg} must be a non-empty string, got {value!r}")
    return value


def _vector(models: Any, m: sp.csr_matrix, row: int):
    lo, hi = m.indptr[row], m.indptr[row + 1]
    return models.SparseVector(indices=m.indices[lo:hi].tolist(),
                               values=m.data[lo:hi].astype(np.float64).tolist())


class QdrantSparseIndex:
    """Documents ``doc_ids`` with encodings ``encodings`` (CSR/dense [N, V]) in a Qdrant collection.

    ``path`` None keeps the collection in memory; a folder path persists it there (built in a temporary
    sibling and moved into place when complete; an existing folder is refused unless ``overwrite``).
    ``collection`` and ``vector_name`` name the collection and its sparse vector; ``batch_size`` points go
    to Qdrant per upsert.
    """

    def __init__(self, doc_ids: Sequence[str], encodings: Any, path: str | Path | None = None,
                 collection: str = "jsplade", vector_name: str = "sparse", batch_size: int = 256,
                 overwrite: bool = False):
        QdrantClient, models = _qdrant()
        ids = check_ids(doc_ids, "doc_ids")
        if not ids:
            raise ValueError("doc_ids is empty; a Qdrant index needs at least one document")
        m = canonical_csr(encodings, None, len(ids), "encodings")
        collection, vector_name = _name(collection, "collection"), _name(vector_name, "vector_name")
        batch_size = _positive_int(batch_size, "batch_size")
        meta = {"format": FORMAT_TAG, "vocab_size": int(m.shape[1]), "vector_name": vector_name,
                "n_docs": len(ids), "has_negative": bool((m.data < 0).any())}
        if path is None:
            client = QdrantClient(location=":memory:")
            self._fill(client, models, collection, meta, ids, m, batch_size)
        else:
            path = Path(path)
            with atomic_directory(path, overwrite=overwrite) as tmp:
                client = QdrantClient(path=str(tmp))
                try:
                    self._fill(client, models, collection, meta, ids, m, batch_size)
                finally:
                    client.close()
            client = QdrantClient(path=str(path))
        self._setup(client, models, collection, meta, ids, path)

    @staticmethod
    def _fill(client: Any, models: Any, collection: str, meta: dict, ids: list[str], m: sp.csr_matrix,
              batch_size: int) -> None:
        name = meta["vector_name"]
        client.create_collection(collection, vectors_config={},
                                 sparse_vectors_config={name: models.SparseVectorParams()},
                                 metadata={"jsplade": meta})
        for lo in range(0, len(ids), batch_size):
            points = [models.PointStruct(id=i, vector={name: _vector(models, m, i)}, payload={PAYLOAD_KEY: ids[i]})
                      for i in range(lo, min(lo + batch_size, len(ids)))]
            client.upsert(collection, points=points, wait=True)

    def _setup(self, client: Any, models: Any, collection: str, meta: dict, ids: list[str],
               path: Path | None) -> None:
        self._client, self._models = client, models
        self.collection = collection
        self.vector_name = meta["vector_name"]
        self.vocab_size = int(meta["vocab_size"])
        self.path = path
        self._has_negative = bool(meta["has_negative"])
        self._ids = ids
        self._ranks = id_ranks(ids)                   # rank of row i's id in ascending id order
        self._by_rank = np.argsort(self._ranks)       # row of the r-th smallest id

    @classmethod
    def from_shards(cls, folder: str | Path, **kwargs: Any) -> "QdrantSparseIndex":
        """The documents of an encoded-corpus shard directory (``jsplade-encode``; quantised impacts divided
        back by their factor)."""
        ids, m = load_encoded(folder)
        return cls(ids, m, **kwargs)

    @classmethod
    def open(cls, path: str | Path, collection: str = "jsplade") -> "QdrantSparseIndex":
        """Reopen a folder written with ``QdrantSparseIndex(..., path=path)``."""
        QdrantClient, models = _qdrant()
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: Qdrant folder not found")
        client = QdrantClient(path=str(path))
        try:
            if not client.collection_exists(collection):
                raise ValueError(f"{path}: no collection {collection!r}")
            meta = (client.get_collection(collection).config.metadata or {}).get("jsplade")
            if not isinstance(meta, dict) or meta.get("format") != FORMAT_TAG:
                raise ValueError(f"{path}: collection {collection!r} was not written by QdrantSparseIndex "
                                 f"(metadata format {FORMAT_TAG!r} missing)")
            n = int(meta["n_docs"])
            ids: list[str | None] = [None] * n
            offset = None
            while True:
                records, offset = client.scroll(collection, limit=1024, offset=offset, with_payload=True)
                for r in records:
                    if not isinstance(r.id, int) or not 0 <= r.id < n:
                        raise ValueError(f"{path}: point id {r.id!r} is not a row number below {n}")
                    ids[r.id] = (r.payload or {}).get(PAYLOAD_KEY)
                if offset is None:
                    break
            missing = [i for i, x in enumerate(ids) if not isinstance(x, str)]
            if missing:
                raise ValueError(f"{path}: {len(missing)} of {n} points lack a '{PAYLOAD_KEY}' payload "
                                 f"(first row {missing[0]})")
            ids = check_ids(ids, f"{path}: document ids")
        except BaseException:
            client.close()
            raise
        self = cls.__new__(cls)
        self._setup(client, models, collection, meta, ids, path)
        return self

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> list[str]:
        """Document ids in row order (point id i holds ``ids[i]``)."""
        return list(self._ids)

    def close(self) -> None:
        """Close the client (releases a persisted folder's lock)."""
        self._client.close()

    def __enter__(self) -> "QdrantSparseIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ search
    def _fetch(self, vectors: list[Any], limit: int) -> list[list[tuple[int, float]]]:
        requests = [self._models.QueryRequest(query=v, using=self.vector_name, limit=limit, with_payload=False)
                    for v in vectors]
        responses = self._client.query_batch_points(self.collection, requests=requests)
        return [[(int(p.id), float(p.score)) for p in r.points] for r in responses]

    def _settle(self, hits: list[tuple[int, float]], limit: int, k: int, query_negative: bool):
        """(rows, scores) of the top ``k`` if ``hits`` (Qdrant's best ``limit``) decide them, else None."""
        n = len(self._ids)
        complete = len(hits) < limit or limit >= n
        last = hits[-1][1] if hits else 0.0
        if not complete and last <= 0 and not (self._has_negative or query_negative):
            # non-negative weights: every positive score is in hand, all other documents score 0
            hits, complete = [h for h in hits if h[1] > 0], True
        if complete:
            seen = {r for r, _ in hits}
            zeros = []
            for r in self._by_rank:
                if len(zeros) >= k:
                    break
                if int(r) not in seen:
                    zeros.append((int(r), 0.0))
            chosen = hits + zeros
        else:
            if last < 0:   # documents sharing no token (score 0) rank above `last` and are not in `hits`
                return None
            chosen = [h for h in hits if h[1] > last]   # every document scoring above `last` is in `hits`
            if len(chosen) < k:
                return None
        chosen.sort(key=lambda h: (-h[1], self._ranks[h[0]]))
        chosen = chosen[:k]
        return [r for r, _ in chosen], [s for _, s in chosen]

    def search(self, queries: Any, k: int, batch_size: int = 64) -> tuple[list[list[str]], np.ndarray]:
        """Top-k by Qdrant's sparse dot product for each query row (CSR or dense [Q, V]).

        Returns (ids [Q][K], scores_QxK float32) with K = min(k, N), best first, ties by ascending document
        id, documents sharing no token with the query at score 0 (as ``SparseIndex.search``). Rows without
        entries score every document 0. ``batch_size`` queries go to Qdrant per batch request.
        """
        k = _positive_int(k, "k")
        batch_size = _positive_int(batch_size, "batch_size")
        q = canonical_csr(queries, self.vocab_size, None, "queries")
        n = len(self._ids)
        kk = min(k, n)
        out_rows: list[list[int]] = [[] for _ in range(q.shape[0])]
        scores = np.zeros((q.shape[0], kk), dtype=np.float32)
        pending = []
        for i in range(q.shape[0]):
            if q.indptr[i] == q.indptr[i + 1]:
                out_rows[i] = [int(r) for r in self._by_rank[:kk]]
            else:
                pending.append(i)
        limit = min(n, 2 * kk)
        while pending:
            unsettled = []
            for lo in range(0, len(pending), batch_size):
                rows = pending[lo:lo + batch_size]
                results = self._fetch([_vector(self._models, q, i) for i in rows], limit)
                for i, hits in zip(rows, results):
                    query_negative = bool((q.data[q.indptr[i]:q.indptr[i + 1]] < 0).any())
                    settled = self._settle(hits, limit, kk, query_negative)
                    if settled is None:
                        unsettled.append(i)
                    else:
                        out_rows[i], scores[i] = settled[0], np.asarray(settled[1], dtype=np.float32)
            pending, limit = unsettled, min(n, 2 * limit)
        return [[self._ids[r] for r in rows] for rows in out_rows], scores
