"""The bundled LIMIT data (the corpus, queries and the generator of LIMIT-style training pairs) and the
demo that trains, indexes and evaluates on it (``make demo``).

May import: jsplade.files, jsplade.backbones, jsplade.checkpoints, jsplade.splade, jsplade.training, jsplade.retrieval.
"""
