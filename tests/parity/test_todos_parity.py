"""The todo list: same format (byte for byte), same ids, same errors, no lost additions."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pydantic
import pytest

from codeagent.errors import StateFileError, WorkspaceViolation
from codeagent.models import TodoFile, dump_json
from tests.parity._support import IMPLS, Impl

TODOS = Path(".agent/todos.json")


def test_missing_file_is_empty(impl: Impl, tmp_path: Path) -> None:
    store = impl.todos(tmp_path)
    assert store.load() == []
    assert store.get("t-0001") is None


def test_add_assigns_ids_and_writes_the_legacy_format(impl: Impl, tmp_path: Path) -> None:
    store = impl.todos(tmp_path)
    first = store.add("do one thing", ["a.txt", "./src//b.py"])
    second = store.add("do another")
    assert (first.id, second.id) == ("t-0001", "t-0002")
    assert first.files == ["a.txt", "src/b.py"]
    text = (tmp_path / TODOS).read_text(encoding="utf-8")
    assert text == dump_json(TodoFile.model_validate_json(text))  # the canonical serialisation
    assert [t.id for t in store.load()] == ["t-0001", "t-0002"]
    assert store.get("t-0002") == second


@pytest.mark.parametrize("reader", IMPLS)
def test_files_written_by_one_are_read_by_every_other(impl: Impl, tmp_path: Path, reader: str) -> None:
    written = impl.todos(tmp_path).add("shared work", ["x.md"])
    other = Impl(reader, impl.runner).todos(tmp_path)
    assert other.load() == [written]
    assert other.add("second").id == "t-0002"
    assert impl.todos(tmp_path).get("t-0002") is not None


def test_empty_text_is_refused(impl: Impl, tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError):
        impl.todos(tmp_path).add("")
    assert not (tmp_path / TODOS).exists()


@pytest.mark.parametrize("bad", ["../x", "/etc/passwd", ".git/config", ""])
def test_paths_outside_the_workspace_are_refused(impl: Impl, tmp_path: Path, bad: str) -> None:
    with pytest.raises(WorkspaceViolation):
        impl.todos(tmp_path).add("work", [bad])


def test_duplicate_ids_are_reported(impl: Impl, tmp_path: Path) -> None:
    doc = {"version": 1, "todos": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
    (tmp_path / ".agent").mkdir()
    (tmp_path / TODOS).write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(StateFileError, match=r"todos\[1\]\.id: duplicate todo id 'a'"):
        impl.todos(tmp_path).load()


def test_corrupt_file_names_the_line(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / TODOS).write_text(
        '{\n  "version": 1,\n  "todos": [\n    {"id": "bad id!", "text": "x"}\n  ]\n}'
    )
    with pytest.raises(StateFileError) as caught:
        impl.todos(tmp_path).load()
    assert caught.value.field == "todos[0].id"
    assert caught.value.line == 4


def test_empty_file_is_invalid_not_missing(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / TODOS).write_text("")
    with pytest.raises(StateFileError, match="not valid JSON"):
        impl.todos(tmp_path).load()


# Threads apply to the sync implementations; the async store's concurrency is tested with tasks in
# tests/core_async.
@pytest.mark.parametrize("impl", ["legacy", "core_sync"], indirect=True)
def test_concurrent_adds_from_threads_lose_nothing(impl: Impl, tmp_path: Path) -> None:
    """The flock on .agent/todos.lock serialises writers; legacy and the twin are used from threads."""
    store = impl.todos(tmp_path)
    errors: list[BaseException] = []

    def adder(n: int) -> None:
        try:
            for i in range(5):
                store.add(f"work {n}-{i}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    todos = store.load()
    assert len(todos) == 20
    assert len({t.id for t in todos}) == 20
