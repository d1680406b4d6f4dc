"""Fixes to hypercorn's HTTP/2 protocol so one connection carries 1,000+ concurrent streams.

hypercorn's ``H2Protocol`` (0.17/0.18) has three problems under load:

* it picks which stream sends next with ``priority.PriorityTree()``, whose
  default ``maximum_streams=1000`` counts the root too: with
  ``h2_max_concurrent_streams`` raised to 1,000 or more, the 1,000th concurrent
  stream raises ``TooManyStreamsError`` inside the connection's task group and
  the whole connection dies (every in-flight request on it fails);
* removing a finished stream from that tree re-heaps all its siblings, so N
  concurrent streams cost O(N^2 log N): about 2 s of CPU for 1,000 streams,
  7 s for 2,000;
* a DATA frame for a stream the app has already answered and closed (a
  response sent before the whole request body arrived) raises ``KeyError``
  in ``_handle_events`` and, again, kills the connection (hypercorn issue #161,
  pull request #365, not released).

:class:`RoundRobinScheduler` replaces the tree with the same interface, O(1) per
operation, serving ready streams in turn (RFC 9113 deprecated RFC 7540's stream
priorities; clients such as httpx send none). :class:`StubH2Protocol` uses it
and drops (and acknowledges, for flow control) DATA for streams already closed.
:func:`install` makes hypercorn build :class:`StubH2Protocol`, which applies its
fixes only to connections whose config is a :class:`StubConfig`, so any other
hypercorn server in the process behaves exactly as before.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import h2.events
import h2.exceptions
import hypercorn.protocol
from hypercorn.config import Config
from hypercorn.protocol.h2 import H2Protocol
from priority.priority import DeadlockError, DuplicateStreamError, MissingStreamError, TooManyStreamsError

log = logging.getLogger(__name__)


class StubConfig(Config):
    """hypercorn's Config, marked so that :class:`StubH2Protocol` applies its fixes."""

    codeagent_stub_fixes = True


class RoundRobinScheduler:
    """Drop-in for ``priority.PriorityTree`` as hypercorn uses it: ready streams take turns."""

    def __init__(self, maximum_streams: int) -> None:
        self._maximum = maximum_streams
        self._streams: set[int] = set()
        self._ready: dict[int, None] = {}  # insertion-ordered set: the turn order

    def insert_stream(
        self, stream_id: int, depends_on: int | None = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        """Add a stream, ready to send (hypercorn blocks it right away)."""
        if stream_id in self._streams:
            raise DuplicateStreamError(f"Stream {stream_id} already in tree")
        if len(self._streams) >= self._maximum:
            raise TooManyStreamsError(f"Refusing to track more than {self._maximum} streams")
        self._streams.add(stream_id)
        self._ready[stream_id] = None

    def reprioritize(
        self, stream_id: int, depends_on: int | None = None, weight: int = 16, exclusive: bool = False
    ) -> None:
        """Priorities are ignored; only checks that the stream is known."""
        if stream_id not in self._streams:
            raise MissingStreamError(f"Stream {stream_id} not in tree")

    def remove_stream(self, stream_id: int) -> None:
        """Forget a stream."""
        if stream_id not in self._streams:
            raise MissingStreamError(f"Stream {stream_id} not in tree")
        self._streams.discard(stream_id)
        self._ready.pop(stream_id, None)

    def block(self, stream_id: int) -> None:
        """The stream has nothing to send for now."""
        if stream_id not in self._streams:
            raise MissingStreamError(f"Stream {stream_id} not in tree")
        self._ready.pop(stream_id, None)

    def unblock(self, stream_id: int) -> None:
        """The stream has something to send."""
        if stream_id not in self._streams:
            raise MissingStreamError(f"Stream {stream_id} not in tree")
        self._ready.setdefault(stream_id, None)

    def __iter__(self) -> RoundRobinScheduler:
        return self

    def __next__(self) -> int:
        """The next ready stream (it moves to the back of the line); DeadlockError if none is ready."""
        if not self._ready:
            raise DeadlockError("No unblocked streams to schedule.")
        stream_id = next(iter(self._ready))
        del self._ready[stream_id]
        self._ready[stream_id] = None
        return stream_id


class StubH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol with the fixes above when its config is a :class:`StubConfig`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stub_fixes = bool(getattr(self.config, "codeagent_stub_fixes", False))
        if self._stub_fixes:
            limit = 2 * int(self.config.h2_max_concurrent_streams) + 1
            self.priority = cast(Any, RoundRobinScheduler(limit))

    async def _handle_events(self, events: list[h2.events.Event]) -> None:
        if not self._stub_fixes:
            await super()._handle_events(events)
            return
        # One at a time, so that "is the stream still there?" is asked when the event is handled.
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.stream_id not in self.streams:
                try:
                    self.connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                except h2.exceptions.ProtocolError:
                    pass
                continue
            await super()._handle_events([event])
        await self._flush()


def install() -> bool:
    """Make hypercorn build :class:`StubH2Protocol` for HTTP/2 connections; ``True`` if in place."""
    current = getattr(hypercorn.protocol, "H2Protocol", None)
    if current is StubH2Protocol:
        return True
    if current is not H2Protocol or not hasattr(hypercorn.protocol, "ProtocolWrapper"):
        log.warning("hypercorn's protocol module has changed; its HTTP/2 fixes are not applied")
        return False
    hypercorn.protocol.H2Protocol = StubH2Protocol  # type: ignore[attr-defined]
    return True
