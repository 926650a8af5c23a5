"""The trainable asymmetric SPLADE model: document MLM + SPLADE pooling, static query weights.

One NNX module holding everything the trainer differentiates: parameters live under ``mlm.*`` (the
GTE encoder, ``jsplade.backbones.gte``) and ``query.weight`` (the static vector).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jsplade.backbones.gte import GteForMaskedLM
from jsplade.splade.fused_head import fused_splade_pool, mask_to_group
from jsplade.splade.pooling import check_pooling, splade_pool
from jsplade.splade.static_embedding import StaticQueryEmbedding


class SpladeModel(nnx.Module):
    def __init__(self, mlm: GteForMaskedLM, query: StaticQueryEmbedding, pooling_strategy: str = "max",
                 activation: str = "log1p_relu"):
        check_pooling(pooling_strategy, activation)
        if query.vocab_size != mlm.config.vocab_size:
            raise ValueError(f"static query weight has {query.vocab_size} entries but the document model's "
                             f"vocab_size is {mlm.config.vocab_size}")
        self.mlm = mlm
        self.query = query
        self.pooling_strategy = pooling_strategy
        self.activation = activation

    @property
    def vocab_size(self) -> int:
        return self.mlm.config.vocab_size

    def encode_documents(self, input_ids_BxL, attention_mask_BxL, *, dropout_key: jax.Array | None = None,
                         position_ids_BxL=None, segment_ids_BxL=None) -> jnp.ndarray:
        """Document vectors [B, V] float32 (fused tiled head unless ``mlm.compute.head == "plain"``)."""
        hidden = self.mlm.encode(input_ids_BxL, attention_mask_BxL, position_ids_BxL=position_ids_BxL,
                                 segment_ids_BxL=segment_ids_BxL, dropout_key=dropout_key)
        features = self.mlm.head_features(hidden)
        opts = self.mlm.compute
        if opts.head == "fused":
            return fused_splade_pool(features, self.mlm.decoder_weight(), self.mlm.head.decoder_bias[...],
                                     mask_to_group(attention_mask_BxL), 1, self.pooling_strategy, self.activation,
                                     chunk_size=opts.head_chunk, precision=opts.lax_precision,
                                     vocab_tile=opts.vocab_tile)[:, 0]
        logits = self.mlm.project(features)
        return splade_pool(logits, attention_mask_BxL, self.pooling_strategy, self.activation)

    def encode_packed(self, input_ids_RxL, attention_mask_RxL, position_ids_RxL, segment_ids_RxL, group_ids_RxL,
                      n_groups: int, *, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Vectors [R, G, V] of packed rows (``jsplade.splade.packing``): per-document positions, block-diagonal
        attention, per-document pooling through the fused head."""
        hidden = self.mlm.encode(input_ids_RxL, attention_mask_RxL, position_ids_BxL=position_ids_RxL,
                                 segment_ids_BxL=segment_ids_RxL, dropout_key=dropout_key)
        features = self.mlm.head_features(hidden)
        opts = self.mlm.compute
        return fused_splade_pool(features, self.mlm.decoder_weight(), self.mlm.head.decoder_bias[...],
                                 group_ids_RxL, n_groups, self.pooling_strategy, self.activation,
                                 chunk_size=opts.head_chunk, precision=opts.lax_precision, vocab_tile=opts.vocab_tile)

    def encode_queries(self, presence_BxV: jnp.ndarray) -> jnp.ndarray:
        return self.query(presence_BxV)
