"""SpladeLoss of sentence-transformers as pure JAX functions (sparse_encoder_format.md §5.1–5.3).

Everything here is a differentiable function of embedding arrays, safe to call inside a jit-compiled
train step (shape checks use static shapes only; no global state).

* ``sparse_mnrl_loss``: in-batch-negatives cross-entropy of the query×document dot products.
* ``flops_loss``: the FLOPS regularizer Σ_j (mean_i E[i, j])², with the optional ℓ0 row mask and the
  optional IDF factor of the OpenSearch v3 paper.
* ``splade_loss``: the three named terms of SpladeLoss and their sum, around any base loss.
* ``BASE_LOSSES`` / ``base_loss``: every base loss SpladeLoss can wrap (the sentence-transformers class
  names SparseMultipleNegativesRankingLoss, SparseMarginMSELoss, SparseDistillKLDivLoss,
  SparseTripletLoss, SparseMSELoss, SparseCosineSimilarityLoss, SparseCoSENTLoss, SparseAnglELoss, or
  the aliases of ``LOSS_ALIASES``), with the installed reference's definitions and defaults; each is
  ``fn(embeddings, labels, **params)`` on the [B, V] columns in dataset order.

Arithmetic is done in float32 (or wider, when the inputs are float64 — used by the gradient tests);
lower-precision inputs (bfloat16) are upcast first. The score matmuls use HIGHEST precision so that
accelerators do not silently fall back to TF32/bf16 passes.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = [
    "sparse_mnrl_loss", "flops_loss", "splade_loss",
    "LossSpec", "BASE_LOSSES", "LOSS_ALIASES", "base_loss", "resolve_loss_name",
    "MATRIX_SIMILARITIES", "PAIRWISE_SIMILARITIES",
    "sparse_multiple_negatives_ranking_loss", "sparse_margin_mse_loss", "sparse_distill_kl_div_loss",
    "sparse_triplet_loss", "sparse_mse_loss", "sparse_cosine_similarity_loss", "sparse_cosent_loss",
    "sparse_angle_loss",
]


def _real_array(x: Any, name: str) -> jnp.ndarray:
    """``x`` as a jnp array of real numbers (float, integer or bool), its dtype kept."""
    try:
        arr = jnp.asarray(x)
    except TypeError as exc:
        raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)
            or arr.dtype == jnp.bool_):
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _as_float(x: Any, name: str) -> jnp.ndarray:
    """``x`` as a jnp array of at least float32 precision (float64 stays float64)."""
    arr = _real_array(x, name)
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
                doc_idf_V=None, query_idf_V=None, *, base: str = "SparseMultipleNegativesRankingLoss",
                base_params: Mapping[str, Any] | None = None, labels=None,
                use_document_regularizer_only: bool = False) -> dict[str, jnp.ndarray]:
    """SpladeLoss (§5.3): ``{"base_loss", "document_regularizer_loss", "query_regularizer_loss", "total"}``.

    ``doc_columns``: the document columns [B, V] in role order (positive, hard negative 1, …) or one
    [C, B, V] array; the base loss sees ``[query_BxV, *doc_columns]`` and ``labels``.

    ``base`` (a ``BASE_LOSSES`` name or alias, default SparseMultipleNegativesRankingLoss) with
    ``base_params``; ``scale`` is the MNRL scale and reaches only the MNRL base (a ``"scale"`` in
    ``base_params`` takes precedence; giving both with different values is an error).

    The document term is λ_d · FLOPS over all document rows, N = (1+K)·B; the query term is
    λ_q · FLOPS(Q) over the query (static route) rows, or exactly 0 when ``lambda_q`` is None. With
    ``use_document_regularizer_only`` every column, the first included, is a document: the document
    term is λ_d · FLOPS(all C·B rows, ``doc_threshold``, ``doc_idf_V``), there is no query term (0;
    ``lambda_q``, ``query_threshold`` and ``query_idf_V`` are ignored, as the reference ignores its
    query weight then) and ``doc_columns`` may be empty (a one-column base such as SparseMSELoss).
    ``lambda_d``/``lambda_q`` may be traced scalars (the scheduled weights).
    total = (base + document term) + query term.
    """
    query_BxV = _as_float(query_BxV, "query_BxV")
    _check_2d(query_BxV, "query_BxV")
    if isinstance(doc_columns, (str, bytes)) or not hasattr(doc_columns, "__len__"):
        raise TypeError(f"doc_columns must be a sequence of [B, V] arrays, got {type(doc_columns).__name__}")
    if not isinstance(use_document_regularizer_only, bool):
        raise ValueError(f"use_document_regularizer_only must be True or False, got "
                         f"{use_document_regularizer_only!r}")
    columns = [_as_float(c, f"doc_columns[{i}]") for i, c in enumerate(doc_columns)]
    if not columns and not use_document_regularizer_only:
        raise ValueError("doc_columns is empty: at least the positive column is needed")
    for i, col in enumerate(columns):
        if col.shape != query_BxV.shape:
            raise ValueError(f"doc_columns[{i}] has shape {list(col.shape)}, expected {list(query_BxV.shape)} "
                             "(same rows and vocabulary as query_BxV)")
    if lambda_d is None:
        raise TypeError("lambda_d must be a number (the document regularizer weight), got None")
    key = resolve_loss_name(base)
    params = dict(base_params or {})
    if key == MNRL:
        if "scale" not in params:
            params["scale"] = scale
        elif scale != 1.0 and params["scale"] != scale:
            raise ValueError(f"the MNRL scale is given twice: scale={scale!r} and base_params['scale']="
                             f"{params['scale']!r}")
    base_value = base_loss(key, params)([query_BxV, *columns], labels)
    dtype = base_value.dtype
    if use_document_regularizer_only:
        all_NxV = jnp.concatenate([query_BxV, *columns], axis=0) if columns else query_BxV
        doc_reg = jnp.asarray(lambda_d, dtype) * flops_loss(all_NxV, doc_threshold, doc_idf_V).astype(dtype)
        query_reg = jnp.zeros((), dtype)
    else:
        docs_NxV = jnp.concatenate(columns, axis=0)
        doc_reg = jnp.asarray(lambda_d, dtype) * flops_loss(docs_NxV, doc_threshold, doc_idf_V).astype(dtype)
        if lambda_q is None:
            query_reg = jnp.zeros((), dtype)
        else:
            query_reg = (jnp.asarray(lambda_q, dtype)
                         * flops_loss(query_BxV, query_threshold, query_idf_V).astype(dtype))
    return {
        "base_loss": base_value,
        "document_regularizer_loss": doc_reg,
        "query_regularizer_loss": query_reg,
        "total": base_value + doc_reg + query_reg,
    }


# ============================================================================= base losses of SpladeLoss
#
# Every loss that sentence-transformers' SpladeLoss can wrap, as fn(embeddings, labels, **params) -> scalar.
# ``embeddings``: the [B, V] columns in dataset order (0 = anchor/query, 1 = positive, 2… = negatives);
# ``labels``: None or an array whose accepted shapes are listed per loss. Parameters are static Python
# values (part of the traced program), validated by ``base_loss`` and again by each function.

MNRL = "SparseMultipleNegativesRankingLoss"
MARGIN_MSE = "SparseMarginMSELoss"
DISTILL_KL = "SparseDistillKLDivLoss"
TRIPLET = "SparseTripletLoss"
MSE = "SparseMSELoss"
COSINE = "SparseCosineSimilarityLoss"
COSENT = "SparseCoSENTLoss"
ANGLE = "SparseAnglELoss"

LOSS_ALIASES: dict[str, str] = {
    "mnrl": MNRL, "margin_mse": MARGIN_MSE, "distill_kl": DISTILL_KL, "triplet": TRIPLET, "mse": MSE,
    "cosine": COSINE, "cosent": COSENT, "angle": ANGLE,
}


# ----------------------------------------------------------------------------- similarity functions
# Named as in sentence_transformers.util; same definitions, including the normalisation epsilons
# (F.normalize: x / max(‖x‖, 1e-12)) and zero (sub)gradients of |·| and ‖·‖ at 0 as torch has them.

def _mm(a, b):
    return jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)


def _abs(x):
    """|x| with derivative sign(x) (0 at 0, as torch; jnp.abs has derivative 1 at 0)."""
    return x * jnp.sign(x)


def _safe_sqrt(sq):
    """sqrt of a non-negative array with derivative 0 where the argument is 0 (torch's norm at 0)."""
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, jnp.ones((), sq.dtype))), jnp.zeros((), sq.dtype))


def _norm(x, axis=-1, keepdims=False):
    return _safe_sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims))


def _normalize(x, eps=1e-12):
    return x / jnp.maximum(_norm(x, keepdims=True), jnp.asarray(eps, x.dtype))


def _dot_score(a, b):
    return _mm(a, b)


def _cos_sim(a, b):
    return _mm(_normalize(a), _normalize(b))


def _euclidean_sim(a, b):
    sq = jnp.sum(jnp.square(a), 1)[:, None] - 2.0 * _mm(a, b) + jnp.sum(jnp.square(b), 1)[None, :]
    return -_safe_sqrt(jnp.where(sq > 0, sq, jnp.zeros((), sq.dtype)))


def _manhattan_sim(a, b):
    # [rows_a, rows_b, V] intermediate: fine for training batches, heavy for huge vocabularies.
    return -jnp.sum(_abs(a[:, None, :] - b[None, :, :]), axis=-1)


def _pairwise_dot_score(a, b):
    return jnp.sum(a * b, axis=-1)


def _pairwise_cos_sim(a, b):
    return jnp.sum(_normalize(a) * _normalize(b), axis=-1)


def _pairwise_euclidean_sim(a, b):
    return -_norm(a - b)


def _pairwise_manhattan_sim(a, b):
    return -jnp.sum(_abs(a - b), axis=-1)


def _pairwise_angle_sim(a, b):
    """|cos + sin| of the AnglE complex-pair view (odd dimensions are zero-padded by one column)."""
    if a.shape[1] % 2:
        a = jnp.pad(a, ((0, 0), (0, 1)))
        b = jnp.pad(b, ((0, 0), (0, 1)))
    na, nb = _normalize(a), _normalize(b)
    half = a.shape[1] // 2
    cosines = jnp.sum(na * nb, axis=1)
    sines = jnp.sum(na[:, half:] * nb[:, :half] - na[:, :half] * nb[:, half:], axis=1)
    return _abs(cosines + sines)


MATRIX_SIMILARITIES: dict[str, Callable] = {
    "dot_score": _dot_score, "cos_sim": _cos_sim, "pytorch_cos_sim": _cos_sim,
    "euclidean_sim": _euclidean_sim, "manhattan_sim": _manhattan_sim,
}
PAIRWISE_SIMILARITIES: dict[str, Callable] = {
    "pairwise_dot_score": _pairwise_dot_score, "pairwise_cos_sim": _pairwise_cos_sim,
    "pairwise_euclidean_sim": _pairwise_euclidean_sim, "pairwise_manhattan_sim": _pairwise_manhattan_sim,
    "pairwise_angle_sim": _pairwise_angle_sim,
}


# ----------------------------------------------------------------------------- parameter validation
def _bad(loss: str, key: str, what: str, value: Any) -> ValueError:
    return ValueError(f"{loss}: parameter {key!r} must be {what}, got {value!r}")


def _real(loss, key, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _bad(loss, key, "a real number", v)
    f = float(v)
    if not math.isfinite(f):
        raise _bad(loss, key, "a finite real number", v)
    return f


def _positive(loss, key, v):
    f = _real(loss, key, v)
    if not f > 0:
        raise _bad(loss, key, "a finite number > 0", v)
    return f


def _non_negative(loss, key, v):
    f = _real(loss, key, v)
    if f < 0:
        raise _bad(loss, key, "a finite number >= 0", v)
    return f


def _optional_positive(loss, key, v):
    return None if v is None else _positive(loss, key, v)


def _flag(loss, key, v):
    if not isinstance(v, bool):
        raise _bad(loss, key, "True or False", v)
    return v


def _name_of(v):
    """A string as is; a callable/object by its __name__ (e.g. sentence_transformers.util.cos_sim)."""
    if isinstance(v, str):
        return v
    return getattr(v, "__name__", None)


def _similarity(options: Mapping[str, Callable]):
    def check(loss, key, v):
        name = _name_of(v)
        if name not in options:
            raise _bad(loss, key, f"one of {sorted(options)}", v)
        return "cos_sim" if name == "pytorch_cos_sim" else name
    return check


def _choice(options: Sequence[Any]):
    def check(loss, key, v):
        if not any(v is o or (isinstance(v, str) and v == o) for o in options):
            raise _bad(loss, key, f"one of {list(options)}", v)
        return v
    return check


_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


def _directions(loss, key, v):
    if isinstance(v, (str, bytes)) or not isinstance(v, (tuple, list)):
        raise _bad(loss, key, f"a non-empty tuple of {list(_DIRECTIONS)} containing 'query_to_doc'", v)
    if not v or any(not isinstance(d, str) or d not in _DIRECTIONS for d in v) or "query_to_doc" not in v:
        raise _bad(loss, key, f"a non-empty tuple of {list(_DIRECTIONS)} containing 'query_to_doc'", v)
    return tuple(dict.fromkeys(v))


def _triplet_metric(loss, key, v):
    name = v if isinstance(v, str) else None
    if name is not None:
        name = name.rsplit(".", 1)[-1].lower() if name.startswith("TripletDistanceMetric.") else name.lower()
    if name not in ("euclidean", "cosine", "manhattan"):
        raise _bad(loss, key, "'euclidean', 'cosine' or 'manhattan' (or 'TripletDistanceMetric.<NAME>')", v)
    return name


def _module_name(options: Sequence[str]):
    """A torch.nn module given by class name ('MSELoss', 'torch.nn.MSELoss', …) or as an instance."""
    def check(loss, key, v):
        if isinstance(v, str):
            name = v.rsplit(".", 1)[-1]
        else:
            name = type(v).__name__
            if getattr(v, "reduction", "mean") != "mean":
                raise _bad(loss, key, "a module with reduction='mean'", v)
        if name not in options:
            raise _bad(loss, key, f"one of {list(options)} (a torch.nn class name)", v)
        return name
    return check


_LOSS_FCTS = {"MSELoss": lambda d: jnp.mean(jnp.square(d)), "L1Loss": lambda d: jnp.mean(_abs(d))}
_SCORE_TRANSFORMS = {"Identity": lambda x: x, "ReLU": jax.nn.relu, "Sigmoid": jax.nn.sigmoid, "Tanh": jnp.tanh}

_PARAM_CHECKS: dict[str, dict[str, Callable]] = {
    MNRL: {"scale": _positive, "similarity_fct": _similarity(MATRIX_SIMILARITIES),
           "gather_across_devices": _flag, "directions": _directions,
           "partition_mode": _choice(("joint", "per_direction")),
           "hardness_mode": _choice((None, "in_batch_negatives", "hard_negatives", "all_negatives")),
           "hardness_strength": _non_negative},
    MARGIN_MSE: {"similarity_fct": _similarity(PAIRWISE_SIMILARITIES)},
    DISTILL_KL: {"similarity_fct": _similarity(PAIRWISE_SIMILARITIES), "temperature": _positive,
                 "student_temperature": _optional_positive, "teacher_temperature": _optional_positive},
    TRIPLET: {"distance_metric": _triplet_metric, "triplet_margin": _real},
    MSE: {},
    COSINE: {"loss_fct": _module_name(tuple(_LOSS_FCTS)),
             "cos_score_transformation": _module_name(tuple(_SCORE_TRANSFORMS))},
    COSENT: {"scale": _positive, "similarity_fct": _similarity(PAIRWISE_SIMILARITIES)},
    ANGLE: {"scale": _positive},
}


def resolve_loss_name(name: Any) -> str:
    """The sentence-transformers class name for ``name`` (a class name or a short alias)."""
    if isinstance(name, str):
        if name in _PARAM_CHECKS:
            return name
        if name in LOSS_ALIASES:
            return LOSS_ALIASES[name]
    known = ", ".join(list(_PARAM_CHECKS) + [f"{a!r} ({c})" for a, c in LOSS_ALIASES.items()])
    raise ValueError(f"unknown base loss {name!r}; known: {known}")


def _validate_params(loss: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every parameter of ``loss``: the reference default, overridden by ``params``, normalised."""
    checks = _PARAM_CHECKS[loss]
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{loss}: parameters must be a mapping of name -> value, got {type(params).__name__}")
    for key in params:
        if key not in checks:
            listed = ", ".join(checks) if checks else "none"
            raise ValueError(f"{loss}: unknown parameter {key!r}; its parameters are: {listed}")
    out = dict(_DEFAULTS[loss])
    out.update(params)
    out = {key: checks[key](loss, key, value) for key, value in out.items()}
    if loss == MNRL and out["partition_mode"] == "per_direction" and (
            {"query_to_query", "doc_to_doc"} & set(out["directions"])):
        raise ValueError(f"{loss}: parameter 'partition_mode' = 'per_direction' cannot be combined with the "
                         f"'query_to_query' or 'doc_to_doc' directions (got directions={out['directions']}); "
                         "their candidates never include the positive. Use partition_mode='joint'.")
    return out


_DEFAULTS: dict[str, dict[str, Any]] = {
    MNRL: {"scale": 1.0, "similarity_fct": "dot_score", "gather_across_devices": False,
           "directions": ("query_to_doc",), "partition_mode": "joint", "hardness_mode": None,
           "hardness_strength": 0.0},
    MARGIN_MSE: {"similarity_fct": "pairwise_dot_score"},
    DISTILL_KL: {"similarity_fct": "pairwise_dot_score", "temperature": 2.0, "student_temperature": None,
                 "teacher_temperature": None},
    TRIPLET: {"distance_metric": "euclidean", "triplet_margin": 5.0},
    MSE: {},
    COSINE: {"loss_fct": "MSELoss", "cos_score_transformation": "Identity"},
    COSENT: {"scale": 20.0, "similarity_fct": "pairwise_cos_sim"},
    ANGLE: {"scale": 20.0},
}


# ----------------------------------------------------------------------------- inputs
def _inputs(loss: str, embeddings, labels):
    """(columns in one float dtype, labels as an array or None, that dtype), after ``check``."""
    if isinstance(embeddings, (str, bytes)) or not hasattr(embeddings, "__len__"):
        raise TypeError(f"{loss}: embeddings must be a sequence of [B, V] arrays, got {type(embeddings).__name__}")
    cols = [_as_float(e, f"embeddings[{i}]") for i, e in enumerate(embeddings)]
    if not cols:
        raise ValueError(f"{loss}: no embedding columns given")
    for i, col in enumerate(cols):
        _check_2d(col, f"embeddings[{i}]")
        if col.shape != cols[0].shape:
            raise ValueError(f"{loss}: embeddings[{i}] has shape {list(col.shape)}, embeddings[0] has "
                             f"{list(cols[0].shape)} (every column needs the same rows and vocabulary)")
    dtype = functools.reduce(jnp.promote_types, [c.dtype for c in cols])
    cols = [c.astype(dtype) for c in cols]
    if labels is not None:
        labels = _real_array(labels, f"{loss}: labels")
    batch, vocab = cols[0].shape
    BASE_LOSSES[loss].check(len(cols), None if labels is None else tuple(labels.shape), batch, vocab)
    return cols, labels, dtype


def _float_labels(labels, dtype):
    return jax.lax.stop_gradient(_as_float(labels, "labels").astype(dtype))


# ----------------------------------------------------------------------------- the losses
def sparse_multiple_negatives_ranking_loss(
        embeddings, labels=None, *, scale: float = 1.0, similarity_fct: Any = "dot_score",
        gather_across_devices: bool = False, directions: Sequence[str] = ("query_to_doc",),
        partition_mode: str = "joint", hardness_mode: str | None = None,
        hardness_strength: float = 0.0) -> jnp.ndarray:
    """SparseMultipleNegativesRankingLoss: in-batch negatives cross-entropy. Columns ≥ 2, no labels.

    Candidates of query i: every document row (positives then each negative column: N = C·B); with
    ``directions`` also the other queries (query_to_query, self excluded), the queries seen from positive
    i (doc_to_query) and every document seen from positive i except those of example i (doc_to_doc).
    Logits = scale·sim (+ hardness_strength·stop_grad(sim) on the query_to_doc negatives chosen by
    ``hardness_mode``: 'in_batch_negatives' = other examples' documents, 'hard_negatives' = own negative
    columns, 'all_negatives' = both); target = positive i. 'joint': one softmax over all directions;
    'per_direction': the mean of each direction's log-partition. ``gather_across_devices`` is accepted
    and has no effect: jsplade always computes the loss on the global batch, which is what gathering
    achieves in sentence-transformers.
    """
    p = _validate_params(MNRL, dict(scale=scale, similarity_fct=similarity_fct,
                                    gather_across_devices=gather_across_devices, directions=directions,
                                    partition_mode=partition_mode, hardness_mode=hardness_mode,
                                    hardness_strength=hardness_strength))
    cols, _, dtype = _inputs(MNRL, embeddings, labels)
    sim = MATRIX_SIMILARITIES[p["similarity_fct"]]
    query, docs = cols[0], cols[1:]
    batch, n_docs = query.shape[0], len(docs)
    docs_all = jnp.concatenate(docs, axis=0) if n_docs > 1 else docs[0]
    neg_inf = jnp.asarray(-jnp.inf, dtype)
    own_BxN = jnp.tile(jnp.eye(batch, dtype=bool), (1, n_docs))  # documents of example i
    mats = {"query_to_doc": sim(query, docs_all)}
    if "query_to_query" in p["directions"]:
        mats["query_to_query"] = jnp.where(jnp.eye(batch, dtype=bool), neg_inf, sim(query, query))
    if "doc_to_query" in p["directions"]:
        mats["doc_to_query"] = sim(query, docs[0]).T
    if "doc_to_doc" in p["directions"]:
        mats["doc_to_doc"] = jnp.where(own_BxN, neg_inf, sim(docs_all, docs[0]).T)
    penalty = None
    if p["hardness_mode"] is not None and p["hardness_strength"] > 0.0:
        first_block = jnp.arange(n_docs * batch)[None, :] < batch
        if p["hardness_mode"] == "hard_negatives":
            keep = own_BxN & ~first_block
        elif p["hardness_mode"] == "in_batch_negatives":
            keep = ~own_BxN
        else:  # all_negatives
            keep = ~(own_BxN & first_block)
        raw = p["hardness_strength"] * jax.lax.stop_gradient(mats["query_to_doc"])
        penalty = jnp.where(keep, raw, jnp.zeros((), dtype))
    mats = {k: m * p["scale"] for k, m in mats.items()}
    if penalty is not None:
        mats["query_to_doc"] = mats["query_to_doc"] + penalty
    positive_B = jnp.diagonal(mats["query_to_doc"][:, :batch])
    if p["partition_mode"] == "joint":
        scores = jnp.concatenate(list(mats.values()), axis=1) if len(mats) > 1 else mats["query_to_doc"]
        log_z_B = jax.nn.logsumexp(scores, axis=1)
    else:
        log_z_B = sum(jax.nn.logsumexp(m, axis=1) for m in mats.values()) / len(mats)
    return jnp.mean(log_z_B - positive_B)


def sparse_margin_mse_loss(embeddings, labels, *, similarity_fct: Any = "pairwise_dot_score") -> jnp.ndarray:
    """SparseMarginMSELoss: mean over [B, K] of (sim(q, pos) − sim(q, neg_k) − margin_k)². Columns ≥ 3.

    Labels: teacher margins [B, K] (or [B] when K = 1), or teacher scores [B, 1+K] (positive first),
    turned into margins score_0 − score_k. A [B, 1+K] shape is read as scores before anything else.
    """
    p = _validate_params(MARGIN_MSE, dict(similarity_fct=similarity_fct))
    cols, labels, dtype = _inputs(MARGIN_MSE, embeddings, labels)
    sim = PAIRWISE_SIMILARITIES[p["similarity_fct"]]
    query, pos, negs = cols[0], cols[1], cols[2:]
    batch = query.shape[0]
    target = _float_labels(labels, dtype)
    if target.shape == (batch, len(negs) + 1):
        target = target[:, :1] - target[:, 1:]
    if target.shape == (batch,):
        target = target[:, None]
    score_pos = sim(query, pos)
    margins = jnp.stack([score_pos - sim(query, neg) for neg in negs], axis=1)
    return jnp.mean(jnp.square(margins - target))


def sparse_distill_kl_div_loss(embeddings, labels, *, similarity_fct: Any = "pairwise_dot_score",
                               temperature: float = 2.0, student_temperature: float | None = None,
                               teacher_temperature: float | None = None) -> jnp.ndarray:
    """SparseDistillKLDivLoss: T_s² · (1/B) Σ_i KL(softmax(t_i/T_t) ‖ softmax(s_i/T_s)). Columns ≥ 3.

    s_i = [sim(q_i, c_i) for every candidate column c]; labels = teacher scores t [B, C-1] (an entry
    −inf excludes that candidate). T_s / T_t default to ``temperature``.
    """
    p = _validate_params(DISTILL_KL, dict(similarity_fct=similarity_fct, temperature=temperature,
                                          student_temperature=student_temperature,
                                          teacher_temperature=teacher_temperature))
    cols, labels, dtype = _inputs(DISTILL_KL, embeddings, labels)
    t_s = p["temperature"] if p["student_temperature"] is None else p["student_temperature"]
    t_t = p["temperature"] if p["teacher_temperature"] is None else p["teacher_temperature"]
    sim = PAIRWISE_SIMILARITIES[p["similarity_fct"]]
    query = cols[0]
    student = jnp.stack([sim(query, c) for c in cols[1:]], axis=1) / t_s
    student_log_p = jax.nn.log_softmax(student, axis=1)
    teacher_p = jax.nn.softmax(_float_labels(labels, dtype) / t_t, axis=1)
    kl = jnp.sum(jax.scipy.special.xlogy(teacher_p, teacher_p) - teacher_p * student_log_p) / query.shape[0]
    return kl * (t_s ** 2)


def sparse_triplet_loss(embeddings, labels=None, *, distance_metric: str = "euclidean",
                        triplet_margin: float = 5.0) -> jnp.ndarray:
    """SparseTripletLoss: mean of relu(d(a, p) − d(a, n) + margin). Exactly 3 columns, no labels.

    d: 'euclidean' ‖a − b‖₂ (default), 'manhattan' ‖a − b‖₁, 'cosine' 1 − cos(a, b).
    """
    p = _validate_params(TRIPLET, dict(distance_metric=distance_metric, triplet_margin=triplet_margin))
    cols, _, _ = _inputs(TRIPLET, embeddings, labels)
    if p["distance_metric"] == "euclidean":
        dist = lambda a, b: -_pairwise_euclidean_sim(a, b)  # noqa: E731
    elif p["distance_metric"] == "manhattan":
        dist = lambda a, b: -_pairwise_manhattan_sim(a, b)  # noqa: E731
    else:
        dist = lambda a, b: 1.0 - _pairwise_cos_sim(a, b)  # noqa: E731
    anchor, pos, neg = cols
    return jnp.mean(jax.nn.relu(dist(anchor, pos) - dist(anchor, neg) + p["triplet_margin"]))


def sparse_mse_loss(embeddings, labels) -> jnp.ndarray:
    """SparseMSELoss: (1/C) Σ_c mean((E_c − T_c)²). Columns ≥ 1.

    Labels = teacher embeddings: [B, V] (the same target for every column) or [B, C, V] (one per
    column), as sentence-transformers' MSELoss.forward hands them to its distance.
    """
    cols, labels, dtype = _inputs(MSE, embeddings, labels)
    target = _float_labels(labels, dtype)
    per_col = [jnp.mean(jnp.square(c - (target if target.ndim == 2 else target[:, i])))
               for i, c in enumerate(cols)]
    return sum(per_col) / len(per_col)


def sparse_cosine_similarity_loss(embeddings, labels, *, loss_fct: Any = "MSELoss",
                                  cos_score_transformation: Any = "Identity") -> jnp.ndarray:
    """SparseCosineSimilarityLoss: loss_fct(transform(cos(e0, e1)), label). Columns ≥ 2 (0 and 1 used).

    cos as torch.cosine_similarity (norms clamped at 1e-8); labels: B values in any shape, taken as
    float32 (as the reference's ``labels.float()``). loss_fct 'MSELoss' (default) or 'L1Loss';
    cos_score_transformation 'Identity' (default), 'ReLU', 'Sigmoid' or 'Tanh'.
    """
    p = _validate_params(COSINE, dict(loss_fct=loss_fct, cos_score_transformation=cos_score_transformation))
    cols, labels, dtype = _inputs(COSINE, embeddings, labels)
    a, b = cols[0], cols[1]
    eps = jnp.asarray(1e-8, dtype)
    cos = jnp.sum((a / jnp.maximum(_norm(a, keepdims=True), eps)) * (b / jnp.maximum(_norm(b, keepdims=True), eps)),
                  axis=1)
    target = jnp.asarray(labels).astype(jnp.float32).reshape(-1).astype(dtype)
    return _LOSS_FCTS[p["loss_fct"]](_SCORE_TRANSFORMS[p["cos_score_transformation"]](cos) - target)


def _cosent(cols, labels, scale, sim):
    scores = sim(cols[0], cols[1]) * scale
    lab = jnp.asarray(labels).reshape(-1)
    if lab.dtype == jnp.bool_:
        lab = lab.astype(jnp.int32)
    higher = lab[None, :] > lab[:, None]  # [i, j]: label_j > label_i
    pair = jnp.where(higher, scores[:, None] - scores[None, :], jnp.asarray(-jnp.inf, scores.dtype))
    return jax.nn.logsumexp(jnp.concatenate([jnp.zeros((1,), scores.dtype), pair.reshape(-1)]))


def sparse_cosent_loss(embeddings, labels, *, scale: float = 20.0,
                       similarity_fct: Any = "pairwise_cos_sim") -> jnp.ndarray:
    """SparseCoSENTLoss: log(1 + Σ_{label_i < label_j} exp(scale·(s_i − s_j))), s = sim(e0, e1).

    Columns ≥ 2 (0 and 1 used); labels: B values in any shape (bool labels count as 0/1).
    """
    p = _validate_params(COSENT, dict(scale=scale, similarity_fct=similarity_fct))
    cols, labels, _ = _inputs(COSENT, embeddings, labels)
    return _cosent(cols, labels, p["scale"], PAIRWISE_SIMILARITIES[p["similarity_fct"]])


def sparse_angle_loss(embeddings, labels, *, scale: float = 20.0) -> jnp.ndarray:
    """SparseAnglELoss: the CoSENT form with s = pairwise_angle_sim(e0, e1). Columns ≥ 2 (0 and 1 used)."""
    p = _validate_params(ANGLE, dict(scale=scale))
    cols, labels, _ = _inputs(ANGLE, embeddings, labels)
    return _cosent(cols, labels, p["scale"], _pairwise_angle_sim)


# ----------------------------------------------------------------------------- registry
def _labels_none(spec, n, shape, batch, vocab):
    return None


def _labels_margin(spec, n, shape, batch, vocab):
    k = n - 2
    ok = {(batch, k), (batch, k + 1)} | ({(batch,)} if k == 1 else set())
    if shape not in ok:
        extra = f", or [{batch}] since K = 1" if k == 1 else ""
        return (f"labels of shape [B, K] = [{batch}, {k}] (teacher margins{extra}) or [B, 1+K] = "
                f"[{batch}, {k + 1}] (teacher scores, positive first) for {n} columns (K = {k} negatives)")
    return None


def _labels_distill(spec, n, shape, batch, vocab):
    if shape != (batch, n - 1):
        return f"teacher scores of shape [B, C] = [{batch}, {n - 1}] for the {n - 1} candidate columns"
    return None


def _labels_mse(spec, n, shape, batch, vocab):
    if shape not in ((batch, vocab), (batch, n, vocab)):
        return (f"teacher embeddings of shape [B, V] = [{batch}, {vocab}] or [B, C, V] = "
                f"[{batch}, {n}, {vocab}] (one per column)")
    return None


def _labels_per_pair(spec, n, shape, batch, vocab):
    if math.prod(shape) != batch:
        return f"one float label per example: {batch} values (shape [{batch}] or [{batch}, 1])"
    return None


_LABEL_CHECKS = {MNRL: _labels_none, MARGIN_MSE: _labels_margin, DISTILL_KL: _labels_distill,
                 TRIPLET: _labels_none, MSE: _labels_mse, COSINE: _labels_per_pair,
                 COSENT: _labels_per_pair, ANGLE: _labels_per_pair}


@dataclass(frozen=True)
class LossSpec:
    """One base loss: ``fn(embeddings, labels, **params)``, its parameter defaults and input needs."""

    name: str
    fn: Callable[..., jnp.ndarray]
    defaults: Mapping[str, Any]
    needs_labels: bool
    min_columns: int
    max_columns: int | None

    def check(self, n_columns: int, label_shape: tuple[int, ...] | None, batch: int, vocab: int) -> None:
        """ValueError naming this loss and what it needs, for inputs it cannot take (static shapes)."""
        if batch < 1 or vocab < 1:
            raise ValueError(f"{self.name}: embeddings of shape [{batch}, {vocab}] are empty")
        if n_columns < self.min_columns or (self.max_columns is not None and n_columns > self.max_columns):
            if self.max_columns == self.min_columns:
                need = f"exactly {self.min_columns}"
            elif self.max_columns is None:
                need = f"at least {self.min_columns}"
            else:
                need = f"{self.min_columns} to {self.max_columns}"
            raise ValueError(f"{self.name} needs {need} embedding columns ({_COLUMN_ROLES[self.name]}), "
                             f"got {n_columns}")
        if label_shape is None:
            if self.needs_labels:
                need = _LABEL_CHECKS[self.name](self, n_columns, (), batch, vocab)
                raise ValueError(f"{self.name} needs labels: {need}; got none")
            return
        label_shape = tuple(int(d) for d in label_shape)
        if not self.needs_labels:
            raise ValueError(f"{self.name} takes no labels, got labels of shape {list(label_shape)} "
                             "(drop the label column)")
        need = _LABEL_CHECKS[self.name](self, n_columns, label_shape, batch, vocab)
        if need is not None:
            raise ValueError(f"{self.name} needs {need}; got labels of shape {list(label_shape)}")


_COLUMN_ROLES = {
    MNRL: "anchor, positive, then optional negatives",
    MARGIN_MSE: "query, positive, then one or more negatives",
    DISTILL_KL: "query, then two or more candidates",
    TRIPLET: "anchor, positive, negative",
    MSE: "one or more texts, each distilled towards the teacher embedding",
    COSINE: "a pair of texts; further columns are not used by this loss",
    COSENT: "a pair of texts; further columns are not used by this loss",
    ANGLE: "a pair of texts; further columns are not used by this loss",
}

BASE_LOSSES: dict[str, LossSpec] = {
    name: LossSpec(name, fn, MappingProxyType(dict(_DEFAULTS[name])), needs, lo, hi)
    for name, fn, needs, lo, hi in [
        (MNRL, sparse_multiple_negatives_ranking_loss, False, 2, None),
        (MARGIN_MSE, sparse_margin_mse_loss, True, 3, None),
        (DISTILL_KL, sparse_distill_kl_div_loss, True, 3, None),
        (TRIPLET, sparse_triplet_loss, False, 3, 3),
        (MSE, sparse_mse_loss, True, 1, None),
        (COSINE, sparse_cosine_similarity_loss, True, 2, None),
        (COSENT, sparse_cosent_loss, True, 2, None),
        (ANGLE, sparse_angle_loss, True, 2, None),
    ]
}


def base_loss(name: str, params: Mapping[str, Any] | None = None
              ) -> Callable[[Sequence[jnp.ndarray], Any], jnp.ndarray]:
    """``loss(embeddings, labels=None) -> scalar`` for a class name or alias, parameters validated now."""
    key = resolve_loss_name(name)
    full = _validate_params(key, params)
    fn = BASE_LOSSES[key].fn

    def loss(embeddings: Sequence[jnp.ndarray], labels: Any = None) -> jnp.ndarray:
        return fn(embeddings, labels, **full)

    loss.__name__ = key
    loss.__qualname__ = key
    return loss
