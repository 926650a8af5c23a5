"""jsplade-mine: the rows file holds exactly the library's records (every method, both label forms, another
teacher, the bundled data by name), the manifest next to it, the script is registered, and every bad input is
exit code 2 with one line naming the argument or file."""

from __future__ import annotations

import contextlib
import io
import json
import tomllib
from pathlib import Path

import pytest

from helpers.fixtures import REPO, SE_FIXTURES
from jsplade.cli import mine as cli
from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.mining import mine_hard_negatives
from jsplade.splade.encoder import SparseEncoder
from jsplade.training.data import load_pairs

MODEL = SE_FIXTURES / "model"
DOCS = {"d1": "Ann likes apples and pears.", "d2": "Bob likes trains.", "d3": "Cid likes apples.",
        "d4": "Dee likes chess and trains.", "d5": "Eve likes opera.", "d6": "Fay likes pears."}
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\nq2\td4\t1\nq3\td6\t1\nq4\td5\t0\n"


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def tiny_beir(folder: Path, qrels: str = QRELS, docs: dict[str, str] = DOCS) -> Path:
    folder.mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    queries = {"q1": "Who likes apples?", "q2": "Who likes trains?", "q3": "Who likes pears?", "q4": "Who likes opera?"}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text(qrels)
    return folder


@pytest.fixture(scope="module")
def encoder():
    return SparseEncoder.from_pretrained(MODEL)


def library_records(folder: Path, encoder, labels="scores", **kwargs) -> list[dict]:
    data = load_beir(folder, split="train")
    result = mine_hard_negatives(data.queries, data.corpus, data.relevant_docs(), encoder, **kwargs)
    return result.records(data.queries, data.corpus, labels)


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("method,labels", [("sparse", "scores"), ("bm25", "margins"), ("fused", "scores")])
def test_rows_are_the_librarys(tmp_path, encoder, method, labels):
    folder = tiny_beir(tmp_path / "data")
    out = tmp_path / "rows.jsonl"
    code, stdout, err = _main([str(folder), "--model", str(MODEL), "--method", method, "--negatives", "2",
                               "--labels", labels, "--out", str(out), "--rrf-k", "10"])
    assert code == 0, err
    want = library_records(folder, encoder, labels, method=method, negatives=2, rrf_k=10)
    rows = read_rows(out)
    assert rows == json.loads(json.dumps(want)) and len(rows) == 5   # q1, q2: two positives; q3: one
    data = load_pairs(out)
    assert data.label_shape == ((3,) if labels == "scores" else (2,)) and len(data) == 5
    manifest = json.loads((tmp_path / "rows.jsonl.json").read_text())
    assert manifest["format"] == cli.MANIFEST_FORMAT and manifest["method"] == method
    assert manifest["rows"] == 5 and manifest["queries_mined"] == 3 and manifest["queries_skipped"] == []
    assert manifest["teacher"] == manifest["model"] == str(MODEL.resolve())
    assert stdout.startswith(f"wrote {out}: 5 rows")
    # the same command again: refused without --overwrite, byte-identical with it
    before = out.read_bytes()
    code, _, err = _main([str(folder), "--model", str(MODEL), "--method", method, "--negatives", "2",
                          "--labels", labels, "--out", str(out), "--rrf-k", "10", "--no-progress"])
    assert code == 2 and "--out" in err and "--overwrite" in err
    code, _, _ = _main([str(folder), "--model", str(MODEL), "--method", method, "--negatives", "2",
                        "--labels", labels, "--out", str(out), "--rrf-k", "10", "--overwrite", "--no-progress"])
    assert code == 0 and out.read_bytes() == before


def test_teacher_alone_with_bm25_and_skipped_queries(tmp_path, encoder):
    folder = tiny_beir(tmp_path / "data")
    out = tmp_path / "rows.jsonl"
    code, _, err = _main([str(folder), "--teacher", str(MODEL), "--method", "bm25", "--negatives", "4",
                          "--out", str(out), "--max-queries", "2", "--no-progress"])
    assert code == 0, err
    data = load_beir(folder, split="train")
    rel = data.relevant_docs()
    result = mine_hard_negatives(data.queries, data.corpus, {q: rel[q] for q in ("q1", "q2")}, method="bm25",
                                 teacher=encoder, negatives=4)
    assert read_rows(out) == json.loads(json.dumps(result.records(data.queries, data.corpus)))
    manifest = json.loads((tmp_path / "rows.jsonl.json").read_text())
    assert manifest["model"] is None and manifest["max_queries"] == 2
    # a query with fewer candidates than K is skipped and counted; all skipped is an error
    code, _, err = _main([str(folder), "--model", str(MODEL), "--negatives", "6", "--out", str(out),
                          "--overwrite", "--no-progress"])
    assert code == 2 and "no query has 6 candidate negatives (all 3 skipped)" in err
    few = {"d1": DOCS["d1"], "d3": DOCS["d3"], "d2": DOCS["d2"], "d6": DOCS["d6"]}
    small = tiny_beir(tmp_path / "small", qrels="q1\td1\t1\nq1\td3\t1\nq3\td6\t1\n", docs=few)
    code, _, err = _main([str(small), "--model", str(MODEL), "--negatives", "3", "--out", str(out),
                          "--overwrite", "--no-progress"])
    assert code == 0 and "skipped 1 of 2 queries with fewer than 3 candidates (first: 'q1'" in err
    assert json.loads((tmp_path / "rows.jsonl.json").read_text())["queries_skipped"] == ["q1"]


def test_bundled_data_by_name(tmp_path, monkeypatch, encoder):
    monkeypatch.chdir(tmp_path)  # no folder called limit-small here: the bundled one is read
    code, _, err = _main(["limit-small", "--teacher", str(MODEL), "--method", "bm25", "--negatives", "2",
                          "--max-queries", "3", "--out", "rows.jsonl", "--no-progress"])
    assert code == 0, err
    rows = read_rows(tmp_path / "rows.jsonl")
    assert len(rows) == 6 and all(len(r["label"]) == 3 for r in rows)   # LIMIT: 2 relevant documents a query
    assert json.loads((tmp_path / "rows.jsonl.json").read_text())["data"] == str(REPO / "data" / "limit-small")


def test_script_is_registered():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["jsplade-mine"] == "jsplade.cli.mine:main"


def test_errors_name_the_argument_or_file(tmp_path):
    folder = tiny_beir(tmp_path / "data")
    out = str(tmp_path / "rows.jsonl")
    empty = tiny_beir(tmp_path / "empty", qrels="")
    (empty / "corpus.jsonl").write_text("")
    unknown = tiny_beir(tmp_path / "unknown", qrels="q1\td1\t1\nq9\td2\t1\n")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "queries.jsonl").write_text("")
    nothing = tiny_beir(tmp_path / "nothing", qrels="q1\td1\t0\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    base = ["--model", str(MODEL), "--out", out, "--no-progress"]
    cases = [
        ([str(tmp_path / "missing")] + base, "DATA " + str(tmp_path / "missing") + ": data set folder not found"),
        ([str(a_file)] + base, "is a file"),
        ([str(bare)] + base, "neither corpus.jsonl nor corpus.jsonl.gz found"),
        ([str(empty)] + base, f"{empty / 'corpus.jsonl'}: the corpus has no documents"),
        ([str(unknown)] + base, f"{unknown / 'qrels' / 'train.tsv'}:2: unknown query id 'q9'"),
        ([str(nothing)] + base, "no query has a relevant document"),
        ([str(folder), "--split", "dev"] + base, "qrels/dev.tsv"),
        ([str(folder), "--negatives", "0"] + base, "--negatives must be a positive integer, got 0"),
        ([str(folder), "--method", "fused", "--negatives", "5", "--fusion-depth", "4"] + base,
         "--fusion-depth (4) must be >= --negatives (5)"),
        ([str(folder), "--rrf-k", "-1"] + base, "--rrf-k must be a finite number >= 0"),
        ([str(folder), "--batch-size", "0"] + base, "--batch-size must be a positive integer"),
        ([str(folder), "--out", out, "--no-progress"], "--model is required with --method sparse"),
        ([str(folder), "--method", "bm25", "--out", out], "--model or --teacher is required"),
        ([str(folder), "--model", str(tmp_path / "no_model"), "--out", out, "--no-progress"],
         f"--model {tmp_path / 'no_model'}: "),
        ([str(folder), "--model", str(MODEL), "--teacher", str(tmp_path), "--out", out, "--no-progress"],
         f"--teacher {tmp_path}: "),
        ([str(folder), "--model", str(MODEL), "--out", str(tmp_path)], f"--out {tmp_path}: is a directory"),
        ([str(folder), "--model", str(MODEL), "--out", str(tmp_path / "no" / "rows.jsonl")], "does not exist"),
    ]
    for argv, message in cases:
        code, _, err = _main(argv)
        assert code == 2, (argv, err)
        lines = err.strip().splitlines()
        assert lines[-1].startswith("jsplade-mine: error: ") and message in lines[-1], (argv, err)
        assert "Traceback" not in err
    assert not Path(out).exists()
