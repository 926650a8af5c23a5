"""The command-line programs (``jsplade-train``, ``-convert``, ``-eval``, ``-index``, the demo); thin wrappers live
in ``train/`` and ``convert/``, all logic in the library.

May import: jsplade.files, jsplade.backbones, jsplade.checkpoints, jsplade.splade, jsplade.training, jsplade.retrieval, jsplade.limit.
"""
