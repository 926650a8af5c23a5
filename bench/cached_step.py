"""Peak memory of one cached (GradCache) training step at a large batch, against the one-pass step.

    python bench/cached_step.py --out runs/bench/cached.json          # every row, each in its own process
    python bench/cached_step.py --one cached 4096 64                  # one row (what the driver runs)

Model: the GTE "new" architecture of the bundled fixture at 4 layers, hidden 128, 4 heads, intermediate 256,
the 30,522-token vocabulary, seeded random ("recipe") weights, inference-free (static query weights).
Batch: B (query, positive, hard negative) rows of random token ids, queries 8 tokens, documents 64; one
SpladeLoss(SparseMultipleNegativesRankingLoss) step with AdamW, float32, dropout on. Each row runs in a fresh
process and reports VmHWM (peak resident memory) after the step, the memory before the step (model, optimizer
state, batch) and XLA's buffer plan for the step (temporaries). The one-pass step at B = 4096 is compiled
only (its plan), not run: see BENCHMARKS.md for what the plan says.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "fixtures" / "sparse_encoder" / "model" / "config.json"
ROWS = [("cached", 4096, 64), ("cached", 1024, 64), ("plain", 1024, 0), ("plain", 4096, 0)]


def _hwm_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one(mode: str, batch: int, mini: int, run: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jsplade.backbones.gte import GTE
    from jsplade.backbones.gte_config import GteConfig
    from jsplade.backbones.recipe import recipe_state_dict
    from jsplade.checkpoints.hf_folder import mlm_from_params
    from jsplade.splade.model import SpladeModel
    from jsplade.splade.static_embedding import StaticQueryEmbedding
    from jsplade.training.optim import make_optimizer
    from jsplade.training.trainer import StepSettings, make_train_step

    cfg = GteConfig.from_json_file(CONFIG).replace(hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                                   intermediate_size=256)
    mlm = mlm_from_params(cfg, GTE.hf_to_params(recipe_state_dict(cfg, 7), cfg))
    weights = np.random.RandomState(0).uniform(0.5, 8.0, cfg.vocab_size).astype(np.float32)
    model = SpladeModel(mlm, StaticQueryEmbedding(weights))
    settings = StepSettings(total_steps=10, learning_rate=2e-5, warmup_steps=1, lambda_d=3e-5, lambda_q=5e-5,
                            regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3, dropout=True,
                            cached_mini_batch_size=mini if mode == "cached" else None)
    optimizer = make_optimizer(lambda s: settings.learning_rate)
    graphdef, params = nnx.split(model, nnx.Param)
    state = {"params": params, "opt": optimizer.init(params), "step": jnp.asarray(0, jnp.int32),
             "rng": jax.random.key_data(jax.random.key(0))}
    rng = np.random.default_rng(0)
    host = {"query_ids": rng.integers(1000, 30000, (1, batch, 8)).astype(np.int32),
            "query_mask": np.ones((1, batch, 8), np.int32),
            "doc_ids": rng.integers(1000, 30000, (1, 2, batch, 64)).astype(np.int32),
            "doc_mask": np.ones((1, 2, batch, 64), np.int32)}
    step = jax.jit(make_train_step(graphdef, optimizer, settings), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, host).compile()
    plan = compiled.memory_analysis()
    out = {"mode": mode, "batch": batch, "mini_batch": mini, "compile_seconds": time.perf_counter() - t0,
           "xla_temp_mb": plan.temp_size_in_bytes / 2**20, "parameters": int(sum(x.size for x in
                                                                               jax.tree.leaves(params)))}
    if run:
        before = _hwm_mb()
        t0 = time.perf_counter()
        state, metrics = compiled(state, host)
        metrics = jax.device_get(metrics)
        out.update(before_step_peak_mb=before, peak_mb=_hwm_mb(), step_seconds=time.perf_counter() - t0,
                   loss=float(metrics["total"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one", nargs=3, metavar=("MODE", "BATCH", "MINI"))
    ap.add_argument("--no-run", action="store_true", help="with --one: compile only (XLA's plan)")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "cached.json"))
    args = ap.parse_args()
    if args.one:
        mode, batch, mini = args.one[0], int(args.one[1]), int(args.one[2])
        print(json.dumps(one(mode, batch, mini, run=not args.no_run)), flush=True)
        return
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv),
               "loadavg_before": open("/proc/loadavg").read().split()[:3], "rows": []}
    for mode, batch, mini in ROWS:
        cmd = [sys.executable, __file__, "--one", mode, str(batch), str(mini)]
        if mode == "plain" and batch == 4096:
            cmd.append("--no-run")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else \
            {"mode": mode, "batch": batch, "error": proc.stderr[-2000:]}
        print(json.dumps(row), flush=True)
        results["rows"].append(row)
    results["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
