"""The command-line programs (``jsplade-train``, ``-convert``, ``-eval``, ``-index``, ``-mine``, the demo, the
LIMIT recipe's inputs); thin wrappers live in ``train/`` and ``convert/``, all logic in the library.

May import: jsplade.files, jsplade.backbones, jsplade.checkpoints, jsplade.splade, jsplade.training, jsplade.retrieval, jsplade.limit.
"""
