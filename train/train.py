#!/usr/bin/env python3
"""Train a sparse encoder: ``python train/train.py train/configs/limit_samples_2.toml --base-model DIR``.

Same program as the ``jsplade-train`` console script; all logic lives in ``jsplade.training.trainer``.
"""

import sys

from jsplade.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
