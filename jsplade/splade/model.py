"""The trainable SPLADE model: an MLM + SPLADE pooling for documents; for queries one of

* static weights (``shape`` "inference_free": no model call for queries);
* the same MLM and pooling ("symmetric" SPLADE);
* a second MLM with its own pooling ("asymmetric": a Router with an MLM on both routes).

One NNX module holding everything the trainer differentiates: parameters live under ``mlm.*`` (any
``jsplade.backbones`` model, used only through the ``MaskedLM`` protocol), ``query.weight`` (the static
vector) for inference-free models, ``query_mlm.*`` for asymmetric ones.
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
    """``query`` = the static query weights (inference-free), or None: queries go through ``query_mlm`` with
    its own pooling when given (asymmetric), else through ``mlm`` and the document pooling (symmetric)."""

    def __init__(self, mlm: MaskedLM, query: StaticQueryEmbedding | None, pooling_strategy: str = "max",
                 activation: str = "log1p_relu", *, query_mlm: MaskedLM | None = None,
                 query_pooling_strategy: str | None = None, query_activation: str | None = None):
        check_pooling(pooling_strategy, activation)
        if query is not None and not isinstance(query, StaticQueryEmbedding):
            raise TypeError(f"query must be a StaticQueryEmbedding or None (symmetric), got {type(query).__name__}")
        if query is not None and query.vocab_size != mlm.config.vocab_size:
            raise ValueError(f"static query weight has {query.vocab_size} entries but the document model's "
                             f"vocab_size is {mlm.config.vocab_size}")
        if query_mlm is not None:
            if query is not None:
                raise ValueError("give static query weights (query) or a query MLM (query_mlm), not both")
            backbone_of(query_mlm)  # a TypeError unless it is a jsplade backbone model
            if query_mlm.config.vocab_size != mlm.config.vocab_size:
                raise ValueError(f"the query MLM's vocab_size {query_mlm.config.vocab_size} differs from the "
                                 f"document MLM's {mlm.config.vocab_size}: both routes must give the same width")
        elif query_pooling_strategy is not None or query_activation is not None:
            raise ValueError("query_pooling_strategy / query_activation apply only with a query MLM (query_mlm)")
        self.mlm = mlm
        self.query = query
        self.query_mlm = query_mlm
        self.pooling_strategy = pooling_strategy
        self.activation = activation
        self.query_pooling_strategy = query_pooling_strategy or pooling_strategy
        self.query_activation = query_activation or activation
        check_pooling(self.query_pooling_strategy, self.query_activation)

    @property
    def vocab_size(self) -> int:
        return self.mlm.config.vocab_size

    @property
    def inference_free(self) -> bool:
        """Whether queries use static weights (no model call) rather than an MLM."""
        return self.query is not None

    @property
    def shape(self) -> str:
        """"inference_free", "symmetric" or "asymmetric" (module docstring)."""
        if self.query is not None:
            return "inference_free"
        return "symmetric" if self.query_mlm is None else "asymmetric"

    @staticmethod
    def _prefixed(prefix: str, table) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
        return tuple(((f"^{prefix}\\." + pattern[1:]) if pattern.startswith("^") else (f"^{prefix}\\..*" + pattern),
                      axes) for pattern, axes in table)

    def logical_axes(self) -> tuple[tuple[str, tuple[str | None, ...]], ...]:
        """(regex on the parameter path, logical axis per dimension) for every parameter: the backbone's
        table under ``mlm.`` (and ``query_mlm.``) and the static query weight (the sharding rules read this)."""
        out = QUERY_LOGICAL_AXES if self.inference_free else ()
        if self.query_mlm is not None:
            out += self._prefixed("query_mlm", backbone_of(self.query_mlm).logical_axes)
        return out + self._prefixed("mlm", backbone_of(self.mlm).logical_axes)

    def encode_documents(self, input_ids, attention_mask, *, position_ids=None, segment_ids=None,
                         dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Document vectors [B, V] float32 (fused tiled head unless ``mlm.compute.head == "plain"``)."""
        return _mlm_vectors(self.mlm, self.pooling_strategy, self.activation, input_ids, attention_mask,
                            position_ids, segment_ids, dropout_key)

    def encode_query_tokens(self, input_ids, attention_mask, *, dropout_key: jax.Array | None = None) -> jnp.ndarray:
        """Query vectors [B, V] of token ids through an MLM: the query MLM and its pooling (asymmetric) or the
        document MLM and pooling (symmetric). Inference-free models use ``encode_queries``."""
        if self.query is not None:
            raise ValueError("an inference-free model encodes queries with static weights: use encode_queries "
                             "on a token-presence matrix")
        if self.query_mlm is None:
            return self.encode_documents(input_ids, attention_mask, dropout_key=dropout_key)
        return _mlm_vectors(self.query_mlm, self.query_pooling_strategy, self.query_activation, input_ids,
                            attention_mask, None, None, dropout_key)

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
            raise ValueError(f"{'an' if self.shape == 'asymmetric' else 'a'} {self.shape} model has no static query "
                             "weights: encode queries with "
                             "encode_query_tokens on their token ids")
        return self.query(presence)


def _mlm_vectors(mlm: MaskedLM, strategy: str, activation: str, input_ids, attention_mask, position_ids,
                 segment_ids, dropout_key) -> jnp.ndarray:
    """SPLADE vectors [B, V] of one MLM (fused tiled head unless ``mlm.compute.head == "plain"``)."""
    hidden = mlm.encode(input_ids, attention_mask, position_ids=position_ids, segment_ids=segment_ids,
                        dropout_key=dropout_key)
    features = mlm.head_features(hidden)
    opts = mlm.compute
    if opts.head == "fused":
        return fused_splade_pool(features, mlm.decoder_weight(), mlm.decoder_bias(), mask_to_group(attention_mask),
                                 1, strategy, activation, chunk_size=opts.head_chunk, precision=opts.lax_precision,
                                 vocab_tile=opts.vocab_tile)[:, 0]
    logits = mlm.project(features)
    return splade_pool(logits, attention_mask, strategy, activation)
