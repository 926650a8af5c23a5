"""Shared test helpers: fixture locations (inside the project, never ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

# Deterministic, 2-core friendly XLA on CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")

FIXTURES = Path(__file__).resolve().parent / "fixtures"
GTE_FIXTURES = FIXTURES / "gte"
SE_FIXTURES = FIXTURES / "sparse_encoder"
