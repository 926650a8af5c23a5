"""Training rows and batch order (sparse_encoder_format.md §4).

* ``load_pairs``: rows of texts (anchor/query, positive, hard negatives…) and their labels from a
  JSON-lines, JSON, CSV or Parquet file, a list of dicts/tuples or any iterable; every row is validated
  before any compute.
* ``NoDuplicatesBatchSampler``: sentence-transformers' ``no_duplicates`` batching over a seeded
  permutation, ``ceil(n / batch_size)`` batches per epoch (what the reference trainer consumes).
* ``greedy_no_duplicate_batches``: the greedy rule alone, given an explicit permutation (used to replay
  the reference runs, whose per-epoch permutations are recorded).
* ``ReplaySchedule``: an explicit list of batches (e.g. the recorded ``indices`` of a reference run).
* ``total_steps``: the number of optimizer updates of a run (transformers' rule).

Column order defines the loss roles: column 0 = anchors (queries), column 1 = positives, columns 2… =
hard negatives; names do not matter to the loss.

Labels, as sentence-transformers' data collator reads them: the first of ``label``, ``labels``, ``score``,
``scores`` that row 0 has is the label column (the others are ignored); each row holds a number (the
batch's labels are [B]) or a list of numbers of one length for every row ([B, K]: one per candidate column
for the distillation losses, or a teacher embedding for SparseMSELoss). jsplade refuses what the reference
would turn into a wrong loss silently: a row without the label, a non-number, NaN/inf, lists of different
lengths. CSV cells are read as a number or a JSON list of numbers.
"""

from __future__ import annotations

import csv
import json
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from jsplade.training.schedules import check_int

__all__ = ["PairDataset", "load_pairs", "NoDuplicatesBatchSampler", "greedy_no_duplicate_batches",
           "ReplaySchedule", "total_steps", "ROUTES", "LABEL_COLUMNS"]

ROUTES = ("query", "document")
# Columns the reference data collator does not feed to the model (labels are split off, dataset_name is
# metadata). They are dropped from the texts when ``columns`` is not given and refused when named in ``columns``.
LABEL_COLUMNS = ("label", "labels", "score", "scores", "dataset_name")
LABEL_SOURCES = LABEL_COLUMNS[:4]  # the reference's label columns, in its order of preference
_FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class PairDataset:
    """Validated training rows.

    ``columns``: column names in role order; ``routes``: "query"/"document" per column (column 0 is the
    only query column); ``rows``: one tuple of ``len(columns)`` strings per example; ``labels``: one label per
    row (a float, or a tuple of floats of one length) taken from ``label_column``, or None.
    """

    columns: tuple[str, ...]
    routes: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: tuple[Any, ...] | None = None
    label_column: str | None = None

    @property
    def label_shape(self) -> tuple[int, ...] | None:
        """Shape of one row's label: () for a number, (K,) for a list; None without labels."""
        if self.labels is None:
            return None
        first = self.labels[0]
        return (len(first),) if isinstance(first, tuple) else ()

    def label_array(self, indices: Sequence[int]) -> np.ndarray:
        """float32 labels of ``indices``: [n] or [n, K]."""
        if self.labels is None:
            raise ValueError("the training data has no label column (label, labels, score or scores)")
        return np.asarray([self.labels[i] for i in indices], np.float32).reshape(len(indices), *self.label_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[str, ...]:
        return self.rows[index]

    @property
    def n_negatives(self) -> int:
        """K, the number of hard-negative columns."""
        return len(self.columns) - 2

    def column(self, name: str) -> list[str]:
        """All texts of one column."""
        try:
            c = self.columns.index(name)
        except ValueError:
            raise KeyError(f"no column {name!r}; columns are {list(self.columns)}") from None
        return [row[c] for row in self.rows]


# --------------------------------------------------------------------------- reading
def _read_file(path: Path) -> tuple[list[Any], str]:
    """Raw rows (dicts) of a data file and a description for error messages."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: training data file not found")
    if path.is_dir():
        raise ValueError(f"{path}: expected a training data file, found a directory")
    kind = _FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unsupported training data format {path.suffix!r} "
                         f"(expected one of {sorted(_FILE_KINDS)})")
    if kind == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own error types for corrupt files
            raise ValueError(f"{path}: cannot read Parquet file ({exc})") from None
        return table.to_pylist(), str(path)
    if kind == "csv":
        return _read_csv(path), str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: training data is not UTF-8 text ({exc})") from None
    if kind == "jsonl":
        rows = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: line {line_no} is not valid JSON ({exc})") from None
        return rows, str(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON ({exc})") from None
    if isinstance(obj, dict) and "rows" in obj:
        obj = obj["rows"]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of rows (or an object with a 'rows' list)")
    return obj, str(path)


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file with a header line (quoted fields may hold commas and newlines)."""
    rows = []
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            try:
                header = next(reader)
            except StopIteration:
                raise ValueError(f"{path}: empty CSV file (no header)") from None
            if len(set(header)) != len(header):
                raise ValueError(f"{path}: duplicate column names in the CSV header {header}")
            for fields in reader:
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise ValueError(f"{path}: CSV record ending on line {reader.line_num} has {len(fields)} "
                                     f"fields, the header has {len(header)}")
                rows.append(dict(zip(header, fields)))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: training data is not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: malformed CSV ({exc})") from None
    return rows


def _default_names(n: int) -> list[str]:
    """anchor, positive, negative_1, … for n tuple positions."""
    return (["anchor", "positive"] + [f"negative_{k}" for k in range(1, n - 1)])[:n]


def load_pairs(source: str | Path | PairDataset | Iterable[Any], columns: Sequence[str] | None = None,
               router_mapping: Mapping[str, str] | None = None) -> PairDataset:
    """Read and validate training rows.

    ``source``: a path (.jsonl/.ndjson JSON lines, .json list of objects, .csv with a header, .parquet),
    an iterable of rows, each a mapping column → text or a tuple/list of texts (all rows the same kind),
    or a ``PairDataset`` (re-validated; ``columns`` may select from it).
    ``columns``: the columns to use, in role order (anchor, positive, negatives…). Without it: the first
    row's keys in order (file/schema order), minus the label/metadata columns ``LABEL_COLUMNS``; tuple
    rows are named anchor, positive, negative_1, …. With tuple rows ``columns`` names the positions.
    ``router_mapping``: column → "query"/"document"; by default (and for unmapped columns) column 0 is
    "query" and the others "document". jsplade trains the static query route on column 0 only, so a
    mapping that routes column 0 to "document" or another column to "query" is refused.

    Errors (before any compute): empty data, fewer than 2 columns, a missing column (row index and
    column named), a non-string text (TypeError naming row and column), an unknown route.
    """
    if isinstance(source, PairDataset):
        raw_rows, where = [dict(zip(source.columns, row)) for row in source.rows], "training data"
        if source.labels is not None:
            for raw, label in zip(raw_rows, source.labels):
                raw[source.label_column] = list(label) if isinstance(label, tuple) else label
    elif isinstance(source, (str, Path)):
        raw_rows, where = _read_file(Path(source))
    elif isinstance(source, (bytes, Mapping)) or not isinstance(source, Iterable):
        raise TypeError(f"source must be a file path or an iterable of rows, got {type(source).__name__}")
    else:
        raw_rows, where = list(source), "training data"
    columns = check_columns(columns)
    if not raw_rows:
        raise ValueError(f"{where}: the dataset is empty")

    first = raw_rows[0]
    label_column = None
    if isinstance(first, Mapping):
        kind = "mapping"
        label_column = next((c for c in LABEL_SOURCES if c in first), None)
        names = list(columns) if columns is not None else [k for k in first.keys() if k not in LABEL_COLUMNS]
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"{where}: column names must be strings, got {name!r}")
    elif isinstance(first, (tuple, list)):
        kind = "sequence"
        if columns is not None and len(columns) != len(first):
            raise ValueError(f"{where}: columns names {len(columns)} columns but row 0 has {len(first)} values")
        names = list(columns) if columns is not None else _default_names(len(first))
    else:
        raise TypeError(f"{where}: row 0 must be a mapping or a tuple/list of texts, got {type(first).__name__}")
    if len(names) < 2:
        raise ValueError(f"{where}: need at least 2 columns (query, positive), got {names}")

    rows: list[tuple[str, ...]] = []
    labels: list[Any] = []
    for i, raw in enumerate(raw_rows):
        if kind == "mapping":
            if not isinstance(raw, Mapping):
                raise TypeError(f"{where}: row {i} is a {type(raw).__name__}, row 0 is a mapping")
            missing = [c for c in names if c not in raw]
            if missing:
                raise ValueError(f"{where}: row {i} is missing column {missing[0]!r}")
            if columns is None:
                extra = [k for k in raw if k not in names and k not in LABEL_COLUMNS]
                if extra:
                    raise ValueError(f"{where}: row {i} has column {extra[0]!r} that row 0 does not have; "
                                     "pass columns=[...] to select columns")
            values = [raw[c] for c in names]
            if label_column is not None:
                if label_column not in raw:
                    raise ValueError(f"{where}: row {i} has no {label_column!r} (row 0 has this label column)")
                labels.append(_read_label(raw[label_column], where, i, label_column, labels[0] if labels else None))
        else:
            if not isinstance(raw, (tuple, list)):
                raise TypeError(f"{where}: row {i} is a {type(raw).__name__}, row 0 is a tuple/list")
            if len(raw) != len(names):
                raise ValueError(f"{where}: row {i} has {len(raw)} values, expected {len(names)} "
                                 f"(column {names[min(len(raw), len(names) - 1)]!r} missing or extra)")
            values = list(raw)
        for name, value in zip(names, values):
            if not isinstance(value, str):
                raise TypeError(f"{where}: row {i}, column {name!r}: expected a text string, got "
                                f"{type(value).__name__} {value!r:.60}")
        rows.append(tuple(values))
    return PairDataset(columns=tuple(names), routes=_routes(names, router_mapping, where), rows=tuple(rows),
                       labels=tuple(labels) if label_column is not None else None, label_column=label_column)


def check_columns(columns: Sequence[str] | None) -> list[str] | None:
    """A ``columns`` argument as a list of distinct text-column names (None stays None)."""
    if columns is None:
        return None
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a list of column names, got {type(columns).__name__}")
    columns = list(columns)
    for name in columns:
        if not isinstance(name, str):
            raise TypeError(f"columns must hold strings, got {name!r}")
    if len(set(columns)) != len(columns):
        raise ValueError(f"columns {columns} name a column twice")
    bad = [c for c in columns if c in LABEL_COLUMNS]
    if bad:
        raise ValueError(f"columns {bad} are label/metadata columns, not texts: the label column is found by "
                         f"name (the first of {list(LABEL_SOURCES)} in the data)")
    return columns


def _read_label(value: Any, where: str, i: int, column: str, first: Any) -> float | tuple[float, ...]:
    """One row's label: a finite number or a non-empty list of them, of row 0's kind and length."""
    if isinstance(value, str):  # CSV cells
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("[") else float(text)
        except ValueError:
            raise ValueError(f"{where}: row {i}, column {column!r}: {value!r:.60} is not a number or a JSON list "
                             "of numbers") from None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    many = isinstance(value, (list, tuple))
    items = list(value) if many else [value]
    for x in items:
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise ValueError(f"{where}: row {i}, column {column!r}: labels must be numbers or lists of numbers, got "
                             f"{type(x).__name__} {x!r:.60}")
        if not math.isfinite(float(x)):
            raise ValueError(f"{where}: row {i}, column {column!r}: label {x!r} is not finite")
    if many and not items:
        raise ValueError(f"{where}: row {i}, column {column!r}: the label list is empty")
    label = tuple(float(x) for x in items) if many else float(items[0])
    if first is not None:
        if isinstance(first, tuple) != many:
            raise ValueError(f"{where}: row {i}, column {column!r}: row 0's label is "
                             f"{'a list' if isinstance(first, tuple) else 'a number'}, this one is "
                             f"{'a list' if many else 'a number'}")
        if many and len(label) != len(first):
            raise ValueError(f"{where}: row {i}, column {column!r}: {len(label)} labels, row 0 has {len(first)}")
    return label


def _routes(names: list[str], router_mapping: Mapping[str, str] | None, where: str) -> tuple[str, ...]:
    routes = ["query"] + ["document"] * (len(names) - 1)
    if router_mapping is None:
        return tuple(routes)
    if not isinstance(router_mapping, Mapping):
        raise TypeError(f"router_mapping must be a mapping column -> route, got {type(router_mapping).__name__}")
    for column, route in router_mapping.items():
        if route not in ROUTES:
            raise ValueError(f"router_mapping[{column!r}]: unknown route {route!r} (expected one of {ROUTES})")
        if column not in names:
            raise ValueError(f"{where}: router_mapping names column {column!r}, not among the columns {names}")
        c = names.index(column)
        if (c == 0) != (route == "query"):
            raise ValueError(f"router_mapping[{column!r}] = {route!r}: jsplade routes column 0 ({names[0]!r}, the "
                             "anchors) to 'query' and every other column to 'document'")
        routes[c] = route
    return tuple(routes)


# --------------------------------------------------------------------------- batching
def _rows_of(dataset: PairDataset | Sequence[Sequence[str]]) -> Sequence[Sequence[str]]:
    rows = dataset.rows if isinstance(dataset, PairDataset) else dataset
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
        raise TypeError(f"dataset must be a PairDataset or a sequence of rows, got {type(dataset).__name__}")
    return rows


def greedy_no_duplicate_batches(perm: Sequence[int], rows: Sequence[Sequence[Any]], batch_size: int,
                                n_batches: int | None = None, drop_last: bool = False) -> list[list[int]]:
    """The reference ``no_duplicates`` batching of one epoch, given its permutation of row indices.

    Repeatedly scan the rows not yet used, in permutation order: a row joins the current batch unless one
    of its values (as ``str``, compared across columns) already occurs among the rows accepted into
    this batch; the batch is emitted when it reaches ``batch_size`` rows. A scan that ends short emits
    the short batch (or drops it, rows included, when ``drop_last``). The first ``n_batches`` batches are
    returned (all when None); rows not in them are skipped for the epoch, as in the reference trainer.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    if n_batches is not None:
        n_batches = check_int(n_batches, "n_batches", 0)
    n = len(rows)
    order = [int(i) for i in perm]
    if sorted(order) != list(range(n)):
        raise ValueError(f"perm must be a permutation of range({n}) (the row indices)")
    values = [{str(v) for v in row} for row in rows]
    remaining = dict.fromkeys(order)  # insertion-ordered set
    batches: list[list[int]] = []
    while remaining and (n_batches is None or len(batches) < n_batches):
        seen: set[str] = set()
        batch: list[int] = []
        full = False
        for index in remaining:
            if values[index] & seen:
                continue
            batch.append(index)
            if len(batch) == batch_size:
                full = True
                break
            seen |= values[index]
        if full or not drop_last:
            batches.append(batch)
        for index in batch:
            del remaining[index]
    return batches


class NoDuplicatesBatchSampler:
    """Seeded ``no_duplicates`` batches, ``ceil(n / batch_size)`` per epoch (``floor`` with ``drop_last``).

    The permutation of epoch e comes from ``numpy.random.default_rng([seed, e])``: it intentionally does
    not try to reproduce torch's ``randperm`` stream (which also differs between sentence-transformers
    5.x and 6.x); to reproduce a reference run exactly, replay its recorded batches (``ReplaySchedule``)
    or its permutations (``greedy_no_duplicate_batches``).

    ``batch_size`` larger than the number of rows is an error unless ``allow_oversized_batch=True``, in
    which case each epoch is one batch of every row that fits the no-duplicates rule (not with
    ``drop_last``, which would leave nothing).
    """

    def __init__(self, dataset: PairDataset | Sequence[Sequence[str]], batch_size: int, seed: int,
                 drop_last: bool = False, allow_oversized_batch: bool = False):
        self.rows = _rows_of(dataset)
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.drop_last = bool(drop_last)
        n = len(self.rows)
        if n == 0:
            raise ValueError("the dataset is empty")
        if self.batch_size > n:
            if not allow_oversized_batch:
                raise ValueError(f"batch_size {self.batch_size} is larger than the dataset ({n} rows); lower it or "
                                 "pass allow_oversized_batch=True to train on one (smaller) batch per epoch")
            if self.drop_last:
                raise ValueError(f"batch_size {self.batch_size} > {n} rows with drop_last=True leaves no batch")

    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.rows)
        return n // self.batch_size if self.drop_last else max(1, math.ceil(n / self.batch_size))

    def permutation(self, epoch: int) -> list[int]:
        """The row order of ``epoch`` before no-duplicates filling."""
        epoch = check_int(epoch, "epoch", 0)
        rng = np.random.default_rng([self.seed, epoch])
        return rng.permutation(len(self.rows)).tolist()

    def batches_for_epoch(self, epoch: int) -> list[list[int]]:
        """The batches (lists of row indices, in target-column order) of ``epoch``."""
        return greedy_no_duplicate_batches(self.permutation(epoch), self.rows, self.batch_size,
                                           len(self), self.drop_last)

    def __iter__(self) -> Iterator[list[int]]:
        """Batches of epoch 0 (use ``batches_for_epoch`` for the others)."""
        return iter(self.batches_for_epoch(0))


class ReplaySchedule:
    """An explicit batch order: ``batches[k]`` = row indices of micro-batch k (e.g. a reference log's
    ``steps[k]["indices"]``). Validated on construction: a non-empty list of non-empty lists of distinct
    integers, each in [0, n_rows) when ``n_rows`` is given."""

    def __init__(self, batches: Sequence[Sequence[int]], n_rows: int | None = None):
        if isinstance(batches, (str, bytes)) or not isinstance(batches, Sequence):
            raise TypeError(f"batches must be a list of lists of row indices, got {type(batches).__name__}")
        if n_rows is not None:
            n_rows = check_int(n_rows, "n_rows", 1)
        if len(batches) == 0:
            raise ValueError("batches is empty: nothing to replay")
        out: list[list[int]] = []
        for k, batch in enumerate(batches):
            if isinstance(batch, (str, bytes)) or not isinstance(batch, Sequence):
                raise TypeError(f"batches[{k}] must be a list of row indices, got {type(batch).__name__}")
            if len(batch) == 0:
                raise ValueError(f"batches[{k}] is empty")
            idx = []
            for j, i in enumerate(batch):
                if isinstance(i, bool) or not isinstance(i, numbers.Integral):
                    raise TypeError(f"batches[{k}][{j}] must be an integer row index, got {i!r}")
                if i < 0 or (n_rows is not None and i >= n_rows):
                    raise ValueError(f"batches[{k}][{j}] = {i} is out of range for {n_rows} rows")
                idx.append(int(i))
            if len(set(idx)) != len(idx):
                raise ValueError(f"batches[{k}] repeats a row: {idx}")
            out.append(idx)
        self.batches = out
        self.n_rows = n_rows

    @classmethod
    def from_steps(cls, steps: Sequence[Mapping[str, Any]], n_rows: int | None = None) -> ReplaySchedule:
        """From a reference train log's ``steps`` list (each with an ``indices`` entry)."""
        try:
            return cls([s["indices"] for s in steps], n_rows)
        except (KeyError, TypeError):
            raise ValueError("steps must be a list of objects with an 'indices' list") from None

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def total_steps(n_rows: int, batch_size: int, epochs: int, max_steps: int | None = None, grad_accum: int = 1,
                drop_last: bool = False) -> int:
    """Optimizer updates of a run, transformers' Trainer rule.

    batches per epoch b = ceil(n / batch_size) (floor with ``drop_last``); updates per epoch
    u = max(1, ceil(b / grad_accum)) (the last update of an epoch uses the remaining micro-batches);
    total = ``max_steps`` when given, else epochs · u. Fine-tune: n 2, batch 1, 40 epochs → 80.
    """
    n = check_int(n_rows, "n_rows", 1)
    bs = check_int(batch_size, "batch_size", 1)
    ep = check_int(epochs, "epochs", 0)
    accum = check_int(grad_accum, "grad_accum", 1)
    if max_steps is not None:
        return check_int(max_steps, "max_steps", 1)
    per_epoch = n // bs if drop_last else math.ceil(n / bs)
    if per_epoch == 0:
        raise ValueError(f"batch_size {bs} > {n} rows with drop_last leaves no batch per epoch")
    return ep * max(1, math.ceil(per_epoch / accum))
