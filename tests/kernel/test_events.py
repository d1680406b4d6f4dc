"""EventBus: sequence numbers, ring buffer, resume after N, lagging subscribers, close."""

from __future__ import annotations

import asyncio

import pytest

from core_async.kernel.events import EventBus, SubscriberLagging


async def drain(subscription, n: int) -> list[int]:
    return [(await subscription.next()).seq for _ in range(n)]


async def test_events_are_numbered_and_a_subscriber_resumes_after_n_without_loss() -> None:
    bus = EventBus(capacity=100)
    for i in range(5):
        bus.publish("todo.done", todo_id=f"t-{i}")
    assert bus.last_seq == 5
    assert [e.seq for e in bus.since(2)] == [3, 4, 5]
    assert bus.since(5) == []

    resumed = bus.subscribe(after=2)
    live = bus.subscribe()
    assert resumed.missed is None and live.last_seq == 5
    bus.publish("todo.done", todo_id="t-5")
    assert await drain(resumed, 4) == [3, 4, 5, 6]
    assert await drain(live, 1) == [6]
    event = bus.since(5)[0]
    assert event.to_json() == {"seq": 6, "type": "todo.done", "time": event.time, "todo_id": "t-5"}
    assert bus.subscriber_count == 2
    resumed.close()
    assert bus.subscriber_count == 1


async def test_a_subscriber_asking_for_events_already_dropped_is_told_which() -> None:
    bus = EventBus(capacity=3)
    for _ in range(10):
        bus.publish("x")
    subscription = bus.subscribe(after=2)
    assert subscription.missed == (3, 8)
    assert await drain(subscription, 3) == [8, 9, 10]


async def test_a_lagging_subscriber_is_dropped_and_can_resume_from_the_ring() -> None:
    bus = EventBus(capacity=100, queue_size=3)
    slow = bus.subscribe(after=0)
    for _ in range(5):
        bus.publish("x")
    assert await drain(slow, 3) == [1, 2, 3]  # what it had queued, then the news
    with pytest.raises(SubscriberLagging) as caught:
        await slow.next()
    assert "reconnect with ?after=3" in str(caught.value)
    assert bus.subscriber_count == 0
    again = bus.subscribe(after=caught.value.last_seq)
    assert await drain(again, 2) == [4, 5]


async def test_close_ends_every_subscription_after_what_was_published() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    waiting = asyncio.create_task(subscription.next())
    await asyncio.sleep(0)
    bus.publish("server.stopped")
    assert (await waiting).type == "server.stopped"
    bus.close()
    assert bus.closed
    assert [e async for e in subscription] == []
    late = bus.subscribe(after=0)  # after close: the buffered events, then the end
    assert [e.type async for e in late] == ["server.stopped"]
    bus.publish("ignored")  # publishing after close is harmless


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventBus(capacity=0)
