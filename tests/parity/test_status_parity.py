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
