"""The prepared GPU benchmark script runs end to end (its CPU smoke mode: 2 layers, tiny sizes), so it is
known to work before a GPU machine is ever lent. Times are not asserted; that every figure is there is, and
so are its numerical checks (on CPU the cuDNN request runs the blockwise kernel in bfloat16)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_cpu_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--cpu-smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert (summary["layers"], summary["length"], summary["batch"], summary["card"]) == (2, 64, 2, "cpu")
    for key in ("jsplade_bf16_default_s", "jsplade_f32_default_s", "jsplade_bf16_head_plain_s",
                "jsplade_bf16_batch2x_s", "speedup_vs_st_bf16_default", "speedup_vs_st_f32_default",
                "speedup_vs_st_bf16_batch2x", "encode_jsplade_bfloat16_s", "encode_st_float32_s",
                "long_jsplade_float32_s", "long_st_bfloat16_s", "jsplade_bf16_cached_b8_m2_s",
                "jsplade_bf16_cached_b8_m2_mfu", "jsplade_bf16_onepass_b2_s", "bf16_cached_b8_m2_mfu_over_onepass"):
        assert summary[key] > 0, key
    results = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert not [r for r in results if "error" in r or "worker_error" in r or "timeout_s" in r]
    cached = [r for r in results if r.get("cached_mini")]  # the GradCache step: 8 rows in mini-batches of 2
    assert [(r["batch"], r["cached_mini"]) for r in cached] == [(8, 2)]
    assert all(math.isfinite(v) for v in cached[0]["metrics"].values()) and cached[0]["metrics"]
    profiled = [r for r in results if "profile" in r]
    assert len(profiled) == 1 and profiled[0]["profile"]["kernel_ms_per_step"] > 0
    assert (tmp_path / "hlo_train_step.txt.gz").stat().st_size > 1000  # the optimised HLO of the profiled step
    checks = {r["check"]: r for r in results if r.get("section") == "checks"}
    assert checks["attention_cudnn_vs_xla"]["runs_as"] == "blockwise"  # no GPU here
    assert checks["attention_cudnn_vs_xla"]["out_rel"] < 1e-2  # bfloat16 inputs against float32
    assert checks["attention_blockwise_vs_xla"]["out_rel"] < 1e-5
    assert max(checks["attention_blockwise_vs_xla"]["grad_rel"]) < 1e-5
    assert checks["fused_head_vs_plain_float32"]["value_rel"] < 1e-6
    assert max(checks["fused_head_vs_plain_float32"]["grad_rel"]) < 1e-5


def test_a_ceiling_is_the_rate_that_a_1_5x_ratio_needs():
    sys.path.insert(0, str(REPO / "bench"))
    import run_benchmarks
    from bench_data import model_flops_per_token

    # Hand count for a 1-layer toy: QKV 2·d·3d + out 2·d·d + up/gate 2·d·2i + down 2·i·d, attention 4·L·d, head
    # transform 2·d·d and vocabulary 2·d·V.
    d, i, v, length = 4, 6, 10, 3
    assert model_flops_per_token(length, layers=1, d=d, inter=i, vocab=v) == (
        2 * d * 3 * d + 2 * d * d + 2 * d * 2 * i + 2 * i * d + 4 * length * d + 2 * d * d + 2 * d * v)
    results = {"a": {"jsplade": {"model_tflop": 90.0}, "st_float32": {"seconds": 450.0}},
               "g": {"xla_model_weighted_gflops": 250.0, "torch_model_weighted_gflops": 300.0}}
    ceiling = run_benchmarks.a_ceiling(results)
    assert ceiling["needed_gflops"] == 300.0  # 90 TFLOP in 450 s / 1.5
    assert (ceiling["xla_product_gflops"], ceiling["needed_over_xla"]) == (250.0, 1.2)
    assert (ceiling["torch_product_gflops"], ceiling["needed_over_torch"]) == (300.0, 1.0)
    assert run_benchmarks.a_ceiling({"a": {"jsplade": {"failed": True}}, "g": results["g"]}) is None


def test_cached_step_bench_runs_one_row_at_toy_size():
    """bench/cached_step.py's per-row worker (what the BENCHMARKS row runs at batch 4096) at batch 8."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "cached_step.py"), "--one", "cached", "8", "4"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (row["mode"], row["batch"], row["mini_batch"]) == ("cached", 8, 4)
    assert row["peak_mb"] >= row["before_step_peak_mb"] > 0 and row["xla_temp_mb"] > 0
    assert math.isfinite(row["loss"]) and row["loss"] > 0


def test_encode_profile_and_pruning_table_run_at_toy_size(tmp_path):
    """Both corpus-encoding benchmarks end to end on a small untrained demo-initialised model (LIMIT-small
    and 64 LIMIT documents): every phase and setting is reported."""
    from jsplade.limit.demo import DemoSettings, build_encoder

    model = tmp_path / "model"
    build_encoder(DemoSettings.quick_settings("unused"), ["a b c"]).save(model, naming="gte")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "encode_profile.py"), "--model", str(model),
                           "--docs", "64", "--out", str(tmp_path / "p.json")],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    prof = json.loads((tmp_path / "p.json").read_text())
    for key in ("tokenize_s", "transformer_s", "head_s", "transfer_s", "sparse_s", "total_s", "bound_s",
                "st_total_s", "speedup_vs_st"):
        assert prof[key] > 0, key
    assert prof["docs"] == 64 and prof["auto_dtype"][0] in ("float32", "bfloat16")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "pruning_table.py"), "--model", str(model),
                           "--datasets", "limit-small", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "t.json")],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "t.json").read_text())["datasets"]["limit-small"]["rows"]
    assert len(rows) == 13 and all(0 < r["ndcg@10"] <= 1 and r["bytes"] > 0 for r in rows)
    by = {(r["pruning"], r["quantization"]): r for r in rows}
    assert by[("top_k:64", None)]["corpus_active_dims"] <= 64 < by[("none", None)]["corpus_active_dims"]
    assert by[("none", "int32:100")]["ndcg@10"] == pytest.approx(by[("none", None)]["ndcg@10"], abs=0.02)
