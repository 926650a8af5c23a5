#!/usr/bin/env python3
"""jsplade vs sentence-transformers (PyTorch) on the same machine, same random v3-gte-shaped weights.

    python bench/run_benchmarks.py                  # (g), (b), (c), (a), (d); results in runs/bench/results.json
    python bench/run_benchmarks.py --only e,f       # the BERT-family figures (not in the default set)
    python bench/run_benchmarks.py --only a,c       # a subset
    python bench/run_benchmarks.py --layers 2       # a quick smoke run (not comparable)

Figures (each measurement runs in its own process, so peak memory is that of the measurement):
  (a) encoding 2,000 LIMIT documents (batch 32): documents/s
  (b) one training step, 16 (query, document) pairs at 256 tokens: seconds/step
  (c) encoding one 8192-token document: seconds and peak memory above the loaded model
  (d) a training step with 8192-token documents: the largest batch each side can run, its time and peak memory
  (e) (a) with a DistilBERT-base inference-free model (the doc-v3-distill shape, written by
      sentence-transformers over a seeded random DistilBertForMaskedLM): documents/s, peak memory, and the two
      sides' vectors of the first 16 documents compared
  (f) peak memory of encoding one 512-token document and a batch of 8 with an XLM-RoBERTa-base MLM
      (250,002-token vocabulary), jsplade's fused head against transformers' XLMRobertaForMaskedLM + the
      sentence-transformers SpladePooling module; both again at the 30,522-token vocabulary. Its steady
      state is a third call after malloc_trim (``f_measure``); jsplade adds XLA's buffer plan (temp bytes)
  (g) context: the model's float32 products one at a time, XLA:CPU against torch; with (a), the rate
      (a)'s 1.5× target would need ("a_float32_ceiling")
Both sides run float32; both are also measured in bfloat16 for (a), (c) and (e).
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
DISTILBERT_DIR = REPO / "runs" / "bench" / "model_distilbert"  # (e)
VECTORS_DIR = REPO / "runs" / "bench" / "vectors"  # (e), (f): each side's vectors, compared by the orchestrator
E_AGREE_DOCS = 16
F_LENGTH = 512
F_VOCABS = (250002, 30522)
F_BATCHES = (1, 8)


def xlmr_dir(vocab: int) -> Path:
    """(f)'s XLM-RoBERTa-base MLM folder with a ``vocab``-token vocabulary."""
    return REPO / "runs" / "bench" / f"model_xlmr_v{vocab}"


def vectors_path(task: str, side: str, dtype: str = "float32", vocab: int = 0, batch: int = 0) -> Path:
    return VECTORS_DIR / f"{task}_{side}_{dtype}_v{vocab}_b{batch}.npy"


def max_rel(actual, expected) -> float:
    """max |actual − expected| / max |expected| (relative to the vectors' scale)."""
    import numpy as np

    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-30))
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
def worker_jsplade(task: str, batch: int, dtype: str = "float32", vocab: int = 0) -> dict:
    import jax
    import numpy as np

    from jsplade import SparseEncoder

    if task == "f":
        return worker_jsplade_f(batch, vocab)
    enc = SparseEncoder.from_pretrained(DISTILBERT_DIR if task == "e" else MODEL_DIR)
    enc.model.mlm.with_compute(dtype=dtype)  # bfloat16: bf16 matmuls, float32 weights/softmax/norms
    if task in ("a", "e"):
        docs = limit_documents(2000)
        enc.encode_document(docs[:256], batch_size=32)  # compile the shapes the corpus uses
        t = time.perf_counter()
        with PeakMemory() as mem:
            enc.encode_document(docs, batch_size=32)
        dt = time.perf_counter() - t
        lengths = [len(ids) for ids in enc.document_tokenizer.encode_documents(docs, enc.max_seq_length)[0]]
        out = {"docs_per_s": len(docs) / dt, "seconds": dt, "peak_mb": mem.peak_above_start / 2**20,
               "tokens": sum(lengths)}
        if task == "a":
            out["model_tflop"] = sum(n * model_flops_per_token(n) for n in lengths) / 1e12
        else:  # after the measurement: the vectors of the first documents, for the orchestrator to compare
            _save_vectors(vectors_path("e", "jsplade", dtype), enc.encode_document(docs[:E_AGREE_DOCS], dense=True))
        return out
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


def _save_vectors(path: Path, vectors) -> None:
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(vectors, np.float32))


def f_inputs(batch: int, vocab: int):
    """(f)'s input: ``batch`` documents of ``F_LENGTH`` real tokens (no padding): <s>, seeded random ids of
    the vocabulary (specials and <mask> left out), </s>; and their all-ones attention mask. int32."""
    import numpy as np

    ids = np.random.default_rng(0).integers(4, vocab - 1, size=(batch, F_LENGTH)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 0, 2
    return ids, np.ones_like(ids)


def _malloc_trim() -> None:
    """Hand the heap memory glibc keeps after frees back to the kernel (``malloc_trim(0)``), so that a call
    reusing it shows up in the resident set again."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)


def f_measure(call) -> dict:
    """(f)'s three calls of ``call`` (which returns the vectors as numpy): the first (compilation, first
    allocations, weights faulted in), the second as (c) measures it (the memory the first call freed and
    the allocator kept is reused unseen, so this is a lower bound), and a third after ``_malloc_trim`` —
    the steady-state figure: every buffer it needs is faulted in afresh and counted."""
    loaded = _rss()
    t = time.perf_counter()
    call()
    out = {"first_call_seconds": time.perf_counter() - t, "first_peak_mb": (_hwm() - loaded) / 2**20,
           "loaded_rss_mb": loaded / 2**20}
    t = time.perf_counter()
    with PeakMemory() as mem:
        call()
    out.update(seconds=time.perf_counter() - t, steady_untrimmed_peak_mb=mem.peak_above_start / 2**20)
    _malloc_trim()
    t = time.perf_counter()
    with PeakMemory() as mem:
        vectors = call()
    out.update(trimmed_seconds=time.perf_counter() - t, steady_peak_mb=mem.peak_above_start / 2**20,
               trimmed_start_rss_mb=mem.start / 2**20)
    return out, vectors


def worker_jsplade_f(batch: int, vocab: int) -> dict:
    """(f) jsplade: ``SpladeModel.encode_documents`` of the loaded MLM (max pooling, log1p_relu) through the
    fused head, jit-compiled; the first call compiles, the second is the steady state."""
    import jax
    import numpy as np
    from flax import nnx

    from jsplade import load_mlm
    from jsplade.splade.model import SpladeModel

    mlm = load_mlm(xlmr_dir(vocab))
    assert mlm.compute.head == "fused" and mlm.compute.dtype == "float32", mlm.compute
    model = SpladeModel(mlm, None, "max", "log1p_relu")
    graphdef, state = nnx.split(model)
    params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    pool = jax.jit(lambda st, ids, mask: nnx.merge(graphdef, st).encode_documents(ids, mask))
    ids, mask = f_inputs(batch, vocab)
    out, vectors = f_measure(lambda: np.asarray(jax.block_until_ready(pool(state, ids, mask))))
    _save_vectors(vectors_path("f", "jsplade", "float32", vocab, batch), vectors)
    # XLA's own account of the compiled program's buffers (after the measurements: compiling again costs memory)
    analysis = pool.lower(state, ids, mask).compile().memory_analysis()
    out["xla_temp_mb"] = analysis.temp_size_in_bytes / 2**20
    out["xla_output_mb"] = analysis.output_size_in_bytes / 2**20
    return {**out, "parameters": params, "weights_mb": params * 4 / 2**20, "vocab": vocab, "batch": batch,
            "length": F_LENGTH}


def worker_reference_f(batch: int, vocab: int) -> dict:
    """(f) the reference: transformers' XLMRobertaForMaskedLM forward (what sentence-transformers'
    MLMTransformer runs: its logits become the features' token_embeddings) and sentence-transformers' own
    SpladePooling("max", "log1p_relu") module on them, eval mode, under inference_mode."""
    import torch
    from sentence_transformers.sparse_encoder.modules import SpladePooling
    from transformers import XLMRobertaForMaskedLM

    model = XLMRobertaForMaskedLM.from_pretrained(str(xlmr_dir(vocab)), dtype=torch.float32).eval()
    pooling = SpladePooling("max", activation_function="log1p_relu").eval()
    params = sum(p.numel() for p in model.parameters())  # the tied decoder weight counted once
    ids, mask = (torch.from_numpy(a.astype("int64")) for a in f_inputs(batch, vocab))

    def encode():
        with torch.inference_mode():
            features = {"input_ids": ids, "attention_mask": mask}
            features["token_embeddings"] = model(input_ids=ids, attention_mask=mask).logits
            return pooling(features)["sentence_embedding"]

    out, vectors = f_measure(lambda: encode().numpy())
    _save_vectors(vectors_path("f", "st", "float32", vocab, batch), vectors)
    return {**out, "parameters": params, "weights_mb": params * 4 / 2**20,
            "logits_mb": batch * F_LENGTH * vocab * 4 / 2**20, "vocab": vocab, "batch": batch, "length": F_LENGTH}


def worker_st(task: str, batch: int, dtype: str, vocab: int = 0) -> dict:
    import torch

    torch.manual_seed(0)
    if task == "f":
        return worker_reference_f(batch, vocab)
    from sentence_transformers import SparseEncoder as STEncoder

    kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bfloat16" else {}
    st = STEncoder(str(DISTILBERT_DIR if task == "e" else MODEL_DIR), device="cpu", **kwargs)
    if task in ("a", "e"):
        docs = limit_documents(2000)
        st.encode_document(docs[:64], batch_size=32)
        t = time.perf_counter()
        with PeakMemory() as mem:
            st.encode_document(docs, batch_size=32)
        dt = time.perf_counter() - t
        if task == "e":
            dense = st.encode_document(docs[:E_AGREE_DOCS], convert_to_tensor=True, convert_to_sparse_tensor=False)
            _save_vectors(vectors_path("e", "st", dtype), dense.float().numpy())
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
def _clear_vectors(*paths: Path) -> None:
    for path in paths:  # a worker that fails must not leave an earlier run's vectors to be compared
        path.unlink(missing_ok=True)


def _load_vectors(path: Path):
    import numpy as np

    return np.load(path) if path.exists() else None


def compare_vectors(ours, reference) -> dict:
    """max |Δ| / max |reference| over all rows, the worst row's own figure, and where the two sides'
    nonzero entries differ."""
    import numpy as np

    rows = [max_rel(a, b) for a, b in zip(ours, reference)]
    return {"rows": len(rows), "max_rel": max_rel(ours, reference), "worst_row_max_rel": max(rows),
            "nonzero_per_row_jsplade": float(np.mean((ours > 0).sum(1))),
            "nonzero_per_row_reference": float(np.mean((reference > 0).sum(1))),
            "support_mismatches": int(((ours > 0) != (reference > 0)).sum())}


def e_agreement() -> dict:
    """(e): jsplade's vectors of the first ``E_AGREE_DOCS`` documents against sentence-transformers', per
    dtype, from the workers' files."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        ours, ref = (_load_vectors(vectors_path("e", side, dtype)) for side in ("jsplade", "st"))
        out[dtype] = compare_vectors(ours, ref) if ours is not None and ref is not None else {"missing": True}
    return out


def run_f() -> dict:
    """(f): each side at each vocabulary and batch in its own process; the two sides' vectors compared."""
    out: dict = {}
    for vocab in F_VOCABS:
        for batch in F_BATCHES:
            key = f"v{vocab}_b{batch}"
            _clear_vectors(*(vectors_path("f", side, "float32", vocab, batch) for side in ("jsplade", "st")))
            out[key] = {side: run_worker(side, "f", batch, vocab=vocab) for side in ("jsplade", "st")}
            ours, ref = (_load_vectors(vectors_path("f", side, "float32", vocab, batch)) for side in ("jsplade", "st"))
            if ours is not None and ref is not None:
                out[key]["agreement"] = compare_vectors(ours, ref)
            print(f"(f) {key}: {out[key]}", flush=True)
    js = {k: v["jsplade"].get("steady_peak_mb") for k, v in out.items()}
    for batch in F_BATCHES:
        big, small = js.get(f"v{F_VOCABS[0]}_b{batch}"), js.get(f"v{F_VOCABS[1]}_b{batch}")
        if big is not None and small is not None:
            out[f"jsplade_steady_peak_growth_mb_b{batch}"] = big - small
    return out


def run_worker(side: str, task: str, batch: int, dtype: str = "float32", timeout: int = 3600, vocab: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--worker", side, "--task", task, "--batch", str(batch), "--dtype", dtype,
           "--vocab", str(vocab)]
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
    ap.add_argument("--vocab", type=int, default=0, help="(f) worker: the vocabulary size of the model")
    args = ap.parse_args()
    if args.worker:
        if args.task == "g":
            out = worker_gemm()
        else:
            out = worker_jsplade(args.task, args.batch, args.dtype, args.vocab) if args.worker == "jsplade" else \
                worker_st(args.task, args.batch, args.dtype, args.vocab)
        print(json.dumps(out))
        return 0

    from bench_model import build_bench_model, build_distilbert_bench_model, build_xlmr_mlm

    tasks = args.only.split(",")
    if set(tasks) & {"a", "b", "c", "d"}:
        build_bench_model(MODEL_DIR, num_layers=args.layers)
    if "e" in tasks:
        build_distilbert_bench_model(DISTILBERT_DIR, num_layers=min(args.layers, 6))
    if "f" in tasks:
        for vocab in F_VOCABS:
            build_xlmr_mlm(xlmr_dir(vocab), num_layers=args.layers, vocab_size=vocab)
    results: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "layers": args.layers,
                     "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
                     "command": " ".join(sys.argv)}
    results["loadavg"] = {}  # 1, 5 and 15-minute load averages around each task (other work on the machine)
    for task in tasks:
        load_before = os.getloadavg()
        if task in ("a", "c", "e"):
            if task == "e":
                _clear_vectors(*(vectors_path("e", side, dtype) for side in ("jsplade", "st")
                                 for dtype in ("float32", "bfloat16")))
            results[task] = {
                "jsplade": run_worker("jsplade", task, 1),
                "jsplade_bfloat16": run_worker("jsplade", task, 1, "bfloat16"),
                "st_float32": run_worker("st", task, 1, "float32"),
                "st_bfloat16": run_worker("st", task, 1, "bfloat16"),
            }
            if task == "e":
                results["e"]["agreement"] = e_agreement()
        elif task == "f":
            results["f"] = run_f()
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
        results["loadavg"][task] = {"before": load_before, "after": os.getloadavg()}
        ceiling = a_ceiling(results)
        if ceiling:
            results["a_float32_ceiling"] = ceiling
        print(json.dumps({task: results.get(task)}, indent=1), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
