"""Atomic JSON state writes, validated reads and the cross-process lock."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from codeagent.errors import StateFileError
from codeagent.models import TodoFile
from legacy.jsonstate import atomic_write_text, file_lock, read_model


def test_atomic_write_creates_parents_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "doc.json"
    atomic_write_text(target, '{"x": 1}\n')
    assert target.read_text() == '{"x": 1}\n'
    assert os.listdir(target.parent) == ["doc.json"]


def test_atomic_write_keeps_permission_bits_of_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "run.sh"
    target.write_text("old\n")
    target.chmod(0o755)
    atomic_write_text(target, "new\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert target.read_text() == "new\n"


def test_new_file_gets_umask_permissions_not_private_temp_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644


def test_failed_write_keeps_old_content_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "doc.json"
    target.write_text("old\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(target, "bad \udcff surrogate")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["doc.json"]


def test_read_model_missing_file_is_none(tmp_path: Path) -> None:
    assert read_model(tmp_path / "nope.json", TodoFile, "nope.json") is None


def test_read_model_names_file_and_line_of_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "todos.json"
    path.write_text('{\n  "version": 1,\n  "todos": [,]\n}\n')
    with pytest.raises(StateFileError) as info:
        read_model(path, TodoFile, ".agent/todos.json")
    assert info.value.path == ".agent/todos.json"
    assert info.value.line == 3
    assert str(info.value).startswith(".agent/todos.json:3: not valid JSON")


def test_read_model_names_field_of_invalid_document(tmp_path: Path) -> None:
    path = tmp_path / "todos.json"
    path.write_text('{\n  "todos": [\n    {"id": "t-1",\n     "text": ""}\n  ]\n}\n')
    with pytest.raises(StateFileError) as info:
        read_model(path, TodoFile, ".agent/todos.json")
    assert info.value.field == "todos[0].text"
    assert info.value.line == 4


def test_read_model_empty_and_binary_files_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(StateFileError, match="not valid JSON"):
        read_model(tmp_path / "empty.json", TodoFile, "empty.json")
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(StateFileError, match="not UTF-8"):
        read_model(tmp_path / "bin.json", TodoFile, "bin.json")


def test_file_lock_excludes_other_holders(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    inside = 0
    overlaps = 0

    def worker() -> None:
        nonlocal inside, overlaps
        for _ in range(20):
            with file_lock(lock):
                inside += 1
                if inside > 1:
                    overlaps += 1
                time.sleep(0.0005)
                inside -= 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == 0
