"""SparseEncoder on a tiny XLM-RoBERTa backbone against the installed sentence-transformers.

The ST models (``helpers.st_models``, backbone "xlm_roberta") use the SentencePiece/Unigram tokenizer of
``helpers.xlmr_tokenizer``. As in test_encoder.py: static query vectors exact, MLM vectors and scores within
1e-5 relative to the largest value, and jsplade's export loads back in ST with the same encodings
(observed: documents 3.0e-7, MLM queries 2.3e-7 / 3.7e-7 symmetric / asymmetric, scores < 1e-7).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.fixtures import max_rel
from helpers.st_models import SHAPES, build_st_sparse_encoder, st_encode

from jsplade import SparseEncoder

TOL = 1e-5
QUERIES = ["Mars is known for its red planet?", "東京 タワー", "  la planet  est une  ", "ﬁne ＭＭars\t🚀", ""]
DOCUMENTS = ["Mars, known for its red planet, is the planet of the red and the mars.",
             "Der Planet und die straße; la planet est une planet.", "東京 タワー is in 東京!",
             "tab\tnew\nline, double  spaces and <mask> and ﬁne ＭＭars 🚀 Ω",
             "the planet of mars " * 20, "   "]


@pytest.mark.parametrize("shape", SHAPES)
def test_xlm_roberta_models_match_sentence_transformers(tmp_path, shape):
    """Inference-free, symmetric and asymmetric models: query and document encodings and scores against ST,
    document tokens against ST's own tokenizer, the export read back by ST and by jsplade."""
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder

    st, folder = build_st_sparse_encoder(tmp_path, "xlm_roberta", shape)

    q_ref, d_ref = st_encode(st, QUERIES, DOCUMENTS)
    enc = SparseEncoder.from_pretrained(folder)
    assert enc.shape == shape and enc.vocab_size == q_ref.shape[1] == 56
    st_tok = st.tokenize(DOCUMENTS, task="document")
    rows, _ = enc.document_tokenizer.encode_documents(DOCUMENTS, enc.max_seq_length)
    for i, row in enumerate(rows):
        want = st_tok["input_ids"][i][st_tok["attention_mask"][i] == 1].tolist()
        assert row.tolist() == want, DOCUMENTS[i]

    q, d = enc.encode_query(QUERIES, dense=True), enc.encode_document(DOCUMENTS, dense=True)
    assert (d > 0).sum(axis=1).min() > 0 and (q_ref > 0).sum() > 0  # not vacuous
    if shape == "inference_free":
        np.testing.assert_array_equal(q, q_ref)  # static lookups: exact
    else:
        assert max_rel(q, q_ref) < TOL
    assert max_rel(d, d_ref) < TOL
    assert max_rel(enc.similarity(q, d), q_ref @ d_ref.T) < TOL

    enc.save(tmp_path / "export")
    q_back, d_back = st_encode(StSparseEncoder(str(tmp_path / "export")).eval(), QUERIES, DOCUMENTS)
    assert max_rel(q_back, q_ref) < TOL and max_rel(d_back, d_ref) < TOL
    again = SparseEncoder.from_pretrained(tmp_path / "export")
    assert again.shape == shape
    np.testing.assert_array_equal(again.encode_query(QUERIES, dense=True), q)


def test_folder_with_the_converter_pipeline_reads_as_sentence_transformers_reads_it(tmp_path):
    """A tokenizer.json holding the converter's pipeline (normalizer [charsmap, collapse spaces], Metaspace
    alone), as folders written before transformers 5 hold it, instead of the one ST re-saves: ST (through
    transformers 5) rebuilds it on load, and so must jsplade; the texts include whitespace cases where reading
    the file as is gives other tokens."""
    import shutil

    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder

    _, folder = build_st_sparse_encoder(tmp_path, "xlm_roberta", "symmetric")
    shutil.copy(tmp_path / "mlm" / "tokenizer.json", folder / "tokenizer.json")
    assert "WhitespaceSplit" not in (folder / "tokenizer.json").read_text()
    st = StSparseEncoder(str(folder)).eval()
    enc = SparseEncoder.from_pretrained(folder)
    st_tok = st.tokenize(QUERIES + DOCUMENTS)
    rows, _ = enc.document_tokenizer.encode_documents(QUERIES + DOCUMENTS, enc.max_seq_length)
    for i, row in enumerate(rows):
        assert row.tolist() == st_tok["input_ids"][i][st_tok["attention_mask"][i] == 1].tolist(), i
    q_ref, d_ref = st_encode(st, QUERIES, DOCUMENTS)
    assert max_rel(enc.encode_query(QUERIES, dense=True), q_ref) < TOL
    assert max_rel(enc.encode_document(DOCUMENTS, dense=True), d_ref) < TOL
