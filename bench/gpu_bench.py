#!/usr/bin/env python3
"""One short, prepared GPU benchmark: training-step MFU of v3-gte in bfloat16 at 512 tokens, and the
ratio to sentence-transformers on the same card.

    python bench/gpu_bench.py                    # on a GPU machine (jax[cuda12] + torch with CUDA)
    python bench/gpu_bench.py --cpu-smoke        # a 2-layer, short run on CPU: checks the script itself

Model FLOPs (gte_architecture.md §7, matmuls only, multiply-add = 2): forward per token
F(L) = 2.746e8 + 3.69e4·L; a training step counts 3·F(L) per document token (remat excluded).
MFU = model FLOPs / step time / peak (H100 989 TFLOP/s, H200 989 TFLOP/s bf16 dense).
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "cpu": 1.0}


def model_flops_per_token(length: int, layers: int = 12, d: int = 768, inter: int = 3072, vocab: int = 30522) -> float:
    return layers * (8 * d * d + 6 * d * inter) + 4 * layers * length * d + 2 * d * d + 2 * d * vocab


def jsplade_step_time(model_dir: Path, batch: int, length: int, dtype: str, steps: int) -> float:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jsplade import SparseEncoder
    from jsplade.optim import make_optimizer
    from jsplade.trainer import StepSettings, make_train_step

    enc = SparseEncoder.from_pretrained(model_dir)
    enc.model.mlm.with_compute(dtype=dtype, attention="auto", precision="default" if dtype == "bfloat16" else "highest")
    settings = StepSettings(total_steps=100, learning_rate=2e-5, warmup_steps=0, lambda_d=3e-5, lambda_q=5e-5,
                            regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3, dropout=True)
    graphdef, params = nnx.split(enc.model, nnx.Param)
    opt = make_optimizer(lambda s: 2e-5)
    step = jax.jit(make_train_step(graphdef, opt, settings), donate_argnums=0)
    state = {"params": params, "opt": opt.init(params), "step": jnp.asarray(10, jnp.int32),
             "rng": jax.random.key_data(jax.random.key(0))}
    import numpy as np

    rng = np.random.default_rng(0)
    data = {"query_ids": rng.integers(1000, 30000, (1, batch, 16)).astype(np.int32),
            "query_mask": np.ones((1, batch, 16), np.int32),
            "doc_ids": rng.integers(1000, 30000, (1, 1, batch, length)).astype(np.int32),
            "doc_mask": np.ones((1, 1, batch, length), np.int32)}
    for _ in range(2):  # compile + warm-up
        state, m = step(state, data)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, data)
    jax.block_until_ready(m)
    return (time.perf_counter() - t) / steps


def st_step_time(model_dir: Path, batch: int, length: int, steps: int, bf16: bool) -> float:
    import torch
    from sentence_transformers import SparseEncoder as STEncoder
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    st = STEncoder(str(model_dir), device=device)
    st.max_seq_length = length
    loss = SpladeLoss(st, SparseMultipleNegativesRankingLoss(st), document_regularizer_weight=3e-5,
                      query_regularizer_weight=5e-5)
    opt = torch.optim.AdamW(st.parameters(), lr=2e-5)
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa " * (length // 10 + 2)).split()
    docs = [" ".join(words[: length - 2]) for _ in range(batch)]
    queries = [f"who likes {w}?" for w in words[:batch]]
    q = st.preprocess(queries, task="query")
    d = st.preprocess(docs, task="document")
    q = {k: v.to(device) if hasattr(v, "to") else v for k, v in q.items()}
    d = {k: v.to(device) if hasattr(v, "to") else v for k, v in d.items()}
    q["task"], d["task"] = "query", "document"
    st.train()

    def one():
        opt.zero_grad()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            # fresh dicts: sentence-transformers writes its outputs into the feature dict it is given
            value = loss([dict(q), dict(d)], None)
            total = sum(value.values()) if isinstance(value, dict) else value
        total.backward()
        opt.step()

    for _ in range(2):
        one()
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        one()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--card", default="H100", choices=sorted(PEAK_BF16))
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--skip-st", action="store_true")
    args = ap.parse_args()
    from bench_model import build_bench_model

    layers = 2 if args.cpu_smoke else 12
    if args.cpu_smoke:
        args.batch, args.length, args.steps, args.card = 2, 64, 1, "cpu"
    model_dir = build_bench_model(REPO / "runs" / "bench" / f"model_{layers}l", num_layers=layers)
    out = {"batch": args.batch, "length": args.length, "layers": layers, "card": args.card}
    flops = 3 * model_flops_per_token(args.length, layers=layers) * args.batch * args.length
    for dtype in ("bfloat16", "float32"):
        t = jsplade_step_time(model_dir, args.batch, args.length, dtype, args.steps)
        out[f"jsplade_{dtype}_s_per_step"] = t
        out[f"jsplade_{dtype}_mfu"] = flops / t / PEAK_BF16[args.card]
    if not args.skip_st:
        for bf16 in (True, False):
            name = "bfloat16" if bf16 else "float32"
            out[f"st_{name}_s_per_step"] = st_step_time(model_dir, args.batch, args.length, args.steps, bf16)
            out[f"speedup_vs_st_{name}"] = out[f"st_{name}_s_per_step"] / out[f"jsplade_{name}_s_per_step"]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
