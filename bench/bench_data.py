"""The benchmark texts, shared by bench/run_benchmarks.py (CPU) and bench/gpu_bench.py (GPU): documents of the
rebuilt LIMIT corpus that ships with the repository, and one long document made of them."""

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
