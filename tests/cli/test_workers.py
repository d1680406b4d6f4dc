"""``--workers N``: the async loop in several processes, behind one supervisor and one port.

Real processes and signals: the shipped command line, the stub LLM over
loopback HTTP, real git workspaces. A worker killed with SIGKILL loses its
workspaces with its process, and the worker started in its place resumes them
from their checkpoints.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import make_workspace, trailers

REPO = Path(__file__).resolve().parents[2]


def _workspaces(tmp_path: Path, count: int, todos: int, config: str | None = None) -> list[Path]:
    roots = [tmp_path / f"ws{i}" for i in range(count)]
    for root in roots:
        make_workspace(root, todos, config=config)
    return roots


def _args(roots: list[Path]) -> list[str]:
    return [arg for root in roots for arg in ("-w", str(root))]


@contextmanager
def serving(
    roots: list[Path], url: str, *extra: str, log: Path, grace: float = 10
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``codeagent serve --loop async --workers 2`` on a free port; yields the process and the API's URL."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeagent_app.cli", "serve", "--loop", "async", "--workers", "2",
             *_args(roots), "--port", "0", "--llm-url", url, "--grace", str(grace), *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                found = re.search(r"API listening on (http://[0-9.:]+)", log.read_text(errors="replace"))
                if found:
                    break
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield proc, found.group(1)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _statuses(client: httpx.Client, root: Path) -> dict[str, str]:
    todos = client.get(f"/v1/workspaces/{root.name}/todos").json()["todos"]
    return {t["id"]: t["status"] for t in todos}


def _workers(client: httpx.Client) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = client.get("/v1/workers").json()["workers"]
    return workers


def _claimed(client: httpx.Client) -> list[dict[str, Any]] | None:
    """The workers, once every one of them has claimed its workspaces."""
    workers = _workers(client)
    return workers if all(w["workspaces"] for w in workers) else None


def _alive_processes(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def test_until_idle_shares_the_workspaces_among_the_workers(tmp_path: Path) -> None:
    roots = _workspaces(tmp_path, 4, 10)
    with StubServer(StubOptions(latency_ms=20)) as stub:
        done = subprocess.run(
            [sys.executable, "-m", "codeagent_app.cli", "run", "--loop", "async", "--workers", "2",
             *_args(roots), "--until-idle", "--llm-url", stub.url],
            cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "processed 40 todo(s)" in done.stdout
    pids = set()
    for root in roots:
        assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(10)]
        pids.add(json.loads((root / ".agent/status.json").read_text())["agent"]["pid"])
    assert len(pids) == 2  # two worker processes, each drove two workspaces


#: What the issue asks of a restart: the lost worker's workspaces resumed within 5 s of the SIGKILL.
RESUMED_WITHIN = 5.0


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_workspaces_resume_then_sigterm_drains(tmp_path: Path) -> None:
    todos = 12
    # Four todos at a time per workspace: a workspace cannot finish in the moment between its first
    # todo done and the SIGKILL, so the replacement always has todos (and checkpoints) to resume.
    roots = _workspaces(tmp_path, 4, todos, config='{"limits": {"per_workspace": 4}}')
    with (
        StubServer(StubOptions(latency_ms=300)) as stub,
        serving(roots, stub.url, log=tmp_path / "serve.log") as (
            proc,
            url,
        ),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        # The yardstick of this machine at this moment: workers started cold until every workspace
        # made progress (a replacement does the same, plus resuming from the checkpoints).
        up = time.monotonic()
        _wait(
            lambda: all("done" in _statuses(client, r).values() for r in roots),
            60,
            "progress in every workspace",
        )
        first_progress = time.monotonic() - up
        workers = _workers(client)
        victim = workers[0]
        lost = [Path(w) for w in victim["workspaces"]]
        assert len(lost) == 2 and all(w["alive"] for w in workers)
        os.kill(victim["pid"], signal.SIGKILL)
        killed = time.monotonic()
        # Progress is counted from when the supervisor has reaped the victim (its slot shows no live
        # process, or already the next one): a todo the victim finished between a snapshot and the
        # kill would otherwise count as the replacement's.
        _wait(
            lambda: not (w := _workers(client)[0])["alive"] or w["pid"] != victim["pid"],
            10,
            "the supervisor to notice the SIGKILL",
        )
        done_before = {r: {i for i, s in _statuses(client, r).items() if s == "done"} for r in lost}
        assert all(len(done) < todos for done in done_before.values()), done_before

        def resumed() -> bool:
            return all(
                {i for i, s in _statuses(client, r).items() if s == "done"} - done_before[r] for r in lost
            )

        _wait(resumed, 60, "the lost workspaces to make progress again")
        resumed_after = time.monotonic() - killed
        replaced = _workers(client)[0]
        assert replaced["pid"] != victim["pid"] and replaced["restarts"] == 1 and replaced["alive"]
        assert sorted(replaced["workspaces"]) == sorted(victim["workspaces"])
        _wait(
            lambda: all(set(_statuses(client, r).values()) == {"done"} for r in roots), 120, "every todo done"
        )
        pids = [w["pid"] for w in _workers(client)]
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=40)
        stopped_in = time.monotonic() - started
    log = (tmp_path / "serve.log").read_text()
    assert code == 0, log
    assert _alive_processes(pids) == []
    print(
        f"lost workspaces resumed {resumed_after:.2f} s after the SIGKILL (a cold start took"
        f" {first_progress:.2f} s to the first todos); SIGTERM drained in {stopped_in:.2f} s"
    )
    # Within 5 s, as asked; on a machine so busy that starting workers cold takes longer than that
    # already, within half as long again as that start took (the replacement is such a start).
    assert resumed_after <= max(RESUMED_WITHIN, 1.5 * first_progress)
    for root in roots:
        assert sorted(trailers(root)) == [f"t-{i + 1:04d}" for i in range(todos)]  # each exactly once
        for i in range(todos):
            assert (root / f"f{i}.txt").read_text() == f"file {i}\nline {i}\n"


def test_one_port_carries_every_workers_events_and_metrics(tmp_path: Path) -> None:
    roots = _workspaces(tmp_path, 2, 3)
    with (
        StubServer(StubOptions(latency_ms=20)) as stub,
        serving(roots, stub.url, log=tmp_path / "serve.log") as (
            proc,
            url,
        ),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        _wait(
            lambda: all(set(_statuses(client, r).values()) == {"done"} for r in roots), 60, "every todo done"
        )
        events = asyncio.run(_read_events(url, after=0))
        metrics = client.get("/metrics").text
        limits = client.get("/v1/limits").json()
        tail = asyncio.run(_read_events(url, after=events[-5]["seq"]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert {e["worker"] for e in events if e["type"] == "worker.claimed"} == {0, 1}
    for root in roots:
        mine = [e for e in events if e.get("workspace") == root.name]
        for todo in ("t-0001", "t-0002", "t-0003"):
            steps = [e.get("stage") or e["type"] for e in mine if e.get("todo_id") == todo]
            assert steps == [
                "todo.queued", "todo.started", "started", "answered", "edited", "committed", "todo.done"
            ], steps  # fmt: skip
    assert [e["seq"] for e in tail] == [e["seq"] for e in events[-4:]]  # ?after=N replays what came after N
    for root in roots:
        assert f'codeagent_todos_total{{outcome="done",workspace="{root.name}"}} 3.0' in metrics
    assert 'codeagent_event_loop{loop="uvloop"} 2.0' in metrics
    assert (
        limits["workers"] == 2
        and limits["limits"]["llm_slots"] == 256
        and limits["limits_are"] == "per worker process"
    )


async def _read_events(url: str, after: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with websockets.connect(url.replace("http://", "ws://") + f"/events?after={after}") as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "stream.hello"
        while True:
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 1.0))
            except TimeoutError:
                return out
            out.append(message)


def _gauge(text: str, name: str, resource: str) -> float:
    found = re.search(rf'^{name}{{resource="{resource}"}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.slow
def test_a_config_edit_of_llm_slots_under_load_takes_effect_without_a_restart(tmp_path: Path) -> None:
    roots = _workspaces(tmp_path, 4, 20, config='{"limits": {"llm_slots": 2}}')
    with (
        StubServer(StubOptions(latency_ms=1000)) as stub,
        # A short grace: the todos waiting for a slot at the SIGTERM are interrupted, not awaited.
        serving(roots, stub.url, log=tmp_path / "serve.log", grace=2) as (
            proc,
            url,
        ),
        httpx.Client(base_url=url, timeout=10) as client,
    ):
        claimed = _wait(lambda: _claimed(client), 30, "both workers' claims")
        pids = [w["pid"] for w in claimed]

        def llm_slots() -> tuple[float, float]:
            text = client.get("/metrics").text
            return (
                _gauge(text, "codeagent_resource_in_use", "llm_slots"),
                _gauge(text, "codeagent_resource_limit", "llm_slots"),
            )

        # The load is on once both workers use their slots (the gauges move as todos start and end,
        # so a worker still starting its kernel shows none for a while): then the ceiling is watched.
        def loaded() -> float | None:
            in_use, limit = llm_slots()
            return in_use if limit == 2.0 and in_use >= 3.0 else None

        before = [_wait(loaded, 30, "both workers at their 2 LLM slots")]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            in_use, limit = llm_slots()
            assert limit == 2.0
            before.append(in_use)
            time.sleep(0.1)
        (roots[0] / ".agent/config.json").write_text('{"limits": {"llm_slots": 6}}\n')
        after = _wait(
            lambda: (
                (t := client.get("/metrics").text)
                and _gauge(t, "codeagent_resource_limit", "llm_slots") == 6.0
                and _gauge(t, "codeagent_resource_in_use", "llm_slots") > 4.0
                and _gauge(t, "codeagent_resource_in_use", "llm_slots")
            ),
            20,
            "the new ceiling",
        )
        assert [w["pid"] for w in _workers(client)] == pids  # no worker was restarted
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    assert max(before) <= 4.0 and max(before) >= 3.0, before  # 2 slots in each of the 2 workers
    assert 4.0 < after <= 12.0
