"""Cached (GradCache) training: the same loss and gradients as the one-pass step, on one device and on a
2 × 4 mesh, and the same as the installed sentence-transformers' CachedSpladeLoss.

Tolerances: loss terms 1e-5 relative; gradients ‖Δg‖/‖g‖ ≤ 1e-5 over all parameters and ≤ 1e-4 per tensor
(tensors whose gradient is below 1e-3 of the largest are compared to the largest norm), as in test_trainer.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx
from helpers.sharded_steps import AXES, build_model, random_batch
from helpers.st_models import build_st_sparse_encoder
from helpers.st_steps import grad_check, jsplade_loss_step, st_loss_step

from jsplade import SparseEncoder
from jsplade.backbones.params import flat_state_dict
from jsplade.training import sharding
from jsplade.training.trainer import StepSettings, cache_chunk, frozen_params, make_cached_grad_fn, make_loss_fn

BATCH, MINI = 256, 16
LAM_D, LAM_Q = 3e-3, 5e-3


def _settings(loss="SparseMultipleNegativesRankingLoss", params=None, **kw):
    return StepSettings(total_steps=1, learning_rate=0.0, warmup_steps=0, lambda_d=0.0, lambda_q=0.0,
                        regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3, dropout=False, loss=loss,
                        loss_params=frozen_params(params or {}), **kw)


def _batch(rows=BATCH, labels=None):
    batch = random_batch(5, rows, 8, 24, query_keep=5, doc_every=3, doc_keep=17)
    if labels is not None:
        batch["labels"] = labels[None]
    return batch


def _grads(mesh_spec, settings, batch, cached):
    graphdef, params = nnx.split(build_model(), nnx.Param)
    if cached:
        fn = make_cached_grad_fn(graphdef, settings, MINI)
    else:
        fn = jax.value_and_grad(make_loss_fn(graphdef, settings), has_aux=True)
    if mesh_spec is not None:
        mesh = sharding.make_mesh(mesh_spec)
        params = jax.device_put(params, sharding.param_shardings(params, mesh, AXES))
        batch = sharding.global_batch_from_host(batch, mesh)
    (total, (terms, _)), grads = jax.jit(lambda p, b: fn(p, {k: v[0] for k, v in b.items()}, None, LAM_D, LAM_Q))(
        params, batch)
    flat = {k: np.asarray(jax.device_get(v)).astype(np.float64) for k, v in flat_state_dict(grads).items()}
    return {k: float(v) for k, v in terms.items()}, flat


def _same(a, b):
    terms_a, grads_a = a
    terms_b, grads_b = b
    for k, v in terms_b.items():
        assert abs(terms_a[k] - v) <= 1e-5 * max(abs(v), 1e-12), (k, terms_a[k], v)
    grad_check(grads_a, grads_b, floor=1e-3)


@pytest.fixture(scope="module")
def uncached():
    return _grads(None, _settings(), _batch(), cached=False)


def test_cache_chunk_is_the_largest_divisor():
    assert cache_chunk(256, 16) == 16 and cache_chunk(100, 16) == 10 and cache_chunk(13, 16) == 13
    assert cache_chunk(13, 4) == 1 and cache_chunk(12, 5) == 4


def test_cached_equals_uncached_on_one_device(uncached):
    """Batch 256 in 16 mini-batches of 16 rows: the ranking loss sees all 512 documents of the batch."""
    _same(_grads(None, _settings(), _batch(), cached=True), uncached)


def test_cached_equals_uncached_on_a_2x4_mesh(uncached):
    _same(_grads("data=2,fsdp=4", _settings(), _batch(), cached=True), uncached)


def test_cached_distillation_loss_equals_uncached():
    labels = np.random.default_rng(3).normal(5, 3, (BATCH, 2)).astype(np.float32)
    settings = _settings("SparseDistillKLDivLoss")
    _same(_grads(None, settings, _batch(labels=labels), cached=True),
          _grads(None, settings, _batch(labels=labels), cached=False))


def test_cached_equals_sentence_transformers_cached_splade_loss(tmp_path):
    """The installed CachedSpladeLoss (mini_batch_size 16) on a tiny BERT inference-free model, batch 256."""
    from sentence_transformers.sparse_encoder.losses import CachedSpladeLoss, SparseMultipleNegativesRankingLoss

    st, folder = build_st_sparse_encoder(tmp_path, "bert", "inference_free", dropout=0.0)
    words = ("red green blue cat dog tea coffee paris rome mars moon sun sea river city house car tree bird fish "
             "music book film game").split()
    rng = np.random.default_rng(0)
    rows = [(" ".join(rng.choice(words, 3)) + f" {i}", " ".join(rng.choice(words, 8)) + f" doc {i}",
             " ".join(rng.choice(words, 8)) + f" neg {i}") for i in range(BATCH)]
    loss = CachedSpladeLoss(st, SparseMultipleNegativesRankingLoss(st), document_regularizer_weight=LAM_D,
                            query_regularizer_weight=LAM_Q, mini_batch_size=MINI)
    ref_terms, ref_grads, features = st_loss_step(st, loss, rows)
    enc = SparseEncoder.from_pretrained(folder)
    terms, got = jsplade_loss_step(enc, rows, features, lam_d=LAM_D, lam_q=LAM_Q, cached_mini_batch_size=MINI)
    for k, v in ref_terms.items():
        assert abs(terms[k] - v) <= 1e-5 * abs(v), (k, terms[k], v)
    grad_check(got, ref_grads, floor=1e-3)


def test_jsplade_train_with_cached_mini_batches_equals_the_plain_run(tmp_path):
    """TrainConfig.cached_mini_batch_size through the Trainer: two steps of batch 6 in mini-batches of 4 (so 3
    rows each: the largest divisor) give the plain run's loss terms and parameters (dropout off)."""
    import json

    from helpers.fixtures import SE_FIXTURES

    from jsplade.training.config import TrainConfig
    from jsplade.training.trainer import Trainer

    rows = [{"query": f"query {w} {i}", "positive": f"a document about {w} number {i}", "negative": f"{w} noise {i}"}
            for i, w in enumerate("tea jazz mars paris moon river cat dog sea tree car bird".split())]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = []
    for name, cached in (("plain", None), ("cached", 4)):
        cfg = TrainConfig(base_model=str(SE_FIXTURES / "model"), train_data=str(data), output_dir=str(tmp_path / name),
                          batch_size=6, max_steps=2, learning_rate=1e-4, warmup_ratio=0.0, lambda_d=3e-3,
                          lambda_q=5e-3, dropout=False, cached_mini_batch_size=cached, progress_bar=False,
                          tensorboard=False)
        result = Trainer(cfg).fit()
        results.append((result.history, {k: np.asarray(v) for k, v in
                                          flat_state_dict(nnx.state(result.encoder.model, nnx.Param)).items()}))
    (hist_a, params_a), (hist_b, params_b) = results
    for a, b in zip(hist_a, hist_b):
        assert a["indices"] == b["indices"]
        for k in ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "grad_norm"):
            assert abs(a[k] - b[k]) <= 1e-5 * abs(a[k]), (k, a[k], b[k])
    for k in params_a:
        assert np.abs(params_a[k] - params_b[k]).max() <= 1e-5 * max(np.abs(params_a[k]).max(), 1e-12), k
