"""What bench/run_benchmarks.py (CPU) and bench/gpu_bench.py (GPU) share: the benchmark texts (documents of the
rebuilt LIMIT corpus that ships with the repository, and one long document made of them) and the model's
arithmetic per token."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT_CORPUS = REPO / "data" / "limit" / "corpus.jsonl.gz"


def limit_documents(n: int) -> list[str]:
    """The first ``n`` corpus documents as "title text"."""
    if not LIMIT_CORPUS.exists():
        raise SystemExit(f"{LIMIT_CORPUS} is missing (it ships with the repository)")
    docs = []
    with gzip.open(LIMIT_CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            docs.append((row.get("title", "") + " " + row["text"]).strip())
            if len(docs) == n:
                break
    return docs


def long_text(n_words: int) -> str:
    """One document of ``n_words`` words: the first 200 corpus documents run together."""
    return " ".join(" ".join(limit_documents(200)).split()[:n_words])


def model_flops_per_token(length: int, layers: int = 12, d: int = 768, inter: int = 3072, vocab: int = 30522) -> float:
    """Forward FLOPs per token of a v3-gte-shaped model in a ``length``-token row (gte_architecture.md §7):
    the layers' projections (QKV, attention output, GLU up/gate, down), attention's two products, the MLM
    head's transform and vocabulary projection."""
    return layers * (8 * d * d + 6 * d * inter) + 4 * layers * length * d + 2 * d * d + 2 * d * vocab
