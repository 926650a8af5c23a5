"""Streaming training data (jsplade.training.streaming): lazy shard readers, process assignment, the windowed
no-duplicates batch stream, exact resume, flat memory, and the error messages.

Readers are compared with ``load_pairs`` on the same content; the stream's batches with
``greedy_no_duplicate_batches`` when one window holds the epoch, and with themselves (seeds, resume at every
batch). The 1,000,000-row epoch measures the tracemalloc peak against a 100,000-row epoch read the same way.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from itertools import combinations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers.files import write_jsonl

from jsplade.training.data import greedy_no_duplicate_batches, load_pairs
from jsplade.training.streaming import ShardReader, StreamingBatches, count_rows, list_shards

ROWS = [
    {"anchor": "what is bm25", "positive": "BM25 is a ranking function", "negative": "a cat", "label": 1.0,
     "dataset_name": "x"},
    {"anchor": "splade", "positive": "", "negative": "sparse lexical expansion", "label": 0.5, "dataset_name": "x"},
    {"anchor": "naïve café ☕", "positive": "UTF-8 text", "negative": "what is bm25", "label": 2,
     "dataset_name": "y"},
    {"anchor": "q3", "positive": "p3", "negative": "n3", "label": -1.25, "dataset_name": "y"},
    {"anchor": "q4", "positive": "line\nbreak, comma", "negative": "n4", "label": 0.0, "dataset_name": "y"},
]


def write_parquet(path, rows, row_group_size=2):
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def write_arrow_stream(path, rows, batch_rows=2):
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return path


def write_dataset_folder(folder, parts):
    """The layout of ``datasets.Dataset.save_to_disk``: state.json + data-XXXXX-of-YYYYY.arrow IPC streams."""
    folder.mkdir()
    names = [f"data-{i:05d}-of-{len(parts):05d}.arrow" for i in range(len(parts))]
    for name, rows in zip(names, parts):
        write_arrow_stream(folder / name, rows)
    (folder / "state.json").write_text(json.dumps({
        "_data_files": [{"filename": n} for n in names], "_fingerprint": "f", "_format_columns": None,
        "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False, "_split": None}))
    (folder / "dataset_info.json").write_text("{}")
    return folder


def all_rows(source, **kw):
    return list(ShardReader(source, **kw).iter_rows())


# ----------------------------------------------------------------------------- readers vs load_pairs
def test_every_format_yields_the_rows_of_load_pairs(tmp_path):
    ref = load_pairs(write_jsonl(tmp_path / "ref.jsonl", ROWS))
    assert ref.columns == ("anchor", "positive", "negative")
    labels = [float(r["label"]) for r in ROWS]
    sources = {
        "jsonl": write_jsonl(tmp_path / "a.jsonl", ROWS),
        "ndjson.gz": write_jsonl(tmp_path / "a.ndjson.gz", ROWS, gz=True),
        "parquet": write_parquet(tmp_path / "a.parquet", ROWS),
        "arrow stream": write_arrow_stream(tmp_path / "a.arrow", ROWS),
        "datasets folder": write_dataset_folder(tmp_path / "saved", [ROWS[:3], ROWS[3:]]),
    }
    table = pa.Table.from_pylist(ROWS)
    with pa.OSFile(str(tmp_path / "file.arrow"), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=3)
    sources["arrow file"] = tmp_path / "file.arrow"
    assert load_pairs(sources["parquet"]).rows == ref.rows
    if getattr(ref, "labels", None) is not None:  # load_pairs versions that split labels off as well
        assert list(ref.labels) == labels and ref.label_column == "label"
    for name, source in sources.items():
        reader = ShardReader(source)
        rows = list(reader.iter_rows())
        assert reader.columns == ref.columns and reader.label_column == "label", name
        assert [r.texts for r in rows] == list(ref.rows), name
        assert [r.label for r in rows] == labels and all(type(r.label) is float for r in rows), name
        if name != "datasets folder":
            assert [r.id for r in rows] == [(0, i) for i in range(len(ROWS))], name
        else:
            assert [r.id for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    # columns chooses and orders, as in load_pairs
    for name, source in sources.items():
        rows = all_rows(source, columns=["positive", "anchor"])
        assert [r.texts for r in rows] == list(load_pairs(sources["jsonl"], columns=["positive", "anchor"]).rows)


def test_real_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = {k: [r[k] for r in ROWS] for k in ("anchor", "positive", "negative", "label")}
    datasets.Dataset.from_dict(data).save_to_disk(str(tmp_path / "ds"), num_shards=2)
    rows = all_rows(tmp_path / "ds")
    assert [r.texts for r in rows] == list(load_pairs(write_jsonl(tmp_path / "r.jsonl", ROWS)).rows)


def test_array_rows_list_labels_and_label_errors(tmp_path):
    arrays = [["q0", "p0"], ["q1", "p1"], ["q2", ""]]
    path = write_jsonl(tmp_path / "arr.jsonl", arrays)
    rows = all_rows(path)
    assert [r.texts for r in rows] == list(load_pairs(path).rows) and all(r.label is None for r in rows)
    assert ShardReader(path).columns == ("anchor", "positive")

    listed = [{"q": f"q{i}", "d": f"d{i}", "scores": [i, 0.5]} for i in range(4)]
    rows = all_rows(write_parquet(tmp_path / "l.parquet", listed))
    assert [r.label for r in rows] == [(float(i), 0.5) for i in range(4)]
    bad_len = listed[:2] + [{"q": "x", "d": "y", "scores": [1.0]}]
    with pytest.raises(ValueError, match=r"bad_len\.jsonl: row 2, column 'scores': a list of 1 floats, earlier "
                                         r"rows have lists of 2"):
        all_rows(write_jsonl(tmp_path / "bad_len.jsonl", bad_len))
    for name, label in (("text", "high"), ("bool", True), ("null", None), ("nested", [1.0, "a"]), ("empty", []),
                        ("nan", float("nan"))):
        path = write_jsonl(tmp_path / f"bad_{name}.jsonl", [{"q": "a", "d": "b", "label": 1.0},
                                                           {"q": "c", "d": "d", "label": label}])
        with pytest.raises(ValueError, match=rf"bad_{name}\.jsonl: row 1, column 'label': expected a float or a list"):
            all_rows(path)
    with pytest.raises(ValueError, match=r"kind\.jsonl: row 1, column 'label': a list of 1 floats, earlier rows have "
                                         r"floats"):
        all_rows(write_jsonl(tmp_path / "kind.jsonl", [{"q": "a", "d": "b", "label": 1.0},
                                                       {"q": "c", "d": "d", "label": [1.0]}]))
    with pytest.raises(ValueError, match=r"nolabel\.jsonl: row 1 \(line 2\) has no 'label'"):
        all_rows(write_jsonl(tmp_path / "nolabel.jsonl", [{"q": "a", "d": "b", "label": 1.0}, {"q": "c", "d": "d"}]))
    # the first of label, labels, score, scores is the label column; the others are ignored
    both = [{"q": "a", "d": "b", "score": 2.0, "labels": [1.0, 0.0]}]
    assert all_rows(write_parquet(tmp_path / "both.parquet", both))[0] == ((0, 0), ("a", "b"), (1.0, 0.0))


def test_row_validation_errors_name_file_and_row(tmp_path):
    rows = [{"a": "x", "b": "y"}, {"a": "z", "b": "w"}, {"a": "v"}]
    with pytest.raises(ValueError, match=r"miss\.jsonl: row 2 \(line 3\) is missing column 'b'"):
        all_rows(write_jsonl(tmp_path / "miss.jsonl", rows))
    with pytest.raises(ValueError, match=r"extra\.jsonl: row 1 \(line 2\) has column 'c'"):
        all_rows(write_jsonl(tmp_path / "extra.jsonl", [{"a": "x", "b": "y"}, {"a": "x", "b": "y", "c": "z"}]))
    assert len(all_rows(tmp_path / "extra.jsonl", columns=["a", "b"])) == 2  # named columns ignore the rest
    with pytest.raises(TypeError, match=r"num\.parquet: row 0, column 'b': expected a text string, got int 4"):
        all_rows(write_parquet(tmp_path / "num.parquet", [{"a": f"x{i}", "b": i + 4} for i in range(5)]))
    nulls = [{"a": "x", "b": "y"}] * 4 + [{"a": "x", "b": None}]
    with pytest.raises(TypeError, match=r"null\.parquet: row 4, column 'b': expected a text string, got NoneType"):
        all_rows(write_parquet(tmp_path / "null.parquet", nulls))
    with pytest.raises(TypeError, match=r"int\.jsonl: row 1, column 'a': expected a text string, got int"):
        all_rows(write_jsonl(tmp_path / "int.jsonl", [{"a": "x", "b": "y"}, {"a": 5, "b": "y"}]))
    with pytest.raises(ValueError, match=r"one\.jsonl: need at least 2 columns"):
        ShardReader(write_jsonl(tmp_path / "one.jsonl", [{"a": "x"}]))
    (tmp_path / "badjson.jsonl").write_text('{"a": "x", "b": "y"}\n{"a": \n')
    with pytest.raises(ValueError, match=r"badjson\.jsonl: line 2 \(row 1\) is not valid JSON"):
        all_rows(tmp_path / "badjson.jsonl")


# ----------------------------------------------------------------------------- a million rows, flat memory
def test_a_million_rows_stream_once_each_with_flat_memory(tmp_path):
    per, shards = 100_000, 10
    for s in range(shards):
        lo = s * per
        table = pa.table({"query": [f"q{i}" for i in range(lo, lo + per)],
                          "positive": [f"p{i}" for i in range(lo, lo + per)]})
        pq.write_table(table, tmp_path / f"part-{s:02d}.parquet", row_group_size=10_000)

    def one_epoch(source, n):
        counts = np.zeros(n, np.int8)  # allocated before tracing: the test's own bookkeeping
        stream = StreamingBatches(source, 64, seed=3, buffer_size=4096, epochs=1)
        gc.collect()
        tracemalloc.start()
        arrow_peak = 0
        try:
            for batch in stream:
                ids = np.asarray(batch.ids, dtype=np.int64)
                np.add.at(counts, ids[:, 0] * per + ids[:, 1], 1)
                assert batch.rows[0] == (f"q{ids[0, 0] * per + ids[0, 1]}", f"p{ids[0, 0] * per + ids[0, 1]}")
                arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return peak, arrow_peak, counts

    small_peak, small_arrow, small_counts = one_epoch([tmp_path / "part-00.parquet"], per)
    big_peak, big_arrow, big_counts = one_epoch(tmp_path, per * shards)
    assert (small_counts == 1).all() and (big_counts == 1).all()  # every row id exactly once
    # measured (2 cores, pyarrow 26): 6.47 MiB vs 6.52 MiB, ratio 1.01. A per-row structure of even one byte
    # per row (0.9 MiB for the 900,000 extra rows) would push the ratio past 1.10.
    assert big_peak < 1.10 * small_peak, (small_peak, big_peak)
    assert big_peak < 32 * 2**20
    assert big_arrow < 8 * 2**20, big_arrow  # Arrow buffers (not traced): one row group, not the data (~20 MiB)


# ----------------------------------------------------------------------------- processes
def dup_rows(n, start=0):
    """Rows with repeated texts across rows and columns (no-duplicates conflicts)."""
    return [{"query": f"q{i % 31}", "positive": f"p{i}", "negative": f"p{(i * 7) % 50}"}
            for i in range(start, start + n)]


def epoch_ids(stream, epoch=0):
    return [i for b in stream if b.epoch == epoch for i in b.ids]


@pytest.mark.parametrize("layout", ["shard", "row-parquet", "row-jsonl", "row-arrow"])
def test_processes_read_disjoint_rows_covering_the_epoch(tmp_path, layout):
    if layout == "shard":
        for s in range(5):
            write_parquet(tmp_path / f"s{s}.parquet", dup_rows(37, 37 * s), row_group_size=8)
        P, expect_mode = 2, "shard"
    elif layout == "row-parquet":
        write_parquet(tmp_path / "one.parquet", dup_rows(101), row_group_size=2)  # groups of 2 < P=3
        P, expect_mode = 3, "row"
    elif layout == "row-jsonl":
        write_jsonl(tmp_path / "one.jsonl", dup_rows(101))
        write_jsonl(tmp_path / "two.jsonl.gz", dup_rows(50, 101), gz=True)
        P, expect_mode = 3, "row"
    else:
        write_dataset_folder(tmp_path / "saved", [dup_rows(60), dup_rows(41, 60)])
        tmp_path = tmp_path / "saved"
        P, expect_mode = 4, "row"
    everything = sorted(r.id for r in all_rows(tmp_path))
    seen = []
    for p in range(P):
        stream = StreamingBatches(tmp_path, 5, seed=1, buffer_size=16, epochs=1, process_index=p, process_count=P)
        assert stream.reader.assignment == expect_mode
        ids = epoch_ids(stream)
        assert len(ids) == count_rows(tmp_path, process_index=p, process_count=P)
        assert all((s if expect_mode == "shard" else r) % P == p for s, r in ids)
        seen += ids
    assert sorted(seen) == everything and len(set(seen)) == len(seen)


# ----------------------------------------------------------------------------- batching rules
def no_duplicates(batch):
    return all(set(a).isdisjoint(b) for a, b in combinations(batch.rows, 2))


def mixed_source(tmp_path):
    write_parquet(tmp_path / "a.parquet", dup_rows(120), row_group_size=16)
    write_jsonl(tmp_path / "b.jsonl", dup_rows(90, 120))
    write_arrow_stream(tmp_path / "c.arrow", dup_rows(71, 210), batch_rows=9)
    return tmp_path


def test_one_window_is_greedy_no_duplicate_batches(tmp_path):
    source = mixed_source(tmp_path)
    by_id = {r.id: r.texts for r in all_rows(source)}
    for drop_last in (False, True):
        stream = StreamingBatches(source, 7, seed=5, buffer_size=1000, epochs=2, drop_last=drop_last)
        batches = list(stream)
        for epoch in (0, 1):
            ids = [i for s in stream.shard_order(epoch) for i in sorted(k for k in by_id if k[0] == s)]
            perm = stream.window_permutation(epoch, 0, len(ids))
            expect = greedy_no_duplicate_batches(perm, [by_id[i] for i in ids], 7, drop_last=drop_last)
            got = [list(b.ids) for b in batches if b.epoch == epoch]
            assert got == [[ids[k] for k in b] for b in expect]
        assert batches[0].ids != next(b for b in batches if b.epoch == 1).ids
        assert drop_last == all(len(b) == 7 for b in batches)


@pytest.mark.parametrize("buffer_size", [8, 23, 64])
def test_no_duplicates_coverage_and_seeds(tmp_path, buffer_size):
    source = mixed_source(tmp_path)
    n = len(all_rows(source))

    def run(seed, **kw):
        return list(StreamingBatches(source, 8, seed=seed, buffer_size=buffer_size, epochs=2, **kw))

    batches = run(0)
    assert all(no_duplicates(b) for b in batches)
    assert sum(len(b) < 8 for b in batches) >= 1  # the data does produce short batches
    for epoch in (0, 1):
        ids = [i for b in batches if b.epoch == epoch for i in b.ids]
        assert len(ids) == n and len(set(ids)) == n
    assert [b.ids for b in run(0)] == [b.ids for b in batches]
    assert [b.ids for b in run(1)] != [b.ids for b in batches]
    # drop_last drops the short scans with their rows and changes nothing else
    dropped = run(0, drop_last=True)
    assert [b.ids for b in dropped] == [b.ids for b in batches if len(b) == 8]


@pytest.mark.parametrize("drop_last", [False, True])
def test_resume_from_every_batch_is_exact(tmp_path, drop_last):
    source = mixed_source(tmp_path)
    make = lambda: StreamingBatches(source, 6, seed=11, buffer_size=40, epochs=3, drop_last=drop_last)  # noqa: E731
    full = list(make())
    assert {b.epoch for b in full} == {0, 1, 2}
    stream = make()
    states = [json.loads(json.dumps(stream.state()))]
    for _ in full:
        next(stream)
        states.append(json.loads(json.dumps(stream.state())))
    assert any(s["leftover"] for s in states) and any(s["scans"] > 0 for s in states)
    assert max(len(json.dumps(s)) for s in states) < 2000  # a few leftover ids, not the buffer
    for k, state in enumerate(states):
        resumed = StreamingBatches.from_state(source, state)
        rest = list(resumed)
        assert [(b.epoch, b.ids, b.rows) for b in rest] == [(b.epoch, b.ids, b.rows) for b in full[k:]], k
    # across the epoch boundary, explicitly: the state after the last batch of epoch 0
    last0 = max(k for k, b in enumerate(full) if b.epoch == 0)
    resumed = StreamingBatches.from_state(source, states[last0 + 1])
    assert next(resumed).ids == full[last0 + 1].ids and full[last0 + 1].epoch == 1


def test_resume_refuses_other_shards_or_a_foreign_state(tmp_path):
    source = mixed_source(tmp_path)
    stream = StreamingBatches(source, 6, seed=0, buffer_size=40)
    next(stream)
    state = stream.state()
    with pytest.raises(ValueError, match="other shards"):
        StreamingBatches.from_state([source / "a.parquet", source / "b.jsonl"], state)
    with pytest.raises(ValueError, match="stream state"):
        StreamingBatches.from_state(source, {"epoch": 0})


# ----------------------------------------------------------------------------- errors
def test_shard_missing_when_read(tmp_path):
    source = mixed_source(tmp_path)
    stream = StreamingBatches(source, 6, seed=0, buffer_size=40, epochs=1)
    (source / "b.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.jsonl: data shard not found"):
        list(stream)
    with pytest.raises(FileNotFoundError, match=r"nope\.parquet"):
        ShardReader([source / "a.parquet", source / "nope.parquet"])


def test_corrupt_parquet_names_the_file(tmp_path):
    good = write_parquet(tmp_path / "good.parquet", dup_rows(30))
    (tmp_path / "junk.parquet").write_bytes(b"this is not a parquet file" * 10)
    with pytest.raises(ValueError, match=r"junk\.parquet: cannot read Parquet file"):
        ShardReader(tmp_path)
    data = good.read_bytes()
    (tmp_path / "junk.parquet").write_bytes(data[: len(data) // 2])  # truncated: no footer
    with pytest.raises(ValueError, match=r"junk\.parquet: cannot read Parquet file"):
        ShardReader(tmp_path)
    write_parquet(tmp_path / "junk.parquet", dup_rows(30, 30))
    stream = StreamingBatches(tmp_path, 4, seed=0, buffer_size=8, epochs=1)
    (tmp_path / "junk.parquet").write_bytes(b"\0" * 300)  # corrupted after the stream was built
    with pytest.raises(ValueError, match=r"junk\.parquet: cannot read Parquet file"):
        list(stream)


def test_empty_shard_lists(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no data")
    with pytest.raises(ValueError, match="empty shard list"):
        list_shards(tmp_path / "empty")
    with pytest.raises(ValueError, match="empty shard list"):
        ShardReader([])
    with pytest.raises(ValueError, match="empty shard list"):
        ShardReader(str(tmp_path / "empty" / "*.parquet"))
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(ValueError, match=r"blank\.jsonl: the dataset is empty"):
        ShardReader(tmp_path / "blank.jsonl")


def test_shards_whose_columns_disagree(tmp_path):
    write_parquet(tmp_path / "a.parquet", [{"q": "x", "d": "y"}])
    write_jsonl(tmp_path / "b.jsonl", [{"q": "x", "doc": "y"}])
    with pytest.raises(ValueError, match=r"b\.jsonl: columns \['q', 'doc'\] differ from those of the first shard "
                                         r".*a\.parquet"):
        ShardReader(tmp_path)
    with pytest.raises(ValueError, match=r"b\.jsonl: no column 'd'"):
        ShardReader(tmp_path, columns=["q", "d"])
    write_jsonl(tmp_path / "b.jsonl", [{"q": "x", "d": "y", "score": 1.0}])
    with pytest.raises(ValueError, match=r"b\.jsonl: label column 'score' differs from that of the first shard"):
        ShardReader(tmp_path)
    write_jsonl(tmp_path / "b.jsonl", [["x", "y"]])
    with pytest.raises(ValueError, match=r"b\.jsonl: rows are arrays"):
        ShardReader(tmp_path)
    write_jsonl(tmp_path / "b.jsonl", [{"d": "y", "q": "x"}])  # same columns, other order: fine
    assert [r.texts for r in all_rows(tmp_path)] == [("x", "y"), ("x", "y")]


def test_argument_errors(tmp_path):
    source = mixed_source(tmp_path)
    with pytest.raises(ValueError, match="buffer_size 4 must be >= batch_size 8"):
        StreamingBatches(source, 8, seed=0, buffer_size=4)
    with pytest.raises(ValueError, match="process_index 2 must be < process_count 2"):
        ShardReader(source, process_index=2, process_count=2)
    with pytest.raises(ValueError, match=r"assignment 'shard' needs at least as many shards as processes \(3 < 4\)"):
        ShardReader(source, process_count=4, assignment="shard")
    write_parquet(tmp_path / "t.parquet", dup_rows(3))
    with pytest.raises(ValueError, match="no batch"):
        list(StreamingBatches(tmp_path / "t.parquet", 4, seed=0, buffer_size=4, epochs=1, drop_last=True))
