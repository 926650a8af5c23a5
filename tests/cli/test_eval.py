"""jsplade-eval: the printed tables and the JSON hold exactly the library's numbers (SparseIREvaluator for the
model, BM25Retriever + evaluate_rankings for BM25); options reach the library; every error is exit code 2
with a one-line message and no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.files import write_jsonl
from helpers.fixtures import SE_FIXTURES
from helpers.tiny_encoder import tiny_encoder
from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.bm25 import BM25Retriever
from jsplade.retrieval.corpus import encode_corpus
from jsplade.cli import eval as cli
from jsplade.splade.encoder import SparseEncoder
from jsplade.retrieval.evaluation import SparseIREvaluator, evaluate_rankings, format_table

REPO = Path(__file__).resolve().parents[2]
MODEL = SE_FIXTURES / "model"
LIMIT_SMALL = REPO / "data" / "limit-small"
DEFAULT_KS = (1, 2, 3, 5, 10, 20, 100)


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _ks(ks):
    return dict(mrr_at_k=ks, ndcg_at_k=ks, accuracy_at_k=ks, precision_recall_at_k=ks, map_at_k=ks)


def library_model(folder: Path, ks=DEFAULT_KS, relevant=None, **kwargs) -> dict[str, float]:
    data = load_beir(folder, **{k: kwargs.pop(k) for k in ("split",) if k in kwargs})
    ev = SparseIREvaluator(data.queries, data.corpus, relevant or data.relevant_docs(), **_ks(ks), **kwargs)
    return ev(SparseEncoder.load(MODEL))


def library_bm25(folder: Path, ks=DEFAULT_KS, relevant=None, split: str = "test") -> dict[str, float]:
    data = load_beir(folder, split=split)
    relevant = relevant or data.relevant_docs()
    queries = {q: data.queries[q] for q in data.queries if q in relevant}
    rankings = BM25Retriever(data.corpus).search(queries, k=max(ks))
    return evaluate_rankings(rankings, relevant, score_function="bm25", **_ks(ks))


def tiny_beir(folder: Path, split: str = "dev") -> Path:
    """6 documents (gzip corpus), 4 queries (one without judgements), BEIR-style qrels/<split>.tsv."""
    folder.mkdir(parents=True)
    docs = {"d1": "Ann likes apples and pears.", "d2": "Bob likes trains.", "d3": "Cid likes apples.",
            "d4": "Dee likes chess and trains.", "d5": "Eve likes opera.", "d6": "Fay likes pears."}
    write_jsonl(folder / "corpus.jsonl.gz", [{"_id": k, "title": "", "text": v} for k, v in docs.items()], gz=True)
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "Who likes apples?"},
                                           {"_id": "q2", "text": "Who likes trains?"},
                                           {"_id": "q3", "text": "Who likes pears?"},
                                           {"_id": "q4", "text": "Who likes opera?"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\nq2\td4\t1\nq3\td6\t1\nq3\td1\t1\nq4\td5\t0\n")
    return folder


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "results.json"
    code, stdout, stderr = _main([str(MODEL), str(LIMIT_SMALL), "--bm25", "--output", str(out), "--no-progress"])
    return code, stdout, stderr, out


def test_model_and_bm25_table_and_json_equal_the_library(default_run):
    code, stdout, stderr, out = default_run
    assert code == 0, stderr
    expected = {"model": library_model(LIMIT_SMALL), "bm25": library_bm25(LIMIT_SMALL)}
    payload = json.loads(out.read_text())
    assert payload["results"] == {"limit-small": expected}          # exact: JSON floats round-trip
    table = format_table(expected, cli.table_metrics(DEFAULT_KS))
    assert table in stdout
    assert stdout.startswith("## limit-small: 1000 queries evaluated (1000 in the file), 46 documents\n")
    # every metric family at every k, then the sparsity statistics (n/a for BM25)
    rows = [line.split(" | ")[0].lstrip("| ") for line in table.splitlines()[2:]]
    assert rows == [f"{m}@{k}" for m in ("ndcg", "map", "mrr", "recall", "precision", "accuracy")
                    for k in DEFAULT_KS] + list(cli.STAT_KEYS)
    assert "| avg_flops | 5.3950 | n/a |" in stdout
    assert stdout.rstrip().splitlines()[-1].startswith("evaluated model and BM25 on 1 data set(s) in ")
    meta = payload["metadata"]
    assert meta["k_values"] == list(DEFAULT_KS) and meta["systems"] == ["model", "bm25"]
    assert meta["datasets"] == {"limit-small": {"path": str(LIMIT_SMALL), "documents": 46, "queries": 1000,
                                                "queries_evaluated": 1000}}
    assert meta["model"] == str(MODEL) and meta["split"] == "test" and meta["packing"] is False
    assert meta["corpus_chunk_size"] == 50000 and meta["max_active_dims"] is None
    assert set(meta["seconds"]["limit-small"]) == {"model", "bm25"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json"]   # no temporary left behind


def test_bm25_alone_two_datasets_split_and_max_queries(tmp_path):
    tiny = tiny_beir(tmp_path / "tiny", split="dev")
    out = tmp_path / "r.json"
    code, stdout, stderr = _main(["--model", "none", str(tiny), str(LIMIT_SMALL), "--bm25", "--split", "dev",
                                  "--k-values", "5,1,2", "--max-queries", "2", "--output", str(out)])
    assert code == 0, stderr
    results = json.loads(out.read_text())["results"]
    # the first 2 queries (file order) that have a relevant document; q4 only has a score-0 judgement
    tiny_rel = {q: r for q, r in load_beir(tiny, split="dev").relevant_docs().items() if q in ("q1", "q2")}
    small = load_beir(LIMIT_SMALL).relevant_docs()
    small_rel = {q: small[q] for q in list(small)[:2]}
    assert results == {"tiny": {"bm25": library_bm25(tiny, (1, 2, 5), tiny_rel, split="dev")},
                       "limit-small": {"bm25": library_bm25(LIMIT_SMALL, (1, 2, 5), small_rel)}}
    assert "## tiny: 2 queries evaluated (4 in the file), 6 documents" in stdout
    assert format_table(results["tiny"], cli.table_metrics((1, 2, 5), with_stats=False)) in stdout
    assert "avg_flops" not in stdout       # no model: no sparsity rows
    assert "evaluated BM25 on 2 data set(s)" in stdout
    # the positional form "none DATASET" is the same program
    code2, stdout2, _ = _main(["none", str(tiny), "--bm25", "--split", "dev", "--k-values", "1,2,5",
                               "--max-queries", "2"])
    assert code2 == 0 and stdout2.split("\nevaluated ")[0] + "\n" == stdout.split("## limit-small")[0]


def test_name_max_active_dims_and_packing_reach_the_library(tmp_path, monkeypatch):
    tiny = tiny_beir(tmp_path / "tiny", split="test")
    calls = []
    original = SparseEncoder.encode_document

    def recording(self, texts, *args, **kwargs):
        calls.append(kwargs)
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(SparseEncoder, "encode_document", recording)
    out = tmp_path / "r.json"
    code, stdout, stderr = _main([str(MODEL), str(tiny), "--name", "tiny-gte", "--max-active-dims", "8",
                                  "--batch-size", "3", "--k-values", "1,3", "--packing", "--corpus-chunk-size", "4",
                                  "--output", str(out)])
    assert code == 0, stderr
    assert [c["packing"] for c in calls] == [True, True]          # 6 documents in chunks of 4 + 2
    assert all(c["max_active_dims"] == 8 and c["batch_size"] == 3 for c in calls)
    got = json.loads(out.read_text())["results"]["tiny"]["tiny-gte"]
    calls.clear()
    expected = library_model(tiny, (1, 3), max_active_dims=8, batch_size=3)
    assert len(calls) == 1 and calls[0].get("packing", False) is False
    # packing gives the padded path's vectors up to float rounding
    assert list(got) == list(expected)
    assert all(abs(got[k] - expected[k]) <= 1e-6 * max(1.0, abs(expected[k])) for k in expected)
    assert got["corpus_active_dims"] == 8.0 and got["query_active_dims"] <= 8.0
    assert "| metric | tiny-gte |" in stdout


def test_corpus_shards_replace_encoding_the_documents(tmp_path, monkeypatch):
    encoder = SparseEncoder.load(MODEL)
    tiny = tiny_beir(tmp_path / "tiny", split="test")
    encode_corpus(encoder, LIMIT_SMALL, tmp_path / "limit-shards", shard_size=20, show_progress_bar=False)
    encode_corpus(encoder, tiny, tmp_path / "tiny-shards", shard_size=4, show_progress_bar=False)
    calls = []
    original = SparseEncoder.encode_document

    def recording(self, texts, *args, **kwargs):
        calls.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(SparseEncoder, "encode_document", recording)
    out = tmp_path / "r.json"
    code, stdout, stderr = _main([str(MODEL), str(LIMIT_SMALL), str(tiny), "--corpus-shards",
                                  str(tmp_path / "limit-shards"), "--corpus-shards", str(tmp_path / "tiny-shards"),
                                  "--max-active-dims", "16", "--output", str(out), "--no-progress"])
    assert code == 0, stderr
    assert calls == []                                   # no document was encoded
    assert f"reading 46 documents from {tmp_path / 'limit-shards'}" in stderr
    payload = json.loads(out.read_text())
    assert payload["metadata"]["corpus_shards"] == {"limit-small": str(tmp_path / "limit-shards"),
                                                    "tiny": str(tmp_path / "tiny-shards")}
    for name, folder, shard_dir in (("limit-small", LIMIT_SMALL, "limit-shards"), ("tiny", tiny, "tiny-shards")):
        got = payload["results"][name]["model"]
        data = load_beir(folder)
        ev = SparseIREvaluator(data.queries, data.corpus, data.relevant_docs(), **_ks(DEFAULT_KS),
                               max_active_dims=16, show_progress_bar=False)
        assert got == ev(encoder, corpus_shards=tmp_path / shard_dir)      # exactly the library's numbers
        # the shards hold the vectors encoding would give, up to float rounding; the documents keep all their
        # weights (max_active_dims reaches the queries only), so the corpus is at least as dense as encoded
        fresh = SparseIREvaluator(data.queries, data.corpus, data.relevant_docs(), **_ks(DEFAULT_KS),
                                  show_progress_bar=False)(encoder)
        assert got["corpus_active_dims"] == pytest.approx(fresh["corpus_active_dims"], rel=1e-12)
        assert got["query_active_dims"] <= 16.0
    assert calls, "the library evaluators above encoded the documents"
    # unsuitable shard directories are refused before anything is encoded
    calls.clear()
    other = tmp_path / "other-model"
    tiny_encoder().save(other)
    encode_corpus(SparseEncoder.load(other), tiny, tmp_path / "other-shards", show_progress_bar=False)
    (tmp_path / "unfinished").mkdir()
    cases = [
        (["none", str(tiny), "--bm25", "--corpus-shards", str(tmp_path / "tiny-shards")], "needs a model"),
        ([str(MODEL), str(tiny), str(LIMIT_SMALL), "--corpus-shards", str(tmp_path / "tiny-shards")],
         "given 1 time(s) for 2 data set(s)"),
        ([str(MODEL), str(tiny), "--packing", "--corpus-shards", str(tmp_path / "tiny-shards")], "--packing and"),
        ([str(MODEL), str(tiny), "--corpus-shards", str(tmp_path / "missing")], "shard directory not found"),
        ([str(MODEL), str(tiny), "--corpus-shards", str(tmp_path / "unfinished")], "unfinished shard directory"),
        ([str(MODEL), str(tiny), "--corpus-shards", str(tmp_path / "other-shards")], "encoded by another model"),
        ([str(MODEL), str(tiny), "--corpus-shards", str(tmp_path / "limit-shards")],
         "holds 46 documents, data set"),
    ]
    for argv, message in cases:
        code, stdout, err = _main(argv)
        last = err.rstrip("\n").splitlines()[-1]
        assert code == 2 and last.startswith("jsplade-eval: error: ") and message in last, (argv, err)
        assert "Traceback" not in err and stdout == ""
    assert calls == []


def test_unknown_qrels_can_be_dropped(tmp_path):
    tiny = tiny_beir(tmp_path / "tiny", split="test")
    with open(tiny / "qrels" / "test.tsv", "a") as f:
        f.write("q1\tnobody\t1\n")
    code, _, err = _main(["none", str(tiny), "--bm25"])
    assert code == 2 and "unknown corpus id 'nobody'" in err
    code, stdout, err = _main(["none", str(tiny), "--bm25", "--on-unknown", "drop", "--k-values", "1,3"])
    assert code == 0 and "dropped 1 judgement(s)" in err
    (tiny / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td3\t1\nq2\td2\t1\nq2\td4\t1\nq3\td6\t1\nq3\td1\t1\nq4\td5\t0\n")
    _, clean, _ = _main(["none", str(tiny), "--bm25", "--k-values", "1,3"])
    assert stdout.split("\nevaluated ")[0] == clean.split("\nevaluated ")[0]


def test_errors_are_exit_code_2_with_one_line(tmp_path):
    tiny = tiny_beir(tmp_path / "tiny", split="test")
    no_queries = tmp_path / "no_queries"
    no_queries.mkdir()
    (no_queries / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    dup = tiny_beir(tmp_path / "dup", split="test")
    write_jsonl(dup / "queries.jsonl", [{"_id": "q1", "text": "a"}, {"_id": "q1", "text": "b"}])
    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    cases = [
        ([str(MODEL), str(tmp_path / "missing")], "data set folder not found"),
        ([str(MODEL), str(no_queries)], "neither queries.jsonl nor queries.jsonl.gz found"),
        ([str(MODEL), str(dup)], "duplicate query id 'q1'"),
        ([str(empty_model), str(tiny)], "modules.json: not found"),
        ([str(MODEL), str(tiny), "--k-values", "1,a"], "--k-values: 'a' is not a positive integer"),
        ([str(MODEL), str(tiny), "--k-values", "0,10"], "--k-values: '0' is not a positive integer"),
        ([str(MODEL), str(tiny), "--k-values", ""], "--k-values: expected comma-separated"),
        ([str(MODEL), str(tiny), "--k-values", "10,10"], "--k-values: 10 is listed twice"),
        (["none", str(tiny)], "nothing to evaluate"),
        ([str(MODEL), str(tiny), "--bm25", "--name", "bm25"], "BM25 column's name"),
        ([str(MODEL), str(tiny), "--output", str(tmp_path / "no" / "r.json")], "does not exist"),
        ([str(MODEL), str(tiny), "--max-queries", "0"], "--max-queries must be a positive integer"),
        ([str(MODEL), str(tiny), "--batch-size", "0"], "--batch-size must be a positive integer"),
        ([str(MODEL), str(tiny), "--max-active-dims", "-1"], "--max-active-dims must be a positive integer"),
        ([str(tiny)], "expected MODEL and at least one DATASET"),
        ([str(MODEL), str(tiny), str(tiny)], "the same data set folder is given twice"),
    ]
    for argv, message in cases:
        code, stdout, err = _main(argv)
        assert code == 2, argv
        last = err.rstrip("\n").splitlines()[-1]
        assert last.startswith("jsplade-eval: error: ") and message in last and "Traceback" not in err, (argv, err)
        assert stdout == "", argv
    with pytest.raises(SystemExit) as info:
        _main([str(MODEL), str(tiny), "--on-unknown", "ignore"])
    assert info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup", "empty_model", "no_queries", "tiny"]


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / "jsplade-eval"
    assert script.is_file(), "run `pip install -e .` to register the console script"
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")

    def run(*args):
        return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)

    help_run = run("--help")
    assert help_run.returncode == 0 and "--k-values" in help_run.stdout and "--bm25" in help_run.stdout
    ok = run("none", str(tiny_beir(tmp_path / "tiny", split="test")), "--bm25", "--k-values", "1,3")
    assert ok.returncode == 0 and "| metric | bm25 |" in ok.stdout, ok.stderr
    bad = run("none", str(tmp_path / "missing"), "--bm25")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("jsplade-eval: error: ")
