"""Injected faults and latency, scripted and random, over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from core_async import _httpcore_fixes as httpcore_fixes
from llm_stub import StubOptions, StubServer
from tests.stub.helpers import chat_body, reply_text

BODY = chat_body('say "fine"')


@pytest.fixture(params=[False, True], ids=["http1.1", "http2"])
def http2(request: pytest.FixtureRequest) -> bool:
    flag: bool = request.param
    return flag


@pytest.fixture
async def client(http2: bool) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=10) as c:
        yield c


async def post(client: httpx.AsyncClient, stub: StubServer, **extra: object) -> httpx.Response:
    # With httpcore's stock HTTP/2 reads a hung stream can hold the connection's read lock
    # while the others' answers wait behind it (a client-side stall, not the stub's), so
    # these requests read as the project's own client does.
    httpcore_fixes.install()
    return await client.post(
        f"{stub.url}/chat/completions",
        json={**BODY, **extra},
        extensions={httpcore_fixes.SHARED_READ: True},
    )


async def wait_idle(stub: StubServer) -> dict[str, object]:
    """The stats once nothing is in flight (polled: the counters live in the server's thread)."""
    stats = stub.stats()
    for _ in range(250):
        if not stats["in_flight"]:
            break
        await asyncio.sleep(0.02)
        stats = stub.stats()
    return stats


async def test_500(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["500"])
    response = await post(client, stub)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    assert (await post(client, stub)).status_code == 200


async def test_429_says_when_to_retry(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["429"])
    response = await post(client, stub)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    stub.set_options(retry_after_s=2.5)
    stub.queue_faults(["429"])
    response = await post(client, stub)
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("3", "2500")


async def test_quota_is_a_429_with_insufficient_quota(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["quota"])
    response = await post(client, stub)
    assert response.status_code == 429
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")


async def test_malformed_is_a_200_that_is_not_json(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["malformed", "malformed"])
    response = await post(client, stub)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    streamed = await post(client, stub, stream=True)
    assert streamed.status_code == 200
    first = streamed.text.split("\n\n")[0].removeprefix("data: ")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)


async def test_reset_http1_drops_the_connection_without_a_response(stub: StubServer) -> None:
    stub.queue_faults(["reset"])
    async with httpx.AsyncClient() as client:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await post(client, stub)
        assert (await post(client, stub)).status_code == 200
    stats = await wait_idle(stub)
    assert stats["by_fault"] == {"reset": 1}
    assert stats["by_status"] == {"200": 1}
    assert stats["connections_seen"] == 2


async def test_reset_http2_resets_one_stream_and_spares_the_others(stub: StubServer) -> None:
    stub.set_options(latency_ms=200)
    stub.queue_faults(["reset"])
    async with httpx.AsyncClient(http1=False, http2=True) as client:
        results = await asyncio.gather(*(post(client, stub) for _ in range(6)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    assert isinstance(errors[0], httpx.RemoteProtocolError)
    assert "StreamReset" in str(errors[0])
    assert [r.status_code for r in results if isinstance(r, httpx.Response)] == [200] * 5
    stats = await wait_idle(stub)
    assert stats["connections_seen"] == 1
    assert stats["by_fault"] == {"reset": 1}


async def test_hang_outlasts_the_client_timeout_and_ends_when_the_client_leaves(
    stub: StubServer, http2: bool
) -> None:
    stub.queue_faults(["hang"])
    started = time.monotonic()
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await post(client, stub)
        assert time.monotonic() - started < 2
    stats = await wait_idle(stub)
    assert stats["in_flight"] == 0
    assert stats["by_fault"] == {"hang": 1}
    assert stats["client_disconnects"] == 1


async def test_hang_other_requests_go_on(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["hang"])
    hung = asyncio.ensure_future(post(client, stub))
    # The queued fault goes to whichever request reaches the stub first: wait until the
    # hung one is in flight there before sending the others, or one of them may draw it.
    for _ in range(1000):
        stats = stub.stats()
        if stats["in_flight"] == 1 and not stats["queued_faults"]:
            break
        await asyncio.sleep(0.01)
    assert stub.stats()["queued_faults"] == []
    answers = await asyncio.gather(*(post(client, stub) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert stub.stats()["in_flight"] == 1
    hung.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hung


async def test_short_hang_then_answers(client: httpx.AsyncClient) -> None:
    with StubServer(StubOptions(hang_s=0.3)) as stub:
        stub.queue_faults(["hang"])
        started = time.monotonic()
        response = await post(client, stub)
        assert time.monotonic() - started >= 0.3
    assert reply_text(response.json()) == "fine"


async def test_latency_and_jitter(client: httpx.AsyncClient) -> None:
    with StubServer(StubOptions(latency_ms=150, jitter_ms=50, seed=3)) as stub:
        durations = []
        for _ in range(4):
            started = time.monotonic()
            assert (await post(client, stub)).status_code == 200
            durations.append(time.monotonic() - started)
    assert all(0.1 <= d < 0.6 for d in durations), durations
    assert len({round(d, 2) for d in durations}) > 1


async def test_faults_do_not_touch_other_routes(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["500"])
    assert (await client.get(f"{stub.url}/models")).status_code == 200
    assert stub.stats()["queued_faults"] == ["500"]


async def _statuses(options: StubOptions, n: int) -> list[int]:
    with StubServer(options) as stub:
        async with httpx.AsyncClient() as client:
            return [(await post(client, stub)).status_code for _ in range(n)]


async def test_random_faults_follow_the_seed() -> None:
    options = StubOptions(fail_rate=0.5, faults=("500", "429", "quota"), seed=7)
    first = await _statuses(options, 30)
    assert first == await _statuses(options, 30)
    assert {200, 500, 429} <= set(first)
    other = await _statuses(StubOptions(fail_rate=0.5, faults=("500", "429", "quota"), seed=8), 30)
    assert other != first
    assert set(await _statuses(StubOptions(fail_rate=1.0, faults=("500",)), 5)) == {500}
    assert set(await _statuses(StubOptions(fail_rate=0.0), 5)) == {200}


def test_bad_options_are_refused() -> None:
    for bad in (
        {"fail_rate": 1.5},
        {"latency_ms": -1},
        {"faults": ("500", "teapot")},
        {"fail_rate": 0.1, "faults": ()},
    ):
        with pytest.raises(ValueError, match=r"fail_rate|latency_ms|teapot|fault kind"):
            StubOptions(**bad)
    stub = StubServer()
    with pytest.raises(ValueError, match="unknown fault kind"):
        stub.queue_faults(["nope"])
    with pytest.raises(ValueError, match="unknown stub option"):
        stub.set_options(colour="red")


EDIT = chat_body('append a line "x" to file notes.txt', {"notes.txt": "a\n"})


async def test_cut_starts_the_answer_and_breaks_off_half_way(stub: StubServer, http2: bool) -> None:
    """A 200 whose body is cut short in transit: a transport fault, unlike ``malformed``."""
    stub.queue_faults(["cut", "cut"])
    async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=10) as client:
        url = f"{stub.url}/chat/completions"
        async with client.stream("POST", url, json=EDIT) as response:
            assert response.status_code == 200
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                await response.aread()
        received = b""

        async def read_the_stream() -> None:
            nonlocal received
            async with client.stream("POST", url, json={**EDIT, "stream": True}) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_bytes():
                    received += chunk

        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await read_the_stream()
        assert received.startswith(b"data: {") and b"[DONE]" not in received
        assert (await client.post(url, json=EDIT)).status_code == 200
    stats = await wait_idle(stub)
    assert stats["by_fault"] == {"cut": 2}


async def test_broken_edit_is_a_well_formed_answer_whose_blocks_do_not_parse(
    stub: StubServer, client: httpx.AsyncClient
) -> None:
    from codeagent.edits import parse_edit_blocks
    from codeagent.errors import EditError

    stub.queue_faults(["broken_edit"])
    broken = await client.post(f"{stub.url}/chat/completions", json=EDIT)
    assert broken.status_code == 200
    with pytest.raises(EditError, match="REPLACE"):
        parse_edit_blocks(reply_text(broken.json()))
    fine = await client.post(f"{stub.url}/chat/completions", json=EDIT)
    assert len(parse_edit_blocks(reply_text(fine.json()))) == 1


async def test_requests_are_counted_per_todo(stub: StubServer, client: httpx.AsyncClient) -> None:
    stub.queue_faults(["500"])
    for _ in range(3):
        await client.post(f"{stub.url}/chat/completions", json=EDIT)
    await client.post(f"{stub.url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    stats = await wait_idle(stub)
    assert (stats["todos_seen"], stats["max_requests_per_todo"]) == (1, 3)
    assert "by_todo" not in stats
    async with httpx.AsyncClient() as plain:
        detailed = (await plain.get(f"{stub.url.removesuffix('/v1')}/_stub/stats?by_todo=1")).json()
    assert detailed["by_todo"] == {"t-0001": 3}
