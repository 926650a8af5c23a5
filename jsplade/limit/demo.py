"""The main job: data → training from scratch → index → evaluation on LIMIT, next to BM25 and the
published v3-gte numbers.

1. Generate LIMIT-style training pairs from items no LIMIT or LIMIT-small query asks for
   (``jsplade.limit.data``), with one hard negative per pair that shares a word with the query item.
2. Build a small GTE sparse encoder from scratch (random weights, ``jsplade.splade.initialization``: copy-friendly
   head, IDF-initialised static query weights over the generated documents) and train it with
   SpladeLoss (``jsplade.training.trainer``).
3. Encode LIMIT-small and LIMIT (rebuilt 50k corpus) into exact sparse indexes (``jsplade.retrieval.index``),
   retrieve the top 100 per query, evaluate with sentence-transformers' metric definitions
   (``jsplade.retrieval.evaluation``); BM25 (bm25s, English stopwords + Snowball stemmer) goes through the same code.
4. Print the seed model card's metric block, write results JSON, a recall@k plot and the trained model as
   a sentence-transformers directory.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jsplade.backbones.gte import GteForMaskedLM
from jsplade.backbones.gte_config import GteConfig
from jsplade.backbones.tokenizer import WordPieceTokenizer
from jsplade.files import atomic_write_json
from jsplade.limit.data import generate_limit_pairs, limit_paths, write_pairs_jsonl
from jsplade.retrieval.beir import load_beir
from jsplade.retrieval.bm25 import BM25Retriever
from jsplade.retrieval.evaluation import evaluate_rankings, nonzero_counts, sparsity_stats
from jsplade.retrieval.index import SparseIndex
from jsplade.splade.encoder import SparseEncoder
from jsplade.splade.initialization import copy_friendly_init, idf_query_weights
from jsplade.splade.model import SpladeModel
from jsplade.splade.static_embedding import StaticQueryEmbedding
from jsplade.training.config import TrainConfig
from jsplade.training.data import load_pairs
from jsplade.training.trainer import Trainer

logger = logging.getLogger("jsplade")

CARD_KS = (2, 10, 20, 100)
CARD_METRICS = [f"{m}@{k}" for m in ("ndcg", "map", "recall", "precision") for k in CARD_KS]

# Published numbers on LIMIT (anchors.md; Weller et al. 2025 and the model cards). None = not published.
# Column names: "v3-gte 0-shot" = v3-gte zero-shot; "seed card" = v3-gte fine-tuned on 2 pairs (the seed
# model's card); "v3-gte 1700p" = fine-tuned on 1700 pairs; "BM25 paper" = BM25 on the original corpus.
PUBLISHED_LIMIT = {
    "v3-gte 0-shot": {"recall@2": 0.387, "recall@10": 0.609, "recall@100": 0.818, "ndcg@10": 0.500},
    "seed card": {"ndcg@10": 0.869, "map@10": 0.848, "recall@2": 0.8235, "recall@10": 0.905, "recall@100": 0.942},
    "v3-gte 1700p": {"recall@2": 0.9045, "recall@10": 0.931, "recall@100": 0.963, "ndcg@10": 0.918},
    "BM25 paper": {"recall@2": 0.857, "recall@10": 0.904, "recall@100": 0.936},
}
PUBLISHED_LIMIT_SMALL = {
    "v3-gte 0-shot": {"ndcg@10": 0.959},
    "BM25 paper": {"recall@2": 0.978, "recall@10": 1.0},
}


@dataclass
class DemoSettings:
    out_dir: str = "runs/demo"
    quick: bool = False                 # CI: a few steps, LIMIT-small only, a smaller model
    n_pairs: int = 19200
    items_per_doc: tuple[int, int] = (12, 18)
    batch_size: int = 32
    steps: int = 600
    learning_rate: float = 2e-3
    lambda_d: float = 1e-3
    lambda_q: float = 1e-3
    hidden_size: int = 64
    layers: int = 2
    heads: int = 2
    max_seq_length: int = 256
    seed: int = 0
    encode_batch_size: int = 64
    with_limit: bool = True             # evaluate on the 50k rebuilt corpus too
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def quick_settings(cls, out_dir: str) -> DemoSettings:
        return cls(out_dir=out_dir, quick=True, n_pairs=256, batch_size=16, steps=8, hidden_size=32, layers=1,
                   heads=1, with_limit=False)


def _timed(settings: DemoSettings, name: str, t0: float) -> None:
    settings.timings[name] = round(time.perf_counter() - t0, 1)
    logger.info("%s: %.1f s", name, settings.timings[name])


def build_encoder(settings: DemoSettings, documents: list[str]):
    """A small GTE sparse encoder with random weights (copy-friendly head, IDF query weights)."""
    tokenizer = WordPieceTokenizer.from_dir(limit_paths().root / "bert-base-uncased")
    config = GteConfig(vocab_size=tokenizer.vocab_size, hidden_size=settings.hidden_size,
                       num_hidden_layers=settings.layers, num_attention_heads=settings.heads,
                       intermediate_size=2 * settings.hidden_size, max_position_embeddings=512,
                       type_vocab_size=0, rope_theta=10000.0, rope_scaling=None, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12, pad_token_id=0,
                       extra={"architectures": ["NewForMaskedLM"]})
    mlm = copy_friendly_init(GteForMaskedLM(config, rngs=nnx.Rngs(settings.seed)), seed=settings.seed + 1)
    weights = idf_query_weights(tokenizer.encode_queries(documents), tokenizer.vocab_size)
    model = SpladeModel(mlm, StaticQueryEmbedding(weights), "max", "log1p_relu")
    return SparseEncoder(model, tokenizer, tokenizer, max_seq_length=settings.max_seq_length)


def train(settings: DemoSettings, out: Path):
    paths = limit_paths()
    t0 = time.perf_counter()
    rows = generate_limit_pairs(paths.items, [paths.limit / "queries.jsonl", paths.limit_small / "queries.jsonl"],
                                settings.n_pairs, items_per_doc=settings.items_per_doc, seed=settings.seed,
                                hard_negatives=1, negative_word_overlap=True)
    write_pairs_jsonl(out / "train_pairs.jsonl", rows)
    dataset = load_pairs(rows, ["query", "document", "negative_1"])
    encoder = build_encoder(settings, [r["document"] for r in rows])
    _timed(settings, "data_and_model", t0)
    t0 = time.perf_counter()
    config = TrainConfig(output_dir=str(out / "train"), batch_size=settings.batch_size, epochs=1,
                         max_steps=settings.steps, learning_rate=settings.learning_rate, warmup_ratio=0.05,
                         lambda_d=settings.lambda_d, lambda_q=settings.lambda_q, seed=settings.seed, dropout=False,
                         resume=False, tensorboard=False, checkpoint_every=None, log_every=10,
                         max_document_length=settings.max_seq_length)
    result = Trainer(config, encoder=encoder, dataset=dataset).fit()
    _timed(settings, "training", t0)
    return result.encoder, result.history


def evaluate_dataset(encoder, folder: Path, settings: DemoSettings, index_path: Path | None) -> dict[str, Any]:
    """jsplade and BM25 on one BEIR folder: metrics (same code for both), rankings for the plot."""
    data = load_beir(folder)
    relevant = data.relevant_docs()
    query_ids = [q for q in data.queries if relevant.get(q)]
    ks = dict(mrr_at_k=(10,), ndcg_at_k=CARD_KS, accuracy_at_k=(1, 2, 10), precision_recall_at_k=CARD_KS + (1, 5),
              map_at_k=CARD_KS)
    out: dict[str, Any] = {"n_queries": len(query_ids), "n_documents": len(data.corpus)}

    t0 = time.perf_counter()
    index = SparseIndex.from_encoder(encoder, data.corpus, batch_size=settings.encode_batch_size,
                                     show_progress_bar=True)
    if index_path is not None:
        index.save(index_path)
    q = encoder.encode_query([data.queries[i] for i in query_ids])
    top_ids, _ = index.search(q, k=100)
    rankings = dict(zip(query_ids, top_ids))
    metrics = evaluate_rankings(rankings, relevant, **ks)
    q_rows, q_cols = nonzero_counts(q)
    d_rows, d_cols = nonzero_counts(index.matrix)
    metrics.update(sparsity_stats(q_cols, q.shape[0], int(q_rows.sum()), d_cols, len(index), int(d_rows.sum())))
    out["jsplade"] = {"metrics": metrics, "seconds": round(time.perf_counter() - t0, 1),
                      "recall_curve": _recall_curve(rankings, relevant)}

    t0 = time.perf_counter()
    bm25 = BM25Retriever(data.corpus)
    bm25_rank = bm25.search({i: data.queries[i] for i in query_ids}, k=100)
    out["bm25"] = {"metrics": evaluate_rankings(bm25_rank, relevant, **ks),
                   "seconds": round(time.perf_counter() - t0, 1), "recall_curve": _recall_curve(bm25_rank, relevant)}
    return out


def _recall_curve(rankings: dict[str, list[str]], relevant: dict[str, set[str]], max_k: int = 100) -> list[float]:
    """Mean recall@k for k = 1 … max_k."""
    curve = np.zeros(max_k)
    for qid, ranked in rankings.items():
        rel = relevant[qid]
        hits = np.cumsum([doc in rel for doc in ranked[:max_k]] + [0] * (max_k - len(ranked[:max_k])))
        curve += hits / len(rel)
    return (curve / len(rankings)).round(6).tolist()


def card_table(systems: dict[str, dict[str, float]], title: str) -> str:
    """The seed model card's block: NDCG/MAP/Recall/Precision at 2/10/20/100, systems as columns."""
    names = list(systems)
    width = max(12, *(len(n) for n in names))
    lines = [title, f"{'metric':<14}" + "".join(f"{n:>{width + 2}}" for n in names)]
    for metric in CARD_METRICS:
        row = f"{metric:<14}"
        for n in names:
            v = _metric(systems[n], metric)
            row += f"{'—' if v is None else f'{v:.4f}':>{width + 2}}"
        lines.append(row)
    return "\n".join(lines)


def _metric(values: dict[str, float], metric: str) -> float | None:
    if metric in values:
        return values[metric]
    return next((v for k, v in values.items() if k.endswith("_" + metric)), None)


def plot_recall(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in ("limit-small", "limit") if d in results]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        ks = np.arange(1, 101)
        for system, style in (("jsplade", "-"), ("bm25", "--")):
            label = "jsplade demo model" if system == "jsplade" else "BM25 (bm25s)"
            ax.plot(ks, results[name][system]["recall_curve"], style, label=label)
        published = PUBLISHED_LIMIT if name == "limit" else PUBLISHED_LIMIT_SMALL
        for (system, values), marker in zip(published.items(), "osD^v"):
            pts = [(int(k.split("@")[1]), v) for k, v in values.items() if k.startswith("recall@")]
            if pts:
                ax.plot(*zip(*sorted(pts)), marker=marker, linestyle=":", label=system)
        ax.set_xscale("log")
        ax.set_xlabel("k")
        ax.set_ylabel("recall@k")
        ax.set_title("LIMIT (rebuilt corpus)" if name == "limit" else "LIMIT-small")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_demo(settings: DemoSettings) -> dict[str, Any]:
    """The whole loop; returns (and writes) the results."""
    start = time.perf_counter()
    out = Path(settings.out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    paths = limit_paths()
    encoder, history = train(settings, out)
    results: dict[str, Any] = {"settings": {k: v for k, v in asdict(settings).items() if k != "timings"},
                               "training": {"steps": len(history), "final": history[-1] if history else {}}}
    t0 = time.perf_counter()
    results["limit-small"] = evaluate_dataset(encoder, paths.limit_small, settings, out / "limit_small_index.npz")
    _timed(settings, "limit_small_eval", t0)
    if settings.with_limit:
        t0 = time.perf_counter()
        results["limit"] = evaluate_dataset(encoder, paths.limit, settings, out / "limit_index.npz")
        _timed(settings, "limit_eval", t0)
    t0 = time.perf_counter()
    card = {k: v for k, v in results.get("limit", results["limit-small"])["jsplade"]["metrics"].items()}
    encoder.save(out / "model", naming="new", model_card_metrics={k: round(v, 4) for k, v in card.items()
                                                                  if any(k.endswith(m) for m in CARD_METRICS)})
    plot_recall(results, out / "recall_at_k.png")
    _timed(settings, "export_and_plot", t0)
    settings.timings["total_python"] = round(time.perf_counter() - start, 1)
    results["timings_seconds"] = dict(settings.timings)
    results["published"] = {"limit": PUBLISHED_LIMIT, "limit-small": PUBLISHED_LIMIT_SMALL}
    atomic_write_json(out / "results.json", results)
    return results


def report(results: dict[str, Any]) -> str:
    blocks = []
    for name, title, published in (("limit-small", "LIMIT-small (46 documents, 1000 queries)", PUBLISHED_LIMIT_SMALL),
                                   ("limit", "LIMIT (rebuilt corpus: 50,000 documents, 1000 queries)",
                                    PUBLISHED_LIMIT)):
        if name not in results:
            continue
        systems = {"jsplade demo": results[name]["jsplade"]["metrics"], "BM25 bm25s": results[name]["bm25"]["metrics"]}
        systems.update(published)
        blocks.append(card_table(systems, title))
        m = results[name]["jsplade"]["metrics"]
        blocks.append(f"jsplade demo: query active dims {m['query_active_dims']:.1f}, document active dims "
                      f"{m['corpus_active_dims']:.1f}, avg FLOPS {m['avg_flops']:.2f}")
    t = results.get("timings_seconds", {})
    blocks.append("columns: 'BM25 bm25s' = BM25 on this corpus through the same evaluator; published: 'v3-gte 0-shot' "
                  "= v3-gte zero-shot, 'seed card' = v3-gte fine-tuned on 2 pairs (the seed model's card), "
                  "'v3-gte 1700p' = fine-tuned on 1700 pairs, 'BM25 paper' = BM25 on the original corpus "
                  "(LIMIT numbers: Weller et al. 2025 / model cards; — = not published)")
    blocks.append("wall time (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    return "\n\n".join(blocks)
