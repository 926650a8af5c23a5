"""Retrieval over encoded corpora: the exact sparse index, BM25, Seismic (approximate), OpenSearch
neural-sparse files, BEIR/MTEB data sets, the sentence-transformers-compatible IR evaluator and hard-negative
mining with teacher scores (distillation rows). Reaches models only through the encoder API
(``encode_query`` / ``encode_document``) and its sparse vectors.

May import: jsplade.files, jsplade.splade.
"""
