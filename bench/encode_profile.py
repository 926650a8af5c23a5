"""Where document-encoding time goes, against the arithmetic bound and against sentence-transformers.

    python bench/encode_profile.py [--model DIR] [--docs 5000] [--batch-size 32] [--out bench/results/x.json]

MODEL defaults to ``runs/demo/train/model`` (what ``make demo`` trains: 2 layers, hidden 64, V 30,522) and, when
that is absent, a model of the same shape with the demo's initialisation. The corpus is the first DOCS
LIMIT documents. Phases, each timed on its own over the same batches (compiled first, best of 3):

  tokenize     ``tokenize_documents`` (the Rust tokenizer plus jsplade's special-token framing)
  pad          sorting by length and building the padded [B, L] arrays on the host
  transformer  the backbone's forward to the last hidden states (device work, ``block_until_ready``)
  head         the SPLADE head and pooling (fused tiled vocabulary projection, log1p(relu), max) from the
               hidden states
  transfer     copying the pooled [B, V] vectors to the host
  sparse       dense rows to CSR (and top-k when asked)
  total        ``encode_document`` end to end (the sum above plus Python overhead)

The bound is the model's FLOPs (2 x multiply-adds of every matmul, attention included) over the rate this
machine reaches on the head's own matmul shape ([B*L, D] x [D, V], float32), measured in the same run.
Then sentence-transformers (``SparseEncoder(path).encode_document``, same documents, batch size, float32,
torch threads = cores) for docs/s in the same run. Prints one JSON object and writes it to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def best(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def demo_shape_model(tmp: Path) -> Path:
    from jsplade.limit.demo import DemoSettings, build_encoder

    path = tmp / "demo_shape_model"
    if not path.exists():
        settings = DemoSettings()
        enc = build_encoder(settings, ["a b c"])
        enc.save(path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=None)
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--skip-st", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from bench_data import limit_documents
    from jsplade.backbones.compute import cpu_flags, inference_dtype
    from jsplade.splade.batching import length_batches, pad_rows, pow2_at_least
    from jsplade.splade.encoder import SparseEncoder
    from jsplade.splade.sparse import dense_to_csr

    model_path = Path(args.model) if args.model else REPO / "runs" / "demo" / "train" / "model"
    if not model_path.exists():
        model_path = demo_shape_model(REPO / "runs" / "bench")
    enc = SparseEncoder.from_pretrained(model_path)
    docs = limit_documents(args.docs)
    B = args.batch_size
    cfg = enc.model.mlm.config
    out: dict = {"model": str(model_path), "docs": len(docs), "batch_size": B, "machine": platform.processor() or
                 platform.machine(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
                 "jax": jax.__version__, "auto_dtype": inference_dtype(),
                 "amx": "amx_bf16" in cpu_flags(), "avx512_bf16": "avx512_bf16" in cpu_flags()}

    # ---- tokenize
    ids, _ = enc.tokenize_documents(docs)
    out["tokenize_s"] = best(lambda: enc.tokenize_documents(docs))
    lengths = np.array([len(x) for x in ids])
    out["tokens"] = int(lengths.sum())

    # ---- batches exactly as the encoder forms them
    def make_batches():  # exactly the encoder's batches (jsplade.splade.batching)
        return [(*pad_rows(ids, rows, L, pow2_at_least(len(rows))), len(rows))
                for rows, L in length_batches(lengths, B, enc.tokens_per_batch, enc.max_seq_length)]

    batches = make_batches()
    out["pad_s"] = best(make_batches)
    out["padded_tokens"] = int(sum(a.size for a, _, _ in batches))
    graphdef, state = nnx.split(enc.model)

    @jax.jit
    def hidden_fn(state, a, m):
        model = nnx.merge(graphdef, state)
        return model.mlm.encode(a, m)

    @jax.jit
    def head_fn(state, h, m):
        from jsplade.splade.fused_head import fused_splade_pool, mask_to_group

        model = nnx.merge(graphdef, state)
        mlm = model.mlm
        f = mlm.head_features(h)
        return fused_splade_pool(f, mlm.decoder_weight(), mlm.decoder_bias(), mask_to_group(m), 1,
                                 model.pooling_strategy, model.activation)[:, 0]

    dev = [(jnp.asarray(a), jnp.asarray(m), n) for a, m, n in batches]
    hidden = [hidden_fn(state, a, m) for a, m, _ in dev]
    pooled = [head_fn(state, h, m) for h, (_, m, _) in zip(hidden, dev)]
    jax.block_until_ready(pooled)
    out["transformer_s"] = best(lambda: jax.block_until_ready([hidden_fn(state, a, m) for a, m, _ in dev]))
    out["head_s"] = best(lambda: jax.block_until_ready([head_fn(state, h, m) for h, (_, m, _) in zip(hidden, dev)]))
    out["transfer_s"] = best(lambda: [np.asarray(x) for x in pooled])
    host = [np.asarray(x)[:n] for x, (_, _, n) in zip(pooled, dev)]
    out["sparse_s"] = best(lambda: [dense_to_csr(x) for x in host])
    enc.encode_document(docs, batch_size=B, show_progress_bar=False)
    out["total_s"] = best(lambda: enc.encode_document(docs, batch_size=B, show_progress_bar=False))
    out["docs_per_s"] = len(docs) / out["total_s"]
    out["nnz_per_doc"] = float(np.mean([np.count_nonzero(x, axis=1).mean() for x in host]))

    # ---- arithmetic bound
    D, I, V, nl = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    padded = out["padded_tokens"]
    attn = sum(2 * 2 * a.shape[0] * a.shape[1] ** 2 * D for a, _, _ in batches) * nl
    per_token = nl * 2 * (3 * D * D + D * D + 3 * D * I) + 2 * D * D + 2 * D * V  # qkv, out, GLU (up, gate, down)
    flops = per_token * padded + attn
    x = jnp.ones((B * 160, D), jnp.float32)
    w = jnp.ones((D, V), jnp.float32)
    mm = jax.jit(lambda x, w: jnp.max(x @ w, axis=0))
    jax.block_until_ready(mm(x, w))
    t = best(lambda: jax.block_until_ready(mm(x, w)), 5)
    rate = 2 * x.shape[0] * D * V / t
    out.update(model_gflop=flops / 1e9, matmul_gflops=rate / 1e9, bound_s=flops / rate,
               head_share_of_flops=2 * D * V * padded / flops)

    # ---- sentence-transformers, same documents
    if not args.skip_st:
        import torch
        from sentence_transformers.sparse_encoder import SparseEncoder as StSparseEncoder

        torch.set_num_threads(os.cpu_count() or 1)
        st_path = REPO / "runs" / "bench" / "encode_profile_st_model"  # native gte names: no remote code
        enc.save(st_path, naming="gte", overwrite=True)
        st = StSparseEncoder(str(st_path), device="cpu")
        st.encode_document(docs[:64], batch_size=B)
        out["st_total_s"] = best(lambda: st.encode_document(docs, batch_size=B), 2)
        out["st_docs_per_s"] = len(docs) / out["st_total_s"]
        out["speedup_vs_st"] = out["st_total_s"] / out["total_s"]
    text = json.dumps(out, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
