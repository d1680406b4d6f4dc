"""The operator's retry and cancel, and the ``cancelled`` status, in every implementation.

Same transitions and refusals, same audit in ``status.json``, the same guard
against starting a cancelled todo (under the status lock), and every agent
leaves a cancelled todo alone: no LLM call, no checkpoint, no commit.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import core_async.status
import legacy.status
from codeagent.errors import TodoCancelled
from codeagent.models import StatusFile, TodoState, TodoStatus
from tests.parity._support import IMPLS, Impl, git
from tests.parity.test_agent_parity import snapshot, workspace

STATUS = Path(".agent/status.json")
REQUEUE = Path(".agent/requeue.json")


def seeded(impl: Impl, root: Path) -> Any:
    """A status store with one todo in each status (t-0001 ... t-0006, in TodoStatus order)."""
    store = impl.status(root)
    store.set_todo("t-0001", TodoState(status=TodoStatus.PENDING))
    store.set_todo("t-0002", TodoState(status=TodoStatus.RUNNING, attempts=1))
    store.set_todo("t-0003", TodoState(status=TodoStatus.DONE, attempts=1, commit="a" * 40))
    store.set_todo("t-0004", TodoState(status=TodoStatus.FAILED, attempts=3, error="not JSON"))
    store.set_todo("t-0005", TodoState(status=TodoStatus.INTERRUPTED, attempts=1))
    store.set_todo("t-0006", TodoState(status=TodoStatus.CANCELLED))
    return store


def outcome(changes: list[Any]) -> list[tuple[str, str, str, bool, bool]]:
    return [(c.todo_id, c.before.value, c.after.value, c.changed, c.refused is not None) for c in changes]


IDS = ["t-0001", "t-0002", "t-0003", "t-0004", "t-0005", "t-0006", "t-0007"]


def test_retry_transitions_keep_attempts_and_audit_the_old_state(impl: Impl, tmp_path: Path) -> None:
    store = seeded(impl, tmp_path)
    changes = store.operate("retry", IDS, source="cli", loop_running=True)
    assert outcome(changes) == [
        ("t-0001", "pending", "pending", False, False),
        ("t-0002", "running", "running", False, True),
        ("t-0003", "done", "done", False, True),
        ("t-0004", "failed", "pending", True, False),
        ("t-0005", "interrupted", "pending", True, False),
        ("t-0006", "cancelled", "pending", True, False),
        ("t-0007", "pending", "pending", False, False),  # no state yet: pending
    ]
    assert changes[1].refused == "it is running; retry it once it has failed"
    assert changes[2].refused == f"it is done in commit {'a' * 12}; add a new todo to change it again"
    doc = store.load()
    retried = doc.todos["t-0004"]
    assert (retried.status, retried.attempts, retried.error, retried.started_at) == (
        TodoStatus.PENDING,
        3,
        None,
        None,
    )
    assert [(o.todo_id, o.action, o.previous.value, o.error, o.source) for o in doc.operations] == [
        ("t-0004", "retry", "failed", "not JSON", "cli"),
        ("t-0005", "retry", "interrupted", None, "cli"),
        ("t-0006", "retry", "cancelled", None, "cli"),
    ]
    notice = json.loads((tmp_path / REQUEUE).read_text())
    assert notice["todo_ids"] == ["t-0001", "t-0004", "t-0005", "t-0006", "t-0007"]
    assert notice["source"] == "cli"


def test_cancel_transitions_and_refusals(impl: Impl, tmp_path: Path) -> None:
    store = seeded(impl, tmp_path)
    changes = store.operate("cancel", IDS, source="api", loop_running=True)
    assert outcome(changes) == [
        ("t-0001", "pending", "cancelled", True, False),
        ("t-0002", "running", "running", False, True),
        ("t-0003", "done", "done", False, True),
        ("t-0004", "failed", "cancelled", True, False),
        ("t-0005", "interrupted", "cancelled", True, False),
        ("t-0006", "cancelled", "cancelled", False, False),
        ("t-0007", "pending", "cancelled", True, False),
    ]
    assert changes[1].refused is not None and "cannot be cancelled" in changes[1].refused
    assert store.load().todos["t-0004"].attempts == 3
    assert not (tmp_path / REQUEUE).exists()  # a cancel has nothing to wake


def test_with_no_loop_running_a_running_state_is_a_crash_leftover(impl: Impl, tmp_path: Path) -> None:
    store = seeded(impl, tmp_path)
    [change] = store.operate("cancel", ["t-0002"], source="cli", loop_running=False)
    assert (change.before, change.after, change.refused) == (TodoStatus.RUNNING, TodoStatus.CANCELLED, None)


@pytest.mark.parametrize("reader", IMPLS)
def test_every_implementation_reads_what_another_wrote(impl: Impl, tmp_path: Path, reader: str) -> None:
    store = seeded(impl, tmp_path)
    store.operate("cancel", ["t-0001"], source="cli", loop_running=True)
    store.operate("retry", ["t-0004"], source="cli", loop_running=True)
    other = Impl(reader, impl.runner).status(tmp_path)
    assert other.load() == store.load()
    other.set_todo("t-0005", TodoState(status=TodoStatus.DONE, commit="b" * 40))
    assert [o.todo_id for o in store.load().operations] == ["t-0001", "t-0004"]  # kept across writes


def test_a_file_no_one_acted_on_has_no_operations_key(impl: Impl, tmp_path: Path) -> None:
    seeded(impl, tmp_path)
    assert "operations" not in json.loads((tmp_path / STATUS).read_text())


def test_starting_a_cancelled_todo_is_refused_under_the_lock(impl: Impl, tmp_path: Path) -> None:
    store = seeded(impl, tmp_path)
    before = (tmp_path / STATUS).read_text()
    with pytest.raises(TodoCancelled, match="t-0006 is cancelled"):
        store.set_todo("t-0006", TodoState(status=TodoStatus.RUNNING, attempts=1))
    assert StatusFile.model_validate_json((tmp_path / STATUS).read_text()) == StatusFile.model_validate_json(
        before
    )
    store.set_todo("t-0006", TodoState(status=TodoStatus.PENDING))  # anything but a start is recorded
    assert store.load().todos["t-0006"].status is TodoStatus.PENDING


def test_a_refused_start_does_not_spoil_the_rest_of_its_batch(runner: asyncio.Runner, tmp_path: Path) -> None:
    store = core_async.status.AsyncStatusJsonStore(tmp_path)

    async def scenario() -> list[Any]:
        await store.set_todo("t-0001", TodoState(status=TodoStatus.CANCELLED))
        return await asyncio.gather(
            store.set_todo("t-0001", TodoState(status=TodoStatus.RUNNING, attempts=1)),
            store.set_todo("t-0002", TodoState(status=TodoStatus.DONE, commit="c" * 40)),
            store.set_todo("t-0003", TodoState(status=TodoStatus.RUNNING, attempts=1)),
            return_exceptions=True,
        )

    results = runner.run(scenario())
    assert isinstance(results[0], TodoCancelled) and results[1:] == [None, None]
    todos = runner.run(store.load()).todos
    assert {k: v.status.value for k, v in todos.items()} == {
        "t-0001": "cancelled",
        "t-0002": "done",
        "t-0003": "running",
    }


def _cancel(impl: Impl, root: Path, *ids: str) -> None:
    impl.status(root).operate("cancel", list(ids), source="cli", loop_running=False)


def test_an_agent_never_runs_a_cancelled_todo(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = workspace(tmp_path / "ws", stub.url)
    _cancel(impl, root, "t-0001", "t-0006")
    agent = impl.agent(root, stub.url)
    try:
        assert agent.run(until_idle=True) == 4
    finally:
        agent.aclose() if impl.is_async else agent.close()
    got = snapshot(root)
    assert got["states"]["t-0001"] == ("cancelled", None) and got["states"]["t-0006"] == ("cancelled", None)
    assert got["commit_counts"]["t-0001"] == 0 and got["commit_counts"]["t-0006"] == 0
    assert "hello" not in got["files"]["notes.txt"] and "bye" not in got["files"]["notes.txt"]
    assert impl.checkpoints(root).load("t-0001") is None
    rules = stub.stats(recent=0)["by_rule"]
    assert "append-line" not in rules, rules  # the prompts of t-0001 and t-0006 were never sent
    assert rules.get("create-file") == 2 and rules.get("replace-text") == 1


def test_a_cancel_between_reading_and_starting_wins(impl: Impl, tmp_path: Path, stub: Any) -> None:
    """The agent read "pending"; the operator cancelled; the store refuses the start: nothing runs."""
    root = workspace(tmp_path / "ws", stub.url)
    agent = impl.agent(root, stub.url)
    todo = impl.todos(root).get("t-0001")
    status = agent.target.status
    real_load = status.load

    def operator_cancels() -> None:  # another process, as far as the agent can tell
        legacy.status.StatusStore(root).operate("cancel", ["t-0001"], source="cli", loop_running=False)

    def stale_load() -> Any:  # what the agent read just before the operator's cancel landed
        status.load = real_load  # once (the legacy store's own writes call load under its lock)
        value = real_load()
        operator_cancels()
        return value

    async def stale_aload() -> Any:
        status.load = real_load
        value = await real_load()
        await asyncio.to_thread(operator_cancels)
        return value

    status.load = stale_aload if impl.is_async else stale_load
    try:
        state = agent.process(todo)
    finally:
        status.load = real_load
        agent.aclose() if impl.is_async else agent.close()
    assert state.status is TodoStatus.CANCELLED
    assert impl.status(root).load().todos["t-0001"].status is TodoStatus.CANCELLED
    assert impl.checkpoints(root).load("t-0001") is None
    assert git(root, "log", "--format=%s").count("\n") == 1  # the initial commit only
    assert stub.stats(recent=0)["by_rule"] == {}
