"""Files ⇄ in-memory models: safetensors, bare HF model folders, sentence-transformers ``SparseEncoder``
directories (read and write), jsplade's orbax checkpoint directories and the conversions between them.
A sparse encoder travels between these as ``parts.EncoderParts`` (backbone, static weights, pooling,
tokenizers, settings); the SPLADE side builds its ``SparseEncoder`` from them.

May import: jsplade.files, jsplade.backbones.
"""
