"""The legacy HTTP API: stdlib ``ThreadingHTTPServer`` on 127.0.0.1, JSON in and out.

======  ====================  ==========================================
GET     /health               200 ``{"status": "ok", "loop": "legacy"}``
GET     /todos                200 ``{"todos": [todo view, ...]}``
POST    /todos                201 todo view; body ``{"text": str, "files": [str]}``
GET     /todos/{id}           200 todo view, or 404
POST    /todos/{id}/retry     200 todo view: failed, interrupted or cancelled -> pending
POST    /todos/{id}/cancel    200 todo view: pending, failed or interrupted -> cancelled
GET     /status               200 the ``.agent/status.json`` document
GET     /checkpoints/{id}     200 the checkpoint of a todo, or 404
======  ====================  ==========================================

Errors are ``{"error": {"code": ..., "message": ...}}`` with codes
``invalid_request`` (400), ``unauthorized`` (401), ``not_found`` (404),
``method_not_allowed`` (405), ``conflict`` (409: a retry or cancel the todo's
status does not allow, e.g. cancelling a running todo; the message says why)
and ``internal`` (500). With a token configured, every endpoint except
``/health`` needs ``Authorization: Bearer <token>``.

Retry and cancel take an empty body (or ``{}``), hold the status file's lock
like the loop does, and are recorded in the status file's ``operations``; a
retry also calls ``on_todo_added`` (the runner's wakes the loop).

Under a burst, a request past :data:`MAX_IN_FLIGHT` being answered is refused
at once with a 503 (``overloaded``, ``Retry-After: 1``; ``/health`` excepted);
so is a connection accepted while more than :data:`SHED_BACKLOG` others wait to
be (the accepting thread answers it without a thread of its own: the queue of
a burst forms in the listen backlog, where threads starved of the GIL accept
slowly); the listen backlog holds :data:`BACKLOG` connections (the standard
library's 5 made a burst's clients wait out TCP's retransmits, up to half a
minute); and a connection idle for :data:`IDLE_TIMEOUT` seconds is closed, so
idle clients do not keep their threads for good.

A browser signed in through the application's dashboard may send the session
cookie instead of the header (:mod:`codeagent.api_auth`). ``mounts``
(:mod:`codeagent.mounts`) hand every request under a path prefix to an ASGI
app, run synchronously (:mod:`legacy.api_mounts`); other paths are answered as
without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

from pydantic import ValidationError

from codeagent.api_auth import request_authorized
from codeagent.errors import AgentError, WorkspaceViolation, validation_line
from codeagent.models import OperatorAction, Todo, todo_view
from codeagent.mounts import AsgiApp, Mount, ServerContext, check_prefix, mount_for
from codeagent.protocols import ExtraRoute, SyncCheckpointStore, SyncStatusStore, SyncTodoStore

log = logging.getLogger("codeagent.legacy.api")

MAX_BODY_BYTES = 1_000_000
#: Requests answered at once (one thread each); past it a request gets a 503 at once.
MAX_IN_FLIGHT = 64
#: Connections waiting to be accepted (the kernel caps it at ``net.core.somaxconn``).
BACKLOG = 1024
#: Seconds a connection may sit idle (no request, or between requests) before it is closed.
IDLE_TIMEOUT = 30.0
#: Connections waiting in the listen backlog past which a new one is answered 503 at once.
SHED_BACKLOG = 64
_OVERLOADED = {"error": {"code": "overloaded", "message": "too many requests in flight; retry in a second"}}
_OVERLOADED_BYTES = json.dumps(_OVERLOADED).encode()
_OVERLOADED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: "
    + str(len(_OVERLOADED_BYTES)).encode()
    + b"\r\n\r\n"
    + _OVERLOADED_BYTES
)
_ROUTES: dict[str, tuple[str, ...]] = {
    "/health": ("GET",),
    "/todos": ("GET", "POST"),
    "/todos/*": ("GET",),
    "/todos/*/retry": ("POST",),
    "/todos/*/cancel": ("POST",),
    "/status": ("GET",),
    "/checkpoints/*": ("GET",),
}


class APIError(Exception):
    """An error answer: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _route(path: str) -> tuple[str, str | None] | None:
    """``(route pattern, id or None)`` for a request path, or ``None`` when nothing matches."""
    if path in _ROUTES:
        return path, None
    for prefix in ("/todos/", "/checkpoints/"):
        if path.startswith(prefix):
            ident, _, action = path[len(prefix) :].partition("/")
            if ident and not action:
                return prefix + "*", unquote(ident)
            if ident and prefix == "/todos/" and action in ("retry", "cancel"):
                return f"/todos/*/{action}", unquote(ident)
    return None


def _parse_new_todo(raw: bytes) -> tuple[str, list[str]]:
    """Validate a ``POST /todos`` body; raise :class:`APIError` (400) naming the field."""
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


def _parse_action_body(raw: bytes) -> None:
    """Validate the body of ``POST /todos/{id}/retry|cancel``: empty or ``{}``; raise 400 otherwise."""
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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = BACKLOG
    shed = 0  # connections answered 503 by the accepting thread

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is routine: one debug line, not a traceback on stderr."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError | TimeoutError):
            log.debug("client %s went away: %s", client_address, error)
            return
        log.exception("API: unexpected error serving %s", client_address)

    def waiting(self) -> int:
        """Connections in the listen backlog now (Linux' ``TCP_INFO``; 0 where it cannot tell)."""
        try:
            info = self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            return int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: the accept queue's length
        except (OSError, AttributeError, struct.error):
            return 0

    def process_request(self, request: Any, client_address: Any) -> None:
        if self.waiting() > SHED_BACKLOG:
            self.shed += 1
            try:
                with contextlib.suppress(
                    OSError
                ):  # what came of the request: unread data turns a close into a reset
                    request.recv(65536, socket.MSG_DONTWAIT)
                request.settimeout(1.0)
                request.sendall(_OVERLOADED_RESPONSE)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)


class LegacyAPIServer:
    """The HTTP API over the legacy stores, served from a daemon thread."""

    def __init__(
        self,
        todos: SyncTodoStore,
        status: SyncStatusStore,
        checkpoints: SyncCheckpointStore,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        on_todo_added: Callable[[Todo], None] | None = None,
        poll_interval: float = 0.5,
        extra_routes: Sequence[ExtraRoute] = (),
        root: Path | None = None,
        mounts: Sequence[Mount] = (),
    ) -> None:
        """Bind at once (``port=0`` picks a free port); serve after :meth:`start`.

        ``on_todo_added`` is called after each ``POST /todos`` and for each todo a
        retry puts back in the queue (the CLI passes the agent's ``wake``);
        ``poll_interval`` is how long :meth:`stop` may wait for the serving
        thread to notice. ``root`` is the workspace retry and cancel act on
        (default: the status store's ``root``, which every store and facade has).
        ``mounts`` are ``(prefix, ASGI app)`` pairs served under their prefix.
        """
        self.todos = todos
        self.status = status
        self.root = Path(root) if root is not None else cast(Path | None, getattr(status, "root", None))
        self.checkpoints = checkpoints
        self.token = token
        self.on_todo_added = on_todo_added
        self.extra_routes = list(extra_routes)
        self.mounts = [(check_prefix(prefix), app) for prefix, app in mounts]
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None
        self._poll_interval = poll_interval
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.shed = 0  # requests refused with a 503 because MAX_IN_FLIGHT were being answered

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(self._poll_interval,), name="legacy-api", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    # ----------------------------------------------------------------- request handling

    def _enter(self, path: str) -> bool:
        """Count a request in; ``False`` (and counted as shed) when :data:`MAX_IN_FLIGHT` are in flight."""
        if path.split("?", 1)[0].rstrip("/") == "/health":
            return True
        with self._in_flight_lock:
            if self._in_flight >= MAX_IN_FLIGHT:
                self.shed += 1
                return False
            self._in_flight += 1
            return True

    def _leave(self, path: str) -> None:
        if path.split("?", 1)[0].rstrip("/") == "/health":
            return
        with self._in_flight_lock:
            self._in_flight -= 1

    def _authorized(
        self,
        header: str | None,
        *,
        method: str = "GET",
        cookie: str | None = None,
        origin: str | None = None,
        host: str | None = None,
    ) -> bool:
        return request_authorized(
            self.token, method=method, authorization=header, cookie=cookie, origin=origin, host=host
        )

    def handle(
        self,
        method: str,
        path: str,
        auth: str | None,
        body: bytes | None,
        *,
        cookie: str | None = None,
        origin: str | None = None,
        host: str | None = None,
    ) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body)``. Raises :class:`APIError`.

        ``auth`` is the ``Authorization`` header; ``cookie``, ``origin`` and ``host``
        are the request's headers of those names (a signed-in browser's session cookie).
        """
        path = path.split("?", 1)[0].rstrip("/") or "/"
        creds: dict[str, Any] = {"method": method, "cookie": cookie, "origin": origin, "host": host}
        extra = self._extra(method, path, auth, body, creds)
        if extra is not None:
            return extra
        matched = _route(path)
        if matched is None:
            raise APIError(404, "not_found", f"no such endpoint: {path}")
        pattern, ident = matched
        if method not in _ROUTES[pattern]:
            raise APIError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        if pattern != "/health" and not self._authorized(auth, **creds):
            raise APIError(401, "unauthorized", "missing or wrong bearer token")
        if pattern == "/health":
            return 200, {"status": "ok", "loop": "legacy"}
        if pattern == "/status":
            return 200, self.status.load().model_dump(mode="json")
        if pattern == "/todos" and method == "GET":
            states = self.status.load().todos
            return 200, {"todos": [todo_view(t, states.get(t.id)) for t in self.todos.load()]}
        if pattern == "/todos":
            text, files = _parse_new_todo(body or b"")
            try:
                todo = self.todos.add(text, files)
            except WorkspaceViolation as exc:
                raise APIError(400, "invalid_request", f"files: {exc}") from exc
            except ValidationError as exc:
                raise APIError(400, "invalid_request", validation_line(exc)) from exc
            if self.on_todo_added is not None:
                self.on_todo_added(todo)
            return 201, todo_view(todo, None)
        assert ident is not None
        if pattern in ("/todos/*/retry", "/todos/*/cancel"):
            return self._operate("retry" if pattern.endswith("/retry") else "cancel", ident, body or b"")
        if pattern == "/todos/*":
            found = self.todos.get(ident)
            if found is None:
                raise APIError(404, "not_found", f"no todo {ident!r}")
            return 200, todo_view(found, self.status.load().todos.get(ident))
        checkpoint = self.checkpoints.load(ident)
        if checkpoint is None:
            raise APIError(404, "not_found", f"no checkpoint for todo {ident!r}")
        return 200, checkpoint.model_dump(mode="json")

    def _operate(self, action: OperatorAction, ident: str, body: bytes) -> tuple[int, Any]:
        """Retry or cancel one todo under the status lock; 404 unknown, 409 refused, else its view."""
        from legacy.status import StatusStore

        _parse_action_body(body)
        todo = self.todos.get(ident)
        if todo is None:
            raise APIError(404, "not_found", f"no todo {ident!r}")
        if self.root is None:
            raise APIError(500, "internal", "this server was started without its workspace's root")
        change = StatusStore(self.root).operate(action, [ident], source="api", loop_running=True)[0]
        if change.refused is not None:
            raise APIError(409, "conflict", f"{ident}: cannot {action}: {change.refused}")
        if action == "retry" and self.on_todo_added is not None:
            self.on_todo_added(todo)
        return 200, todo_view(todo, self.status.load().todos.get(ident))

    def _extra(
        self, method: str, path: str, auth: str | None, body: bytes | None, creds: dict[str, Any]
    ) -> tuple[int, Any] | None:
        """Answer a request for one of the wiring's extra routes, or ``None`` if none matches."""
        for_path = [r for r in self.extra_routes if path == r.prefix or path.startswith(r.prefix + "/")]
        if not for_path:
            return None
        if not self._authorized(auth, **creds):
            raise APIError(401, "unauthorized", "missing or wrong bearer token")
        route = next((r for r in for_path if r.method == method), None)
        if route is None:
            raise APIError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        ident = unquote(path[len(route.prefix) + 1 :]) or None
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                raise APIError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc
        return route.handler(ident, payload)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without TCP_NODELAY a kept-alive
            # connection waits ~40 ms for the delayed ACK between them.
            disable_nagle_algorithm = True
            server_version = "codeagent-legacy"
            timeout = IDLE_TIMEOUT  # the socket's: an idle connection is closed, its thread freed

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding"):  # not read here: never parse it as a request
                    self.close_connection = True
                length_header = self.headers.get("Content-Length")
                try:
                    length = int(length_header) if length_header is not None else 0
                except ValueError:
                    length = -1
                if length < 0 or length > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise APIError(400, "invalid_request", "missing, bad or too large Content-Length")
                return self.rfile.read(length)

            def _dispatch(self) -> None:
                path = self.path
                if not api._enter(path):
                    self.close_connection = True
                    self._send(503, _OVERLOADED, {"Retry-After": "1", "Connection": "close"})
                    return
                try:
                    self._answer()
                finally:
                    api._leave(path)

            def _answer(self) -> None:
                method = self.command
                headers: dict[str, str] = {}
                mounted = mount_for(api.mounts, self.path.split("?", 1)[0])
                if mounted is not None:
                    self._serve_mount(*mounted)
                    return
                try:
                    # Every body is read, even one the route ignores: left in the stream, it would be
                    # parsed as the connection's next request.
                    raw = self._read_body()
                    body = raw if method in ("POST", "PUT", "PATCH") else None
                    h = self.headers
                    status, payload = api.handle(
                        method,
                        self.path,
                        h.get("Authorization"),
                        body,
                        cookie=h.get("Cookie"),
                        origin=h.get("Origin"),
                        host=h.get("Host"),
                    )
                except APIError as exc:
                    status = exc.status
                    payload = {"error": {"code": exc.code, "message": exc.message}}
                    if exc.status == 401:
                        headers["WWW-Authenticate"] = "Bearer"
                    elif exc.status == 405:
                        matched = _route(self.path.split("?", 1)[0].rstrip("/"))
                        if matched:
                            headers["Allow"] = ", ".join(_ROUTES[matched[0]])
                except AgentError as exc:  # a broken state file: say which, do not crash
                    log.error("API %s %s: %s", method, self.path, exc)
                    status, payload = 500, {"error": {"code": "internal", "message": str(exc)}}
                except Exception as exc:
                    log.exception("API %s %s failed", method, self.path)
                    status = 500
                    payload = {"error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}"}}
                self._send(status, payload, headers)

            def _serve_mount(self, prefix: str, app: AsgiApp) -> None:
                """One request for a mounted ASGI app (:mod:`legacy.api_mounts`)."""
                from legacy.api_mounts import MountedRequest, call_mounted

                h = self.headers
                try:
                    body = self._read_body()
                except APIError as exc:
                    self._send(exc.status, {"error": {"code": exc.code, "message": exc.message}})
                    return
                allowed = api._authorized(
                    h.get("Authorization"),
                    method=self.command,
                    cookie=h.get("Cookie"),
                    origin=h.get("Origin"),
                    host=h.get("Host"),
                )
                request = MountedRequest(
                    method=self.command,
                    target=self.path,
                    headers=list(h.items()),
                    body=body,
                    prefix=prefix,
                    client=cast(tuple[str, int], tuple(self.client_address[:2])),
                    server=cast(tuple[str, int], tuple(api._server.server_address[:2])),
                    context=ServerContext(loop="legacy", authorized=allowed, token=api.token),
                )
                try:
                    answer = call_mounted(app, request)
                except Exception as exc:
                    log.exception("API %s %s failed", self.command, self.path)
                    message = f"{type(exc).__name__}: {exc}"
                    self._send(500, {"error": {"code": "internal", "message": message}})
                    return
                self.send_response(answer.status)
                for key, value in answer.headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), format % args)

        return Handler
