"""A running async kernel and the operator's verbs: a retry wakes it, a cancel keeps a queued todo from running.

The kernel never wakes on its own ``status.json`` writes; a retry rewrites
``.agent/requeue.json``, which it watches, and that also clears what it
remembered of a todo whose run raised.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from codeagent.models import AgentState, StatusFile, Todo, TodoState, TodoStatus
from codeagent.protocols import AsyncCheckpointStore, AsyncStatusStore, AsyncTodoStore
from core_async.kernel.components import PlainComponents
from core_async.kernel.limits import ResourceLimits
from legacy.status import StatusStore
from llm_stub import StubOptions, StubServer
from llm_stub.rules import default_rules_text
from tests.kernel.test_websocket import read_until, ws_url
from tests.kernel.workspaces import append_todos, make_workspace, running_kernel, trailers, wait_for_events

#: Tasks with this word get an answer without edit blocks while the flaky rules are loaded.
FLAKY = "flaky"


def write_flaky_rules(path: Path) -> Path:
    """The bundled rules, after one that answers any task naming :data:`FLAKY` with no edit (a failure)."""
    rule = f'[[rules]]\nname = "flaky"\npattern = "{FLAKY}"\naction = "reply"\ntemplate = "not today"\n\n'
    path.write_text(rule + default_rules_text(), encoding="utf-8")
    return path


def todos_with_flaky(n: int, flaky: set[int]) -> list[Todo]:
    """``append_todos(n)``, the 1-based positions in ``flaky`` appending a line that names :data:`FLAKY`."""
    out = append_todos(n)
    for i in flaky:
        out[i - 1] = out[i - 1].model_copy(
            update={"text": f'append a line "{FLAKY} {i - 1}" to file f{i - 1}.txt'}
        )
    return out


@pytest.fixture
def flaky_stub(tmp_path: Path) -> Iterator[StubServer]:
    rules = write_flaky_rules(tmp_path / "flaky.toml")
    with StubServer(StubOptions(latency_ms=300, rules_path=str(rules))) as stub:
        yield stub


def _types(events: list[dict[str, Any]], todo_id: str) -> list[str]:
    return [e["type"] for e in events if e.get("todo_id") == todo_id]


async def test_api_retry_and_cancel_on_a_running_kernel_are_on_the_websocket(
    tmp_path: Path, flaky_stub: StubServer
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 4, todos=todos_with_flaky(4, {2}))
    limits = ResourceLimits(per_workspace=1)  # one at a time, in order: t-0004 waits in the queue
    async with (
        running_kernel([root], flaky_stub.url, port=0, limits=limits) as core,
        connect(ws_url(str(core.api_url), "/v1/events?after=0")) as ws,
        httpx.AsyncClient(base_url=str(core.api_url)) as client,
    ):
        cancelled = await client.post("/v1/todos/t-0004/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        events = await read_until(
            ws, lambda m, _seen: m.get("todo_id") == "t-0003" and m["type"] == "todo.done"
        )
        assert "todo.failed" in _types(events, "t-0002")
        flaky_stub.set_options(rules_path=None)  # the LLM works again
        retried = await client.post("/v1/todos/t-0002/retry")
        assert (retried.status_code, retried.json()["status"]) == (200, "pending")
        events += await read_until(
            ws, lambda m, _seen: m.get("todo_id") == "t-0002" and m["type"] == "todo.done"
        )
    queued = _types(events, "t-0004")  # cancelled while waiting in the kernel's queue: its job ran
    assert queued == ["todo.queued", "todo.cancelled"], queued  # the API's; the queued job never starts it
    assert "todo.checkpoint" not in queued and "todo.done" not in queued
    mine = _types(events, "t-0002")
    assert mine.index("todo.failed") < mine.index("todo.retried") < mine.index("todo.done")
    retried_event = next(e for e in events if e["type"] == "todo.retried")
    assert (retried_event["previous"], retried_event["source"]) == ("failed", "api")
    cancel_event = next(e for e in events if e["type"] == "todo.cancelled" and e.get("source") == "api")
    assert (cancel_event["todo_id"], cancel_event["previous"]) == ("t-0004", "pending")
    status = StatusStore(root).load().todos
    assert {k: v.status.value for k, v in status.items()} == {
        "t-0001": "done",
        "t-0002": "done",
        "t-0003": "done",
        "t-0004": "cancelled",
    }
    assert status["t-0002"].attempts == 2
    assert sorted(trailers(root)) == ["t-0001", "t-0002", "t-0003"]
    assert not (root / ".agent/checkpoints/t-0004.json").exists()


class _FailsOnce:
    """A status store whose first start of one todo fails, as a full disk would: the run raises."""

    def __init__(self, inner: AsyncStatusStore, todo_id: str) -> None:
        self.inner = inner
        self.todo_id = todo_id
        self.failed = False

    async def load(self) -> StatusFile:
        return await self.inner.load()

    async def set_todo(self, todo_id: str, state: TodoState) -> None:
        if todo_id == self.todo_id and state.status is TodoStatus.RUNNING and not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        await self.inner.set_todo(todo_id, state)

    async def set_agent(self, agent: AgentState) -> None:
        await self.inner.set_agent(agent)


class _Components(PlainComponents):
    def stores(self, root: Path) -> tuple[AsyncTodoStore, AsyncStatusStore, AsyncCheckpointStore]:
        todos, status, checkpoints = super().stores(root)
        return todos, _FailsOnce(status, "t-0002"), checkpoints


async def test_a_cli_retry_runs_again_a_todo_whose_run_raised(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 3)
    async with running_kernel([root], stub_url, components=lambda _root: _Components()) as core:
        events = await wait_for_events(
            core,
            lambda seen: (
                sum(e.type == "todo.done" for e in seen) == 2 and any(e.type == "todo.error" for e in seen)
            ),
        )
        assert [e.data["todo_id"] for e in events if e.type == "todo.error"] == ["t-0002"]
        # What `codeagent todo retry t-0002` does: the todo is still pending on disk (its start was
        # never written), so nothing changes there, but the kernel is told to look at it again.
        [change] = await asyncio.to_thread(
            StatusStore(root).operate, "retry", ["t-0002"], source="cli", loop_running=True
        )
        assert (change.before, change.changed, change.refused) == (TodoStatus.PENDING, False, None)
        await wait_for_events(
            core,
            lambda seen: any(e.type == "todo.done" and e.data["todo_id"] == "t-0002" for e in seen),
            after=events[-1].seq,
        )
    assert {s.status for s in StatusStore(root).load().todos.values()} == {TodoStatus.DONE}
    assert sorted(trailers(root)) == ["t-0001", "t-0002", "t-0003"]
    assert json.loads((root / ".agent/requeue.json").read_text())["todo_ids"] == ["t-0002"]
