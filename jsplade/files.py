"""Atomic file and directory writes, JSON reading with errors that name the file, and lazy reading of data
tables stored as shard files.

Every writer goes through a temporary sibling (same directory, so the final ``os.replace`` is a rename
on one file system), flushes and fsyncs it, then renames it into place: a reader never sees a half
written file, and a failure leaves the destination as it was and removes the temporary.

Data tables (the training stream ``jsplade.training.streaming`` and corpus encoding
``jsplade.retrieval.corpus`` read them; neither loads a whole file): JSON lines (optionally gzip), Parquet,
Arrow IPC and ``datasets.Dataset.save_to_disk`` folders. ``list_shards(source)`` lists the shard files of
a directory, a ``datasets`` folder, a glob, a file or a list; ``shard_kind(path)`` is "jsonl", "parquet",
"arrow" or None; ``ParquetShard`` / ``ArrowShard`` give ``names`` (columns) and ``chunks(columns)``, one
row group / record batch at a time; ``jsonl_lines(path)`` gives (line number, line) pairs. A shard that is
listed and then missing is a ``FileNotFoundError`` naming it, an unreadable or corrupt one a ``ValueError``.

May import: nothing.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import gzip
import io
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence


def _current_umask() -> int:
    # Read once at import: os.umask can only be read by setting it.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
_FILE_MODE = 0o666 & ~_UMASK  # what open(..., "w") would have given (mkstemp gives 0o600)
_DIR_MODE = 0o777 & ~_UMASK   # what os.mkdir would have given (mkdtemp gives 0o700)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[Any]:
    """A handle on a temporary sibling of ``path``; flushed, fsynced and renamed into place when the block
    ends without an exception (removed otherwise). ``mode`` "wb" or "w" (text: UTF-8, "\\n" newlines).

    The file gets the mode a plain ``open(path, "w")`` would give (an existing file's mode is kept).
    The parent directory must exist.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{path}: parent directory {path.parent} does not exist")
    try:
        file_mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        file_mode = _FILE_MODE
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="\n" if text else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, then rename."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data must be bytes, got {type(data).__name__}")
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: text must be a str, got {type(text).__name__}")
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept, trailing newline) to ``path`` atomically.

    An object JSON cannot represent raises ``TypeError`` before anything is written.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    atomic_write_text(path, text)


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """The parsed content of a JSON file.

    A missing file raises ``FileNotFoundError`` naming the path; a directory, non-UTF-8 bytes or
    malformed JSON raise ``ValueError`` naming the path (``"<path>: malformed JSON ..."``).
    Whether the value has the right shape is the caller's check (see ``read_json_object``).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: expected a {what}, found a directory") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: {what} is not UTF-8 text ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: malformed JSON in {what} ({exc})") from None


def read_lines(path: str | Path, encoding: str = "utf-8") -> list[str]:
    """The lines of a text file read in text mode ('\\n', '\\r\\n' and '\\r' end a line, as Python's and
    transformers' readers have it), without the empty string after a final line end. Non-UTF-8 bytes raise
    ``ValueError`` naming the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_json_object(path: str | Path, what: str = "JSON file") -> dict[str, Any]:
    """``read_json`` for files that must hold a JSON object; anything else is a ``ValueError``."""
    obj = read_json(path, what)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {what} must hold a JSON object, found {type(obj).__name__}")
    return obj


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries to disk (best effort: a no-op where directories can't be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(dst: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``dst``; move it into place only when the block succeeds.

    An existing ``dst`` is refused (``FileExistsError``) before anything is written unless ``overwrite``;
    with ``overwrite`` the old directory is replaced only after the new one is complete (the swap is two
    renames, so there is a moment without ``dst``, never a mix of old and new files). On an exception
    the temporary directory is removed and ``dst`` is untouched. The parent of ``dst`` is created.
    """
    dst = Path(dst)
    if dst.exists() or dst.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{dst}: destination exists (pass overwrite=True / --overwrite to replace it)")
        if dst.is_symlink() or not dst.is_dir():
            raise FileExistsError(f"{dst}: destination exists and is not a directory; refusing to replace it")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        os.chmod(tmp, _DIR_MODE)
        yield tmp
        fsync_dir(tmp)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.rmdir(old)
            os.replace(dst, old)
            try:
                os.replace(tmp, dst)
            except BaseException:
                os.replace(old, dst)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- data-table shards
SUFFIXES = ((".jsonl.gz", "jsonl"), (".ndjson.gz", "jsonl"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
             (".parquet", "parquet"), (".arrow", "arrow"))


# --------------------------------------------------------------------------- listing
def shard_kind(path: Path) -> str | None:
    """The format of a shard file by its name ("jsonl", "parquet", "arrow"), or None."""
    name = path.name.lower()
    for suffix, kind in SUFFIXES:
        if name.endswith(suffix):
            return kind
    return None


def _dataset_folder(folder: Path) -> list[Path]:
    """The data files of a ``datasets.Dataset.save_to_disk`` folder, in its ``state.json`` order."""
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{folder}: unreadable datasets state.json ({exc})") from None
    if state.get("_indices_data_files"):
        raise ValueError(f"{folder}: the saved dataset has an indices mapping; save it after flatten_indices()")
    if not files:
        raise ValueError(f"{folder}: state.json lists no data files (empty shard list)")
    return [folder / name for name in files]


def _expand(path: Path, quiet: bool) -> list[Path]:
    if path.is_dir():
        if (path / "state.json").is_file():
            return _dataset_folder(path)
        if (path / "dataset_dict.json").is_file():
            raise ValueError(f"{path}: a saved DatasetDict; pass one split's folder (e.g. {path / 'train'})")
        return sorted(p for p in path.iterdir() if p.is_file() and shard_kind(p) is not None)
    if not path.exists():
        raise FileNotFoundError(f"{path}: data shard not found")
    if shard_kind(path) is None:
        if quiet:
            return []
        raise ValueError(f"{path}: unsupported shard format (expected one of {[s for s, _ in SUFFIXES]})")
    return [path]


def list_shards(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The shard files of ``source``: a directory, a ``datasets`` folder, a glob, a file, or a list of them."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if any(ch in text for ch in "*?["):
            matches = sorted(globlib.glob(text, recursive=True))
            paths = [p for m in matches for p in _expand(Path(m), quiet=True)]
        else:
            paths = _expand(Path(text), quiet=False)
    elif isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise TypeError(f"source must be a path, a glob or a list of paths, got {type(source).__name__}")
    else:
        paths = []
        for item in source:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"source list must hold paths, got {type(item).__name__} {item!r}")
            paths += _expand(Path(item), quiet=False)
    if not paths:
        raise ValueError(f"{source!r}: empty shard list (no .jsonl/.ndjson[.gz], .parquet or .arrow file)")
    seen: set[Path] = set()
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise ValueError(f"{p}: listed twice in the shard list")
        seen.add(key)
    return paths


# --------------------------------------------------------------------------- low-level file access
def _gone(path: Path) -> FileNotFoundError:
    return FileNotFoundError(f"{path}: data shard not found (listed, then missing when read)")


def open_binary(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise _gone(path) from None
    except IsADirectoryError:
        raise ValueError(f"{path}: expected a shard file, found a directory") from None


class ParquetShard:
    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path = path
        self._f = open_binary(path)
        try:
            self.pf = pq.ParquetFile(self._f)
            self.names = list(self.pf.schema_arrow.names)
        except Exception as exc:  # pyarrow's own error types for a corrupt or truncated file
            self._f.close()
            raise ValueError(f"{path}: cannot read Parquet file ({exc})") from None
        md = self.pf.metadata
        self.sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]

    def chunks(self, columns: list[str]) -> Iterator[tuple[int, int, Any]]:
        """(first row, rows, loader) per row group; ``loader()`` reads it."""
        off = 0
        for g, n in enumerate(self.sizes):
            yield off, n, (lambda g=g, off=off, n=n: self._read(g, off, n, columns))
            off += n

    def _read(self, g: int, off: int, n: int, columns: list[str]):
        try:
            return self.pf.read_row_group(g, columns=columns)
        except Exception as exc:
            raise ValueError(f"{self.path}: cannot read Parquet row group {g} (rows {off}..{off + n - 1}) "
                             f"({exc})") from None

    def close(self) -> None:
        self._f.close()


class ArrowShard:
    def __init__(self, path: Path):
        import pyarrow as pa

        self.path = path
        try:
            self._mm = pa.memory_map(str(path), "r")
        except FileNotFoundError:
            raise _gone(path) from None
        except Exception as exc:
            raise ValueError(f"{path}: cannot open Arrow file ({exc})") from None
        try:
            magic = self._mm.read(6)
            self._mm.seek(0)
            if magic == b"ARROW1":
                self._file = pa.ipc.open_file(self._mm)
                self._stream = None
                self.schema = self._file.schema
            else:
                self._file = None
                self._stream = pa.ipc.open_stream(self._mm)
                self.schema = self._stream.schema
        except Exception as exc:
            self._mm.close()
            raise ValueError(f"{path}: cannot read Arrow IPC data ({exc})") from None
        self.names = list(self.schema.names)

    def chunks(self, columns: list[str]) -> Iterator[tuple[int, int, Any]]:
        off = 0
        k = 0
        while True:
            try:
                if self._file is not None:
                    if k >= self._file.num_record_batches:
                        return
                    batch = self._file.get_batch(k)
                else:
                    batch = self._stream.read_next_batch()
            except StopIteration:
                return
            except Exception as exc:
                raise ValueError(f"{self.path}: cannot read Arrow record batch {k} ({exc})") from None
            n = batch.num_rows
            yield off, n, (lambda batch=batch: batch.select(columns))
            off += n
            k += 1

    def close(self) -> None:
        self._mm.close()


def jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a JSON-lines shard, gzip or plain."""
    raw = open_binary(path)
    try:
        stream = gzip.GzipFile(fileobj=raw) if path.name.lower().endswith(".gz") else raw
        text = io.TextIOWrapper(stream, encoding="utf-8")
        line_no = 0
        try:
            for line_no, line in enumerate(text, start=1):
                yield line_no, line
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: line {line_no + 1} is not UTF-8 text ({exc})") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: cannot decompress gzip data after line {line_no} ({exc})") from None
    finally:
        raw.close()


def is_text_type(t) -> bool:
    """A string (or dictionary-of-string) Arrow type."""
    import pyarrow.types as pt

    if pt.is_dictionary(t):
        t = t.value_type
    return pt.is_string(t) or pt.is_large_string(t) or pt.is_string_view(t)
