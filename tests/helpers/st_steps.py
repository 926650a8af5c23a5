"""One SpladeLoss step on both sides: the installed sentence-transformers' loss (terms and every parameter's
gradient) and jsplade's ``make_loss_fn`` on the same token ids, with the gradients under the same HF names."""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from flax import nnx

from jsplade.backbones.bert import BERT
from jsplade.backbones.params import flat_state_dict
from jsplade.training.trainer import StepSettings, collate, frozen_params, make_cached_grad_fn, make_loss_fn


def st_splade_step(st, rows, base_loss, labels=None, *, lam_d, lam_q, use_document_regularizer_only=False):
    """(loss terms as floats, gradients keyed like ``jsplade_loss_step``'s, the tokenized features) of one
    SpladeLoss(``base_loss``) forward/backward of ``st`` in train mode on ``rows`` (column 0 → query route)."""
    from sentence_transformers.sparse_encoder.losses import SpladeLoss

    loss = SpladeLoss(st, base_loss, document_regularizer_weight=lam_d,
                      query_regularizer_weight=None if use_document_regularizer_only else lam_q,
                      use_document_regularizer_only=use_document_regularizer_only)
    return st_loss_step(st, loss, rows, labels)


def st_loss_step(st, loss, rows, labels=None):
    """``st_splade_step`` with a given sentence-transformers loss object (SpladeLoss, CachedSpladeLoss)."""
    import torch

    st.train()
    st.zero_grad()
    n_cols = len(rows[0])
    features = [st.preprocess([r[c] for r in rows], task="query" if c == 0 else "document") for c in range(n_cols)]
    ref_labels = None if labels is None else torch.tensor(np.asarray(labels), dtype=torch.float32)
    terms = loss(features, ref_labels)
    sum(terms.values()).backward()
    return {k: float(v.detach()) for k, v in terms.items()}, reference_grads(st), features


def reference_grads(st):
    """Every parameter gradient of ``st`` (float64), under jsplade's HF-name keys."""
    grads = {}
    for name, p in st.named_parameters():
        if p.grad is None:
            continue
        hf = re.match(r"^(?:.*\.)?model\.(.*)$", name)
        key = ("query.weight" if name.endswith("query.0.weight") else
               "query_mlm." + hf.group(1) if ".sub_modules.query." in name else hf.group(1))
        grads[key] = p.grad.numpy().astype(np.float64)
    return grads


def jsplade_loss_step(enc, rows, features, *, lam_d, lam_q, loss="SparseMultipleNegativesRankingLoss",
                      loss_params=None, labels=None, use_document_regularizer_only=False,
                      cached_mini_batch_size=None):
    """(loss terms as floats, gradients under HF names) of jsplade's loss function (dropout off) on ``rows``,
    with the documents padded as sentence-transformers padded ``features`` (its document columns share one
    width: other widths can move max-pooling gradients at ~1-ulp logit ties, see test_trainer)."""
    micro = {k: v[0] for k, v in collate(enc, rows, [list(range(len(rows)))], None, 512,
                                         labels=None if labels is None else [np.asarray(x) for x in labels]).items()}
    width = max(f["input_ids"].shape[1] for f in features[1:])
    pad = [np.pad(f[k].numpy().astype(np.int32), ((0, 0), (0, width - f[k].shape[1]))) for f in features[1:]
           for k in ("input_ids", "attention_mask")]
    np.testing.assert_array_equal(micro["doc_ids"][0][:, :width], pad[0])  # collate tokenized them the same way
    micro["doc_ids"], micro["doc_mask"] = np.stack(pad[0::2]), np.stack(pad[1::2])
    if not enc.model.inference_free:
        q = features[0]
        micro["query_ids"], micro["query_mask"] = (q["input_ids"].numpy().astype(np.int32),
                                                   q["attention_mask"].numpy().astype(np.int32))
    graphdef, params = nnx.split(enc.model, nnx.Param)
    settings = StepSettings(total_steps=1, learning_rate=0.0, warmup_steps=0, lambda_d=0.0, lambda_q=0.0,
                            regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3, dropout=False,
                            loss=loss, loss_params=frozen_params(loss_params or {}),
                            use_document_regularizer_only=use_document_regularizer_only)
    if cached_mini_batch_size is None:
        grad_fn = jax.value_and_grad(make_loss_fn(graphdef, settings), has_aux=True)
    else:
        grad_fn = make_cached_grad_fn(graphdef, settings, cached_mini_batch_size)
    (_, (terms, _)), grads = grad_fn(params, micro, None, lam_d,
                                              None if use_document_regularizer_only else lam_q)
    flat = {k: np.asarray(v) for k, v in flat_state_dict(grads).items()}
    got = BERT.params_to_hf({k[len("mlm."):]: v for k, v in flat.items() if k.startswith("mlm.")}, enc.model.mlm.config)
    if "query.weight" in flat:
        got["query.weight"] = flat["query.weight"]
    if enc.model.shape == "asymmetric":
        query_hf = BERT.params_to_hf({k[len("query_mlm."):]: v for k, v in flat.items() if k.startswith("query_mlm.")},
                                     enc.model.query_mlm.config)
        got.update({"query_mlm." + k: v for k, v in query_hf.items()})
    return {k: float(v) for k, v in terms.items()}, got


def grad_check(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], floor: float = 0.0,
               overall: float = 1e-5, per_tensor: float = 1e-4) -> None:
    """Overall ‖Δg‖/‖g‖ ≤ ``overall`` and per tensor ≤ ``per_tensor``; ``floor``: per-tensor norms below ``floor`` ×
    the largest tensor norm are measured against that instead (gradients that are zero in exact arithmetic).
    Tensors the reference gives no gradient must have none (or zero) here."""
    assert set(ref) <= set(got), sorted(set(ref) - set(got))
    for k in set(got) - set(ref):
        assert np.abs(got[k]).max() == 0, k
    num = sum(float(np.sum((got[k].astype(np.float64) - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(ref[k].astype(np.float64) ** 2)) for k in ref)
    assert math.sqrt(num / den) <= overall, math.sqrt(num / den)
    largest = max(float(np.linalg.norm(v)) for v in ref.values())
    for k in ref:
        n = max(float(np.linalg.norm(ref[k])), floor * largest)
        if n > 0:
            assert np.linalg.norm(got[k] - ref[k]) / n <= per_tensor, k
        else:
            assert np.abs(got[k]).max() == 0, k
