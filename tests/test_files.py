"""Atomic writes and JSON reading (jsplade.files)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from jsplade import files as files_module
from jsplade.files import (atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json,
                              read_json_object, read_lines)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


# ----------------------------------------------------------------------------- atomic file writes
def test_atomic_write_bytes_writes_content_with_default_mode_and_no_leftovers(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"\x00\x01payload")
    assert target.read_bytes() == b"\x00\x01payload"
    assert _siblings(target) == ["a.bin"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()


def test_atomic_write_bytes_replaces_and_keeps_existing_mode(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o600)
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_write_bytes_failure_leaves_old_file_and_removes_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(files_module.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert _siblings(target) == ["a.bin"]


def test_atomic_write_bytes_rejects_text_and_missing_parent(tmp_path):
    with pytest.raises(TypeError, match="bytes"):
        atomic_write_bytes(tmp_path / "a.bin", "text")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    missing = tmp_path / "no" / "a.bin"
    with pytest.raises(FileNotFoundError, match="parent directory"):
        atomic_write_bytes(missing, b"x")


def test_atomic_write_text_is_utf8(tmp_path):
    target = tmp_path / "t.txt"
    atomic_write_text(target, "Crème brûlée 🍕\n")
    assert target.read_bytes() == "Crème brûlée 🍕\n".encode("utf-8")
    with pytest.raises(TypeError, match="str"):
        atomic_write_text(target, b"bytes")  # type: ignore[arg-type]


def test_atomic_write_json_round_trip_indent_and_newline(tmp_path):
    target = tmp_path / "c.json"
    obj = {"b": [1, 2.5, None], "a": "Açaí", "n": {"x": True}}
    atomic_write_json(target, obj, indent=4)
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n") and '\n    "b"' in text and "Açaí" in text
    assert json.loads(text) == obj
    assert read_json(target) == obj


def test_atomic_write_json_unserializable_writes_nothing(tmp_path):
    target = tmp_path / "c.json"
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- JSON reading
def test_read_json_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(path, "model config")


def test_read_json_malformed_names_path(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"a": 1,,}')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON"):
        read_json(path, "model config")


def test_read_json_directory_and_non_utf8(tmp_path):
    with pytest.raises(ValueError, match="directory"):
        read_json(tmp_path, "model config")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(ValueError, match=r"latin1\.json.*UTF-8"):
        read_json(path)


def test_read_json_object_requires_object(tmp_path):
    path = tmp_path / "list.json"
    path.write_text("[1, 2]")
    assert read_json(path) == [1, 2]
    with pytest.raises(ValueError, match=r"list\.json.*JSON object.*list"):
        read_json_object(path, "router config")


# ----------------------------------------------------------------------------- atomic directories
def test_atomic_directory_creates_destination(tmp_path):
    dst = tmp_path / "sub" / "model"
    with atomic_directory(dst) as tmp:
        assert tmp.parent == dst.parent and tmp != dst and not dst.exists()
        (tmp / "f.txt").write_text("hello")
    assert (dst / "f.txt").read_text() == "hello"
    assert _siblings(dst) == ["model"]
    assert stat.S_IMODE(dst.stat().st_mode) == 0o777 & ~_umask()


def test_atomic_directory_refuses_existing_before_writing(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    entered = False
    with pytest.raises(FileExistsError, match="overwrite"):
        with atomic_directory(dst):
            entered = True
    assert not entered
    assert sorted(p.name for p in dst.iterdir()) == ["old.txt"]
    assert _siblings(dst) == ["model"]


def test_atomic_directory_overwrite_replaces_only_when_complete(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with atomic_directory(dst, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (dst / "old.txt").read_text() == "old"  # old content intact while the new one is built
    assert sorted(p.name for p in dst.iterdir()) == ["new.txt"]
    assert _siblings(dst) == ["model"]


def test_atomic_directory_exception_leaves_destination_untouched(tmp_path):
    dst = tmp_path / "model"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(dst, overwrite=True) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert sorted(p.name for p in dst.iterdir()) == ["old.txt"]
    assert _siblings(dst) == ["model"]

    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError):
        with atomic_directory(fresh) as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("boom")
    assert not fresh.exists()
    assert _siblings(dst) == ["model"]


def test_atomic_directory_refuses_to_replace_a_file(tmp_path):
    dst = tmp_path / "model"
    dst.write_text("a file")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_directory(dst, overwrite=True):
            pass
    assert dst.read_text() == "a file"


def test_read_lines_splits_on_newlines_only(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a\tb\r\nc\n\nd\n")
    assert read_lines(path) == ["a\tb", "c", "", "d"]  # text mode: \r\n ends a line; inner empty kept, no final ""
    path.write_bytes(b"x")
    assert read_lines(path) == ["x"]
    path.write_bytes("\ufeffy\n".encode("utf-8"))
    assert read_lines(path, encoding="utf-8-sig") == ["y"] and read_lines(path) == ["\ufeffy"]
    path.write_bytes(b"\xff\n")
    with pytest.raises(ValueError, match=r"t\.txt: not UTF-8 text"):
        read_lines(path)
