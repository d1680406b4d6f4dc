"""The event bus behind the WebSocket stream: numbered events, a ring buffer, live fan-out.

Every event gets the next sequence number (1, 2, ...). The bus keeps the last
``capacity`` events, so a subscriber that names the last number it saw
(``after``) first gets everything it missed that is still buffered, then live
events, with no gap and no duplicate: the replay snapshot and the live
registration happen in one step on the loop's thread.

A subscriber that falls more than ``queue_size`` events behind is dropped
(its iterator raises :class:`SubscriberLagging`) rather than letting the bus
grow without bound; it reconnects with ``after`` and loses nothing that is
still in the ring. When the oldest wanted event has already left the ring,
the subscription says so (:attr:`Subscription.missed`) before replaying.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from codeagent.models import utcnow

log = logging.getLogger("codeagent.kernel.events")

DEFAULT_CAPACITY = 4096
DEFAULT_QUEUE_SIZE = 8192


@dataclass(frozen=True, slots=True)
class Event:
    """One numbered event: a type such as ``todo.done`` and its JSON-ready data."""

    seq: int
    type: str
    time: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The event as sent on the WebSocket: ``{"seq", "type", "time", **data}``."""
        return {"seq": self.seq, "type": self.type, "time": self.time, **self.data}


class SubscriberLagging(Exception):
    """The subscriber fell too far behind and was dropped; reconnect with ``after``."""

    def __init__(self, last_seq: int) -> None:
        self.last_seq = last_seq
        super().__init__(f"subscriber fell behind after event {last_seq}; reconnect with ?after={last_seq}")


class Subscription:
    """Events after a given number: first the buffered ones, then live ones, in order."""

    def __init__(
        self,
        bus: EventBus,
        start_seq: int,
        backlog: list[Event],
        missed: tuple[int, int] | None,
        queue_size: int,
    ) -> None:
        self._bus = bus
        self._pending: deque[Event] = deque(backlog)
        self._queue_size = queue_size + len(backlog)
        self._wakeup = asyncio.Event()
        self._ended = False
        self._lagging = False
        self.missed = missed
        """``(first missing, first available)`` when older events were already dropped, else ``None``."""
        self.last_seq = start_seq
        """The number of the last event handed out (the starting point before the first)."""

    def _offer(self, event: Event) -> None:
        if len(self._pending) >= self._queue_size:
            self._lagging = True
            self._bus._unsubscribe(self)
        else:
            self._pending.append(event)
        self._wakeup.set()

    def _close(self) -> None:
        self._ended = True
        self._wakeup.set()

    async def next(self) -> Event | None:
        """The next event, waiting for one; ``None`` when the bus closed and everything was read.

        Raises :class:`SubscriberLagging`, once the events it had queued are
        read, when this subscriber was dropped for falling behind (reconnecting
        with ``after=last_seq`` resumes from the ring).
        """
        while True:
            if self._pending:
                event = self._pending.popleft()
                self.last_seq = event.seq
                return event
            if self._lagging:
                raise SubscriberLagging(self.last_seq)
            if self._ended:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        while True:
            event = await self.next()
            if event is None:
                return
            yield event

    def close(self) -> None:
        """Stop receiving events (the subscriber is done with this subscription)."""
        self._bus._unsubscribe(self)
        self._bus._release(self)


class EventBus:
    """Numbers, buffers and fans out events. Use it from the event loop's thread only."""

    def __init__(
        self,
        capacity: int = DEFAULT_CAPACITY,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        *,
        on_publish: Callable[[Event], None] | None = None,
    ) -> None:
        if capacity < 1 or queue_size < 1:
            raise ValueError("capacity and queue_size must be at least 1")
        self.capacity = capacity
        self.on_publish = on_publish
        self.queue_size = queue_size
        self._ring: deque[Event] = deque(maxlen=capacity)
        self._subscribers: set[Subscription] = set()
        self._open: set[Subscription] = set()
        self._all_released = asyncio.Event()
        self._all_released.set()
        self._seq = 0
        self._closed = False

    @property
    def last_seq(self) -> int:
        """The number of the latest event (0 before the first)."""
        return self._seq

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has run."""
        return self._closed

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are live."""
        return len(self._subscribers)

    def publish(self, type_: str, **data: Any) -> Event:
        """Number, buffer and deliver one event; values must be JSON-ready. Never blocks."""
        self._seq += 1
        return self._deliver(Event(self._seq, type_, utcnow().isoformat().replace("+00:00", "Z"), data))

    def relay(self, seq: int, type_: str, time: str, data: dict[str, Any]) -> Event | None:
        """Deliver an event numbered elsewhere (a shared event log); ``None`` when ``seq`` is not new."""
        if seq <= self._seq:
            return None
        self._seq = seq
        return self._deliver(Event(seq, type_, time, data))

    def _deliver(self, event: Event) -> Event:
        type_, data = event.type, event.data
        self._ring.append(event)
        if not self._closed:
            for subscriber in list(self._subscribers):
                subscriber._offer(event)
        if self.on_publish is not None:
            self.on_publish(event)
        log.debug("event %d %s %s", event.seq, type_, data)
        return event

    def since(self, after: int) -> list[Event]:
        """Buffered events numbered above ``after``, oldest first."""
        if after >= self._seq:
            return []
        return [event for event in self._ring if event.seq > after]

    def subscribe(self, after: int | None = None) -> Subscription:
        """Events after number ``after`` (``None``: live events only, from now on).

        After :meth:`close` the subscription replays what is buffered and ends.
        """
        backlog = self.since(after) if after is not None else []
        missed: tuple[int, int] | None = None
        if after is not None and after < self._seq:
            first_available = self._ring[0].seq if self._ring else self._seq + 1
            if first_available > after + 1:
                missed = (after + 1, first_available)
        start = self._seq if after is None else min(after, self._seq)
        subscription = Subscription(self, start, backlog, missed, self.queue_size)
        self._open.add(subscription)
        self._all_released.clear()
        if self._closed:
            subscription._close()
        else:
            self._subscribers.add(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def _release(self, subscription: Subscription) -> None:
        self._open.discard(subscription)
        if not self._open:
            self._all_released.set()

    async def wait_released(self, within: float) -> bool:
        """Wait (up to ``within`` seconds) until every subscriber closed its subscription; return whether all did.

        After :meth:`close`, this lets WebSocket clients receive the last events
        before their connections are shut.
        """
        try:
            async with asyncio.timeout(within):
                await self._all_released.wait()
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """End every subscription (each still gets what was published before)."""
        self._closed = True
        for subscriber in list(self._subscribers):
            subscriber._close()
        self._subscribers.clear()
