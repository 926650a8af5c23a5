"""jsplade-encode: encode a corpus into shards on disk (``jsplade.retrieval.shards``), resumable.

    jsplade-encode MODEL CORPUS OUT_DIR [--shard-size 10000] [--batch-size 32] [--max-active-dims K]
                   [--prune none|top_k:K|max_ratio:R|abs_value:T|alpha_mass:A] [--quantize FACTOR]
                   [--on-empty error|skip] [--packing] [--devices auto|local|N] [--dtype auto|float32|bfloat16]
                   [--overwrite] [--no-progress]
                   [--coordinator HOST:PORT --num-processes P --process-id I]

MODEL is a sentence-transformers SparseEncoder directory, a jsplade checkpoint directory or a hub id. CORPUS
is a BEIR/MTEB folder (its corpus.jsonl[.gz]), JSON-lines / Parquet / Arrow files, a directory or glob of
them, or a ``datasets`` folder (rows ``_id`` or ``id``, ``text``, optional ``title``). OUT_DIR receives one
``part-NNNNN.safetensors`` per ``--shard-size`` documents and, at the end, ``manifest.json``.

Rerunning the same command after a crash (or kill -9) keeps the finished parts, redoes the rest and ends
with the same bytes as an uninterrupted run; a directory written with other settings is refused
(``--overwrite`` replaces it). ``--dtype auto`` picks the compute dtype from the machine
(``jsplade.backbones.compute.inference_dtype``) and says which and why. ``--devices``: "auto" (every local
accelerator; one device on CPU), "local" (every local device) or a count. With ``--coordinator`` the
command is one process of a multi-host run (``jax.distributed``): start it on every host with its own
``--process-id``; each encodes its share of the parts into the shared OUT_DIR.

Progress (documents, docs/s, tokens/s, ETA) goes to stderr; the last line on stdout is a JSON summary.
Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from jsplade.cli.common import add_verbose_flag, run_program

PROG = "jsplade-encode"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("corpus")
    p.add_argument("out")
    p.add_argument("--shard-size", type=int, default=10000, help="documents per part (default 10000)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-active-dims", type=int, default=None)
    p.add_argument("--prune", default="none", help="none, top_k:K, max_ratio:R, abs_value:T or alpha_mass:A")
    p.add_argument("--quantize", type=float, default=None, metavar="FACTOR",
                   help="store integer impacts round(weight * FACTOR) (e.g. 100)")
    p.add_argument("--on-empty", choices=("error", "skip"), default="error")
    p.add_argument("--packing", action="store_true")
    p.add_argument("--pack-length", type=int, default=512)
    p.add_argument("--devices", default="auto", help="auto, local, or a number of local devices")
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--coordinator", default=None, help="HOST:PORT of process 0 (multi-host run)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    add_verbose_flag(p)
    return p


def _devices(text: str):
    if text == "auto":
        return None
    if text == "local":
        return "local"
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"--devices must be auto, local or a number, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import jax

    if args.coordinator is not None:
        if args.num_processes is None or args.process_id is None:
            raise ValueError("--coordinator needs --num-processes and --process-id")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes meet at barriers
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    elif args.num_processes is not None or args.process_id is not None:
        raise ValueError("--num-processes / --process-id need --coordinator")

    from jsplade.backbones.compute import ComputeOptions, inference_dtype
    from jsplade.retrieval.corpus import encode_corpus
    from jsplade.splade.encoder import SparseEncoder
    from jsplade.splade.pruning import Pruning, Quantization

    from jsplade.retrieval.corpus import corpus_files

    pruning = Pruning.parse(args.prune)  # cheap checks first, before the model loads
    quantization = None if args.quantize is None else Quantization(factor=args.quantize)
    devices = _devices(args.devices)
    corpus_files(args.corpus)
    if args.dtype == "auto":
        dtype, why = inference_dtype()
    else:
        dtype, why = args.dtype, "--dtype"
    encoder = SparseEncoder.load(args.model, compute=ComputeOptions(dtype=dtype)).set_devices(devices)
    if jax.process_index() == 0:
        print(f"{PROG}: compute dtype {dtype} ({why}); {len(encoder.devices)} device(s) per process "
              f"({encoder.devices[0].platform}), {jax.process_count()} process(es)", file=sys.stderr)
    report = encode_corpus(encoder, args.corpus, args.out, shard_size=args.shard_size, batch_size=args.batch_size,
                           max_active_dims=args.max_active_dims, pruning=pruning, quantization=quantization,
                           on_empty=args.on_empty, packing=args.packing, pack_length=args.pack_length,
                           overwrite=args.overwrite, show_progress_bar=not args.no_progress)
    if jax.process_index() == 0:
        print(f"{PROG}: {report.summary()}", file=sys.stderr)
        print(json.dumps({"out": str(report.folder), "docs": report.n_docs, "parts": report.n_parts,
                          "parts_written": report.parts_written, "parts_kept": report.parts_kept,
                          "skipped_empty": report.skipped_empty, "docs_encoded": report.n_docs_encoded,
                          "tokens": report.tokens, "seconds": round(report.seconds, 3),
                          "docs_per_s": round(report.docs_per_second, 2), "dtype": dtype}))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the program; returns the exit code (0 success, 2 bad input)."""
    return run_program(PROG, build_parser(), run, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
