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
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jsplade' has no attribute {name!r}")


__all__ = sorted(_LAZY)
