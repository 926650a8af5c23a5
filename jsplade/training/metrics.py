"""Per-step training metrics: a json-lines file (appended, flushed each write) and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping


class MetricsLog:
    """``log(step, metrics)`` → one JSON object per line in ``path`` and TensorBoard scalars (optional).

    Resuming appends; lines for steps at or after ``resume_from_step`` left by a killed run are dropped
    first so the file never holds a step twice.
    """

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, resume_from_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_from_step is not None and self.path.exists():
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", -1) < resume_from_step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a crash
            self.path.write_text("".join(k + "\n" for k in kept))
        elif resume_from_step is None and self.path.exists():
            self.path.unlink()
        self._file = open(self.path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:  # pragma: no cover - optional dependency
                import logging

                logging.getLogger("jsplade").warning("tensorboardX is not installed: no TensorBoard logs")
            else:
                self._tb = SummaryWriter(str(tensorboard_dir))

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()


def _plain(v: Any) -> Any:
    try:
        import numpy as np

        if isinstance(v, np.ndarray) or hasattr(v, "dtype"):
            v = np.asarray(v).item()
    except Exception:  # noqa: BLE001
        pass
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
