"""Atomic file and directory writes, and JSON reading with errors that name the file.

Every writer goes through a temporary sibling (same directory, so the final ``os.replace`` is a rename
on one file system), flushes and fsyncs it, then renames it into place: a reader never sees a half
written file, and a failure leaves the destination as it was and removes the temporary.

May import: nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
