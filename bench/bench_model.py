"""The benchmark model: a v3-gte-shaped SparseEncoder with seeded random ("recipe") weights.

One directory that both sides load: jsplade (``SparseEncoder.from_pretrained``) and
sentence-transformers (``SparseEncoder(path)``, transformers' native ``GteForMaskedLM``: the document
transformer is written with native ``gte`` naming, so no remote code is needed). Tokenizers and the
static query weights come from the bundled tiny fixture model (bert-base-uncased vocabulary, 30522).

The BERT-family figures' models are written by transformers (and sentence-transformers) themselves:
``build_distilbert_bench_model`` ((e): a DistilBERT-base inference-free SparseEncoder directory) and
``build_xlmr_mlm`` ((f): a bare XLM-RoBERTa-base MLM folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURE_MODEL = REPO / "tests" / "fixtures" / "sparse_encoder" / "model_st_native"


def build_bench_model(dst: Path, num_layers: int = 12, seed: int = 1234) -> Path:
    """Write the model once (idempotent: an existing complete directory is reused)."""
    from jsplade.backbones.gte import GTE
    from jsplade.backbones.gte_config import v3_gte_config
    from jsplade.backbones.recipe import recipe_state_dict
    from jsplade.checkpoints.hf_folder import mlm_from_params, save_mlm
    from jsplade.files import atomic_directory

    dst = Path(dst)
    marker = dst / "bench_model.json"
    if marker.exists() and json.loads(marker.read_text()).get("num_layers") == num_layers:
        return dst
    config = v3_gte_config(num_hidden_layers=num_layers)
    with atomic_directory(dst, overwrite=True) as tmp:
        shutil.copytree(FIXTURE_MODEL, tmp, dirs_exist_ok=True)
        doc = tmp / "document_0_MLMTransformer"
        (doc / "model.safetensors").unlink()
        mlm = mlm_from_params(config, GTE.hf_to_params(recipe_state_dict(config, seed), config))
        save_mlm(mlm, doc, naming="gte")
        (tmp / "bench_model.json").write_text(json.dumps({"num_layers": num_layers, "seed": seed}))
    return dst


# --------------------------------------------------------------------------- BERT-family models, by transformers
# (e) DistilBERT-base, the doc-v3-distill shape; (f) XLM-RoBERTa-base. transformers' own seeded initialisation,
# then every parameter (biases and norm scales included, which the initialisation leaves at 0 and 1) moved by
# seeded noise so that nothing in the comparison is trivially zero.
DISTILBERT_BASE = dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512)
XLMR_BASE = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 vocab_size=250002, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                 layer_norm_eps=1e-5, type_vocab_size=1)
BERT_VOCAB = REPO / "data" / "bert-base-uncased"
NOISE = 0.02


def _perturb(model, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():  # tied weights are one parameter: moved once
            p.add_(torch.randn(p.shape, generator=gen) * NOISE)


def _is_built(marker: Path, spec: dict) -> bool:
    return marker.exists() and json.loads(marker.read_text()) == spec


def build_distilbert_bench_model(dst: Path, num_layers: int = 6, seed: int = 1234, **shape) -> Path:
    """A DistilBERT inference-free SparseEncoder directory written by sentence-transformers: a Router with
    static query weights (SparseStaticEmbedding) and, for documents, MLMTransformer + SpladePooling("max",
    "log1p_relu") over a seeded random DistilBertForMaskedLM (``DISTILBERT_BASE`` unless ``shape`` overrides;
    the uncased BERT vocabulary of data/bert-base-uncased). Idempotent."""
    import tempfile

    import torch
    from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, Router, SparseStaticEmbedding, SpladePooling
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForMaskedLM

    from jsplade.files import atomic_directory

    dst = Path(dst)
    kwargs = {**DISTILBERT_BASE, **shape, "n_layers": num_layers}
    spec = {"kind": "distilbert_inference_free", "seed": seed, **kwargs}
    if _is_built(dst / "bench_model.json", spec):
        return dst
    tok = AutoTokenizer.from_pretrained(str(BERT_VOCAB))
    torch.manual_seed(seed)
    mlm = DistilBertForMaskedLM(DistilBertConfig(vocab_size=tok.vocab_size, **kwargs)).eval()
    _perturb(mlm, seed)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dst.name}.src.", dir=dst.parent) as src, \
            atomic_directory(dst, overwrite=True) as tmp:
        mlm.save_pretrained(src)
        tok.save_pretrained(src)
        doc = MLMTransformer(src)
        weight = torch.rand(tok.vocab_size, generator=torch.Generator().manual_seed(seed)) + 0.1
        query = SparseStaticEmbedding(tokenizer=doc.tokenizer, weight=weight)
        router = Router.for_query_document(
            query_modules=[query], document_modules=[doc, SpladePooling("max", activation_function="log1p_relu")])
        StSparseEncoder(modules=[router], similarity_fn_name="dot").save(str(tmp))
        (tmp / "bench_model.json").write_text(json.dumps(spec))
    return dst


def build_xlmr_mlm(dst: Path, num_layers: int = 12, vocab_size: int = 250002, seed: int = 1234, **shape) -> Path:
    """A bare XLMRobertaForMaskedLM folder (config.json + model.safetensors, decoder tied to the embeddings)
    of ``XLMR_BASE`` with ``num_layers`` and ``vocab_size``, seeded random weights. Idempotent."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForMaskedLM

    from jsplade.files import atomic_directory

    dst = Path(dst)
    kwargs = {**XLMR_BASE, **shape, "num_hidden_layers": num_layers, "vocab_size": vocab_size}
    spec = {"kind": "xlm_roberta_mlm", "seed": seed, **kwargs}
    if _is_built(dst / "bench_model.json", spec):
        return dst
    torch.manual_seed(seed)
    mlm = XLMRobertaForMaskedLM(XLMRobertaConfig(**kwargs)).eval()
    _perturb(mlm, seed)
    with atomic_directory(dst, overwrite=True) as tmp:
        mlm.save_pretrained(tmp)
        (tmp / "bench_model.json").write_text(json.dumps(spec))
    return dst
