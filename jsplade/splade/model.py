"""The trainable SPLADE model: an MLM + SPLADE pooling for documents; for queries either static weights
(inference-free) or the same MLM and pooling (symmetric SPLADE).

One NNX module holding everything the trainer differentiates: parameters live under ``mlm.*`` (any
``jsplade.backbones`` model, used only through the ``MaskedLM`` protocol) and, for inference-free models,
``query.weight`` (the static vector).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jsplade.backbones.protocol import MaskedLM
from jsplade.backbones.registry import backbone_of
from jsplade.splade.fused_head import fused_splade_pool, mask_to_group
from jsplade.splade.pooling import check_pooling, splade_pool
from jsplade.splade.static_embedding import StaticQueryEmbedding

# Logical axes of the parameters the SPLADE side adds to the backbone's (``Backbone.logical_axes``).
QUERY_LOGICAL_AXES = ((r"^query\.weight$", ("vocab",)),)


class SpladeModel(nnx.Module):
    """``query`` = the static query weights (inference-free), or None: queries go through ``mlm`` (symmetric)."""

    def __init__(self, mlm: MaskedLM, query: StaticQueryEmbedding | None, pooling_strategy: str = "max",
                 activation: str = "log1p_relu"):
        check_pooling(pooling_strategy, activation)
        if query is not None and not isinstance(query, StaticQueryEmbedding):
            raise TypeError(f"query must be a StaticQueryEmbedding or None (symmetric), got {type(query).__name__}")
        if query is not None and query.vocab_size != mlm.config.vocab_size:
            raise ValueError(f"static query weight has {query.vocab_size} entries but the document model's "
                             f"vocab_size is {mlm.config.vocab_size}")
        self.mlm = mlm
        self.query = query
        self.pooling_strategy = pooling_strategy
        self.activation = activation

    @property
    def vocab_size(self) -> int:
        return self.mlm.config.vocab_size

    @property
    def inference_free(self) -> bool:
        """Whether queries use static weights (no model call) rather than the MLM."""
        return self.query is not None

    def logical_axes(self) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
        """(regex on the parameter path, logical axis per dimension) for every parameter: the backbone's
        table under ``mlm.`` and the static query weight (the sharding rules read this)."""
        backbone = tuple(((r"^mlm\." + pattern[1:]) if pattern.startswith("^") else (r"^mlm\..*" + pattern), axes)
                         for pattern, axes in backbone_of(self.mlm).logical_axes)
        return (QUERY_LOGICAL_AXES if self.inference_free else ()) + backbone

    def encode_documents(self, input_ids, attention_mask, *, position_ids=None, segment_ids=None,
                         dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Document vectors [B, V] float32 (fused tiled head unless ``mlm.compute.head == "plain"``)."""
        hidden = self.mlm.encode(input_ids, attention_mask, position_ids=position_ids, segment_ids=segment_ids,
                                 dropout_key=dropout_key)
        features = self.mlm.head_features(hidden)
        opts = self.mlm.compute
        if opts.head == "fused":
            return fused_splade_pool(features, self.mlm.decoder_weight(), self.mlm.decoder_bias(),
                                     mask_to_group(attention_mask), 1, self.pooling_strategy, self.activation,
                                     chunk_size=opts.head_chunk, precision=opts.lax_precision,
                                     vocab_tile=opts.vocab_tile)[:, 0]
        logits = self.mlm.project(features)
        return splade_pool(logits, attention_mask, self.pooling_strategy, self.activation)

    def encode_packed(self, input_ids, attention_mask, position_ids, segment_ids, group_ids, n_groups: int, *,
                      dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Vectors [R, G, V] of packed rows (``jsplade.splade.packing``): per-document positions, block-diagonal
        attention, per-document pooling through the fused head."""
        hidden = self.mlm.encode(input_ids, attention_mask, position_ids=position_ids, segment_ids=segment_ids,
                                 dropout_key=dropout_key)
        features = self.mlm.head_features(hidden)
        opts = self.mlm.compute
        return fused_splade_pool(features, self.mlm.decoder_weight(), self.mlm.decoder_bias(),
                                 group_ids, n_groups, self.pooling_strategy, self.activation,
                                 chunk_size=opts.head_chunk, precision=opts.lax_precision, vocab_tile=opts.vocab_tile)

    def encode_queries(self, presence: jnp.ndarray) -> jnp.ndarray:
        """Query vectors [B, V] of a binary token-presence matrix [B, V] (inference-free models)."""
        if self.query is None:
            raise ValueError("a symmetric model has no static query weights: encode queries with "
                             "encode_documents on their token ids (the same MLM and pooling)")
        return self.query(presence)
