"""The SPLADE side: pooling (and the fused, tiled vocabulary head), the static query weights, the trainable
``SpladeModel``, the user-facing ``SparseEncoder`` (encoding, scoring, loading, saving), packing and
length buckets, sparse-vector helpers and initialisations for training from scratch. Uses backbones
only through ``jsplade.backbones.protocol``.

Knows nothing of training or retrieval.

May import: jsplade.files, jsplade.backbones, jsplade.checkpoints.
"""
