"""Minimal ASGI plumbing for the stub: types, reading a body, sending JSON or raw bytes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


MAX_BODY_BYTES = 8 * 1024 * 1024


class ClientGone(Exception):
    """The client went away before its request body arrived."""


class BodyTooLarge(Exception):
    """The request body is over :data:`MAX_BODY_BYTES` (the rest of it is not read)."""


async def read_body(receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole request body; raises :class:`ClientGone` or :class:`BodyTooLarge`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def header_list(
    content_type: str, length: int | None, extra: dict[str, str] | None = None
) -> list[tuple[bytes, bytes]]:
    """Response headers as ASGI wants them."""
    headers = [(b"content-type", content_type.encode("latin-1"))]
    if length is not None:
        headers.append((b"content-length", str(length).encode("ascii")))
    for name, value in (extra or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return headers


async def send_bytes(
    send: Send, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> None:
    """Send a complete response."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": header_list(content_type, len(body), extra),
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_json(send: Send, status: int, data: Any, extra: dict[str, str] | None = None) -> None:
    """Send a complete JSON response."""
    body = json.dumps(data, separators=(",", ":")).encode()
    await send_bytes(send, status, body, "application/json", extra)


def request_header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (``name`` in lower case), if any."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _discard_body(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


async def answer_early(receive: Receive, send: Send, status: int, data: Any) -> None:
    """Answer before the request body has all arrived, reading (and dropping) the rest meanwhile.

    hypercorn hands body chunks to the app through a queue of 10; if nobody
    reads it, the connection's reader blocks on the full queue while the
    app's own send blocks on it too (with the stream's closing message), and
    the connection hangs.
    """
    drainer = asyncio.ensure_future(_discard_body(receive))
    try:
        await send_json(send, status, data)
    finally:
        drainer.cancel()
        await asyncio.gather(drainer, return_exceptions=True)
