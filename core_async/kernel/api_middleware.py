"""ASGI middleware of the async API: request ids, trailing slashes, request metrics.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so the
correlation id it binds is visible to the endpoint and to every log line
written while answering, and streaming responses are not buffered.

* The request id is the client's ``X-Request-Id`` when it is a short token,
  else a new one; it is sent back in ``X-Request-Id``.
* ``/todos/`` is served as ``/todos`` (the legacy server strips trailing slashes).
* Each HTTP request counts in ``codeagent_http_requests_total{method, route, status}``
  and ``codeagent_http_request_seconds{route}``, by route template (never the raw path).

:class:`LoadShedding` answers a request at once with a 503 (``overloaded``,
``Retry-After: 1``) instead of queueing it when :data:`MAX_IN_FLIGHT` are being
answered, when the event loop runs more than :data:`MAX_LAG_S` behind, or when
more than :data:`SHED_BACKLOG` connections wait in the listen backlog (a burst
beyond what the loop serves queues there, where no in-flight count sees it:
the loop accepts only as fast as it answers; the server sets
``app.state.listen_backlog`` to read its length). Under a burst every
client gets a clear answer soon, the queue (and the memory it holds) stays
bounded, and the loop keeps its time for the todos.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core_async.kernel.logs import correlation, new_request_id
from core_async.kernel.metrics import MetricsCollector

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    """Binds a request id, normalises trailing slashes, records request metrics."""

    def __init__(self, app: ASGIApp, metrics: MetricsCollector) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            scope = dict(scope)
            scope["path"] = path.rstrip("/") or "/"
            if scope.get("raw_path"):
                scope["raw_path"] = scope["raw_path"].rstrip(b"/") or b"/"
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID_RE.match(given) else new_request_id()
        if scope["type"] == "websocket":
            with correlation(request_id):
                await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = dict(message)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            with correlation(request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            route: Any = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.request(scope["method"], label, status, time.perf_counter() - started)


#: HTTP requests the API answers at once; past it a request is refused with a 503 (``/health`` excepted).
MAX_IN_FLIGHT = 64
#: How far behind the event loop may run (seconds) before requests are refused with a 503.
MAX_LAG_S = 0.5
#: How often the loop's lag and the listen backlog are probed while requests come in.
PROBE_S = 0.05
#: The probe stops after this long without a request (an idle server wakes for nothing).
PROBE_IDLE_S = 1.0
#: Connections waiting in the listen backlog past which requests are refused with a 503.
SHED_BACKLOG = 64
_OVERLOADED = json.dumps(
    {"error": {"code": "overloaded", "message": "too many requests in flight; retry in a second"}}
).encode()


class LoadShedding:
    """Refuse HTTP requests with a JSON 503 when overloaded (WebSockets and ``/health`` pass).

    Overloaded: ``limit`` requests in flight, the event loop ``max_lag``
    seconds behind, or more than :data:`SHED_BACKLOG` connections waiting to be
    accepted, as a timer that should fire every :data:`PROBE_S` finds (started
    by a request, stopped after :data:`PROBE_IDLE_S` without one; a plain timer,
    nothing to cancel at shutdown).
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_IN_FLIGHT, max_lag: float = MAX_LAG_S) -> None:
        self.app = app
        self.limit = limit
        self.max_lag = max_lag
        self.in_flight = 0
        self.shed = 0
        self.lag = 0.0
        self.backlog = 0
        self._probing = False
        self._backlog: Any = None
        self._last_request = 0.0

    def _probe(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.lag = max(0.0, now - due)
        self.backlog = self._backlog() if self._backlog is not None else 0
        if self.in_flight == 0 and now - self._last_request > PROBE_IDLE_S:
            self._probing = False  # the next request starts it again
            self.lag = 0.0
            self.backlog = 0
            return
        loop.call_later(PROBE_S, self._probe, now + PROBE_S)

    def overloaded(self) -> bool:
        """Whether a request now would be refused."""
        return self.in_flight >= self.limit or self.lag > self.max_lag or self.backlog > SHED_BACKLOG

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") in ("/health", "/v1/health"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        self._last_request = loop.time()
        if not self._probing:
            self._probing = True
            self._backlog = getattr(getattr(scope.get("app"), "state", None), "listen_backlog", None)
            loop.call_later(PROBE_S, self._probe, loop.time() + PROBE_S)
        if self.overloaded():
            self.shed += 1
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_OVERLOADED)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": _OVERLOADED})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
