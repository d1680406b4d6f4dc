"""The legacy API's mounts: an ASGI app answering one HTTP request of the stdlib server, synchronously.

The legacy server is a ``ThreadingHTTPServer``: each request has its own
thread, with no event loop. A request under a mount's prefix
(:mod:`codeagent.mounts`) is handed to the mount's ASGI app through
``asgiref``'s ``async_to_sync`` (an event loop for the length of the call),
with the whole request body, and the app's answer is buffered and sent with a
``Content-Length`` (the connection stays usable, as for the API's own answers).
No WebSocket: this server has none.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from asgiref.sync import async_to_sync

from codeagent.mounts import SCOPE_KEY, AsgiApp, Message, ServerContext

#: Headers of the app's answer that the server sets itself.
_HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive"}


@dataclass
class MountedRequest:
    """One HTTP request for a mounted app, as the stdlib handler saw it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    prefix: str
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    context: ServerContext


@dataclass
class MountedAnswer:
    """The app's answer: status, headers (without the ones the server sets) and the whole body."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _scope(request: MountedRequest) -> dict[str, object]:
    from urllib.parse import unquote

    raw_path, _, query = request.target.partition("?")
    path = unquote(raw_path)
    if len(path) > 1 and path.endswith("/"):  # as the API: /x/ is /x
        path, raw_path = path.rstrip("/"), raw_path.rstrip("/")
    if path == request.prefix:  # the prefix itself is the app's root
        path, raw_path = path + "/", raw_path + "/"
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": request.prefix,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": request.client,
        "server": request.server,
        "state": {},
        SCOPE_KEY: request.context,
    }


async def _call(app: AsgiApp, request: MountedRequest) -> MountedAnswer:
    answer = MountedAnswer(500, [], b"")
    chunks: list[bytes] = []
    finished = asyncio.Event()
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await finished.wait()  # the client is there until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            answer.status = int(message["status"])
            answer.headers = _decoded(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                finished.set()

    try:
        await app(_scope(request), receive, send)
    finally:
        finished.set()
    answer.body = b"".join(chunks)
    return answer


def _decoded(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k.lower() not in _HOP_BY_HOP]


def call_mounted(app: AsgiApp, request: MountedRequest) -> MountedAnswer:
    """Run ``app`` on one request to the end (on an event loop of its own); return its buffered answer."""
    return async_to_sync(_call)(app, request)
