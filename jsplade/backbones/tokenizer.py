"""Tokenization with sentence-transformers' rules, on the ``tokenizers`` library (no ``transformers``).

* Queries (the SparseStaticEmbedding route): no special tokens, truncated at the query tokenizer's
  ``model_max_length``; [UNK] is kept and repeated tokens stay repeated (de-duplication is the static
  embedding's job).
* Documents (the MLM transformer route): ``[CLS] … [SEP]`` (whatever the tokenizer's post-processor adds
  to a single sequence), truncated on the right so that the total length, special tokens included, is at
  most ``max_length``; the closing special token is kept. This is Hugging Face's ``longest_first``
  truncation of a single sequence.

A folder is read the way ``AutoTokenizer`` reads a BERT-family tokenizer: ``tokenizer.json`` when present
(its stored padding/truncation settings are switched off: lengths are handled here), else ``vocab.txt``
(an uncased WordPiece tokenizer is built); ``tokenizer_config.json`` supplies ``model_max_length``, the
special tokens and the lowercasing options, ``special_tokens_map.json`` fills in missing special tokens.
An XLM-RoBERTa tokenizer (``tokenizer_class`` of the config) is rebuilt as transformers 5 rebuilds it on
load: ``tokenizer.json`` gives the vocabulary, the post-processor and the SentencePiece charsmap (the only
normalizer kept), the pre-tokenizer is a whitespace split then Metaspace, special tokens default to
``<s>``/``</s>``/``<unk>``/``<pad>``/``<mask>``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from jsplade.files import atomic_write_bytes, atomic_write_json, read_json_object, read_lines

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
VOCAB_FILE = "vocab.txt"
AUX_FILES = (CONFIG_FILE, SPECIAL_TOKENS_FILE, VOCAB_FILE)

SPECIAL_TOKEN_KEYS = ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")
_DEFAULT_SPECIAL_TOKENS = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                           "pad_token": "[PAD]", "mask_token": "[MASK]"}
_REQUIRED_SPECIAL_TOKENS = ("unk_token", "cls_token", "sep_token", "pad_token")
_XLM_R_CLASSES = ("XLMRobertaTokenizer", "XLMRobertaTokenizerFast")
_XLM_R_SPECIAL_TOKENS = {"unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>", "pad_token": "<pad>",
                         "mask_token": "<mask>"}
# transformers writes int(1e30) ("VERY_LARGE_INTEGER") for "no limit"; anything this big means no limit.
_NO_LIMIT_THRESHOLD = 10**15


# ----------------------------------------------------------------------------- argument checks
def validate_texts(texts: Any, arg_name: str = "texts") -> list[str]:
    """``texts`` as a new list of ``str``.

    Accepts a list, tuple or any other iterable of strings (numpy string arrays included). Empty and
    whitespace-only strings are valid texts; an empty collection gives ``[]``. Raises ``TypeError`` for
    ``None``, a bare ``str`` (pass ``[text]``), ``bytes``, a mapping, a non-iterable, or a non-string item
    (naming its index and type).
    """
    if texts is None:
        raise TypeError(f"{arg_name} must be a list of strings, got None")
    if isinstance(texts, str):
        raise TypeError(f"{arg_name} must be a list of strings, got a single str; pass a list of strings, "
                        f"e.g. [text]")
    if isinstance(texts, (bytes, bytearray, memoryview)):
        raise TypeError(f"{arg_name} must be a list of strings, got {type(texts).__name__}; decode it first")
    if isinstance(texts, Mapping):
        raise TypeError(f"{arg_name} must be a list of strings, got a mapping ({type(texts).__name__})")
    if not isinstance(texts, Iterable):
        raise TypeError(f"{arg_name} must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise TypeError(f"{arg_name}[{i}] must be a str, got {type(t).__name__}")
    return [str(t) for t in out]  # numpy str_ → plain str


def _check_length(value: Any, name: str, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def document_max_length(sentence_bert_max_seq_length: int | None, max_position_embeddings: int | None,
                        tokenizer_model_max_length: int | None) -> int:
    """The document truncation length sentence-transformers uses.

    ``max_seq_length`` of ``sentence_bert_config.json`` when given (used as is), else the smaller of the
    model's ``max_position_embeddings`` and the tokenizer's ``model_max_length`` among those known.
    Raises ``ValueError`` when none is known or a value is not a positive integer.
    """
    sbert = _check_length(sentence_bert_max_seq_length, "sentence_bert_max_seq_length", True)
    if sbert is not None:
        return sbert
    known = [v for v in (_check_length(max_position_embeddings, "max_position_embeddings", True),
                         _check_length(tokenizer_model_max_length, "tokenizer_model_max_length", True))
             if v is not None]
    if not known:
        raise ValueError("cannot determine the document max length: no sentence_bert_config max_seq_length, "
                         "no max_position_embeddings and no tokenizer model_max_length")
    return min(known)


# ----------------------------------------------------------------------------- folder reading helpers
def _token_content(value: Any, where: str) -> str | None:
    """A special-token entry of a config file: a string, an AddedToken dict ({"content": ...}) or null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"{where}: expected a token string or {{\"content\": ...}}, got {value!r}")


def _model_max_length(config: dict, path: Path) -> int | None:
    value = config.get("model_max_length")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: model_max_length must be a number, got {value!r}")
    if value >= _NO_LIMIT_THRESHOLD:
        return None
    if value != int(value) or value < 1:
        raise ValueError(f"{path}: model_max_length must be a positive integer, got {value!r}")
    return int(value)


def _read_vocab_txt(path: Path) -> dict[str, int]:
    """One token a line, id = line number (the transformers ``vocab.txt`` rule, text-mode line ends)."""
    lines = read_lines(path)
    vocab: dict[str, int] = {}
    for i, token in enumerate(lines):
        if token in vocab:
            raise ValueError(f"{path}: token {token!r} appears twice (lines {vocab[token] + 1} and {i + 1})")
        vocab[token] = i
    if not vocab:
        raise ValueError(f"{path}: empty vocabulary")
    return vocab


def _bert_tokenizer_from_vocab(vocab: dict[str, int], config: dict, specials: dict[str, str | None],
                               path: Path) -> Tokenizer:
    """The fast BERT WordPiece tokenizer transformers would build from ``vocab.txt`` + the config."""
    unk, cls, sep = specials["unk_token"], specials["cls_token"], specials["sep_token"]
    for key in ("unk_token", "cls_token", "sep_token"):
        if specials[key] not in vocab:
            raise ValueError(f"{path}: {key} {specials[key]!r} is not in the vocabulary")
    lowercase = bool(config.get("do_lower_case", True))
    tok = Tokenizer(models.WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"), lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0", pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])])
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def _apply_bert_config(tok: Tokenizer, config: dict) -> None:
    """Make a BertNormalizer follow ``do_lower_case`` / ``strip_accents`` / ``tokenize_chinese_chars`` of
    the config where they disagree (transformers' BERT-family fast tokenizers do the same on load)."""
    norm = tok.normalizer
    if not isinstance(norm, normalizers.BertNormalizer):
        return
    lowercase = bool(config.get("do_lower_case", norm.lowercase))
    strip_accents = config.get("strip_accents", norm.strip_accents)
    chinese = bool(config.get("tokenize_chinese_chars", norm.handle_chinese_chars))
    if (lowercase, strip_accents, chinese) != (norm.lowercase, norm.strip_accents, norm.handle_chinese_chars):
        tok.normalizer = normalizers.BertNormalizer(clean_text=norm.clean_text, handle_chinese_chars=chinese,
                                                    strip_accents=strip_accents, lowercase=lowercase)


def _apply_xlm_roberta_class(tok: Tokenizer, config: dict, data: dict) -> None:
    """For an XLM-RoBERTa tokenizer, the normalizer and pre-tokenizer transformers 5 gives it on load (from
    ``tokenizer.json`` it keeps only the vocabulary, the post-processor and a Precompiled charsmap)."""
    if config.get("tokenizer_class") not in _XLM_R_CLASSES:
        return
    stored = data.get("normalizer") or {}
    members = (stored.get("normalizers") or []) if stored.get("type") == "Sequence" else [stored]
    charsmap = next((m["precompiled_charsmap"] for m in members
                     if isinstance(m, dict) and m.get("type") == "Precompiled" and m.get("precompiled_charsmap")),
                    None)
    tok.normalizer = None if charsmap is None else normalizers.Precompiled(base64.b64decode(charsmap))
    scheme = "always" if config.get("add_prefix_space", True) else "never"
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme)


def _add_config_tokens(tok: Tokenizer, config: dict, specials: dict[str, str | None], path: Path) -> None:
    """Register the config's ``added_tokens_decoder`` entries and the special tokens found in the
    vocabulary as added tokens, checking that each listed entry gets the id the config states."""
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise ValueError(f"{path}: added_tokens_decoder must be an object")
    entries: list[tuple[int | None, AddedToken]] = []
    for key, entry in decoder.items():
        content = _token_content(entry, f"{path}: added_tokens_decoder[{key!r}]")
        try:
            want = int(key)
        except ValueError:
            raise ValueError(f"{path}: added_tokens_decoder key {key!r} is not an integer id") from None
        opts = entry if isinstance(entry, dict) else {}
        entries.append((want, AddedToken(content, single_word=bool(opts.get("single_word", False)),
                                         lstrip=bool(opts.get("lstrip", False)),
                                         rstrip=bool(opts.get("rstrip", False)),
                                         normalized=bool(opts.get("normalized", False)),
                                         special=bool(opts.get("special", True)))))
    listed = {t.content for _, t in entries}
    for key in SPECIAL_TOKEN_KEYS:
        token = specials[key]
        # Special tokens become added tokens (matched whole, never split) but only with the id they
        # already have: a special token missing from the vocabulary never grows it.
        if token is not None and token not in listed and tok.token_to_id(token) is not None:
            entries.append((None, AddedToken(token, normalized=False, special=True)))
            listed.add(token)
    for want, token in sorted(entries, key=lambda e: (e[0] is None, e[0] or 0)):
        if token.special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
        got = tok.token_to_id(token.content)
        if want is not None and got != want:
            raise ValueError(f"{path}: added token {token.content!r} should have id {want}, the vocabulary "
                             f"gives {got}")


def _read_optional_object(path: Path, what: str) -> tuple[dict, bytes | None]:
    if not path.is_file():
        return {}, None
    return read_json_object(path, what), path.read_bytes()


# ----------------------------------------------------------------------------- the tokenizer
class WordPieceTokenizer:
    """A ``tokenizers.Tokenizer`` with sentence-transformers' query and document encoding rules.

    Holds the tokenizer (padding/truncation disabled), ``model_max_length`` (``None`` = no limit), the
    special tokens and their ids, the ids the post-processor puts before/after a single sequence, and the
    raw bytes of the files it was read from (for ``save``).
    """

    def __init__(self, tokenizer: Tokenizer, *, model_max_length: int | None = None,
                 special_tokens: Mapping[str, str | None] | None = None,
                 files: Mapping[str, bytes] | None = None, source: Path | None = None):
        if not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"tokenizer must be a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        where = str(source) if source is not None else "tokenizer"
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tok = tokenizer
        self._source = source
        self.model_max_length = _check_length(model_max_length, "model_max_length", True)
        specials = dict(_DEFAULT_SPECIAL_TOKENS)
        specials.update(special_tokens or {})
        self.special_tokens: dict[str, str | None] = specials
        self._files = dict(files or {})
        self._vocab = tokenizer.get_vocab(with_added_tokens=True)
        ids: dict[str, int | None] = {}
        for key in SPECIAL_TOKEN_KEYS:
            token = specials.get(key)
            ids[key] = None if token is None else tokenizer.token_to_id(token)
            if ids[key] is None and key in _REQUIRED_SPECIAL_TOKENS:
                raise ValueError(f"{where}: {key} {token!r} is not in the vocabulary")
            if ids[key] is None:
                specials[key] = None  # an optional token the vocabulary lacks (e.g. no [MASK])
        self.unk_token_id: int = ids["unk_token"]  # type: ignore[assignment]
        self.cls_token_id: int = ids["cls_token"]  # type: ignore[assignment]
        self.sep_token_id: int = ids["sep_token"]  # type: ignore[assignment]
        self.pad_token_id: int = ids["pad_token"]  # type: ignore[assignment]
        self.mask_token_id: int | None = ids["mask_token"]
        self._prefix, self._suffix = self._special_frame(where)
        self._encode_fast = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)

    def _special_frame(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        """Ids the post-processor adds before and after a single sequence (``[CLS]`` / ``[SEP]`` for BERT)."""
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        n = len(plain)
        for start in range(len(full) - n + 1):
            if full[start:start + n] == plain:
                return np.asarray(full[:start], np.int32), np.asarray(full[start + n:], np.int32)
        raise ValueError(f"{where}: the post-processor changes the tokens of the text itself; "
                         "only processors that add tokens around a sequence are supported")

    # -------------------------------------------------------------- loading / saving
    @classmethod
    def from_dir(cls, folder: str | Path) -> WordPieceTokenizer:
        """Read a Hugging Face tokenizer folder (``tokenizer.json`` preferred, else ``vocab.txt``).

        Raises ``ValueError`` naming the folder or file when the folder is missing, holds neither file,
        a JSON file is malformed, or a special token is not in the vocabulary.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder}: tokenizer folder does not exist or is not a directory")
        config_path, map_path = folder / CONFIG_FILE, folder / SPECIAL_TOKENS_FILE
        try:
            config, config_bytes = _read_optional_object(config_path, "tokenizer config")
            token_map, map_bytes = _read_optional_object(map_path, "special tokens map")
        except FileNotFoundError as exc:  # raced away between is_file and read
            raise ValueError(str(exc)) from None
        specials: dict[str, str | None] = {}
        xlm_r = config.get("tokenizer_class") in _XLM_R_CLASSES
        defaults = _XLM_R_SPECIAL_TOKENS if xlm_r else _DEFAULT_SPECIAL_TOKENS
        for key in SPECIAL_TOKEN_KEYS:
            value = _token_content(config.get(key), f"{config_path}: {key}")
            if value is None:
                value = _token_content(token_map.get(key), f"{map_path}: {key}")
            specials[key] = value if value is not None else defaults[key]
        model_max_length = _model_max_length(config, config_path)
        files: dict[str, bytes] = {}
        if config_bytes is not None:
            files[CONFIG_FILE] = config_bytes
        if map_bytes is not None:
            files[SPECIAL_TOKENS_FILE] = map_bytes
        if (folder / VOCAB_FILE).is_file():
            files[VOCAB_FILE] = (folder / VOCAB_FILE).read_bytes()

        json_path = folder / TOKENIZER_FILE
        if json_path.is_file():
            data = read_json_object(json_path, "tokenizer file")  # a clear error for malformed JSON
            try:
                tok = Tokenizer.from_str(json_path.read_text(encoding="utf-8"))
            except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
                raise ValueError(f"{json_path}: not a valid tokenizers file ({exc})") from None
            files[TOKENIZER_FILE] = json_path.read_bytes()
            _apply_bert_config(tok, config)
            _apply_xlm_roberta_class(tok, config, data)
            _add_config_tokens(tok, config, specials, config_path)
        elif VOCAB_FILE in files:
            vocab = _read_vocab_txt(folder / VOCAB_FILE)
            tok = _bert_tokenizer_from_vocab(vocab, config, specials, folder / VOCAB_FILE)
            _add_config_tokens(tok, config, specials, config_path)
        else:
            raise ValueError(f"{folder}: no {TOKENIZER_FILE} and no {VOCAB_FILE}; not a tokenizer folder")
        return cls(tok, model_max_length=model_max_length, special_tokens=specials, files=files, source=folder)

    def save(self, folder: str | Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` / ``special_tokens_map.json`` /
        ``vocab.txt`` into ``folder`` (created if needed), each atomically.

        Files this tokenizer was read from are written back byte for byte. Missing ones are generated:
        ``tokenizer.json`` from the tokenizer, a config holding ``model_max_length``, the lowercasing flag
        and the special tokens, a special-tokens map, and ``vocab.txt`` (WordPiece models with ids 0..n-1).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = self._files.get(TOKENIZER_FILE)
        atomic_write_bytes(folder / TOKENIZER_FILE,
                           data if data is not None else self._tok.to_str(pretty=True).encode("utf-8"))
        present = {k: v for k, v in self.special_tokens.items() if v is not None}
        if CONFIG_FILE in self._files:
            atomic_write_bytes(folder / CONFIG_FILE, self._files[CONFIG_FILE])
        else:
            config: dict[str, Any] = {"tokenizer_class": "BertTokenizer", **present}
            if isinstance(self._tok.normalizer, normalizers.BertNormalizer):
                config["do_lower_case"] = bool(self._tok.normalizer.lowercase)
                config["strip_accents"] = self._tok.normalizer.strip_accents
                config["tokenize_chinese_chars"] = bool(self._tok.normalizer.handle_chinese_chars)
            if self.model_max_length is not None:
                config["model_max_length"] = self.model_max_length
            atomic_write_json(folder / CONFIG_FILE, config)
        if SPECIAL_TOKENS_FILE in self._files:
            atomic_write_bytes(folder / SPECIAL_TOKENS_FILE, self._files[SPECIAL_TOKENS_FILE])
        else:
            atomic_write_json(folder / SPECIAL_TOKENS_FILE, present)
        if VOCAB_FILE in self._files:
            atomic_write_bytes(folder / VOCAB_FILE, self._files[VOCAB_FILE])
        elif isinstance(self._tok.model, models.WordPiece):
            base = self._tok.get_vocab(with_added_tokens=False)
            by_id = sorted(base.items(), key=lambda kv: kv[1])
            if [i for _, i in by_id] == list(range(len(by_id))) and not any("\n" in t for t, _ in by_id):
                _write_lines(folder / VOCAB_FILE, [t for t, _ in by_id])

    # -------------------------------------------------------------- vocabulary
    @property
    def vocab_size(self) -> int:
        """Number of distinct tokens, added tokens included (``len(tokenizer.get_vocab())``)."""
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        """A copy of the token → id map, added tokens included."""
        return dict(self._vocab)

    def token_to_id(self, token: str) -> int | None:
        if not isinstance(token, str):
            raise TypeError(f"token must be a str, got {type(token).__name__}")
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise TypeError(f"id must be an int, got {type(i).__name__}")
        return self._tok.id_to_token(int(i)) if i >= 0 else None

    @property
    def tokenizer(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (padding and truncation disabled)."""
        return self._tok

    # -------------------------------------------------------------- encoding
    def _pieces(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._encode_fast(texts, add_special_tokens=False)]

    def encode_queries(self, texts: list[str], max_length: int | None = None) -> list[np.ndarray]:
        """Token ids (int32) per text without special tokens, truncated to ``max_length`` tokens
        (default: ``model_max_length``; ``None`` there means no limit)."""
        texts = validate_texts(texts, "texts")
        limit = _check_length(max_length, "max_length", True)
        if limit is None:
            limit = self.model_max_length
        return [np.asarray(ids if limit is None else ids[:limit], dtype=np.int32) for ids in self._pieces(texts)]

    def __call__(self, texts: list[str], max_length: int | None = None) -> dict[str, np.ndarray]:
        """A padded batch as a Hugging Face tokenizer returns one (``padding=True, truncation=True``):
        ``input_ids`` (padded with the pad token) and ``attention_mask``, int32 [B, longest text], each text
        with the special tokens and at most ``max_length`` tokens (default ``model_max_length``, else 512)."""
        texts = validate_texts(texts, "texts")
        limit = _check_length(max_length, "max_length", True)
        if limit is None:
            limit = self.model_max_length or 512
        rows, _ = self.encode_documents(texts, limit)
        length = max((len(r) for r in rows), default=0)
        input_ids = np.full((len(rows), length), self.pad_token_id, np.int32)
        attention_mask = np.zeros((len(rows), length), np.int32)
        for b, row in enumerate(rows):
            input_ids[b, :len(row)] = row
            attention_mask[b, :len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def encode_documents(self, texts: list[str], max_length: int) -> tuple[list[np.ndarray], int]:
        """(token ids (int32) per text with the special tokens, number of texts that were truncated).

        Each text keeps its first ``max_length − (number of special tokens)`` pieces, so the total is at
        most ``max_length`` and the closing special token is always present.
        """
        texts = validate_texts(texts, "texts")
        limit = _check_length(max_length, "max_length", False)
        n_special = len(self._prefix) + len(self._suffix)
        budget = limit - n_special
        if budget < 0:
            raise ValueError(f"max_length={limit} is smaller than the {n_special} special tokens of a document")
        out: list[np.ndarray] = []
        n_truncated = 0
        for ids in self._pieces(texts):
            if len(ids) > budget:
                ids = ids[:budget]
                n_truncated += 1
            row = np.empty(len(ids) + n_special, np.int32)
            row[:len(self._prefix)] = self._prefix
            row[len(self._prefix):len(self._prefix) + len(ids)] = ids
            row[len(self._prefix) + len(ids):] = self._suffix
            out.append(row)
        return out, n_truncated

    def __repr__(self) -> str:
        return (f"WordPieceTokenizer(vocab_size={self.vocab_size}, model_max_length={self.model_max_length}, "
                f"source={self._source})")


def _write_lines(path: Path, lines: list[str]) -> None:
    """Write one item a line (each ended by '\\n') atomically."""
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))
