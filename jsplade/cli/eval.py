"""jsplade-eval: retrieval quality of a sparse encoder (and of BM25) on BEIR-format data sets.

    jsplade-eval MODEL DATASET [DATASET ...] [--bm25] [--split test] [--batch-size 32]
                 [--max-active-dims K] [--k-values 1,2,3,5,10,20,100] [--name NAME]
                 [--output results.json] [--packing] [--max-queries N] [--on-unknown error|drop]
                 [--corpus-chunk-size 50000] [--corpus-shards DIR ...] [--no-progress]
    jsplade-eval none DATASET [DATASET ...] --bm25          (BM25 alone; "--model none" works too)

MODEL is a sentence-transformers SparseEncoder directory, a jsplade checkpoint directory or a Hugging Face
hub id (anything ``SparseEncoder.load`` accepts); the word ``none`` means "no model" (write ./none for a
folder of that name). Each DATASET is a folder in the MTEB/BEIR json-lines layout (corpus.jsonl,
queries.jsonl, qrels.jsonl or qrels/<split>.tsv; .gz accepted). Every k of --k-values is used for every
metric: NDCG, MAP, MRR, Recall, Precision and Accuracy@k (sentence-transformers definitions), plus the
model's query/corpus active dims, sparsity ratios and average FLOPS. --bm25 adds the bm25s baseline, ranked
and scored by the same code. Only queries with at least one relevant document are evaluated; --max-queries N
keeps the first N of them (file order). --corpus-shards DIR (once per DATASET, in the same order) reads
the documents' vectors from a directory written by jsplade-encode for the same model and corpus instead
of encoding them (only the queries are encoded); the documents then keep the pruning and quantisation they
were written with, and --max-active-dims applies to the queries alone.

One Markdown table per data set is printed (one column per system); --output also writes every number as
JSON ({"metadata": ..., "results": {dataset: {system: {metric: value}}}}), atomically. Errors are reported
on stderr as one line with exit code 2, before any encoding where possible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from jsplade.cli.common import add_verbose_flag, run_program
from jsplade.cli.index import AUTO_PROGRESS_TEXTS, load_encoder

PROG = "jsplade-eval"
DEFAULT_K_VALUES = "1,2,3,5,10,20,100"
METRIC_FAMILIES = ("ndcg", "map", "mrr", "recall", "precision", "accuracy")
STAT_KEYS = ("query_active_dims", "query_sparsity_ratio", "corpus_active_dims", "corpus_sparsity_ratio",
             "avg_flops")
BM25_SYSTEM = "bm25"
NO_MODEL = "none"
# BM25 rankings are computed this many queries at a time (one progress-bar step each).
BM25_QUERY_BLOCK = 256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} [options] MODEL DATASET [DATASET ...]\n       {PROG} [options] --model MODEL DATASET [...]")
    parser.add_argument("paths", nargs="+", metavar="MODEL DATASET",
                        help="the model (unless --model is given), then one or more data set folders")
    parser.add_argument("--model", default=None,
                        help="the model, given as an option (then every positional argument is a data set); "
                             "'none' = no model")
    parser.add_argument("--bm25", action="store_true", help="add the BM25 baseline (bm25s, English stemmer)")
    parser.add_argument("--split", default="test", help="qrels split for the qrels/<split>.tsv layout (default test)")
    parser.add_argument("--batch-size", type=int, default=32, help="documents per encoder batch (default 32)")
    parser.add_argument("--max-active-dims", type=int, default=None, metavar="K",
                        help="keep the K largest weights of every query and document vector (default: the model's)")
    parser.add_argument("--k-values", default=DEFAULT_K_VALUES, metavar="K1,K2,...",
                        help=f"cut-offs for every metric, comma separated (default {DEFAULT_K_VALUES})")
    parser.add_argument("--name", default=None,
                        help="column / JSON name of the model (default: the model folder's name or hub id)")
    parser.add_argument("--output", default=None, metavar="FILE.json", help="also write the results as JSON")
    parser.add_argument("--corpus-chunk-size", type=int, default=50000, metavar="N",
                        help="documents encoded and scored at a time (bounds memory; default 50000)")
    parser.add_argument("--corpus-shards", action="append", default=None, metavar="DIR",
                        help="read the documents' vectors from this jsplade-encode directory instead of "
                             "encoding them; give it once per DATASET, in the same order")
    parser.add_argument("--packing", action="store_true",
                        help="encode documents with sequence packing (same vectors up to float rounding)")
    parser.add_argument("--max-queries", type=int, default=None, metavar="N",
                        help="evaluate only the first N queries that have a relevant document")
    parser.add_argument("--on-unknown", choices=("error", "drop"), default="error",
                        help="judgements naming an unknown query or document: error (default) or drop them "
                             "with a warning")
    parser.add_argument("--no-progress", action="store_true",
                        help="never draw progress bars (default: bars for steps over "
                             f"{AUTO_PROGRESS_TEXTS} texts)")
    add_verbose_flag(parser)
    return parser


def parse_k_values(text: str) -> tuple[int, ...]:
    """Ascending distinct cut-offs from ``"1,2,10"``; anything else raises ``ValueError`` naming --k-values."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("--k-values: expected comma-separated positive integers such as 1,10,100, got nothing")
    values: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"--k-values: {part!r} is not a positive integer "
                             f"(expected comma-separated positive integers such as 1,10,100; got {text!r})")
        if int(part) in values:
            raise ValueError(f"--k-values: {part} is listed twice in {text!r}")
        values.append(int(part))
    return tuple(sorted(values))


def table_metrics(k_values: Sequence[int], with_stats: bool = True) -> list[str]:
    """Row names of the printed table: every metric family at every k, then the sparsity statistics."""
    rows = [f"{family}@{k}" for family in METRIC_FAMILIES for k in k_values]
    return rows + (list(STAT_KEYS) if with_stats else [])


def dataset_names(paths: Sequence[str]) -> list[str]:
    """A result key per data set: the folder's name, or the path as given where two names collide."""
    base = [Path(p).resolve().name or str(p) for p in paths]
    names = [b if base.count(b) == 1 else str(p) for b, p in zip(base, paths)]
    if len(set(names)) != len(names):
        raise ValueError(f"the same data set folder is given twice: {', '.join(map(str, paths))}")
    return names


def model_name(spec: str) -> str:
    """Default column name of a model: its folder's name (a path) or the hub id itself."""
    path = Path(spec).expanduser()
    if path.exists():
        return path.resolve().name or spec
    return spec


def _positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise ValueError(f"{option} must be a positive integer, got {value}")


class PackedDocuments:
    """An encoder view whose ``encode_document`` uses sequence packing (everything else is passed through)."""

    def __init__(self, encoder: Any):
        self.encoder = encoder
        self.vocab_size = encoder.vocab_size

    def encode_query(self, texts: Sequence[str], **kwargs):
        return self.encoder.encode_query(texts, **kwargs)

    def encode_document(self, texts: Sequence[str], **kwargs):
        return self.encoder.encode_document(texts, packing=True, **kwargs)


@dataclass
class EvalTask:
    """One data set ready to evaluate: its result key, folder, loaded data and the evaluator over it."""

    name: str
    path: str
    n_queries_in_file: int
    n_documents: int
    evaluator: Any  # jsplade.retrieval.evaluation.SparseIREvaluator


def make_task(name: str, path: str, split: str, on_unknown: str, k_values: Sequence[int], batch_size: int,
              max_active_dims: int | None, max_queries: int | None, show_progress_bar: bool | None,
              corpus_chunk_size: int = 50000) -> EvalTask:
    """Load a data set folder and build its evaluator (all cut-offs = ``k_values``)."""
    from jsplade.retrieval.beir import load_beir
    from jsplade.retrieval.evaluation import SparseIREvaluator

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_beir(path, split=split, on_unknown=on_unknown)
    for w in caught:  # dropped judgements (on_unknown="drop"): one plain line each
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    relevant = data.relevant_docs()
    if not relevant:
        raise ValueError(f"{path}: no query has a relevant document (score > 0); nothing to evaluate")
    if max_queries is not None:
        keep = [qid for qid in data.queries if qid in relevant][:max_queries]
        relevant = {qid: relevant[qid] for qid in keep}
    ks = tuple(k_values)
    evaluator = SparseIREvaluator(data.queries, data.corpus, relevant, mrr_at_k=ks, ndcg_at_k=ks,
                                  accuracy_at_k=ks, precision_recall_at_k=ks, map_at_k=ks, batch_size=batch_size,
                                  corpus_chunk_size=corpus_chunk_size, max_active_dims=max_active_dims,
                                  show_progress_bar=show_progress_bar)
    return EvalTask(name, str(path), len(data.queries), len(data.corpus), evaluator)


def check_corpus_shards(folders: Sequence[str], tasks: Sequence[EvalTask], encoder: Any) -> list[Any]:
    """The shard directories of ``--corpus-shards``, one per task, checked before anything is encoded: finished,
    written by ``encoder`` (same fingerprint) and holding as many documents as the task's corpus (the document
    ids themselves are checked while they are read)."""
    from jsplade.retrieval.shards import read_shards

    if len(folders) != len(tasks):
        raise ValueError(f"--corpus-shards is given {len(folders)} time(s) for {len(tasks)} data set(s); give one "
                         "shard directory per DATASET, in the same order")
    fingerprint = encoder.fingerprint()
    shards = []
    for folder, task in zip(folders, tasks):
        try:
            found = read_shards(folder)
        except (OSError, ValueError) as e:
            raise type(e)(f"--corpus-shards {e}") from None
        if found.settings["model"] != fingerprint:
            raise ValueError(f"--corpus-shards {folder}: encoded by another model ({found.settings['model']}) "
                             f"than the model evaluated ({fingerprint})")
        if found.n_docs != task.n_documents:
            raise ValueError(f"--corpus-shards {folder}: holds {found.n_docs} documents, data set {task.path} "
                             f"{task.n_documents}")
        shards.append(found.folder)
    return shards


def evaluate_bm25(evaluator: Any, show_progress: bool) -> dict[str, float]:
    """BM25 metrics (keys ``bm25_<metric>@k``) over the evaluator's queries, corpus and cut-offs."""
    import bm25s  # noqa: F401 - imported first: its import sets the "bm25s" logger to DEBUG
    from jsplade.retrieval.bm25 import BM25Retriever
    from jsplade.retrieval.evaluation import evaluate_rankings

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    retriever = BM25Retriever(evaluator.corpus, show_progress=show_progress)
    qids = list(evaluator.query_ids)
    blocks = [qids[lo:lo + BM25_QUERY_BLOCK] for lo in range(0, len(qids), BM25_QUERY_BLOCK)]
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(qids), desc="BM25 queries", unit="query", file=sys.stderr)
    rankings: dict[str, list[str]] = {}
    for block in blocks:
        rankings.update(retriever.search({q: evaluator.queries[q] for q in block}, k=evaluator.max_k))
        if bar is not None:
            bar.update(len(block))
    if bar is not None:
        bar.close()
    return evaluate_rankings(rankings, evaluator.relevant_docs, "", BM25_SYSTEM, **evaluator.ks)


def run(args: argparse.Namespace) -> int:
    """Everything after argument parsing; library errors propagate to ``main``."""
    if args.model is not None:
        model_spec, dataset_paths = args.model, list(args.paths)
    else:
        if len(args.paths) < 2:
            raise ValueError("expected MODEL and at least one DATASET folder (use 'none' as MODEL with --bm25 "
                             "to evaluate BM25 alone)")
        model_spec, dataset_paths = args.paths[0], list(args.paths[1:])
    use_model = model_spec != NO_MODEL
    if not use_model and not args.bm25:
        raise ValueError("MODEL is 'none' and --bm25 is not given: nothing to evaluate")
    k_values = parse_k_values(args.k_values)
    _positive(args.batch_size, "--batch-size")
    _positive(args.max_active_dims, "--max-active-dims")
    _positive(args.max_queries, "--max-queries")
    _positive(args.corpus_chunk_size, "--corpus-chunk-size")
    system = (args.name if args.name is not None else model_name(model_spec)) if use_model else None
    if system is not None and not system.strip():
        raise ValueError("--name must not be empty")
    if system == BM25_SYSTEM and args.bm25:
        raise ValueError(f"--name {BM25_SYSTEM!r} is the BM25 column's name; choose another")
    output = Path(args.output) if args.output is not None else None
    if output is not None and (output.is_dir() or not output.parent.is_dir()):
        raise ValueError(f"--output {output}: " + ("is a directory" if output.is_dir() else
                                                   f"directory {output.parent} does not exist"))
    for path in dataset_paths:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"{path}: data set folder not found (expected a folder with corpus.jsonl, "
                                    "queries.jsonl and qrels)")
    if args.corpus_shards is not None:
        if not use_model:
            raise ValueError("--corpus-shards needs a model (the queries are encoded with it); MODEL is 'none'")
        if len(args.corpus_shards) != len(dataset_paths):
            raise ValueError(f"--corpus-shards is given {len(args.corpus_shards)} time(s) for {len(dataset_paths)} "
                             "data set(s); give one shard directory per DATASET, in the same order")
        if args.packing:
            raise ValueError("--packing and --corpus-shards: the documents are read from the shards, not encoded")
    names = dataset_names(dataset_paths)
    show = False if args.no_progress else None

    tasks = []
    for name, path in zip(names, dataset_paths):
        print(f"{PROG}: loading {path}", file=sys.stderr)
        tasks.append(make_task(name, path, args.split, args.on_unknown, k_values, args.batch_size,
                               args.max_active_dims, args.max_queries, show, args.corpus_chunk_size))
    encoder = None
    shards: list[Any] = [None] * len(tasks)
    if use_model:
        print(f"{PROG}: loading model {model_spec}", file=sys.stderr)
        encoder = load_encoder(model_spec)
        if args.corpus_shards is not None:
            shards = check_corpus_shards(args.corpus_shards, tasks, encoder)
        if args.packing:
            encoder = PackedDocuments(encoder)

    results: dict[str, dict[str, dict[str, float]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    for task, shard_dir in zip(tasks, shards):
        results[task.name], seconds[task.name] = {}, {}
        if encoder is not None:
            documents = (f"{task.n_documents} documents" if shard_dir is None else
                         f"reading {task.n_documents} documents from {shard_dir}")
            print(f"{PROG}: {task.name}: encoding {len(task.evaluator.query_ids)} queries and "
                  f"{documents} with {system}", file=sys.stderr)
            t0 = time.perf_counter()
            results[task.name][system] = task.evaluator(encoder, corpus_shards=shard_dir)
            seconds[task.name][system] = round(time.perf_counter() - t0, 3)
        if args.bm25:
            print(f"{PROG}: {task.name}: BM25", file=sys.stderr)
            t0 = time.perf_counter()
            big = task.n_documents > AUTO_PROGRESS_TEXTS or len(task.evaluator.query_ids) > AUTO_PROGRESS_TEXTS
            results[task.name][BM25_SYSTEM] = evaluate_bm25(task.evaluator, show_progress=show is None and big)
            seconds[task.name][BM25_SYSTEM] = round(time.perf_counter() - t0, 3)
    elapsed = time.perf_counter() - started

    from jsplade.retrieval.evaluation import format_table

    rows = table_metrics(k_values, with_stats=use_model)
    for task in tasks:
        print(f"## {task.name}: {len(task.evaluator.query_ids)} queries evaluated "
              f"({task.n_queries_in_file} in the file), {task.n_documents} documents\n")
        print(format_table(results[task.name], rows))
    if output is not None:
        from jsplade import __version__
        from jsplade.retrieval.evaluation import write_results_json

        metadata = {
            "program": PROG, "jsplade_version": __version__, "model": model_spec if use_model else None,
            "systems": ([system] if use_model else []) + ([BM25_SYSTEM] if args.bm25 else []),
            "split": args.split, "k_values": list(k_values), "batch_size": args.batch_size,
            "max_active_dims": args.max_active_dims, "packing": bool(args.packing),
            "corpus_chunk_size": args.corpus_chunk_size,
            "corpus_shards": (None if args.corpus_shards is None else
                              {t.name: str(d) for t, d in zip(tasks, shards)}),
            "max_queries": args.max_queries, "on_unknown": args.on_unknown,
            "datasets": {t.name: {"path": t.path, "documents": t.n_documents, "queries": t.n_queries_in_file,
                                  "queries_evaluated": len(t.evaluator.query_ids)} for t in tasks},
            "seconds": seconds,
        }
        write_results_json(output, results, metadata)
    systems = " and ".join(([system] if use_model else []) + (["BM25"] if args.bm25 else []))
    print(f"evaluated {systems} on {len(tasks)} data set(s) in {elapsed:.1f} s"
          + (f"; wrote {output}" if output is not None else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input)."""
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
