"""jsplade-convert: move a sparse encoder between sentence-transformers / safetensors and jsplade checkpoints.

    jsplade-convert to-jax SRC DST [--overwrite]
    jsplade-convert to-hf  SRC DST [--layout st|opensearch] [--naming new|gte] [--step N] [--overwrite]

to-jax: SRC is a sentence-transformers SparseEncoder directory (ST-native or OpenSearch hub layout), a bare
OpenSearch MLM folder with idf.json / query_token_weights.txt (read as the equivalent inference-free
sentence-transformers model), or a hub id; DST becomes a jsplade checkpoint directory (meta JSON, template/, orbax step 0).
to-hf:  SRC is a jsplade checkpoint directory (latest step unless --step) or any SRC that to-jax takes; DST
becomes a SparseEncoder directory that sentence-transformers 5.x/6.x loads. --naming gte writes
transformers' native GteForMaskedLM config and names (no remote code needed); --naming new (default) keeps
the new-impl names of the original checkpoint.

DST is written into a temporary sibling and renamed into place when complete; an existing DST is refused
unless --overwrite. Errors are reported on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from jsplade.backbones.registry import known_namings
from jsplade.cli.common import add_verbose_flag, setup_logging

PROG = "jsplade-convert"
# Show a byte progress bar when the weights to write are at least this large.
PROGRESS_MIN_BYTES = 32 * 1024**2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{to-jax,to-hf}")
    jax_p = sub.add_parser("to-jax", help="sentence-transformers directory or hub id -> jsplade checkpoint",
                           description="Convert a SparseEncoder directory (or hub id) into a jsplade checkpoint "
                                       "directory (orbax step 0).")
    jax_p.add_argument("src", help="SparseEncoder directory or Hugging Face hub id (owner/name)")
    jax_p.add_argument("dst", help="jsplade checkpoint directory to create")
    jax_p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    hf_p = sub.add_parser("to-hf", help="jsplade checkpoint (or SparseEncoder directory) -> sentence-transformers",
                          description="Export a jsplade checkpoint directory or a SparseEncoder directory as a "
                                      "sentence-transformers SparseEncoder directory.")
    hf_p.add_argument("src", help="jsplade checkpoint directory or SparseEncoder directory / hub id")
    hf_p.add_argument("dst", help="SparseEncoder directory to create")
    hf_p.add_argument("--layout", choices=("st", "opensearch"), default="st",
                      help="st: transformer in document_0_MLMTransformer/ (default); opensearch: transformer in the "
                           "root, plus idf.json and query_token_weights.txt")
    hf_p.add_argument("--naming", default=None, choices=known_namings(),
                      help="weight names of the document model (default: the backbone's canonical naming). "
                           "GTE: new = new-impl NewForMaskedLM (remote code, default); gte = transformers' native "
                           "GteForMaskedLM (no remote code). BERT family: bert, roberta or distilbert, the one "
                           "its model type has")
    hf_p.add_argument("--step", type=int, default=None, help="checkpoint step to export (default: the latest)")
    hf_p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    for p in (jax_p, hf_p):
        add_verbose_flag(p)
    return parser


class _ByteBar:
    """``progress(done, total)`` callback drawing a tqdm bar in bytes once the total is large enough."""

    def __init__(self, min_bytes: int | None = None):
        self.min_bytes = PROGRESS_MIN_BYTES if min_bytes is None else min_bytes
        self.bar, self.last = None, 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            if total < self.min_bytes:
                return
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="writing weights",
                            file=sys.stderr)
        self.bar.update(done - self.last)
        self.last = done

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input or refused destination)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from jsplade.backbones.protocol import ConfigError
    from jsplade.checkpoints.convert import to_hf, to_jax

    bar = _ByteBar()
    try:
        print(f"{PROG}: {args.command} {args.src} -> {args.dst}", file=sys.stderr)
        if args.command == "to-jax":
            summary = to_jax(args.src, args.dst, overwrite=args.overwrite)
        else:
            summary = to_hf(args.src, args.dst, layout=args.layout, naming=args.naming, step=args.step,
                            overwrite=args.overwrite, progress=bar)
    except (ValueError, TypeError, OSError, ConfigError) as exc:
        bar.close()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    print(summary.format())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
