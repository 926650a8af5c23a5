"""The masked-language-model head BERT-family models share: transform, then the tied vocabulary projection.

``features(h) = LayerNorm(act(h·W + b))`` [B, L, D]; ``logits = features · Eᵀ + decoder_bias`` [B, L, V]
with E the word-embedding matrix (the decoder weight is tied to it and not a parameter of the head).
GTE's ``lm_head``, BERT's ``cls.predictions``, DistilBERT's ``vocab_transform``/``vocab_layer_norm``/
``vocab_projector`` and XLM-R's ``lm_head`` all have this form; the SPLADE side reads the features, the
tied weight and the bias from here (the fused head never forms the logits).

Parameters: ``dense_kernel`` [D, D], ``dense_bias`` [D], ``norm.scale`` / ``norm.bias`` [D], ``decoder_bias`` [V].

``TiedMlmMethods``: the protocol methods (``jsplade.backbones.protocol.MaskedLM``) every backbone with this
head and a tied decoder has in common: compute options, head features, the tied weight and bias, the
projection and the full forward pass. A backbone mixes it in and supplies ``encode``.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from jsplade.backbones.layers.activations import activation
from jsplade.backbones.layers.dense import dense
from jsplade.backbones.layers.init import normal
from jsplade.backbones.layers.norm import Norm


class MlmHead(nnx.Module):
    def __init__(self, dim: int, vocab_size: int, *, eps: float, act: str, rngs: nnx.Rngs, std: float):
        self.act = act
        self.dense_kernel = nnx.Param(normal(rngs, (dim, dim), std))
        self.dense_bias = nnx.Param(jnp.zeros((dim,), jnp.float32))
        self.norm = Norm(dim, eps, "layer_norm")  # the head norm is a LayerNorm in every family
        self.decoder_bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32))

    def features(self, hidden, dtype, precision=None) -> jnp.ndarray:
        """LN(act(hidden · W + b)) [B, L, D] in ``dtype`` (the compute dtype)."""
        t = dense(hidden.astype(dtype), self.dense_kernel[...].astype(dtype), precision=precision)
        t = t + self.dense_bias[...].astype(dtype)
        return self.norm(activation(self.act)(t))

    def logits(self, features, decoder_weight, dtype, precision=None) -> jnp.ndarray:
        """Vocabulary logits [B, L, V] (float32) of head ``features`` and the tied ``decoder_weight`` [V, D]."""
        logits_BxLxV = jnp.einsum("bld,vd->blv", features.astype(dtype), decoder_weight.astype(dtype),
                                  precision=precision, preferred_element_type=jnp.float32)
        return logits_BxLxV + self.decoder_bias[...]


class TiedMlmMethods:
    """Mixed into a backbone model that has ``self.compute`` (``ComputeOptions``), ``self.head``
    (``MlmHead``), ``self.embeddings.word`` (the word embedding, whose matrix is the tied decoder weight)
    and an ``encode(...)`` giving hidden states [B, L, D]."""

    def with_compute(self, **changes):
        """Switch compute options in place (dtype, attention impl, remat, precision); returns self."""
        self.compute = dataclasses.replace(self.compute, **changes)
        return self

    def head_features(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """MLM head transform before the vocabulary projection: LN(act(H W + b)) [B, L, D]."""
        return self.head.features(hidden, self.compute.jnp_dtype, self.compute.lax_precision)

    def word_embeddings(self):
        return self.embeddings.word

    def decoder_weight(self) -> jnp.ndarray:
        """The tied decoder weight [V, D] (= the word-embedding matrix)."""
        return self.embeddings.word.embedding[...]

    def decoder_bias(self) -> jnp.ndarray:
        return self.head.decoder_bias[...]

    def project(self, features: jnp.ndarray) -> jnp.ndarray:
        """Vocabulary logits [B, L, V] (float32) from head features."""
        return self.head.logits(features, self.decoder_weight(), self.compute.jnp_dtype, self.compute.lax_precision)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, *,
                 segment_ids=None, dropout_key=None) -> jnp.ndarray:
        hidden_BxLxD = self.encode(input_ids, attention_mask, token_type_ids, position_ids,
                                   segment_ids=segment_ids, dropout_key=dropout_key)
        return self.project(self.head_features(hidden_BxLxD))
