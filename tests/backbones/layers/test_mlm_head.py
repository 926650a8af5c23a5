"""jsplade.backbones.layers.mlm_head: ``TiedMlmMethods`` on a toy backbone, and ``MlmHead`` against the transformers heads it stands for — native
``GteLMHead`` (exact gelu) and BERT's ``BertLMPredictionHead`` (``hidden_act`` from the config) with the decoder
weight set to the tied word embeddings — for the features, the logits and their gradients.

Tolerances (relative to the largest |value|, ``max_rel``): float32 values 1e-6 (observed ≤ 2.5e-7), gradients 2e-6;
bfloat16 compute 2e-2 against float32 torch (observed 7e-3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from helpers.fixtures import max_rel
from transformers.models.bert.modeling_bert import BertLMPredictionHead
from transformers.models.gte.modeling_gte import GteLMHead

from jsplade.backbones.compute import ComputeOptions
from jsplade.backbones.layers.embedding import Embed
from jsplade.backbones.layers.mlm_head import MlmHead, TiedMlmMethods

D, V, EPS = 32, 50, 1e-12
HIGHEST = jax.lax.Precision.HIGHEST


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"dense_weight": 0.2 * rng.standard_normal((D, D)),  # torch layout [out, in]
            "dense_bias": 0.1 * rng.standard_normal(D),
            "norm_weight": 1 + 0.1 * rng.standard_normal(D),
            "norm_bias": 0.1 * rng.standard_normal(D),
            "embedding": 0.3 * rng.standard_normal((V, D)),
            "decoder_bias": 0.1 * rng.standard_normal(V),
            "hidden": rng.standard_normal((2, 5, D))}


def _ours(w: dict, act: str) -> MlmHead:
    head = MlmHead(D, V, eps=EPS, act=act, rngs=nnx.Rngs(0), std=0.02)
    head.dense_kernel.set_value(jnp.asarray(w["dense_weight"].T, jnp.float32))
    head.dense_bias.set_value(jnp.asarray(w["dense_bias"], jnp.float32))
    head.norm.scale.set_value(jnp.asarray(w["norm_weight"], jnp.float32))
    head.norm.bias.set_value(jnp.asarray(w["norm_bias"], jnp.float32))
    head.decoder_bias.set_value(jnp.asarray(w["decoder_bias"], jnp.float32))
    return head


def _f32(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float32))


def _torch_head(w: dict, act: str) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(head, its dense → act → LayerNorm transform, its decoder) with our weights loaded."""
    if act == "gte":
        cfg = transformers.GteConfig(hidden_size=D, vocab_size=V, layer_norm_eps=EPS, num_attention_heads=2,
                                     intermediate_size=64, num_hidden_layers=1)
        head = GteLMHead(cfg)
        dense, norm, decoder = head.dense, head.layer_norm, head.decoder
        transform = torch.nn.Sequential(dense, torch.nn.GELU(), norm)
    else:
        cfg = transformers.BertConfig(hidden_size=D, vocab_size=V, hidden_act=act, layer_norm_eps=EPS,
                                      num_attention_heads=2, intermediate_size=64, num_hidden_layers=1)
        head = BertLMPredictionHead(cfg)
        transform, decoder = head.transform, head.decoder
        dense, norm = transform.dense, transform.LayerNorm
    with torch.no_grad():
        dense.weight.copy_(_f32(w["dense_weight"]))
        dense.bias.copy_(_f32(w["dense_bias"]))
        norm.weight.copy_(_f32(w["norm_weight"]))
        norm.bias.copy_(_f32(w["norm_bias"]))
        decoder.weight.copy_(_f32(w["embedding"]))  # the tied decoder weight
        decoder.bias.copy_(_f32(w["decoder_bias"]))
    return head.eval(), transform, decoder


def test_parameters_and_their_initial_values():
    head = MlmHead(D, V, eps=EPS, act="gelu", rngs=nnx.Rngs(0), std=0.02)
    shapes = {".".join(map(str, path)): tuple(var.get_value().shape)
              for path, var in nnx.to_flat_state(nnx.state(head, nnx.Param))}
    # the decoder weight is the tied word embedding, not a parameter of the head
    assert shapes == {"dense_kernel": (D, D), "dense_bias": (D,), "norm.scale": (D,), "norm.bias": (D,),
                      "decoder_bias": (V,)}
    np.testing.assert_array_equal(head.dense_bias[...], 0.0)
    np.testing.assert_array_equal(head.decoder_bias[...], 0.0)
    np.testing.assert_array_equal(head.norm.scale[...], 1.0)
    kernel = np.asarray(head.dense_kernel[...])
    assert kernel.dtype == np.float32 and 0.015 < kernel.std() < 0.025
    assert head.norm.kind == "layer_norm" and head.norm.eps == EPS


@pytest.mark.parametrize("act", ["gte", "gelu", "relu", "silu", "gelu_new"])
def test_features_and_logits_match_transformers(act):
    """``act="gte"``: transformers' native GteLMHead (always exact gelu); otherwise BERT's head with that act."""
    w = _weights(0)
    head = _ours(w, "gelu" if act == "gte" else act)
    torch_head, transform, _ = _torch_head(w, act)
    hidden = w["hidden"].astype(np.float32)
    features = head.features(jnp.asarray(hidden), jnp.float32, HIGHEST)
    logits = head.logits(features, jnp.asarray(w["embedding"], jnp.float32), jnp.float32, HIGHEST)
    with torch.no_grad():
        ref_features = transform(torch.from_numpy(hidden)).numpy()
        ref_logits = torch_head(torch.from_numpy(hidden)).numpy()
    assert features.shape == (2, 5, D) and features.dtype == jnp.float32
    assert logits.shape == (2, 5, V) and logits.dtype == jnp.float32
    assert max_rel(features, ref_features) < 1e-6
    assert max_rel(logits, ref_logits) < 1e-6


def test_gradients_match_torch_autograd():
    w = _weights(1)
    head = _ours(w, "gelu")
    graphdef, state = nnx.split(head)
    hidden = jnp.asarray(w["hidden"], jnp.float32)
    emb = jnp.asarray(w["embedding"], jnp.float32)
    cot = np.random.default_rng(2).standard_normal((2, 5, V)).astype(np.float32)

    def loss(state, hidden, emb):
        h = nnx.merge(graphdef, state)
        return jnp.sum(h.logits(h.features(hidden, jnp.float32, HIGHEST), emb, jnp.float32, HIGHEST) * cot)

    g_state, g_hidden, g_emb = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(state, hidden, emb)

    torch_head, transform, decoder = _torch_head(w, "gte")
    th = torch.tensor(np.asarray(hidden)).requires_grad_(True)
    (torch_head(th) * torch.from_numpy(cot)).sum().backward()
    dense, norm = transform[0], transform[2]
    grads = {".".join(map(str, path)): var.get_value() for path, var in nnx.to_flat_state(g_state)}
    pairs = {"hidden": (g_hidden, th.grad), "tied weight": (g_emb, decoder.weight.grad),
             "decoder_bias": (grads["decoder_bias"], decoder.bias.grad),
             "dense_kernel": (grads["dense_kernel"], dense.weight.grad.T),
             "dense_bias": (grads["dense_bias"], dense.bias.grad),
             "norm.scale": (grads["norm.scale"], norm.weight.grad), "norm.bias": (grads["norm.bias"], norm.bias.grad)}
    assert set(grads) == {"decoder_bias", "dense_kernel", "dense_bias", "norm.scale", "norm.bias"}
    for name, (ours, ref) in pairs.items():
        assert max_rel(ours, ref.numpy()) < 2e-6, name


def test_bfloat16_compute_features_in_bfloat16_logits_in_float32():
    w = _weights(3)
    head = _ours(w, "gelu")
    torch_head, transform, _ = _torch_head(w, "gte")
    hidden = w["hidden"].astype(np.float32)
    features = head.features(jnp.asarray(hidden), jnp.bfloat16)
    logits = head.logits(features, jnp.asarray(w["embedding"], jnp.float32), jnp.bfloat16)
    assert features.dtype == jnp.bfloat16
    assert logits.dtype == jnp.float32  # float32 accumulation and result, whatever the compute dtype
    with torch.no_grad():
        assert max_rel(features.astype(jnp.float32), transform(torch.from_numpy(hidden)).numpy()) < 2e-2
        assert max_rel(logits, torch_head(torch.from_numpy(hidden)).numpy()) < 2e-2


BIAS = np.linspace(-1.0, 1.0, V).astype(np.float32)


class _Embeddings(nnx.Module):
    def __init__(self, rngs):
        self.word = Embed(V, D, rngs=rngs, std=0.3)


class _ToyBackbone(TiedMlmMethods, nnx.Module):
    """The smallest backbone: its ``encode`` is the word-embedding lookup scaled by the mask."""

    def __init__(self):
        rngs = nnx.Rngs(4)
        self.compute = ComputeOptions()
        self.embeddings = _Embeddings(rngs)
        self.head = MlmHead(D, V, eps=EPS, act="gelu", rngs=rngs, std=0.2)
        self.head.decoder_bias.set_value(jnp.asarray(BIAS))
        self.encoded = []

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
               segment_ids=None, dropout_key=None):
        self.encoded.append((token_type_ids, position_ids, segment_ids, dropout_key))
        return self.embeddings.word(input_ids) * jnp.asarray(attention_mask, jnp.float32)[..., None]


def test_tied_methods_read_the_word_embedding_and_compose_the_forward_pass():
    model = _ToyBackbone()
    ids = jnp.asarray([[1, 7, 3], [4, 0, 0]])
    mask = jnp.asarray([[1, 1, 1], [1, 0, 0]])
    assert model.word_embeddings() is model.embeddings.word
    np.testing.assert_array_equal(model.decoder_weight(), model.embeddings.word.embedding[...])
    np.testing.assert_array_equal(model.decoder_bias(), BIAS)
    logits = model(ids, mask, token_type_ids="t", position_ids="p", segment_ids="s", dropout_key="k")
    assert model.encoded == [("t", "p", "s", "k")]  # every argument reaches encode
    emb = np.asarray(model.embeddings.word.embedding[...], np.float64)
    hidden = emb[np.asarray(ids)] * np.asarray(mask)[..., None]
    features = np.asarray(model.head_features(jnp.asarray(hidden, jnp.float32)), np.float64)
    assert max_rel(logits, features @ emb.T + BIAS) < 1e-6
    assert logits.shape == (2, 3, V) and logits.dtype == jnp.float32


def test_with_compute_switches_options_in_place():
    model = _ToyBackbone()
    assert model.with_compute(dtype="bfloat16", precision="default") is model
    assert model.compute.dtype == "bfloat16" and model.compute.precision == "default"
    assert model.head_features(jnp.ones((1, 2, D))).dtype == jnp.bfloat16
    assert model.project(model.head_features(jnp.ones((1, 2, D)))).dtype == jnp.float32
    with pytest.raises(TypeError):
        model.with_compute(no_such_option=1)
