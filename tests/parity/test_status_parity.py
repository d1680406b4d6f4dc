"""The status record: same format, same merge of updates, same errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent.errors import StateFileError
from codeagent.models import AgentState, StatusFile, TodoState, TodoStatus, dump_json
from tests.parity._support import IMPLS, Impl

STATUS = Path(".agent/status.json")


def test_missing_file_is_an_empty_record(impl: Impl, tmp_path: Path) -> None:
    doc = impl.status(tmp_path).load()
    assert isinstance(doc, StatusFile)
    assert (doc.todos, doc.agent.state) == ({}, "stopped")


def test_updates_merge_into_one_document(impl: Impl, tmp_path: Path) -> None:
    store = impl.status(tmp_path)
    running = TodoState(status=TodoStatus.RUNNING, attempts=1)
    done = TodoState(status=TodoStatus.DONE, commit="abc", attempts=1)
    agent = AgentState(state="working", current_todo="t-0002", pid=42, processed=1)
    store.set_todo("t-0001", running)
    store.set_todo("t-0002", done)
    store.set_agent(agent)
    store.set_todo("t-0001", done)
    doc = store.load()
    assert doc.todos == {"t-0001": done, "t-0002": done}
    assert doc.agent == agent
    assert (tmp_path / STATUS).read_text(encoding="utf-8") == dump_json(doc)


@pytest.mark.parametrize("reader", IMPLS)
def test_byte_identical_documents(impl: Impl, tmp_path: Path, reader: str) -> None:
    """The same updates give the same bytes whichever implementation writes them."""
    state = TodoState(status=TodoStatus.FAILED, error="boom", attempts=2)
    agent = AgentState(state="idle", pid=7)
    ours, theirs = tmp_path / "a", tmp_path / "b"
    impl.status(ours).set_todo("t-0001", state)
    impl.status(ours).set_agent(agent)
    other = Impl(reader, impl.runner).status(theirs)
    other.set_todo("t-0001", state)
    other.set_agent(agent)
    assert (ours / STATUS).read_bytes() == (theirs / STATUS).read_bytes()
    assert other.load() == impl.status(ours).load()


def test_corrupt_file_is_reported(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / STATUS).write_text('{"version": 2}')
    with pytest.raises(StateFileError, match=r"status\.json"):
        impl.status(tmp_path).load()
    with pytest.raises(StateFileError):
        impl.status(tmp_path).set_todo("t-0001", TodoState())


def test_not_utf8_is_reported(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / STATUS).write_bytes(b'{"version": "\xff"}')
    with pytest.raises(StateFileError, match="not UTF-8"):
        impl.status(tmp_path).load()


def test_unreadable_is_reported(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / STATUS).mkdir(parents=True)
    with pytest.raises(StateFileError, match="cannot read"):
        impl.status(tmp_path).load()


def test_write_keeps_no_temp_files(impl: Impl, tmp_path: Path) -> None:
    store = impl.status(tmp_path)
    for n in range(5):
        store.set_todo(f"t-{n}", TodoState())
    leftovers = [p.name for p in (tmp_path / ".agent").iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def _no_space(*args: object, **kwargs: object) -> None:
    import errno

    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_the_disk_refuses_names_the_file_and_keeps_the_old_document(
    impl: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign finding: a full disk surfaced as a bare OSError (a traceback) from the loops."""
    import os

    store = impl.status(tmp_path)
    store.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=1))
    monkeypatch.setattr(os, "replace", _no_space)
    with pytest.raises(StateFileError, match=r"status\.json: cannot write: No space left on device"):
        store.set_todo("t-0001", TodoState(status=TodoStatus.DONE, commit="abc", attempts=1))
    monkeypatch.undo()
    assert store.load().todos["t-0001"].status is TodoStatus.RUNNING
    assert sorted(p.name for p in (tmp_path / ".agent").iterdir()) == ["status.json", "status.lock"]


def test_loads_of_an_unchanged_document_share_one_snapshot(impl: Impl, tmp_path: Path) -> None:
    """Chaos campaign finding (soak): every load parsed its own copy of a document that grows with every
    todo; dozens of todos starting at once held dozens of copies, and the memory grew with the history."""
    store = impl.status(tmp_path)
    store.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=1))
    first = store.load()
    assert store.load() is first
    store.set_todo("t-0001", TodoState(status=TodoStatus.DONE, commit="abc", attempts=1))
    fresh = store.load()
    assert fresh is not first and fresh.todos["t-0001"].status is TodoStatus.DONE
    impl.status(tmp_path).set_agent(AgentState(state="idle", pid=7))  # another writer: a new file
    assert store.load().agent.pid == 7
    assert impl.status(tmp_path / "elsewhere").load().todos == {}
