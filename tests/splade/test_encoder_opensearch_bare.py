"""A bare OpenSearch inference-free folder (a Hugging Face MLM folder with idf.json and
query_token_weights.txt, no modules.json) read by ``SparseEncoder.from_pretrained``.

References, both built in the test from the same tiny random BERT / DistilBERT MLM over the uncased BERT
vocabulary: the sentence-transformers Router of those pieces (SparseStaticEmbedding.from_json(idf.json),
MLMTransformer, SpladePooling("max", "relu")), which jsplade reproduces (queries exactly, documents and
scores within 1e-5 relative); and OpenSearch's own reference computation (transformers + torch: documents
max-pooled, log1p(relu), all special tokens zeroed; queries a binary vector of their tokens, special
tokens included, times the idf vector), whose scores equal jsplade's within 1e-5 relative except for the
[UNK] column, where the difference is exactly what the rules predict.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.fixtures import REPO, max_rel
from helpers.st_models import st_encode

from jsplade import SparseEncoder
from jsplade.checkpoints.st_format import read_sparse_encoder_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sentence_transformers")

QUERIES = ["what do parrots eat", "how tall is a giraffe", "the capital of france"]
DOCUMENTS = ["Parrots eat seeds, nuts and fruit.", "A giraffe can be almost six metres tall.",
             "Paris is the capital of France.", "Snow fell on the mountain overnight."]
UNK_QUERY = "\U0001f99c parrots"  # the parrot emoji is not in the BERT vocabulary: [UNK] parrot ##s
UNLISTED = "how"                  # a query token left out of the weight tables: it weighs 0
N_RANDOM_TOKENS = 300


def random_mlm(backbone: str, vocab_size: int):
    """A 2-layer, hidden-32 BERT or DistilBERT MLM, its weights perturbed away from the initialisation."""
    if backbone == "distilbert":
        mlm = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(
            dim=32, n_layers=2, n_heads=4, hidden_dim=48, vocab_size=vocab_size))
    else:
        mlm = transformers.BertForMaskedLM(transformers.BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, vocab_size=vocab_size))
    with torch.no_grad():
        for p in mlm.parameters():
            p.add_(torch.randn(p.shape) * 0.05)
    return mlm.eval()


def write_bare_folder(folder: Path, backbone: str) -> dict[str, float]:
    """The bare OpenSearch folder; returns its weight table (token → float32-exact weight)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(REPO / "data" / "bert-base-uncased"))
    torch.manual_seed(0)
    random_mlm(backbone, tok.vocab_size).save_pretrained(folder)
    tok.save_pretrained(folder)
    rng = np.random.default_rng(0)
    used = {t for text in QUERIES + DOCUMENTS + [UNK_QUERY] for t in tok.tokenize(text)} - {UNLISTED}
    by_id = tok.convert_ids_to_tokens(list(range(tok.vocab_size)))
    others = [by_id[i] for i in rng.choice(tok.vocab_size, N_RANDOM_TOKENS, replace=False)]
    tokens = sorted(used | {"[UNK]", "[CLS]"} | set(others) - {UNLISTED}, key=tok.convert_tokens_to_ids)
    weights = rng.uniform(0.1, 5.0, len(tokens)).astype(np.float32)
    table = {t: float(w) for t, w in zip(tokens, weights)}
    (folder / "idf.json").write_text(json.dumps(table), encoding="utf-8")
    (folder / "query_token_weights.txt").write_text("".join(f"{t}\t{w!r}\n" for t, w in table.items()),
                                                   encoding="utf-8")
    return table


def st_router(folder: Path):
    """The sentence-transformers model OpenSearch publishes for such a folder, built from its pieces."""
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder
    from sentence_transformers.sparse_encoder.modules import (MLMTransformer, Router, SparseStaticEmbedding,
                                                              SpladePooling)
    doc = MLMTransformer(str(folder))
    query = SparseStaticEmbedding.from_json(str(folder / "idf.json"), tokenizer=doc.tokenizer)
    router = Router.for_query_document(query_modules=[query],
                                       document_modules=[doc, SpladePooling("max", activation_function="relu")])
    return StSparseEncoder(modules=[router], similarity_fn_name="dot").eval()



def opensearch_reference(folder: Path, table: dict[str, float], queries, documents):
    """OpenSearch's model-card computation: (query vectors, document vectors, the special token ids)."""
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    V = tok.vocab_size
    feats = tok(documents, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():  # token_type_ids are all 0 for single texts (BERT's default; DistilBERT has none)
        logits = model(input_ids=feats["input_ids"], attention_mask=feats["attention_mask"]).logits
    values = torch.max(logits * feats["attention_mask"].unsqueeze(-1), dim=1).values
    values = torch.log1p(torch.relu(values))
    values[:, tok.all_special_ids] = 0
    idf, vocab = torch.zeros(V), tok.get_vocab()
    for token, weight in table.items():
        idf[vocab[token]] = weight
    q_feats = tok(queries, padding=True, truncation=True, return_tensors="pt")  # special tokens included
    binary = torch.zeros(len(queries), V)
    for row, (ids, mask) in enumerate(zip(q_feats["input_ids"], q_feats["attention_mask"])):
        binary[row, ids[mask.bool()]] = 1
    return (binary * idf).numpy(), values.numpy(), list(tok.all_special_ids)


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def bare(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"opensearch_bare_{request.param}")
    table = write_bare_folder(folder, request.param)
    return folder, table, SparseEncoder.from_pretrained(folder)


def test_reads_as_the_sentence_transformers_router(bare):
    folder, table, enc = bare
    assert read_sparse_encoder_dir(folder).layout == "opensearch_bare"
    assert enc.shape == "inference_free" and enc.query_tokenizer is enc.document_tokenizer
    assert (enc.model.pooling_strategy, enc.model.activation) == ("max", "relu")
    vocab = enc.document_tokenizer.get_vocab()
    assert np.count_nonzero(enc.query_weights) == len(table) and enc.query_weights[vocab[UNLISTED]] == 0
    q_ref, d_ref = st_encode(st_router(folder), QUERIES + [UNK_QUERY], DOCUMENTS)
    q, d = enc.encode_query(QUERIES + [UNK_QUERY], dense=True), enc.encode_document(DOCUMENTS, dense=True)
    np.testing.assert_array_equal(q, q_ref)  # static lookups: exact
    assert max_rel(d, d_ref) < 1e-5
    assert max_rel(enc.similarity(q, d), q_ref @ d_ref.T) < 1e-5


def test_scores_match_opensearch_reference_but_the_unk_column(bare):
    folder, table, enc = bare
    q_os, d_os, special = opensearch_reference(folder, table, QUERIES, DOCUMENTS)
    q, d = enc.encode_query(QUERIES, dense=True), enc.encode_document(DOCUMENTS, dense=True)
    vocab = enc.document_tokenizer.get_vocab()
    cls, unk = vocab["[CLS]"], vocab["[UNK]"]
    # The vectors differ only in the special token columns: OpenSearch's queries keep [CLS] (listed here),
    # its documents zero every special token; jsplade (as sentence-transformers) the other way round.
    assert np.all(q_os[:, cls] == table["[CLS]"]) and np.all(q[:, cls] == 0)
    assert np.all(d_os[:, special] == 0) and np.any(d[:, special] > 0)
    q_cut, d_cut = q.copy(), d.copy()
    q_cut[:, special], d_cut[:, special] = 0, 0
    q_os_cut = q_os.copy()
    q_os_cut[:, special] = 0
    np.testing.assert_array_equal(q_cut, q_os_cut)
    assert max_rel(d_cut, d_os) < 1e-5
    assert max_rel(enc.similarity(q, d), q_os @ d_os.T) < 1e-5

    # A query with an unknown token: OpenSearch weighs [UNK] in the query but zeroes it in the documents;
    # jsplade keeps it on both sides, so its scores are higher by exactly q[UNK] * d[UNK].
    q_unk_os, _, _ = opensearch_reference(folder, table, [UNK_QUERY], DOCUMENTS)
    q_unk = enc.encode_query([UNK_QUERY], dense=True)
    assert q_unk[0, unk] == table["[UNK]"] and q_unk_os[0, unk] == table["[UNK]"]
    predicted = q_unk[0, unk] * d[:, unk]
    assert np.all(predicted > 0)  # a real difference on every document of this random model
    difference = enc.similarity(q_unk, d)[0] - (q_unk_os @ d_os.T)[0]
    assert max_rel(difference, predicted) < 1e-5
    assert max_rel(enc.similarity(q_unk, d_cut), q_unk_os @ d_os.T) < 1e-5


def test_export_is_a_sentence_transformers_router(bare, tmp_path):
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder

    folder, _, enc = bare
    enc.save(tmp_path / "export")
    spec = read_sparse_encoder_dir(tmp_path / "export")
    assert (spec.layout, spec.shape, spec.pooling.activation_function) == ("st_native", "inference_free", "relu")
    q_ref, d_ref = st_encode(st_router(folder), QUERIES + [UNK_QUERY], DOCUMENTS)
    q_back, d_back = st_encode(StSparseEncoder(str(tmp_path / "export")).eval(), QUERIES + [UNK_QUERY], DOCUMENTS)
    np.testing.assert_array_equal(q_back, q_ref)
    assert max_rel(d_back, d_ref) < 1e-5
    again = SparseEncoder.from_pretrained(tmp_path / "export")
    np.testing.assert_array_equal(again.encode_query(QUERIES, dense=True), enc.encode_query(QUERIES, dense=True))


def test_converts_to_a_checkpoint_that_reads_back(bare, tmp_path):
    """jsplade-convert to-jax keeps the folder's files as the checkpoint template; the checkpoint encodes alike."""
    from jsplade.checkpoints.convert import to_jax

    folder, _, enc = bare
    to_jax(folder, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "template" / "idf.json").is_file()
    again = SparseEncoder.from_checkpoint(tmp_path / "ckpt")
    assert (again.shape, again.model.activation) == ("inference_free", "relu")
    np.testing.assert_array_equal(again.query_weights, enc.query_weights)
    np.testing.assert_array_equal(again.encode_query(QUERIES, dense=True), enc.encode_query(QUERIES, dense=True))
    assert max_rel(again.encode_document(DOCUMENTS, dense=True), enc.encode_document(DOCUMENTS, dense=True)) < 1e-6
