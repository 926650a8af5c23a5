"""Tokenization against the sentence-transformers 5.1.2 reference ids (encode_info.json)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.fixtures import SE_FIXTURES
from jsplade.backbones.tokenizer import WordPieceTokenizer, document_max_length, validate_texts

MODEL = SE_FIXTURES / "model"
TEXTS = json.loads((SE_FIXTURES / "expected" / "texts.json").read_text(encoding="utf-8"))
INFO = json.loads((SE_FIXTURES / "expected" / "encode_info.json").read_text(encoding="utf-8"))
DOC_MAX = 8192  # min(max_position_embeddings, model_max_length) of the fixture model (no sentence_bert_config)


def _copy(tmp: Path, *names: str, src: Path = MODEL) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(src / name, tmp / name)
    return tmp


@pytest.fixture(scope="module")
def tok_json() -> WordPieceTokenizer:
    return WordPieceTokenizer.from_dir(MODEL)


@pytest.fixture(scope="module")
def tok_vocab(tmp_path_factory) -> WordPieceTokenizer:
    folder = _copy(tmp_path_factory.mktemp("vocab_only"), "vocab.txt", "tokenizer_config.json")
    return WordPieceTokenizer.from_dir(folder)


@pytest.fixture(params=["tokenizer_json", "vocab_txt"])
def tok(request, tok_json, tok_vocab) -> WordPieceTokenizer:
    return tok_json if request.param == "tokenizer_json" else tok_vocab


# ----------------------------------------------------------------------------- reference ids
def test_fixture_sizes():
    assert len(TEXTS["queries"]) == len(INFO["queries"]) == 10
    assert len(TEXTS["documents"]) == len(INFO["documents"]) == 10


def test_queries_match_reference_ids(tok):
    ids = tok.encode_queries(TEXTS["queries"])
    assert len(ids) == len(INFO["queries"])
    for row, ref in zip(ids, INFO["queries"]):
        assert row.dtype == np.int32 and row.ndim == 1
        assert row.tolist() == ref["token_ids"], ref["kind"]
        assert len(row) == ref["n_tokens"]
        assert len(set(row.tolist())) == ref["n_unique_tokens"]


def test_query_special_cases(tok):
    kinds = [q["kind"] for q in INFO["queries"]]
    q = dict(zip(kinds, tok.encode_queries(TEXTS["queries"])))
    assert q["empty"].shape == (0,) and q["whitespace"].shape == (0,)
    assert q["repeat"].tolist() == [2085, 2085, 2085]  # "now now now": repeats kept
    assert q["unk"].tolist().count(tok.unk_token_id) == 2 and tok.unk_token_id == 100
    # lowercasing and accent stripping: "Who LIKES Crème Brûlée, Jalapeños and Açaí?"
    assert [tok.id_to_token(int(i)) for i in q["mixed_case_accents"]] == INFO["queries"][9]["tokens"]
    assert 101 not in q["seed"] and 102 not in q["seed"]  # no special tokens on queries


def test_documents_match_reference_ids(tok):
    ids, n_truncated = tok.encode_documents(TEXTS["documents"], DOC_MAX)
    assert n_truncated == sum(d["truncated"] for d in INFO["documents"]) == 1
    for row, ref in zip(ids, INFO["documents"]):
        assert row.dtype == np.int32
        assert len(row) == ref["n_tokens"], ref["kind"]
        if "token_ids" in ref:
            assert row.tolist() == ref["token_ids"], ref["kind"]
        else:
            assert row[:8].tolist() == ref["first_token_ids"], ref["kind"]
            assert row[-8:].tolist() == ref["last_token_ids"], ref["kind"]


def test_document_special_cases_and_long_truncation(tok):
    kinds = [d["kind"] for d in INFO["documents"]]
    long_text = TEXTS["documents"][kinds.index("long")]
    ref = INFO["documents"][kinds.index("long")]
    (full,), n_full = tok.encode_documents([long_text], 10**6)
    assert n_full == 0 and len(full) == ref["n_tokens_untruncated"] == 9040
    (cut,), n_cut = tok.encode_documents([long_text], DOC_MAX)
    assert n_cut == 1 and len(cut) == DOC_MAX
    # [CLS] + the first 8190 word pieces + [SEP]
    assert cut.tolist() == full[:DOC_MAX - 1].tolist() + [tok.sep_token_id]
    (empty, blank), n = tok.encode_documents(["", "   "], DOC_MAX)
    assert n == 0 and empty.tolist() == [101, 102] and blank.tolist() == [101, 102]
    unk = tok.encode_documents([TEXTS["documents"][kinds.index("unk")]], DOC_MAX)[0][0]
    assert unk.tolist().count(100) == 4


def test_documents_at_exact_limit_are_not_counted_as_truncated(tok):
    text = TEXTS["documents"][0]
    (row,), _ = tok.encode_documents([text], DOC_MAX)
    n = len(row)
    (same,), n_trunc = tok.encode_documents([text], n)
    assert n_trunc == 0 and same.tolist() == row.tolist()
    (shorter,), n_trunc = tok.encode_documents([text], n - 1)
    assert n_trunc == 1 and shorter.tolist() == row[:n - 2].tolist() + [102]
    (minimal,), _ = tok.encode_documents([text], 2)
    assert minimal.tolist() == [101, 102]


def test_attributes(tok):
    assert tok.vocab_size == 30522 == len(tok.get_vocab())
    assert tok.model_max_length == 8192
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == \
        (0, 100, 101, 102, 103)
    assert tok.id_to_token(101) == "[CLS]" and tok.token_to_id("[SEP]") == 102
    assert tok.token_to_id("planet") == 4774 and tok.id_to_token(4774) == "planet"
    assert tok.id_to_token(30522) is None and tok.id_to_token(-1) is None and tok.token_to_id("Planet") is None
    vocab = tok.get_vocab()
    vocab["planet"] = -5
    assert tok.get_vocab()["planet"] == 4774  # a copy
    with pytest.raises(TypeError):
        tok.id_to_token("101")  # type: ignore[arg-type]


def test_both_tokenizers_agree_on_more_texts(tok_json, tok_vocab):
    texts = ["[CLS] literal [MASK] tokens", "naïve café — 東京 タワー", "tab\tnew\nline\r\x00ctrl\u200bzero-width",
             "x" * 150, "supercalifragilisticexpialidocious", "e-mail: a.b@c.org, 3.14159, $100!"]
    queries_json, queries_vocab = tok_json.encode_queries(texts), tok_vocab.encode_queries(texts)
    assert [r.tolist() for r in queries_json] == [r.tolist() for r in queries_vocab]
    dj, nj = tok_json.encode_documents(texts, 12)
    dv, nv = tok_vocab.encode_documents(texts, 12)
    assert nj == nv and [r.tolist() for r in dj] == [r.tolist() for r in dv]


# ----------------------------------------------------------------------------- lengths and settings
def test_query_truncation(tok_json):
    (row,) = tok_json.encode_queries([TEXTS["queries"][0]], max_length=3)
    assert row.tolist() == INFO["queries"][0]["token_ids"][:3]
    for bad in (0, -1, True, 2.5, "3"):
        with pytest.raises(ValueError, match="max_length"):
            tok_json.encode_queries(["a"], max_length=bad)


def test_query_default_truncation_is_model_max_length(tmp_path):
    folder = _copy(tmp_path, "tokenizer.json", "vocab.txt")
    config = json.loads((MODEL / "tokenizer_config.json").read_text())
    config["model_max_length"] = 4
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    small = WordPieceTokenizer.from_dir(folder)
    assert small.model_max_length == 4
    (row,) = small.encode_queries([TEXTS["queries"][0]])
    assert row.tolist() == INFO["queries"][0]["token_ids"][:4]
    (row,) = small.encode_queries([TEXTS["queries"][0]], max_length=6)
    assert row.tolist() == INFO["queries"][0]["token_ids"][:6]


@pytest.mark.parametrize("value, expected", [(None, None), (int(1e30), None), (1e30, None), (512, 512), (512.0, 512)])
def test_model_max_length_values(tmp_path, value, expected):
    folder = _copy(tmp_path, "tokenizer.json")
    config = {"do_lower_case": True}
    if value is not None:
        config["model_max_length"] = value
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert WordPieceTokenizer.from_dir(folder).model_max_length == expected


@pytest.mark.parametrize("value", ["8192", 0, -3, 12.5, True])
def test_model_max_length_invalid(tmp_path, value):
    folder = _copy(tmp_path, "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": value}))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: model_max_length"):
        WordPieceTokenizer.from_dir(folder)


def test_stored_padding_and_truncation_are_disabled(tmp_path, tok_json):
    assert tok_json.tokenizer.padding is None and tok_json.tokenizer.truncation is None
    folder = _copy(tmp_path, "tokenizer_config.json")
    data = json.loads((MODEL / "tokenizer.json").read_text())
    assert data["padding"] is not None  # the fixture file stores BatchLongest padding
    data["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    (folder / "tokenizer.json").write_text(json.dumps(data))
    tok = WordPieceTokenizer.from_dir(folder)
    ids = tok.encode_queries(TEXTS["queries"][:2])
    assert [len(r) for r in ids] == [9, 5]  # neither padded to the longest nor cut at 4
    docs, _ = tok.encode_documents(TEXTS["documents"][:1], DOC_MAX)
    assert len(docs[0]) == 18


def test_do_lower_case_false_in_config_overrides_tokenizer_json(tmp_path, tok_json):
    config = json.loads((MODEL / "tokenizer_config.json").read_text())
    config["do_lower_case"] = False
    cased = []
    for name, files in (("json", ["tokenizer.json"]), ("vocab", ["vocab.txt"])):
        folder = _copy(tmp_path / name, *files)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        cased.append(WordPieceTokenizer.from_dir(folder))
    text = ["Who likes Joshua Trees?"]
    a, b = (t.encode_queries(text)[0].tolist() for t in cased)
    assert a == b
    lower = tok_json.encode_queries(text)[0].tolist()
    assert lower == INFO["queries"][1]["token_ids"]
    assert a != lower and a[0] == 100  # "Who" is not in the uncased vocabulary


def test_empty_batches(tok_json):
    assert tok_json.encode_queries([]) == []
    assert tok_json.encode_documents([], DOC_MAX) == ([], 0)
    assert [r.tolist() for r in tok_json.encode_queries(["", ""])] == [[], []]


def test_encode_documents_rejects_bad_max_length(tok_json):
    with pytest.raises(ValueError, match="special tokens"):
        tok_json.encode_documents(["a"], 1)
    for bad in (None, 0, False, "8192"):
        with pytest.raises(ValueError, match="max_length"):
            tok_json.encode_documents(["a"], bad)  # type: ignore[arg-type]


def test_encode_rejects_bad_texts(tok_json):
    with pytest.raises(TypeError, match="e.g. \\[text\\]"):
        tok_json.encode_queries("a query")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok_json.encode_documents(["a", None], DOC_MAX)  # type: ignore[list-item]


# ----------------------------------------------------------------------------- folder errors
def test_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="nowhere"):
        WordPieceTokenizer.from_dir(tmp_path / "nowhere")


def test_folder_without_tokenizer_files(tmp_path):
    _copy(tmp_path, "tokenizer_config.json")
    with pytest.raises(ValueError, match=r"no tokenizer\.json and no vocab\.txt"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_malformed_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", ')
    with pytest.raises(ValueError, match=r"tokenizer\.json: malformed JSON"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_tokenizer_json_that_is_not_a_tokenizer(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"hello": "world"}')
    with pytest.raises(ValueError, match=r"tokenizer\.json: not a valid tokenizers file"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_malformed_tokenizer_config(tmp_path):
    _copy(tmp_path, "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text("{model_max_length: 5}")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: malformed JSON"):
        WordPieceTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"tokenizer_config\.json.*JSON object"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_vocab_without_special_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text("[UNK]\nhello\nworld\n")
    with pytest.raises(ValueError, match=r"vocab\.txt: cls_token '\[CLS\]' is not in the vocabulary"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_vocab_with_duplicate_token(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nhello\n")
    with pytest.raises(ValueError, match=r"vocab\.txt: token 'hello' appears twice"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_added_token_id_mismatch(tmp_path):
    _copy(tmp_path, "vocab.txt")
    config = json.loads((MODEL / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["5"] = config["added_tokens_decoder"].pop("103")  # [MASK] claims id 5
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"\[MASK\]' should have id 5"):
        WordPieceTokenizer.from_dir(tmp_path)


def test_tiny_vocab_without_config(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n##s\n")
    tok = WordPieceTokenizer.from_dir(tmp_path)
    assert tok.vocab_size == 7 and tok.mask_token_id is None and tok.model_max_length is None
    assert tok.encode_queries(["Hello worlds, HELLO!"])[0].tolist() == [4, 5, 6, 1, 4, 1]
    assert tok.encode_documents(["hello"], 16)[0][0].tolist() == [2, 4, 3]
    tok.save(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert "mask_token" not in config and "model_max_length" not in config and config["unk_token"] == "[UNK]"
    again = WordPieceTokenizer.from_dir(tmp_path / "saved")
    assert again.vocab_size == 7 and again.mask_token_id is None
    assert again.encode_queries(["Hello worlds, HELLO!"])[0].tolist() == [4, 5, 6, 1, 4, 1]


# ----------------------------------------------------------------------------- save
def test_save_writes_loaded_files_back_byte_for_byte(tmp_path, tok_json):
    out = tmp_path / "saved"
    tok_json.save(out)
    names = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert sorted(p.name for p in out.iterdir()) == names
    for name in names:
        assert (out / name).read_bytes() == (MODEL / name).read_bytes(), name


def test_save_of_vocab_only_tokenizer_round_trips(tmp_path):
    src = _copy(tmp_path / "src", "vocab.txt")
    tok = WordPieceTokenizer.from_dir(src)
    assert tok.model_max_length is None
    out = tmp_path / "saved"
    tok.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["special_tokens_map.json", "tokenizer.json",
                                                    "tokenizer_config.json", "vocab.txt"]
    assert (out / "vocab.txt").read_bytes() == (MODEL / "vocab.txt").read_bytes()
    again = WordPieceTokenizer.from_dir(out)
    for texts in (TEXTS["queries"], TEXTS["documents"]):
        assert [r.tolist() for r in again.encode_queries(texts)] == [r.tolist() for r in tok.encode_queries(texts)]
    ref = INFO["queries"]
    assert [r.tolist() for r in again.encode_queries(TEXTS["queries"])] == [q["token_ids"] for q in ref]
    assert again.vocab_size == 30522 and again.model_max_length is None


def test_save_generates_vocab_and_config_when_loaded_from_tokenizer_json_only(tmp_path, tok_json):
    src = _copy(tmp_path / "src", "tokenizer.json")
    tok = WordPieceTokenizer.from_dir(src)
    out = tmp_path / "saved"
    tok.save(out)
    assert (out / "vocab.txt").read_bytes() == (MODEL / "vocab.txt").read_bytes()
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["do_lower_case"] is True and config["cls_token"] == "[CLS]"
    again = WordPieceTokenizer.from_dir(out)
    assert [r.tolist() for r in again.encode_queries(TEXTS["queries"])] == \
        [r.tolist() for r in tok_json.encode_queries(TEXTS["queries"])]


# ----------------------------------------------------------------------------- validate_texts
def test_validate_texts_accepts_sequences_and_iterables():
    assert validate_texts(["a", "", "  "]) == ["a", "", "  "]
    assert validate_texts(("a", "b")) == ["a", "b"]
    assert validate_texts(t for t in ["x", "y"]) == ["x", "y"]
    assert validate_texts([]) == []
    out = validate_texts(np.array(["p", "q"]))
    assert out == ["p", "q"] and all(type(t) is str for t in out)


@pytest.mark.parametrize("bad, pattern", [
    (None, r"^docs must be a list of strings, got None$"),
    ("a text", r"docs must be a list of strings, got a single str; pass a list of strings, e\.g\. \[text\]"),
    (b"bytes", r"docs must .*bytes"),
    (bytearray(b"x"), r"docs must .*bytearray"),
    ({"a": "b"}, r"docs must .*mapping"),
    (5, r"docs must be a list of strings, got int"),
    (["ok", 3], r"docs\[1\] must be a str, got int"),
    (["ok", b"x"], r"docs\[1\] must be a str, got bytes"),
    (["ok", "fine", None], r"docs\[2\] must be a str, got NoneType"),
])
def test_validate_texts_errors(bad, pattern):
    with pytest.raises(TypeError, match=pattern):
        validate_texts(bad, "docs")


# ----------------------------------------------------------------------------- document_max_length
@pytest.mark.parametrize("args, expected", [
    ((None, 8192, 8192), 8192), ((512, 8192, 8192), 512), ((10000, 8192, 8192), 10000),
    ((None, 512, 8192), 512), ((None, 8192, 300), 300), ((None, 8192, None), 8192), ((None, None, 300), 300),
])
def test_document_max_length(args, expected):
    assert document_max_length(*args) == expected


def test_document_max_length_errors():
    with pytest.raises(ValueError, match="cannot determine"):
        document_max_length(None, None, None)
    with pytest.raises(ValueError, match="sentence_bert_max_seq_length"):
        document_max_length(0, 8192, 8192)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        document_max_length(None, True, 8192)


# ----------------------------------------------------------------------------- transformers as a second reference
def test_matches_transformers_tokenizer_on_tricky_texts(tok_json, tok_vocab):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(str(MODEL))
    texts = TEXTS["queries"] + ["[CLS] literal [MASK] and [unk] tokens", "naïve café — 東京 タワー 🚀",
                                "tab\tnew\nline\r\x00ctrl\u200bzero-width\u00adsoft", "x" * 150,
                                "supercalifragilisticexpialidocious", "e-mail: a.b@c.org, 3.14159, $100!",
                                "ΑΒΓ αβγ Ω ñ Ł ß İ", "  leading and trailing  "]
    want_q = ref(texts, add_special_tokens=False)["input_ids"]
    want_d = ref(texts, add_special_tokens=True, truncation="longest_first", max_length=10)["input_ids"]
    for tok in (tok_json, tok_vocab):
        assert [r.tolist() for r in tok.encode_queries(texts)] == want_q
        docs, _ = tok.encode_documents(texts, 10)
        assert [r.tolist() for r in docs] == want_d


def test_call_returns_the_padded_batch_transformers_returns(tok_json):
    """``tok(texts)`` against transformers' fast tokenizer on the same folder, padding=True, truncation=True:
    identical ids and mask (exact integers)."""
    from transformers import AutoTokenizer

    ref_tok = AutoTokenizer.from_pretrained(str(MODEL))
    texts = ["a short document", "Mars, known for its reddish appearance, is the fourth planet.", "x"]
    for max_length in (None, 6):
        ours = tok_json(texts, max_length=max_length)
        ref = ref_tok(texts, padding=True, truncation=True, return_tensors="np",
                      max_length=max_length or tok_json.model_max_length or 512)
        assert set(ours) == {"input_ids", "attention_mask"}
        for key in ours:
            assert ours[key].dtype == np.int32, key
            np.testing.assert_array_equal(ours[key], ref[key], err_msg=f"{key}, max_length={max_length}")
    with pytest.raises(TypeError, match="texts"):
        tok_json("a bare string")
    with pytest.raises(ValueError, match="max_length"):
        tok_json(["a"], max_length=0)


# ----------------------------------------------------------------------------- XLM-RoBERTa (SentencePiece / Unigram)
# A tiny Unigram tokenizer in XLM-R's layout (tests/helpers/xlmr_tokenizer.py), saved by transformers'
# XLMRobertaTokenizerFast; the reference is the folder read back by AutoTokenizer. transformers 5 rebuilds
# such a tokenizer on load (charsmap kept, other normalizers dropped, whitespace split before Metaspace):
# the texts below include the whitespace and charsmap cases where reading tokenizer.json as is differs.
XLMR_TEXTS = ["Mars is known for its red planet.", "Hello world, the café!", "東京 タワー und der straße",
              "  leading, trailing and  double  spaces  ", "tab\tnew\nline", "ﬁne ＭＭars", "the <mask> planet",
              "literal <s> and </s> tokens", "unknown 🚀 xyz Ω", "", "   ",
              "la planet est une planet known for the red and the planet of mars " * 3]


@pytest.fixture(scope="module")
def xlmr(tmp_path_factory):
    """(jsplade's reading, transformers' reading) of the saved XLM-R tokenizer folder."""
    from helpers.xlmr_tokenizer import save_xlmr_tokenizer
    from transformers import AutoTokenizer

    folder = save_xlmr_tokenizer(tmp_path_factory.mktemp("xlmr_tokenizer"))
    return WordPieceTokenizer.from_dir(folder), AutoTokenizer.from_pretrained(str(folder)), folder


def test_xlm_roberta_special_tokens_and_vocabulary(xlmr):
    from helpers.xlmr_tokenizer import VOCAB_SIZE

    ours, ref, _ = xlmr
    assert ours.special_tokens == {"unk_token": "<unk>", "cls_token": "<s>", "sep_token": "</s>",
                                   "pad_token": "<pad>", "mask_token": "<mask>"}
    assert (ours.cls_token_id, ours.pad_token_id, ours.sep_token_id, ours.unk_token_id, ours.mask_token_id) == \
        (0, 1, 2, 3, VOCAB_SIZE - 1)
    assert (ref.cls_token_id, ref.pad_token_id, ref.sep_token_id, ref.unk_token_id, ref.mask_token_id) == \
        (0, 1, 2, 3, VOCAB_SIZE - 1)
    assert ours.vocab_size == len(ref) == VOCAB_SIZE
    assert ours.get_vocab() == ref.get_vocab()
    assert ours.model_max_length == ref.model_max_length == 512


def test_xlm_roberta_queries_match_transformers(xlmr):
    """No special tokens; unknown characters become <unk> (3); the charsmap applies (ﬁ → fi, Ｍ → M)."""
    ours, ref, _ = xlmr
    want = ref(XLMR_TEXTS, add_special_tokens=False)["input_ids"]
    got = [r.tolist() for r in ours.encode_queries(XLMR_TEXTS)]
    assert got == want
    literal = XLMR_TEXTS.index("literal <s> and </s> tokens")
    assert all(0 not in r and 2 not in r for i, r in enumerate(got) if i != literal)
    assert 0 in got[literal] and 2 in got[literal]  # special tokens written in the text stay special
    assert ours.encode_queries(["🚀 Ω"])[0].tolist() == ref("🚀 Ω", add_special_tokens=False)["input_ids"] == [4, 3, 4, 3]
    assert ours.tokenizer.decode(got[XLMR_TEXTS.index("ﬁne ＭＭars")]) == "fine MMars"
    assert got[XLMR_TEXTS.index("   ")] == [] and got[XLMR_TEXTS.index("tab\tnew\nline")].count(4) == 3


@pytest.mark.parametrize("max_length", [512, 7])
def test_xlm_roberta_documents_match_transformers(xlmr, max_length):
    """<s> … </s>, truncated to ``max_length`` with the closing </s> kept (transformers' longest_first)."""
    ours, ref, _ = xlmr
    want = ref(XLMR_TEXTS, truncation=True, max_length=max_length)["input_ids"]
    rows, n_truncated = ours.encode_documents(XLMR_TEXTS, max_length)
    assert [r.tolist() for r in rows] == want
    full = ref(XLMR_TEXTS)["input_ids"]
    assert n_truncated == sum(len(r) > max_length for r in full) and (n_truncated > 0) == (max_length == 7)
    assert all(r[0] == 0 and r[-1] == 2 and len(r) <= max_length for r in rows)


def test_xlm_roberta_padded_batch_matches_transformers(xlmr):
    ours, ref, _ = xlmr
    got = ours(XLMR_TEXTS, max_length=9)
    want = ref(XLMR_TEXTS, padding=True, truncation=True, max_length=9, return_tensors="np")
    for key in ("input_ids", "attention_mask"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert (got["input_ids"][got["attention_mask"] == 0] == 1).all() and (got["attention_mask"] == 0).any()


def test_xlm_roberta_class_supplies_the_special_token_names(xlmr, tmp_path):
    """A config naming only the class (no special tokens): <s> / </s> / <unk> / <pad> / <mask>, as transformers."""
    from transformers import AutoTokenizer

    _, _, folder = xlmr
    _copy(tmp_path, "tokenizer.json", src=folder)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "XLMRobertaTokenizer"}))
    ours, ref = WordPieceTokenizer.from_dir(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    assert (ours.cls_token_id, ours.sep_token_id, ours.unk_token_id, ours.pad_token_id, ours.mask_token_id) == \
        (ref.cls_token_id, ref.sep_token_id, ref.unk_token_id, ref.pad_token_id, ref.mask_token_id)
    assert ours.model_max_length is None
    rows, _ = ours.encode_documents(XLMR_TEXTS, 16)
    assert [r.tolist() for r in rows] == ref(XLMR_TEXTS, truncation=True, max_length=16)["input_ids"]


def test_xlm_roberta_save_round_trips(xlmr, tmp_path):
    ours, _, folder = xlmr
    ours.save(tmp_path / "saved")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "saved" / name).read_bytes() == (folder / name).read_bytes(), name
    again = WordPieceTokenizer.from_dir(tmp_path / "saved")
    assert [r.tolist() for r in again.encode_queries(XLMR_TEXTS)] == \
        [r.tolist() for r in ours.encode_queries(XLMR_TEXTS)]
