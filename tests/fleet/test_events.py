"""The fleet's event stream in one process: a sink writing a kernel's events, a follower relaying them.

Real PostgreSQL (the module's database), the kernel's real :class:`EventBus`,
``LISTEN``/``NOTIFY`` for real; everything on the test's debug-mode loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from core_async.kernel.events import EventBus
from core_async.pg_state import AsyncPgEventLog, PgDatabase
from fleet.events import EventFollower, EventSink

WAIT = 10.0  # seconds before a test gives up waiting for the database


@pytest.fixture
async def event_log(shared_pg_dsn: str) -> AsyncIterator[AsyncPgEventLog]:
    db = await PgDatabase(shared_pg_dsn, max_size=4).open()
    try:
        yield AsyncPgEventLog(db)
    finally:
        await db.aclose()


async def _newest(log: AsyncPgEventLog) -> int:
    async with log.db.pool.connection() as conn:
        cur = await conn.execute("SELECT coalesce(max(id), 0) FROM codeagent_events")
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_the_sink_writes_the_kernels_events_in_order_with_their_source(
    event_log: AsyncPgEventLog,
) -> None:
    start = await _newest(event_log)
    bus = EventBus()
    sink = EventSink(event_log, source={"node": "worker-1"}).start()
    bus.on_publish = sink.offer
    bus.publish("todo.started", workspace="ws-a", todo="t-0001")
    await asyncio.sleep(0)  # the writer may take this one alone: batches must not reorder
    bus.publish("todo.done", workspace="ws-a", todo="t-0001", commit="abc")
    sink.offer_raw("ws-b", "todo.added", {"todo": "t-0002", "node": "overridden"})
    bus.publish("agent.idle")
    await sink.aclose()

    rows = await event_log.since(start)
    assert [(workspace, kind) for _id, workspace, kind, _time, _data in rows] == [
        ("ws-a", "todo.started"),
        ("ws-a", "todo.done"),
        ("ws-b", "todo.added"),
        (None, "agent.idle"),  # no workspace in the data: none in the row
    ]
    assert [data for *_rest, data in rows] == [
        {"workspace": "ws-a", "todo": "t-0001", "node": "worker-1"},
        {"workspace": "ws-a", "todo": "t-0001", "commit": "abc", "node": "worker-1"},
        {"todo": "t-0002", "node": "worker-1"},  # the sink's source wins
        {"node": "worker-1"},
    ]
    times = [time for _id, _w, _k, time, _d in rows]
    assert all(t.endswith("Z") and "T" in t for t in times) and times == sorted(times)
    assert sink._task is not None and sink._task.done()


async def test_a_batch_the_database_refuses_is_logged_and_the_stream_goes_on(
    event_log: AsyncPgEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    start = await _newest(event_log)
    refused = asyncio.Event()

    class Watch(logging.Handler):  # the sink logs on the loop's thread: it may set the event
        def emit(self, record: logging.LogRecord) -> None:
            if "cannot write 1 event(s) to the event log" in record.getMessage():
                refused.set()

    watch = Watch(logging.ERROR)
    logger = logging.getLogger("codeagent.fleet.events")
    logger.addHandler(watch)
    try:
        sink = EventSink(event_log).start()
        sink.offer_raw("ws-a", "todo.failed", {"error": "a NUL \x00 PostgreSQL cannot store"})
        async with asyncio.timeout(WAIT):
            await refused.wait()
        sink.offer_raw("ws-a", "todo.retried", {"todo": "t-0001"})
        await sink.aclose()
    finally:
        logger.removeHandler(watch)
    assert [kind for _id, _w, kind, _t, _d in await event_log.since(start)] == ["todo.retried"]
    [record] = [r for r in caplog.records if r.name == "codeagent.fleet.events"]
    assert record.levelno == logging.ERROR


async def test_closing_a_sink_that_never_started_does_nothing(event_log: AsyncPgEventLog) -> None:
    start = await _newest(event_log)
    sink = EventSink(event_log)
    sink.offer_raw(None, "todo.added", {})
    await sink.aclose()  # no writer task: nothing is written, nothing waits
    assert await event_log.since(start) == []


async def test_the_follower_relays_the_recent_past_then_every_new_event(
    shared_pg_dsn: str, event_log: AsyncPgEventLog
) -> None:
    old = await event_log.append([(None, f"old.{i}", "2024-01-01T00:00:00Z", {"i": i}) for i in range(5)])
    bus = EventBus()
    follower = EventFollower(shared_pg_dsn, event_log, bus, backlog=3)
    ready = asyncio.Event()
    task = asyncio.create_task(follower.run(ready))
    try:
        async with asyncio.timeout(WAIT):
            await ready.wait()
        # The recent past, numbered by the log's ids (``?after=N`` means the same on every node).
        assert [(e.seq, e.type) for e in bus.since(0)] == [(old[i], f"old.{i}") for i in (2, 3, 4)]
        subscription = bus.subscribe(after=bus.last_seq)
        new = await event_log.append(
            [("ws-a", "todo.started", "2024-01-01T00:00:01Z", {"todo": "t-0001"})]
        )  # another node wrote it: NOTIFY wakes the follower
        newer = await event_log.append([("ws-a", "todo.done", "2024-01-01T00:00:02Z", {"todo": "t-0001"})])
        async with asyncio.timeout(WAIT):
            got = [await subscription.next(), await subscription.next()]
        assert [(e.seq, e.type, e.time, e.data) for e in got if e is not None] == [
            (new[0], "todo.started", "2024-01-01T00:00:01Z", {"todo": "t-0001"}),
            (newer[0], "todo.done", "2024-01-01T00:00:02Z", {"todo": "t-0001"}),
        ]
        assert follower.last == newer[0]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_follower_catches_up_page_by_page(shared_pg_dsn: str, event_log: AsyncPgEventLog) -> None:
    async with await psycopg.AsyncConnection.connect(shared_pg_dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO codeagent_events (workspace, type, time, data)"
            " SELECT NULL, 'bulk', 't', jsonb_build_object('n', n) FROM generate_series(1, 1200) AS n"
        )
    newest = await _newest(event_log)
    bus = EventBus(capacity=2000)
    follower = EventFollower(shared_pg_dsn, event_log, bus, backlog=1100)  # more than one page of 1000
    ready = asyncio.Event()
    task = asyncio.create_task(follower.run(ready))
    try:
        async with asyncio.timeout(WAIT):
            await ready.wait()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    events = bus.since(0)
    assert len(events) == 1100 and follower.last == newest == bus.last_seq
    assert [e.seq for e in events] == list(range(newest - 1099, newest + 1))
    assert events[-1].data == {"n": 1200} and events[0].data == {"n": 101}


async def test_a_value_json_has_no_type_for_is_stored_as_its_text(event_log: AsyncPgEventLog) -> None:
    # Before: json.dumps raised TypeError on a Path, the writer task died and every later event was lost.
    start = await _newest(event_log)
    sink = EventSink(event_log).start()
    sink.offer_raw("ws-a", "todo.done", {"file": Path("src/a.py")})
    sink.offer_raw("ws-a", "todo.added", {"todo": "t-0002"})
    await sink.aclose()
    rows = await event_log.since(start)
    assert [(kind, data) for _id, _w, kind, _t, data in rows] == [
        ("todo.done", {"file": "src/a.py"}),
        ("todo.added", {"todo": "t-0002"}),
    ]


async def test_any_error_of_a_batch_is_logged_and_the_writer_goes_on(
    event_log: AsyncPgEventLog, caplog: pytest.LogCaptureFixture
) -> None:
    start = await _newest(event_log)
    sink = EventSink(event_log).start()
    sink.offer_raw("ws-a", "todo.failed", {"loop": float("nan")})  # allowed by json.dumps, not by PostgreSQL
    sink.offer_raw("ws-a", "todo.failed", {"cycle": _Cyclic()})
    await asyncio.sleep(0.2)
    sink.offer_raw("ws-a", "todo.retried", {"todo": "t-0001"})
    await sink.aclose()
    kinds = [kind for _id, _w, kind, _t, _d in await event_log.since(start)]
    assert kinds[-1] == "todo.retried"
    assert any("cannot write" in r.getMessage() for r in caplog.records if r.name == "codeagent.fleet.events")


class _Cyclic:
    def __str__(self) -> str:
        raise RuntimeError("no text either")
