"""jsplade-encode end to end, each run a fresh process: the summary and one-line errors, kill -9 during a
run and rerun gives byte-identical shards, a million generated documents encode with memory that does not
grow with the corpus, and two processes × four CPU devices (jax.distributed) equal one process on one device.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny_encoder import WORDS, tiny_encoder

from jsplade.cli.encode import main
from jsplade.retrieval.corpus import load_encoded
from jsplade.retrieval.shards import MANIFEST_NAME, part_name, read_shards

WORKER = Path(__file__).resolve().parents[1] / "helpers" / "program_worker.py"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("encode") / "model"
    tiny_encoder().save(path)
    return path


def write_corpus(path: Path, n: int, seed: int = 0) -> Path:
    """n short documents (1–8 words), written in blocks so that a million stay cheap."""
    rng = np.random.default_rng(seed)
    words = np.asarray(WORDS)
    with open(path, "w", encoding="utf-8") as f:
        for lo in range(0, n, 50000):
            m = min(50000, n - lo)
            lengths = rng.integers(1, 9, m)
            picks = words[rng.integers(0, len(WORDS), int(lengths.sum()))]
            cuts = np.cumsum(lengths)[:-1]
            f.write("".join(f'{{"_id":"d{lo + i}","text":"{" ".join(ws)}"}}\n'
                            for i, ws in enumerate(np.split(picks, cuts))))
    return path


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def run_worker(args, devices=1, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen([sys.executable, str(WORKER), str(devices), "jsplade.cli.encode", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_summary_and_errors(tmp_path, model, capsys):
    corpus = write_corpus(tmp_path / "c.jsonl", 300)
    assert main([str(model), str(corpus), str(tmp_path / "out"), "--shard-size", "128", "--no-progress",
                 "--prune", "top_k:4", "--quantize", "100"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert (summary["docs"], summary["parts"], summary["parts_written"], summary["dtype"]) == (300, 3, 3, "float32")
    assert "compute dtype float32 (CPU" in err and "docs/s" in err and "tokens/s" in err
    shards = read_shards(tmp_path / "out")
    assert shards.settings["pruning"] == {"kind": "top_k", "value": 4}
    assert max(np.diff(shards.load()[1].indptr)) <= 4
    for argv, message in (([str(model), str(tmp_path / "none.jsonl"), str(tmp_path / "x")], "corpus not found"),
                          ([str(model), str(corpus), str(tmp_path / "x"), "--prune", "top_k:-1"], "top_k"),
                          ([str(model), str(corpus), str(tmp_path / "out"), "--shard-size", "64"], "other settings"),
                          ([str(model), str(corpus), str(tmp_path / "x"), "--devices", "many"], "--devices"),
                          ([str(model), str(corpus), str(tmp_path / "x"), "--process-id", "1"], "need --coordinator")):
        assert main(argv + ["--no-progress"]) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("jsplade-encode: error: ") and message in last, err


def test_kill_9_then_rerun_gives_the_same_bytes(tmp_path, model):
    corpus = write_corpus(tmp_path / "c.jsonl", 40000, seed=1)
    args = [model, corpus, None, "--shard-size", "1000", "--no-progress"]
    clean = run_worker([a if a is not None else tmp_path / "clean" for a in args])
    assert clean.wait(600) == 0, clean.stderr.read()[-2000:]
    out = tmp_path / "out"
    victim = run_worker([a if a is not None else out for a in args])
    deadline = time.time() + 300
    while time.time() < deadline and not (out.is_dir() and len(list(out.glob("part-*"))) >= 3):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(60)
    assert victim.returncode == -signal.SIGKILL
    written = sorted(p.name for p in out.glob("part-*"))
    assert 3 <= len(written) < 40 and not (out / MANIFEST_NAME).exists()
    rerun = run_worker([a if a is not None else out for a in args])
    assert rerun.wait(600) == 0, rerun.stderr.read()[-2000:]
    summary = json.loads(rerun.stdout.read().strip().splitlines()[-2])
    assert summary["parts_kept"] >= len(written) - 0 and summary["parts_written"] == 40 - summary["parts_kept"]
    assert files_of(out) == files_of(tmp_path / "clean")


def peak_rss_mib(proc) -> float:
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-2000:]
    return int(stdout.strip().splitlines()[-1].split("=")[1]) / 1024


@pytest.mark.slow
def test_a_million_documents_encode_in_flat_memory(tmp_path, model):
    small = write_corpus(tmp_path / "small.jsonl", 100_000, seed=2)
    large = write_corpus(tmp_path / "large.jsonl", 1_000_000, seed=3)
    args = ["--shard-size", "10000", "--batch-size", "256", "--no-progress"]
    rss_small = peak_rss_mib(run_worker([model, small, tmp_path / "s", *args]))
    rss_large = peak_rss_mib(run_worker([model, large, tmp_path / "l", *args]))
    shards = read_shards(tmp_path / "l")
    assert shards.n_docs == 1_000_000 and len(shards.parts) == 100
    assert rss_large - rss_small < 40, (rss_small, rss_large)  # 10x the corpus, the same memory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_of_four_devices_equal_one_device(tmp_path, model):
    corpus = write_corpus(tmp_path / "c.jsonl", 5000, seed=4)
    one = run_worker([model, corpus, tmp_path / "one", "--shard-size", "600", "--no-progress"])
    assert one.wait(600) == 0, one.stderr.read()[-2000:]
    port = _free_port()
    procs = [run_worker([model, corpus, tmp_path / "two", "--shard-size", "600", "--no-progress", "--devices", "local",
                         "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                        devices=4) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[1][-2000:] for o in outs)
    summaries = [json.loads(o[0].strip().splitlines()[-2]) for o in outs[:1]]
    assert summaries[0]["parts"] == 9  # process 0 reports the whole directory
    shards = read_shards(tmp_path / "two")
    assert shards.settings["devices"] == 4 and len(shards.parts) == 9
    (ids1, m1), (ids2, m2) = load_encoded(tmp_path / "one"), load_encoded(tmp_path / "two")
    assert ids1 == ids2
    p1, p2 = m1.copy(), m2.copy()
    p1.data[:] = 1
    p2.data[:] = 1
    assert (p1 != p2).nnz == 0 and abs(m1 - m2).max() <= 1e-5 * abs(m1).max()
    assert part_name(8) in {p.name for p in shards.parts}


def test_the_index_program_reads_shards_instead_of_encoding(tmp_path, model, capsys):
    from jsplade.cli.index import main as index_main
    from jsplade.retrieval.index import SparseIndex
    from jsplade.retrieval.opensearch import read_bulk_ndjson
    from jsplade.splade.encoder import SparseEncoder

    corpus = write_corpus(tmp_path / "c.jsonl", 200, seed=5)
    assert main([str(model), str(corpus), str(tmp_path / "sh"), "--shard-size", "64", "--quantize", "100",
                 "--no-progress"]) == 0
    ids, vectors = load_encoded(tmp_path / "sh")
    assert index_main(["build", str(model), str(tmp_path / "sh"), str(tmp_path / "i.npz")]) == 0
    index = SparseIndex.load(tmp_path / "i.npz")
    assert index.ids == ids and (index.matrix != vectors).nnz == 0
    assert index_main(["export-opensearch", str(model), str(tmp_path / "sh"), str(tmp_path / "b.ndjson"),
                       "--index-name", "x"]) == 0
    enc = SparseEncoder.load(model)
    got_ids, got = read_bulk_ndjson(tmp_path / "b.ndjson", enc.tokenizer, enc.vocab_size)[:2]
    assert got_ids == ids and abs(got - vectors).max() == 0
    other = tmp_path / "other"
    tiny_encoder(seed=9).save(other)
    capsys.readouterr()
    assert index_main(["build", str(other), str(tmp_path / "sh"), str(tmp_path / "j.npz")]) == 2
    assert "encoded by another model" in capsys.readouterr().err
