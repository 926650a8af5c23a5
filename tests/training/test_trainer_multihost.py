"""jsplade-train on streamed data across processes (``jsplade-train --coordinator``, two processes × four CPU
devices, jax.distributed over gloo on localhost): each process reads only its own shards, the processes
agree on padded lengths and lay their rows side by side into the global batch, the position of every
process in its data is part of the checkpoint, and a process that cannot read its data stops the run
without leaving the other waiting or losing a checkpoint.

The reference for the two-process run is one process replaying the same global batches from memory on the
same mesh shape (``replay_batches``): per-step loss terms and the final parameters within 1e-5 relative
(the two runs sum over devices through different collectives: gloo across processes, XLA's in-process
all-reduce here)."""

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
from flax import nnx
from helpers.fixtures import REPO, SE_FIXTURES

from jsplade.backbones.params import flat_state_dict
from jsplade.checkpoints.orbax_dir import CheckpointSteps
from jsplade.splade.encoder import SparseEncoder
from jsplade.training.config import TrainConfig
from jsplade.training.trainer import Trainer

WORKER = REPO / "tests" / "helpers" / "program_worker.py"
WORDS = "tea jazz mars paris moon river cat dog sea tree car bird rome lyon coffee milk".split()
N_SHARDS, PER_SHARD = 4, 12
TOL = 1e-5
TERMS = ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "total")


def write_shards(folder: Path) -> Path:
    """4 JSON-lines shards of 12 (query, positive, negative, 2 teacher scores) rows; texts of several lengths,
    so the processes' own padded lengths differ from step to step."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for s in range(N_SHARDS):
        with open(folder / f"part-{s:02d}.jsonl", "w") as f:
            for r in range(PER_SHARD):
                i = s * PER_SHARD + r
                long = " ".join(WORDS[(i + k) % 16] for k in range(i % 7))
                f.write(json.dumps({"query": f"{WORDS[i % 16]} question {i}",
                                    "positive": f"about {WORDS[i % 16]} {i} {long}",
                                    "negative": f"{WORDS[(i + 5) % 16]} other {i}",
                                    "label": [float(x) for x in rng.normal(5, 2, 2)]}) + "\n")
    return folder


SETTINGS = dict(streaming=True, shuffle_buffer_size=8, batch_size=8, max_steps=12, learning_rate=1e-4,
                warmup_ratio=0.0, lambda_d=3e-3, lambda_q=5e-3, progress_bar=False, tensorboard=False,
                mesh="data=2,fsdp=2,tensor=2", drop_last=True, checkpoint_every=3, async_checkpointing=False,
                loss="SparseDistillKLDivLoss", log_every=1)


def write_config(path: Path, data: Path, out: Path, **kw) -> Path:
    values = {"base_model": str(SE_FIXTURES / "model"), "train_data": str(data), "output_dir": str(out),
              **SETTINGS, **kw}
    lines = [f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: Path) -> list[subprocess.Popen]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return [subprocess.Popen([sys.executable, str(WORKER), "4", "jsplade.cli.train", str(config),
                              "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                             env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]


def finish(procs, timeout=500) -> list[tuple[int, str]]:
    out = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            _, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a process of the two-process run did not finish in time (waiting on the other?)")
        out.append((p.returncode, err))
    return out


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def wait_for_step(run: Path, step: int, procs, timeout=400) -> None:
    """Until metrics.jsonl has a line for ``step`` (0-based) or later."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = run / "metrics.jsonl"
        if path.exists() and any(json.loads(x)["step"] >= step for x in path.read_text().splitlines() if x):
            return
        if any(p.poll() is not None for p in procs):
            pytest.fail("\n".join(p.communicate()[1][-2000:] for p in procs))
        time.sleep(0.05)
    pytest.fail(f"step {step} not reached")


def params_of(encoder: SparseEncoder) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flat_state_dict(nnx.state(encoder.model, nnx.Param)).items()}


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory):
    """The uninterrupted two-process run, and one killed (SIGKILL, both processes) after checkpoint 3 and
    rerun to the end."""
    tmp = tmp_path_factory.mktemp("multihost")
    data = write_shards(tmp / "data")
    full = tmp / "full"
    results = finish(launch(write_config(tmp / "full.toml", data, full)))
    assert all(rc == 0 for rc, _ in results), "\n".join(e[-3000:] for _, e in results)

    killed = tmp / "killed"
    cfg = write_config(tmp / "killed.toml", data, killed)
    procs = launch(cfg)
    wait_for_step(killed, 3, procs)  # the line of step 3 follows checkpoint 3 (saved synchronously)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()
    kept = CheckpointSteps(killed).all_steps()
    results = finish(launch(cfg))
    assert all(rc == 0 for rc, _ in results), "\n".join(e[-3000:] for _, e in results)
    return data, full, killed, kept


@pytest.mark.slow
def test_processes_read_disjoint_rows_that_cover_the_epoch(two_process_runs):
    """Process 0's rows fill the first half of every global batch, from its shards 0 and 2; process 1's the
    second half, from 1 and 3. The first 6 steps (one epoch of 24 rows per process) use all 48 rows once."""
    _, full, _, _ = two_process_runs
    steps = metrics(full)
    assert [m["step"] for m in steps] == list(range(12))
    for m in steps:
        (batch,) = m["indices"]
        assert len(batch) == 8
        assert {s for s, _ in batch[:4]} <= {0, 2} and {s for s, _ in batch[4:]} <= {1, 3}
    epoch = [tuple(i) for m in steps[:6] for i in m["indices"][0]]
    assert sorted(epoch) == [(s, r) for s in range(N_SHARDS) for r in range(PER_SHARD)]


@pytest.mark.slow
def test_two_processes_equal_one_replaying_their_batches(two_process_runs, tmp_path):
    data, full, _, _ = two_process_runs
    steps = metrics(full)
    rows = [line for s in range(N_SHARDS) for line in (data / f"part-{s:02d}.jsonl").read_text().splitlines()]
    (tmp_path / "all.jsonl").write_text("\n".join(rows) + "\n")  # row s * 12 + r = row r of shard s
    plan = [[s * PER_SHARD + r for s, r in m["indices"][0]] for m in steps]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    settings = {k: v for k, v in SETTINGS.items() if k not in ("streaming", "shuffle_buffer_size", "max_steps")}
    ref = Trainer(TrainConfig(base_model=str(SE_FIXTURES / "model"), train_data=str(tmp_path / "all.jsonl"),
                              output_dir=str(tmp_path / "ref"), replay_batches=str(tmp_path / "plan.json"),
                              **settings)).fit()
    assert [h["indices"] for h in ref.history] == [[[i for i in mb] for mb in p] for p in [[b] for b in plan]]
    for got, want in zip(steps, ref.history, strict=True):
        for k in TERMS:
            assert abs(got[k] - want[k]) <= TOL * abs(want[k]) + 1e-9, (got["step"], k, got[k], want[k])
    got_p, want_p = params_of(SparseEncoder.load(full / "model")), params_of(ref.encoder)
    assert got_p.keys() == want_p.keys()
    for k, v in want_p.items():
        assert np.abs(got_p[k] - v).max() <= TOL * max(np.abs(v).max(), 1e-12), k


@pytest.mark.slow
def test_kill_and_resume_on_two_processes_equals_the_uninterrupted_run(two_process_runs):
    """Both processes killed after checkpoint 3 (or later), rerun: the same batches from the checkpoint on,
    the same loss terms bit for bit, the same final parameters."""
    _, full, killed, kept = two_process_runs
    assert kept and min(kept) == 3 and max(kept) < 12, kept
    want, got = metrics(full), metrics(killed)
    assert [m["step"] for m in got] == list(range(12))  # the resumed run rewrote the lines after its checkpoint
    for a, b in zip(want, got):
        assert a["indices"] == b["indices"], a["step"]
        for k in TERMS:
            assert a[k] == b[k], (a["step"], k)
    pa, pb = params_of(SparseEncoder.load(full / "model")), params_of(SparseEncoder.load(killed / "model"))
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


@pytest.mark.slow
def test_a_process_whose_shards_disappear_stops_both_and_keeps_the_checkpoints(tmp_path):
    """Process 1's shards (1 and 3) are deleted during the run: process 1 names the missing file when it next
    opens one (at the latest at its next epoch), process 0 stops with it instead of waiting in a collective;
    the checkpoints written so far are kept, and the run resumes on two processes once the data is back."""
    data = write_shards(tmp_path / "data")
    saved = {p.name: p.read_bytes() for p in data.iterdir()}
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "run.toml", data, run, max_steps=30, checkpoint_every=2)
    procs = launch(cfg)
    wait_for_step(run, 2, procs)
    for name in ("part-01.jsonl", "part-03.jsonl"):
        (data / name).unlink()
    (rc0, err0), (rc1, err1) = finish(procs)
    assert rc1 == 2 and "part-0" in err1.strip().splitlines()[-1] and "not found" in err1, err1[-2000:]
    assert rc0 == 1 and "process(es) [1] of 2 failed" in err0.strip().splitlines()[-1], err0[-2000:]
    last = metrics(run)[-1]["step"]
    assert last < 29
    kept = CheckpointSteps(run).all_steps()
    assert kept and max(kept) >= 2 and max(kept) <= last + 1, (kept, last)
    for name, raw in saved.items():
        (data / name).write_bytes(raw)
    assert all(rc == 0 for rc, _ in finish(launch(cfg)))
    assert metrics(run)[-1]["step"] == 29
