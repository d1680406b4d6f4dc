"""What only the async API has: /v1/workspaces, scoped paths, /metrics, request ids, its error paths.

Driven in-process through httpx's ASGI transport (no socket), which also lets
a test send what a real HTTP server would refuse before the app sees it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from codeagent.errors import AgentError
from codeagent.models import Todo
from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.kernel.api_app import MAX_BODY_BYTES, StoreWorkspace, create_api_app
from core_async.kernel.events import EventBus
from core_async.kernel.metrics import MetricsCollector
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore
from tests.kernel.workspaces import make_workspace


def store_workspace(root: Path) -> StoreWorkspace:
    return StoreWorkspace(
        root.name,
        AsyncTodoJsonStore(root),
        AsyncStatusJsonStore(root),
        AsyncCheckpointJsonStore(root),
        path=str(root),
    )


class Failing(StoreWorkspace):
    """A workspace whose todo store fails in ways the real one does not."""

    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Todo:
        if text == "invalid":
            Todo.model_validate({"id": "t-1", "text": ""})
        raise RuntimeError("the disk is on fire")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    one, two = tmp_path / "one", tmp_path / "two"
    make_workspace(one, 2)
    make_workspace(two, 1)
    failing = Failing(
        "broken", AsyncTodoJsonStore(one), AsyncStatusJsonStore(one), AsyncCheckpointJsonStore(one)
    )
    app = create_api_app(
        [store_workspace(one), store_workspace(two), failing],
        metrics=MetricsCollector(),
        events=EventBus(),
        token=lambda: "tok",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://api", headers={"Authorization": "Bearer tok"}
    ) as c:
        yield c


async def test_workspaces_are_listed_and_addressable(client: httpx.AsyncClient, tmp_path: Path) -> None:
    listed = (await client.get("/v1/workspaces")).json()["workspaces"]
    assert [w["name"] for w in listed] == ["one", "two", "broken"]
    assert listed[0]["path"] == str(tmp_path / "one")
    assert len((await client.get("/v1/workspaces/two/todos")).json()["todos"]) == 1
    assert len((await client.get("/v1/todos")).json()["todos"]) == 2  # the first is the default
    created = await client.post("/v1/workspaces/two/todos", json={"text": "more"})
    assert created.status_code == 201 and created.json()["id"] == "t-0002"
    assert (await client.get("/v1/workspaces/two/todos/t-0002")).json()["text"] == "more"
    assert (await client.get("/v1/workspaces/two/status")).status_code == 200
    assert (await client.get("/v1/workspaces/two/checkpoints/t-0001")).status_code == 404
    missing = await client.get("/v1/workspaces/nope/todos")
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "not_found", "message": "no workspace 'nope'"}}


async def test_metrics_are_served_and_guarded(client: httpx.AsyncClient) -> None:
    await client.get("/v1/todos")
    await client.get("/nope")
    reply = await client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    requests = {
        (s.labels["route"], s.labels["status"]): s.value
        for s in families["codeagent_http_requests"].samples
        if s.name.endswith("_total")
    }
    assert requests[("/v1/todos", "200")] == 1 and requests[("unmatched", "404")] == 1
    assert (await client.get("/v1/metrics", headers={"Authorization": "Bearer no"})).status_code == 401


async def test_request_ids_are_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/health", headers={"X-Request-Id": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/health", headers={"X-Request-Id": "not ok!"})
    assert made.headers["x-request-id"].startswith("req-")


async def test_store_failures_become_the_legacy_error_shapes(client: httpx.AsyncClient) -> None:
    crash = await client.post("/v1/workspaces/broken/todos", json={"text": "x"})
    assert crash.status_code == 500
    assert crash.json() == {"error": {"code": "internal", "message": "RuntimeError: the disk is on fire"}}
    invalid = await client.post("/v1/workspaces/broken/todos", json={"text": "invalid"})
    assert invalid.status_code == 400 and invalid.json()["error"]["message"].startswith("text: ")


async def test_bodies_over_the_limit_are_refused_even_without_a_length(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    streamed = await client.post("/todos", content=chunks())
    assert streamed.status_code == 400
    assert streamed.json()["error"]["message"] == "missing, bad or too large Content-Length"
    bad = await client.post("/todos", content=b"{}", headers={"Content-Length": "two"})
    assert bad.status_code == 400


def test_the_error_types_used_here_are_the_domain_ones() -> None:
    assert issubclass(AgentError, Exception) and issubclass(ValidationError, ValueError)
