"""The LIMIT distillation recipe's inputs: a LIMIT-style data set to mine, and a fresh student model.

    python -m jsplade.cli.limit_data OUT_DIR [--documents 400] [--items-per-doc 12,18] [--seed 0]
                                     [--student DIR] [--overwrite]

OUT_DIR gets a BEIR-format folder (corpus.jsonl, queries.jsonl, qrels.jsonl) built only from items that no
LIMIT or LIMIT-small query asks for (``jsplade.limit.data.generate_limit_corpus``: one "Who likes X?" query per
item some document lists, every document that lists X judged relevant). --student DIR also writes a freshly
initialised encoder (the demo's: a 2-layer, hidden-64 GTE with the copy-friendly head and IDF query weights
over this corpus, ``jsplade.limit.demo.build_encoder``) as a sentence-transformers directory, to train with
``jsplade-train --base-model DIR`` (see ``train/configs/limit_distill_kl.toml``). Both are written atomically;
existing ones are refused unless --overwrite. Errors: one line on stderr, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jsplade.cli.common import add_verbose_flag, run_program

PROG = "jsplade-limit-data"


def _pair(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two integers LO,HI such as 12,18, got {text!r}")
    return int(parts[0]), int(parts[1])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="data set folder to write")
    parser.add_argument("--documents", type=int, default=400, help="corpus size (default 400)")
    parser.add_argument("--items-per-doc", type=_pair, default=(12, 18), metavar="LO,HI",
                        help="items each document lists, drawn uniformly from LO..HI (default 12,18)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--student", default=None, metavar="DIR", help="also write a fresh student model here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output folders")
    add_verbose_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from jsplade.limit.data import generate_limit_corpus, limit_paths
    from jsplade.retrieval.beir import write_beir

    out = Path(args.out)
    student = Path(args.student) if args.student is not None else None
    for path, option in ((out, "OUT_DIR"), (student, "--student")):
        if path is not None and path.exists() and not args.overwrite:
            raise FileExistsError(f"{option} {path}: exists (pass --overwrite to replace it)")
    paths = limit_paths()
    data = generate_limit_corpus(paths.items, [paths.limit / "queries.jsonl", paths.limit_small / "queries.jsonl"],
                                 args.documents, items_per_doc=args.items_per_doc, seed=args.seed)
    write_beir(out, data, overwrite=args.overwrite)
    n_judged = sum(len(v) for v in data.qrels.values())
    print(f"wrote {out}: {len(data.corpus)} documents, {len(data.queries)} queries, {n_judged} judgements")
    if student is not None:
        from jsplade.limit.demo import DemoSettings, build_encoder

        encoder = build_encoder(DemoSettings(seed=args.seed), list(data.corpus.values()))
        encoder.save(student, naming="new", overwrite=args.overwrite)
        print(f"wrote {student}: a fresh student encoder ({encoder.shape}, vocabulary {encoder.vocab_size})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input)."""
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
