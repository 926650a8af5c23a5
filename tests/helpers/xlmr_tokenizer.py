"""A tiny XLM-RoBERTa-style SentencePiece (Unigram) tokenizer built offline with the ``tokenizers`` library.

Layout of a converted XLM-R ``tokenizer.json``: ids <s>=0, <pad>=1, </s>=2, <unk>=3, the pieces, <mask> last;
normalizer [Precompiled charsmap, collapse runs of spaces]; Metaspace pre-tokenizer; ``<s> $A </s>``. The
charsmap here maps three characters (``CHARSMAP``), enough to tell whether a reader keeps it.
"""

from __future__ import annotations

import struct
from pathlib import Path

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")
PIECES = ("▁", "▁the", "▁a", "▁of", "▁and", "▁is", "▁in", "▁hello", "▁world", "▁planet", "▁red", "▁mars",
          "▁known", "▁for", "▁its", "▁café", "▁straße", "▁東京", "▁タワー", "▁der", "▁die", "▁und", "▁la",
          "▁le", "▁est", "▁une", "s", "e", "é", "a", "t", "n", "o", "r", "i", "l", "h", "m", "d", "ing", "er",
          ",", ".", "!", "?", "-", "東", "京", "ß", "▁fine", "M")
VOCAB_SIZE = len(SPECIALS) + len(PIECES) + 1  # + <mask>
CHARSMAP = {"\t": " ", "ﬁ": "fi", "Ｍ": "M"}  # the kind of mapping XLM-R's NFKC-based charsmap holds


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """A SentencePiece precompiled charsmap for ``mapping``: ``uint32`` trie size, a double-array trie over
    the UTF-8 keys (each prefix owns a 256-unit block: children at block + byte, its leaf at block + 0),
    then the NUL-terminated replacements the leaves point into."""
    strings, values = b"", {}
    for key, replacement in mapping.items():
        values[key.encode()] = len(strings)
        strings += replacement.encode() + b"\0"
    prefixes = sorted({b""} | {key[:i] for key in values for i in range(1, len(key) + 1)}, key=lambda p: (len(p), p))
    block = {p: 256 * (i + 1) for i, p in enumerate(prefixes)}
    units = [0] * (256 * (len(prefixes) + 1))
    units[0] = block[b""] << 10
    for p in prefixes[1:]:
        here = block[p[:-1]] ^ p[-1]
        unit = p[-1] | ((here ^ block[p]) << 10)  # label, offset to its block
        if p in values:
            unit |= 1 << 8  # has a leaf
            units[block[p]] = (1 << 31) | values[p]
        units[here] = unit
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + strings


def unigram_tokenizer():
    """The ``tokenizers.Tokenizer``: Unigram over ``PIECES`` (longer pieces score higher)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(t, 0.0) for t in SPECIALS]
    vocab += [(p, -12.0 + len(p)) for p in PIECES]
    vocab.append(("<mask>", 0.0))
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(CHARSMAP)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                       special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok


def xlmr_tokenizer(model_max_length: int = 512):
    """The tokenizer wrapped in transformers' ``XLMRobertaTokenizerFast``."""
    from transformers import XLMRobertaTokenizerFast

    return XLMRobertaTokenizerFast(tokenizer_object=unigram_tokenizer(), model_max_length=model_max_length)


def save_xlmr_tokenizer(folder: Path, model_max_length: int = 512) -> Path:
    """``save_pretrained`` of ``xlmr_tokenizer`` into ``folder``; returns the folder."""
    folder = Path(folder)
    xlmr_tokenizer(model_max_length).save_pretrained(str(folder))
    return folder
