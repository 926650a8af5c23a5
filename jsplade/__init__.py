"""jsplade: inference-free learned sparse retrieval (OpenSearch neural-sparse v3-gte) in JAX."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names resolved lazily so that `import jsplade` stays cheap and a submodule
# that is not needed is never imported.
_LAZY = {
    "SparseEncoder": "jsplade.splade.encoder",
    "load_mlm": "jsplade.checkpoints.hf_folder",
    "save_mlm": "jsplade.checkpoints.hf_folder",
    "GteConfig": "jsplade.backbones.gte_config",
    "GteForMaskedLM": "jsplade.backbones.gte",
    "ComputeOptions": "jsplade.backbones.gte",
    "export_sparse_encoder": "jsplade.checkpoints.st_export",
    "export_mlm": "jsplade.checkpoints.st_export",
    "to_jax": "jsplade.checkpoints.convert",
    "to_hf": "jsplade.checkpoints.convert",
    "TrainConfig": "jsplade.training.config",
    "Trainer": "jsplade.training.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jsplade' has no attribute {name!r}")


__all__ = sorted(_LAZY)
