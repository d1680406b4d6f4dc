"""ASGI middleware of the async API: request ids, trailing slashes, request metrics.

A pure ASGI middleware (not Starlette's ``BaseHTTPMiddleware``), so the
correlation id it binds is visible to the endpoint and to every log line
written while answering, and streaming responses are not buffered.

* The request id is the client's ``X-Request-Id`` when it is a short token,
  else a new one; it is sent back in ``X-Request-Id``.
* ``/todos/`` is served as ``/todos`` (the legacy server strips trailing slashes).
* Each HTTP request counts in ``codeagent_http_requests_total{method, route, status}``
  and ``codeagent_http_request_seconds{route}``, by route template (never the raw path).
"""

from __future__ import annotations

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
