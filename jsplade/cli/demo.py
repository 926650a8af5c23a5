"""Main job (core issue stage): encode the v3-gte model-card example with the bundled tiny test model.

The bundled model is a *random tiny model* (hidden 32, 2 layers, random weights) used by the test-suite;
its scores and tokens only show that the pipeline runs end to end, not retrieval quality.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / "tests" / "fixtures" / "sparse_encoder" / "model"

QUERY = "Which planet is known as the Red Planet?"
DOCUMENTS = [
    "Venus is often called Earth's twin because of its similar size and proximity.",
    "Mars, known for its reddish appearance, is often referred to as the Red Planet.",
    "Saturn, famous for its rings, is sometimes mistaken for the Red Planet.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TINY_MODEL),
                        help="SparseEncoder directory or hub id (default: the bundled random tiny model)")
    parser.add_argument("--top-k", type=int, default=8, help="tokens to show per vector")
    args = parser.parse_args(argv)

    from jsplade import SparseEncoder

    enc = SparseEncoder.from_pretrained(args.model)
    if Path(args.model) == TINY_MODEL:
        print("NOTE: this is the bundled RANDOM TINY test model (random weights): the numbers below show that\n"
              "      the pipeline runs, they say nothing about retrieval quality.\n")
    print(enc)
    q = enc.encode_query([QUERY])
    d = enc.encode_document(DOCUMENTS)
    scores = enc.similarity(q, d)[0]
    print(f"\nquery: {QUERY!r}  ({q.nnz} active dims)")
    print("  top tokens:", ", ".join(f"{t}={w:.3f}" for t, w in enc.decode(q[0], top_k=args.top_k)))
    for doc, score, row in sorted(zip(DOCUMENTS, scores, d), key=lambda x: -x[1]):
        print(f"\nscore {score:9.4f}  {doc}")
        print(f"  {row.nnz} active dims; top tokens:",
              ", ".join(f"{t}={w:.3f}" for t, w in enc.decode(row, top_k=args.top_k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
