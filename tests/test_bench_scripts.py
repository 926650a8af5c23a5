"""The prepared GPU benchmark script runs end to end (its CPU smoke mode: 2 layers, 64 tokens), so it is
known to work before a GPU machine is ever lent. Times are not asserted, only that every figure is there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_bench_cpu_smoke():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_bench.py"), "--cpu-smoke"],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (out["layers"], out["length"], out["batch"]) == (2, 64, 2)
    for key in ("jsplade_bfloat16_s_per_step", "jsplade_float32_s_per_step", "st_bfloat16_s_per_step",
                "st_float32_s_per_step", "speedup_vs_st_float32", "speedup_vs_st_bfloat16"):
        assert out[key] > 0, key
