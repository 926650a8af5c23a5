"""Training rows, no-duplicates batching, replay and step counts (jsplade.training.data).

The reference runs' batch order is replayed from their recorded per-epoch permutations and compared
with every recorded step's ``indices`` (exact). Synthetic data with duplicate texts is checked against
the rule's properties and an independent list-based simulation written here.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers.fixtures import SE_FIXTURES

from jsplade.training.data import (NoDuplicatesBatchSampler, PairDataset, ReplaySchedule,
                                   greedy_no_duplicate_batches, load_pairs, total_steps)

LOGS = ("train_seed_recipe", "train_batch4")


def load_log(name):
    return json.loads((SE_FIXTURES / "expected" / name / "train_log.json").read_text())


def log_dataset(log) -> PairDataset:
    data = log["data"]
    return load_pairs(data["rows"], data["columns"], router_mapping=log["settings"]["router_mapping"])


# ----------------------------------------------------------------------------- fixture replay
@pytest.mark.parametrize("name", LOGS)
def test_greedy_batching_replays_recorded_indices(name):
    log = load_log(name)
    ds = log_dataset(log)
    batch_size = log["settings"]["per_device_train_batch_size"]
    perms = log["sampler_replay"]["epoch_permutations"]
    assert len(perms) == log["settings"]["num_train_epochs"]
    replayed = []
    for perm in perms:
        replayed.extend(greedy_no_duplicate_batches(perm, ds.rows, batch_size, log["steps_per_epoch"]))
    assert replayed == [step["indices"] for step in log["steps"]]
    assert [step["epoch"] for step in log["steps"]] == [k // log["steps_per_epoch"] for k in range(len(replayed))]


@pytest.mark.parametrize("name", LOGS)
def test_sampler_and_total_steps_agree_with_log(name):
    log = load_log(name)
    ds = log_dataset(log)
    st = log["settings"]
    sampler = NoDuplicatesBatchSampler(ds, st["per_device_train_batch_size"], seed=0)
    assert len(sampler) == log["steps_per_epoch"]
    assert total_steps(len(ds), st["per_device_train_batch_size"], st["num_train_epochs"]) == log["total_steps"]
    replay = ReplaySchedule.from_steps(log["steps"], len(ds))
    assert len(replay) == log["total_steps"] and list(replay)[0] == log["steps"][0]["indices"]


def test_log_dataset_columns_and_routes():
    ds = log_dataset(load_log("train_batch4"))
    assert ds.columns == ("query", "positive", "negative")
    assert ds.routes == ("query", "document", "document")
    assert ds.n_negatives == 1 and len(ds) == 16
    assert ds[3] == tuple(load_log("train_batch4")["data"]["rows"][3][c] for c in ds.columns)


# ----------------------------------------------------------------------------- greedy rule
def simulate(perm, rows, batch_size, n_batches, drop_last=False):
    """Independent simulation of §4.2: repeated passes over a list of pending rows."""
    pending = list(perm)
    out = []
    while pending and len(out) < n_batches:
        taken, texts = [], []
        for r in pending:
            if len(taken) == batch_size:
                break
            if any(str(v) in texts for v in rows[r]):
                continue
            taken.append(r)
            texts.extend(str(v) for v in rows[r])
        pending = [r for r in pending if r not in taken]
        if len(taken) == batch_size or not drop_last:
            out.append(taken)
    return out


def dup_rows(rng, n=30, vocab=9):
    """Rows whose texts collide often, within and across columns."""
    words = [f"t{i}" for i in range(vocab)]
    return [tuple(rng.choice(words, 3)) for _ in range(n)]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
@pytest.mark.parametrize("drop_last", [False, True])
def test_greedy_rule_against_independent_simulation(batch_size, drop_last):
    rng = np.random.default_rng(batch_size)
    rows = dup_rows(rng)
    for trial in range(5):
        perm = rng.permutation(len(rows)).tolist()
        n_batches = len(rows) // batch_size if drop_last else math.ceil(len(rows) / batch_size)
        got = greedy_no_duplicate_batches(perm, rows, batch_size, n_batches, drop_last)
        assert got == simulate(perm, rows, batch_size, n_batches, drop_last)
        for batch in got:
            texts = [t for r in batch for t in set(rows[r])]
            assert len(texts) == len(set(texts))  # no text twice in a batch, across columns
            assert len(batch) <= batch_size and (not drop_last or len(batch) == batch_size)
        flat = [r for b in got for r in b]
        assert len(flat) == len(set(flat))  # a row at most once per epoch


def test_cross_column_conflict_and_deferral_order():
    rows = [("q0", "d0"), ("d0", "d1"), ("q2", "d2"), ("q3", "d3")]  # row 1's query = row 0's document
    batches = greedy_no_duplicate_batches([0, 1, 2, 3], rows, 2, n_batches=None)
    assert batches[0] == [0, 2]       # row 1 deferred, row 2 takes its place
    assert batches[1] == [1, 3]       # the deferred row comes first in the next batch
    # Repeating a text inside one row is no conflict with itself.
    assert greedy_no_duplicate_batches([0, 1], [("a", "a"), ("b", "c")], 2) == [[0, 1]]


def test_rows_left_after_n_batches_are_skipped():
    rows = [("a", "x1"), ("a", "x2"), ("a", "x3"), ("b", "x4")]  # rows 0-2 share their query
    batches = greedy_no_duplicate_batches([0, 1, 2, 3], rows, 2, n_batches=2)
    assert batches == [[0, 3], [1]]   # the second pass is short; row 2 is not used this epoch


def test_greedy_rejects_a_non_permutation():
    with pytest.raises(ValueError, match="permutation"):
        greedy_no_duplicate_batches([0, 0, 1], [("a", "b")] * 3, 1)


# ----------------------------------------------------------------------------- sampler
def test_sampler_is_seeded_and_covers_distinct_rows():
    rows = [(f"q{i}", f"d{i}", f"n{i}") for i in range(23)]
    sampler = NoDuplicatesBatchSampler(rows, 4, seed=42)
    e0 = sampler.batches_for_epoch(0)
    assert e0 == NoDuplicatesBatchSampler(rows, 4, seed=42).batches_for_epoch(0)
    assert e0 != sampler.batches_for_epoch(1)
    assert e0 != NoDuplicatesBatchSampler(rows, 4, seed=43).batches_for_epoch(0)
    assert len(e0) == len(sampler) == 6
    assert sorted(r for b in e0 for r in b) == list(range(23))  # no duplicates: every row once
    assert [len(b) for b in e0] == [4, 4, 4, 4, 4, 3]            # the final short batch is kept
    assert sampler.permutation(0) == np.random.default_rng([42, 0]).permutation(23).tolist()
    assert [len(b) for b in NoDuplicatesBatchSampler(rows, 4, 42, drop_last=True).batches_for_epoch(0)] == [4] * 5


def test_sampler_matches_greedy_over_its_permutation():
    rng = np.random.default_rng(7)
    rows = dup_rows(rng, n=25)
    sampler = NoDuplicatesBatchSampler(rows, 3, seed=5)
    for epoch in range(3):
        assert sampler.batches_for_epoch(epoch) == simulate(sampler.permutation(epoch), rows, 3, 9)


def test_sampler_batch_size_checks():
    rows = [("a", "b"), ("c", "d")]
    with pytest.raises(ValueError, match="batch_size 3 is larger"):
        NoDuplicatesBatchSampler(rows, 3, seed=0)
    s = NoDuplicatesBatchSampler(rows, 3, seed=0, allow_oversized_batch=True)
    assert len(s) == 1 and sorted(s.batches_for_epoch(0)[0]) == [0, 1]
    with pytest.raises(ValueError, match="drop_last"):
        NoDuplicatesBatchSampler(rows, 3, seed=0, drop_last=True, allow_oversized_batch=True)
    with pytest.raises(ValueError, match="batch_size"):
        NoDuplicatesBatchSampler(rows, 0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        NoDuplicatesBatchSampler(rows, 1, seed=-1)
    with pytest.raises(ValueError, match="epoch"):
        NoDuplicatesBatchSampler(rows, 1, seed=0).batches_for_epoch(-1)


# ----------------------------------------------------------------------------- loading
ROWS = [
    {"query": "who likes tea?", "positive": "Ann likes tea.", "negative": "Bob likes coffee.", "label": 1},
    {"query": "who likes jazz?", "positive": "Cy likes jazz.", "negative": "Di likes rock.", "label": 0},
    {"query": "who likes \"quotes\", commas?", "positive": "Ed, likes\nnewlines.", "negative": "Fay.", "label": 1},
]
COLS = ("query", "positive", "negative")


def write_all_formats(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    js = tmp_path / "d.json"
    js.write_text(json.dumps(ROWS))
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(ROWS[0]))
        w.writeheader()
        w.writerows(ROWS)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    return [jsonl, js, tmp_path / "d.csv", tmp_path / "d.parquet"]


def test_all_sources_give_the_same_dataset(tmp_path):
    expected = tuple(tuple(r[c] for c in COLS) for r in ROWS)
    for path in write_all_formats(tmp_path):
        ds = load_pairs(path)
        assert ds.columns == COLS, path  # label column dropped, order kept
        assert ds.rows == expected, path
        assert ds.routes == ("query", "document", "document")
        assert load_pairs(str(path)).rows == expected
    assert load_pairs(ROWS).rows == expected
    assert load_pairs(iter(ROWS)).rows == expected                       # any iterable
    assert load_pairs([tuple(r) for r in expected]).columns == ("anchor", "positive", "negative_1")
    assert load_pairs([tuple(r) for r in expected], columns=COLS).columns == COLS
    ds = load_pairs(ROWS)
    assert load_pairs(ds) == ds
    assert load_pairs(ds, columns=["query", "negative"]).rows[0] == ("who likes tea?", "Bob likes coffee.")


def test_columns_select_and_order(tmp_path):
    ds = load_pairs(ROWS, columns=["query", "negative"])
    assert ds.columns == ("query", "negative") and ds.rows[0] == ("who likes tea?", "Bob likes coffee.")
    ds = load_pairs(ROWS, columns=["positive", "query", "negative"])
    assert ds.rows[1] == ("Cy likes jazz.", "who likes jazz?", "Di likes rock.")
    assert ds.column("query") == [r["query"] for r in ROWS]


def test_router_mapping(tmp_path):
    ds = load_pairs(ROWS, router_mapping={"query": "query", "positive": "document"})
    assert ds.routes == ("query", "document", "document")  # unmapped column → document
    with pytest.raises(ValueError, match="unknown route 'passage'"):
        load_pairs(ROWS, router_mapping={"positive": "passage"})
    with pytest.raises(ValueError, match="column 0"):
        load_pairs(ROWS, router_mapping={"query": "document"})
    with pytest.raises(ValueError, match="column 0"):
        load_pairs(ROWS, router_mapping={"negative": "query"})
    with pytest.raises(ValueError, match="'title'"):
        load_pairs(ROWS, router_mapping={"title": "document"})


@pytest.mark.parametrize("source,kwargs,exc,match", [
    ([], {}, ValueError, "empty"),
    ([{"query": "q"}], {}, ValueError, "at least 2 columns"),
    ([("q",)], {}, ValueError, "at least 2 columns"),
    ([{"query": "q", "doc": "d"}, {"query": "q2"}], {}, ValueError, "row 1 is missing column 'doc'"),
    ([{"query": "q", "doc": "d"}, {"query": "q2", "doc": 5}], {}, TypeError, "row 1, column 'doc'"),
    ([{"query": "q", "doc": None}], {}, TypeError, "row 0, column 'doc'"),
    ([("q", "d"), ("q2",)], {}, ValueError, "row 1 has 1 values"),
    ([("q", "d"), {"query": "q"}], {}, TypeError, "row 1"),
    ([{"query": "q", "doc": "d"}, {"query": "q", "doc": "d", "extra": "x"}], {}, ValueError, "'extra'"),
    (ROWS, {"columns": ["query", "title"]}, ValueError, "row 0 is missing column 'title'"),
    (ROWS, {"columns": ["query", "label"]}, ValueError, "label"),
    (ROWS, {"columns": ["query", "query"]}, ValueError, "twice"),
    (ROWS, {"columns": "query"}, TypeError, "columns"),
    ([3, 4], {}, TypeError, "row 0"),
    (42, {}, TypeError, "source"),
])
def test_bad_data_raises_before_compute(source, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        load_pairs(source, **kwargs)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported"):
        load_pairs(tmp_path / "d.txt")
    (tmp_path / "bad.jsonl").write_text('{"query": "q", "doc": "d"}\n{"query": \n')
    with pytest.raises(ValueError, match="line 2"):
        load_pairs(tmp_path / "bad.jsonl")
    (tmp_path / "bad.csv").write_text("query,doc\nq,d\nq2\n")
    with pytest.raises(ValueError, match="line 3"):
        load_pairs(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("query,doc\n")
    with pytest.raises(ValueError, match="empty"):
        load_pairs(tmp_path / "empty.csv")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="bad.parquet"):
        load_pairs(tmp_path / "bad.parquet")


# ----------------------------------------------------------------------------- replay / steps
def test_replay_schedule_validation():
    assert ReplaySchedule([[0, 1], [2]], 3).batches == [[0, 1], [2]]
    assert ReplaySchedule([(np.int64(1),)]).batches == [[1]]
    with pytest.raises(ValueError, match=r"batches\[1\]\[0\] = 3 is out of range"):
        ReplaySchedule([[0], [3]], 3)
    with pytest.raises(ValueError, match="out of range"):
        ReplaySchedule([[-1]])
    with pytest.raises(ValueError, match="empty"):
        ReplaySchedule([])
    with pytest.raises(ValueError, match=r"batches\[0\] is empty"):
        ReplaySchedule([[]], 3)
    with pytest.raises(ValueError, match="repeats"):
        ReplaySchedule([[1, 1]], 3)
    with pytest.raises(TypeError, match="integer"):
        ReplaySchedule([[0.5]], 3)
    with pytest.raises(TypeError, match="list"):
        ReplaySchedule("0,1", 3)
    with pytest.raises(ValueError, match="indices"):
        ReplaySchedule.from_steps([{"step": 0}])


def test_total_steps_rules():
    assert total_steps(2, 1, 40) == 80            # the published fine-tune
    assert total_steps(16, 4, 3) == 12
    assert total_steps(10, 4, 2) == 6             # ceil(10/4) = 3 per epoch
    assert total_steps(10, 4, 2, drop_last=True) == 4
    assert total_steps(10, 1, 1, grad_accum=4) == 3   # ceil(10/4): the last update takes 2 micro-batches
    assert total_steps(10, 4, 5, max_steps=7) == 7
    with pytest.raises(ValueError, match="batch_size"):
        total_steps(10, 0, 1)
    with pytest.raises(ValueError, match="drop_last"):
        total_steps(3, 4, 1, drop_last=True)
    with pytest.raises(TypeError, match="epochs"):
        total_steps(3, 1, 1.5)


def test_labels_are_read_from_every_format(tmp_path):
    """The first of label/labels/score/scores is the label column, in every file format; CSV cells hold a
    number or a JSON list."""
    for path in write_all_formats(tmp_path):
        ds = load_pairs(path)
        assert ds.label_column == "label" and ds.labels == (1.0, 0.0, 1.0) and ds.label_shape == (), path
        np.testing.assert_array_equal(ds.label_array([2, 0]), np.asarray([1.0, 1.0], np.float32))
    rows = [{"q": "a", "d": "b", "score": [1.5, -2.0], "label": 7}, {"q": "c", "d": "e", "score": [0.0, 3.25], "label": 8}]
    ds = load_pairs(rows)
    assert ds.columns == ("q", "d") and ds.label_column == "label"  # the reference's order of preference
    ds = load_pairs([{k: v for k, v in r.items() if k != "label"} for r in rows])
    assert ds.label_column == "score" and ds.label_shape == (2,)
    assert ds.label_array([1, 0]).tolist() == [[0.0, 3.25], [1.5, -2.0]]
    assert load_pairs(ds).labels == ds.labels  # re-validated PairDataset keeps its labels
    path = tmp_path / "lists.csv"
    path.write_text('q,d,scores\na,b,"[1, 2.5]"\nc,e,"[3, 4]"\n')
    assert load_pairs(path).labels == ((1.0, 2.5), (3.0, 4.0))
    assert load_pairs([("a", "b"), ("c", "d")]).labels is None


@pytest.mark.parametrize("rows,match", [
    ([{"q": "a", "d": "b", "label": 1.0}, {"q": "c", "d": "e"}], "row 1 has no 'label'"),
    ([{"q": "a", "d": "b", "label": "high"}], "row 0, column 'label'.*not a number"),
    ([{"q": "a", "d": "b", "label": True}], "must be numbers"),
    ([{"q": "a", "d": "b", "label": float("nan")}], "not finite"),
    ([{"q": "a", "d": "b", "label": []}], "empty"),
    ([{"q": "a", "d": "b", "label": [1.0, 2.0]}, {"q": "c", "d": "e", "label": [1.0]}], "row 1.*1 labels, row 0 has 2"),
    ([{"q": "a", "d": "b", "label": [1.0]}, {"q": "c", "d": "e", "label": 1.0}], "row 0's label is a list"),
    ([{"q": "a", "d": "b", "label": [1.0, None]}], "must be numbers"),
])
def test_bad_labels_are_refused_naming_row_and_column(rows, match):
    with pytest.raises(ValueError, match=match):
        load_pairs(rows)
