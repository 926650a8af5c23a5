"""Training data larger than memory: lazy shard readers and a resumable no-duplicates batch stream.

* ``list_shards``: the shard files of a source (a directory, a glob, a ``datasets`` folder, or a list).
* ``ShardReader``: validated rows ``(id, texts, label)`` read lazily, one Parquet row group / Arrow record
  batch / JSON line at a time, for one process of a multi-host job.
* ``StreamingBatches``: seeded, windowed-shuffle ``no_duplicates`` batches over a ``ShardReader``, with a
  small JSON-able ``state()`` and ``from_state`` that resumes exactly.

Shards
    JSON lines (``.jsonl``/``.ndjson``, optionally ``.gz``), Parquet (``.parquet``, read one row group at a
    time with pyarrow, only the needed columns), Arrow (``.arrow`` IPC stream or file, memory-mapped; a
    folder written by ``datasets.Dataset.save_to_disk`` is read from its ``state.json`` + ``data-*.arrow``
    without importing ``datasets``). A directory lists its supported files (sorted by name; a directory
    with ``state.json`` is a ``datasets`` folder: its files in ``state.json`` order); a glob (``*?[`` in
    the string) lists its matches sorted, keeping supported files; a list keeps its order. The shard
    index ``s`` is the position in that list; a row id is ``(s, r)`` with ``r`` the 0-based row of the
    file (JSON lines: blank lines do not count, as in ``load_pairs``).

Columns and validation (the rules of ``jsplade.training.data.load_pairs``)
    ``columns`` chooses and orders the text columns (anchor/query, positive, negatives…); without it, the
    first non-empty shard's columns in file order minus ``LABEL_COLUMNS``. The label column is the first
    of ``label``, ``labels``, ``score``, ``scores`` that the first shard has (the others are ignored, as
    by sentence-transformers' collator); it is split off and yielded as a float or a tuple of floats
    (finite; every row the same kind and length); ``dataset_name`` is dropped. JSON-lines rows that are
    arrays are positional (named anchor, positive, negative_1… or by ``columns``). Every shard's columns
    are checked when the reader is built (a shard whose text or label columns differ from the first
    shard's is an error naming both files); every row is checked when read: a missing column, a
    non-string (or null) text, a missing label, a label that is not a finite float / non-empty list
    of finite floats or whose kind or length differs from earlier rows, a row with a column the first
    row lacks (without ``columns``) — each error names the file and the row. Empty texts are allowed, as
    in ``load_pairs``.

Process assignment (no coordination; every process computes the same rule from the shard list)
    With S shards and P = ``process_count`` processes, ``assignment="auto"`` is ``"shard"`` when S >= P,
    else ``"row"``.
    ``"shard"``: process p reads the whole shards s with ``s % P == p``.
    ``"row"``:   process p reads, in every shard, the rows r with ``r % P == p`` (Parquet and Arrow take
    only those rows from each row group / record batch and skip groups holding none; JSON lines are
    scanned by every process but only the own lines are parsed).
    Either way each row of the epoch belongs to exactly one process. Per-process row (and so batch)
    counts are not equalised: "shard" balances only as well as the shards' sizes; "row" within one row
    per shard. The trainer runs a fixed number of steps (``max_steps``), each process moving on to its
    next epoch when its own rows run out.

Batching (per process, epoch e, seed ``seed``; N = ``buffer_size`` >= ``batch_size`` = B)
    1. Shard order: the process's shards permuted by ``numpy.random.default_rng([seed, e, 1])``
       (``shard_order(e)``); rows are read in that shard order and, within a shard, in file order.
       That sequence is the epoch stream.
    2. Windows: window 0 holds the first N rows of the epoch stream; window w+1 holds the rows window w
       left over (see 4) followed by the next rows of the epoch stream, N rows in all (fewer at the end).
       A window is final when the epoch stream has no row after it.
    3. In each window the rows (leftovers first, then the new rows, in read order) are visited in the
       order of ``numpy.random.default_rng([seed, e, 2, process_index, w]).permutation(n_rows)``
       (``window_permutation``) with ``greedy_no_duplicate_batches``' rule: a scan of the window's
       unused rows in that order accepts a row unless one of its texts (exact strings, compared across
       all text columns; labels do not count) occurs among the rows already accepted into this batch;
       the batch is complete at B rows.
    4. A full scan is emitted. In the final window a short scan is emitted (dropped with its rows when
       ``drop_last``) and scanning goes on until no row is left, exactly as ``greedy_no_duplicate_batches``
       on that window. In any other window the first short scan ends the window and its rows, with every
       other unused row, are left over to window w+1 (typically fewer than B rows) — except when it is
       the window's first scan (N rows that cannot fill one batch): then it is emitted (or dropped),
       so every window makes progress.
    Hence two rows can meet in a batch only if they are in the same window: rows at most about N apart
    in the epoch stream (plus the few leftovers carried forward). When N is at least the process's rows,
    an epoch is exactly ``greedy_no_duplicate_batches(window_permutation(e, 0, n), rows, B)`` over the
    epoch stream. Every row of the process is in exactly one batch of the epoch, except the rows of
    dropped short batches (``drop_last``), as in ``NoDuplicatesBatchSampler``; an epoch without any batch
    is an error (the stream would never advance).

State and memory
    ``state()`` after any batch is ``{"format", "epoch", "batches_in_epoch", "window", "shard_cursor",
    "row", "leftover", "scans", "label_shape", "config", "shards"}``: the current window starts at
    position ``row`` (file row) of shard ``shard_order(epoch)[shard_cursor]`` and begins with the
    ``leftover`` rows (row ids ``[s, r]``); ``scans`` scans of it are done. The RNG needs no state: every
    permutation is a function of (seed, epoch, window). ``from_state`` re-reads the leftovers by id and
    the window's new rows from the recorded position, replays the scans and continues; the batches are
    exactly those of the uninterrupted stream. Memory is flat in the number of rows: the window (N rows),
    the reader's current row group / record batch, and per-shard paths; nothing per row of the data.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np

from jsplade.files import ArrowShard, ParquetShard, is_text_type, jsonl_lines, list_shards, shard_kind
from jsplade.training.data import LABEL_COLUMNS, _default_names, check_columns
from jsplade.training.schedules import check_int

__all__ = ["list_shards", "ShardReader", "StreamRow", "StreamBatch", "StreamingBatches", "count_rows",
           "LABEL_NAMES", "STATE_FORMAT"]

# Label columns in order of preference (the first present is split off and yielded); the other LABEL_COLUMNS
# entries (dataset_name) are metadata, dropped.
LABEL_NAMES = tuple(c for c in LABEL_COLUMNS if c != "dataset_name")
STATE_FORMAT = "jsplade.streaming/1"
_TAG_SHARDS, _TAG_WINDOW = 1, 2


# --------------------------------------------------------------------------- rows
class StreamRow(NamedTuple):
    """One validated row: ``id`` = (shard index, row of the file), ``texts`` in column order, ``label``."""

    id: tuple[int, int]
    texts: tuple[str, ...]
    label: float | tuple[float, ...] | None


class _Header(NamedTuple):
    kind: str | None  # "mapping", "sequence", or None for a shard without rows (JSON lines only)
    names: tuple[str, ...]  # mapping: the file's columns in order
    length: int  # sequence: values per row


class _Select:
    """Which file rows of a shard to read: a stride ``r % P == p`` from ``start`` or an explicit sorted set."""

    def __init__(self, start: int = 0, stride: tuple[int, int] | None = None, rows: np.ndarray | None = None):
        self.start, self.stride, self.rows = start, stride, rows

    def within(self, lo: int, hi: int) -> np.ndarray:
        lo = max(lo, self.start)
        if lo >= hi:
            return np.zeros(0, np.int64)
        if self.rows is not None:
            return self.rows[(self.rows >= lo) & (self.rows < hi)]
        if self.stride is None:
            return np.arange(lo, hi, dtype=np.int64)
        P, p = self.stride
        return np.arange(lo + (p - lo) % P, hi, P, dtype=np.int64)

    def wants(self, r: int) -> bool:
        if r < self.start:
            return False
        if self.rows is not None:
            i = int(np.searchsorted(self.rows, r))
            return i < len(self.rows) and int(self.rows[i]) == r
        return self.stride is None or r % self.stride[0] == self.stride[1]

    def past_end(self, r: int) -> bool:
        return self.rows is not None and (len(self.rows) == 0 or r > int(self.rows[-1]))


class ShardReader:
    """Validated rows of a sharded source, read lazily, for process ``process_index`` of ``process_count``.

    ``source``: see ``list_shards``; ``columns``: the text columns in role order (default: the first
    shard's, minus label/metadata columns); ``assignment``: "auto", "shard" or "row" (module docstring).
    Attributes: ``shards`` (paths), ``columns``, ``label_column`` (or None), ``assignment`` (resolved),
    ``own_shards`` (indices this process reads). Every shard's columns are checked here.
    """

    def __init__(self, source: Any, columns: Sequence[str] | None = None, *, process_index: int = 0,
                 process_count: int = 1, assignment: str = "auto"):
        self.process_count = check_int(process_count, "process_count", 1)
        self.process_index = check_int(process_index, "process_index", 0)
        if self.process_index >= self.process_count:
            raise ValueError(f"process_index {process_index} must be < process_count {process_count}")
        if assignment not in ("auto", "shard", "row"):
            raise ValueError(f"assignment must be 'auto', 'shard' or 'row', got {assignment!r}")
        self.requested_columns = check_columns(columns)
        self.shards = list_shards(source)
        self.kinds = [shard_kind(p) or "arrow" for p in self.shards]  # datasets folders hold .arrow files
        S, P = len(self.shards), self.process_count
        if assignment == "auto":
            assignment = "shard" if S >= P else "row"
        if assignment == "shard" and S < P:
            raise ValueError(f"assignment 'shard' needs at least as many shards as processes ({S} < {P})")
        self.assignment = assignment
        self.own_shards = [s for s in range(S) if s % P == self.process_index] if assignment == "shard" \
            else list(range(S))
        self._stride = (P, self.process_index) if assignment == "row" and P > 1 else None
        self.label_shape: str | int | None = None  # "scalar" or the list length, once a labelled row is read
        self._resolve_columns([self._header(s) for s in range(S)])

    # ---------------------------------------------------------------- columns
    def _header(self, s: int) -> _Header:
        path, kind = self.shards[s], self.kinds[s]
        if kind == "jsonl":
            for line_no, line in jsonl_lines(path):
                if not line.strip():
                    continue
                obj = _parse_json(line, path, line_no, 0)
                if isinstance(obj, dict):
                    return _Header("mapping", tuple(obj.keys()), 0)
                if isinstance(obj, list):
                    return _Header("sequence", (), len(obj))
                raise TypeError(f"{path}: row 0 (line {line_no}) must be a JSON object or array of texts, "
                                f"got {type(obj).__name__}")
            return _Header(None, (), 0)
        shard = ParquetShard(path) if kind == "parquet" else ArrowShard(path)
        shard.close()
        return _Header("mapping", tuple(shard.names), 0)

    def _resolve_columns(self, headers: list[_Header]) -> None:
        present = [s for s, h in enumerate(headers) if h.kind is not None]
        if not present:
            raise ValueError(f"{self.shards[0]}: the dataset is empty (no row in any of {len(headers)} shards)")
        ref_s = present[0]
        ref, ref_path = headers[ref_s], self.shards[ref_s]
        cols = self.requested_columns
        self.kind = ref.kind
        if ref.kind == "sequence":
            if cols is not None and len(cols) != ref.length:
                raise ValueError(f"{ref_path}: columns names {len(cols)} columns but row 0 has {ref.length} values")
            self.columns = tuple(cols) if cols is not None else tuple(_default_names(ref.length))
            self.label_column = None
        else:
            self.label_column = _label_column(ref.names)
            if cols is None:
                self.columns = tuple(c for c in ref.names if c not in LABEL_COLUMNS)
            else:
                missing = [c for c in cols if c not in ref.names]
                if missing:
                    raise ValueError(f"{ref_path}: no column {missing[0]!r} (columns are {list(ref.names)})")
                self.columns = tuple(cols)
        if len(self.columns) < 2:
            raise ValueError(f"{ref_path}: need at least 2 columns (query, positive), got {list(self.columns)}")
        for s in present[1:]:
            self._check_header(s, headers[s], ref_path)
        self._read_columns = list(self.columns) + ([self.label_column] if self.label_column else [])
        self._ref_path = ref_path

    def _check_header(self, s: int, h: _Header, ref_path: Path) -> None:
        path = self.shards[s]
        if h.kind != self.kind:
            raise ValueError(f"{path}: rows are {'arrays' if h.kind == 'sequence' else 'objects'}, those of the "
                             f"first shard {ref_path} are {'arrays' if self.kind == 'sequence' else 'objects'}")
        if h.kind == "sequence":
            if h.length != len(self.columns):
                raise ValueError(f"{path}: rows have {h.length} values, those of the first shard {ref_path} "
                                 f"have {len(self.columns)}")
            return
        label = _label_column(h.names)
        if label != self.label_column:
            raise ValueError(f"{path}: label column {label!r} differs from that of the first shard {ref_path} "
                             f"({self.label_column!r})")
        if self.requested_columns is None:
            texts = [c for c in h.names if c not in LABEL_COLUMNS]
            if set(texts) != set(self.columns):
                raise ValueError(f"{path}: columns {texts} differ from those of the first shard {ref_path} "
                                 f"({list(self.columns)}); pass columns=[...] to select columns")
        else:
            missing = [c for c in self.columns if c not in h.names]
            if missing:
                raise ValueError(f"{path}: no column {missing[0]!r} (columns are {list(h.names)}; the first "
                                 f"shard {ref_path} has it)")

    # ---------------------------------------------------------------- reading
    def iter_rows(self) -> Iterator[StreamRow]:
        """This process's rows, shards in list order, rows in file order."""
        for _, s, r, texts, label in self._iter(self.own_shards, 0, 0):
            yield StreamRow((s, r), texts, label)

    def _iter(self, order: Sequence[int], cursor: int, row: int) -> Iterator[tuple]:
        """(cursor, shard, row, texts, label) from position (cursor, row) of the shard order."""
        for c in range(cursor, len(order)):
            s = order[c]
            for r, texts, label in self._shard_rows(s, _Select(row if c == cursor else 0, self._stride)):
                yield c, s, r, texts, label

    def read_ids(self, ids: Sequence[tuple[int, int]]) -> list[StreamRow]:
        """The rows of the given ids, in the given order (each shard read once, only where needed)."""
        by_shard: dict[int, set[int]] = {}
        for s, r in ids:
            if not 0 <= s < len(self.shards) or r < 0:
                raise ValueError(f"row id {[s, r]} is out of range ({len(self.shards)} shards)")
            by_shard.setdefault(s, set()).add(r)
        found: dict[tuple[int, int], StreamRow] = {}
        for s, rows in by_shard.items():
            for r, texts, label in self._shard_rows(s, _Select(rows=np.array(sorted(rows), np.int64))):
                found[(s, r)] = StreamRow((s, r), texts, label)
            for r in rows:
                if (s, r) not in found:
                    raise ValueError(f"{self.shards[s]}: has no row {r} (the shard changed since the state was taken)")
        return [found[(s, r)] for s, r in ids]

    def _shard_rows(self, s: int, select: _Select) -> Iterator[tuple[int, tuple[str, ...], Any]]:
        if self.kinds[s] == "jsonl":
            yield from self._jsonl_rows(s, select)
            return
        path = self.shards[s]
        shard = ParquetShard(path) if self.kinds[s] == "parquet" else ArrowShard(path)
        try:
            # the file may have been replaced since the reader was built
            self._check_header(s, _Header("mapping", tuple(shard.names), 0), self._ref_path)
            for off, n, load in shard.chunks(self._read_columns):
                if select.past_end(off):
                    return
                idx = select.within(off, off + n)
                if len(idx) == 0:
                    continue
                table = load()
                if len(idx) != n:
                    table = table.take(idx - off)
                yield from self._table_rows(table, idx, path)
        finally:
            shard.close()

    def _table_rows(self, table, idx: np.ndarray, path: Path) -> Iterator[tuple[int, tuple[str, ...], Any]]:
        cols = []
        for name in self.columns:
            col = table.column(name)
            values = col.to_pylist()
            if not is_text_type(col.type) or col.null_count:
                for j, v in enumerate(values):
                    if not isinstance(v, str):
                        raise TypeError(f"{path}: row {int(idx[j])}, column {name!r}: expected a text string, got "
                                        f"{type(v).__name__} {v!r:.60}")
            cols.append(values)
        rows = idx.tolist()
        if self.label_column is None:
            for r, texts in zip(rows, zip(*cols)):
                yield r, texts, None
        else:
            labels = table.column(self.label_column).to_pylist()
            for r, texts, v in zip(rows, zip(*cols), labels):
                yield r, texts, self._label(v, path, r)

    def _jsonl_rows(self, s: int, select: _Select) -> Iterator[tuple[int, tuple[str, ...], Any]]:
        path = self.shards[s]
        names, explicit = self.columns, self.requested_columns is not None
        allowed = set(names) | set(LABEL_COLUMNS)
        r = -1
        for line_no, line in jsonl_lines(path):
            if not line.strip():
                continue
            r += 1
            if select.past_end(r):
                return
            if not select.wants(r):
                continue
            obj = _parse_json(line, path, line_no, r)
            where = f"{path}: row {r} (line {line_no})"
            if self.kind == "sequence":
                if not isinstance(obj, list):
                    raise TypeError(f"{where} is a {type(obj).__name__}, rows of this data are arrays of texts")
                if len(obj) != len(names):
                    raise ValueError(f"{where} has {len(obj)} values, expected {len(names)}")
                values, label = obj, None
            else:
                if not isinstance(obj, dict):
                    raise TypeError(f"{where} is a {type(obj).__name__}, rows of this data are objects")
                for c in names:
                    if c not in obj:
                        raise ValueError(f"{where} is missing column {c!r}")
                if not explicit:
                    extra = [k for k in obj if k not in allowed]
                    if extra:
                        raise ValueError(f"{where} has column {extra[0]!r} that the first row does not have; "
                                         "pass columns=[...] to select columns")
                if self.label_column is not None and self.label_column not in obj:
                    raise ValueError(f"{where} has no {self.label_column!r} (the first row has this label column)")
                values = [obj[c] for c in names]
                label = self._label(obj[self.label_column], path, r) if self.label_column else None
            for name, v in zip(names, values):
                if not isinstance(v, str):
                    raise TypeError(f"{path}: row {r}, column {name!r}: expected a text string, got "
                                    f"{type(v).__name__} {v!r:.60}")
            yield r, tuple(values), label

    def _label(self, v: Any, path: Path, r: int) -> float | tuple[float, ...]:
        def bad(what: str):
            return ValueError(f"{path}: row {r}, column {self.label_column!r}: expected a float or a list of "
                              f"floats, got {what}")

        def number(x: Any) -> float:
            if isinstance(x, bool) or not isinstance(x, numbers.Real):
                raise bad(f"{type(x).__name__} {x!r:.60}")
            if not math.isfinite(x):
                raise bad(f"the non-finite {x!r}")
            return float(x)

        if isinstance(v, (list, tuple)):
            if not v:
                raise bad("an empty list")
            shape, out = len(v), tuple(number(x) for x in v)
        else:
            shape, out = "scalar", number(v)
        if self.label_shape is None:
            self.label_shape = shape
        elif shape != self.label_shape:
            have = "a float" if shape == "scalar" else f"a list of {shape} floats"
            earlier = "floats" if self.label_shape == "scalar" else f"lists of {self.label_shape} floats"
            raise ValueError(f"{path}: row {r}, column {self.label_column!r}: {have}, earlier rows have {earlier}")
        return out


def _label_column(names: Sequence[str]) -> str | None:
    """The first of ``LABEL_NAMES`` among ``names`` (the reference collator's order of preference)."""
    return next((c for c in LABEL_NAMES if c in names), None)


def _parse_json(line: str, path: Path, line_no: int, r: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: line {line_no} (row {r}) is not valid JSON ({exc})") from None


def count_rows(source: Any, *, process_index: int = 0, process_count: int = 1, assignment: str = "auto") -> int:
    """Rows this process reads per epoch (Parquet/Arrow from metadata; JSON lines are scanned, not parsed)."""
    reader = ShardReader(source, process_index=process_index, process_count=process_count, assignment=assignment)
    total = 0
    for s in reader.own_shards:
        if reader.kinds[s] == "jsonl":
            n = sum(1 for _, line in jsonl_lines(reader.shards[s]) if line.strip())
            chunks = [(0, n)]
        else:
            shard = ParquetShard(reader.shards[s]) if reader.kinds[s] == "parquet" else ArrowShard(reader.shards[s])
            try:
                chunks = [(off, n) for off, n, _ in shard.chunks(reader._read_columns)]
            finally:
                shard.close()
        select = _Select(0, reader._stride)
        total += sum(len(select.within(off, off + n)) for off, n in chunks)
    return total


# --------------------------------------------------------------------------- batches
@dataclass(frozen=True)
class StreamBatch:
    """One batch: ``ids`` (shard, row) per row, ``rows`` (texts in column order), ``labels`` (None when the
    data has no label column), ``epoch``."""

    epoch: int
    ids: tuple[tuple[int, int], ...]
    rows: tuple[tuple[str, ...], ...]
    labels: tuple[Any, ...] | None

    def __len__(self) -> int:
        return len(self.ids)


class _Lookahead:
    def __init__(self, it: Iterator[tuple], end: tuple[int, int]):
        self._it, self._end = it, end
        self._next = next(it, None)

    def pop(self) -> tuple | None:
        item = self._next
        if item is not None:
            self._next = next(self._it, None)
        return item

    def position(self) -> tuple[int, int]:
        """(cursor, row) of the next row to read; the end of the order when none is left."""
        return (self._next[0], self._next[2]) if self._next is not None else self._end


class _Window:
    """One window's rows and its no-duplicates scans.

    The unused rows, in visiting order, are always ``pending`` (rows a scan passed over) followed by
    ``order[frontier:]`` (rows no scan reached yet), so a scan costs the rows it visits, not the window.
    """

    def __init__(self, rows: list[StreamRow], perm: np.ndarray, final: bool, batch_size: int, drop_last: bool,
                 next_start: tuple[int, int]):
        self.rows, self.final, self.next_start = rows, final, next_start
        self.bs, self.drop_last = batch_size, drop_last
        self.values = [set(row.texts) for row in rows]
        self.order = perm.tolist()
        self.pending: list[int] = []
        self.frontier, self.scans, self.done = 0, 0, False

    def scan(self) -> tuple[str, list[int]] | None:
        """The next scan: ("emit" | "drop", row positions), or None when the window is finished."""
        if self.done or not (self.pending or self.frontier < len(self.order)):
            self.done = True
            return None
        values, bs = self.values, self.bs
        seen: set[str] = set()
        batch: list[int] = []
        keep: list[int] = []
        pending = self.pending
        for j, k in enumerate(pending):
            if not seen.isdisjoint(values[k]):
                keep.append(k)
                continue
            batch.append(k)
            if len(batch) == bs:
                new_pending, frontier = keep + pending[j + 1:], self.frontier
                break
            seen |= values[k]
        else:
            order, n, i = self.order, len(self.order), self.frontier
            while i < n:
                k = order[i]
                i += 1
                if not seen.isdisjoint(values[k]):
                    keep.append(k)
                    continue
                batch.append(k)
                if len(batch) == bs:
                    break
                seen |= values[k]
            new_pending, frontier = keep, i
        short = len(batch) < bs
        if short and not self.final:
            self.done = True
            if self.scans > 0:
                return None  # the window ends; its unused rows go over to the next window
            # a non-final window that cannot fill one batch: emit (or drop) the scan, leave the rest over
        self.pending, self.frontier = new_pending, frontier
        self.scans += 1
        return ("drop" if short and self.drop_last else "emit"), batch

    def leftover(self) -> list[tuple[int, int]]:
        return [self.rows[k].id for k in self.pending + self.order[self.frontier:]]


class StreamingBatches:
    """Batches of ``batch_size`` rows for one process, epoch after epoch (``epochs`` of them; None: no end).

    The rules (shard order, windows of ``buffer_size`` rows, no-duplicates scans, process assignment) are
    in the module docstring. Iterate it (``next``) for ``StreamBatch`` objects; ``state()`` after any batch
    and ``StreamingBatches.from_state(source, state)`` continue with exactly the batches that would have
    followed. ``columns``/``process_index``/``process_count``/``assignment`` as in ``ShardReader``.
    """

    def __init__(self, source: Any, batch_size: int, *, seed: int, buffer_size: int,
                 columns: Sequence[str] | None = None, drop_last: bool = False, epochs: int | None = None,
                 process_index: int = 0, process_count: int = 1, assignment: str = "auto"):
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.buffer_size = check_int(buffer_size, "buffer_size", 1)
        if self.buffer_size < self.batch_size:
            raise ValueError(f"buffer_size {buffer_size} must be >= batch_size {batch_size}")
        self.seed = check_int(seed, "seed", 0)
        self.epochs = None if epochs is None else check_int(epochs, "epochs", 0)
        self.drop_last = bool(drop_last)
        self.reader = ShardReader(source, columns, process_index=process_index, process_count=process_count,
                                  assignment=assignment)
        self.process_index, self.process_count = self.reader.process_index, self.reader.process_count
        self._pos = {"epoch": 0, "batches_in_epoch": 0, "window": 0, "shard_cursor": 0, "row": 0,
                     "leftover": [], "scans": 0}
        self._window: _Window | None = None
        self._rows: _Lookahead | None = None
        self._order: tuple[int, list[int]] | None = None

    # ---------------------------------------------------------------- rules
    @property
    def columns(self) -> tuple[str, ...]:
        return self.reader.columns

    @property
    def label_column(self) -> str | None:
        return self.reader.label_column

    def shard_order(self, epoch: int) -> list[int]:
        """The shard indices this process reads in ``epoch``, in reading order."""
        own = self.reader.own_shards
        perm = np.random.default_rng([self.seed, check_int(epoch, "epoch", 0), _TAG_SHARDS]).permutation(len(own))
        return [own[k] for k in perm]

    def window_permutation(self, epoch: int, window: int, n_rows: int) -> np.ndarray:
        """The visiting order of the ``n_rows`` rows of ``window`` of ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, _TAG_WINDOW, self.process_index, window])
        return rng.permutation(n_rows)

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> StreamingBatches:
        return self

    def __next__(self) -> StreamBatch:
        pos = self._pos
        while True:
            if self.epochs is not None and pos["epoch"] >= self.epochs:
                raise StopIteration
            if self._window is None:
                self._load_window()
            w = self._window
            step = w.scan()
            if step is not None:
                pos["scans"] = w.scans
                what, ks = step
                if what == "drop":
                    continue
                pos["batches_in_epoch"] += 1
                rows = [w.rows[k] for k in ks]
                return StreamBatch(pos["epoch"], tuple(r.id for r in rows), tuple(r.texts for r in rows),
                                   tuple(r.label for r in rows) if self.label_column else None)
            self._window = None
            if w.final:
                if pos["batches_in_epoch"] == 0:
                    raise ValueError(f"epoch {pos['epoch']} gives process {self.process_index} of "
                                     f"{self.process_count} no batch: its share of the data is empty or, with "
                                     f"drop_last, smaller than one batch of {self.batch_size} rows")
                self._pos = pos = {"epoch": pos["epoch"] + 1, "batches_in_epoch": 0, "window": 0,
                                   "shard_cursor": 0, "row": 0, "leftover": [], "scans": 0}
                self._rows = None
            else:
                pos.update(window=pos["window"] + 1, shard_cursor=w.next_start[0], row=w.next_start[1],
                           leftover=[list(i) for i in w.leftover()], scans=0)

    def _load_window(self) -> None:
        pos = self._pos
        epoch = pos["epoch"]
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, self.shard_order(epoch))
        order = self._order[1]
        start = (pos["shard_cursor"], pos["row"])
        if self._rows is None or self._rows.position() != start:
            self._rows = _Lookahead(self.reader._iter(order, *start), (len(order), 0))
        rows = self.reader.read_ids([tuple(i) for i in pos["leftover"]]) if pos["leftover"] else []
        while len(rows) < self.buffer_size:
            item = self._rows.pop()
            if item is None:
                break
            rows.append(StreamRow((item[1], item[2]), item[3], item[4]))
        perm = self.window_permutation(epoch, pos["window"], len(rows))
        w = _Window(rows, perm, self._rows.position() == (len(order), 0), self.batch_size, self.drop_last,
                    self._rows.position())
        for _ in range(pos["scans"]):  # resuming: replay the scans already done
            if w.scan() is None:
                raise ValueError("the state does not match the data: its window has fewer scans than recorded")
        self._window = w

    # ---------------------------------------------------------------- state
    def _config(self) -> dict[str, Any]:
        r = self.reader
        return {"seed": self.seed, "batch_size": self.batch_size, "buffer_size": self.buffer_size,
                "drop_last": self.drop_last, "epochs": self.epochs, "process_index": self.process_index,
                "process_count": self.process_count, "assignment": r.assignment, "columns": r.requested_columns}

    def _shards_digest(self) -> dict[str, Any]:
        names = "\n".join(p.name for p in self.reader.shards)
        return {"count": len(self.reader.shards), "sha1": hashlib.sha1(names.encode()).hexdigest()}

    def state(self) -> dict[str, Any]:
        """The position after the last batch yielded, as a small JSON-able dict (module docstring)."""
        return {"format": STATE_FORMAT, **json.loads(json.dumps(self._pos)), "label_shape": self.reader.label_shape,
                "config": self._config(), "shards": self._shards_digest()}

    @classmethod
    def from_state(cls, source: Any, state: dict[str, Any]) -> StreamingBatches:
        """A stream over ``source`` (the same shards) continuing where ``state`` was taken."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT} stream state")
        try:
            cfg = state["config"]
            stream = cls(source, cfg["batch_size"], seed=cfg["seed"], buffer_size=cfg["buffer_size"],
                         columns=cfg["columns"], drop_last=cfg["drop_last"], epochs=cfg["epochs"],
                         process_index=cfg["process_index"], process_count=cfg["process_count"],
                         assignment=cfg["assignment"])
            pos = {k: state[k] for k in ("epoch", "batches_in_epoch", "window", "shard_cursor", "row", "scans")}
            for k, v in pos.items():
                check_int(v, f"state[{k!r}]", 0)
            leftover = [[check_int(s, "leftover shard", 0), check_int(r, "leftover row", 0)]
                        for s, r in state["leftover"]]
            label_shape = state["label_shape"]
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed stream state ({exc!r})") from None
        if state["shards"] != stream._shards_digest():
            raise ValueError(f"the state was taken over other shards ({state['shards']}); "
                             f"{source!r} lists {stream._shards_digest()}")
        if label_shape not in (None, "scalar") and (isinstance(label_shape, bool) or not isinstance(label_shape, int)):
            raise ValueError(f"malformed stream state: label_shape {label_shape!r}")
        stream._pos = {**pos, "leftover": leftover}
        stream.reader.label_shape = label_shape
        return stream
