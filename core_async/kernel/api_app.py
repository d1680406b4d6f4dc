"""The async HTTP API: a Starlette app with the legacy endpoints, versioned, plus metrics and events.

Same endpoints, JSON bodies, status codes and error shapes as the legacy API
(:mod:`legacy.api`); the one intended difference is ``"loop": "async"`` in
``GET /health``.

======  ===========================  ==========================================
GET     /v1/health                   200 ``{"status": "ok", "loop": "async"}`` (no token needed)
GET     /v1/todos                    200 ``{"todos": [todo view, ...]}``
POST    /v1/todos                    201 todo view; body ``{"text": str, "files": [str]}``
GET     /v1/todos/{id}               200 todo view, or 404
POST    /v1/todos/{id}/retry         200 todo view: failed, interrupted or cancelled -> pending (409 if not)
POST    /v1/todos/{id}/cancel        200 todo view: pending, failed or interrupted -> cancelled (409 if not)
GET     /v1/status                   200 the ``.agent/status.json`` document
GET     /v1/checkpoints/{id}         200 the checkpoint of a todo, or 404
GET     /v1/metrics                  200 Prometheus text exposition
WS      /v1/events                   the event stream (``?after=N`` resumes)
GET     /v1/workspaces               200 ``{"workspaces": [{"name", "path"}]}``
*       /v1/workspaces/{name}/...    todos, todos/{id}, todos/{id}/retry|cancel, status, checkpoints/{id}
======  ===========================  ==========================================

A retry or cancel that changed a todo publishes ``todo.retried`` or
``todo.cancelled`` on the event bus (``workspace``, ``todo_id``,
``previous``, ``source``); a retry also rewrites ``.agent/requeue.json``,
which wakes the kernel.

Every path is also served without the ``/v1`` prefix (the legacy paths); the
unprefixed and ``/v1`` todo paths address the first workspace. Errors are
``{"error": {"code", "message"}}`` with the legacy codes and messages. With a
token configured, every endpoint but ``/health`` (as in legacy) and the
WebSocket need ``Authorization: Bearer <token>`` (compared with
:func:`hmac.compare_digest`), or the session cookie of a signed-in browser
(:mod:`codeagent.api_auth`).

``mounts`` (:mod:`codeagent.mounts`) add ASGI apps under a path prefix, e.g. the
application's dashboard at ``/ui``: they get the request with a
:class:`~codeagent.mounts.ServerContext` and authenticate it themselves.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Scope

from codeagent.api_auth import WEBSOCKET, request_authorized
from codeagent.errors import AgentError, WorkspaceViolation, validation_line
from codeagent.models import OperatorAction, Todo, TodoChange, todo_view
from codeagent.mounts import Mount, ServerContext
from codeagent.protocols import AsyncCheckpointStore, AsyncStatusStore, AsyncTodoStore, ExtraRoute
from core_async._compat import ato_thread
from core_async.kernel.api_events import events_endpoint
from core_async.kernel.api_middleware import LoadShedding, RequestContextMiddleware
from core_async.kernel.api_mounts import MountDispatcher
from core_async.kernel.events import EventBus
from core_async.kernel.metrics import MetricsCollector
from core_async.status import AsyncStatusJsonStore

log = logging.getLogger("codeagent.kernel.api")

MAX_BODY_BYTES = 1_000_000
LOOP_NAME = "async"

Endpoint = Callable[[Request], Awaitable[Response]]

#: Allowed methods per route, as the legacy server lists them in ``Allow``.
_ALLOW = {"todos": ("GET", "POST")}
#: The operator's actions on one todo: ``POST .../todos/{id}/<action>``.
_ACTIONS: tuple[OperatorAction, ...] = ("retry", "cancel")


class ApiWorkspace(Protocol):
    """What the API needs of a workspace: its name, directory, stores, and a way to add a todo."""

    label: str

    @property
    def root(self) -> Path: ...
    @property
    def todos(self) -> AsyncTodoStore: ...
    @property
    def status(self) -> AsyncStatusStore: ...
    @property
    def checkpoints(self) -> AsyncCheckpointStore: ...
    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Todo: ...
    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str
    ) -> list[TodoChange]: ...


async def operate_on_files(
    root: Path, action: OperatorAction, todo_ids: Sequence[str], *, source: str
) -> list[TodoChange]:
    """An operator's retry or cancel on a workspace whose state is on disk (a loop may be running)."""
    return await AsyncStatusJsonStore(root).operate(action, todo_ids, source=source, loop_running=True)


@dataclass
class StoreWorkspace:
    """An :class:`ApiWorkspace` over plain stores (an API with no kernel behind it)."""

    label: str
    todos: AsyncTodoStore
    status: AsyncStatusStore
    checkpoints: AsyncCheckpointStore
    path: str = ""

    @property
    def root(self) -> Path:
        """The workspace directory (``path``)."""
        if not self.path:
            raise AgentError(f"workspace {self.label!r} was given no path")
        return Path(self.path)

    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo to the store."""
        return await self.todos.add(text, files)

    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str
    ) -> list[TodoChange]:
        """Retry or cancel, on the workspace's files."""
        return await operate_on_files(self.root, action, todo_ids, source=source)


class APIError(Exception):
    """An error answer: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """The JSON error body every endpoint uses."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def parse_new_todo(raw: bytes) -> tuple[str, list[str]]:
    """Validate a ``POST /todos`` body; raise :class:`APIError` (400) naming the field (legacy messages)."""
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise APIError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise APIError(400, "invalid_request", "body must be a JSON object")
    unknown = sorted(set(body) - {"text", "files"})
    if unknown:
        raise APIError(400, "invalid_request", f"unknown field(s): {', '.join(unknown)}")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, "invalid_request", "text: must be a non-empty string")
    files = body.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise APIError(400, "invalid_request", "files: must be a list of strings")
    return text, files


def parse_action_body(raw: bytes) -> None:
    """Validate the body of ``POST /todos/{id}/retry|cancel``: empty or ``{}`` (legacy messages)."""
    if not raw.strip():
        return
    try:
        body: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise APIError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise APIError(400, "invalid_request", "body must be a JSON object")
    if body:
        raise APIError(400, "invalid_request", f"unknown field(s): {', '.join(sorted(body))}")


class ApiHandlers:
    """The endpoints, bound to the served workspaces, the token, the metrics and the event bus."""

    def __init__(
        self,
        workspaces: Sequence[ApiWorkspace],
        *,
        token: Callable[[], str | None],
        metrics: MetricsCollector,
        events: EventBus,
        extra_routes: Sequence[ExtraRoute] = (),
        limits: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        if not workspaces:
            raise ValueError("the API needs at least one workspace")
        self.extra_routes = list(extra_routes)
        self.limits_view = limits
        self.workspaces = {ws.label: ws for ws in workspaces}
        self.default = workspaces[0]
        self.token = token
        self.metrics = metrics
        self.events = events

    # ----------------------------------------------------------------- helpers

    def authorized(
        self,
        header: str | None,
        *,
        method: str = "GET",
        cookie: str | None = None,
        origin: str | None = None,
        host: str | None = None,
    ) -> bool:
        """Whether a request carries the configured token (always true with none).

        The token comes in an ``Authorization`` header, or in the session cookie of a
        signed-in browser (:mod:`codeagent.api_auth`: a changing request or a WebSocket
        counts the cookie only from the server's own origin).
        """
        return request_authorized(
            self.token(), method=method, authorization=header, cookie=cookie, origin=origin, host=host
        )

    def scope_authorized(self, scope: Scope) -> bool:
        """:meth:`authorized` for an ASGI scope (HTTP request or WebSocket handshake)."""
        headers = Headers(scope=scope)
        method = str(scope.get("method", "")) if scope["type"] == "http" else WEBSOCKET
        return self.authorized(
            headers.get("authorization"),
            method=method,
            cookie=headers.get("cookie"),
            origin=headers.get("origin"),
            host=headers.get("host"),
        )

    def _check(self, request: Request) -> ApiWorkspace:
        if not self.scope_authorized(request.scope):
            raise APIError(
                401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )
        name = request.path_params.get("workspace")
        if name is None:
            return self.default
        found = self.workspaces.get(name)
        if found is None:
            raise APIError(404, "not_found", f"no workspace {name!r}")
        return found

    async def _body(self, request: Request) -> bytes:
        length_header = request.headers.get("content-length")
        if length_header is not None:
            try:
                length = int(length_header)
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY_BYTES:
                raise APIError(400, "invalid_request", "missing, bad or too large Content-Length")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise APIError(400, "invalid_request", "missing, bad or too large Content-Length")
            chunks.append(chunk)
        return b"".join(chunks)

    # ----------------------------------------------------------------- endpoints

    async def health(self, request: Request) -> Response:
        """Liveness; open even when a token is configured (as in legacy)."""
        return JSONResponse({"status": "ok", "loop": LOOP_NAME})

    async def list_todos(self, request: Request) -> Response:
        """Every todo with its state."""
        ws = self._check(request)
        states = (await ws.status.load()).todos
        return JSONResponse({"todos": [todo_view(t, states.get(t.id)) for t in await ws.todos.load()]})

    async def add_todo(self, request: Request) -> Response:
        """Append a todo; the kernel picks it up at once."""
        ws = self._check(request)
        text, files = parse_new_todo(await self._body(request))
        try:
            todo = await ws.add_todo(text, files)
        except WorkspaceViolation as exc:
            raise APIError(400, "invalid_request", f"files: {exc}") from exc
        except ValidationError as exc:
            raise APIError(400, "invalid_request", validation_line(exc)) from exc
        return JSONResponse(todo_view(todo, None), status_code=201)

    async def retry_todo(self, request: Request) -> Response:
        """Put a failed, interrupted or cancelled todo back in the queue (409 when its status forbids)."""
        return await self._operate(request, "retry")

    async def cancel_todo(self, request: Request) -> Response:
        """Take a pending, failed or interrupted todo out of the queue (409 when its status forbids)."""
        return await self._operate(request, "cancel")

    async def _operate(self, request: Request, action: OperatorAction) -> Response:
        ws = self._check(request)
        parse_action_body(await self._body(request))
        ident = request.path_params["todo_id"]
        found = await ws.todos.get(ident)
        if found is None:
            raise APIError(404, "not_found", f"no todo {ident!r}")
        change = (await ws.operate(action, [ident], source="api"))[0]
        if change.refused is not None:
            raise APIError(409, "conflict", f"{ident}: cannot {action}: {change.refused}")
        if change.changed:
            self.events.publish(
                "todo.retried" if action == "retry" else "todo.cancelled",
                workspace=ws.label,
                todo_id=ident,
                previous=change.before.value,
                source="api",
            )
        return JSONResponse(todo_view(found, (await ws.status.load()).todos.get(ident)))

    async def get_todo(self, request: Request) -> Response:
        """One todo with its state, or 404."""
        ws = self._check(request)
        ident = request.path_params["todo_id"]
        found = await ws.todos.get(ident)
        if found is None:
            raise APIError(404, "not_found", f"no todo {ident!r}")
        return JSONResponse(todo_view(found, (await ws.status.load()).todos.get(ident)))

    async def status(self, request: Request) -> Response:
        """The status document."""
        ws = self._check(request)
        return JSONResponse((await ws.status.load()).model_dump(mode="json"))

    async def checkpoint(self, request: Request) -> Response:
        """The checkpoint of one todo, or 404."""
        ws = self._check(request)
        ident = request.path_params["todo_id"]
        checkpoint = await ws.checkpoints.load(ident)
        if checkpoint is None:
            raise APIError(404, "not_found", f"no checkpoint for todo {ident!r}")
        return JSONResponse(checkpoint.model_dump(mode="json"))

    async def metrics_text(self, request: Request) -> Response:
        """The Prometheus exposition of the kernel's metrics."""
        self._check(request)
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    async def limits(self, request: Request) -> Response:
        """The limits in force and what is in use (404 when nothing behind the API schedules work)."""
        self._check(request)
        if self.limits_view is None:
            raise APIError(404, "not_found", "this server runs no loop: no limits")
        return JSONResponse(self.limits_view())

    async def list_workspaces(self, request: Request) -> Response:
        """The served workspaces, the first being the default one."""
        self._check(request)
        return JSONResponse(
            {
                "workspaces": [
                    {"name": ws.label, "path": str(getattr(ws, "path", ""))}
                    for ws in self.workspaces.values()
                ]
            }
        )

    # ----------------------------------------------------------------- errors

    async def on_http_exception(self, request: Request, exc: Exception) -> Response:
        """404 and 405 raised by the router, in the legacy error shape."""
        assert isinstance(exc, HTTPException)
        path = request.url.path.rstrip("/") or "/"
        if exc.status_code == 405:
            parts = path.split("/")
            on_todo = len(parts) >= 4 and parts[-3] == "todos" and parts[-1] in _ACTIONS
            allow = ("POST",) if on_todo else _ALLOW.get(parts[-1], ("GET",))
            return error_response(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {path}",
                {"Allow": ", ".join(allow)},
            )
        if exc.status_code == 404:
            return error_response(404, "not_found", f"no such endpoint: {path}")
        return error_response(exc.status_code, "invalid_request", str(exc.detail))

    def guard(self, endpoint: Endpoint) -> Endpoint:
        """Turn what an endpoint raises into the legacy error answers (400/401/404, 500 ``internal``)."""

        async def guarded(request: Request) -> Response:
            try:
                return await endpoint(request)
            except APIError as exc:
                return error_response(exc.status, exc.code, exc.message, exc.headers)
            except AgentError as exc:  # a broken state file: say which, do not crash
                log.error("API %s %s: %s", request.method, request.url.path, exc)
                return error_response(500, "internal", str(exc))
            except Exception as exc:
                log.exception("API %s %s failed", request.method, request.url.path)
                return error_response(500, "internal", f"{type(exc).__name__}: {exc}")

        guarded.__name__ = endpoint.__name__
        guarded.__doc__ = endpoint.__doc__
        return guarded

    # ----------------------------------------------------------------- routes

    def routes(self) -> list[BaseRoute]:
        """Every route, under ``/v1`` and at the legacy paths."""
        g = self.guard
        out: list[BaseRoute] = []
        for prefix in ("/v1", ""):
            out += [
                Route(f"{prefix}/health", g(self.health), methods=["GET"]),
                Route(f"{prefix}/todos", g(self.list_todos), methods=["GET"]),
                Route(f"{prefix}/todos", g(self.add_todo), methods=["POST"]),
                Route(f"{prefix}/todos/{{todo_id}}", g(self.get_todo), methods=["GET"]),
                Route(f"{prefix}/todos/{{todo_id}}/retry", g(self.retry_todo), methods=["POST"]),
                Route(f"{prefix}/todos/{{todo_id}}/cancel", g(self.cancel_todo), methods=["POST"]),
                Route(f"{prefix}/status", g(self.status), methods=["GET"]),
                Route(f"{prefix}/checkpoints/{{todo_id}}", g(self.checkpoint), methods=["GET"]),
                Route(f"{prefix}/metrics", g(self.metrics_text), methods=["GET"]),
                WebSocketRoute(f"{prefix}/events", self._events),
            ]
        for prefix in ("/v1", ""):
            for extra in self.extra_routes:
                endpoint = g(self._extra_endpoint(extra))
                out += [
                    Route(f"{prefix}{extra.prefix}", endpoint, methods=[extra.method]),
                    Route(f"{prefix}{extra.prefix}/{{ident}}", endpoint, methods=[extra.method]),
                ]
        scoped = "/v1/workspaces/{workspace}"
        out += [
            Route("/v1/workspaces", g(self.list_workspaces), methods=["GET"]),
            Route("/v1/limits", g(self.limits), methods=["GET"]),
            Route(f"{scoped}/todos", g(self.list_todos), methods=["GET"]),
            Route(f"{scoped}/todos", g(self.add_todo), methods=["POST"]),
            Route(f"{scoped}/todos/{{todo_id}}", g(self.get_todo), methods=["GET"]),
            Route(f"{scoped}/todos/{{todo_id}}/retry", g(self.retry_todo), methods=["POST"]),
            Route(f"{scoped}/todos/{{todo_id}}/cancel", g(self.cancel_todo), methods=["POST"]),
            Route(f"{scoped}/status", g(self.status), methods=["GET"]),
            Route(f"{scoped}/checkpoints/{{todo_id}}", g(self.checkpoint), methods=["GET"]),
        ]
        return out

    def _extra_endpoint(self, route: ExtraRoute) -> Endpoint:
        """An endpoint for one of the wiring's JSON routes; its handler runs off the event loop."""

        async def extra(request: Request) -> Response:
            self._check(request)
            raw = await self._body(request) if request.method in ("POST", "PUT", "PATCH") else b""
            payload: Any = None
            if raw:
                try:
                    payload = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                    raise APIError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc
            status, body = await ato_thread(route.handler, request.path_params.get("ident"), payload)
            return JSONResponse(body, status_code=status)

        extra.__name__ = f"extra_{route.method.lower()}_{route.prefix.strip('/').replace('/', '_')}"
        return extra

    async def _events(self, websocket: Any) -> None:
        def authorized(header: str | None) -> bool:
            h = websocket.headers
            return self.authorized(
                header, method=WEBSOCKET, cookie=h.get("cookie"), origin=h.get("origin"), host=h.get("host")
            )

        await events_endpoint(websocket, self.events, authorized)


def create_api_app(
    workspaces: Sequence[ApiWorkspace],
    *,
    metrics: MetricsCollector,
    events: EventBus,
    token: Callable[[], str | None] | str | None = None,
    extra_routes: Sequence[ExtraRoute] = (),
    limits: Callable[[], dict[str, Any]] | None = None,
    mounts: Sequence[Mount] = (),
) -> Starlette:
    """The ASGI app serving ``workspaces`` (the first is the default for unscoped paths).

    ``token`` is a fixed bearer token, or a callable read on every request
    (so a hot-reloaded ``api.token`` takes effect at once), or ``None``.
    ``mounts`` are ``(prefix, ASGI app)`` pairs served under their prefix
    (:mod:`codeagent.mounts`); each request to one gets a :class:`ServerContext`.
    """
    token_fn: Callable[[], str | None]
    if callable(token):
        token_fn = token
    else:
        fixed = token
        token_fn = lambda: fixed  # noqa: E731
    handlers = ApiHandlers(
        workspaces, token=token_fn, metrics=metrics, events=events, extra_routes=extra_routes, limits=limits
    )
    app = Starlette(
        routes=handlers.routes(),
        exception_handlers={HTTPException: handlers.on_http_exception},
    )
    app.router.redirect_slashes = False
    if mounts:  # inside the request context (ids, metrics), outside the API's router

        def context(scope: Scope) -> ServerContext:
            return ServerContext(
                loop=LOOP_NAME,
                authorized=handlers.scope_authorized(scope),
                token=token_fn(),
                metrics=metrics.render,
                events=True,
            )

        app.add_middleware(MountDispatcher, mounts=mounts, context=context)
    app.add_middleware(LoadShedding)  # inside the request context: a shed request is counted (503)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
