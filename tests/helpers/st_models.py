"""Tiny sentence-transformers SparseEncoders built in the test by the installed sentence-transformers: the
references the BERT-family and symmetric-SPLADE tests compare jsplade against."""

from __future__ import annotations

from pathlib import Path

from helpers.fixtures import REPO

SHAPES = ("inference_free", "symmetric", "asymmetric")
BACKBONES = ("bert", "distilbert")
MULTILINGUAL_BACKBONES = ("xlm_roberta",)  # the tiny Unigram tokenizer of helpers.xlmr_tokenizer
SPARSE_BIAS_SHIFT = 1.0  # tiny BERT: about 100 active entries per document instead of ~28,000


def build_st_sparse_encoder(folder: Path, backbone: str, shape: str, *, dropout: float = 0.1, seed: int = 0,
                            sparse: bool = False):
    """(the ST model, its saved directory): a 2-layer, hidden-32 random BERT or DistilBERT MLM over the
    uncased BERT vocabulary (or an XLM-RoBERTa MLM over ``helpers.xlmr_tokenizer``'s vocabulary), as an
    inference-free Router (static query weights | MLM + SpladePooling), a symmetric [MLMTransformer,
    SpladePooling] model or an asymmetric Router (a second random MLM of the same kind, with the log1p_relu
    activation, on the query route).

    Random MLMs give dense vectors (nearly every vocabulary entry active). ``sparse``: the decoder bias is
    lowered by ``SPARSE_BIAS_SHIFT`` so that a document activates a few dozen entries, as a trained SPLADE
    model's do."""
    import torch
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
    from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM,
                              XLMRobertaConfig, XLMRobertaForMaskedLM)

    if backbone not in BACKBONES + MULTILINGUAL_BACKBONES or shape not in SHAPES:
        raise ValueError(f"backbone must be one of {BACKBONES + MULTILINGUAL_BACKBONES} and shape one of {SHAPES}")
    if backbone == "xlm_roberta":
        from helpers.xlmr_tokenizer import xlmr_tokenizer

        tok = xlmr_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(str(REPO / "data" / "bert-base-uncased"))
    torch.manual_seed(seed)

    def random_mlm():
        if backbone == "distilbert":
            mlm = DistilBertForMaskedLM(DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48,
                                                         vocab_size=tok.vocab_size, dropout=dropout,
                                                         attention_dropout=dropout))
        elif backbone == "xlm_roberta":
            mlm = XLMRobertaForMaskedLM(XLMRobertaConfig(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                vocab_size=tok.vocab_size, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                bos_token_id=0, eos_token_id=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
        else:
            mlm = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=48, vocab_size=tok.vocab_size,
                                             hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout))
        with torch.no_grad():
            for p in mlm.parameters():
                p.add_(torch.randn(p.shape) * 0.05)
            if sparse:
                mlm.get_output_embeddings().bias.sub_(SPARSE_BIAS_SHIFT)
        return mlm

    mlm = random_mlm()
    folder = Path(folder)
    mlm.save_pretrained(folder / "mlm")
    tok.save_pretrained(folder / "mlm")
    doc = MLMTransformer(str(folder / "mlm"))
    if shape == "asymmetric":
        random_mlm().save_pretrained(folder / "query_mlm")
        tok.save_pretrained(folder / "query_mlm")
        query = MLMTransformer(str(folder / "query_mlm"), max_seq_length=24)
        router = Router.for_query_document(query_modules=[query, SpladePooling("max", activation_function="log1p_relu")],
                                           document_modules=[doc, SpladePooling("max")])
        st = StSparseEncoder(modules=[router], similarity_fn_name="dot")
    elif shape == "symmetric":
        st = StSparseEncoder(modules=[doc, SpladePooling("max")], similarity_fn_name="dot")
    else:
        query = SparseStaticEmbedding(tokenizer=doc.tokenizer, weight=torch.rand(tok.vocab_size) + 0.1)
        router = Router.for_query_document(query_modules=[query], document_modules=[doc, SpladePooling("max")])
        st = StSparseEncoder(modules=[router], similarity_fn_name="dot")
    st.save(str(folder / "st"))
    return st.eval(), folder / "st"


def st_encode(model, queries, documents):
    """(query vectors, document vectors) of a sentence-transformers SparseEncoder, dense float32 numpy."""
    q = model.encode_query(queries, convert_to_tensor=True).to_dense().numpy()
    d = model.encode_document(documents, convert_to_tensor=True).to_dense().numpy()
    return q, d
