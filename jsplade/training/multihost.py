"""Small host-level collectives for a multi-process training run (``jax.distributed``).

Every function here is called by every process, in the same order; on one process each is the identity.
They carry a few integers or a small JSON document per process (lengths, row ids, stream positions), not
training data, so they are built on ``jax.experimental.multihost_utils.process_allgather``.
"""

from __future__ import annotations

import json
from typing import Any

import jax
import numpy as np


def allgather_ints(values) -> np.ndarray:
    """``values`` (an int array of the same shape on every process) from all processes: [P, *shape]."""
    local = np.asarray(values, np.int64)
    if jax.process_count() == 1:
        return local[None]
    from jax.experimental import multihost_utils

    # int32 on the wire (x64 is off); the values gathered here are lengths, flags and row ids.
    if local.size and (local.max() > np.iinfo(np.int32).max or local.min() < np.iinfo(np.int32).min):
        raise ValueError("allgather_ints: a value does not fit in int32")
    out = multihost_utils.process_allgather(local.astype(np.int32), tiled=False)
    return np.asarray(out, np.int64).reshape((jax.process_count(), *local.shape))


def allgather_json(obj: Any) -> list[Any]:
    """A JSON-able object from every process, in process order."""
    raw = np.frombuffer(json.dumps(obj, sort_keys=True).encode(), np.uint8)
    if jax.process_count() == 1:
        return [json.loads(raw.tobytes())]
    sizes = allgather_ints([raw.size])[:, 0]
    width = 1 << max(0, int(sizes.max()) - 1).bit_length()  # a power of two: few gather programs compile
    padded = np.zeros(width, np.int64)
    padded[:raw.size] = raw
    rows = allgather_ints(padded)
    return [json.loads(rows[p, :sizes[p]].astype(np.uint8).tobytes()) for p in range(rows.shape[0])]


class PeerFailed(RuntimeError):
    """Another process of the run failed (its own error is in its log); this one stops with it."""


def agree(ok: bool, values, what: str) -> np.ndarray:
    """Every process reports whether its part of a collective step succeeded (``ok``) and a few ints
    (``values``, the same length everywhere). Returns [P, n] values when all succeeded; otherwise raises
    ``PeerFailed`` on the processes that did succeed, naming those that did not (a failing process raises
    its own error after this call), so no process waits forever on a collective the others never reach."""
    vals = np.asarray(values, np.int64).reshape(-1)
    rows = allgather_ints(np.concatenate([[1 if ok else 0], vals]))
    failed = [p for p in range(rows.shape[0]) if rows[p, 0] == 0]
    if failed and ok:
        raise PeerFailed(f"process(es) {failed} of {rows.shape[0]} failed while {what}; see their logs")
    return rows[:, 1:]
