"""SpladeLoss of sentence-transformers as pure JAX functions (sparse_encoder_format.md §5.1–5.3).

Everything here is a differentiable function of embedding arrays, safe to call inside a jit-compiled
train step (shape checks use static shapes only; no global state).

* ``sparse_mnrl_loss``: in-batch-negatives cross-entropy of the query×document dot products.
* ``flops_loss``: the FLOPS regularizer Σ_j (mean_i E[i, j])², with the optional ℓ0 row mask and the
  optional IDF factor of the OpenSearch v3 paper.
* ``splade_loss``: the three named terms of SpladeLoss and their sum.

Arithmetic is done in float32 (or wider, when the inputs are float64 — used by the gradient tests);
lower-precision inputs (bfloat16) are upcast first. The score matmul uses HIGHEST precision so that
accelerators do not silently fall back to TF32/bf16 passes.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

__all__ = ["sparse_mnrl_loss", "flops_loss", "splade_loss"]


def _as_float(x: Any, name: str) -> jnp.ndarray:
    """``x`` as a jnp array of at least float32 precision (float64 stays float64)."""
    try:
        arr = jnp.asarray(x)
    except TypeError as exc:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
            or arr.dtype == jnp.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(jnp.promote_types(arr.dtype, jnp.float32))


def _check_2d(arr: jnp.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, vocab], got shape {list(arr.shape)}")


def sparse_mnrl_loss(query_BxV, docs_NxV, scale: float = 1.0) -> jnp.ndarray:
    """SparseMultipleNegativesRankingLoss (similarity = dot): a scalar.

    ``docs_NxV`` = concat_rows(positives, negatives column 1, …, column K), N = (1+K)·B; the target of
    query i is document row i. Returns (1/B) Σ_i [logsumexp_c S[i, c] − S[i, i]] with S = scale·Q·Dᵀ.
    With B = 1 and K = 0 the value is exactly 0 and so is its gradient (logsumexp of one entry is
    that entry: max + log(exp(0))).
    """
    query_BxV = _as_float(query_BxV, "query_BxV")
    docs_NxV = _as_float(docs_NxV, "docs_NxV")
    _check_2d(query_BxV, "query_BxV")
    _check_2d(docs_NxV, "docs_NxV")
    batch, vocab = query_BxV.shape
    n_docs = docs_NxV.shape[0]
    if batch < 1:
        raise ValueError("query_BxV has no rows")
    if docs_NxV.shape[1] != vocab:
        raise ValueError(f"docs_NxV has vocabulary size {docs_NxV.shape[1]}, query_BxV has {vocab}")
    if n_docs < batch or n_docs % batch:
        raise ValueError(f"docs_NxV must have (1+K)·B rows (B = {batch} queries), got {n_docs}")
    dtype = jnp.promote_types(query_BxV.dtype, docs_NxV.dtype)
    scores_BxN = jnp.matmul(query_BxV.astype(dtype), docs_NxV.astype(dtype).T,
                            precision=jax.lax.Precision.HIGHEST) * scale
    lse_B = jax.nn.logsumexp(scores_BxN, axis=1)
    target_B = jnp.diagonal(scores_BxN[:, :batch])
    return jnp.mean(lse_B - target_B)


def flops_loss(emb_NxV, threshold: int | None = None, idf_V=None) -> jnp.ndarray:
    """FLOPS regularizer of an embedding matrix: Σ_j ((1/N) Σ_i E[i, j])², a scalar.

    ``threshold`` t (sentence-transformers' ``*_regularizer_threshold``): rows with at most t non-zero
    entries are zeroed before the mean; they still count in N.

    ``idf_V`` (not in sentence-transformers; the IDF-weighted FLOPS of the OpenSearch v3 paper,
    arXiv 2504.14839): Σ_j ((1/N) Σ_i E[i, j] · idf_j)². Gradients flow into ``idf_V`` unless the
    caller stops them (the trainer does, when the IDF is the static query weight vector).
    """
    emb_NxV = _as_float(emb_NxV, "emb_NxV")
    _check_2d(emb_NxV, "emb_NxV")
    if emb_NxV.shape[0] < 1:
        raise ValueError("emb_NxV has no rows")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
            raise ValueError(f"threshold must be a number >= 0 or None, got {threshold!r}")
        nonzero_N = jnp.sum(emb_NxV != 0, axis=1)
        emb_NxV = jnp.where((nonzero_N > threshold)[:, None], emb_NxV, jnp.zeros((), emb_NxV.dtype))
    mean_V = jnp.mean(emb_NxV, axis=0)
    if idf_V is not None:
        idf_V = _as_float(idf_V, "idf_V")
        if idf_V.shape != (emb_NxV.shape[1],):
            raise ValueError(f"idf_V must have shape [{emb_NxV.shape[1]}], got {list(idf_V.shape)}")
        mean_V = mean_V * idf_V.astype(mean_V.dtype)
    return jnp.sum(jnp.square(mean_V))


def splade_loss(query_BxV, doc_columns: Sequence[Any], lambda_d, lambda_q, scale: float = 1.0,
                doc_threshold: int | None = None, query_threshold: int | None = None,
                doc_idf_V=None, query_idf_V=None) -> dict[str, jnp.ndarray]:
    """SpladeLoss (§5.3): ``{"base_loss", "document_regularizer_loss", "query_regularizer_loss", "total"}``.

    ``doc_columns``: the document columns [B, V] in role order (positive, hard negative 1, …) or one
    [C, B, V] array. base = ``sparse_mnrl_loss(Q, concat_rows(columns))``; the document term is
    λ_d · FLOPS over all document rows, N = (1+K)·B; the query term is λ_q · FLOPS(Q) over the query
    (static route) rows, or exactly 0 when ``lambda_q`` is None. ``lambda_d``/``lambda_q`` may be traced
    scalars (the scheduled weights). total = (base + document term) + query term.
    """
    query_BxV = _as_float(query_BxV, "query_BxV")
    _check_2d(query_BxV, "query_BxV")
    if isinstance(doc_columns, (str, bytes)) or not hasattr(doc_columns, "__len__"):
        raise TypeError(f"doc_columns must be a sequence of [B, V] arrays, got {type(doc_columns).__name__}")
    columns = [_as_float(c, f"doc_columns[{i}]") for i, c in enumerate(doc_columns)]
    if not columns:
        raise ValueError("doc_columns is empty: at least the positive column is needed")
    for i, col in enumerate(columns):
        if col.shape != query_BxV.shape:
            raise ValueError(f"doc_columns[{i}] has shape {list(col.shape)}, expected {list(query_BxV.shape)} "
                             "(same rows and vocabulary as query_BxV)")
    if lambda_d is None:
        raise TypeError("lambda_d must be a number (the document regularizer weight), got None")
    docs_NxV = jnp.concatenate(columns, axis=0)
    base = sparse_mnrl_loss(query_BxV, docs_NxV, scale)
    dtype = base.dtype
    doc_reg = jnp.asarray(lambda_d, dtype) * flops_loss(docs_NxV, doc_threshold, doc_idf_V).astype(dtype)
    if lambda_q is None:
        query_reg = jnp.zeros((), dtype)
    else:
        query_reg = jnp.asarray(lambda_q, dtype) * flops_loss(query_BxV, query_threshold, query_idf_V).astype(dtype)
    return {
        "base_loss": base,
        "document_regularizer_loss": doc_reg,
        "query_regularizer_loss": query_reg,
        "total": base + doc_reg + query_reg,
    }
