"""The API under abuse: tokens, oversized bodies, idle connections and a burst, while the agent works.

Each server (``codeagent serve --loop legacy|async``, ``api.token`` set) works
through a workspace of todos while the campaign:

* calls every route (and the WebSocket ``/events``) without a token, with a
  wrong one and with an empty one: each must be refused (401, the WebSocket
  closed), ``/health`` excepted;
* sends bodies over the 1 MB limit (declared, and streamed without a length):
  a clear 4xx;
* holds :attr:`~codeagent_app.chaos.runner.Sizes.idle_connections` idle TCP
  connections open: the server must go on answering and the agent finishing todos;
* measures the service rate (one client, one request at a time), then sends
  requests at ten times that rate for a few seconds: every answer must be a
  200, a 4xx or a 503 with the error shape, none may hang, the server's RSS
  must stay bounded, and the agent must go on finishing todos meanwhile.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace
from llm_stub import StubOptions

TOKEN = "chaos-token"
ROUTES = [
    ("GET", "/todos"),
    ("POST", "/todos"),
    ("GET", "/todos/t-00001"),
    ("POST", "/todos/t-00001/retry"),
    ("POST", "/todos/t-00001/cancel"),
    ("GET", "/status"),
    ("GET", "/checkpoints/t-00001"),
    ("GET", "/flags"),
    ("PUT", "/flags/llm"),
    ("GET", "/ui/api/state"),
    ("POST", "/ui/flags"),
]
ASYNC_ROUTES = [
    ("GET", "/metrics"),
    ("GET", "/v1/todos"),
    ("GET", "/v1/workspaces"),
    ("GET", "/v1/limits"),
    ("GET", "/v1/workspaces/ws/status"),
]
#: What the burst asks for: costly to answer (the whole todo list and status are read), small to read.
BURST_PATH = "/todos/t-00001"
#: Under the burst every answer (a 200 or a 503) must come within this long (the client's timeout: the
#: burst's client shares the machine's cores with the server, so latency measures both).
MAX_LATENCY_S = 30.0
BAD_TOKENS = {
    "none": None,
    "wrong": "Bearer not-the-token",
    "empty": "Bearer ",
    "bare": "Bearer",
    "basic": "Basic eA==",
}


def _request(
    base: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes, dict[str, str]]:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"content-type": "application/json", **(headers or {})})
        answer = conn.getresponse()
        return answer.status, answer.read(), {k.lower(): v for k, v in answer.getheaders()}
    finally:
        conn.close()


def _shape_ok(status: int, raw: bytes) -> bool:
    try:
        error = json.loads(raw).get("error")
    except (ValueError, AttributeError):
        return False
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


def tokens(base: str, loop: str) -> dict[str, Any]:
    """Every route with every bad token: refused; ``/health`` open."""
    routes = ROUTES + (ASYNC_ROUTES if loop == "async" else [])
    let_in: list[str] = []
    checked = 0
    for method, path in routes:
        for name, value in BAD_TOKENS.items():
            status, raw, _ = _request(base, method, path, b"{}", {"authorization": value} if value else {})
            checked += 1
            if status != 401 or (not path.startswith("/ui") and not _shape_ok(status, raw)):
                let_in.append(f"{method} {path} with {name} token: {status} {raw[:80]!r}")
    health = _request(base, "GET", "/health")[0]
    socket_refusals = websocket_refusals(base) if loop == "async" else {}
    let_in += [
        f"WebSocket /events with {n} token: {r}"
        for n, r in socket_refusals.items()
        if r != ("accepted" if n == "right token" else "refused")
    ]
    return {
        "requests": checked,
        "health_without_token": health,
        "websocket": socket_refusals,
        "let_in": let_in,
    }


def websocket_refusals(base: str) -> dict[str, str]:
    """``/events`` with each bad token (header and ``?token=``), and with the right one."""
    import asyncio

    import websockets

    async def attempt(headers: dict[str, str], query: str = "") -> str:
        try:
            async with websockets.connect(
                base.replace("http", "ws") + "/events" + query, additional_headers=headers, open_timeout=10
            ) as conn:
                first = json.loads(await asyncio.wait_for(conn.recv(), 10))
                return "accepted" if first.get("type") == "stream.hello" else f"odd first message {first}"
        except websockets.exceptions.ConnectionClosed as closed:
            return "refused" if closed.rcvd and closed.rcvd.code == 1008 else f"closed {closed}"
        except websockets.exceptions.InvalidStatus as status:
            return (
                "refused"
                if status.response.status_code in (401, 403)
                else f"status {status.response.status_code}"
            )

    async def all_of() -> dict[str, str]:
        out = {name: await attempt({"authorization": v} if v else {}) for name, v in BAD_TOKENS.items()}
        out["query wrong"] = await attempt({}, "?token=nope")
        out["query empty"] = await attempt({}, "?token=")
        out["right token"] = await attempt({"authorization": f"Bearer {TOKEN}"})
        return out

    return asyncio.run(all_of(), debug=False)


def oversized(base: str) -> dict[str, Any]:
    """Bodies over the limit, declared and streamed: a clear 4xx each."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    big = b'{"text": "' + b"x" * 1_100_000 + b'"}'
    host, port = base.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        try:
            conn.request("POST", "/todos", body=big, headers={**auth, "content-type": "application/json"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read: its answer may still be there
        try:
            answer = conn.getresponse()
            declared: tuple[int, bytes] = (answer.status, answer.read())
        except (ConnectionError, http.client.HTTPException) as exc:
            declared = (0, f"connection dropped: {exc}".encode())
    finally:
        conn.close()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/todos")
        for key, value in {
            **auth,
            "content-type": "application/json",
            "transfer-encoding": "chunked",
        }.items():
            conn.putheader(key, value)
        conn.endheaders()
        try:
            for _ in range(20):
                chunk = b"y" * 100_000
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
            answer = conn.getresponse()
            streamed: tuple[int, bytes] = (answer.status, answer.read())
        except (ConnectionError, http.client.HTTPException) as exc:
            streamed = (0, f"connection dropped: {exc}".encode())
    finally:
        conn.close()
    problems = []
    if not (400 <= declared[0] < 500 and _shape_ok(*declared)):
        problems.append(f"a declared 1.1 MB body: {declared[0]} {declared[1][:80]!r}")
    if not (400 <= streamed[0] < 500 or streamed[0] == 0):
        problems.append(f"a streamed 2 MB body: {streamed[0]} {streamed[1][:80]!r}")
    return {"declared": declared[0], "streamed": streamed[0], "problems": problems}


def idle(base: str, root: Path, count: int, pid: int, hold: float) -> dict[str, Any]:
    """Hold ``count`` idle connections; the server must answer and the agent progress meanwhile."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    opened: list[socket.socket] = []
    failed = 0
    done_before = checks.status_counts(root).get("done", 0)
    for _ in range(count):
        try:
            opened.append(socket.create_connection((host, int(port)), timeout=5))
        except OSError:
            failed += 1
    started = time.monotonic()
    try:
        health = _request(base, "GET", "/health", timeout=15)[0]
    except OSError as exc:
        health = f"no answer: {exc}"  # type: ignore[assignment]
    answered_in = time.monotonic() - started
    time.sleep(hold)
    during = procs.sample(pid, 0)
    still_open = 0
    for sock in opened:
        try:
            sock.setblocking(False)
            still_open += 1 if sock.recv(1) else 0
        except BlockingIOError:
            still_open += 1
        except OSError:
            pass
        finally:
            sock.close()
    progressed = checks.status_counts(root).get("done", 0) - done_before
    return {
        "opened": len(opened),
        "refused_to_open": failed,
        "health_while_held": health,
        "health_seconds": round(answered_in, 3),
        "held_s": hold,
        "still_open_after_hold": still_open,
        "server_threads": during.threads if during else None,
        "server_rss_kb": during.rss_kb if during else None,
        "todos_done_meanwhile": progressed,
    }


async def _fire(
    host: str, port: int, request: bytes, rate: float, seconds: float
) -> list[tuple[str, float, bytes]]:
    """Open-loop load: a request every ``1/rate`` s for ``seconds``, each on its own connection.

    A latency counts from the moment the request was due, so a server that
    falls behind shows it; ``error:...`` is a request that got no answer.
    """
    results: list[tuple[str, float, bytes]] = []

    async def one(due: float) -> None:
        try:
            async with asyncio.timeout(MAX_LATENCY_S):
                reader, writer = await asyncio.open_connection(host, port)
                try:
                    writer.write(request)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = head.split(b" ", 2)[1].decode()
                    length = 0
                    for line in head.lower().split(b"\r\n"):
                        if line.startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    body = await reader.readexactly(length) if length else b""
                finally:
                    writer.close()
            results.append((status, time.monotonic() - due, body))
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            results.append((f"error:{type(exc).__name__}", time.monotonic() - due, b""))

    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    return results


def burst(base: str, root: Path, pid: int, seconds: float) -> dict[str, Any]:
    """Requests at ten times the service rate: statuses, shapes, latency, RSS, the agent's progress."""
    auth = {"authorization": f"Bearer {TOKEN}"}
    started = time.monotonic()
    served = 0
    while time.monotonic() - started < min(2.0, seconds / 2):
        _request(base, "GET", BURST_PATH, headers=auth)
        served += 1
    rate = served / (time.monotonic() - started)
    target = rate * 10
    before = procs.sample(pid, 0)
    done_before = checks.status_counts(root).get("done", 0)
    host, port = base.removeprefix("http://").rsplit(":", 1)
    request = (
        f"GET {BURST_PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    peak_rss = before.rss_kb if before else 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak_rss
        while not stop.wait(0.05):
            sample = procs.sample(pid, 0)
            peak_rss = max(peak_rss, sample.rss_kb if sample else 0)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results = asyncio.run(
            _fire(host, int(port), request, target, seconds), debug=False
        )  # a load generator
    finally:
        stop.set()
        watcher.join()
    after = procs.sample(pid, 0)
    statuses = Counter(status for status, _, _ in results)
    bad_shape = [
        f"{status} {body[:60]!r}"
        for status, _, body in results
        if status.isdigit() and int(status) >= 400 and not _shape_ok(int(status), body)
    ]
    latencies = sorted(latency for _, latency, _ in results)
    return {
        "service_rate_per_s": round(rate, 1),
        "offered_rate_per_s": round(target, 1),
        "requests": len(results),
        "statuses": dict(statuses),
        "bad_error_shapes": bad_shape[:5],
        "latency_p50_s": round(latencies[len(latencies) // 2], 3) if latencies else None,
        "latency_p99_s": round(latencies[int(len(latencies) * 0.99)], 3) if latencies else None,
        "latency_max_s": round(latencies[-1], 3) if latencies else None,
        "rss_kb_before": before.rss_kb if before else None,
        "rss_kb_peak": peak_rss,
        "rss_kb_after": after.rss_kb if after else None,
        "shed_503": statuses.get("503", 0),
        "todos_done_meanwhile": checks.status_counts(root).get("done", 0) - done_before,
    }


def one_server(ctx: Context, loop: str, url: str) -> dict[str, Any]:
    """Every abuse against one served loop."""
    root = ctx.work / f"api-{loop}"
    load = Workload(600 if ctx.quick else 3000)  # more than get done: the agent works throughout
    make_workspace(root, [load], config={**fast_config(), "api": {"token": TOKEN}})
    steady = ["--max-concurrency", "4"] if loop == "async" else []  # about the legacy loop's pace
    served = procs.start_serving(
        procs.codeagent(
            "serve", "--loop", loop, "-w", str(root), "--port", "0", "--llm-url", url, "--grace", "2", *steady
        ),
        ctx.work / f"api-{loop}.log",
    )
    result: dict[str, Any] = {}
    took: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        took[name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    lap("start")
    try:
        result["tokens"] = tokens(served.url, loop)
        lap("tokens")
        result["oversized"] = oversized(served.url)
        lap("oversized")
        result["idle"] = idle(
            served.url, root, ctx.sizes.idle_connections, served.proc.pid, 1.0 if ctx.quick else 5.0
        )
        lap("idle")
        result["burst"] = burst(served.url, root, served.proc.pid, 2.0 if ctx.quick else 15.0)
        lap("burst")
        result["health_after"] = _request(served.url, "GET", "/health")[0]
    finally:
        result["exit_code"] = procs.stop_serving(served)
        lap("stop")
        result["phase_seconds"] = took
    problems = list(result["tokens"]["let_in"]) + result["oversized"]["problems"]
    if result["tokens"]["health_without_token"] != 200:
        problems.append(f"/health without a token: {result['tokens']['health_without_token']}")
    i = result["idle"]
    if i["health_while_held"] != 200 or i["health_seconds"] > 5:
        problems.append(
            f"with {i['opened']} idle connections /health answered {i['health_while_held']} in {i['health_seconds']}s"
        )
    if i["todos_done_meanwhile"] <= 0:
        problems.append(f"no todo finished while {i['opened']} idle connections were held")
    b = result["burst"]
    odd = {k: v for k, v in b["statuses"].items() if not (k in ("200", "503") or k.startswith("4"))}
    if odd:
        problems.append(f"burst at 10x the service rate: answers {odd} (only 200, 4xx, 503 are clear)")
    problems += [f"burst: error without the shape: {s}" for s in b["bad_error_shapes"]]
    if b["latency_max_s"] is not None and b["latency_max_s"] > MAX_LATENCY_S:
        problems.append(
            f"burst: an answer took {b['latency_max_s']} s (clear answers come within {MAX_LATENCY_S} s)"
        )
    if b["rss_kb_before"] and b["rss_kb_peak"] > b["rss_kb_before"] + 200_000:
        problems.append(f"burst: RSS grew from {b['rss_kb_before']} to {b['rss_kb_peak']} KiB")
    if b["todos_done_meanwhile"] <= 0:
        problems.append("no todo finished during the burst")
    if result.get("health_after") != 200:
        problems.append(f"/health after the abuse: {result.get('health_after')}")
    if result["exit_code"] != 0:
        problems.append(f"serve exited {result['exit_code']} on SIGTERM")
    return {**result, "ok": not problems, "problems": problems}


def run(ctx: Context) -> dict[str, Any]:
    """Both servers."""
    parts: dict[str, Any] = {}
    with procs.stub(StubOptions(latency_ms=100.0, seed=ctx.seed)) as stub:
        for loop in ("legacy", "async"):
            parts[loop] = one_server(ctx, loop, stub.url)
            ctx.load.tick()
    return {
        "ok": all(p["ok"] for p in parts.values()),
        **parts,
        "problems": [f"{loop}: {p}" for loop, part in parts.items() for p in part["problems"]][:30],
    }
