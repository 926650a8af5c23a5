"""Initialisations for training a sparse encoder from scratch.

``copy_friendly_init``: a masked-LM (any backbone, through the ``MaskedLM`` protocol) whose SPLADE vector starts as "the document's own tokens": word
embeddings N(0, 1), the MLM head's dense layer the identity and the decoder bias −``bias``. With a
tied decoder the logit of vocabulary entry v at token t is ≈ LN(gelu(e_t))·e_v, which is ≈ 0.8·D for
v = t and N(0, D) otherwise, so after the bias only the present tokens (plus a little noise) are active.
Training then only has to learn *weights*, not the copy mechanism itself, which a small model cannot
discover in a few hundred CPU steps from a random head.

``idf_query_weights``: static query weights initialised as inverse document frequencies over a
training corpus (scaled to [0, 1]); tokens never seen get the largest weight.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jsplade.backbones.protocol import MaskedLM


def copy_friendly_init(mlm: MaskedLM, seed: int = 0, bias: float | None = None) -> MaskedLM:
    """Re-initialise ``mlm`` in place (see module docstring); ``bias`` defaults to 0.47·hidden_size."""
    d = mlm.config.hidden_size
    v = mlm.config.vocab_size
    bias = 0.47 * d if bias is None else float(bias)
    key = jax.random.key(seed)
    mlm.word_embeddings().embedding.set_value(jax.random.normal(key, (v, d), jnp.float32))
    mlm.head.dense_kernel.set_value(jnp.eye(d, dtype=jnp.float32))
    mlm.head.dense_bias.set_value(jnp.zeros((d,), jnp.float32))
    mlm.head.decoder_bias.set_value(jnp.full((v,), -bias, jnp.float32))
    return mlm


def idf_query_weights(token_ids_per_document: Sequence[np.ndarray], vocab_size: int) -> np.ndarray:
    """BM25-style idf log(1 + (N − df + ½)/(df + ½)) per token id over the documents, divided by its
    maximum (float32 [V], values in (0, 1])."""
    n = len(token_ids_per_document)
    if n == 0:
        raise ValueError("idf_query_weights needs at least one document")
    df = np.zeros(vocab_size, np.float64)
    for ids in token_ids_per_document:
        df[np.unique(np.asarray(ids, np.int64))] += 1
    idf = np.log1p((n - df + 0.5) / (df + 0.5))
    return (idf / idf.max()).astype(np.float32) if math.isfinite(idf.max()) else np.ones(vocab_size, np.float32)
