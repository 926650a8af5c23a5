"""The BERT-family MLMs (BERT, DistilBERT, RoBERTa, XLM-RoBERTa) against transformers' own classes.

Each case builds a tiny transformers model, fills every parameter (biases and norms included) with random
values, saves it with ``save_pretrained`` and loads the folder with ``jsplade.load_mlm``. Logits at every
position (padding included) must agree within 1e-5 relative to the largest |logit| (observed: ~3e-7),
eager and jit-compiled; a packed row (documents side by side, ``segment_ids``) must give each document the
logits it has alone; ``save_mlm`` must write back the very tensors transformers wrote (bit-exact).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from helpers.fixtures import max_rel, packed_row
from safetensors.numpy import load_file, save_file
from transformers import (BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertForMaskedLM, RobertaConfig,
                          RobertaForMaskedLM, XLMRobertaConfig, XLMRobertaForMaskedLM)

from jsplade import load_mlm, save_mlm
from jsplade.backbones.bert import BertForMaskedLM as JBert
from jsplade.backbones.bert_config import BertConfig as JBertConfig
from jsplade.backbones.protocol import ConfigError
from jsplade.backbones.registry import backbone_for_model_type

TOL = 1e-5
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, vocab_size=97,
             max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
CASES = {
    "bert": (BertConfig, BertForMaskedLM, dict(SMALL, type_vocab_size=3)),
    "bert_gelu_new_one_type": (BertConfig, BertForMaskedLM, dict(SMALL, type_vocab_size=1, hidden_act="gelu_new",
                                                                  layer_norm_eps=1e-6)),
    "distilbert": (DistilBertConfig, DistilBertForMaskedLM,
                   dict(dim=32, n_layers=2, n_heads=4, hidden_dim=48, vocab_size=97, max_position_embeddings=64,
                        dropout=0.0, attention_dropout=0.0)),
    "roberta": (RobertaConfig, RobertaForMaskedLM, dict(SMALL, type_vocab_size=1, pad_token_id=1)),
    "xlm_roberta": (XLMRobertaConfig, XLMRobertaForMaskedLM, dict(SMALL, type_vocab_size=1, pad_token_id=1,
                                                                  hidden_act="relu", layer_norm_eps=1e-5)),
}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random: weights and biases N(0, 0.2²), norm scales 1 + N(0, 0.2²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.2
            p.copy_(noise + 1.0 if "norm" in name.lower() and name.endswith("weight") else noise)


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory):
    cfg_cls, model_cls, kwargs = CASES[request.param]
    torch.manual_seed(0)
    ref = model_cls(cfg_cls(**kwargs)).eval()
    _randomize(ref, 1)
    folder = tmp_path_factory.mktemp(request.param)
    ref.save_pretrained(folder)
    return request.param, ref, folder, load_mlm(folder)


def _inputs(ref, seed: int = 0):
    cfg = ref.config
    rng = np.random.default_rng(seed)
    pad = cfg.pad_token_id
    ids = rng.integers(3, cfg.vocab_size, (3, 13)).astype(np.int32)
    ids[ids == pad] = pad + 2
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = pad
    types = None
    if getattr(cfg, "type_vocab_size", 0) > 1:
        types = rng.integers(0, cfg.type_vocab_size, ids.shape).astype(np.int32)
    return ids, mask, types


def _reference(ref, ids, mask, types=None):
    kw = {} if types is None else {"token_type_ids": torch.tensor(types, dtype=torch.long)}
    with torch.no_grad():
        return ref(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask), **kw
                   ).logits.numpy()


def test_logits_match_transformers_eager_and_jit(case):
    name, ref, _, mlm = case
    ids, mask, types = _inputs(ref)
    expected = _reference(ref, ids, mask, types)
    eager = np.asarray(mlm(input_ids=ids, attention_mask=mask, token_type_ids=types))
    assert eager.shape == expected.shape
    assert max_rel(eager, expected) < TOL, name
    jitted = np.asarray(jax.jit(lambda i, m: mlm(i, m, types))(ids, mask))
    assert max_rel(jitted, expected) < TOL, name


def test_packed_documents_get_their_own_logits(case):
    """Two documents in one row (segment ids, positions restarting at 0 per document) = each one alone."""
    name, ref, _, mlm = case
    rng = np.random.default_rng(3)
    pad = ref.config.pad_token_id
    docs = [rng.integers(3, ref.config.vocab_size, n).astype(np.int32) for n in (7, 5)]
    for d in docs:
        d[d == pad] = pad + 2
    alone = [_reference(ref, d[None], np.ones((1, len(d)), np.int32))[0] for d in docs]
    length = 16
    ids, mask, pos, seg = packed_row(docs, length, pad)
    packed = np.asarray(jax.jit(lambda i, m, p, s: mlm(i, m, position_ids=p, segment_ids=s))(ids, mask, pos, seg))
    assert max_rel(packed[0, :7], alone[0]) < TOL, name
    assert max_rel(packed[0, 7:12], alone[1]) < TOL, name


@pytest.mark.parametrize("attention", ["chunked", "blockwise"])
def test_attention_kernels_agree(case, attention):
    name, ref, _, mlm = case
    ids, mask, types = _inputs(ref, seed=5)
    expected = _reference(ref, ids, mask, types)
    mlm.with_compute(attention=attention)
    try:
        got = np.asarray(jax.jit(lambda i, m: mlm(i, m, types))(ids, mask))
    finally:
        mlm.with_compute(attention="auto")
    assert max_rel(got, expected) < TOL, (name, attention)


def test_bfloat16_and_remat_stay_close(case):
    """bfloat16 compute: within bfloat16 rounding (2e-2 of the largest |logit|); remat: unchanged values."""
    name, ref, _, mlm = case
    ids, mask, types = _inputs(ref, seed=7)
    expected = _reference(ref, ids, mask, types)
    mlm.with_compute(remat=True)
    try:
        assert max_rel(np.asarray(jax.jit(lambda i, m: mlm(i, m, types))(ids, mask)), expected) < TOL
        mlm.with_compute(remat=False, dtype="bfloat16")
        low = np.asarray(jax.jit(lambda i, m: mlm(i, m, types))(ids, mask), np.float32)
    finally:
        mlm.with_compute(remat=False, dtype="float32")
    assert max_rel(low, expected) < 2e-2, name


def test_save_mlm_writes_back_what_transformers_wrote(case, tmp_path):
    name, _, folder, mlm = case
    save_mlm(mlm, tmp_path / "out")
    theirs, ours = load_file(folder / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert set(ours) == set(theirs), name
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    a, b = json.loads((folder / "config.json").read_text()), json.loads((tmp_path / "out" / "config.json").read_text())
    assert a == b
    again = load_mlm(tmp_path / "out")
    assert again.config == mlm.config


def test_checkpoint_extras_of_pretraining_are_ignored_and_untied_decoders_refused(tmp_path):
    cfg_cls, model_cls, kwargs = CASES["bert"]
    ref = model_cls(cfg_cls(**kwargs))
    ref.save_pretrained(tmp_path / "m")
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    extra = dict(tensors)
    extra["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    extra["cls.seq_relationship.weight"] = np.zeros((2, 32), np.float32)
    extra["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
    save_file(extra, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    load_mlm(tmp_path / "m")
    extra["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"] + 1.0
    save_file(extra, tmp_path / "m" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="cls.predictions.decoder.weight.*not equal to the word embeddings"):
        load_mlm(tmp_path / "m")


def test_config_round_trips_and_bad_configs_name_the_key():
    for model_type in ("bert", "roberta", "xlm-roberta", "distilbert"):
        assert backbone_for_model_type(model_type).name == "bert"
    raw = DistilBertConfig(dim=32, n_layers=2, n_heads=4, hidden_dim=48, vocab_size=97).to_dict()
    cfg = JBertConfig.from_hf_dict(raw)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.type_vocab_size, cfg.naming) == (32, 2, 0, "distilbert")
    assert {k: v for k, v in cfg.to_hf_dict().items() if k in raw} == {k: raw[k] for k in cfg.to_hf_dict() if k in raw}
    raw = XLMRobertaConfig(**SMALL).to_dict()
    assert JBertConfig.from_hf_dict(raw).to_hf_dict()["model_type"] == "xlm-roberta"
    with pytest.raises(ConfigError, match="src.json: hidden_act"):
        JBertConfig.from_hf_dict(dict(BertConfig(**SMALL).to_dict(), hidden_act="mish"), source="src.json")
    with pytest.raises(ConfigError, match="position_embedding_type"):
        JBertConfig.from_hf_dict(dict(BertConfig(**SMALL).to_dict(), position_embedding_type="relative_key"))
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        JBertConfig.from_hf_dict(dict(BertConfig(**SMALL).to_dict(), tie_word_embeddings=False))
    with pytest.raises(ConfigError, match="unknown model_type 'albert'.*'bert'.*'xlm-roberta'"):
        backbone_for_model_type("albert")
    with pytest.raises(ValueError, match="naming must be 'roberta'"):
        JBertConfig.from_hf_dict(raw).to_hf_dict("bert")


def test_roberta_default_positions_skip_padding():
    """Without position ids, RoBERTa counts positions from pad+1 over real tokens (pads at pad), as transformers."""
    cfg = JBertConfig(model_type="xlm-roberta", vocab_size=20, hidden_size=8, num_hidden_layers=1,
                      num_attention_heads=2, intermediate_size=8, max_position_embeddings=16, type_vocab_size=1,
                      pad_token_id=1)
    ids = jnp.asarray([[0, 5, 6, 2, 1, 1], [0, 7, 1, 8, 2, 1]], jnp.int32)
    np.testing.assert_array_equal(np.asarray(JBert(cfg).default_position_ids(ids)),
                                  [[2, 3, 4, 5, 1, 1], [2, 3, 1, 4, 5, 1]])
