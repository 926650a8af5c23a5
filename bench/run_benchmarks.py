#!/usr/bin/env python3
"""jsplade vs sentence-transformers (PyTorch) on the same machine, same random v3-gte-shaped weights.

    python bench/run_benchmarks.py                  # all four figures, results in runs/bench/results.json
    python bench/run_benchmarks.py --only a,c       # a subset
    python bench/run_benchmarks.py --layers 2       # a quick smoke run (not comparable)

Figures (each measurement runs in its own process, so peak memory is that of the measurement):
  (a) encoding 2,000 LIMIT documents (batch 32): documents/s
  (b) one training step, 16 (query, document) pairs at 256 tokens: seconds/step
  (c) encoding one 8192-token document: seconds and peak memory above the loaded model
  (d) a training step with 8192-token documents: the largest batch each side can run, its time and peak memory
  (g) context: the model's float32 products one at a time, XLA:CPU against torch; with (a), the rate
      (a)'s 1.5× target would need ("a_float32_ceiling")
Both sides run float32; both are also measured in bfloat16 for (a) and (c).
Peak memory = the kernel's high-water mark of the resident set (VmHWM, reset when the measurement starts)
minus the RSS at that moment (the loaded model and framework are excluded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from bench_data import limit_documents, long_text, model_flops_per_token  # noqa: E402
MODEL_DIR = REPO / "runs" / "bench" / "model"
# XLA:CPU's default scheduler runs independent operations side by side and keeps their buffers alive
# together: an 8192-token encode needs 836 MB of temporaries with it, 224 MB without, at the same speed.
JSPLADE_XLA_FLAGS = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
MEM_LIMIT_BYTES = 21 * 1024**3  # leave room on a 24 GiB machine; a side that needs more "cannot"


# --------------------------------------------------------------------------- measurement helpers
def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    """The process's peak resident set size so far (VmHWM), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakMemory:
    """Peak resident set size over a block, from the kernel's own high-water mark (VmHWM, reset on entry
    through /proc/self/clear_refs), so measuring costs nothing while the block runs. (An earlier version
    sampled RSS every 2 ms from a thread, which on 2 cores preempts the compute threads: the 16 × 256 training
    step ran about 10% slower under it, on both sides.) A watchdog thread checks the limit twice a second."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval):
            if _rss() > MEM_LIMIT_BYTES:
                os._exit(137)  # treat as out of memory

    def __enter__(self):
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.start = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(_hwm(), _rss())

    @property
    def peak_above_start(self) -> int:
        return self.peak - self.start


def pairs(n: int) -> list[tuple[str, str]]:
    docs = limit_documents(n)
    return [(f"Who likes {d.split(' likes ')[1].split(',')[0]}?", d * 3) for d in docs]


# --------------------------------------------------------------------------- workers
def worker_jsplade(task: str, batch: int, dtype: str = "float32") -> dict:
    import jax
    import numpy as np

    from jsplade import SparseEncoder

    enc = SparseEncoder.from_pretrained(MODEL_DIR)
    enc.model.mlm.with_compute(dtype=dtype)  # bfloat16: bf16 matmuls, float32 weights/softmax/norms
    if task == "a":
        docs = limit_documents(2000)
        enc.encode_document(docs[:256], batch_size=32)  # compile the shapes the corpus uses
        t = time.perf_counter()
        with PeakMemory() as mem:
            enc.encode_document(docs, batch_size=32)
        dt = time.perf_counter() - t
        lengths = [len(ids) for ids in enc.document_tokenizer.encode_documents(docs, enc.max_seq_length)[0]]
        return {"docs_per_s": len(docs) / dt, "seconds": dt, "peak_mb": mem.peak_above_start / 2**20,
                "tokens": sum(lengths), "model_tflop": sum(n * model_flops_per_token(n) for n in lengths) / 1e12}
    if task == "c":
        text = long_text(12000)
        loaded = _rss()
        enc.encode_document([text])  # first call: compiles, allocates
        first_peak = _hwm() - loaded
        t = time.perf_counter()
        with PeakMemory() as mem:
            enc.encode_document([text])
        dt = time.perf_counter() - t
        return {"seconds": dt, "peak_mb": first_peak / 2**20, "steady_peak_mb": mem.peak_above_start / 2**20}
    # training steps
    from jsplade.training.trainer import StepSettings, collate, make_train_step
    from jsplade.training.optim import make_optimizer
    from flax import nnx
    import jax.numpy as jnp

    length = 256 if task == "b" else 8192
    rows = pairs(batch) if task == "b" else [(q, long_text(12000)) for q, _ in pairs(batch)]
    if task == "d":
        enc.model.mlm.with_compute(remat=True, head_chunk=512, attention="blockwise")
    settings = StepSettings(total_steps=100, learning_rate=5e-5, warmup_steps=0, lambda_d=3e-5, lambda_q=5e-5,
                            regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3)
    graphdef, params = nnx.split(enc.model, nnx.Param)
    opt = make_optimizer(lambda s: 5e-5)
    step = jax.jit(make_train_step(graphdef, opt, settings), donate_argnums=0)
    state = {"params": params, "opt": opt.init(params), "step": jnp.asarray(50, jnp.int32),
             "rng": jax.random.key_data(jax.random.key(0))}
    data = collate(enc, rows, [list(range(batch))], None, length)
    assert data["doc_ids"].shape[-1] == length, data["doc_ids"].shape
    loaded = _rss()
    t0 = time.perf_counter()
    state, m = step(state, data)  # compile + first step
    jax.block_until_ready(m)
    first_seconds = time.perf_counter() - t0
    first_peak = _hwm() - loaded
    if task == "d" and batch > 1:  # larger batches: does it fit, and its peak (one step, compile included)
        return {"first_step_seconds_with_compile": first_seconds, "peak_mb": first_peak / 2**20, "batch": batch}
    times = []
    with PeakMemory() as mem:
        for _ in range(2 if task == "b" else 1):
            t = time.perf_counter()
            state, m = step(state, data)
            jax.block_until_ready(m)
            times.append(time.perf_counter() - t)
    return {"seconds_per_step": float(np.median(times)), "peak_mb": max(first_peak, mem.peak - loaded) / 2**20,
            "batch": batch}


def worker_st(task: str, batch: int, dtype: str) -> dict:
    import torch

    torch.manual_seed(0)
    from sentence_transformers import SparseEncoder as STEncoder

    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bfloat16" else {}
    st = STEncoder(str(MODEL_DIR), device="cpu", **kwargs)
    if task == "a":
        docs = limit_documents(2000)
        st.encode_document(docs[:64], batch_size=32)
        t = time.perf_counter()
        with PeakMemory() as mem:
            st.encode_document(docs, batch_size=32)
        dt = time.perf_counter() - t
        return {"docs_per_s": len(docs) / dt, "seconds": dt, "peak_mb": mem.peak_above_start / 2**20}
    if task == "c":
        text = long_text(12000)
        loaded = _rss()
        st.encode_document([text])  # first call
        first_peak = _hwm() - loaded
        t = time.perf_counter()
        with PeakMemory() as mem:
            st.encode_document([text])
        dt = time.perf_counter() - t
        return {"seconds": dt, "peak_mb": first_peak / 2**20, "steady_peak_mb": mem.peak_above_start / 2**20}
    # training steps through the reference trainer
    from datasets import Dataset
    from sentence_transformers.sparse_encoder import SparseEncoderTrainer, SparseEncoderTrainingArguments
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss
    from transformers import TrainerCallback

    length = 256 if task == "b" else 8192
    st.max_seq_length = length
    rows = pairs(batch) if task == "b" else [(q, long_text(12000)) for q, _ in pairs(batch)]
    ds = Dataset.from_dict({"query": [q for q, _ in rows], "document": [d for _, d in rows]})
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    steps = 3 if task == "b" else 2
    args = SparseEncoderTrainingArguments(
        output_dir=str(REPO / "runs" / "bench" / "st_trainer"), per_device_train_batch_size=batch,
        max_steps=steps, learning_rate=5e-5, report_to=[], save_strategy="no", logging_steps=1000,
        router_mapping={"query": "query", "document": "document"}, bf16=False, use_cpu=True,
        dataloader_drop_last=False, disable_tqdm=True)
    loss = SpladeLoss(st, SparseMultipleNegativesRankingLoss(st), document_regularizer_weight=3e-5,
                      query_regularizer_weight=5e-5)
    trainer = SparseEncoderTrainer(model=st, args=args, train_dataset=ds, loss=loss, callbacks=[Timer()])
    loaded = _rss()
    with PeakMemory() as mem:
        trainer.train()
    return {"seconds_per_step": float(sorted(times[1:])[len(times[1:]) // 2]),
            "peak_mb": max(_hwm(), mem.peak) / 2**20 - loaded / 2**20, "batch": batch}


# The model's float32 products at (a)'s usual batch (32 documents padded to 176 tokens): name → (in, out,
# how many per token in the 12-layer model: the attention-output shape also serves the MLM head's transform).
GEMM_TOKENS = 32 * 176
GEMM_SHAPES = {"qkv": (768, 2304, 12), "attention out / head transform": (768, 768, 13),
               "GLU up/gate": (768, 6144, 12), "down": (3072, 768, 12), "vocabulary": (768, 30522, 1)}


# (g) only: glibc keeps freed memory in one arena for reuse (no fresh pages per product result).
GEMM_MALLOC_ENV = {"MALLOC_ARENA_MAX": "1", "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def worker_gemm() -> dict:
    """(g): the model's float32 projections (attention's own products aside), one at a time, XLA:CPU against
    torch (oneDNN) on this machine, best of five; and each side's rate over all of them weighted by the
    model's use (the speed the model's arithmetic would run at if nothing else took time).

    Run with ``GEMM_MALLOC_ENV`` (``run_worker`` sets it): glibc then keeps freed memory for reuse instead of
    mapping every result above 32 MB afresh, whose pages each product would otherwise fault in first
    (15–20% of a [5632, 768] · [768, 6144] product's time here, on both sides).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)

    rng = np.random.default_rng(0)
    out: dict = {"tokens": GEMM_TOKENS, "shapes": {},
                 "malloc_env": {k: os.environ.get(k) for k in GEMM_MALLOC_ENV}}
    matmul = jax.jit(lambda x, w: jnp.dot(x, w, precision="highest"))
    for name, (d_in, d_out, _) in GEMM_SHAPES.items():
        x = rng.standard_normal((GEMM_TOKENS, d_in), dtype=np.float32)
        w = rng.standard_normal((d_in, d_out), dtype=np.float32)
        flop = 2 * GEMM_TOKENS * d_in * d_out
        jx, jw = jnp.asarray(x), jnp.asarray(w)
        tx, tw = torch.from_numpy(x), torch.from_numpy(w)
        out["shapes"][name] = {"xla_gflops": flop / best(lambda: matmul(jx, jw).block_until_ready()) / 1e9,
                               "torch_gflops": flop / best(lambda: tx @ tw) / 1e9}
    for side in ("xla", "torch"):
        flop = sum(d_in * d_out * uses for d_in, d_out, uses in GEMM_SHAPES.values())
        seconds = sum(d_in * d_out * uses / out["shapes"][name][f"{side}_gflops"]
                      for name, (d_in, d_out, uses) in GEMM_SHAPES.items())
        out[f"{side}_model_weighted_gflops"] = flop / seconds
    return out


def a_ceiling(results: dict) -> dict | None:
    """What (a)'s ≥ 1.5× target asks of this machine: the float32 rate at which jsplade would have to run
    the model's arithmetic for the corpus (real tokens only, no padding) to take 1/1.5 of the reference's
    time, against the model-weighted product rate of XLA:CPU (what a JAX program's products run on) and of
    torch/oneDNN ((g))."""
    a, g = results.get("a", {}), results.get("g", {})
    js, st = a.get("jsplade", {}), a.get("st_float32", {})
    if not all(k in d for d, k in ((js, "model_tflop"), (st, "seconds"), (g, "xla_model_weighted_gflops"))):
        return None
    needed = js["model_tflop"] * 1e3 / (st["seconds"] / 1.5)
    xla, torch_rate = g["xla_model_weighted_gflops"], g["torch_model_weighted_gflops"]
    return {"needed_gflops": needed, "xla_product_gflops": xla, "needed_over_xla": needed / xla,
            "torch_product_gflops": torch_rate, "needed_over_torch": needed / torch_rate}


# --------------------------------------------------------------------------- orchestration
def run_worker(side: str, task: str, batch: int, dtype: str = "float32", timeout: int = 3600) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--task", task, "--batch", str(batch), "--dtype", dtype]
    env = dict(os.environ)
    if side == "jsplade":  # the setting README recommends for jsplade on CPUs (see JSPLADE_XLA_FLAGS)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + JSPLADE_XLA_FLAGS).strip()
    if task == "g":
        env.update(GEMM_MALLOC_ENV)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"failed": True, "returncode": proc.returncode, "error": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="g,b,c,a,d")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d-sides", default="jsplade,st", help="sides measured in (d)")
    ap.add_argument("--d-max-batch", type=int, default=8, help="largest batch tried in (d)")
    ap.add_argument("--out", default=str(REPO / "runs" / "bench" / "results.json"))
    ap.add_argument("--worker", choices=["jsplade", "st"])
    ap.add_argument("--task")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    if args.worker:
        if args.task == "g":
            out = worker_gemm()
        else:
            out = worker_jsplade(args.task, args.batch, args.dtype) if args.worker == "jsplade" else \
                worker_st(args.task, args.batch, args.dtype)
        print(json.dumps(out))
        return 0

    from bench_model import build_bench_model

    build_bench_model(MODEL_DIR, num_layers=args.layers)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "layers": args.layers,
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                     "command": " ".join(sys.argv)}
    tasks = args.only.split(",")
    for task in tasks:
        if task in ("a", "c"):
            results[task] = {
                "jsplade": run_worker("jsplade", task, 1),
                "jsplade_bfloat16": run_worker("jsplade", task, 1, "bfloat16"),
                "st_float32": run_worker("st", task, 1, "float32"),
                "st_bfloat16": run_worker("st", task, 1, "bfloat16"),
            }
        elif task == "g":
            results["g"] = run_worker("jsplade", "g", 1)
        elif task == "b":
            results["b"] = {"jsplade": run_worker("jsplade", "b", 16), "st_float32": run_worker("st", "b", 16)}
        elif task == "d":
            found = {}
            for side in args.d_sides.split(","):
                attempts = []
                for b in [b for b in ((1, 2, 4, 8) if side == "jsplade" else (1, 2)) if b <= args.d_max_batch]:
                    r = run_worker(side, "d", b, timeout=5400)
                    print(f"(d) {side} batch {b}: {r}", flush=True)
                    attempts.append(r)
                    if r.get("failed"):
                        break
                fitted = [r["batch"] for r in attempts if not r.get("failed")]
                found[side] = {"largest_batch": max(fitted, default=0), "attempts": attempts}
            results["d"] = found
        ceiling = a_ceiling(results)
        if ceiling:
            results["a_float32_ceiling"] = ceiling
        print(json.dumps({task: results.get(task)}, indent=1), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
