"""``POST /todos/{id}/retry`` and ``POST /todos/{id}/cancel``, one suite against both servers.

The workspace (``conftest.workspace``): t-0001 done, t-0002 failed (``LLM said no``, 2 attempts),
t-0003 pending.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx

from codeagent.models import TodoState, TodoStatus
from legacy.status import StatusStore
from tests.api.conftest import SHA
from tests.api.servers import start_server


def error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def test_retry_puts_a_failed_todo_back_keeping_its_attempts(api: httpx.Client, workspace: Path) -> None:
    reply = api.post("/todos/t-0002/retry")
    assert reply.status_code == 200
    body = reply.json()
    assert (body["id"], body["status"], body["attempts"], body["error"]) == ("t-0002", "pending", 2, None)
    doc = StatusStore(workspace).load()
    assert doc.todos["t-0002"].status is TodoStatus.PENDING
    [op] = doc.operations
    assert (op.todo_id, op.action, op.previous, op.error, op.source, op.attempts) == (
        "t-0002",
        "retry",
        TodoStatus.FAILED,
        "LLM said no",
        "api",
        2,
    )
    notice = json.loads((workspace / ".agent/requeue.json").read_text())
    assert notice["todo_ids"] == ["t-0002"] and notice["source"] == "api"
    again = api.post("/todos/t-0002/retry", json={})  # nothing to do: answered as it stands
    assert again.status_code == 200 and again.json()["status"] == "pending"
    assert len(StatusStore(workspace).load().operations) == 1


def test_cancel_then_retry_a_pending_todo(api: httpx.Client, workspace: Path) -> None:
    reply = api.post("/todos/t-0003/cancel")
    assert (reply.status_code, reply.json()["status"]) == (200, "cancelled")
    assert api.get("/todos/t-0003").json()["status"] == "cancelled"
    assert api.post("/todos/t-0003/cancel").json()["status"] == "cancelled"
    back = api.post("/todos/t-0003/retry")
    assert (back.status_code, back.json()["status"]) == (200, "pending")
    actions = [(o.action, o.previous.value) for o in StatusStore(workspace).load().operations]
    assert actions == [("cancel", "pending"), ("retry", "cancelled")]
    assert "operations" in api.get("/status").json()


def test_what_a_status_forbids_is_a_409_saying_why(api: httpx.Client, workspace: Path) -> None:
    reply = api.post("/todos/t-0001/retry")
    expected = f"t-0001: cannot retry: it is done in commit {SHA[:12]}; add a new todo to change it again"
    assert (reply.status_code, reply.json()) == (409, error("conflict", expected))
    reply = api.post("/todos/t-0001/cancel")
    expected = f"t-0001: cannot cancel: it is already done in commit {SHA[:12]}"
    assert (reply.status_code, reply.json()) == (409, error("conflict", expected))
    StatusStore(workspace).set_todo("t-0003", TodoState(status=TodoStatus.RUNNING, attempts=1))
    reply = api.post("/todos/t-0003/cancel")
    assert reply.status_code == 409
    assert reply.json()["error"]["message"].startswith("t-0003: cannot cancel: it is running")
    assert StatusStore(workspace).load().todos["t-0003"].status is TodoStatus.RUNNING
    assert StatusStore(workspace).load().operations == []


def test_unknown_todos_bad_bodies_and_wrong_methods(api: httpx.Client) -> None:
    reply = api.post("/todos/t-9999/retry")
    assert (reply.status_code, reply.json()) == (404, error("not_found", "no todo 't-9999'"))
    reply = api.post("/todos/t-0002/cancel", json={"reason": "x", "force": True})
    assert (reply.status_code, reply.json()) == (
        400,
        error("invalid_request", "unknown field(s): force, reason"),
    )
    reply = api.post("/todos/t-0002/cancel", json=[1])
    assert (reply.status_code, reply.json()) == (400, error("invalid_request", "body must be a JSON object"))
    reply = api.post("/todos/t-0002/retry", content=b"nope")
    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("body is not valid JSON: ")
    reply = api.get("/todos/t-0002/retry")
    assert reply.status_code == 405 and reply.headers["allow"] == "POST"
    assert reply.json() == error("method_not_allowed", "GET is not allowed on /todos/t-0002/retry")
    reply = api.post("/todos/t-0002/restart")
    assert (reply.status_code, reply.json()) == (
        404,
        error("not_found", "no such endpoint: /todos/t-0002/restart"),
    )
    assert api.get("/todos/t-0002").json()["status"] == "failed"  # none of that changed anything


def test_the_token_guards_retry_and_cancel(secured: httpx.Client, workspace: Path) -> None:
    for path in ("/todos/t-0002/retry", "/todos/t-0003/cancel"):
        reply = secured.post(path)
        assert (reply.status_code, reply.json()) == (
            401,
            error("unauthorized", "missing or wrong bearer token"),
        )
    assert StatusStore(workspace).load().operations == []
    reply = secured.post("/todos/t-0002/retry", headers={"Authorization": "Bearer tok"})
    assert reply.status_code == 200


def test_both_servers_answer_retry_and_cancel_alike(workspace: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy"
    shutil.copytree(workspace, other)
    legacy = start_server("legacy", workspace, None)
    modern = start_server("async", other, None)
    requests = [
        ("POST", "/todos/t-0002/retry", b""),
        ("POST", "/todos/t-0002/retry", b"{}"),
        ("POST", "/todos/t-0001/retry", b""),
        ("POST", "/todos/t-0003/cancel", b""),
        ("POST", "/todos/t-0003/cancel", b'{"x": 1}'),
        ("POST", "/todos/t-0404/cancel", b""),
        ("PUT", "/todos/t-0003/cancel", b""),
    ]
    try:
        with httpx.Client(base_url=legacy.url) as old, httpx.Client(base_url=modern.url) as new:
            for method, path, body in requests:
                a = old.request(method, path, content=body)
                b = new.request(method, path, content=body)
                strip = ("updated_at",)
                left = {k: v for k, v in a.json().items() if k not in strip}
                right = {k: v for k, v in b.json().items() if k not in strip}
                assert (a.status_code, left) == (b.status_code, right), (method, path)
                assert a.headers.get("allow") == b.headers.get("allow"), (method, path)
    finally:
        legacy.stop()  # type: ignore[operator]
        modern.stop()  # type: ignore[operator]
