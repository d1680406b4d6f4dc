"""The ``reset`` fault: drop one request without any response.

ASGI has no message for "abort this request", so this reaches, carefully and
with feature checks, into the hypercorn objects behind the ASGI ``send``
callable the app is given (hypercorn passes ``HTTPStream.app_send`` itself):

* HTTP/2: send RST_STREAM (INTERNAL_ERROR) on that stream only, then let
  hypercorn forget the stream the way it does when a client resets one;
  the other streams of the connection go on.
* HTTP/1.1: abort the TCP connection with SO_LINGER 0, so the client sees a
  reset (ECONNRESET) and no status line.

If hypercorn's internals ever change shape, :func:`abort_request` returns
``False`` and the caller falls back to a truncated response, which a client
also sees as a broken connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import h2.connection
import h2.errors
import h2.exceptions

from llm_stub.asgi import Receive, Send


def _owner(method: Any) -> Any:
    return getattr(method, "__self__", None)


async def _reset_h2_stream(protocol: Any, stream_id: int) -> bool:
    connection = getattr(protocol, "connection", None)
    if not isinstance(connection, h2.connection.H2Connection):
        return False
    needed = ("_flush", "_close_stream", "_window_updated")
    if not all(callable(getattr(protocol, name, None)) for name in needed):
        return False
    try:
        connection.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR)
    except h2.exceptions.ProtocolError:  # the stream is already closed: nothing left to reset
        return True
    await protocol._flush()
    # As for a reset received from the client: drop the stream, and let the
    # sender task find its buffer closed and clean it up.
    await protocol._close_stream(stream_id)
    await protocol._window_updated(stream_id)
    return True


def _abort_tcp(protocol: Any) -> bool:
    server = _owner(getattr(protocol, "send", None))
    writer = getattr(server, "writer", None)
    if not isinstance(writer, asyncio.StreamWriter):
        return False
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - the socket is already gone
            pass
    writer.transport.abort()
    return True


async def abort_request(send: Send, http_version: str) -> bool:
    """Reset the request behind ``send``; ``False`` if this server cannot do it."""
    stream = _owner(send)
    stream_id = getattr(stream, "stream_id", None)
    protocol = _owner(getattr(stream, "send", None))
    if not isinstance(stream_id, int) or protocol is None:
        return False
    if http_version == "2":
        return await _reset_h2_stream(protocol, stream_id)
    return _abort_tcp(protocol)


async def wait_disconnect(receive: Receive) -> None:
    """Wait until the server reports the request gone (``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
