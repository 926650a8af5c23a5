"""jsplade-mine: hard negatives and teacher scores for distillation, from a retrieval data set.

    jsplade-mine DATA --model MODEL [--teacher MODEL] [--method sparse|bm25|fused] [--negatives K]
                 --out ROWS.jsonl [--labels scores|margins] [--rrf-k 60] [--fusion-depth 100]
                 [--split train] [--max-queries N] [--batch-size 32] [--max-active-dims K]
                 [--overwrite] [--no-progress]

DATA is a folder in the MTEB/BEIR json-lines layout (corpus.jsonl, queries.jsonl, qrels.jsonl or
qrels/<split>.tsv; .gz accepted), or ``limit`` / ``limit-small`` for the bundled LIMIT data (a folder of that
name in the current directory is read instead). Judgements with a score > 0 are the positives. MODEL and
--teacher are SparseEncoder directories, jsplade checkpoint directories or hub ids; MODEL ranks the corpus
(--method sparse, fused) and is the default teacher; with --method bm25 a --teacher alone is enough.

For each query with positives the K best documents that are not positives are its hard negatives
(``jsplade.retrieval.mining``: the rules for candidates, fusion, ties and skipping). ROWS.jsonl gets one
line per (query, positive), the shape jsplade-train reads:
``{"query", "positive", "negative_1", ..., "negative_K", "label"}`` with ``label`` = the teacher's scores
``[s(q, pos), s(q, neg_1), ...]`` (SparseDistillKLDivLoss, SparseMarginMSELoss) or, with --labels margins,
``[s(q, pos) - s(q, neg_k)]`` (SparseMarginMSELoss). Queries with fewer than K candidates give no row; they
are counted on stderr and listed in ROWS.jsonl.json, next to the rows, with the settings and counts.
Both files are written atomically. Errors are reported on stderr as one line with exit code 2, before any
encoding where possible.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from jsplade.cli.common import add_verbose_flag, error_line, run_program

PROG = "jsplade-mine"
MANIFEST_FORMAT = "jsplade.MinedRows/1"
BUNDLED = ("limit", "limit-small")


def build_parser() -> argparse.ArgumentParser:
    from jsplade.retrieval.mining import DEFAULT_FUSION_DEPTH, DEFAULT_RRF_K, LABEL_FORMATS, METHODS

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="BEIR-format folder, or 'limit' / 'limit-small' (the bundled LIMIT data)")
    parser.add_argument("--model", default=None,
                        help="the miner (SparseEncoder directory, jsplade checkpoint or hub id); default teacher")
    parser.add_argument("--teacher", default=None, help="the encoder that scores the rows (default: --model)")
    parser.add_argument("--method", choices=METHODS, default="sparse",
                        help="sparse (the model's index), bm25, or fused (reciprocal-rank fusion); default sparse")
    parser.add_argument("--negatives", type=int, default=4, metavar="K", help="hard negatives per row (default 4)")
    parser.add_argument("--out", required=True, metavar="ROWS.jsonl", help="rows file to write")
    parser.add_argument("--labels", choices=LABEL_FORMATS, default="scores",
                        help="label column: the teacher's scores (default) or margins s(q,pos) - s(q,neg_k)")
    parser.add_argument("--rrf-k", type=float, default=float(DEFAULT_RRF_K),
                        help=f"reciprocal-rank fusion constant (fused; default {DEFAULT_RRF_K})")
    parser.add_argument("--fusion-depth", type=int, default=DEFAULT_FUSION_DEPTH, metavar="N",
                        help=f"candidates each retriever contributes to the fusion (default {DEFAULT_FUSION_DEPTH})")
    parser.add_argument("--split", default="train",
                        help="qrels split for the qrels/<split>.tsv layout (default train)")
    parser.add_argument("--max-queries", type=int, default=None, metavar="N",
                        help="mine only the first N queries that have a positive (file order)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per encoder batch (default 32)")
    parser.add_argument("--max-active-dims", type=int, default=None, metavar="K",
                        help="keep the K largest weights of every query and document vector (default: the model's)")
    parser.add_argument("--overwrite", action="store_true", help="replace ROWS.jsonl if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose_flag(parser)
    return parser


def manifest_path(out: Path) -> Path:
    """``ROWS.jsonl`` -> ``ROWS.jsonl.json``."""
    return out.with_name(out.name + ".json")


def resolve_data(spec: str) -> Path:
    """The data set folder: an existing folder as given, else a bundled LIMIT data set by name."""
    path = Path(spec)
    if path.is_dir():
        return path
    if spec in BUNDLED:
        from jsplade.limit.data import limit_paths

        paths = limit_paths()
        return paths.limit if spec == "limit" else paths.limit_small
    if path.exists():
        raise ValueError(f"DATA {spec}: is a file; expected a BEIR-format folder (corpus.jsonl, queries.jsonl, "
                         "qrels) or one of " + ", ".join(BUNDLED))
    raise FileNotFoundError(f"DATA {spec}: data set folder not found (expected a BEIR-format folder with "
                            f"corpus.jsonl, queries.jsonl and qrels, or one of {', '.join(BUNDLED)})")


def _check_args(args: argparse.Namespace) -> Path:
    """Every check that needs no file; returns the output path."""
    if args.negatives < 1:
        raise ValueError(f"--negatives must be a positive integer, got {args.negatives}")
    for option in ("batch_size", "max_active_dims", "max_queries", "fusion_depth"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be a positive integer, got {value}")
    if args.method == "fused" and args.fusion_depth < args.negatives:
        raise ValueError(f"--fusion-depth ({args.fusion_depth}) must be >= --negatives ({args.negatives})")
    if not args.rrf_k >= 0 or args.rrf_k == float("inf"):
        raise ValueError(f"--rrf-k must be a finite number >= 0, got {args.rrf_k}")
    if args.model is None and args.method != "bm25":
        raise ValueError(f"--model is required with --method {args.method} (it ranks the corpus)")
    if args.model is None and args.teacher is None:
        raise ValueError("--model or --teacher is required (the teacher scores the rows)")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; expected a rows file name (.jsonl)")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: directory {out.parent} does not exist")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out {out}: exists (pass --overwrite to replace it)")
    return out


def _load(spec: str, option: str) -> Any:
    from jsplade.cli.index import load_encoder

    try:
        return load_encoder(spec)
    except (ValueError, TypeError, OSError) as exc:
        raise type(exc)(f"{option} {spec}: {error_line(exc)}") from None


def load_data(folder: Path, split: str) -> Any:
    """The data set; an empty corpus or no positive at all is an error naming the file or folder."""
    from jsplade.retrieval.beir import find_data_file, load_beir

    data = load_beir(folder, split=split)
    if not data.corpus:
        raise ValueError(f"{find_data_file(folder, 'corpus.jsonl')}: the corpus has no documents")
    if not data.relevant_docs():
        raise ValueError(f"{folder}: no query has a relevant document (score > 0); nothing to mine")
    return data


def run(args: argparse.Namespace) -> int:
    """Everything after argument parsing; library errors propagate to ``main``."""
    out = _check_args(args)
    folder = resolve_data(args.data)
    print(f"{PROG}: loading {folder}", file=sys.stderr)
    data = load_data(folder, args.split)
    positives = data.relevant_docs()
    keep = [qid for qid in data.queries if qid in positives]
    if args.max_queries is not None:
        keep = keep[:args.max_queries]
    positives = {qid: positives[qid] for qid in keep}

    # --method bm25 with a --teacher of its own never uses --model: it is not even loaded.
    needs_model = args.model is not None and (args.method != "bm25" or args.teacher in (None, args.model))
    model = _load(args.model, "--model") if needs_model else None
    teacher = None
    if args.teacher is not None and args.teacher != args.model:
        teacher = _load(args.teacher, "--teacher")
    if args.method != "sparse":
        import bm25s  # noqa: F401 - imported first: its import sets the "bm25s" logger to DEBUG

        logging.getLogger("bm25s").setLevel(logging.WARNING)

    from jsplade.retrieval.mining import mine_hard_negatives, write_rows_jsonl

    print(f"{PROG}: mining {args.negatives} negatives ({args.method}) for {len(keep)} queries over "
          f"{len(data.corpus)} documents", file=sys.stderr)
    t0 = time.perf_counter()
    result = mine_hard_negatives(data.queries, data.corpus, positives, model, teacher=teacher,
                                 method=args.method, negatives=args.negatives, rrf_k=args.rrf_k,
                                 fusion_depth=args.fusion_depth, batch_size=args.batch_size,
                                 max_active_dims=args.max_active_dims,
                                 show_progress_bar=False if args.no_progress else True)
    seconds = time.perf_counter() - t0
    if not result.rows:
        raise ValueError(f"{folder}: no query has {args.negatives} candidate negatives (all {len(result.skipped)} "
                         "skipped); nothing written — lower --negatives or use another --method")
    n = write_rows_jsonl(out, result.records(data.queries, data.corpus, args.labels))

    from jsplade import __version__
    from jsplade.cli.index import model_key
    from jsplade.files import atomic_write_json

    atomic_write_json(manifest_path(out), {
        "format": MANIFEST_FORMAT, "program": PROG, "jsplade_version": __version__,
        "data": str(folder.resolve()), "split": args.split, "method": args.method,
        "model": model_key(args.model) if args.model is not None else None,
        "teacher": model_key(args.teacher if args.teacher is not None else args.model),
        "negatives": args.negatives, "labels": args.labels, "rrf_k": args.rrf_k if args.method == "fused" else None,
        "fusion_depth": args.fusion_depth if args.method == "fused" else None,
        "batch_size": args.batch_size, "max_active_dims": args.max_active_dims, "max_queries": args.max_queries,
        "rows": n, "queries_mined": len(result.mined), "queries_skipped": list(result.skipped),
        "seconds": round(seconds, 3)})
    if result.skipped:
        print(f"{PROG}: skipped {len(result.skipped)} of {len(keep)} queries with fewer than {args.negatives} "
              f"candidates (first: {result.skipped[0]!r}; all listed in {manifest_path(out)})", file=sys.stderr)
    print(f"wrote {out}: {n} rows ({len(result.mined)} queries x their positives, {args.negatives} negatives "
          f"each, label = teacher {args.labels}); {len(result.skipped)} queries skipped; {seconds:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input)."""
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
