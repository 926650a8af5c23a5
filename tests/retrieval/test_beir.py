"""MTEB/BEIR json-lines loader: the shipped LIMIT data, layouts, gzip, and every error path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from helpers.files import write_jsonl
from helpers.fixtures import SE_FIXTURES
from jsplade.retrieval.beir import BeirDataset, load_beir, write_beir

DATA = Path(__file__).resolve().parents[2] / "data"


def make(folder: Path, corpus=None, queries=None, qrels=None, compress=()):
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "Title One", "text": "first text"},
        {"_id": "d2", "title": "", "text": "second text"},
        {"_id": "d3", "text": "third text"}]
    queries = queries if queries is not None else [{"_id": "q1", "text": "who"}, {"_id": "q2", "text": ""},
                                                   {"_id": "q3", "text": "unjudged"}]
    qrels = qrels if qrels is not None else [{"query-id": "q1", "corpus-id": "d1", "score": 1},
                                             {"query-id": "q1", "corpus-id": "d2", "score": 0},
                                             {"query-id": "q2", "corpus-id": "d3", "score": 2}]
    files = {"corpus": corpus, "queries": queries} | ({} if qrels is False else {"qrels": qrels})
    for name, rows in files.items():
        gz = name in compress
        write_jsonl(folder / (f"{name}.jsonl.gz" if gz else f"{name}.jsonl"), rows, gz=gz)
    return folder


def test_limit_small_as_shipped():
    ds = load_beir(DATA / "limit-small")
    assert len(ds.corpus) == 46 and len(ds.queries) == 1000
    assert sum(len(v) for v in ds.qrels.values()) == 2000
    assert {s for v in ds.qrels.values() for s in v.values()} == {1}
    rel = ds.relevant_docs()
    assert len(rel) == 1000 and all(len(v) == 2 for v in rel.values())
    first = json.loads((DATA / "limit-small" / "corpus.jsonl").read_text().splitlines()[0])
    assert first["title"] == "" and ds.corpus[first["_id"]] == first["text"]   # empty title: text only
    assert ds.queries["query_0"] == "Who likes Joshua Trees?"


def test_limit_rebuilt_corpus_gz():
    ds = load_beir(DATA / "limit")
    assert len(ds.corpus) == 50_000 and len(ds.queries) == 1000
    rel = ds.relevant_docs()
    assert len({c for v in rel.values() for c in v}) == 46


def test_title_join_scores_and_unjudged_queries(tmp_path):
    ds = load_beir(make(tmp_path))
    assert ds.corpus == {"d1": "Title One first text", "d2": "second text", "d3": "third text"}
    assert ds.queries == {"q1": "who", "q2": "", "q3": "unjudged"}   # empty and unjudged queries kept
    assert ds.qrels == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    assert ds.relevant_docs() == {"q1": {"d1"}, "q2": {"d3"}}         # score <= 0 is not relevant


def test_gzip_and_tsv_layout(tmp_path):
    folder = make(tmp_path, qrels=False, compress=("corpus", "queries"))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    with gzip.open(folder / "qrels" / "dev.tsv.gz", "wt") as f:
        f.write("q1\td2\t1\n")   # no header
    test = load_beir(folder)
    assert test.corpus["d1"] == "Title One first text" and test.qrels == {"q1": {"d1": 1}, "q2": {"d3": 1}}
    assert load_beir(folder, split="dev").qrels == {"q1": {"d2": 1}}
    with pytest.raises(FileNotFoundError, match="qrels/train.tsv"):
        load_beir(folder, split="train")


def test_integer_ids_are_strings(tmp_path):
    folder = make(tmp_path, corpus=[{"_id": 7, "text": "x"}], queries=[{"_id": 1, "text": "q"}],
                  qrels=[{"query-id": 1, "corpus-id": 7, "score": 1}])
    ds = load_beir(folder)
    assert ds.corpus == {"7": "x"} and ds.qrels == {"1": {"7": 1}}


@pytest.mark.parametrize("corpus,message", [
    (['{"_id": "d1", "text": "a"}', '{"_id": "d2", "text": '], r"corpus.jsonl:2: malformed JSON"),
    ([{"text": "a"}], r"corpus.jsonl:1: missing '_id'"),
    ([{"_id": "d1"}], r"corpus.jsonl:1: missing 'text'"),
    ([{"_id": "d1", "text": 3}], r"corpus.jsonl:1: 'text' must be a string"),
    ([{"_id": "d1", "text": "a"}, {"_id": "d1", "text": "b"}], r"corpus.jsonl:2: duplicate document id 'd1'"),
    (['[1, 2]'], r"corpus.jsonl:1: expected a JSON object"),
])
def test_corpus_errors(tmp_path, corpus, message):
    with pytest.raises(ValueError, match=message):
        load_beir(make(tmp_path, corpus=corpus, qrels=[]))


def test_query_and_qrels_errors(tmp_path):
    with pytest.raises(ValueError, match=r"queries.jsonl:2: duplicate query id 'q1'"):
        load_beir(make(tmp_path / "a", queries=[{"_id": "q1", "text": "x"}, {"_id": "q1", "text": "y"}], qrels=[]))
    with pytest.raises(ValueError, match=r"qrels.jsonl:2: duplicate judgement for query 'q1' and document 'd1'"):
        load_beir(make(tmp_path / "b", qrels=[{"query-id": "q1", "corpus-id": "d1", "score": 1}] * 2))
    with pytest.raises(ValueError, match=r"qrels.jsonl:1: score must be an integer"):
        load_beir(make(tmp_path / "c", qrels=[{"query-id": "q1", "corpus-id": "d1", "score": "high"}]))
    with pytest.raises(ValueError, match=r"qrels.jsonl:1: missing 'score'"):
        load_beir(make(tmp_path / "d", qrels=[{"query-id": "q1", "corpus-id": "d1"}]))
    folder = make(tmp_path / "e", qrels=False)
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text("q1\td1\n")
    with pytest.raises(ValueError, match=r"test.tsv:1: expected 3 tab-separated fields"):
        load_beir(folder)


def test_unknown_ids_error_or_drop(tmp_path):
    qrels = [{"query-id": "q1", "corpus-id": "d1", "score": 1}, {"query-id": "q9", "corpus-id": "d1", "score": 1},
             {"query-id": "q1", "corpus-id": "d9", "score": 1}]
    folder = make(tmp_path, qrels=qrels)
    with pytest.raises(ValueError, match=r"qrels.jsonl:2: unknown query id 'q9'.*on_unknown='drop'"):
        load_beir(folder)
    with pytest.warns(UserWarning, match="dropped 2 judgement"):
        ds = load_beir(folder, on_unknown="drop")
    assert ds.qrels == {"q1": {"d1": 1}}
    with pytest.raises(ValueError, match="on_unknown must be"):
        load_beir(folder, on_unknown="ignore")


def test_missing_ambiguous_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data set folder not found"):
        load_beir(tmp_path / "nothing")
    folder = make(tmp_path / "a")
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="neither corpus.jsonl nor corpus.jsonl.gz"):
        load_beir(folder)
    folder = make(tmp_path / "b", compress=("corpus",))
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "text": "x"}])
    with pytest.raises(ValueError, match="both corpus.jsonl and corpus.jsonl.gz"):
        load_beir(folder)
    folder = make(tmp_path / "c", qrels=False)
    with pytest.raises(FileNotFoundError, match="no relevance judgements"):
        load_beir(folder)
    folder = make(tmp_path / "d")
    (folder / "queries.jsonl").unlink()
    (folder / "queries.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(ValueError, match=r"queries.jsonl.gz: cannot be read"):
        load_beir(folder)
    folder = make(tmp_path / "e")
    (folder / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"queries.jsonl: not UTF-8"):
        load_beir(folder)


def test_empty_query_encodes_to_zero_vector(tmp_path):
    """The documented behaviour: an empty query is kept and the real encoder maps it to an all-zero row."""
    from jsplade.splade.encoder import SparseEncoder

    ds = load_beir(make(tmp_path))
    assert ds.queries["q2"] == ""
    enc = SparseEncoder.from_pretrained(SE_FIXTURES / "model")
    rows = enc.encode_query([ds.queries["q1"], ds.queries["q2"]])
    assert rows.shape == (2, enc.vocab_size)
    assert rows[1].nnz == 0 or not np.any(rows[1].toarray())
    assert rows[0].nnz > 0


def test_write_beir_round_trip(tmp_path):
    data = BeirDataset(corpus={"b": "Zoë likes Crêpes.", "a": ""}, queries={"q2": "Who likes Crêpes?", "q1": "?"},
                       qrels={"q2": {"b": 1, "a": 0}})
    folder = write_beir(tmp_path / "set", data)
    assert sorted(p.name for p in folder.iterdir()) == ["corpus.jsonl", "qrels.jsonl", "queries.jsonl"]
    assert load_beir(folder) == data and list(load_beir(folder).corpus) == ["b", "a"]
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_beir(folder, data)
    write_beir(folder, BeirDataset({"c": "x"}, {"q": "x"}, {"q": {"c": 1}}), overwrite=True)
    assert load_beir(folder).corpus == {"c": "x"}
