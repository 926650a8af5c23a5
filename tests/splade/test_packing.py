"""Packing equals the padded path: per-document vectors and parameter gradients.

Tolerance: 1e-5 relative to the largest value (different matmul shapes → float32 rounding only);
gradients of the 4096-token case 5e-5 (sums over thousands of tokens in another order).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fixtures import load_gte_case, max_rel
from flax import nnx

from jsplade.backbones.gte import GTE
from jsplade.backbones.gte_config import GteConfig
from jsplade.checkpoints.hf_folder import mlm_from_params
from jsplade.splade.packing import pack_documents
from jsplade.backbones.recipe import recipe_state_dict
from jsplade.splade.model import SpladeModel
from jsplade.splade.static_embedding import StaticQueryEmbedding


def _model(case="tiny_ntk", strategy="max", **compute):
    cfg = GteConfig.from_hf_dict(load_gte_case(case).config_json).replace(hidden_dropout_prob=0.0)
    mlm = mlm_from_params(cfg, GTE.hf_to_params(recipe_state_dict(cfg, 11), cfg))
    if compute:
        mlm.with_compute(**compute)
    return SpladeModel(mlm, StaticQueryEmbedding(np.ones(cfg.vocab_size, np.float32)), strategy)


def _docs(rng, lengths, vocab):
    return [np.concatenate([[101], rng.integers(103, vocab, n - 2), [102]]).astype(np.int32) for n in lengths]


def _padded(model, docs):
    length = max(len(d) for d in docs)
    ids = np.zeros((len(docs), length), np.int32)
    mask = np.zeros_like(ids)
    for i, d in enumerate(docs):
        ids[i, :len(d)] = d
        mask[i, :len(d)] = 1
    return ids, mask


def test_pack_documents_layout():
    docs = [np.arange(1, n + 1, dtype=np.int32) for n in (5, 9, 3, 7, 2)]
    p = pack_documents(docs, 12)
    assert p.input_ids.shape[1] == 12 and p.input_ids.shape[0] == 3
    for i, d in enumerate(docs):
        r, g = p.doc_slot[i]
        sel = p.group_ids[r] == g
        np.testing.assert_array_equal(p.input_ids[r][sel], d)
        np.testing.assert_array_equal(p.position_ids[r][sel], np.arange(len(d)))
        assert np.all(p.segment_ids[r][sel] == g + 1)
    assert np.all((p.group_ids == -1) == (p.attention_mask == 0))
    with pytest.raises(ValueError, match="does not fit"):
        pack_documents([np.ones(13, np.int32)], 12)


def _compare(model, docs, row_length, chunk=64, grad_tol=1e-5, grads=True):
    packed = pack_documents(docs, row_length)
    ids, mask = _padded(model, docs)

    def packed_vecs(state):
        m = nnx.merge(graphdef, state)
        out = m.encode_packed(packed.input_ids, packed.attention_mask, packed.position_ids, packed.segment_ids,
                              packed.group_ids, packed.n_groups)
        return out[packed.doc_slot[:, 0], packed.doc_slot[:, 1]]

    def padded_vecs(state):
        return nnx.merge(graphdef, state).encode_documents(ids, mask)

    model.mlm.with_compute(head_chunk=chunk)  # the packed path runs the fused head in token chunks too
    graphdef, state = nnx.split(model)
    a, b = jax.jit(packed_vecs)(state), jax.jit(padded_vecs)(state)
    assert max_rel(a, b) < 1e-5
    if not grads:
        return
    cot = jnp.asarray(np.random.default_rng(0).random(a.shape), jnp.float32)
    ga = jax.jit(jax.grad(lambda s: jnp.sum(packed_vecs(s) * cot)))(state)
    gb = jax.jit(jax.grad(lambda s: jnp.sum(padded_vecs(s) * cot)))(state)
    for (path, x), (_, y) in zip(nnx.to_flat_state(ga), nnx.to_flat_state(gb)):
        assert max_rel(x.get_value(), y.get_value()) < grad_tol, path


@pytest.mark.parametrize("case", ["tiny_ntk", "tiny_logn_types"])
@pytest.mark.parametrize("strategy", ["max", "sum"])
def test_packed_equals_padded_tiny(case, strategy):
    """Values for both poolings; gradients through sum pooling (with max pooling a float-noise near tie
    between two tokens may route an entry's gradient to the other token: both paths are right)."""
    model = _model(case, strategy)
    docs = _docs(np.random.default_rng(1), [17, 40, 9, 25, 31, 5], model.vocab_size)
    _compare(model, docs, 64, chunk=16, grads=strategy == "sum")  # logn: each document's own length


@pytest.mark.slow
def test_packed_equals_padded_long_4096():
    """Two documents of 2100 and 1990 tokens in one 4096-token row (blockwise attention).

    Sum pooling: with max pooling over ~2000 tokens, a float-noise-level near tie can route a vocabulary
    entry's gradient to another token (both paths are right); the sum has no arg-max to flip.
    """
    model = _model(strategy="sum", attention="blockwise")
    docs = _docs(np.random.default_rng(2), [2100, 1990], model.vocab_size)
    # Gradients sum over ~4000 tokens in a different order: 5e-5 (observed 1.1e-5).
    _compare(model, docs, 4096, chunk=512, grad_tol=5e-5)
