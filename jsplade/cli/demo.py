"""The main job (``make demo``): train a small GTE sparse encoder from scratch on generated LIMIT-style
pairs, index and evaluate it on LIMIT-small and LIMIT (rebuilt 50k corpus) next to BM25 and the
published v3-gte numbers; write results JSON, a recall@k plot and the model (sentence-transformers
directory) under --out. See ``jsplade.limit.demo``.
"""

from __future__ import annotations

import argparse
import sys
import time

from jsplade.cli.common import add_verbose_flag, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jsplade-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo", help="output directory (replaced)")
    parser.add_argument("--quick", action="store_true",
                        help="a shortened run for CI: tiny model, a few steps, LIMIT-small only")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 600; quick: 8)")
    parser.add_argument("--no-limit", action="store_true", help="skip the 50k-document LIMIT evaluation")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    from jsplade.limit.demo import DemoSettings, report, run_demo

    settings = DemoSettings.quick_settings(args.out) if args.quick else DemoSettings(out_dir=args.out)
    if args.steps is not None:
        if args.steps < 1:
            print("jsplade-demo: error: --steps must be >= 1", file=sys.stderr)
            return 2
        settings.steps = args.steps
    if args.no_limit:
        settings.with_limit = False
    t0 = time.perf_counter()
    print(f"jsplade demo: training a {settings.layers}-layer, hidden-{settings.hidden_size} GTE sparse encoder "
          f"from scratch ({settings.steps} steps, batch {settings.batch_size}) on generated LIMIT-style pairs",
          flush=True)
    results = run_demo(settings)
    print()
    print(report(results))
    print(f"\nresults: {args.out}/results.json   plot: {args.out}/recall_at_k.png   "
          f"model: {args.out}/model   ({time.perf_counter() - t0:.0f} s in Python)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
