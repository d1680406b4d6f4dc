"""The WebSocket event stream, with the ``websockets`` client: every event in order, resume with ?after=N."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from core_async.kernel.limits import ResourceLimits
from tests.kernel.workspaces import make_workspace, running_kernel


def ws_url(http_url: str, path: str) -> str:
    return http_url.replace("http://", "ws://") + path


async def read_until(ws: ClientConnection, stop: Any, *, within: float = 30) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(within):
        while True:
            message = json.loads(await ws.recv())
            out.append(message)
            if stop(message, out):
                return out


async def read_to_the_end(ws: ClientConnection) -> tuple[list[dict[str, Any]], ConnectionClosed]:
    """Every message until the server closes the connection, and how it closed."""
    tail: list[dict[str, Any]] = []
    while True:
        try:
            tail.append(json.loads(await ws.recv()))
        except ConnectionClosed as closed:
            return tail, closed


def all_done(n: int):
    def stop(message: dict[str, Any], seen: list[dict[str, Any]]) -> bool:
        return sum(m["type"] == "todo.done" for m in seen) == n

    return stop


async def test_a_client_sees_every_event_of_a_run_in_order(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 10)
    async with (
        running_kernel([root], stub_url, port=0, limits=ResourceLimits(max_concurrency=3)) as core,
        connect(ws_url(str(core.api_url), "/v1/events?after=0")) as ws,
    ):
        hello = json.loads(await ws.recv())
        assert hello["type"] == "stream.hello" and hello["after"] == 0 and hello["missed"] is None
        events = await read_until(ws, all_done(10))
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # every event, in order, none twice
    assert events[0]["type"] == "server.started"
    for i in range(1, 11):
        mine = [e["type"] for e in events if e.get("todo_id") == f"t-{i:04d}"]
        assert mine[0] == "todo.queued" and mine[1] == "todo.started" and mine[-1] == "todo.done"
        stages = [
            e["stage"] for e in events if e.get("todo_id") == f"t-{i:04d}" and e["type"] == "todo.checkpoint"
        ]
        assert stages == ["started", "answered", "edited", "committed"]


async def test_a_reconnect_with_after_loses_no_event(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 12)
    async with running_kernel([root], stub_url, port=0, limits=ResourceLimits(max_concurrency=2)) as core:
        url = str(core.api_url)
        async with connect(ws_url(url, "/events?after=0")) as ws:
            await ws.recv()  # hello
            first = await read_until(ws, lambda m, seen: len(seen) == 8)
        last = first[-1]["seq"]
        await asyncio.sleep(0.2)  # events go on while the client is away
        async with connect(ws_url(url, f"/events?after={last}")) as ws:
            hello = json.loads(await ws.recv())
            assert hello["after"] == last and hello["last_seq"] > last
            rest = await read_until(
                ws, lambda m, seen: sum(e["type"] == "todo.done" for e in first + seen) == 12
            )
    seqs = [e["seq"] for e in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_the_stream_needs_the_token_filters_by_workspace_and_ends_on_shutdown(
    tmp_path: Path, stub_url: str
) -> None:
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        make_workspace(root, 2)
    async with running_kernel(roots, stub_url, port=0, token="tok") as core:
        url = ws_url(str(core.api_url), "/v1/events")
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 403
        async with connect(f"{url}?after=abc", additional_headers={"Authorization": "Bearer tok"}) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
        ws = await connect(f"{url}?after=0&workspace=two&token=tok")
        await ws.recv()
        events = await read_until(ws, all_done(2))
        assert {e.get("workspace") for e in events} <= {"two", None}
    # the kernel shut down: the client gets everything up to server.stopped, then a normal close
    tail, closed = await read_to_the_end(ws)
    assert tail[-1]["type"] == "server.stopped", tail
    assert closed.rcvd is not None and closed.rcvd.code == 1000
