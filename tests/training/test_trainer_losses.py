"""Every base loss SpladeLoss can wrap, through jsplade's train-step loss, against the installed
sentence-transformers on tiny random BERT SparseEncoders built in the test (the v3 inference-free Router shape;
symmetric where the loss is meant for pairs of like texts): loss terms within 1e-5 relative and the gradient
of every parameter (‖Δg‖/‖g‖ ≤ 1e-5 overall, ≤ 1e-4 per tensor; tensors whose reference gradient is below
1e-3 of the largest one are compared to the largest norm, as in test_trainer). Pairs, triplets and several
negatives; labels of every accepted form. The loss functions alone: tests/training/test_base_losses.py.

The models are made sparse (``build_st_sparse_encoder(sparse=True)``: about 100 active entries per document,
as a trained SPLADE model has) because on dense random ones the dense cotangents of the FLOPS and embedding
losses reach every vocabulary entry of every document, and max pooling's near-ties (two token logits of an
entry within float32 rounding of each other, which jsplade's and torch's float32 logits can order
differently) move gradients by up to 1.7e-4. Measured on the dense 3-negative ranking case at λ_d = 3e-3:
6.3e-5; with λ_d = 0 3.0e-7; jsplade against itself with 7 more padding tokens 1.2e-7; sentence-transformers
float32 against float64 2.3e-7 — only the tie routing between the two implementations differs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.st_models import build_st_sparse_encoder
from helpers.st_steps import grad_check, jsplade_loss_step, st_splade_step

from jsplade import SparseEncoder

QUERIES = ["what is the capital of france", "red planet", "sparse retrieval", "tea or coffee"]
DOCS = [["paris is the capital of france", "berlin is in germany", "rome is old", "lyon has food"],
        ["mars is known as the red planet", "the moon has no air", "venus is hot", "jupiter is big"],
        ["splade builds sparse vectors of vocabulary weights", "a cat sat on a mat", "bm25 counts terms",
         "dense vectors are small"],
        ["bob likes tea", "alice drinks coffee", "water is wet", "milk is white"]]


def _rows(n_docs):
    return [(q, *d[:n_docs]) for q, d in zip(QUERIES, DOCS)]


def _labels(kind, batch, rng):
    if kind is None:
        return None
    if kind == "vocab":  # a teacher embedding per row (SparseMSELoss)
        out = np.zeros((batch, 30522), np.float32)
        for b in range(batch):
            idx = rng.choice(30522, 40, replace=False)
            out[b, idx] = rng.uniform(0.1, 2.0, 40)
        return out
    if kind == "unit":  # similarity labels in [0, 1]
        return rng.uniform(0, 1, batch).astype(np.float32)
    if kind == "margin":
        return rng.normal(0, 3, batch).astype(np.float32)
    return rng.normal(5, 3, (batch, kind)).astype(np.float32)  # K teacher scores or margins per row


# (id, ST class, jsplade parameters (also given to the ST constructor, by name), document columns, label kind, shape)
CASES = [
    ("mnrl_scale", "SparseMultipleNegativesRankingLoss", {"scale": 5.0}, 3, None, "inference_free"),
    ("margin_mse_triplets", "SparseMarginMSELoss", {}, 2, "margin", "inference_free"),
    ("margin_mse_margins", "SparseMarginMSELoss", {}, 4, 3, "inference_free"),
    ("margin_mse_scores", "SparseMarginMSELoss", {}, 4, 4, "inference_free"),
    ("kl_triplets", "SparseDistillKLDivLoss", {}, 2, 2, "inference_free"),
    ("kl_negatives_t1", "SparseDistillKLDivLoss", {"temperature": 1.0}, 4, 4, "inference_free"),
    ("triplet", "SparseTripletLoss", {}, 2, None, "inference_free"),
    ("mse", "SparseMSELoss", {}, 1, "vocab", "inference_free"),
    ("cosine", "SparseCosineSimilarityLoss", {}, 1, "unit", "symmetric"),
    ("cosent", "SparseCoSENTLoss", {}, 1, "unit", "symmetric"),
    ("angle", "SparseAnglELoss", {}, 1, "unit", "symmetric"),
]


def _reference_loss(name, st, params):
    from sentence_transformers.sparse_encoder import losses

    loss = getattr(losses, name)(st, **params)
    if name != "SparseMSELoss":
        return loss
    import torch

    class TeacherPerColumn(torch.nn.Module):
        """SpladeLoss hands SparseMSELoss its [B, V] label tensor as the list of per-column teachers, so
        column c is compared with label *row* c, broadcast (sentence-transformers 6.3). What MSELoss.forward
        itself documents and does — the same teacher embedding for every column — is this wrapper, the
        reference jsplade follows."""

        def __init__(self):
            super().__init__()
            self.inner = loss

        def compute_loss_from_embeddings(self, embeddings, labels):
            return self.inner.compute_loss_from_embeddings(embeddings, [labels for _ in embeddings])

    return TeacherPerColumn()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    out = {}
    for shape in ("inference_free", "symmetric"):
        st, folder = build_st_sparse_encoder(tmp_path_factory.mktemp(shape), "bert", shape, dropout=0.0, sparse=True)
        out[shape] = (st, SparseEncoder.from_pretrained(folder))
    return out


def _compare(ref_terms, terms):
    assert set(ref_terms) <= set(terms)
    for name, ref in ref_terms.items():
        assert abs(terms[name] - ref) <= 1e-5 * max(abs(ref), 1e-6), (name, terms[name], ref)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_base_loss_step_matches_sentence_transformers(models, case):
    _, name, params, n_docs, label_kind, shape = case
    st, enc = models[shape]
    rows = _rows(n_docs)
    labels = _labels(label_kind, len(rows), np.random.default_rng(len(name) + n_docs))
    lam_d, lam_q = 3e-3, 5e-3  # large enough for the regularizers to weigh in the gradients
    ref_terms, ref_grads, features = st_splade_step(st, rows, _reference_loss(name, st, params), labels,
                                                    lam_d=lam_d, lam_q=lam_q)
    terms, got = jsplade_loss_step(enc, rows, features, lam_d=lam_d, lam_q=lam_q, loss=name, loss_params=params,
                                   labels=labels)
    _compare(ref_terms, terms)
    grad_check(got, ref_grads, floor=1e-3)


def test_document_regularizer_only_matches_sentence_transformers(models):
    """use_document_regularizer_only: every column regularised together as documents, no query term."""
    st, enc = models["symmetric"]
    rows = _rows(2)
    labels = _labels("unit", len(rows), np.random.default_rng(7))
    ref_terms, ref_grads, features = st_splade_step(st, rows, _reference_loss("SparseCoSENTLoss", st, {}), labels,
                                                    lam_d=3e-3, lam_q=None, use_document_regularizer_only=True)
    assert "query_regularizer_loss" not in ref_terms
    terms, got = jsplade_loss_step(enc, rows, features, lam_d=3e-3, lam_q=None, loss="SparseCoSENTLoss",
                                   labels=labels, use_document_regularizer_only=True)
    _compare(ref_terms, terms)
    assert terms["query_regularizer_loss"] == 0.0
    grad_check(got, ref_grads, floor=1e-3)


def test_a_sentence_transformers_distillation_run_replays_step_by_step(tmp_path):
    """SparseEncoderTrainer (installed sentence-transformers) trains a tiny BERT inference-free model with
    SpladeLoss(SparseDistillKLDivLoss) on 12 (query, positive, 2 negatives, 3 teacher scores) rows, batch 4,
    2 epochs; the test records each step's loss terms and, through the unique teacher scores, the rows of each
    batch. jsplade-train replays the same batches from the same initial model: every step's loss terms within
    1e-5 relative (the parameters of steps 2… have been updated by each side's own AdamW by then)."""
    import json

    import torch
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SparseDistillKLDivLoss, SpladeLoss

    from jsplade.training.config import TrainConfig
    from jsplade.training.trainer import Trainer

    st, folder = build_st_sparse_encoder(tmp_path / "model", "bert", "inference_free", dropout=0.0, sparse=True)
    words = "red green blue cat dog tea coffee paris rome mars moon sun sea river city house car tree".split()
    rng = np.random.default_rng(11)
    rows = []
    for i in range(12):
        texts = [" ".join(rng.choice(words, 3)) + f" q{i}"] + [" ".join(rng.choice(words, 7)) + f" d{i}{c}"
                                                                for c in range(3)]
        rows.append({"query": texts[0], "positive": texts[1], "negative_1": texts[2], "negative_2": texts[3],
                     "label": [float(x) for x in np.round(rng.normal(8, 3, 3), 4) + i * 1e-3]})
    recorded = []

    class RecordingSpladeLoss(SpladeLoss):
        def forward(self, features, labels=None):
            out = super().forward(features, labels)
            recorded.append(({k: float(v) for k, v in out.items()}, labels.detach().numpy().copy()))
            return out

    lam_d, lam_q, lr = 3e-3, 5e-3, 2e-4
    loss = RecordingSpladeLoss(st, SparseDistillKLDivLoss(st), document_regularizer_weight=lam_d,
                               query_regularizer_weight=lam_q)
    args = SparseEncoderTrainingArguments(output_dir=str(tmp_path / "st_run"), num_train_epochs=2,
                                          per_device_train_batch_size=4, learning_rate=lr, warmup_ratio=0.1,
                                          seed=3, logging_steps=1, report_to=[], save_strategy="no",
                                          router_mapping={"query": "query", "positive": "document",
                                                          "negative_1": "document", "negative_2": "document"},
                                          use_cpu=True, disable_tqdm=True)
    torch.manual_seed(3)
    SparseEncoderTrainer(model=st, args=args, train_dataset=Dataset.from_list(rows), loss=loss).train()
    assert len(recorded) == 6
    first_score = {round(r["label"][0], 6): i for i, r in enumerate(rows)}
    batches = [[first_score[round(float(x), 6)] for x in labels[:, 0]] for _, labels in recorded]
    assert sorted(i for b in batches[:3] for i in b) == list(range(12))  # each epoch sees every row once

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    replay = tmp_path / "replay.json"
    replay.write_text(json.dumps(batches))
    config = TrainConfig(base_model=str(folder), train_data=str(data), output_dir=str(tmp_path / "run"),
                         batch_size=4, epochs=2, learning_rate=lr, warmup_ratio=0.1, lambda_d=lam_d, lambda_q=lam_q,
                         loss="SparseDistillKLDivLoss", replay_batches=str(replay), dropout=False,
                         progress_bar=False, tensorboard=False)
    result = Trainer(config).fit()
    assert [h["indices"] for h in result.history] == [[b] for b in batches]
    for step, ((ref, _), got) in enumerate(zip(recorded, result.history)):
        for k, v in ref.items():
            assert abs(got[k] - v) <= 1e-5 * abs(v) + 1e-9, (step, k, got[k], v)
