"""BERT-base, DistilBERT-base and XLM-R-base sized MLMs against transformers.

Each case builds the transformers model at its published base dimensions with transformers' own seeded
random initialisation (dropout 0), saves it with ``save_pretrained`` and loads the folder with
``jsplade.load_mlm``. Logits at every position (padding included) of a padded batch must agree within 1e-4
relative to the largest |logit|, eager and jit-compiled; a packed row (two documents, ``segment_ids``) must
give each document the logits transformers gives it alone, within 1e-4.

Observed max relative errors (CPU, float32; padded eager / jit / packed): BERT 1.2e-6 / 1.4e-6 / 1.4e-6,
DistilBERT 1.0e-6 / 1.1e-6 / 1.2e-6, XLM-R 1.3e-6 / 1.2e-6 / 1.3e-6 (largest |logit| ~2.7–2.9). The
initialisation leaves biases at 0 and norm scales at 1; test_bert.py's tiny cases randomise those too.
About 45 s on 2 CPU cores, most of it building and saving the models.
"""

from __future__ import annotations

import gc

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from helpers.fixtures import max_rel, packed_row
from transformers import (BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM, XLMRobertaConfig,
                          XLMRobertaForMaskedLM)

from jsplade import load_mlm

TOL = 1e-4
CASES = {
    "bert_base": (BertConfig, BertForMaskedLM,
                  dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                       vocab_size=30522, max_position_embeddings=512, type_vocab_size=2, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0)),
    "distilbert_base": (DistilBertConfig, DistilBertForMaskedLM,
                        dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, vocab_size=30522,
                             max_position_embeddings=512, dropout=0.0, attention_dropout=0.0)),
    "xlm_roberta_base": (XLMRobertaConfig, XLMRobertaForMaskedLM,
                         dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                              vocab_size=250002, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
                              layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    """(name, transformers model, jsplade model); one case alive at a time, its folder deleted after loading."""
    cfg_cls, model_cls, kwargs = CASES[request.param]
    torch.manual_seed(0)
    ref = model_cls(cfg_cls(**kwargs)).eval()
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    mlm = load_mlm(folder)
    for f in folder.iterdir():
        f.unlink()
    yield request.param, ref, mlm
    del ref, mlm
    gc.collect()


def _real_ids(rng, cfg, n) -> np.ndarray:
    """Random token ids in [3, vocab) that are never the padding id."""
    ids = rng.integers(3, cfg.vocab_size, n).astype(np.int32)
    ids[ids == cfg.pad_token_id] = cfg.pad_token_id + 2
    return ids


def _reference(ref, ids, mask, types=None):
    kw = {} if types is None else {"token_type_ids": torch.tensor(types, dtype=torch.long)}
    with torch.no_grad():
        return ref(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), **kw
                   ).logits.numpy()


def _jit(mlm, fn):
    """``fn(model, *args)`` compiled with the parameters as arguments (not baked-in constants)."""
    graphdef, state = nnx.split(mlm)
    compiled = jax.jit(lambda st, *args: fn(nnx.merge(graphdef, st), *args))
    return lambda *args: np.asarray(compiled(state, *args))


def test_padded_batch_logits_match_transformers_eager_and_jit(case):
    """Two rows of 24 tokens, the second padded after 15; BERT with random token types 0/1."""
    name, ref, mlm = case
    rng = np.random.default_rng(0)
    ids = _real_ids(rng, ref.config, (2, 24))
    mask = np.ones_like(ids)
    mask[1, 15:] = 0
    ids[mask == 0] = ref.config.pad_token_id
    types = rng.integers(0, 2, ids.shape).astype(np.int32) if name == "bert_base" else None
    expected = _reference(ref, ids, mask, types)
    assert expected.shape == (2, 24, ref.config.vocab_size)
    eager = np.asarray(mlm(input_ids=ids, attention_mask=mask, token_type_ids=types))
    assert eager.shape == expected.shape
    assert max_rel(eager, expected) < TOL, name
    jitted = _jit(mlm, lambda m, i, a: m(i, a, types))(ids, mask)
    assert max_rel(jitted, expected) < TOL, name


def test_packed_documents_get_their_own_logits(case):
    """Documents of 11 and 8 tokens side by side in a 24-token row (segment ids, positions restarting at 0)."""
    name, ref, mlm = case
    rng = np.random.default_rng(1)
    pad = ref.config.pad_token_id
    docs = [_real_ids(rng, ref.config, n) for n in (11, 8)]
    alone = [_reference(ref, d[None], np.ones((1, len(d)), np.int32))[0] for d in docs]
    length = 24
    ids, mask, pos, seg = packed_row(docs, length, pad)
    packed = _jit(mlm, lambda m, i, a, p, s: m(i, a, position_ids=p, segment_ids=s))(ids, mask, pos, seg)
    errs = [max_rel(packed[0, :11], alone[0]), max_rel(packed[0, 11:19], alone[1])]
    assert max(errs) < TOL, (name, errs)
