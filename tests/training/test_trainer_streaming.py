"""jsplade-train on streamed data (TrainConfig.streaming; jsplade.training.streaming): kill and resume mid-epoch
equals the uninterrupted run exactly (the stream's position is part of the checkpoint), memory does not
grow with the number of rows, and bad data stops the run with the last checkpoint kept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from helpers.fixtures import REPO, SE_FIXTURES

from jsplade.backbones.params import flat_state_dict
from jsplade.checkpoints.orbax_dir import CheckpointSteps
from jsplade.training.config import TrainConfig
from jsplade.training.trainer import Trainer

WORDS = "tea jazz mars paris moon river cat dog sea tree car bird rome lyon coffee milk".split()


def _write_shards(folder: Path, n_shards: int, per_shard: int, labels: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        with open(folder / f"part-{s:02d}.jsonl", "w") as f:
            for r in range(per_shard):
                i = s * per_shard + r
                row = {"query": f"{WORDS[i % 16]} question {i}", "positive": f"about {WORDS[i % 16]} {i}",
                       "negative": f"{WORDS[(i + 5) % 16]} other {i}"}
                if labels:
                    row["label"] = [float(x) for x in rng.normal(5, 2, 2)]
                f.write(json.dumps(row) + "\n")
    return folder


def _config(tmp_path, data, name, **kw):
    args = dict(base_model=str(SE_FIXTURES / "model"), train_data=str(data), output_dir=str(tmp_path / name),
                streaming=True, shuffle_buffer_size=8, batch_size=4, max_steps=6, learning_rate=1e-4,
                warmup_ratio=0.0, lambda_d=3e-3, lambda_q=5e-3, progress_bar=False, tensorboard=False)
    args.update(kw)
    return TrainConfig(**args)


def _params(result):
    return {k: np.asarray(v) for k, v in flat_state_dict(nnx.state(result.encoder.model, nnx.Param)).items()}


def test_kill_and_resume_mid_epoch_equals_the_uninterrupted_run(tmp_path):
    """3 shards × 5 rows, batches of 4 from an 8-row shuffle buffer, distillation labels, 6 steps (an epoch is
    about 4 batches: the run crosses an epoch boundary). Killed after step 4 with a checkpoint at step 3, then
    rerun: the same batches (row ids), bit-identical metrics and parameters."""
    data = _write_shards(tmp_path / "data", 3, 5, labels=True)
    full = Trainer(_config(tmp_path, data, "full", loss="SparseDistillKLDivLoss")).fit()
    cfg = _config(tmp_path, data, "killed", loss="SparseDistillKLDivLoss", checkpoint_every=3)
    Trainer(cfg).fit(stop_after=4)
    assert CheckpointSteps(tmp_path / "killed").all_steps() == [3]
    resumed = Trainer(cfg).fit()
    assert [h["indices"] for h in resumed.history] == [h["indices"] for h in full.history[3:]]
    epochs_seen = {tuple(i) for h in full.history for mb in h["indices"] for i in mb}
    assert len(epochs_seen) == 15  # every row of the first epoch was used
    for a, b in zip(full.history[3:], resumed.history):
        for k in ("base_loss", "document_regularizer_loss", "query_regularizer_loss", "grad_norm"):
            assert a[k] == b[k], k
    pa, pb = _params(full), _params(resumed)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


_MEMORY_RUN = r"""
import json, sys, resource
import pyarrow as pa, pyarrow.parquet as pq
from pathlib import Path
n, out, model = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True)
per = n // 4
for s in range(4):  # 4 Parquet shards, row groups of 10,000
    ids = range(s * per, (s + 1) * per)
    pq.write_table(pa.table({"query": [f"q{i}" for i in ids], "positive": [f"p{i}" for i in ids],
                             "negative": [f"n{i}" for i in ids]}), out / f"part-{s}.parquet", row_group_size=10000)
from jsplade.training.config import TrainConfig
from jsplade.training.trainer import Trainer
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
before = hwm()
cfg = TrainConfig(base_model=model, train_data=str(out), output_dir=str(out.parent / "run"), streaming=True,
                  shuffle_buffer_size=64, batch_size=8, max_steps=3, progress_bar=False, tensorboard=False)
Trainer(cfg).fit()
print(json.dumps({"before_mb": before, "peak_mb": hwm()}))
"""


def test_a_million_rows_train_with_memory_that_does_not_grow_with_the_row_count(tmp_path):
    """The same 3-step run over 100,000 and over 1,000,000 generated rows (each in a fresh process): the peak
    RSS of the run differs by less than 40 MiB (a list of the million rows' texts alone would be ~200 MiB).
    The epoch-long reading itself is measured flat in tests/training/test_streaming.py."""
    peaks = {}
    for n in (100_000, 1_000_000):
        proc = subprocess.run([sys.executable, "-c", _MEMORY_RUN, str(n), str(tmp_path / str(n) / "data"),
                               str(SE_FIXTURES / "model")], capture_output=True, text=True, timeout=600,
                              cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[n] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_mb"]
    assert peaks[1_000_000] - peaks[100_000] < 40, peaks


def test_a_shard_that_disappears_stops_the_run_and_keeps_the_checkpoints(tmp_path):
    data = _write_shards(tmp_path / "data", 2, 6)
    gone = []

    def delete_a_shard(encoder, step):  # the eval hook runs after step 2's checkpoint
        for p in sorted(data.iterdir()):
            p.unlink()
            gone.append(p)
            break
        return {}

    cfg = _config(tmp_path, data, "run", checkpoint_every=2, eval_every=2, shuffle_buffer_size=4, max_steps=8)
    with pytest.raises(FileNotFoundError, match="part-0"):
        Trainer(cfg, eval_fn=delete_a_shard).fit()
    steps = CheckpointSteps(tmp_path / "run").all_steps()  # every checkpoint written before the error is kept
    assert gone and steps and steps == list(range(2, 2 * len(steps) + 1, 2))


@pytest.mark.parametrize("kw,message", [
    ({"max_steps": None}, "needs 'max_steps'"),
    ({"grad_accum_steps": 2}, "'drop_last' = true"),
    ({"loss": "SparseMarginMSELoss"}, "SparseMarginMSELoss needs labels"),
    ({"shuffle_buffer_size": 2}, "'shuffle_buffer_size' \\(2\\) must be >= batch_size"),
])
def test_streaming_settings_are_checked_before_compute(tmp_path, kw, message):
    data = _write_shards(tmp_path / "data", 1, 4)
    with pytest.raises(ValueError, match=message):
        Trainer(_config(tmp_path, data, "run", **kw))


def test_resuming_a_streamed_run_from_an_in_memory_checkpoint_is_refused(tmp_path):
    data = _write_shards(tmp_path / "data", 1, 8)
    cfg = _config(tmp_path, data, "run", streaming=False, train_data=str(data / "part-00.jsonl"), max_steps=1)
    Trainer(cfg).fit()
    with pytest.raises(ValueError, match="no position in the streamed data"):
        Trainer(_config(tmp_path, data, "run", max_steps=1)).fit()


@pytest.mark.parametrize("kw,message", [
    ({}, "on 2 processes needs 'mesh'"),
    ({"mesh": "data=2,fsdp=2,tensor=2", "pack_documents": True}, "needs padded batches"),
    ({"mesh": "data=2,fsdp=2,tensor=2"}, "on 2 processes needs 'drop_last' = true"),
    ({"mesh": "data=2,fsdp=2,tensor=2", "drop_last": True, "batch_size": 5, "shuffle_buffer_size": 8},
     "'batch_size' = 5 must be divisible by the 2 processes"),
])
def test_multi_process_streaming_settings_are_checked_before_compute(tmp_path, monkeypatch, kw, message):
    """A streamed run on several processes (faked here: ``jax.process_count`` says 2) needs a mesh, padded
    batches of one size (``drop_last``) and a global batch size that splits evenly between the processes."""
    import jax

    data = _write_shards(tmp_path / "data", 2, 4)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match=message):
        Trainer(_config(tmp_path, data, "run", **kw))
