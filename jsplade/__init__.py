"""jsplade: learned sparse retrieval (SPLADE, inference-free and symmetric) in pure JAX.

The package, by role; imports only run downhill (each sub-package's docstring says what it may import,
and ``tests/test_imports.py`` holds every module to it):

    files        atomic file writes, JSON reading                      (imports nothing of jsplade)
    backbones    masked-language models: configs, networks, weight names, tokenizers; ``layers/`` their kernels
    checkpoints  files ⇄ models: safetensors, HF folders, sentence-transformers directories, orbax, conversion
    splade       the SPLADE side: pooling, fused head, static query weights, SpladeModel, SparseEncoder
    retrieval    indexes, BM25, OpenSearch / Seismic, BEIR data, the evaluator (through the encoder API)
    training     losses, optimizer, schedules, data, sharding, the trainer
    limit        the bundled LIMIT data and the demo (the main job)
    cli          the programs

The public names below are loaded on first use, so ``import jsplade`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "SparseEncoder": "jsplade.splade.encoder",
    "export_sparse_encoder": "jsplade.splade.encoder",
    "SpladeModel": "jsplade.splade.model",
    "load_mlm": "jsplade.checkpoints.hf_folder",
    "save_mlm": "jsplade.checkpoints.hf_folder",
    "export_mlm": "jsplade.checkpoints.st_export",
    "EncoderParts": "jsplade.checkpoints.parts",
    "to_jax": "jsplade.checkpoints.convert",
    "to_hf": "jsplade.checkpoints.convert",
    "ComputeOptions": "jsplade.backbones.compute",
    "MaskedLM": "jsplade.backbones.protocol",
    "GteConfig": "jsplade.backbones.gte_config",
    "GteForMaskedLM": "jsplade.backbones.gte",
    "WordPieceTokenizer": "jsplade.backbones.tokenizer",
    "TrainConfig": "jsplade.training.config",
    "Trainer": "jsplade.training.trainer",
    "SparseIndex": "jsplade.retrieval.index",
    "SparseIREvaluator": "jsplade.retrieval.evaluation",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jsplade' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
