"""Small file writers the data-reading tests share."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_jsonl(path: Path, rows, gz: bool = False) -> Path:
    """``rows`` (dicts, or str lines written as they are) as JSON lines at ``path``, gzip-compressed when
    ``gz``; parent folders are made. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
    if gz:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path
