"""Tiny sentence-transformers SparseEncoders built in the test by the installed sentence-transformers: the
references the BERT-family and symmetric-SPLADE tests compare jsplade against."""

from __future__ import annotations

from pathlib import Path

from helpers.fixtures import REPO

SHAPES = ("inference_free", "symmetric")
BACKBONES = ("bert", "distilbert")


def build_st_sparse_encoder(folder: Path, backbone: str, shape: str, *, dropout: float = 0.1, seed: int = 0):
    """(the ST model, its saved directory): a 2-layer, hidden-32 random BERT or DistilBERT MLM over the
    uncased BERT vocabulary, as an inference-free Router (static query weights | MLM + SpladePooling) or a
    symmetric [MLMTransformer, SpladePooling] model."""
    import torch
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM

    if backbone not in BACKBONES or shape not in SHAPES:
        raise ValueError(f"backbone must be one of {BACKBONES} and shape one of {SHAPES}")
    tok = AutoTokenizer.from_pretrained(str(REPO / "data" / "bert-base-uncased"))
    torch.manual_seed(seed)
    if backbone == "distilbert":
        mlm = DistilBertForMaskedLM(DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                                     vocab_size=tok.vocab_size, dropout=dropout,
                                                     attention_dropout=dropout))
    else:
        mlm = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=48, vocab_size=tok.vocab_size, hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout))
    with torch.no_grad():
        for p in mlm.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    folder = Path(folder)
    mlm.save_pretrained(folder / "mlm")
    tok.save_pretrained(folder / "mlm")
    doc = MLMTransformer(str(folder / "mlm"))
    if shape == "symmetric":
        st = StSparseEncoder(modules=[doc, SpladePooling("max")], similarity_fn_name="dot")
    else:
        query = SparseStaticEmbedding(tokenizer=doc.tokenizer, weight=torch.rand(tok.vocab_size) + 0.1)
        router = Router.for_query_document(query_modules=[query], document_modules=[doc, SpladePooling("max")])
        st = StSparseEncoder(modules=[router], similarity_fn_name="dot")
    st.save(str(folder / "st"))
    return st.eval(), folder / "st"
