"""Corpus encoding to shards (jsplade.retrieval.corpus): every input format read lazily, the shards equal the
encoder's own vectors, pruning / quantisation applied as defined, resume after a failure gives the same bytes,
and bad input (duplicate ids, empty texts, a directory of another model or setting, a full disk) is refused
with no corrupt part left behind.

Vectors are compared with ``encode_document`` on the same texts: the same active entries and values within
1e-5 relative (parts batch other rows together than one call does, which moves float32 rounding).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.files import write_jsonl
from helpers.tiny_encoder import random_texts, tiny_encoder

from jsplade.retrieval.corpus import count_corpus, encode_corpus, iter_corpus, load_encoded
from jsplade.retrieval.evaluation import SparseIREvaluator
from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.shards import MANIFEST_NAME, part_name, read_part, read_shards
from jsplade.splade.pruning import Pruning, Quantization


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


def rows(n, seed=0):
    texts = random_texts(n, seed=seed)
    return [{"_id": f"doc{i}", "title": "w7 w8" if i % 4 == 0 else "", "text": t} for i, t in enumerate(texts)]


def joined(r):
    return f"{r['title']} {r['text']}" if r["title"] else r["text"]


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def close(a, b):
    pa_, pb_ = a.copy(), b.copy()
    pa_.data[:] = 1
    pb_.data[:] = 1
    assert (pa_ != pb_).nnz == 0
    assert abs(a - b).max() <= 1e-5 * abs(b).max()


# ------------------------------------------------------------------ reading
def test_every_format_gives_the_same_rows(tmp_path):
    recs = rows(50)
    (tmp_path / "beir").mkdir()
    write_jsonl(tmp_path / "beir" / "corpus.jsonl.gz", recs, gz=True)
    write_jsonl(tmp_path / "c.jsonl", recs)
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.Table.from_pylist(recs[:20]), tmp_path / "pq" / "a.parquet", row_group_size=7)
    pq.write_table(pa.Table.from_pylist(recs[20:]), tmp_path / "pq" / "b.parquet", row_group_size=7)
    table = pa.Table.from_pylist([{"id": i, "text": r["text"]} for i, r in enumerate(recs)])
    with pa.ipc.new_stream(tmp_path / "c.arrow", table.schema) as w:
        w.write_table(table, max_chunksize=9)
    from datasets import Dataset

    Dataset.from_list(recs).save_to_disk(str(tmp_path / "ds"))
    expected = [(r["_id"], joined(r)) for r in recs]
    for source in (tmp_path / "beir", tmp_path / "c.jsonl", tmp_path / "pq", str(tmp_path / "pq" / "*.parquet"),
                   tmp_path / "ds"):
        assert [(r.id, r.text) for r in iter_corpus(source)] == expected, source
        assert count_corpus(source) == 50
    assert [(r.id, r.text) for r in iter_corpus(tmp_path / "c.arrow")] == [(str(i), r["text"]) for i, r in enumerate(recs)]


@pytest.mark.parametrize("line, message", [
    ('{"text": "w1"}', "no '_id'"), ('{"_id": "a"}', "missing 'text'"), ('{"_id": "a", "text": 3}', "must be a string"),
    ('{"_id": true, "text": "w1"}', "string or an integer"), ('{"_id": "", "text": "w1"}', "empty document id"),
    ('[1, 2]', "expected a JSON object"), ('{"_id": "a", ', "malformed JSON"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"_id": "ok", "text": "w1"}\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"c\.jsonl:2: .*{message}"):
        list(iter_corpus(path))


def test_a_missing_corpus_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: corpus not found"):
        list(iter_corpus(tmp_path / "nowhere"))


# ------------------------------------------------------------------ encoding
def test_shards_hold_the_encoders_vectors(tmp_path, encoder):
    recs = rows(230)
    corpus = write_jsonl(tmp_path / "c.jsonl", recs)
    report = encode_corpus(encoder, corpus, tmp_path / "out", shard_size=100, show_progress_bar=False)
    assert (report.n_docs, report.n_parts, report.parts_written) == (230, 3, 3)
    assert report.tokens == sum(len(x) for x in encoder.tokenize_documents([joined(r) for r in recs])[0])
    ids, m = load_encoded(tmp_path / "out")
    assert ids == [r["_id"] for r in recs]
    close(m, encoder.encode_document([joined(r) for r in recs]))
    part_ids, part_m, n_tokens = read_part(tmp_path / "out" / part_name(1))
    assert part_ids == ids[100:200] and n_tokens.tolist() == [len(x) for x in encoder.tokenize_documents(
        [joined(r) for r in recs[100:200]])[0]]
    manifest = read_shards(tmp_path / "out").manifest
    assert manifest["n_docs"] == 230 and [p["docs"] for p in manifest["parts"]] == [100, 100, 30]
    assert manifest["settings"]["model"] == encoder.fingerprint()
    # the index and the evaluator read the shards back
    index = SparseIndex.from_shards(tmp_path / "out")
    assert index.ids == ids and (index.matrix != m).nnz == 0
    queries = {f"q{i}": recs[i]["text"] for i in range(0, 230, 23)}
    relevant = {f"q{i}": {f"doc{i}"} for i in range(0, 230, 23)}
    ev = SparseIREvaluator(queries, {r["_id"]: joined(r) for r in recs}, relevant, show_progress_bar=False)
    from_shards = ev(encoder, corpus_shards=tmp_path / "out")
    fresh = ev(encoder)
    for key, value in fresh.items():
        assert from_shards[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_devices_do_not_change_the_shards_beyond_rounding(tmp_path):
    enc = tiny_encoder()
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(150, seed=4))
    encode_corpus(enc, corpus, tmp_path / "one", shard_size=64, show_progress_bar=False)
    encode_corpus(enc.set_devices("local"), corpus, tmp_path / "eight", shard_size=64, show_progress_bar=False)
    (ids1, m1), (ids8, m8) = load_encoded(tmp_path / "one"), load_encoded(tmp_path / "eight")
    assert ids1 == ids8
    close(m8, m1)
    assert read_shards(tmp_path / "eight").settings["devices"] == 8


@pytest.mark.parametrize("pruning", ["top_k:5", "max_ratio:0.5", "abs_value:0.8", "alpha_mass:0.6"])
def test_pruning_and_quantisation_are_applied_as_defined(tmp_path, encoder, pruning):
    recs = rows(120, seed=2)
    corpus = write_jsonl(tmp_path / "c.jsonl", recs)
    rule, quant = Pruning.parse(pruning), Quantization(factor=100.0)
    encode_corpus(encoder, corpus, tmp_path / "p", shard_size=50, pruning=pruning, quantization=quant,
                  show_progress_bar=False)
    shards = read_shards(tmp_path / "p")
    assert shards.settings["pruning"] == rule.to_dict() and shards.quantization == quant.to_dict()
    raw_ids, raw = shards.load()
    assert np.issubdtype(raw.dtype, np.integer)
    # part by part, the encoder's vectors pruned then quantised
    for k, lo in enumerate(range(0, 120, 50)):
        part = encoder.encode_document([joined(r) for r in recs[lo:lo + 50]])
        expected = quant.quantize(rule.apply(part))
        got = raw[lo:lo + 50]
        assert abs(got - expected).max() <= 1  # an impact can round the other way only at float32 rounding
        assert abs(got - expected).sum() <= 2
    ids, deq = load_encoded(tmp_path / "p")
    assert deq.dtype == np.float32 and abs(deq - raw / 100.0).max() < 1e-6


def test_on_empty_error_and_skip(tmp_path, encoder):
    recs = rows(10)
    recs[6]["text"], recs[6]["title"] = "   ", ""
    corpus = write_jsonl(tmp_path / "c.jsonl", recs)
    with pytest.raises(ValueError, match=r"c\.jsonl:7: document 'doc6' has an empty text"):
        encode_corpus(encoder, corpus, tmp_path / "a", show_progress_bar=False)
    assert not (tmp_path / "a" / MANIFEST_NAME).exists()
    report = encode_corpus(encoder, corpus, tmp_path / "b", on_empty="skip", show_progress_bar=False)
    assert report.skipped_empty == 1 and load_encoded(tmp_path / "b")[0] == [f"doc{i}" for i in range(10) if i != 6]


def test_duplicate_ids_within_and_across_parts(tmp_path, encoder):
    recs = rows(30)
    recs[5]["_id"] = "doc2"
    with pytest.raises(ValueError, match=r"c\.jsonl:6: duplicate document id 'doc2' \(first at .*c\.jsonl:3\)"):
        encode_corpus(encoder, write_jsonl(tmp_path / "c.jsonl", recs), tmp_path / "a", shard_size=10,
                      show_progress_bar=False)
    recs = rows(30)
    recs[25]["_id"] = "doc3"
    with pytest.raises(ValueError, match=r"duplicate document id 'doc3': row 3 of part-00000.safetensors and row 5 "
                                         r"of part-00002.safetensors .* has no manifest"):
        encode_corpus(encoder, write_jsonl(tmp_path / "d.jsonl", recs), tmp_path / "b", shard_size=10,
                      show_progress_bar=False)
    assert not (tmp_path / "b" / MANIFEST_NAME).exists()
    with pytest.raises(ValueError, match="unfinished shard directory"):
        read_shards(tmp_path / "b")


def test_other_model_or_settings_are_refused_not_mixed(tmp_path, encoder):
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(40))
    encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    before = files_of(tmp_path / "out")
    for kwargs, what in (({"pruning": "top_k:3"}, "pruning"), ({"quantization": Quantization(100.0)}, "quantization"),
                         ({"shard_size": 20}, "shard_size")):
        args = {"shard_size": 10, **kwargs}
        with pytest.raises(ValueError, match=rf"other settings \({what}: "):
            encode_corpus(encoder, corpus, tmp_path / "out", show_progress_bar=False, **args)
    with pytest.raises(ValueError, match="model: 'sha256:"):
        encode_corpus(tiny_encoder(seed=5), corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    # an unfinished directory of another setting is refused as well (a part, no manifest)
    (tmp_path / "out" / MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match=r"part-00000.safetensors was written under other settings \(pruning"):
        encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, pruning="top_k:3", show_progress_bar=False)
    encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    assert files_of(tmp_path / "out") == before
    encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, pruning="top_k:3", overwrite=True,
                  show_progress_bar=False)
    assert read_shards(tmp_path / "out").settings["pruning"] == {"kind": "top_k", "value": 3}
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a shard directory"):
        encode_corpus(encoder, corpus, tmp_path / "other", show_progress_bar=False)


def test_a_full_disk_leaves_no_partial_part_and_the_rerun_finishes_identically(tmp_path, encoder, monkeypatch):
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(50))
    encode_corpus(encoder, corpus, tmp_path / "clean", shard_size=10, show_progress_bar=False)
    import jsplade.files as files

    real_fsync, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] == 3:  # the third part's write
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fsync)
    with pytest.raises(OSError, match=r"part-00002.safetensors: no space left on the device .* parts already "
                                      r"written are kept"):
        encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    monkeypatch.setattr(files.os, "fsync", real_fsync)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [part_name(0), part_name(1)]
    report = encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    assert (report.parts_kept, report.parts_written) == (2, 3)
    assert files_of(tmp_path / "out") == files_of(tmp_path / "clean")


def test_resume_removes_temporaries_and_redoes_only_missing_parts(tmp_path, encoder):
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(45))
    encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    clean = files_of(tmp_path / "out")
    (tmp_path / "out" / MANIFEST_NAME).unlink()
    (tmp_path / "out" / part_name(3)).unlink()
    (tmp_path / "out" / ".part-00004.safetensors.abc123.tmp").write_bytes(b"half a part")
    report = encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    assert (report.parts_kept, report.parts_written, report.n_docs_encoded) == (4, 1, 10)
    assert files_of(tmp_path / "out") == clean


def test_a_damaged_part_is_reported(tmp_path, encoder):
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(20))
    encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)
    p = tmp_path / "out" / part_name(1)
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ValueError, match="part-00001.safetensors: not a readable shard part"):
        read_shards(tmp_path / "out")
    with pytest.raises(ValueError, match="part-00001.safetensors: not a readable shard part"):
        encode_corpus(encoder, corpus, tmp_path / "out", shard_size=10, show_progress_bar=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"shard_size": 0}, "shard_size must be a positive integer"), ({"batch_size": 0}, "batch_size must be"),
    ({"on_empty": "keep"}, "on_empty must be one of"), ({"pruning": "top_k:0"}, "top_k"),
    ({"max_active_dims": 0}, "max_active_dims must be"),
])
def test_bad_arguments(tmp_path, encoder, kwargs, message):
    corpus = write_jsonl(tmp_path / "c.jsonl", rows(5))
    with pytest.raises(ValueError, match=message):
        encode_corpus(encoder, corpus, tmp_path / "out", show_progress_bar=False, **kwargs)


def test_pruning_existing_shards_equals_encoding_with_the_rule(tmp_path, encoder):
    from jsplade.retrieval.corpus import prune_shards

    corpus = write_jsonl(tmp_path / "c.jsonl", rows(70, seed=6))
    encode_corpus(encoder, corpus, tmp_path / "raw", shard_size=25, show_progress_bar=False)
    encode_corpus(encoder, corpus, tmp_path / "direct", shard_size=25, pruning="alpha_mass:0.7",
                  quantization="int32:100", show_progress_bar=False)
    prune_shards(tmp_path / "raw", tmp_path / "derived", pruning="alpha_mass:0.7", quantization="int32:100")
    assert files_of(tmp_path / "derived") == files_of(tmp_path / "direct")
    with pytest.raises(ValueError, match="already pruned or quantised"):
        prune_shards(tmp_path / "direct", tmp_path / "again", pruning="top_k:2")
    with pytest.raises(ValueError, match="another directory than the source"):
        prune_shards(tmp_path / "raw", tmp_path / "raw", pruning="top_k:2")
