"""Masked-language-model backbones: each family's config (round-tripping the HF ``config.json``), its
Flax NNX network, its weight-name table, and the tokenizer. ``protocol`` says what the rest of jsplade may
use of a backbone (``MaskedLM``, ``Backbone``); ``registry`` finds a family by ``model_type`` or by model;
``layers/`` holds the kernels the networks are built from.

Knows nothing of SPLADE, checkpoints on disk, training or retrieval.

May import: jsplade.files.
"""
