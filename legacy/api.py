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
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

from pydantic import ValidationError

from codeagent.errors import AgentError, WorkspaceViolation, validation_line
from codeagent.models import OperatorAction, Todo, todo_view
from codeagent.protocols import ExtraRoute, SyncCheckpointStore, SyncStatusStore, SyncTodoStore

log = logging.getLogger("codeagent.legacy.api")

MAX_BODY_BYTES = 1_000_000
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise APIError(400, "invalid_request", f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise APIError(400, "invalid_request", "body must be a JSON object")
    if body:
        raise APIError(400, "invalid_request", f"unknown field(s): {', '.join(sorted(body))}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


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
    ) -> None:
        """Bind at once (``port=0`` picks a free port); serve after :meth:`start`.

        ``on_todo_added`` is called after each ``POST /todos`` and for each todo a
        retry puts back in the queue (the CLI passes the agent's ``wake``);
        ``poll_interval`` is how long :meth:`stop` may wait for the serving
        thread to notice. ``root`` is the workspace retry and cancel act on
        (default: the status store's ``root``, which every store and facade has).
        """
        self.todos = todos
        self.status = status
        self.root = Path(root) if root is not None else cast(Path | None, getattr(status, "root", None))
        self.checkpoints = checkpoints
        self.token = token
        self.on_todo_added = on_todo_added
        self.extra_routes = list(extra_routes)
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None
        self._poll_interval = poll_interval

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

    def _authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        expected = f"Bearer {self.token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def handle(self, method: str, path: str, auth: str | None, body: bytes | None) -> tuple[int, Any]:
        """Answer one request: ``(status, JSON body)``. Raises :class:`APIError`."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        extra = self._extra(method, path, auth, body)
        if extra is not None:
            return extra
        matched = _route(path)
        if matched is None:
            raise APIError(404, "not_found", f"no such endpoint: {path}")
        pattern, ident = matched
        if method not in _ROUTES[pattern]:
            raise APIError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        if pattern != "/health" and not self._authorized(auth):
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

    def _extra(self, method: str, path: str, auth: str | None, body: bytes | None) -> tuple[int, Any] | None:
        """Answer a request for one of the wiring's extra routes, or ``None`` if none matches."""
        for_path = [r for r in self.extra_routes if path == r.prefix or path.startswith(r.prefix + "/")]
        if not for_path:
            return None
        if not self._authorized(auth):
            raise APIError(401, "unauthorized", "missing or wrong bearer token")
        route = next((r for r in for_path if r.method == method), None)
        if route is None:
            raise APIError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        ident = unquote(path[len(route.prefix) + 1 :]) or None
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
                method = self.command
                headers: dict[str, str] = {}
                try:
                    body = self._read_body() if method in ("POST", "PUT", "PATCH") else None
                    status, payload = api.handle(method, self.path, self.headers.get("Authorization"), body)
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

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s - %s", self.address_string(), format % args)

        return Handler
