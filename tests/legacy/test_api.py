"""The legacy HTTP API over real loopback HTTP (httpx client, stdlib server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeagent.models import Checkpoint, Stage, Todo, TodoState, TodoStatus
from legacy.api import LegacyAPIServer
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from legacy.todos import TodoStore


def _server(workspace: Path, **kw: object) -> LegacyAPIServer:
    return LegacyAPIServer(
        TodoStore(workspace),
        StatusStore(workspace),
        CheckpointStore(workspace),
        poll_interval=0.02,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def api(workspace: Path) -> Iterator[httpx.Client]:
    server = _server(workspace)
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            yield client
    finally:
        server.stop()


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"]["code"] == code
    return str(body["error"]["message"])


def test_health(api: httpx.Client) -> None:
    response = api.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "loop": "legacy"}


def test_add_list_and_get_todos(api: httpx.Client, workspace: Path) -> None:
    response = api.post("/todos", json={"text": "append a line", "files": ["notes.txt"]})
    assert response.status_code == 201
    created = response.json()
    assert created["id"] == "t-0001"
    assert created["files"] == ["notes.txt"]
    assert created["status"] == "pending"
    assert created["attempts"] == 0
    assert created["commit"] is None
    api.post("/todos", json={"text": "no files"})
    StatusStore(workspace).set_todo("t-0001", TodoState(status=TodoStatus.DONE, commit="abc1", attempts=1))
    listed = api.get("/todos").json()["todos"]
    assert [(t["id"], t["status"], t["commit"]) for t in listed] == [
        ("t-0001", "done", "abc1"),
        ("t-0002", "pending", None),
    ]
    one = api.get("/todos/t-0001")
    assert one.status_code == 200
    assert one.json() == listed[0]
    assert [t.id for t in TodoStore(workspace).load()] == ["t-0001", "t-0002"]


def test_unknown_todo_is_404(api: httpx.Client) -> None:
    assert "t-0042" in _error(api.get("/todos/t-0042"), 404, "not_found")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "text"),
        (b'{"text": ""}', "text"),
        (b'{"text": "   "}', "text"),
        (b'{"text": 3}', "text"),
        (b'{"text": "x", "files": "a.py"}', "files"),
        (b'{"text": "x", "files": [1]}', "files"),
        (b'{"text": "x", "files": ["../outside.py"]}', "files"),
        (b'{"text": "x", "files": [".git/config"]}', "files"),
        (b'{"text": "x", "priority": 1}', "priority"),
    ],
)
def test_invalid_todo_bodies_are_400(api: httpx.Client, workspace: Path, body: bytes, fragment: str) -> None:
    response = api.post("/todos", content=body, headers={"content-type": "application/json"})
    assert fragment in _error(response, 400, "invalid_request")
    assert TodoStore(workspace).load() == []


def test_status_document(api: httpx.Client, workspace: Path) -> None:
    assert api.get("/status").json()["todos"] == {}
    StatusStore(workspace).set_todo("t-0001", TodoState(status=TodoStatus.FAILED, error="boom", attempts=2))
    body = api.get("/status").json()
    assert body["version"] == 1
    assert body["todos"]["t-0001"]["status"] == "failed"
    assert body["todos"]["t-0001"]["error"] == "boom"
    assert body["agent"]["loop"] == "legacy"


def test_checkpoints(api: httpx.Client, workspace: Path) -> None:
    CheckpointStore(workspace).save(
        Checkpoint(todo_id="t-0001", stage=Stage.EDITED, reply="r", writes={"a.txt": "A\n"})
    )
    response = api.get("/checkpoints/t-0001")
    assert response.status_code == 200
    assert response.json()["stage"] == "edited"
    assert response.json()["writes"] == {"a.txt": "A\n"}
    _error(api.get("/checkpoints/t-0002"), 404, "not_found")
    _error(api.get("/checkpoints/..%2Fstatus"), 404, "not_found")
    assert api.get("/checkpoints/t%2D0001").status_code == 200


def test_unknown_path_and_wrong_method(api: httpx.Client) -> None:
    _error(api.get("/nope"), 404, "not_found")
    response = api.delete("/todos")
    _error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, POST"
    _error(api.post("/health", json={}), 405, "method_not_allowed")
    _error(api.put("/todos/t-0001", json={}), 405, "method_not_allowed")


def test_broken_state_file_is_500_naming_it(api: httpx.Client, workspace: Path) -> None:
    (workspace / ".agent").mkdir(exist_ok=True)
    (workspace / ".agent" / "todos.json").write_text('{"todos": [{"id": "t-1"}]}')
    message = _error(api.get("/todos"), 500, "internal")
    assert ".agent/todos.json" in message
    assert "todos[0].text" in message
    assert api.get("/health").status_code == 200


def test_bearer_token(workspace: Path) -> None:
    server = _server(workspace, token="s3cret")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as client:
            assert client.get("/health").status_code == 200
            response = client.get("/todos")
            _error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
            _error(client.get("/todos", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
            _error(client.post("/todos", json={"text": "x"}), 401, "unauthorized")
            assert TodoStore(workspace).load() == []
            good = {"Authorization": "Bearer s3cret"}
            assert client.get("/todos", headers=good).status_code == 200
            assert client.post("/todos", json={"text": "x"}, headers=good).status_code == 201
    finally:
        server.stop()


def test_on_todo_added_is_called(workspace: Path) -> None:
    added: list[Todo] = []
    server = _server(workspace, on_todo_added=added.append)
    server.start()
    try:
        response = httpx.post(f"{server.url}/todos", json={"text": "wake up"}, timeout=5)
    finally:
        server.stop()
    assert response.status_code == 201
    assert [t.text for t in added] == ["wake up"]


def test_many_requests_on_one_keep_alive_connection(api: httpx.Client) -> None:
    for n in range(20):
        assert api.post("/todos", json={"text": f"todo {n}"}).status_code == 201
    assert len(api.get("/todos").json()["todos"]) == 20


def test_bad_content_length_is_400(workspace: Path) -> None:
    import socket

    server = _server(workspace)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /todos HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    finally:
        server.stop()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["code"] == "invalid_request"


def test_stop_releases_the_port(workspace: Path) -> None:
    server = _server(workspace)
    server.start()
    url = server.url
    server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


def test_a_burst_past_the_in_flight_limit_gets_503s_not_a_queue(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign (API abuse): at 10x the service rate the stdlib's listen backlog of 5 left clients
    waiting out TCP retransmits (timeouts after 30 s); now the backlog is large, a request past the
    in-flight limit is refused at once with a JSON 503, and an idle connection is closed after a while."""
    import threading

    from codeagent.protocols import ExtraRoute
    from legacy import api as legacy_api

    monkeypatch.setattr(legacy_api, "MAX_IN_FLIGHT", 2)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def slow(ident: str | None, body: object) -> tuple[int, object]:
        entered.release()
        release.wait(10)
        return 200, {"ok": True}

    server = _server(workspace, extra_routes=[ExtraRoute("GET", "/slow", slow)])
    assert server._server.request_queue_size == legacy_api.BACKLOG >= 1024
    server.start()
    try:
        answers: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(httpx.get(f"{server.url}/slow", timeout=10).status_code)
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
        shed = httpx.get(f"{server.url}/todos", timeout=5)
        assert _error(shed, 503, "overloaded") and shed.headers["retry-after"] == "1"
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200  # never shed
        release.set()
        for thread in threads:
            thread.join(10)
        assert answers == [200, 200] and server.shed == 1
        assert httpx.get(f"{server.url}/todos", timeout=5).status_code == 200
    finally:
        release.set()
        server.stop()


def test_an_idle_connection_is_closed_after_the_idle_timeout(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from legacy import api as legacy_api

    monkeypatch.setattr(legacy_api, "IDLE_TIMEOUT", 0.3)
    server = _server(workspace)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as idle:
            assert idle.recv(1) == b""  # the server closed it: its thread is free again
    finally:
        server.stop()


def test_a_connection_accepted_past_a_long_listen_backlog_gets_a_503_at_once(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign (API abuse): at 10x the service rate the queue formed in the listen backlog, which
    threads starved of the GIL accept slowly; now the accepting thread answers 503 itself."""
    from legacy import api as legacy_api

    server = _server(workspace)
    monkeypatch.setattr(type(server._server), "waiting", lambda self: legacy_api.SHED_BACKLOG + 1)
    server.start()
    try:
        shed = httpx.get(f"{server.url}/todos", timeout=5)
        assert _error(shed, 503, "overloaded") and shed.headers["retry-after"] == "1"
        assert server._server.shed >= 1
        monkeypatch.setattr(type(server._server), "waiting", lambda self: 0)
        assert httpx.get(f"{server.url}/todos", timeout=5).status_code == 200
    finally:
        server.stop()


def test_the_listen_backlog_is_read_from_the_kernel(workspace: Path) -> None:
    import socket
    import time

    server = _server(workspace)  # bound and listening, not accepting yet
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        clients = [socket.create_connection((host, int(port)), timeout=5) for _ in range(3)]
        time.sleep(0.05)
        assert server._server.waiting() == 3
        for client in clients:
            client.close()
    finally:
        server.stop()


def test_a_body_the_route_does_not_read_is_never_parsed_as_the_next_request(workspace: Path) -> None:
    """Chaos campaign finding (fuzzing): the body of a GET (or of any request answered before its body was
    read) stayed in the stream and was parsed as the connection's next request: request smuggling, and a
    traceback printed on stderr when that "request line" was too long."""
    import socket

    server = _server(workspace)
    server.start()
    try:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection((host, int(port)), timeout=5) as conn:
            conn.sendall(
                b"GET /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled) + smuggled
            )
            conn.settimeout(1.0)
            received = b""
            try:
                while chunk := conn.recv(65536):
                    received += chunk
            except TimeoutError:
                pass
        assert received.count(b"HTTP/1.1 ") == 1 and received.startswith(b"HTTP/1.1 404")
    finally:
        server.stop()
