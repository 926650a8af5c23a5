from __future__ import annotations

import numpy as np
from flax import nnx

from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.gte import GteForMaskedLM
from jsplade.splade.initialization import copy_friendly_init, idf_query_weights
from jsplade.splade.pooling import splade_pool


def test_copy_friendly_init_activates_the_documents_own_tokens():
    cfg = GteConfig(vocab_size=5000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=128, max_position_embeddings=512, type_vocab_size=0, hidden_dropout_prob=0.0)
    mlm = copy_friendly_init(GteForMaskedLM(cfg, rngs=nnx.Rngs(0)), seed=1)
    ids = np.random.default_rng(0).integers(10, 5000, size=(4, 20)).astype(np.int32)
    mask = np.ones_like(ids)
    pooled = np.asarray(splade_pool(mlm(ids, mask), mask))
    for b in range(4):
        present = set(ids[b].tolist())
        active = set(np.flatnonzero(pooled[b]).tolist())
        assert present <= active  # every input token is active
        assert len(active) < 10 * len(present)  # and little else
        top = np.argsort(-pooled[b])[: len(present)]
        assert len(set(top.tolist()) & present) >= 0.9 * len(present)


def test_idf_query_weights():
    docs = [np.array([1, 2, 2]), np.array([1, 3]), np.array([1])]
    w = idf_query_weights(docs, 6)
    n = 3
    idf = lambda df: np.log1p((n - df + 0.5) / (df + 0.5))  # noqa: E731
    expected = np.array([idf(0), idf(3), idf(1), idf(1), idf(0), idf(0)])
    np.testing.assert_allclose(w, expected / expected.max(), rtol=1e-6)
    assert w[1] < w[2] < w[0] == 1.0  # frequent tokens low, unseen tokens highest
