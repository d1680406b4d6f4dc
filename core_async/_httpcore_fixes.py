"""A fix to httpcore's HTTP/2 reads, applied only to requests that ask for it.

httpcore 1.0's ``AsyncHTTP2Connection`` reads the connection for whichever
stream wants an event: each waiting stream queues on one read lock (first in,
first out) and the holder reads the socket until data arrives. Once a read has
delivered the response of stream B to B's queue, B still waits its turn on the
lock, behind streams whose own answers have not come, each of which blocks
reading until the *next* frame arrives. With 64 requests in flight on one
connection (a 200 ms server) that head-of-line wait was most of the client's
overhead: a median of 70-140 ms per request, against 3-4 ms for a client with
one reader per connection.

:func:`install` wraps ``_receive_events`` so that, for a request whose
extensions hold :data:`SHARED_READ` (the LLM endpoint pool sets it), only one
stream reads at a time and the others wait for that read: after it, a stream
whose events have arrived goes on at once, and one waiting stream is woken to
read next (not all of them, which would wake every stream on every read). The reader still runs httpcore's own code (read lock, GOAWAY and
error handling, flow-control acknowledgements), so a request without the flag
on the same connection behaves as before and never reads concurrently.

Since the LLM client's default became HTTP/1.1 on aiohttp (cheaper per request
at 1, 64 and 1,000 in flight, and the only transport measured that holds 1,000
in flight), this fix is installed only when an endpoint is configured for
HTTP/2 (``llm.transport = "http2"`` or ``"probe"``): the default path runs
httpcore unpatched. It stays for that opt-in, because without it the same
head-of-line wait comes back: at 64 in flight against a 50 ms stub, wall p50 /
p99 94-99 / 200-250 ms unpatched against 71-73 / 114-116 ms patched, and at
1,000 in flight a p99 of 30 s against 21 s
(``python -m benchmarks.micro.test_llm_transports``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import httpcore

log = logging.getLogger(__name__)

#: The request extension that opts a request into the shared read.
SHARED_READ = "codeagent.h2_shared_read"

_STATE = "_codeagent_shared_read"

ReceiveEvents = Callable[[Any, Any, "int | None"], Awaitable[None]]


class _SharedRead:
    """Who reads a connection now, and the streams waiting for that read."""

    __slots__ = ("reading", "waiters")

    def __init__(self) -> None:
        self.reading = False
        self.waiters: list[tuple[int | None, asyncio.Future[None]]] = []

    def wake(self, events: dict[int, list[Any]], everyone: bool) -> None:
        """Wake the waiters that have something to look at, and one more to read next.

        A stream whose events arrived (or that is gone), and a flow-control wait
        (``stream_id`` ``None``), look again; so does the first of the others, which
        becomes the next reader. ``everyone``: the read failed or was cancelled.
        """
        waiters, self.waiters = self.waiters, []
        reader_woken = False
        for stream_id, waiter in waiters:
            if waiter.done():
                continue
            if everyone or stream_id is None or events.get(stream_id, True):
                waiter.set_result(None)
            elif not reader_woken:
                reader_woken = True
                waiter.set_result(None)
            else:
                self.waiters.append((stream_id, waiter))


def _shared_read(original: ReceiveEvents) -> ReceiveEvents:
    async def _receive_events(self: Any, request: Any, stream_id: int | None = None) -> None:
        if not request.extensions.get(SHARED_READ):
            await original(self, request, stream_id)
            return
        state: _SharedRead | None = self.__dict__.get(_STATE)
        if state is None:
            state = self.__dict__[_STATE] = _SharedRead()
        if state.reading:
            # Another stream is reading: wait until that read brings this stream something (or
            # makes it the next reader); the caller then looks at its queue again.
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            state.waiters.append((stream_id, waiter))
            try:
                await waiter
            except BaseException:
                if not state.reading:  # this stream may have been woken to read next: pass that on
                    state.wake(self._events, everyone=False)
                raise
            return
        state.reading = True
        everyone = True
        try:
            await original(self, request, stream_id)
            failed = getattr(self, "_read_exception", None) is not None
            everyone = failed or getattr(self, "_connection_terminated", None) is not None
        finally:
            state.reading = False
            state.wake(self._events, everyone)

    _receive_events.codeagent_shared_read = True  # type: ignore[attr-defined]
    return _receive_events


def install() -> bool:
    """Wrap httpcore's HTTP/2 ``_receive_events`` (once); ``True`` if the wrapper is in place."""
    try:
        from httpcore._async.http2 import AsyncHTTP2Connection
    except ImportError:  # pragma: no cover - HTTP/2 extras missing
        return False
    current = getattr(AsyncHTTP2Connection, "_receive_events", None)
    if current is None or not httpcore.__version__.startswith("1."):
        log.warning("httpcore %s has changed; its HTTP/2 read fix is not applied", httpcore.__version__)
        return False
    if getattr(current, "codeagent_shared_read", False):
        return True
    AsyncHTTP2Connection._receive_events = _shared_read(current)  # type: ignore[method-assign,assignment]
    return True
