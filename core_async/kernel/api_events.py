"""The WebSocket event stream (``/events``, ``/v1/events``).

Protocol (server to client, JSON text frames):

1. ``{"type": "stream.hello", "last_seq": N, "after": A, "missed": null | [first, next]}``:
   where the stream stands; ``missed`` says which events (``first`` up to
   ``next - 1``) were asked for but had already left the ring buffer.
2. Then every event, oldest first, each ``{"seq", "type", "time", ...data}``:
   with ``?after=A``, every buffered event numbered above ``A`` first, then
   live ones; without it, live events only.

A client that reconnects with ``?after=<last seq it saw>`` loses nothing that
is still buffered. ``?workspace=<name>`` keeps only that workspace's events
(sequence numbers stay global). Control frames have a ``stream.`` type and no
``seq``. Close codes: 1000 when the server shuts down (after sending what it
has), 1008 for a missing or wrong token (the handshake is refused), 1013 when
the client fell too far behind (reconnect with ``?after``), 4400 for a bad
``after``.

Auth: ``Authorization: Bearer <token>``, or ``?token=<token>`` for browsers,
which cannot set headers on a WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.websockets import WebSocket, WebSocketDisconnect

from core_async.kernel.events import EventBus, SubscriberLagging, Subscription

log = logging.getLogger("codeagent.kernel.api.events")

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
CLOSE_BAD_REQUEST = 4400


def _parse_after(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    value = int(raw)
    if value < 0:
        raise ValueError("negative")
    return value


async def _send_events(websocket: WebSocket, subscription: Subscription, workspace: str | None) -> None:
    try:
        async for event in subscription:
            if workspace is not None and event.data.get("workspace") not in (workspace, None):
                continue
            await websocket.send_text(json.dumps(event.to_json(), ensure_ascii=False))
    except SubscriberLagging as exc:
        await websocket.close(
            code=CLOSE_TRY_AGAIN, reason=f"too far behind; reconnect with ?after={exc.last_seq}"
        )
        return
    await websocket.close(code=CLOSE_NORMAL, reason="server shutting down")


async def _wait_for_disconnect(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def events_endpoint(
    websocket: WebSocket, bus: EventBus, authorized: Callable[[str | None], bool]
) -> None:
    """Serve one event-stream connection until the client leaves or the bus closes."""
    params = websocket.query_params
    header = websocket.headers.get("authorization")
    if header is None and "token" in params:
        header = f"Bearer {params['token']}"
    if not authorized(header):
        await websocket.close(code=CLOSE_POLICY)
        return
    try:
        after = _parse_after(params.get("after"))
    except ValueError:
        await websocket.accept()
        await websocket.close(code=CLOSE_BAD_REQUEST, reason="after must be a non-negative integer")
        return
    workspace = params.get("workspace") or None
    subscription = bus.subscribe(after)
    try:
        await websocket.accept()
        await websocket.send_json(
            {
                "type": "stream.hello",
                "last_seq": bus.last_seq,
                "after": after,
                "missed": list(subscription.missed) if subscription.missed else None,
            }
        )
        sender = asyncio.ensure_future(_send_events(websocket, subscription, workspace))
        receiver = asyncio.ensure_future(_wait_for_disconnect(websocket))
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            results = await asyncio.gather(sender, receiver, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, WebSocketDisconnect | OSError):
                log.warning("event stream ended with %s: %s", type(result).__name__, result)
    except (WebSocketDisconnect, OSError):
        pass
    finally:
        subscription.close()
