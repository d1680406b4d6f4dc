"""The in-process contenders and probes, each run in a child process of its own (``python -m benchmarks.contenders``).

``python -m benchmarks.contenders KIND ARGS_JSON OUT_JSON`` runs one job and
writes its figures to ``OUT_JSON``. The suite waits for the child with
``os.wait4`` (its CPU figure is that of the whole process tree, see
:mod:`benchmarks.shipped`); the job itself stamps ``time.monotonic()`` at the
start and end of its working window (one machine-wide clock, see
:mod:`benchmarks.measure`).

The shipped loops (``codeagent run --loop legacy|async``) are not jobs here:
the suite runs the command itself. Jobs:

* ``legacy_threads``: the legacy components on a pool of ``threads`` threads,
  each calling ``LegacyAgent.process(todo)`` on todos from a shared queue
  (workspaces interleaved); git is behind one lock per repository (one git
  writer per repo), the stores keep their ``flock`` read-modify-write. Not a
  shipped command: what a team would build instead of the migration.
* ``bare_kernel``: ``core_async.kernel`` over every workspace on uvloop (or the
  default asyncio loop), no bridge, limits set to the concurrency, with a
  :class:`~benchmarks.measure.LagTicker` sampling event-loop lag meanwhile: the
  previous suite's async contender, kept as a reference line.
* ``idle_bare_kernel``: the bare kernel waiting for work until terminated.
* probes of the LLM clients alone: ``latency_legacy`` / ``latency_async``
  (client-seen time minus the stub's own time per request, matched by the
  stub's ``x-request-id``) and ``inflight`` (how many requests the async
  client holds in flight at once, and the memory each costs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.measure import LagTicker, own_cpu_seconds, percentiles, rss_bytes

Args = dict[str, Any]


def _quiet_logging() -> None:
    """The same log level for every contender (WARNING), so no side pays for log lines the other skips."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


def _outcome(roots: Sequence[str]) -> dict[str, int]:
    """How many todos of ``roots`` are done / failed / other, from their status files."""
    from legacy.status import StatusStore

    counts = {"done": 0, "failed": 0, "other": 0}
    for root in roots:
        for state in StatusStore(Path(root)).load().todos.values():
            key = state.status.value if state.status.value in counts else "other"
            counts[key] += 1
    return counts


class _Window:
    """The working window of a job: monotonic instants and CPU seconds at its start and end."""

    def __init__(self) -> None:
        self.cpu0 = own_cpu_seconds()
        self.t0 = time.monotonic()
        self.t1 = self.t0
        self.cpu1 = self.cpu0

    def close(self) -> dict[str, float]:
        self.t1 = time.monotonic()
        self.cpu1 = own_cpu_seconds()
        return {"started": self.t0, "ended": self.t1, "cpu_s": self.cpu1 - self.cpu0}


# --------------------------------------------------------------------------- throughput jobs


class _LockedGit:
    """A legacy :class:`~legacy.git.GitRepo` behind one lock: one git writer per repository."""

    def __init__(self, git: Any, lock: threading.Lock) -> None:
        self._git = git
        self._lock = lock

    def ensure_repo(self) -> None:
        with self._lock:
            self._git.ensure_repo()

    def head(self) -> str | None:
        with self._lock:
            result: str | None = self._git.head()
            return result

    def find_commit(self, todo_id: str) -> str | None:
        with self._lock:
            result: str | None = self._git.find_commit(todo_id)
            return result

    def commit(self, message: str, paths: Sequence[str]) -> str:
        with self._lock:
            result: str = self._git.commit(message, paths)
            return result


def legacy_threads(args: Args) -> dict[str, Any]:
    """The legacy components driven by a thread pool of ``threads`` workers."""
    from benchmarks.plain import legacy_agent as build_agent
    from codeagent.models import pending_todos

    agents = [build_agent(Path(root), args["url"]) for root in args["roots"]]
    for agent in agents:
        agent.git = _LockedGit(agent.git, threading.Lock())
    window = _Window()
    per_agent = [
        [(agent, todo) for todo in pending_todos(agent.todos.load(), agent.status.load())] for agent in agents
    ]
    work: queue.SimpleQueue[tuple[Any, Any]] = queue.SimpleQueue()
    for rank in range(max((len(items) for items in per_agent), default=0)):
        for items in per_agent:
            if rank < len(items):
                work.put(items[rank])
    errors: list[str] = []

    def worker() -> None:
        while True:
            try:
                agent, todo = work.get_nowait()
            except queue.Empty:
                return
            try:
                agent.process(todo)
            except Exception as exc:  # recorded, the pool goes on (as the loop would)
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(int(args["threads"]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = window.close()
    for agent in agents:
        agent.close()
    return {
        **figures,
        "processed": sum(a.processed for a in agents),
        "errors": errors[:10],
        **_outcome(args["roots"]),
    }


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop]:
    if use_uvloop:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return asyncio.new_event_loop


def _kernel_options(concurrency: int, workspaces: int, *, signals: bool) -> Any:
    """The bare kernel's options: the same limits the shipped async contenders get on their command line."""
    from benchmarks.shipped import async_limits
    from core_async.kernel.limits import ResourceLimits
    from core_async.kernel.server_core import KernelOptions

    limits = ResourceLimits(**async_limits(concurrency, workspaces))
    return KernelOptions(limits=limits, install_signal_handlers=signals, grace_seconds=5.0)


def bare_kernel(args: Args) -> dict[str, Any]:
    """The bare async kernel over every workspace, with an event-loop lag ticker running alongside."""
    from core_async.kernel.server_core import AsyncServerCore

    roots = [Path(root) for root in args["roots"]]
    options = _kernel_options(int(args["concurrency"]), len(roots), signals=False)

    async def main() -> dict[str, Any]:
        # The window opens once the kernel is built, as the legacy contenders' opens once
        # their agents are: both measure working through the todos, not starting up.
        core = AsyncServerCore(roots, llm_url=args["url"], options=options, until_idle=True)
        try:
            await core.start()
            ticker = LagTicker(0.01)
            ticker.start()
            window = _Window()
            processed = await core.run_main_loop()
            figures = window.close()
            lag = await ticker.stop()
        finally:
            await core.handle_shutdown()
        return {**figures, "processed": processed, "loop_lag_ms": lag}

    with asyncio.Runner(loop_factory=_loop_factory(bool(args.get("uvloop", True)))) as runner:
        result = runner.run(main())
    return {**result, **_outcome(args["roots"])}


# --------------------------------------------------------------------------- idle jobs (run until terminated)


def idle_bare_kernel(args: Args) -> dict[str, Any]:
    """The bare async kernel with nothing to do (it wakes on file-system events only); SIGTERM stops it."""
    from core_async.kernel.entry import run_kernel

    options = _kernel_options(int(args.get("concurrency", 64)), 1, signals=True)
    with asyncio.Runner(loop_factory=_loop_factory(bool(args.get("uvloop", True)))) as runner:
        runner.run(run_kernel([Path(args["root"])], llm_url=args["url"], options=options))
    return {}


# --------------------------------------------------------------------------- LLM client probes


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f'append a line "probe {i}" to file f{i}.txt'}]


def _stub_durations(url: str, n: int) -> dict[int, float]:
    """The stub's own time (ms) of its last ``n`` chat requests, by sequence number."""
    origin = url.rsplit("/v1", 1)[0]
    stats = httpx.get(f"{origin}/_stub/stats", params={"recent": n}, timeout=30).json()
    return {
        int(r["seq"]): float(r["duration_ms"])
        for r in stats["recent"]
        if r["duration_ms"] is not None and r["path"].endswith("/chat/completions")
    }


def _stub_reset(url: str) -> None:
    origin = url.rsplit("/v1", 1)[0]
    httpx.post(f"{origin}/_stub/reset", timeout=30).raise_for_status()


def _overheads(samples: list[tuple[str, float]], url: str) -> dict[str, Any]:
    """Client-seen ms per request, the stub's own ms, and their difference, matched by request id."""
    stub = _stub_durations(url, len(samples) + 10)
    client_ms: list[float] = []
    stub_ms: list[float] = []
    for request_id, seen in samples:
        seq = int(request_id.rsplit("_", 1)[-1]) if request_id else -1
        if seq in stub:
            client_ms.append(seen)
            stub_ms.append(stub[seq])
    overhead = [c - s for c, s in zip(client_ms, stub_ms, strict=True)]
    return {
        "matched": len(overhead),
        "requests": len(samples),
        "client_ms": percentiles(client_ms),
        "stub_ms": percentiles(stub_ms),
        "overhead_ms": percentiles(overhead),
        "overhead_samples_ms": [round(x, 3) for x in overhead],
    }


def latency_legacy(args: Args) -> dict[str, Any]:
    """The legacy ``LLMClient`` (httpx.Client, HTTP/1.1): ``n`` chats from ``concurrency`` threads."""
    from legacy.llm import LLMClient

    url, n, concurrency = args["url"], int(args["n"]), int(args["concurrency"])
    client = LLMClient(url, "sk-bench", "stub-coder", timeout=60.0, max_retries=0)
    ids: dict[int, str] = {}

    def hook(response: httpx.Response) -> None:
        ids[threading.get_ident()] = response.headers.get("x-request-id", "")

    client._client.event_hooks["response"].append(hook)
    for i in range(min(concurrency, 8)):  # warm the connections
        client.chat(_messages(i))
    _stub_reset(url)
    samples: list[tuple[str, float]] = []
    lock = threading.Lock()
    todo = iter(range(n))

    def worker() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            t0 = time.perf_counter()
            client.chat(_messages(i))
            seen = (time.perf_counter() - t0) * 1000.0
            with lock:
                samples.append((ids.get(threading.get_ident(), ""), seen))

    window = _Window()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = window.close()
    client.close()
    return {**figures, **_overheads(samples, url)}


def latency_async(args: Args) -> dict[str, Any]:
    """The async ``AsyncLLMClient``: ``n`` chats from ``concurrency`` tasks.

    ``http`` is the client's transport: ``auto`` (its default: HTTP/1.1 on aiohttp), ``http1``
    (HTTP/1.1 on httpcore) or ``http2``.
    """
    from core_async.llm import AsyncLLMClient
    from core_async.llm_wire import AsyncAnswer

    url, n, concurrency = args["url"], int(args["n"]), int(args["concurrency"])
    http_version = str(args.get("http", "auto"))

    async def main() -> dict[str, Any]:
        async with AsyncLLMClient(
            url, "sk-bench", "stub-coder", timeout=60.0, max_retries=0, http_version=http_version
        ) as client:
            ids: dict[int, str] = {}

            def hook(response: AsyncAnswer) -> None:
                ids[id(asyncio.current_task())] = response.headers.get("x-request-id", "")

            await client.chat(_messages(0))  # opens the endpoint (and probes h2)
            for endpoint in client.pool.endpoints():
                endpoint.on_response.append(hook)
            await asyncio.gather(*(client.chat(_messages(i)) for i in range(min(concurrency, 8))))
            await asyncio.to_thread(_stub_reset, url)
            samples: list[tuple[str, float]] = []
            todo = iter(range(n))

            async def worker() -> None:
                for i in todo:
                    t0 = time.perf_counter()
                    await client.chat(_messages(i))
                    seen = (time.perf_counter() - t0) * 1000.0
                    samples.append((ids.get(id(asyncio.current_task()), ""), seen))

            window = _Window()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            figures = window.close()
            http = client.pool.endpoints()[0].http_version if client.pool.endpoints() else "?"
        return {**figures, "http_version": http, **await asyncio.to_thread(_overheads, samples, url)}

    with asyncio.Runner(loop_factory=_loop_factory(bool(args.get("uvloop", True)))) as runner:
        return runner.run(main())


def inflight(args: Args) -> dict[str, Any]:
    """Hold ``n`` LLM requests in flight at once through the async client; count errors and memory.

    ``transport`` is ``auto`` (the client's default: HTTP/1.1 on aiohttp, one
    connection per request in flight) or ``http2``. httpcore carries at most
    100 streams per HTTP/2 connection (its local ``MAX_CONCURRENT_STREAMS``)
    and opens no second connection to an origin while the first is usable, so
    one HTTP/2 pool holds 100 requests at most: with ``pools > 1`` the requests
    are spread round robin over that many clients, each with its own pool.
    """
    import resource

    from core_async.llm import AsyncLLMClient
    from core_async.llm_transport import AsyncEndpointPool, HTTPVersion, PoolLimits

    url, n, pools = args["url"], int(args["n"]), max(1, int(args.get("pools", 1)))
    transport = HTTPVersion(str(args.get("transport", "http2")))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1024)), hard))  # a socket each

    async def main() -> dict[str, Any]:
        per_pool = max(100, math.ceil(n / pools))
        limits = PoolLimits(
            http2_streams=per_pool, http2_connections=1, http1_connections=max(1024, per_pool)
        )
        endpoint_pools = [AsyncEndpointPool(transport, limits=limits) for _ in range(pools)]
        clients = [
            AsyncLLMClient(url, "sk-bench", "stub-coder", timeout=300.0, max_retries=0, pool=pool)
            for pool in endpoint_pools
        ]
        try:
            await asyncio.gather(*(client.chat(_messages(0)) for client in clients))
            await asyncio.to_thread(_stub_reset, url)
            base_rss = rss_bytes()
            peak = base_rss
            in_flight = 0
            most = 0

            async def one(i: int) -> None:
                nonlocal in_flight, most
                in_flight += 1
                most = max(most, in_flight)
                try:
                    await clients[i % pools].chat(_messages(i))
                finally:
                    in_flight -= 1

            async def sample() -> None:
                nonlocal peak
                while True:
                    peak = max(peak, rss_bytes())
                    await asyncio.sleep(0.05)

            sampler = asyncio.get_running_loop().create_task(sample())
            window = _Window()
            results = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
            figures = window.close()
            sampler.cancel()
            peak = max(peak, rss_bytes())
            errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
            origin = url.rsplit("/v1", 1)[0]
            stats = (await asyncio.to_thread(httpx.get, f"{origin}/_stub/stats", params={"recent": 0})).json()
            endpoints = [e for pool in endpoint_pools for e in pool.endpoints()]
            http = endpoints[0].http_version if endpoints else "?"
            conns = sum(e.connections_opened for e in endpoints)
        finally:
            for pool in endpoint_pools:
                await pool.aclose()
        held = int(stats["max_in_flight"])
        return {
            **figures,
            "requested": n,
            "pools": pools,
            "ok": n - len(errors),
            "errors": len(errors),
            "error_samples": errors[:5],
            "client_max_in_flight": most,
            "stub_max_in_flight": held,
            "rss_base_bytes": base_rss,
            "rss_peak_bytes": peak,
            "bytes_per_in_flight": (peak - base_rss) / max(1, held),
            "http_version": http,
            "connections": conns,
        }

    with asyncio.Runner(loop_factory=_loop_factory(True)) as runner:
        return runner.run(main())


JOBS: dict[str, Callable[[Args], dict[str, Any]]] = {
    "legacy_threads": legacy_threads,
    "bare_kernel": bare_kernel,
    "idle_bare_kernel": idle_bare_kernel,
    "latency_legacy": latency_legacy,
    "latency_async": latency_async,
    "inflight": inflight,
}


def main(argv: Sequence[str]) -> int:
    """``KIND ARGS_JSON OUT_JSON``: run one job, write its figures."""
    kind, raw, out = argv
    _quiet_logging()
    result = JOBS[kind](json.loads(raw))
    Path(out).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
