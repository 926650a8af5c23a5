"""jsplade: inference-free learned sparse retrieval (OpenSearch neural-sparse v3-gte) in JAX."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public names resolved lazily so that `import jsplade` stays cheap and a submodule
# that is not needed is never imported.
_LAZY = {
    "SparseEncoder": "jsplade.encoder",
    "load_mlm": "jsplade.hf_checkpoint",
    "save_mlm": "jsplade.hf_checkpoint",
    "GteConfig": "jsplade.config",
    "GteForMaskedLM": "jsplade.model",
    "ComputeOptions": "jsplade.model",
    "export_sparse_encoder": "jsplade.st_export",
    "export_mlm": "jsplade.st_export",
    "to_jax": "jsplade.convert",
    "to_hf": "jsplade.convert",
    "TrainConfig": "jsplade.train_config",
    "Trainer": "jsplade.trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jsplade' has no attribute {name!r}")


__all__ = sorted(_LAZY)
