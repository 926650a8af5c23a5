#!/usr/bin/env python3
"""The prepared GPU benchmark: one short script for a lent GPU machine (see BENCHMARKS.md, "GPU").

    python bench/gpu_bench.py --card H100 --out runs/gpu      # on the GPU machine (jax with CUDA, torch with CUDA)
    python bench/gpu_bench.py --cpu-smoke                     # 2 layers, tiny sizes, on CPU: checks this script

Sections, in order of priority, each in its own process (a GPU's memory belongs to one framework at a time),
stopped when ``--budget-s`` is spent:

* ``train``     jsplade training step, v3-gte shape, 512 tokens, bfloat16 and float32, several variants;
                MFU = model FLOPs / step time / peak. Model FLOPs (gte_architecture.md §7, matmuls only,
                multiply-add = 2): forward F(L) = 2.746e8 + 3.69e4·L per token; a training step counts
                3·F(L) per document token (rematerialisation and the static query side excluded). The
                reported step time is the mean of back-to-back steps (as a training loop runs them);
                ``synced_median_s`` is the median with a wait after every step (host latency included).
                The first variant is also profiled: GPU time per kernel family.
* ``cached``    the same step cached (GradCache, issue 17): ``--cached-batch`` rows (default 1,024) in mini-batches
                of ``--cached-mini`` (default 32), bfloat16, first in its process (so the device's peak memory is
                its own), then the one-pass step at the mini-batch size (the one-pass step at the full batch
                does not fit: 11.6 GB at batch 32 on the H100 run, linear in the batch). Its MFU counts the same model FLOPs (3·F(L) per document
                token): the second forward pass of each mini-batch is overhead, not model work.
* ``st_train``  the same step in sentence-transformers (SpladeLoss + SparseMNRL, AdamW; bfloat16 = autocast).
* ``checks``    on the GPU: cuDNN attention = XLA attention (values and gradients), fused head = plain head.
* ``encode``    (a) encoding 2,000 LIMIT documents, jsplade and sentence-transformers, documents/s.
* ``long``      (c) one 8192-token document: time and peak GPU memory above the loaded model.

Every result is one JSON object, appended to ``OUT/results.jsonl`` as it is measured; the last line printed
is a JSON summary.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))
from bench_data import limit_documents, long_text, model_flops_per_token  # noqa: E402
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "cpu": 1.0}


def detect_card() -> str:
    try:
        name = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        name = ""
    for card in ("H200", "H100", "A100"):
        if card in name:
            return card
    raise SystemExit(f"cannot tell the GPU's peak from nvidia-smi ({name.strip()!r}): pass --card")


def emit(record: dict) -> None:
    print("RESULT " + json.dumps(record), flush=True)


def synthetic_batch(batch: int, length: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {"query_ids": rng.integers(1000, 30000, (1, batch, 16)).astype(np.int32),
            "query_mask": np.ones((1, batch, 16), np.int32),
            "doc_ids": rng.integers(1000, 30000, (1, 1, batch, length)).astype(np.int32),
            "doc_mask": np.ones((1, 1, batch, length), np.int32)}


# --------------------------------------------------------------------------- jsplade workers
def _device_peak():
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use"), stats.get("bytes_in_use")


def profile_summary(trace_dir: Path, steps: int, top: int = 25) -> dict:
    """GPU (or CPU) time per kernel name from a perfetto trace written by jax.profiler."""
    paths = sorted(trace_dir.glob("plugins/profile/*/perfetto_trace.json.gz"))
    if not paths:
        return {"error": "no perfetto trace written"}
    events = json.load(gzip.open(paths[-1]))["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    gpu_pids = {pid for pid, name in names.items() if "/device:GPU" in name}
    per_name: dict[str, float] = {}
    for e in events:
        if e.get("ph") != "X" or (gpu_pids and e["pid"] not in gpu_pids):
            continue
        if not gpu_pids and not e["name"].startswith(("fusion", "dot", "convolution", "custom", "loop", "input")):
            continue
        per_name[e["name"]] = per_name.get(e["name"], 0.0) + e.get("dur", 0.0)
    total_ms = sum(per_name.values()) / 1e3 / steps
    families: dict[str, float] = {}
    for name, dur in per_name.items():
        fam = name.split(".")[0].split("(")[0][:60]
        families[fam] = families.get(fam, 0.0) + dur / 1e3 / steps
    ranked = sorted(per_name.items(), key=lambda kv: -kv[1])[:top]
    return {"kernel_ms_per_step": total_ms, "processes": sorted(set(names.values()))[:8],
            "top_kernels_ms_per_step": [[n[:120], round(d / 1e3 / steps, 3)] for n, d in ranked],
            "families_ms_per_step": sorted(([k, round(v, 3)] for k, v in families.items()), key=lambda kv: -kv[1])[:top]}


def worker_train(model_dir: Path, variants: list[dict], length: int, steps: int, card: str, layers: int,
                 out_dir: Path, profile_first: bool) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jsplade import SparseEncoder
    from jsplade.training.optim import make_optimizer
    from jsplade.training.trainer import StepSettings, make_train_step

    enc = SparseEncoder.from_pretrained(model_dir)
    base_params = nnx.state(enc.model, nnx.Param)
    for i, v in enumerate(variants):
        t_start = time.perf_counter()
        record = {"section": "train", "side": "jsplade", "length": length, "layers": layers, **v}
        try:
            batch = v["batch"]
            compute = {"dtype": v["dtype"], "precision": "default" if v["dtype"] == "bfloat16" else "highest",
                       **v.get("compute", {})}
            enc.model.mlm.with_compute(**compute)
            settings = StepSettings(total_steps=100, learning_rate=2e-5, warmup_steps=0, lambda_d=3e-5,
                                    lambda_q=5e-5, regularizer_schedule="quadratic", regularizer_warmup_ratio=1 / 3,
                                    dropout=v.get("dropout", True), cached_mini_batch_size=v.get("cached_mini"))
            n_steps = v.get("steps", steps)
            graphdef = nnx.graphdef(enc.model)
            params = jax.tree.map(jnp.copy, base_params)  # the step donates its state
            opt = make_optimizer(lambda s: 2e-5)
            step = jax.jit(make_train_step(graphdef, opt, settings), donate_argnums=0)
            state = {"params": params, "opt": opt.init(params), "step": jnp.asarray(10, jnp.int32),
                     "rng": jax.random.key_data(jax.random.key(0))}
            data = synthetic_batch(batch, length)
            t0 = time.perf_counter()
            state, m = step(state, data)
            jax.block_until_ready(m)
            record["first_step_s_incl_compile"] = time.perf_counter() - t0
            state, m = step(state, data)
            jax.block_until_ready(m)
            times = []
            for _ in range(n_steps):  # each step waited for: the distribution, host latency included
                t = time.perf_counter()
                state, m = step(state, data)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t)
            times.sort()
            t = time.perf_counter()
            for _ in range(n_steps):  # back to back, as a training loop runs: the figure reported
                state, m = step(state, data)
            jax.block_until_ready(m)
            sec = (time.perf_counter() - t) / n_steps
            flops = 3 * model_flops_per_token(length, layers=layers) * batch * length
            record.update(s_per_step=sec, synced_median_s=times[len(times) // 2], min_s=times[0], max_s=times[-1],
                          tokens_per_s=batch * length / sec,
                          mfu=flops / sec / PEAK_BF16[card], metrics={k: float(x) for k, x in m.items() if getattr(x, "size", 0) == 1})
            peak, in_use = _device_peak()
            record.update(device_peak_gb=None if peak is None else peak / 1e9)
            if profile_first and i == 0:
                trace_dir = out_dir / "trace_tmp"
                with jax.profiler.trace(str(trace_dir), create_perfetto_trace=True):
                    for _ in range(3):
                        state, m = step(state, data)
                    jax.block_until_ready(m)
                record["profile"] = profile_summary(trace_dir, 3)
                for p in trace_dir.glob("plugins/profile/*/perfetto_trace.json.gz"):
                    os.replace(p, out_dir / "jsplade_trace.json.gz")
                dumps = sorted(Path(os.environ.get("GPU_BENCH_HLO_DUMP", "/nonexistent")).glob(
                    "*train_step*after_optimizations.txt"), key=lambda q: q.stat().st_size)
                if dumps:  # the optimised HLO names the fusions the profile lists
                    with open(dumps[-1], "rb") as src, gzip.open(out_dir / "hlo_train_step.txt.gz", "wb") as dst:
                        dst.write(src.read())
            del state, step
        except Exception as exc:  # one variant failing must not lose the others
            record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        record["wall_s"] = time.perf_counter() - t_start
        emit(record)


def worker_st_train(model_dir: Path, variants: list[dict], length: int, steps: int) -> None:
    import torch
    from sentence_transformers import SparseEncoder as STEncoder
    from sentence_transformers.sparse_encoder.losses import SparseMultipleNegativesRankingLoss, SpladeLoss

    device = "cuda" if torch.cuda.is_available() else "cpu"
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa " * (length // 10 + 2)).split()
    for v in variants:
        t_start = time.perf_counter()
        batch, bf16 = v["batch"], v["dtype"] == "bfloat16"
        record = {"section": "st_train", "side": "st", "length": length, **v}
        try:
            torch.manual_seed(0)
            st = STEncoder(str(model_dir), device=device)
            st.max_seq_length = length
            loss = SpladeLoss(st, SparseMultipleNegativesRankingLoss(st), document_regularizer_weight=3e-5,
                              query_regularizer_weight=5e-5)
            opt = torch.optim.AdamW(st.parameters(), lr=2e-5)
            docs = [" ".join(words[: length - 2]) for _ in range(batch)]
            queries = [f"who likes {w}?" for w in words[:batch]]
            q = st.preprocess(queries, task="query")
            d = st.preprocess(docs, task="document")
            q = {k: t.to(device) if hasattr(t, "to") else t for k, t in q.items()}
            d = {k: t.to(device) if hasattr(t, "to") else t for k, t in d.items()}
            q["task"], d["task"] = "query", "document"
            record["doc_tokens"] = int(d["input_ids"].shape[-1])
            st.train()

            def one():
                opt.zero_grad()
                with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
                    # fresh dicts: sentence-transformers writes its outputs into the feature dict it is given
                    value = loss([dict(q), dict(d)], None)
                    total = sum(value.values()) if isinstance(value, dict) else value
                total.backward()
                opt.step()

            def sync():
                if device == "cuda":
                    torch.cuda.synchronize()

            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(2):
                one()
            sync()
            times = []
            for _ in range(steps):
                t = time.perf_counter()
                one()
                sync()
                times.append(time.perf_counter() - t)
            times.sort()
            t = time.perf_counter()
            for _ in range(steps):
                one()
            sync()
            record.update(s_per_step=(time.perf_counter() - t) / steps, synced_median_s=times[len(times) // 2],
                          min_s=times[0], max_s=times[-1])
            if device == "cuda":
                record["device_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            del st, opt, loss
            if device == "cuda":
                torch.cuda.empty_cache()
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        record["wall_s"] = time.perf_counter() - t_start
        emit(record)


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def worker_checks() -> None:
    """Numerics on the accelerator: the GPU-only kernels against the plain XLA paths."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jsplade.backbones.layers.attention import attention, resolve_impl
    from jsplade.splade.fused_head import fused_splade_pool, mask_to_group
    from jsplade.splade.pooling import splade_pool

    rng = np.random.default_rng(7)
    b, length, h, k = 4, 512, 12, 64
    mask = np.ones((b, length), np.int32)
    mask[1, 300:] = 0
    mask[3, 17:] = 0
    for impl in ("cudnn", "blockwise"):
        record = {"section": "checks", "check": f"attention_{impl}_vs_xla"}
        try:
            dtype = jnp.bfloat16 if impl == "cudnn" else jnp.float32
            record["runs_as"] = resolve_impl(impl, length, dtype, False, False, 2048)
            q, kk, v, w = (jnp.asarray(rng.standard_normal((b, length, h, k)), dtype) for _ in range(4))
            prec = None if impl == "cudnn" else jax.lax.Precision.HIGHEST

            def loss(q, kk, v, which):
                out = attention(q, kk, v, jnp.asarray(mask), impl=which, precision=prec)
                return jnp.sum((out.astype(jnp.float32) * w.astype(jnp.float32)) * jnp.asarray(mask)[:, :, None, None])

            fast = jax.jit(jax.value_and_grad(lambda *a: loss(*a, impl), argnums=(0, 1, 2)))
            # reference in float32 from the same (rounded) inputs
            (vf, gf), (vr, gr) = fast(q, kk, v), jax.jit(jax.value_and_grad(
                lambda q, kk, v: loss(q.astype(jnp.float32), kk.astype(jnp.float32), v.astype(jnp.float32), "xla"),
                argnums=(0, 1, 2)))(q, kk, v)
            out_fast = jax.jit(lambda q, kk, v: attention(q, kk, v, jnp.asarray(mask), impl=impl, precision=prec))(q, kk, v)
            out_ref = jax.jit(lambda q, kk, v: attention(q.astype(jnp.float32), kk.astype(jnp.float32),
                                                         v.astype(jnp.float32), jnp.asarray(mask), impl="xla",
                                                         precision=jax.lax.Precision.HIGHEST))(q, kk, v)
            real = mask.astype(bool)
            record.update(dtype=str(jnp.dtype(dtype)), out_rel=_rel(np.asarray(out_fast, np.float32)[real],
                                                                    np.asarray(out_ref)[real]),
                          grad_rel=[_rel(np.asarray(a, np.float32), np.asarray(c)) for a, c in zip(gf, gr)],
                          value_rel=_rel(vf, vr))
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
        emit(record)

    record = {"section": "checks", "check": "fused_head_vs_plain_float32"}
    try:
        b, length, d, vocab = 4, 256, 768, 30522
        feats = jnp.asarray(rng.standard_normal((b, length, d)) * 0.05, jnp.float32)
        weight = jnp.asarray(rng.standard_normal((vocab, d)) * 0.05, jnp.float32)
        bias = jnp.asarray(rng.standard_normal(vocab) * 0.1, jnp.float32)
        m = jnp.asarray(mask[:, :length])
        up = jnp.asarray(rng.standard_normal((b, vocab)), jnp.float32)
        hp = jax.lax.Precision.HIGHEST

        def fused(f, wt, bs):
            return jnp.sum(fused_splade_pool(f, wt, bs, mask_to_group(m), precision=hp)[:, 0] * up)

        def plain(f, wt, bs):
            logits = jnp.einsum("bld,vd->blv", f, wt, precision=hp) + bs
            return jnp.sum(splade_pool(logits, m) * up)

        vf, gf = jax.jit(jax.value_and_grad(fused, argnums=(0, 1, 2)))(feats, weight, bias)
        vp, gp = jax.jit(jax.value_and_grad(plain, argnums=(0, 1, 2)))(feats, weight, bias)
        record.update(value_rel=_rel(vf, vp), grad_rel=[_rel(a, c) for a, c in zip(gf, gp)])
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    emit(record)


def worker_encode(model_dir: Path, side: str, dtype: str, n_docs: int, batch: int) -> None:
    docs = limit_documents(n_docs)
    record = {"section": "encode", "side": side, "dtype": dtype, "docs": len(docs), "batch": batch}
    try:
        if side == "jsplade":
            from jsplade import SparseEncoder

            enc = SparseEncoder.from_pretrained(model_dir)
            enc.model.mlm.with_compute(dtype=dtype, precision="default" if dtype == "bfloat16" else "highest")
            enc.encode_document(docs, batch_size=batch)  # compiles every bucket shape the corpus uses
            t = time.perf_counter()
            enc.encode_document(docs, batch_size=batch)
            dt = time.perf_counter() - t
        else:
            import torch
            from sentence_transformers import SparseEncoder as STEncoder

            device = "cuda" if torch.cuda.is_available() else "cpu"
            kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bfloat16" else {}
            st = STEncoder(str(model_dir), device=device, **kwargs)
            st.encode_document(docs[: 4 * batch], batch_size=batch)
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            st.encode_document(docs, batch_size=batch)
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        record.update(seconds=dt, docs_per_s=len(docs) / dt)
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    emit(record)


def worker_long(model_dir: Path, side: str, dtype: str, n_words: int) -> None:
    text = long_text(n_words)
    record = {"section": "long", "side": side, "dtype": dtype}
    try:
        if side == "jsplade":
            import jax

            from jsplade import SparseEncoder

            enc = SparseEncoder.from_pretrained(model_dir)
            enc.model.mlm.with_compute(dtype=dtype, precision="default" if dtype == "bfloat16" else "highest")
            record["tokens"] = len(enc.document_tokenizer.encode_documents([text], enc.max_seq_length)[0][0])
            _, loaded = _device_peak()
            enc.encode_document([text])
            peak_first, _ = _device_peak()
            t = time.perf_counter()
            enc.encode_document([text])
            dt = time.perf_counter() - t
            if loaded is not None:
                record["device_peak_above_model_gb"] = (peak_first - loaded) / 1e9
            record["backend"] = jax.default_backend()
        else:
            import torch
            from sentence_transformers import SparseEncoder as STEncoder

            device = "cuda" if torch.cuda.is_available() else "cpu"
            kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bfloat16" else {}
            st = STEncoder(str(model_dir), device=device, **kwargs)
            loaded = torch.cuda.memory_allocated() if device == "cuda" else None
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            st.encode_document([text])
            if device == "cuda":
                torch.cuda.synchronize()
                record["device_peak_above_model_gb"] = (torch.cuda.max_memory_allocated() - loaded) / 1e9
            t = time.perf_counter()
            st.encode_document([text])
            if device == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t
        record["seconds"] = dt
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
    emit(record)


# --------------------------------------------------------------------------- orchestration
def plan(args) -> list[tuple[str, dict]]:
    """(worker, kwargs) in priority order: what the issue asks for first (bfloat16 training MFU and its ratio
    to sentence-transformers), then the larger batch, numerics, (a) and (c) in bfloat16, then the rest."""
    b, b2 = args.batch, 2 * args.batch
    common = {"length": args.length, "steps": args.steps}

    def train(*variants, profile=False):
        return ("train", {"variants": list(variants), "profile_first": profile, **common})

    def st_train(*variants):
        return ("st_train", {"variants": list(variants), **common})

    big, mini = args.cached_batch, args.cached_mini
    cached = ("cached", {"variants": [
        {"name": f"bf16_cached_b{big}_m{mini}", "batch": big, "dtype": "bfloat16", "cached_mini": mini,
         "steps": args.cached_steps},
        {"name": f"bf16_onepass_b{mini}", "batch": mini, "dtype": "bfloat16"}],
        "profile_first": False, **common})

    def encode(side, dtype):
        return ("encode", {"side": side, "dtype": dtype, "n_docs": args.docs, "batch": 32})

    def long(side, dtype):
        return ("long", {"side": side, "dtype": dtype, "n_words": args.long_words})

    return [
        train({"name": "bf16_default", "batch": b, "dtype": "bfloat16"}, profile=True),
        cached,
        st_train({"batch": b, "dtype": "bfloat16"}, {"batch": b, "dtype": "float32"}),
        train({"name": "bf16_batch2x", "batch": b2, "dtype": "bfloat16"}),
        st_train({"batch": b2, "dtype": "bfloat16"}),
        ("checks", {}),
        encode("jsplade", "bfloat16"), encode("st", "bfloat16"),
        long("jsplade", "bfloat16"), long("st", "bfloat16"),
        train({"name": "f32_default", "batch": b, "dtype": "float32"},
              {"name": "bf16_no_dropout", "batch": b, "dtype": "bfloat16", "dropout": False},
              {"name": "bf16_head_plain", "batch": b, "dtype": "bfloat16", "compute": {"head": "plain"}}),
        encode("jsplade", "float32"), encode("st", "float32"),
        long("jsplade", "float32"), long("st", "float32"),
    ]


def run_worker(name: str, kwargs: dict, args, model_dir: Path, out_dir: Path, timeout: float) -> list[dict]:
    cmd = [sys.executable, __file__, "--worker", name, "--worker-args", json.dumps(kwargs), "--model-dir", str(model_dir),
           "--card", args.card, "--layers", str(args.layers), "--out", str(out_dir)]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    env.pop("JAX_PLATFORMS", None)  # the orchestrator's own setting (cpu) is not the workers'
    if args.cpu_smoke:
        env["JAX_PLATFORMS"] = "cpu"
    if kwargs.get("profile_first"):
        dump = Path("/tmp") / f"gpu_bench_hlo_{os.getpid()}"
        env["GPU_BENCH_HLO_DUMP"] = str(dump)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_dump_to={dump} --xla_dump_hlo_as_text"
                            " --xla_dump_hlo_module_re=.*train_step.*").strip()
    results = []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
        lines = proc.stdout.splitlines()
        if proc.returncode:
            results.append({"section": name, "worker_error": proc.returncode, "stderr": proc.stderr[-1500:]})
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        lines = out.splitlines()
        results.append({"section": name, "timeout_s": timeout, **{k: v for k, v in kwargs.items() if k != "variants"}})
    results = [json.loads(line[len("RESULT "):]) for line in lines if line.startswith("RESULT ")] + results
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    for r in results:
        print(json.dumps({k: v for k, v in r.items() if k != "profile"}), flush=True)
        prof = r.get("profile") or {}
        for key in ("families_ms_per_step", "top_kernels_ms_per_step"):
            for name, ms in prof.get(key, []):
                print(f"  {key[:8]} {ms:9.3f} ms  {name}", flush=True)
        if prof:
            print(f"  profiled kernel time per step: {prof.get('kernel_ms_per_step')}", flush=True)
    return results


def summarize(results: list[dict]) -> dict:
    out: dict = {}
    jt = {r["name"]: r for r in results if r.get("section") == "train" and "s_per_step" in r}
    st = {(r["batch"], r["dtype"]): r for r in results if r.get("section") == "st_train" and "s_per_step" in r}
    for name, r in jt.items():
        out[f"jsplade_{name}_s"] = r["s_per_step"]
        out[f"jsplade_{name}_mfu"] = r["mfu"]
        ref = st.get((r["batch"], r["dtype"]))
        if ref:
            out[f"speedup_vs_st_{name}"] = ref["s_per_step"] / r["s_per_step"]
    for name, r in jt.items():
        if r.get("cached_mini"):
            ref = next((o for o in jt.values() if not o.get("cached_mini") and o["batch"] == r["cached_mini"]
                        and o["dtype"] == r["dtype"]), None)
            if ref:
                out[f"{name}_mfu_over_onepass"] = r["mfu"] / ref["mfu"]
            if r.get("device_peak_gb") is not None:
                out[f"{name}_peak_gb"] = r["device_peak_gb"]
    for (batch, dtype), r in st.items():
        out[f"st_b{batch}_{dtype}_s"] = r["s_per_step"]
    for sec in ("encode", "long"):
        for r in results:
            if r.get("section") == sec and "seconds" in r:
                out[f"{sec}_{r['side']}_{r['dtype']}_s"] = r["seconds"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--long-words", type=int, default=12000)
    ap.add_argument("--card", default="auto", choices=["auto", *sorted(PEAK_BF16)],
                    help="peak used for MFU (auto: read the GPU's name from nvidia-smi)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this many seconds")
    ap.add_argument("--only", default="", help="comma-separated section names to run (default: all)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--cached-batch", type=int, default=1024, help="rows of the cached (GradCache) step")
    ap.add_argument("--cached-mini", type=int, default=32, help="rows per mini-batch of the cached step")
    ap.add_argument("--cached-steps", type=int, default=3, help="timed steps of each cached-section variant")
    ap.add_argument("--out", default=str(REPO / "runs" / "gpu"))
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--worker")
    ap.add_argument("--worker-args", default="{}")
    ap.add_argument("--model-dir")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    if args.worker:
        kw = json.loads(args.worker_args)
        model_dir = Path(args.model_dir)
        if args.worker in ("train", "cached"):
            worker_train(model_dir, kw["variants"], kw["length"], kw["steps"], args.card, args.layers, out_dir,
                         kw["profile_first"])
        elif args.worker == "st_train":
            worker_st_train(model_dir, kw["variants"], kw["length"], kw["steps"])
        elif args.worker == "checks":
            worker_checks()
        elif args.worker == "encode":
            worker_encode(model_dir, kw["side"], kw["dtype"], kw["n_docs"], kw["batch"])
        elif args.worker == "long":
            worker_long(model_dir, kw["side"], kw["dtype"], kw["n_words"])
        else:
            raise SystemExit(f"unknown worker {args.worker!r}")
        return 0

    if args.cpu_smoke:
        args.layers, args.batch, args.length, args.steps, args.card = 2, 2, 64, 1, "cpu"
        args.cached_batch, args.cached_mini, args.cached_steps = 8, 2, 1
        args.docs, args.long_words = 40, 600
    if args.card == "auto":
        args.card = detect_card()
    # This process only writes the model: keep JAX off the accelerator here (JAX would otherwise take 75% of
    # the GPU's memory for the whole run, which is what made the first GPU run's later variants run out).
    os.environ["JAX_PLATFORMS"] = "cpu"
    from bench_model import build_bench_model

    t0 = time.perf_counter()
    model_dir = build_bench_model(REPO / "runs" / "bench" / f"model_{args.layers}l", num_layers=args.layers)
    print(json.dumps({"model_built_s": round(time.perf_counter() - t0, 1)}), flush=True)
    only = {s for s in args.only.split(",") if s}
    results: list[dict] = []
    for name, kwargs in plan(args):
        if only and name not in only:
            continue
        left = args.budget_s - (time.perf_counter() - t0)
        if left < 20:
            results.append({"section": name, "skipped": "budget spent", **{k: v for k, v in kwargs.items()
                                                                          if k != "variants"}})
            print(json.dumps(results[-1]), flush=True)
            continue
        results += run_worker(name, kwargs, args, model_dir, out_dir, left)
    summary = {"card": args.card, "layers": args.layers, "batch": args.batch, "length": args.length,
               "wall_s": round(time.perf_counter() - t0, 1), **summarize(results)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
