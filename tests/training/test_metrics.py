"""MetricsLog and read_metrics (jsplade.training.metrics): the json-lines file (one object per step, plain
Python values, non-finite numbers as strings, flushed at every write), a fresh start versus a resume that
drops the killed run's later and half-written lines, and the TensorBoard scalars (read back from the event
file: numeric finite values only, at their step)."""

from __future__ import annotations

import json
import struct

import jax.numpy as jnp
import numpy as np
from tensorboardX.proto.event_pb2 import Event

from jsplade.training.metrics import MetricsLog, read_metrics


def _events(folder) -> list[Event]:
    """Every record of the TFRecord event files under ``folder`` (length, crc, payload, crc)."""
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            out.append(Event.FromString(data[pos + 12:pos + 12 + length]))
            pos += 12 + length + 4
    return out


def _scalars(folder) -> dict[tuple[str, int], float]:
    return {(v.tag, e.step): v.simple_value for e in _events(folder) if e.HasField("summary")
            for v in e.summary.value}


def test_one_plain_json_line_per_step_flushed_at_once(tmp_path):
    path = tmp_path / "deep" / "run" / "metrics.jsonl"  # parent folders are created
    log = MetricsLog(path)
    log.log(np.int64(0), {"total": np.float32(0.5), "lr": jnp.asarray(2e-5), "indices": [[3, 1]], "note": "x"})
    first = path.read_text()  # readable before close: each write is flushed
    assert first.endswith("\n") and first.count("\n") == 1
    log.log(1, {"total": float("nan"), "grad_norm": np.float64("inf"), "neg": -np.inf})
    log.close()
    lines = path.read_text().splitlines()
    assert lines[0] == first.strip()
    rows = [json.loads(line) for line in lines]
    assert list(rows[0]) == ["step", "total", "lr", "indices", "note"]  # step first, then in the caller's order
    assert rows[0]["step"] == 0 and type(rows[0]["step"]) is int
    assert rows[0]["total"] == 0.5 and rows[0]["lr"] == float(np.float32(2e-5)) and rows[0]["indices"] == [[3, 1]]
    assert rows[1] == {"step": 1, "total": "nan", "grad_norm": "inf", "neg": "-inf"}  # strict JSON, no NaN token
    assert "NaN" not in lines[1] and "Infinity" not in lines[1]
    assert read_metrics(path) == rows


def test_read_metrics_ignores_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0, "total": 1.0}\n\n  \n{"step": 1, "total": 0.5}\n')
    assert read_metrics(path) == [{"step": 0, "total": 1.0}, {"step": 1, "total": 0.5}]


def test_a_fresh_run_replaces_an_old_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "total": 9.0}\n{"step": 1, "total": 8.0}\n')
    log = MetricsLog(path)
    log.log(0, {"total": 1.0})
    log.close()
    assert read_metrics(path) == [{"step": 0, "total": 1.0}]


def test_resume_keeps_earlier_steps_and_drops_later_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "total": float(s)}) + "\n" for s in range(6))
                    + '{"step": 6, "tot')  # the killed run's last line, cut mid-write
    log = MetricsLog(path, resume_from_step=4)
    assert [r["step"] for r in read_metrics(path)] == [0, 1, 2, 3]  # cleaned before the first new write
    log.log(4, {"total": 40.0})
    log.log(5, {"total": 50.0})
    log.close()
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5]  # no step twice
    assert [r["total"] for r in rows] == [0.0, 1.0, 2.0, 3.0, 40.0, 50.0]


def test_resume_without_a_file_starts_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path, resume_from_step=3)
    log.log(3, {"total": 1.0})
    log.close()
    assert read_metrics(path) == [{"step": 3, "total": 1.0}]


def test_tensorboard_gets_the_finite_numbers_at_their_steps(tmp_path):
    tb = tmp_path / "tensorboard"
    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard_dir=tb)
    log.log(0, {"total": 0.75, "lr": np.float32(1e-3), "indices": [[0, 1]], "note": "text"})
    log.log(1, {"total": float("nan"), "lr": 2e-3, "eval/query_nnz": 12})
    log.close()
    scalars = _scalars(tb)
    assert set(scalars) == {("total", 0), ("lr", 0), ("lr", 1), ("eval/query_nnz", 1)}  # no nan, lists, text
    assert scalars[("total", 0)] == 0.75
    assert np.isclose(scalars[("lr", 0)], 1e-3, rtol=1e-6) and np.isclose(scalars[("lr", 1)], 2e-3, rtol=1e-6)
    assert scalars[("eval/query_nnz", 1)] == 12.0
    # the json-lines file still holds everything, the nan as a string
    assert read_metrics(tmp_path / "metrics.jsonl")[1] == {"step": 1, "total": "nan", "lr": 2e-3,
                                                           "eval/query_nnz": 12}


def test_no_tensorboard_folder_without_a_tensorboard_dir(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log(0, {"total": 1.0})
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
