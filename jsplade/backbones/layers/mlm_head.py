"""The masked-language-model head BERT-family models share: transform, then the tied vocabulary projection.

``features(h) = LayerNorm(act(h·W + b))`` [B, L, D]; ``logits = features · Eᵀ + decoder_bias`` [B, L, V]
with E the word-embedding matrix (the decoder weight is tied to it and not a parameter of the head).
GTE's ``lm_head``, BERT's ``cls.predictions``, DistilBERT's ``vocab_transform``/``vocab_layer_norm``/
``vocab_projector`` and XLM-R's ``lm_head`` all have this form; the SPLADE side reads the features, the
tied weight and the bias from here (the fused head never forms the logits).

Parameters: ``dense_kernel`` [D, D], ``dense_bias`` [D], ``norm.scale`` / ``norm.bias`` [D], ``decoder_bias`` [V].
"""

from __future__ import annotations

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
