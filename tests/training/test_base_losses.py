"""Base losses of SpladeLoss (jsplade.training.losses.BASE_LOSSES) against the installed sentence-transformers.

Reference: each sparse loss's ``compute_loss_from_embeddings`` (and ``SpladeLoss.forward``) in torch float64,
on the same float32-representable embeddings. Tolerances: float64 JAX values 1e-10 relative and gradients
1e-10 relative to the largest reference gradient entry; float32 JAX values 1e-5 relative and gradients 1e-5
relative to the largest entry. The constructors only store the model (the cosine-based ones also set its
``similarity_fn_name``) and SpladeLoss.forward only calls it on each column's features, so a small stand-in
that returns ``features["emb"]`` is enough.
"""

from __future__ import annotations

import inspect
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from sentence_transformers import util
from sentence_transformers.sentence_transformer.losses.triplet import TripletDistanceMetric
from sentence_transformers.sparse_encoder import losses as st_losses

from jsplade.training.losses import (BASE_LOSSES, LOSS_ALIASES, LossSpec, base_loss, splade_loss)

B, V = 6, 40


def x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64  # pragma: no cover - older jax

    return enable_x64()


class StandIn:
    """What the reference constructors and SpladeLoss.forward touch of a SparseEncoder."""

    similarity_fn_name = None

    def __call__(self, features):
        return {"sentence_embedding": features["emb"]}


def st_loss(name, params):
    kw = {}
    for key, value in params.items():
        if key == "similarity_fct":
            value = getattr(util, value)
        elif key == "distance_metric":
            value = getattr(TripletDistanceMetric, value.upper())
        elif key in ("loss_fct", "cos_score_transformation"):
            value = getattr(torch.nn, value)()
        kw[key] = value
    return getattr(st_losses, name)(StandIn(), **kw)


# ----------------------------------------------------------------------------- inputs
def columns(rng, n, b=B, v=V, density=0.35):
    """Non-negative, mostly-zero rows (every row has at least one non-zero), float32-representable."""
    out = []
    for _ in range(n):
        vals = rng.uniform(0.05, 2.0, (b, v)) * (rng.random((b, v)) < density)
        vals[np.arange(b), rng.integers(0, v, b)] = rng.uniform(0.5, 2.0, b)
        out.append(vals.astype(np.float32))
    return out


def make_labels(rng, kind, n, b=B, v=V):
    if kind is None:
        return None
    if kind == "margin_B":
        return rng.normal(0, 3, b).astype(np.float32)
    if kind == "margin_BK":
        return rng.normal(0, 3, (b, n - 2)).astype(np.float32)
    if kind == "scores_B1K":
        return rng.normal(0, 3, (b, n - 1)).astype(np.float32)
    if kind == "teacher":
        return rng.normal(0, 3, (b, n - 1)).astype(np.float32)
    if kind == "teacher_inf":
        t = rng.normal(0, 3, (b, n - 1)).astype(np.float32)
        t[1, -1] = -np.inf
        return t
    if kind == "emb_BV":
        return columns(rng, 1, b, v)[0]
    if kind == "emb_BCV":
        return np.stack(columns(rng, n, b, v), axis=1)
    if kind == "float_B":
        return rng.uniform(0, 1, b).astype(np.float32)
    if kind == "float_B1":
        return rng.uniform(0, 1, (b, 1)).astype(np.float32)
    if kind == "ties_B":
        return rng.choice(np.array([0.0, 0.25, 0.5, 1.0], np.float32), b)
    if kind == "int_B":
        return rng.integers(0, 4, b)
    if kind == "bool_B":
        return np.array([True, False, True, True, False, False])[:b]
    raise AssertionError(kind)


CASES = [
    # name, params, n_columns, label kind
    ("SparseMultipleNegativesRankingLoss", {}, 2, None),
    ("SparseMultipleNegativesRankingLoss", {}, 5, None),
    ("SparseMultipleNegativesRankingLoss", {"scale": 20.0, "similarity_fct": "cos_sim"}, 3, None),
    ("SparseMultipleNegativesRankingLoss", {"similarity_fct": "euclidean_sim"}, 3, None),
    ("SparseMultipleNegativesRankingLoss", {"similarity_fct": "manhattan_sim", "scale": 0.2}, 3, None),
    ("SparseMultipleNegativesRankingLoss",
     {"directions": ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")}, 3, None),
    ("SparseMultipleNegativesRankingLoss", {"directions": ("query_to_doc", "query_to_query")}, 2, None),
    ("SparseMultipleNegativesRankingLoss", {"directions": ("query_to_doc", "doc_to_doc"), "scale": 2.0}, 4, None),
    ("SparseMultipleNegativesRankingLoss",
     {"directions": ("query_to_doc", "doc_to_query"), "partition_mode": "per_direction"}, 3, None),
    ("SparseMultipleNegativesRankingLoss", {"hardness_mode": "in_batch_negatives", "hardness_strength": 0.7}, 4, None),
    ("SparseMultipleNegativesRankingLoss", {"hardness_mode": "hard_negatives", "hardness_strength": 0.7}, 4, None),
    ("SparseMultipleNegativesRankingLoss",
     {"hardness_mode": "all_negatives", "hardness_strength": 0.4, "similarity_fct": "cos_sim", "scale": 20.0,
      "directions": ("query_to_doc", "doc_to_query")}, 4, None),
    ("SparseMarginMSELoss", {}, 3, "margin_B"),
    ("SparseMarginMSELoss", {}, 3, "margin_BK"),
    ("SparseMarginMSELoss", {}, 3, "scores_B1K"),
    ("SparseMarginMSELoss", {}, 5, "scores_B1K"),
    ("SparseMarginMSELoss", {"similarity_fct": "pairwise_cos_sim"}, 4, "margin_BK"),
    ("SparseMarginMSELoss", {"similarity_fct": "pairwise_euclidean_sim"}, 4, "scores_B1K"),
    ("SparseMarginMSELoss", {"similarity_fct": "pairwise_manhattan_sim"}, 4, "margin_BK"),
    ("SparseMarginMSELoss", {"similarity_fct": "pairwise_angle_sim"}, 3, "margin_B"),
    ("SparseDistillKLDivLoss", {}, 3, "teacher"),
    ("SparseDistillKLDivLoss", {}, 5, "teacher"),
    ("SparseDistillKLDivLoss", {}, 4, "teacher_inf"),
    ("SparseDistillKLDivLoss", {"temperature": 1.0}, 4, "teacher"),
    ("SparseDistillKLDivLoss", {"student_temperature": 0.5, "teacher_temperature": 3.0}, 4, "teacher"),
    ("SparseDistillKLDivLoss", {"temperature": 4.0, "student_temperature": 1.5}, 3, "teacher"),
    ("SparseDistillKLDivLoss", {"similarity_fct": "pairwise_cos_sim", "teacher_temperature": 0.1}, 4, "teacher"),
    ("SparseTripletLoss", {}, 3, None),
    ("SparseTripletLoss", {"triplet_margin": 0.5}, 3, None),
    ("SparseTripletLoss", {"distance_metric": "manhattan", "triplet_margin": 2.0}, 3, None),
    ("SparseTripletLoss", {"distance_metric": "cosine", "triplet_margin": 0.1}, 3, None),
    ("SparseTripletLoss", {"distance_metric": "cosine"}, 3, None),
    ("SparseMSELoss", {}, 1, "emb_BV"),
    ("SparseMSELoss", {}, 2, "emb_BV"),
    ("SparseMSELoss", {}, 3, "emb_BV"),
    ("SparseMSELoss", {}, 3, "emb_BCV"),
    ("SparseCosineSimilarityLoss", {}, 2, "float_B"),
    ("SparseCosineSimilarityLoss", {}, 2, "float_B1"),
    ("SparseCosineSimilarityLoss", {}, 3, "float_B"),
    ("SparseCosineSimilarityLoss", {"loss_fct": "L1Loss"}, 2, "float_B"),
    ("SparseCosineSimilarityLoss", {"cos_score_transformation": "Tanh"}, 2, "float_B"),
    ("SparseCosineSimilarityLoss", {"cos_score_transformation": "Sigmoid", "loss_fct": "L1Loss"}, 2, "float_B"),
    ("SparseCoSENTLoss", {}, 2, "float_B"),
    ("SparseCoSENTLoss", {}, 2, "ties_B"),
    ("SparseCoSENTLoss", {}, 2, "int_B"),
    ("SparseCoSENTLoss", {}, 2, "bool_B"),
    ("SparseCoSENTLoss", {}, 3, "float_B1"),
    ("SparseCoSENTLoss", {"scale": 5.0, "similarity_fct": "pairwise_dot_score"}, 2, "ties_B"),
    ("SparseCoSENTLoss", {"similarity_fct": "pairwise_angle_sim"}, 2, "float_B"),
    ("SparseCoSENTLoss", {"similarity_fct": "pairwise_euclidean_sim", "scale": 1.0}, 2, "float_B"),
    ("SparseCoSENTLoss", {"similarity_fct": "pairwise_manhattan_sim", "scale": 0.5}, 2, "ties_B"),
    ("SparseAnglELoss", {}, 2, "float_B"),
    ("SparseAnglELoss", {}, 2, "ties_B"),
    ("SparseAnglELoss", {"scale": 7.0}, 2, "bool_B"),
    ("SparseAnglELoss", {}, 3, "float_B"),
]


def case_id(case):
    name, params, n, kind = case
    extra = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{name.replace('Sparse', '').replace('Loss', '')}-{n}cols-{kind}-{extra}"


def reference(name, params, cols_np, labels_np):
    """Torch float64 value and gradient of each column (zeros for columns the loss does not use)."""
    cols = [torch.tensor(c, dtype=torch.float64, requires_grad=True) for c in cols_np]
    labels = None
    if labels_np is not None:
        labels = torch.tensor(labels_np, dtype=torch.float64) if labels_np.dtype == np.float32 else \
            torch.tensor(labels_np)
    if name == "SparseMSELoss":  # the per-column teacher list MSELoss.forward builds
        labels = [labels] * len(cols) if labels.dim() == 2 else list(labels.unbind(1))
    value = st_loss(name, params).compute_loss_from_embeddings(cols, labels)
    grads = torch.autograd.grad(value, cols, allow_unused=True)
    grads = [np.zeros_like(c) if g is None else g.numpy() for g, c in zip(grads, cols_np)]
    return float(value.detach()), grads


def ours(name, params, cols_np, labels_np, dtype):
    fn = base_loss(name, params)
    cols = [jnp.asarray(c, dtype) for c in cols_np]
    labels = None
    if labels_np is not None:
        labels = jnp.asarray(labels_np, dtype) if labels_np.dtype == np.float32 else jnp.asarray(labels_np)
    value, grads = jax.jit(jax.value_and_grad(fn))(cols, labels)  # jit: also checks the loss traces
    assert value.dtype == dtype
    return float(value), [np.asarray(g, np.float64) for g in grads]


def assert_close(got, want, tol):
    value, grads = got
    ref_value, ref_grads = want
    assert math.isfinite(ref_value)
    assert abs(value - ref_value) <= tol * max(abs(ref_value), 1e-30), (value, ref_value)
    scale = max(np.abs(g).max() for g in ref_grads)
    assert scale > 0
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        err = np.abs(g - r).max()
        assert err <= tol * scale, (i, err, scale)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_matches_sentence_transformers(case):
    name, params, n, kind = case
    rng = np.random.default_rng(zlib.crc32(case_id(case).encode()))
    cols = columns(rng, n)
    labels = make_labels(rng, kind, n)
    want = reference(name, params, cols, labels)
    with x64():
        assert_close(ours(name, params, cols, labels, jnp.float64), want, 1e-10)
    assert_close(ours(name, params, cols, labels, jnp.float32), want, 1e-5)


def test_angle_odd_vocabulary_is_padded_like_the_reference():
    rng = np.random.default_rng(3)
    cols = columns(rng, 2, v=41)
    labels = make_labels(rng, "float_B", 2)
    for name, params in [("SparseAnglELoss", {}), ("SparseMarginMSELoss", {"similarity_fct": "pairwise_angle_sim"})]:
        lab = labels if name == "SparseAnglELoss" else labels * 0
        if name == "SparseMarginMSELoss":
            cols3 = cols + columns(rng, 1, v=41)
            want = reference(name, params, cols3, lab)
            with x64():
                assert_close(ours(name, params, cols3, lab, jnp.float64), want, 1e-10)
        else:
            want = reference(name, params, cols, lab)
            with x64():
                assert_close(ours(name, params, cols, lab, jnp.float64), want, 1e-10)


def test_aliases_and_defaults():
    rng = np.random.default_rng(4)
    cols = columns(rng, 3)
    for alias, name in LOSS_ALIASES.items():
        assert name in BASE_LOSSES
        assert base_loss(alias).__name__ == name
    margins = make_labels(rng, "margin_B", 3)
    assert float(base_loss("margin_mse")(cols, margins)) == float(base_loss("SparseMarginMSELoss")(cols, margins))
    # gather_across_devices is accepted and changes nothing (the loss always sees the global batch).
    assert float(base_loss("mnrl", {"gather_across_devices": True})(cols)) == float(base_loss("mnrl")(cols))
    # Non-default parameters change the value (so they reach the computation).
    assert abs(float(base_loss("triplet", {"triplet_margin": 0.5})(cols))
               - float(base_loss("triplet")(cols))) > 1e-3


def _as_reference_default(key, value):
    if key == "similarity_fct":
        return getattr(util, value)
    if key == "distance_metric":
        return getattr(TripletDistanceMetric, value.upper())
    return value


@pytest.mark.parametrize("name", sorted(BASE_LOSSES))
def test_parameters_and_defaults_are_the_references(name):
    spec = BASE_LOSSES[name]
    assert isinstance(spec, LossSpec) and spec.name == name
    sig = inspect.signature(getattr(st_losses, name).__init__).parameters
    ref = {k: p.default for k, p in sig.items() if k not in ("self", "model")}
    assert set(spec.defaults) == set(ref)
    for key, value in spec.defaults.items():
        if key in ("loss_fct", "cos_score_transformation"):
            assert type(ref[key]).__name__ == value
        else:
            assert _as_reference_default(key, value) == ref[key], key


# ----------------------------------------------------------------------------- SpladeLoss
def st_splade(base, base_params, cols_np, labels, lam_d, lam_q, doc_only, thr_d=None, thr_q=None):
    cols = [torch.tensor(c, dtype=torch.float64, requires_grad=True) for c in cols_np]
    loss = st_losses.SpladeLoss(StandIn(), st_loss(base, base_params), document_regularizer_weight=lam_d,
                                query_regularizer_weight=lam_q, document_regularizer_threshold=thr_d,
                                query_regularizer_threshold=thr_q, use_document_regularizer_only=doc_only)
    if labels is not None:
        labels = torch.tensor(labels, dtype=torch.float64)
        if base == "SparseMSELoss":
            labels = [labels] * len(cols)
    out = loss([{"emb": c} for c in cols], labels)
    total = sum(out.values())
    grads = [g.numpy() for g in torch.autograd.grad(total, cols)]
    return {k: float(v.detach()) for k, v in out.items()}, float(total.detach()), grads


SPLADE_CASES = [
    ("SparseMultipleNegativesRankingLoss", {}, 2, None, True, 5e-2, None, None),
    ("SparseMultipleNegativesRankingLoss", {"scale": 3.0}, 3, None, True, 5e-2, 1e-2, 12),  # λ_q ignored
    ("SparseMultipleNegativesRankingLoss", {"scale": 3.0}, 3, None, False, 5e-2, 8e-2, 12),
    ("SparseMSELoss", {}, 1, "emb_BV", True, 5e-2, None, None),
    ("SparseMSELoss", {}, 2, "emb_BV", True, 5e-2, None, 10),
    ("SparseMarginMSELoss", {}, 4, "scores_B1K", False, 5e-2, 8e-2, None),
    ("SparseDistillKLDivLoss", {}, 4, "teacher", True, 5e-2, None, None),
    ("SparseCoSENTLoss", {}, 2, "float_B", True, 5e-2, None, None),
    ("SparseCoSENTLoss", {}, 2, "float_B", False, 5e-2, None, None),
    ("SparseTripletLoss", {"triplet_margin": 1.0}, 3, None, True, 5e-2, None, 11),
]


@pytest.mark.parametrize("case", SPLADE_CASES, ids=[f"{c[0]}-{c[2]}cols-doconly={c[4]}" for c in SPLADE_CASES])
def test_splade_loss_matches_sentence_transformers(case):
    base, params, n, kind, doc_only, lam_d, lam_q, thr = case
    rng = np.random.default_rng(10 + SPLADE_CASES.index(case))
    cols = columns(rng, n)
    labels = make_labels(rng, kind, n)
    ref_terms, ref_total, ref_grads = st_splade(base, params, cols, labels, lam_d, lam_q, doc_only, thr, thr)
    params = dict(params)
    scale = params.pop("scale", 1.0)  # the MNRL scale goes through splade_loss's own argument
    with x64():
        def total(cs):
            out = splade_loss(cs[0], cs[1:], lam_d, lam_q, scale=scale, doc_threshold=thr, query_threshold=thr,
                              base=base, base_params=params, labels=labels,
                              use_document_regularizer_only=doc_only)
            return out["total"], out

        (value, terms), grads = jax.jit(jax.value_and_grad(total, has_aux=True))(
            [jnp.asarray(c, jnp.float64) for c in cols])
    assert abs(float(terms["base_loss"]) - ref_terms["base_loss"]) <= 1e-10 * abs(ref_terms["base_loss"])
    assert abs(float(terms["document_regularizer_loss"]) - ref_terms["document_regularizer_loss"]) <= \
        1e-10 * ref_terms["document_regularizer_loss"]
    if "query_regularizer_loss" in ref_terms:
        assert not doc_only
        assert abs(float(terms["query_regularizer_loss"]) - ref_terms["query_regularizer_loss"]) <= \
            1e-10 * ref_terms["query_regularizer_loss"]
    else:
        assert float(terms["query_regularizer_loss"]) == 0.0
    assert abs(float(value) - ref_total) <= 1e-10 * abs(ref_total)
    scale_g = max(np.abs(g).max() for g in ref_grads)
    for g, r in zip(grads, ref_grads):
        assert np.abs(np.asarray(g) - r).max() <= 1e-10 * scale_g


def test_splade_loss_document_only_regularizes_every_column():
    rng = np.random.default_rng(20)
    cols = columns(rng, 3)
    with_q = splade_loss(cols[0], cols[1:], 0.1, 0.2)
    doc_only = splade_loss(cols[0], cols[1:], 0.1, 0.2, use_document_regularizer_only=True)
    assert float(doc_only["base_loss"]) == float(with_q["base_loss"])
    allrows = np.concatenate(cols).astype(np.float64)
    assert abs(float(doc_only["document_regularizer_loss"]) - 0.1 * float(((allrows.mean(0)) ** 2).sum())) <= \
        1e-6 * float(doc_only["document_regularizer_loss"])
    assert float(doc_only["query_regularizer_loss"]) == 0.0
    assert float(with_q["query_regularizer_loss"]) > 0.0


def test_splade_loss_scale_reaches_only_mnrl():
    rng = np.random.default_rng(21)
    cols = columns(rng, 2)
    labels = make_labels(rng, "float_B", 2)
    a = splade_loss(cols[0], cols[1:], 0.1, None, scale=5.0)["base_loss"]
    b = splade_loss(cols[0], cols[1:], 0.1, None, base_params={"scale": 5.0})["base_loss"]
    assert float(a) == float(b)
    assert abs(float(a) - float(splade_loss(cols[0], cols[1:], 0.1, None)["base_loss"])) > 1e-3
    c1 = splade_loss(cols[0], cols[1:], 0.1, None, scale=5.0, base="cosent", labels=labels)["base_loss"]
    c2 = splade_loss(cols[0], cols[1:], 0.1, None, base="cosent", labels=labels)["base_loss"]
    assert float(c1) == float(c2)
    with pytest.raises(ValueError, match="scale"):
        splade_loss(cols[0], cols[1:], 0.1, None, scale=5.0, base_params={"scale": 2.0})


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name,n,shape,match", [
    ("SparseMarginMSELoss", 3, None, r"SparseMarginMSELoss needs labels"),
    ("SparseMarginMSELoss", 3, (B, 5), r"SparseMarginMSELoss needs labels of shape \[B, K\] = \[6, 1\]"),
    ("SparseMarginMSELoss", 4, (B,), r"SparseMarginMSELoss needs labels .*\[6, 2\].*\[6, 3\]"),
    ("SparseMarginMSELoss", 2, (B,), r"SparseMarginMSELoss needs at least 3 embedding columns"),
    ("SparseMultipleNegativesRankingLoss", 3, (B,), r"SparseMultipleNegativesRankingLoss takes no labels"),
    ("SparseMultipleNegativesRankingLoss", 1, None, r"SparseMultipleNegativesRankingLoss needs at least 2"),
    ("SparseTripletLoss", 3, (B,), r"SparseTripletLoss takes no labels"),
    ("SparseTripletLoss", 4, None, r"SparseTripletLoss needs exactly 3 embedding columns"),
    ("SparseDistillKLDivLoss", 2, (B, 1), r"SparseDistillKLDivLoss needs at least 3"),
    ("SparseDistillKLDivLoss", 4, (B, 4), r"SparseDistillKLDivLoss needs teacher scores of shape \[B, C\] = \[6, 3\]"),
    ("SparseDistillKLDivLoss", 4, None, r"SparseDistillKLDivLoss needs labels"),
    ("SparseMSELoss", 2, (B, V + 1), r"SparseMSELoss needs teacher embeddings of shape \[B, V\] = \[6, 40\]"),
    ("SparseMSELoss", 2, (B, 3, V), r"SparseMSELoss needs .*\[6, 2, 40\]"),
    ("SparseMSELoss", 2, None, r"SparseMSELoss needs labels"),
    ("SparseCoSENTLoss", 2, (B + 1,), r"SparseCoSENTLoss needs one float label per example: 6"),
    ("SparseAnglELoss", 2, None, r"SparseAnglELoss needs labels"),
    ("SparseCosineSimilarityLoss", 2, (B, 2), r"SparseCosineSimilarityLoss needs one float label"),
    ("SparseCosineSimilarityLoss", 1, (B,), r"SparseCosineSimilarityLoss needs at least 2"),
])
def test_check_errors(name, n, shape, match):
    with pytest.raises(ValueError, match=match):
        BASE_LOSSES[name].check(n, shape, B, V)
    # The loss functions run the same check on the arrays they get.
    rng = np.random.default_rng(6)
    labels = None if shape is None else rng.random(shape).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        base_loss(name)(columns(rng, n), labels)


def test_check_accepts_what_the_reference_accepts():
    for name, n, shape in [("SparseMarginMSELoss", 3, (B,)), ("SparseMarginMSELoss", 3, (B, 1)),
                           ("SparseMarginMSELoss", 3, (B, 2)), ("SparseMarginMSELoss", 5, (B, 3)),
                           ("SparseMarginMSELoss", 5, (B, 4)), ("SparseMSELoss", 3, (B, 3, V)),
                           ("SparseCoSENTLoss", 2, (1, B)), ("SparseTripletLoss", 3, None),
                           ("SparseMultipleNegativesRankingLoss", 7, None)]:
        BASE_LOSSES[name].check(n, shape, B, V)


def test_mismatched_column_shapes_are_refused():
    rng = np.random.default_rng(7)
    cols = columns(rng, 2) + columns(rng, 1, b=B - 1)
    with pytest.raises(ValueError, match=r"SparseMultipleNegativesRankingLoss: embeddings\[2\] has shape"):
        base_loss("mnrl")(cols)


@pytest.mark.parametrize("name,params,match", [
    ("SparseMultipleNegativesRankingLoss", {"scael": 2.0}, r"unknown parameter 'scael'.*scale, similarity_fct"),
    ("SparseMSELoss", {"projection_dim": 8}, r"SparseMSELoss: unknown parameter 'projection_dim'.*none"),
    ("SparseMultipleNegativesRankingLoss", {"scale": 0.0}, r"parameter 'scale' must be a finite number > 0"),
    ("SparseMultipleNegativesRankingLoss", {"scale": "20"}, r"parameter 'scale' must be a real number"),
    ("SparseMultipleNegativesRankingLoss", {"scale": True}, r"parameter 'scale'"),
    ("SparseMultipleNegativesRankingLoss", {"similarity_fct": "pairwise_dot_score"}, r"'similarity_fct' must be one"),
    ("SparseMultipleNegativesRankingLoss", {"gather_across_devices": "yes"}, r"'gather_across_devices'"),
    ("SparseMultipleNegativesRankingLoss", {"directions": ("query_to_query",)}, r"'directions'"),
    ("SparseMultipleNegativesRankingLoss", {"directions": "query_to_doc"}, r"'directions'"),
    ("SparseMultipleNegativesRankingLoss", {"directions": ("query_to_doc", "doc_to_qry")}, r"'directions'"),
    ("SparseMultipleNegativesRankingLoss", {"partition_mode": "split"}, r"'partition_mode'"),
    ("SparseMultipleNegativesRankingLoss", {"partition_mode": "per_direction",
                                            "directions": ("query_to_doc", "doc_to_doc")}, r"'partition_mode'"),
    ("SparseMultipleNegativesRankingLoss", {"hardness_mode": "hardest"}, r"'hardness_mode'"),
    ("SparseMultipleNegativesRankingLoss", {"hardness_strength": -1.0}, r"'hardness_strength'.*>= 0"),
    ("SparseMarginMSELoss", {"similarity_fct": "dot_score"}, r"SparseMarginMSELoss: parameter 'similarity_fct'"),
    ("SparseDistillKLDivLoss", {"temperature": 0}, r"parameter 'temperature'"),
    ("SparseDistillKLDivLoss", {"temperature": float("inf")}, r"parameter 'temperature'"),
    ("SparseDistillKLDivLoss", {"student_temperature": -1.0}, r"parameter 'student_temperature'"),
    ("SparseDistillKLDivLoss", {"teacher_temperature": "hot"}, r"parameter 'teacher_temperature'"),
    ("SparseTripletLoss", {"distance_metric": "chebyshev"}, r"SparseTripletLoss: parameter 'distance_metric'"),
    ("SparseTripletLoss", {"triplet_margin": float("nan")}, r"parameter 'triplet_margin'"),
    ("SparseCosineSimilarityLoss", {"loss_fct": "HuberLoss"}, r"parameter 'loss_fct'"),
    ("SparseCosineSimilarityLoss", {"cos_score_transformation": "Softplus"}, r"'cos_score_transformation'"),
    ("SparseCoSENTLoss", {"scale": -20.0}, r"SparseCoSENTLoss: parameter 'scale'"),
    ("SparseAnglELoss", {"similarity_fct": "pairwise_cos_sim"}, r"SparseAnglELoss: unknown parameter 'similarity_fct'"),
])
def test_bad_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        base_loss(name, params)


def test_unknown_loss_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown base loss 'SparseHingeLoss'.*SparseMarginMSELoss.*'cosent'"):
        base_loss("SparseHingeLoss")
    with pytest.raises(ValueError, match=r"unknown base loss"):
        splade_loss(np.ones((2, V)), [np.ones((2, V))], 1.0, None, base="hinge")


def test_reference_forms_of_parameter_values_are_accepted():
    rng = np.random.default_rng(8)
    cols = columns(rng, 3)
    labels = make_labels(rng, "margin_B", 3)
    assert float(base_loss("margin_mse", {"similarity_fct": util.pairwise_cos_sim})(cols, labels)) == \
        float(base_loss("margin_mse", {"similarity_fct": "pairwise_cos_sim"})(cols, labels))
    assert float(base_loss("triplet", {"distance_metric": "TripletDistanceMetric.MANHATTAN"})(cols)) == \
        float(base_loss("triplet", {"distance_metric": "manhattan"})(cols))
    pair_labels = make_labels(rng, "float_B", 2)
    assert float(base_loss("cosine", {"loss_fct": torch.nn.L1Loss()})(cols, pair_labels)) == \
        float(base_loss("cosine", {"loss_fct": "torch.nn.modules.loss.L1Loss"})(cols, pair_labels))
    with pytest.raises(ValueError, match="'loss_fct'"):
        base_loss("cosine", {"loss_fct": torch.nn.MSELoss(reduction="sum")})


def test_cosine_similarity_labels_are_taken_as_float32_like_the_reference():
    rng = np.random.default_rng(9)
    cols = columns(rng, 2)
    labels = rng.uniform(0, 1, B)  # float64, not float32-representable
    assert np.any(labels.astype(np.float32).astype(np.float64) != labels)
    value = st_loss("SparseCosineSimilarityLoss", {}).compute_loss_from_embeddings(
        [torch.tensor(c, dtype=torch.float64) for c in cols], torch.tensor(labels))
    with x64():
        got = base_loss("cosine")([jnp.asarray(c, jnp.float64) for c in cols], jnp.asarray(labels))
        exact = jnp.mean(jnp.square(jnp.sum(_unit(cols[0]) * _unit(cols[1]), 1) - labels))
    assert abs(float(got) - float(value)) <= 1e-12 * float(value)
    assert abs(float(exact) - float(value)) > 1e-9 * float(value)  # the rounding is visible at this tolerance


def _unit(x):
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
