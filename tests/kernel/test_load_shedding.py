"""Load shedding of the async API: past MAX_IN_FLIGHT requests a clear JSON 503, at once (no queue)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from core_async.kernel.api_middleware import LoadShedding


async def _call(app: Any, path: str) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


async def test_a_request_past_the_limit_gets_a_503_at_once_and_health_still_answers() -> None:
    """Chaos campaign (API abuse): a burst queued without bound; now it is refused, clearly."""
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/health":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    shedding = LoadShedding(slow_app, limit=3)
    held = [asyncio.ensure_future(_call(shedding, "/todos")) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert shedding.in_flight == 3
    status, headers, body = await _call(shedding, "/todos")
    assert (status, headers["retry-after"], headers["content-type"]) == (503, "1", "application/json")
    assert json.loads(body)["error"]["code"] == "overloaded"
    assert (await _call(shedding, "/health"))[0] == 200  # never shed
    release.set()
    assert [s for s, _, _ in await asyncio.gather(*held)] == [200, 200, 200]
    assert (shedding.in_flight, shedding.shed) == (0, 1)
    assert (await _call(shedding, "/todos"))[0] == 200


async def test_a_long_listen_backlog_or_a_late_loop_sheds_too() -> None:
    """Chaos campaign (API abuse): at 10x the service rate the queue formed in the listen backlog (the loop
    accepts only as fast as it answers), so the in-flight count never saw it: 20 s answers, no 503."""
    from types import SimpleNamespace

    from core_async.kernel import api_middleware

    waiting = [0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    shedding = LoadShedding(app)
    owner = SimpleNamespace(state=SimpleNamespace(listen_backlog=lambda: waiting[0]))

    async def call(path: str) -> int:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await shedding(
            {"type": "http", "path": path, "method": "GET", "headers": [], "app": owner}, receive, send
        )
        return int(sent[0]["status"])

    assert await call("/todos") == 200
    waiting[0] = api_middleware.SHED_BACKLOG + 1
    await asyncio.sleep(api_middleware.PROBE_S * 3)
    assert (shedding.backlog, await call("/todos"), await call("/health")) == (waiting[0], 503, 200)
    waiting[0] = 0
    await asyncio.sleep(api_middleware.PROBE_S * 3)
    assert await call("/todos") == 200
    shedding.lag = api_middleware.MAX_LAG_S + 1  # as the probe finds a loop that late
    assert await call("/todos") == 503


async def test_the_lag_probe_stops_when_requests_stop_and_starts_with_the_next() -> None:
    """Idle wake-ups: the probe ran every 50 ms forever after the first request, on an idle server too."""
    from core_async.kernel import api_middleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    shedding = LoadShedding(app)
    assert (await _call(shedding, "/todos"))[0] == 200
    assert shedding._probing
    loop = asyncio.get_running_loop()
    deadline = loop.time() + api_middleware.PROBE_IDLE_S + 10.0
    while shedding._probing:
        assert loop.time() < deadline, "the probe never stopped"
        await asyncio.sleep(0.05)
    # Stopped: no timer of the probe is left on the loop.
    handles = getattr(loop, "_scheduled", [])
    assert not [h for h in handles if not h.cancelled() and getattr(h, "_callback", None) == shedding._probe]
    assert (shedding.lag, shedding.backlog) == (0.0, 0)
    assert (await _call(shedding, "/todos"))[0] == 200
    assert shedding._probing  # the next request starts it again
