"""The fleet's event stream: workers append the kernel's events to PostgreSQL, any node streams them out.

A worker's kernel calls :meth:`EventSink.offer` for every event (on its loop,
never waiting); a task writes what has gathered in one transaction and
announces it with ``NOTIFY``. A node serving the API runs an
:class:`EventFollower`, which loads the recent events, then ``LISTEN``s and
relays each new one into the node's event bus numbered by its row id, so
``/events?after=N`` means the same on every node. Nothing polls: both sides
sleep until there is something to do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg

from codeagent.models import utcnow
from core_async.kernel.events import Event, EventBus
from core_async.pg_state import EVENTS_CHANNEL, AsyncPgEventLog

log = logging.getLogger("codeagent.fleet.events")


class EventSink:
    """Writes a kernel's events to the event log in batches, in the order published."""

    def __init__(self, log_: AsyncPgEventLog, *, source: dict[str, Any] | None = None) -> None:
        self.log = log_
        self.source = dict(source or {})
        self._pending: list[tuple[str | None, str, str, dict[str, Any]]] = []
        self._ready = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> EventSink:
        """Start the writer task (on the running loop)."""
        self._task = asyncio.create_task(self._write(), name="fleet-event-sink")
        return self

    def offer(self, event: Event) -> None:
        """Queue one event (the kernel's ``on_event`` hook); returns at once."""
        data = {**event.data, **self.source}
        workspace = data.get("workspace")
        self._pending.append(
            (str(workspace) if workspace is not None else None, event.type, event.time, data)
        )
        self._ready.set()

    def offer_raw(self, workspace: str | None, kind: str, data: dict[str, Any]) -> None:
        """Queue an event that did not come from a kernel (an API node's ``todo.added``)."""
        time = utcnow().isoformat().replace("+00:00", "Z")
        self._pending.append((workspace, kind, time, {**data, **self.source}))
        self._ready.set()

    async def _write(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            batch, self._pending = self._pending, []
            if batch:
                try:
                    await self.log.append(batch)
                except Exception as exc:  # the stream is informative: the work goes on without it
                    log.error("cannot write %d event(s) to the event log: %s", len(batch), exc)
            if self._closing and not self._pending:
                return

    async def aclose(self) -> None:
        """Write what is left, then stop."""
        self._closing = True
        self._ready.set()
        if self._task is not None:
            await self._task


class EventFollower:
    """Relays the event log into one node's event bus: the recent past, then every new event."""

    def __init__(self, dsn: str, log_: AsyncPgEventLog, bus: EventBus, *, backlog: int = 4096) -> None:
        self.dsn = dsn
        self.log = log_
        self.bus = bus
        self.backlog = backlog
        self.last = 0

    async def _catch_up(self) -> None:
        while True:
            rows = await self.log.since(self.last, limit=1000)
            for seq, _workspace, kind, time, data in rows:
                self.bus.relay(seq, kind, time, data)
                self.last = seq
            if len(rows) < 1000:
                return

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Follow until cancelled; ``ready`` is set once listening (nothing published since is missed)."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
            cur = await conn.execute("SELECT coalesce(max(id), 0) FROM codeagent_events")
            row = await cur.fetchone()
            newest = int(row[0]) if row is not None else 0
            self.last = max(0, newest - self.backlog)
            await self._catch_up()
            if ready is not None:
                ready.set()
            async for _notify in conn.notifies():
                await self._catch_up()
