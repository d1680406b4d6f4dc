"""The LLM client's transports and tails, measured against the stub LLM in another process.

Three measurements (each also a pytest-benchmark test whose figures land in ``extra_info``):

* :func:`transport_cpu`: per-request CPU of the client process (``time.process_time()`` over N
  requests, the stub's CPU not counted), wall p50 / p99 and errors, for each transport of the
  async client at 1, 64 and 1,000 requests in flight (hedging off, so every transport sends
  exactly N requests);
* :func:`overhead`: client-seen time minus the stub's own time per request (matched by request
  id), p50, at 1 in flight against a fixed 200 ms stub: legacy, the generated twin, async;
* :func:`tails`: the realistic profile at a tenth of its times (lognormal latency median 200 ms,
  p99 1 s; 3% 429 with Retry-After 0.1 s; 0.5% hangs; client timeout 2 s, like the A/B suite's
  20 s), legacy threads against async tasks at the same number in flight: wall p50 / p99 per
  LLM request, hedges sent, errors.

Run the tables: ``python -m benchmarks.micro.test_llm_transports [--quick]`` (markdown on stdout);
or ``python -m pytest benchmarks/micro/test_llm_transports.py --benchmark-only``. Not part of the
tests: it takes minutes and wants a quiet machine (ratios within one run are what to compare).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from core_async.llm import AsyncLLMClient
from core_async.llm_transport import AsyncEndpointPool, HTTPVersion
from core_async.llm_wire import AsyncAnswer, TailPolicy
from core_sync.llm_wire import SyncAnswer
from llm_stub import StubOptions, start_stub_process, stop_stub_process

#: Transports of the async client, by the name the tables use.
TRANSPORTS: dict[str, str] = {
    "aiohttp (default)": "aiohttp",
    "aiohttp via httpx": "aiohttp-httpx",
    "httpcore h2, patched": "http2",
    "httpcore h2, unpatched": "http2-unpatched",
    "httpcore h1 lanes": "http1",
    "plain httpx h1": "httpx",
}

#: (requests in flight, requests measured, stub latency in ms) per level.
LEVELS: dict[int, tuple[int, float]] = {1: (300, 20.0), 64: (3000, 50.0), 1000: (3000, 2000.0)}
QUICK_LEVELS: dict[int, tuple[int, float]] = {1: (100, 20.0), 64: (1000, 50.0), 1000: (1000, 2000.0)}

#: The realistic profile at a tenth of its times (see the module docstring).
TAILS_STUB: dict[str, Any] = {
    "latency_ms": 200.0,
    "latency_p99_ms": 1000.0,
    "fault_rates": {"429": 0.03, "hang": 0.005},
    "retry_after_s": 0.1,
    "hang_s": 60.0,
    "draws": "prompt",
    "seed": 20261201,
}
TAILS_TIMEOUT_S = 2.0


def messages(i: int) -> list[dict[str, str]]:
    """A distinct prompt per request (so ``draws = "prompt"`` gives each its own draws)."""
    return [{"role": "user", "content": f'append a line "probe {i}" to file f{i}.txt'}]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@contextmanager
def stub_process(**options: Any) -> Iterator[str]:
    """The stub LLM in a child process (its CPU is not the client's); yields its base URL."""
    process, url = start_stub_process(StubOptions(**options))
    try:
        yield url
    finally:
        stop_stub_process(process)


def stub_admin(url: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    """``POST /_stub/<path>`` (or ``GET`` without a payload) on the stub at ``url``."""
    origin = url.rsplit("/v1", 1)[0]
    if payload is None and path == "stats":
        return httpx.get(f"{origin}/_stub/stats", params={"recent": 2000}, timeout=30).json()
    response = httpx.post(f"{origin}/_stub/{path}", json=payload or {}, timeout=30)
    response.raise_for_status()
    return response.json() if response.content else None


class _StripSharedRead(httpx.AsyncBaseTransport):
    """httpcore's HTTP/2 as shipped: the request no longer asks for the shared read."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {k: v for k, v in request.extensions.items() if k != "codeagent.h2_shared_read"}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _pool(transport: str, in_flight: int) -> AsyncEndpointPool:
    if transport == "http2-unpatched":
        return AsyncEndpointPool(HTTPVersion.HTTP2, wrap_transport=_StripSharedRead)
    if transport == "httpx":
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        return AsyncEndpointPool(
            HTTPVersion.HTTP1, wrap_transport=lambda _lanes: httpx.AsyncHTTPTransport(limits=limits)
        )
    if transport == "aiohttp-httpx":  # the same session, every request through httpx's client
        return AsyncEndpointPool(HTTPVersion.AIOHTTP, wrap_transport=lambda inner: inner)
    return AsyncEndpointPool(HTTPVersion(transport))


def _run(main: Callable[[], Any], *, tolerate_leaks: bool = False) -> Any:
    """``main()`` on a fresh uvloop. ``tolerate_leaks``: a compared transport may leave connections open.

    uvloop refuses to close a loop that still has live handles (``EBUSY``); for a compared
    transport that is noted in its figures (``leaked``), and its leftovers are collected here
    rather than in whichever test runs next. The default transport is held to a clean close.
    """
    import uvloop  # what the kernel runs on

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    leaked = False
    try:
        result = runner.run(main())
    finally:
        try:
            runner.close()
        except OSError:
            if not tolerate_leaks:
                raise
            leaked = True
        if tolerate_leaks:
            del runner
            gc.collect()
    if isinstance(result, dict) and tolerate_leaks:
        result["leaked"] = leaked
    return result


def transport_cpu(url: str, transport: str, in_flight: int, n: int) -> dict[str, Any]:
    """Per-request client CPU, wall p50 / p99 and errors of ``n`` requests, ``in_flight`` at a time.

    Every transport but the default (``aiohttp``) is only compared: one that leaks
    connections is reported (``leaked``), not failed.
    """

    async def main() -> dict[str, Any]:
        pool = _pool(transport, in_flight)
        llm = AsyncLLMClient(url, "sk-bench", "stub-coder", 600.0, 0, pool=pool, tail=TailPolicy(hedge=False))
        try:
            await asyncio.gather(*(llm.chat(messages(i)) for i in range(min(in_flight, 64))))  # warm up
            walls: list[float] = []
            errors: list[str] = []
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    started = time.perf_counter()
                    try:
                        await llm.chat(messages(i))
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    walls.append(time.perf_counter() - started)

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(in_flight)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            [endpoint] = pool.endpoints()
            return {
                "transport": transport,
                "in_flight": in_flight,
                "requests": n,
                "cpu_ms_per_request": cpu / n * 1000.0,
                "wall_p50_ms": percentile(walls, 0.5) * 1000.0,
                "wall_p99_ms": percentile(walls, 0.99) * 1000.0,
                "errors": len(errors),
                "error_samples": errors[:3],
                "seconds": wall,
                "http_version": endpoint.http_version,
            }
        finally:
            await pool.aclose()

    return dict(_run(main, tolerate_leaks=not transport.startswith("aiohttp")))


def overhead(url: str, client: str, n: int) -> dict[str, Any]:
    """Client-seen minus stub ms per request at 1 in flight (the stub at a fixed latency)."""
    ids: list[str] = []

    def hook(response: httpx.Response | AsyncAnswer | SyncAnswer) -> None:
        ids.append(response.headers.get("x-request-id", ""))

    seen: list[float] = []
    if client == "async":

        async def main() -> None:
            async with AsyncLLMClient(url, "sk-bench", "stub-coder", 60.0, 0) as llm:
                await llm.chat(messages(0))
                for endpoint in llm.pool.endpoints():
                    endpoint.on_response.append(hook)
                ids.clear()
                for i in range(n):
                    started = time.perf_counter()
                    await llm.chat(messages(i))
                    seen.append((time.perf_counter() - started) * 1000.0)

        _run(main)
    else:
        if client == "legacy":
            from legacy.llm import LLMClient

            sync: Any = LLMClient(url, "sk-bench", "stub-coder", 60.0, 0)
            sync._client.event_hooks["response"].append(hook)
        else:
            from core_sync.llm import SyncLLMClient

            sync = SyncLLMClient(url, "sk-bench", "stub-coder", 60.0, 0)
        sync.chat(messages(0))
        if client != "legacy":
            for endpoint in sync.pool.endpoints():
                endpoint.on_response.append(hook)
        ids.clear()
        for i in range(n):
            started = time.perf_counter()
            sync.chat(messages(i))
            seen.append((time.perf_counter() - started) * 1000.0)
        sync.close()
    stats = stub_admin(url, "stats")
    stub_ms = {
        f"req_stub_{r['seq']}": float(r["duration_ms"])
        for r in stats["recent"]
        if r["duration_ms"] is not None
    }
    diffs = [ms - stub_ms[rid] for rid, ms in zip(ids, seen, strict=False) if rid in stub_ms]
    return {
        "client": client,
        "requests": n,
        "matched": len(diffs),
        "overhead_p50_ms": percentile(diffs, 0.5),
        "overhead_p90_ms": percentile(diffs, 0.9),
        "wall_p50_ms": percentile(seen, 0.5),
    }


def tails(
    url: str, client: str, in_flight: int, n: int, offset: int = 0, *, keep_walls: bool = False
) -> dict[str, Any]:
    """The scaled realistic profile: wall p50 / p99 per LLM request (retries and waits included).

    ``keep_walls``: also return every request's wall time (``walls_s``), to pool rounds.
    """
    walls: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(range(offset, offset + n))
    extra: dict[str, Any] = {}
    if client == "legacy":
        from legacy.llm import LLMClient

        llm = LLMClient(url, "sk-bench", "stub-coder", TAILS_TIMEOUT_S, 3)

        def worker() -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                started = time.perf_counter()
                try:
                    llm.chat(messages(i))
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    walls.append(time.perf_counter() - started)

        threads = [threading.Thread(target=worker) for _ in range(in_flight)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        llm.close()
    else:
        policy = TailPolicy() if client == "async" else TailPolicy.off()

        async def main() -> None:
            async with AsyncLLMClient(url, "sk-bench", "stub-coder", TAILS_TIMEOUT_S, 3, tail=policy) as llm:

                async def worker() -> None:
                    for i in todo:
                        started = time.perf_counter()
                        try:
                            await llm.chat(messages(i))
                        except Exception as exc:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        walls.append(time.perf_counter() - started)

                await asyncio.gather(*(worker() for _ in range(in_flight)))
                [endpoint] = llm.pool.endpoints()
                extra.update(endpoint.tail.view())

        _run(main)
    return {
        "client": client,
        "in_flight": in_flight,
        "requests": n,
        "wall_p50_ms": percentile(walls, 0.5) * 1000.0,
        "wall_p99_ms": percentile(walls, 0.99) * 1000.0,
        "errors": len(errors),
        "error_samples": errors[:3],
        **extra,
        **({"walls_s": walls} if keep_walls else {}),
    }


# ------------------------------------------------------------------------------------------ pytest


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    with stub_process(latency_ms=20.0) as url:
        yield url


# The comparison transports may leave a socket of a request that failed at 1,000 in flight unclosed
# (httpcore under uvloop; seen once in a full run): a ResourceWarning at the test's end, which the
# warnings-are-errors setting would turn into a failure of the whole micro-benchmark run. Their errors
# are reported in the figures; the default transport is held to 0 errors and no warning.
_COMPARED = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.parametrize("in_flight", sorted(QUICK_LEVELS))
@pytest.mark.parametrize(
    "name",
    [name if name.startswith("aiohttp") else pytest.param(name, marks=_COMPARED) for name in TRANSPORTS],
)
def test_transport_cpu(benchmark: Any, stub_url: str, name: str, in_flight: int) -> None:
    n, latency = QUICK_LEVELS[in_flight]
    stub_admin(stub_url, "options", {"latency_ms": latency})
    result = benchmark.pedantic(
        transport_cpu, args=(stub_url, TRANSPORTS[name], in_flight, n), rounds=1, iterations=1
    )
    benchmark.extra_info.update(result)
    if name.startswith("aiohttp"):
        assert result["errors"] == 0


@pytest.mark.parametrize("client", ["legacy", "core_sync", "async"])
def test_overhead_at_one_in_flight(benchmark: Any, stub_url: str, client: str) -> None:
    stub_admin(stub_url, "options", {"latency_ms": 200.0})
    stub_admin(stub_url, "reset")
    stub_admin(stub_url, "options", {"latency_ms": 200.0})
    result = benchmark.pedantic(overhead, args=(stub_url, client, 40), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


@pytest.mark.parametrize("client", ["legacy", "async_no_tails", "async"])
def test_tails_of_the_scaled_realistic_profile(benchmark: Any, client: str) -> None:
    with stub_process(**TAILS_STUB) as url:
        result = benchmark.pedantic(tails, args=(url, client, 50, 2000), rounds=1, iterations=1)
    benchmark.extra_info.update(result)


# ------------------------------------------------------------------------------------------ tables


def _fmt(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def main() -> None:
    """Print the three tables as markdown."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests per line")
    parser.add_argument("--only", choices=["cpu", "overhead", "tails"], action="append")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the overhead and tails lines")
    parser.add_argument("--pooled", action="store_true", help="also the tails of every round pooled")
    parser.add_argument("--transports", default=",".join(TRANSPORTS.values()))
    parser.add_argument("--levels", default="1,64,1000")
    args = parser.parse_args()
    for name in ("core_async.llm", "core_sync.llm", "codeagent.legacy.llm"):
        logging.getLogger(name).setLevel(logging.ERROR)  # a retry is a line of the table, not of the log
    only = set(args.only or ["cpu", "overhead", "tails"])
    levels = QUICK_LEVELS if args.quick else LEVELS
    wanted = set(args.transports.split(","))
    if "cpu" in only:
        print("| transport | in flight | CPU ms/request | wall p50 ms | wall p99 ms | errors | HTTP |")
        print("|---|---:|---:|---:|---:|---:|---|")
        with stub_process(latency_ms=20.0) as url:
            for in_flight in [int(x) for x in args.levels.split(",")]:
                n, latency = levels[in_flight]
                stub_admin(url, "options", {"latency_ms": latency})
                for name, transport in TRANSPORTS.items():
                    if transport not in wanted:
                        continue
                    r = transport_cpu(url, transport, in_flight, n)
                    print(
                        f"| {name} | {in_flight} | {_fmt(r['cpu_ms_per_request'])} | {_fmt(r['wall_p50_ms'], 1)}"
                        f" | {_fmt(r['wall_p99_ms'], 1)} | {r['errors']} | {r['http_version']} |",
                        flush=True,
                    )
    if "overhead" in only:
        print("\n| client | round | overhead p50 ms | overhead p90 ms | matched |")
        print("|---|---:|---:|---:|---:|")
        with stub_process(latency_ms=200.0) as url:
            for round_ in range(args.repeat):
                for client in ("legacy", "core_sync", "async"):
                    stub_admin(url, "reset")
                    stub_admin(url, "options", {"latency_ms": 200.0})
                    r = overhead(url, client, 30 if args.quick else 60)
                    print(
                        f"| {client} | {round_ + 1} | {_fmt(r['overhead_p50_ms'])} | {_fmt(r['overhead_p90_ms'])}"
                        f" | {r['matched']} |",
                        flush=True,
                    )
    if "tails" in only:
        print("\n| client | round | in flight | requests | p50 ms | p99 ms | hedges | errors |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        n = 600 if args.quick else 2000
        pooled: dict[str, list[float]] = {}
        for round_ in range(args.repeat):
            for client in ("legacy", "async_no_tails", "async"):
                with stub_process(**TAILS_STUB) as url:
                    r = tails(url, client, 50, n, offset=round_ * n, keep_walls=args.pooled)
                pooled.setdefault(client, []).extend(r.pop("walls_s", []))
                hedges = f"{r['hedges']} ({r['hedge_share'] * 100:.1f}%)" if "hedges" in r else "-"
                print(
                    f"| {client} | {round_ + 1} | {r['in_flight']} | {r['requests']} | {_fmt(r['wall_p50_ms'], 0)}"
                    f" | {_fmt(r['wall_p99_ms'], 0)} | {hedges} | {r['errors']} |",
                    flush=True,
                )
        if args.pooled:
            print("\n| client | rounds pooled | requests | p50 ms | p99 ms | p99 / legacy |")
            print("|---|---:|---:|---:|---:|---:|")
            legacy_p99 = percentile(pooled["legacy"], 0.99)
            for client, walls in pooled.items():
                p99 = percentile(walls, 0.99)
                print(
                    f"| {client} | {args.repeat} | {len(walls)} | {_fmt(percentile(walls, 0.5) * 1000.0, 0)}"
                    f" | {_fmt(p99 * 1000.0, 0)} | {p99 / legacy_p99:.3f} |"
                )


if __name__ == "__main__":
    main()
