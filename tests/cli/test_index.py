"""jsplade-index: build / add / search equal the library (SparseEncoder + SparseIndex) and a dense
brute-force ranking; export-opensearch output parses back to the index's vectors; every error is exit
code 2 with a one-line message, and a refused command leaves the files as they were."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.fixtures import SE_FIXTURES
from jsplade.cli import index as cli
from jsplade.splade.encoder import SparseEncoder
from jsplade.retrieval.evaluation import rank_topk
from jsplade.retrieval.index import SparseIndex
from jsplade.retrieval.opensearch import index_mapping, query_body, read_bulk_ndjson

MODEL = SE_FIXTURES / "model"
K_DIMS = 24   # --max-active-dims used for the index: small files, non-trivial rankings
DOCS_A = {"a1": "Ann likes apples and pears.", "a2": "Bob likes trains and jazz.", "a3": "Cid likes apples.",
          "a4": "Dee likes chess, trains and opera.", "a5": "Eve likes opera.", "a6": "Fay likes pears and chess.",
          "a7": "Gus likes jazz.", "a8": "Hal likes nothing at all."}
DOCS_B = {"b1": "Ivy likes apples and trains.", "b2": "Jon likes opera and jazz.", "b3": "Kim likes pears.",
          "b4": "Lou likes chess.", "b5": "Max likes apples, pears and opera."}
QUERIES = ["Who likes apples?", "Who likes opera and jazz?", "chess"]


def _main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def _ok(argv: list) -> tuple[str, str]:
    code, out, err = _main(argv)
    assert code == 0, err
    return out, err


def write_corpus(path: Path, docs: dict[str, str], gz: bool = False) -> Path:
    text = "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in docs.items())
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def encoder():
    return SparseEncoder.load(MODEL)


@pytest.fixture()
def corpora(tmp_path):
    """Corpus A as a plain .jsonl file, corpus B as a BEIR folder with a gzip corpus."""
    folder = tmp_path / "beir_b"
    folder.mkdir()
    write_corpus(folder / "corpus.jsonl.gz", DOCS_B, gz=True)
    return write_corpus(tmp_path / "a.jsonl", DOCS_A), folder


def library_index(encoder, docs: dict[str, str], batch_size: int = 32) -> SparseIndex:
    return SparseIndex.from_encoder(encoder, docs, batch_size=batch_size, max_active_dims=K_DIMS,
                                    show_progress_bar=False)


def brute_force(encoder, docs: dict[str, str], queries: list[str], k: int) -> tuple[list[list[str]], np.ndarray]:
    """Dense float64 dot products of the library's encodings, ranked by the shared rule."""
    d = encoder.encode_document(list(docs.values()), max_active_dims=K_DIMS).toarray().astype(np.float64)
    q = encoder.encode_query(queries).toarray().astype(np.float64)
    return rank_topk(q @ d.T, list(docs), k)


def search_json(index_path: Path, queries: list[str], k: int, *extra) -> list[dict]:
    out, _ = _ok(["search", MODEL, index_path, *queries, "-k", str(k), "--json", *extra])
    return json.loads(out)


def assert_matches(report: list[dict], expected_ids, expected_scores, queries):
    assert [entry["query"] for entry in report] == queries
    for entry, ids, scores in zip(report, expected_ids, expected_scores):
        assert [h["id"] for h in entry["results"]] == ids
        assert [h["rank"] for h in entry["results"]] == list(range(1, len(ids) + 1))
        got = np.array([h["score"] for h in entry["results"]])
        np.testing.assert_allclose(got, scores, rtol=1e-6, atol=1e-6)


def test_build_and_search_equal_library_and_brute_force(tmp_path, corpora, encoder):
    a, _ = corpora
    idx = tmp_path / "idx.npz"
    out, _ = _ok(["build", MODEL, a, idx, "--max-active-dims", K_DIMS, "--batch-size", 3])
    assert out.startswith(f"wrote {idx}: 8 documents, vocabulary 30522, {8 * K_DIMS} non-zeros")
    built, lib = SparseIndex.load(idx), library_index(encoder, DOCS_A, batch_size=3)
    assert built.ids == list(DOCS_A) and built.vocab_size == encoder.vocab_size
    assert np.array_equal(built.matrix.toarray(), lib.matrix.toarray())
    manifest = json.loads((tmp_path / "idx.npz.json").read_text())
    assert manifest["model"] == str(MODEL.resolve()) and manifest["max_active_dims"] == K_DIMS
    assert manifest["corpora"] == [{"path": str(a.resolve()), "documents": 8}] and manifest["documents"] == 8

    report = search_json(idx, QUERIES, 5)
    lib_ids, lib_scores = lib.search(encoder.encode_query(QUERIES), 5)
    assert_matches(report, lib_ids, lib_scores, QUERIES)                 # the library, exactly ranked
    bf_ids, bf_scores = brute_force(encoder, DOCS_A, QUERIES, 5)
    assert_matches(report, bf_ids, bf_scores, QUERIES)                   # and the dense brute force
    assert all(h["text"] == DOCS_A[h["id"]] for e in report for h in e["results"])
    assert [e["active_dims"] for e in report] == [int(r.nnz) for r in encoder.encode_query(QUERIES)]
    # k larger than the index: every document once
    assert [len(e["results"]) for e in search_json(idx, QUERIES[:1], 50)] == [8]

    # the plain-text listing: ranked ids, scores and snippets
    text, err = _ok(["search", MODEL, idx, QUERIES[0], "-k", "3"])
    lines = text.splitlines()
    assert lines[0] == f"query 1/1: {QUERIES[0]!r}  ({report[0]['active_dims']} active dims)"
    for line, hit in zip(lines[1:4], report[0]["results"][:3]):
        rank, doc_id, score, *snip = line.split()
        assert (rank, doc_id) == (f"{hit['rank']}.", hit["id"]) and float(score) == pytest.approx(hit["score"],
                                                                                                    abs=1e-6)
        assert " ".join(snip) == DOCS_A[doc_id]
    assert "searched 8 documents for 1 query (k=3)" in err


def test_add_equals_building_everything_at_once(tmp_path, corpora, encoder):
    a, b = corpora
    idx = tmp_path / "idx.npz"
    _ok(["build", MODEL, a, idx, "--max-active-dims", K_DIMS])
    out, _ = _ok(["add", MODEL, idx, b])      # --max-active-dims comes from the manifest
    assert out.strip() == f"wrote {idx}: added 5 documents, 13 in all"
    both = {**DOCS_A, **DOCS_B}
    grown, lib = SparseIndex.load(idx), library_index(encoder, both)
    assert grown.ids == list(both)
    assert np.array_equal(grown.matrix.toarray(), lib.matrix.toarray())
    manifest = json.loads((tmp_path / "idx.npz.json").read_text())
    assert [c["path"] for c in manifest["corpora"]] == [str(a.resolve()), str(b.resolve())]
    assert manifest["documents"] == 13 and manifest["max_active_dims"] == K_DIMS

    report = search_json(idx, QUERIES, 7)
    bf_ids, bf_scores = brute_force(encoder, both, QUERIES, 7)
    assert_matches(report, bf_ids, bf_scores, QUERIES)
    assert all(h["text"] == both[h["id"]] for e in report for h in e["results"])   # snippets from both corpora

    # adding the same documents again is refused before encoding; the files are unchanged
    before = idx.read_bytes(), (tmp_path / "idx.npz.json").read_bytes()
    code, out, err = _main(["add", MODEL, idx, b])
    assert code == 2 and "5 document id(s) are already in" in err and "first: 'b1'" in err
    assert (idx.read_bytes(), (tmp_path / "idx.npz.json").read_bytes()) == before


def test_search_corpus_option_and_missing_manifest(tmp_path, corpora, encoder):
    a, _ = corpora
    idx = tmp_path / "idx.npz"
    _ok(["build", MODEL, a, idx, "--max-active-dims", K_DIMS])
    (tmp_path / "idx.npz.json").unlink()
    report = search_json(idx, QUERIES[:1], 3)
    assert all("text" not in h for h in report[0]["results"])        # corpus unknown: no snippets
    bf_ids, bf_scores = brute_force(encoder, DOCS_A, QUERIES[:1], 3)
    assert_matches(report, bf_ids, bf_scores, QUERIES[:1])
    report = search_json(idx, QUERIES[:1], 3, "--corpus", a)
    assert all(h["text"] == DOCS_A[h["id"]] for h in report[0]["results"])


def test_export_opensearch_parses_back(tmp_path, corpora, encoder):
    a, b = corpora
    idx = tmp_path / "idx.npz"
    _ok(["build", MODEL, a, idx, "--max-active-dims", K_DIMS])
    out = tmp_path / "bulk.ndjson"
    summary, _ = _ok(["export-opensearch", MODEL, idx, out, "--index-name", "limit", "--query", QUERIES[0],
                      "--size", "5"])
    assert "8 documents for index 'limit'" in summary
    ids, m, texts = read_bulk_ndjson(out, encoder.tokenizer, encoder.vocab_size)
    index = SparseIndex.load(idx)
    assert ids == index.ids and texts == list(DOCS_A.values())
    assert np.array_equal(m.toarray(), index.matrix.toarray())           # shortest float32 repr round-trips
    lines = out.read_text().splitlines()
    assert json.loads(lines[0]) == {"index": {"_index": "limit", "_id": "a1"}}
    assert json.loads((tmp_path / "bulk.mapping.json").read_text()) == index_mapping()
    bodies = json.loads((tmp_path / "bulk.queries.json").read_text())
    assert bodies == [{"query": QUERIES[0],
                       "body": query_body(encoder.encode_query(QUERIES[:1]), encoder.tokenizer, size=5)}]

    # from a corpus folder: encoded by the command; options for field names and no texts
    out2 = tmp_path / "b.ndjson"
    _ok(["export-opensearch", MODEL, b, out2, "--index-name", "b", "--max-active-dims", "12", "--field", "sparse",
         "--no-text"])
    ids, m, texts = read_bulk_ndjson(out2, encoder.tokenizer, encoder.vocab_size, field="sparse")
    assert ids == list(DOCS_B) and texts == [None] * 5
    expected = encoder.encode_document(list(DOCS_B.values()), max_active_dims=12)
    assert np.array_equal(m.toarray(), expected.toarray())
    assert json.loads((tmp_path / "b.mapping.json").read_text()) == index_mapping(field="sparse")
    # refusing to overwrite, then --overwrite with pruning keeps only weights >= 0.9 x the row maximum
    code, _, err = _main(["export-opensearch", MODEL, b, out2, "--index-name", "b"])
    assert code == 2 and "exists (pass --overwrite" in err
    _ok(["export-opensearch", MODEL, b, out2, "--index-name", "b", "--max-active-dims", "12", "--field", "sparse",
         "--prune-ratio", "0.9", "--overwrite"])
    _, pruned, _ = read_bulk_ndjson(out2, encoder.tokenizer, encoder.vocab_size, field="sparse")
    dense = expected.toarray()
    keep = dense >= np.float32(0.9) * dense.max(axis=1, keepdims=True)
    assert np.array_equal(pruned.toarray(), np.where(keep, dense, 0))


def test_errors_are_exit_code_2_with_one_line(tmp_path, corpora):
    a, _ = corpora
    idx = tmp_path / "idx.npz"
    _ok(["build", MODEL, a, idx, "--max-active-dims", K_DIMS])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    other_vocab = tmp_path / "v10.npz"
    SparseIndex(10).save(other_vocab)
    dup = write_corpus(tmp_path / "dup.jsonl", DOCS_A)
    with open(dup, "a") as f:
        f.write(json.dumps({"_id": "a1", "text": "again"}) + "\n")
    empty_model = tmp_path / "empty_model"
    empty_model.mkdir()
    cases = [
        (["build", MODEL, a, idx], "exists (pass --overwrite"),
        (["build", MODEL, tmp_path / "missing.jsonl", tmp_path / "x.npz"], "corpus not found"),
        (["build", MODEL, dup, tmp_path / "x.npz"], "duplicate document id 'a1'"),
        (["build", MODEL, tmp_path, tmp_path / "x.npz"], "neither corpus.jsonl nor corpus.jsonl.gz found"),
        (["build", empty_model, a, tmp_path / "x.npz"], "modules.json: not found"),
        (["build", MODEL, a, tmp_path / "no" / "x.npz"], "does not exist"),
        (["build", MODEL, a, tmp_path / "x.npz", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["search", MODEL, garbage, "q"], "not a readable jsplade sparse index"),
        (["search", MODEL, tmp_path / "none.npz", "q"], "sparse index file not found"),
        (["search", MODEL, other_vocab, "q"], "vocabulary size 10 but the model has 30522"),
        (["search", MODEL, idx, "q", "-k", "0"], "-k must be a positive integer"),
        (["search", MODEL, idx, "  "], "query 1 is empty"),
        (["add", MODEL, tmp_path / "none.npz", a], "sparse index file not found"),
        (["export-opensearch", MODEL, idx, tmp_path / "o.ndjson", "--index-name", "x", "--prune-ratio", "1.5"],
         "--prune-ratio must be in [0, 1)"),
        (["export-opensearch", MODEL, idx, tmp_path / "no" / "o.ndjson", "--index-name", "x"], "does not exist"),
        (["export-opensearch", MODEL, idx, tmp_path / "o.ndjson", "--index-name", ""],
         "index_name must be a non-empty string"),
    ]
    for argv, message in cases:
        code, _, err = _main(argv)
        assert code == 2, argv
        last = err.rstrip("\n").splitlines()[-1]
        assert last.startswith("jsplade-index: error: ") and message in last and "Traceback" not in err, (argv, err)
    with pytest.raises(SystemExit) as info:
        _main(["export-opensearch", MODEL, idx, tmp_path / "o.ndjson"])     # --index-name is required
    assert info.value.code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.jsonl", "beir_b", "idx.npz", "idx.npz.json", "garbage.npz", "v10.npz", "dup.jsonl", "empty_model"])


def test_console_script_help():
    script = Path(sys.executable).parent / "jsplade-index"
    assert script.is_file(), "run `pip install -e .` to register the console script"
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    run = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0
    assert all(c in run.stdout for c in ("build", "add", "search", "export-opensearch"))
    bad = subprocess.run([str(script), "search", str(MODEL), "/nonexistent/idx.npz", "q"], capture_output=True,
                         text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last == "jsplade-index: error: /nonexistent/idx.npz: sparse index file not found"
