"""The main job, shortened (tiny model, a few steps, LIMIT-small only), end to end."""

from __future__ import annotations

import json

import numpy as np

from jsplade import SparseEncoder
from jsplade.cli.demo import main
from jsplade.limit.data import limit_paths, query_items


def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LIMIT-small" in printed and "recall@100" in printed and "BM25 bm25s" in printed
    results = json.loads((out / "results.json").read_text())
    small = results["limit-small"]
    assert small["n_queries"] == 1000 and small["n_documents"] == 46
    for system in ("jsplade", "bm25"):
        metrics = small[system]["metrics"]
        for key in ("dot_ndcg@10", "dot_map@10", "dot_recall@2", "dot_recall@100", "dot_precision@20"):
            assert 0.0 <= metrics[key] <= 1.0, (system, key)
        assert metrics["dot_recall@100"] == 1.0  # 46 documents: everything is in the top 100
        curve = small[system]["recall_curve"]
        assert len(curve) == 100 and curve == sorted(curve)
    assert small["bm25"]["metrics"]["dot_recall@10"] == 1.0  # anchors.md: BM25 R@10 on LIMIT-small
    assert results["training"]["steps"] == 8
    assert (out / "recall_at_k.png").stat().st_size > 10_000
    # The exported model is a sentence-transformers directory that jsplade (and ST) load.
    enc = SparseEncoder.load(out / "model")
    q = enc.encode_query(["Who likes Birch Trees?"])
    assert q.nnz >= 3
    # Training data never used a LIMIT / LIMIT-small query item.
    paths = limit_paths()
    banned = set(query_items(paths.limit / "queries.jsonl")) | set(query_items(paths.limit_small / "queries.jsonl"))
    rows = [json.loads(x) for x in (out / "train_pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["query"][len("Who likes "):-1] not in banned for r in rows)
    # The saved index is the one the metrics came from: searching it again gives the same top-1.
    from jsplade.retrieval.index import SparseIndex

    index = SparseIndex.load(out / "limit_small_index.npz")
    assert len(index) == 46 and np.isfinite(index.matrix.data).all()
