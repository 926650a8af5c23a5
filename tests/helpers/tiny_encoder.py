"""A small jsplade SparseEncoder built in the test, without torch: a 300-token WordPiece vocabulary (the
LIMIT-style words of ``WORDS`` plus special tokens), a 1-layer, hidden-16 GTE MLM with the copy-friendly head
(a document activates roughly its own tokens) and IDF-like static query weights. Fast enough to encode a
million short documents on 2 CPU cores; for corpus-encoding, shard and engine tests."""

from __future__ import annotations

import numpy as np
from flax import nnx
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from jsplade.backbones.gte import GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.tokenizer import WordPieceTokenizer
from jsplade.splade.encoder import SparseEncoder
from jsplade.splade.initialization import copy_friendly_init
from jsplade.splade.model import SpladeModel
from jsplade.splade.static_embedding import StaticQueryEmbedding

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [f"w{i}" for i in range(295)]


def tiny_tokenizer(max_length: int = 128) -> WordPieceTokenizer:
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                ("[SEP]", 3)])
    return WordPieceTokenizer(tok, model_max_length=max_length)


def tiny_encoder(seed: int = 0, max_seq_length: int = 64) -> SparseEncoder:
    tokenizer = tiny_tokenizer(max_seq_length)
    config = GteConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, max_position_embeddings=512, type_vocab_size=0, rope_theta=10000.0,
                       rope_scaling=None, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                       layer_norm_eps=1e-12, pad_token_id=0, extra={"architectures": ["NewForMaskedLM"]})
    mlm = copy_friendly_init(GteForMaskedLM(config, rngs=nnx.Rngs(seed)), seed=seed + 1)
    rng = np.random.default_rng(seed)
    weights = np.zeros(tokenizer.vocab_size, np.float32)
    weights[len(SPECIALS):] = rng.uniform(0.2, 2.0, len(WORDS)).astype(np.float32)
    model = SpladeModel(mlm, StaticQueryEmbedding(weights), "max", "log1p_relu")
    return SparseEncoder(model, tokenizer, tokenizer, max_seq_length=max_seq_length)


def random_texts(n: int, seed: int = 0, low: int = 1, high: int = 12) -> list[str]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(low, high + 1, n)
    ids = rng.integers(0, len(WORDS), int(lengths.sum()))
    out, at = [], 0
    for n_words in lengths:
        out.append(" ".join(WORDS[i] for i in ids[at:at + n_words]))
        at += n_words
    return out
