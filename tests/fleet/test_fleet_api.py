"""Any node answers for the fleet: ``codeagent serve --queue DSN`` on two "hosts", a worker elsewhere.

Both nodes list every workspace's todos from the database; a todo posted to one
is drained by the worker and seen done on the other; ``/events`` numbers
events by the event log's ids, so the same event has the same number on both
nodes and ``?after=N`` replays the same tail; ``/metrics`` counts the fleet's
todos from the stream each node follows.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import websockets

from llm_stub import StubOptions, StubServer
from tests.fleet.test_fleet import _join, _wait, workers
from tests.kernel.workspaces import make_workspace, trailers

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def api_node(dsn: str, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeagent_app.cli", "serve", "--queue", dsn, "--port", "0"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        found = _wait(
            lambda: (
                re.search(r"API listening on (http://[0-9.:]+)", log.read_text(errors="replace"))
                or (proc.poll() is not None and AssertionError(log.read_text()))
            ),
            60,
            "the API node",
        )
        assert not isinstance(found, AssertionError), str(found)
        yield found.group(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _events(url: str, after: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with websockets.connect(url.replace("http://", "ws://") + f"/events?after={after}") as ws:
        assert json.loads(await ws.recv())["type"] == "stream.hello"
        while True:
            try:
                out.append(json.loads(await asyncio.wait_for(ws.recv(), 1.0)))
            except TimeoutError:
                return out


def _statuses(client: httpx.Client, name: str) -> dict[str, str]:
    return {t["id"]: t["status"] for t in client.get(f"/v1/workspaces/{name}/todos").json()["todos"]}


def test_two_api_nodes_answer_for_the_whole_fleet(tmp_path: Path, pg_dsn: str) -> None:
    roots = [tmp_path / "alpha", tmp_path / "beta"]
    for root in roots:
        make_workspace(root, 3, todos=[])
    _join(pg_dsn, roots, 3)
    with (
        StubServer(StubOptions(latency_ms=20)) as stub,
        api_node(pg_dsn, tmp_path / "node-a.log") as node_a,
        api_node(pg_dsn, tmp_path / "node-b.log") as node_b,
        httpx.Client(base_url=node_a, timeout=10) as a,
        httpx.Client(base_url=node_b, timeout=10) as b,
    ):
        assert [w["name"] for w in a.get("/v1/workspaces").json()["workspaces"]] == ["alpha", "beta"]
        assert _statuses(b, "beta") == {"t-0001": "pending", "t-0002": "pending", "t-0003": "pending"}
        with workers(pg_dsn, stub.url, 1, tmp_path / "logs"):
            _wait(
                lambda: all(set(_statuses(b, r.name).values()) == {"done"} for r in roots),
                60,
                "the first drains",
            )
            posted = a.post(
                "/v1/workspaces/beta/todos",
                json={"text": 'append a line "late" to file f1.txt', "files": ["f1.txt"]},
            )
            assert posted.status_code == 201, posted.text
            late = posted.json()["id"]
            _wait(
                lambda: _statuses(b, "beta").get(late) == "done",
                60,
                "the posted todo, seen on the other node",
            )
        seen_a = asyncio.run(_events(node_a, 0))
        seen_b = asyncio.run(_events(node_b, 0))
        done_a = {
            e["todo_id"]: e["seq"]
            for e in seen_a
            if e["type"] == "todo.done" and e.get("workspace") == "beta"
        }
        done_b = {
            e["todo_id"]: e["seq"]
            for e in seen_b
            if e["type"] == "todo.done" and e.get("workspace") == "beta"
        }
        assert done_a == done_b and late in done_a  # one numbering for the fleet
        middle = seen_b[len(seen_b) // 2]["seq"]
        assert [e["seq"] for e in asyncio.run(_events(node_a, middle))] == [
            e["seq"] for e in seen_b if e["seq"] > middle
        ]
        added = [e for e in seen_b if e["type"] == "todo.added" and e.get("todo_id") == late]
        assert len(added) == 1 and added[0]["source"] == "api"
        metrics = b.get("/metrics").text
        assert 'codeagent_todos_total{outcome="done",workspace="alpha"} 3.0' in metrics
        assert 'codeagent_todos_total{outcome="done",workspace="beta"} 4.0' in metrics
    assert sorted(trailers(roots[1])) == ["t-0001", "t-0002", "t-0003", "t-0004"]


def test_a_node_with_no_fleet_says_so(tmp_path: Path, pg_dsn: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", "serve", "--queue", pg_dsn, "--port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "no workspace has joined this fleet yet" in done.stderr
    # What a user sees: without the suite's asyncio debug mode, whose reports of slow steps (asyncio's
    # own 0.1 s threshold in a child process, easily passed on a busy machine) would go to stderr too.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONASYNCIODEBUG"}
    bad = subprocess.run(
        [sys.executable, "-m", "codeagent_app.cli", "queue", "status", "--queue", "postgresql://nobody@127.0.0.1:1/x"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("codeagent: error:") and bad.stderr.count("\n") <= 2
