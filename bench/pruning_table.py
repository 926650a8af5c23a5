"""Document pruning and impact quantisation on LIMIT: quality, active dimensions and index size per setting.

    python bench/pruning_table.py [--model runs/demo/train/model] [--out bench/results/pruning_table.json]

The corpus is encoded once (``jsplade.retrieval.corpus.encode_corpus``, no pruning); every setting is then
derived from those shards with ``prune_shards`` (the same bytes as encoding with the setting) and evaluated
from its shards by ``SparseIREvaluator(corpus_shards=...)`` (sentence-transformers' metric definitions).
Queries are not pruned. "size" is the shard directory on disk (ids, token ids, weights, token counts).
Prints a Markdown table and writes the raw numbers to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [("none", None), ("none", "int32:100"), ("top_k:256", None), ("top_k:128", None), ("top_k:64", None),
            ("top_k:128", "int32:100"), ("max_ratio:0.1", None), ("max_ratio:0.2", None), ("abs_value:0.5", None),
            ("abs_value:1.0", None), ("alpha_mass:0.9", None), ("alpha_mass:0.7", None),
            ("alpha_mass:0.7", "int32:100")]


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(REPO / "runs" / "demo" / "train" / "model"))
    p.add_argument("--work", default=str(REPO / "runs" / "bench" / "pruning"))
    p.add_argument("--datasets", default="limit-small,limit", help="comma-separated: limit-small, limit")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    from jsplade.limit.data import limit_paths
    from jsplade.retrieval.beir import load_beir
    from jsplade.retrieval.corpus import encode_corpus, prune_shards
    from jsplade.retrieval.evaluation import SparseIREvaluator
    from jsplade.splade.encoder import SparseEncoder

    enc = SparseEncoder.from_pretrained(args.model)
    work = Path(args.work)
    result = {"model": args.model, "date": time.strftime("%Y-%m-%d"), "machine": platform.processor(),
              "cores": os.cpu_count(), "datasets": {}}
    folders = {"limit-small": limit_paths().limit_small, "limit": limit_paths().limit}
    for name in args.datasets.split(","):
        folder = folders[name]
        data = load_beir(folder)
        raw = work / name / "raw"
        t = time.perf_counter()
        encode_corpus(enc, folder, raw, shard_size=10000, batch_size=64, show_progress_bar=True)
        encode_s = time.perf_counter() - t
        ev = SparseIREvaluator(data.queries, data.corpus, data.relevant_docs(), ndcg_at_k=(10,),
                               precision_recall_at_k=(100,), mrr_at_k=(10,), accuracy_at_k=(10,), map_at_k=(100,),
                               show_progress_bar=False)
        rows = []
        for pruning, quant in SETTINGS:
            target = raw if (pruning, quant) == ("none", None) else work / name / f"{pruning}_{quant}".replace(":", "-")
            if target != raw:
                prune_shards(raw, target, pruning=pruning, quantization=quant, overwrite=True)
            m = ev(enc, corpus_shards=target)
            rows.append({"pruning": pruning, "quantization": quant, "ndcg@10": m["dot_ndcg@10"],
                         "recall@100": m["dot_recall@100"], "corpus_active_dims": m["corpus_active_dims"],
                         "bytes": dir_bytes(target)})
            print(name, rows[-1], file=sys.stderr)
        result["datasets"][name] = {"documents": len(data.corpus), "queries": len(ev.query_ids),
                                    "encode_s": encode_s, "rows": rows}
    lines = []
    for name, d in result["datasets"].items():
        lines += [f"\n**{name}** ({d['documents']:,} documents, {d['queries']:,} queries)\n",
                  "| pruning | quantisation | nDCG@10 | Recall@100 | active dims / doc | shard size |",
                  "|---|---|---|---|---|---|"]
        for r in d["rows"]:
            size = r["bytes"] / 2**20
            lines.append(f"| {r['pruning']} | {r['quantization'] or 'float32'} | {r['ndcg@10']:.4f} | "
                         f"{r['recall@100']:.4f} | {r['corpus_active_dims']:.1f} | {size:.1f} MiB |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
