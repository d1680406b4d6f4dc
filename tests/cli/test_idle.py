"""``codeagent run`` waiting for work, as shipped: no wake-ups on the async loop, a flip still lands.

A real process per loop (bridge, flag watcher and health writer on, the LLM a
stub in the test process): once idle, every thread's context switches
(voluntary and involuntary, ``/proc/<pid>/task/*/status``) are read over a
window. The async loop must not wake at all; the legacy loop wakes for its
designed poll of the todo file (``poll_interval``, 1 s) and nothing else.
Then a flag is flipped with ``codeagent flags set`` while the loop is idle,
a todo is added, and the flipped component must have served it (its calls on
the new path show in the health file). SIGTERM must stop the loop promptly,
exit 0.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scenarios import make_workspace
from codeagent.models import TodoFile, dump_json
from feature_flags.health import read_health
from llm_stub import StubServer

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

CLI = [sys.executable, "-m", "codeagent_app.cli"]
SETTLE_S = 2.0
WINDOW_S = 3.0
POLL_INTERVAL_S = 1.0  # the legacy loop's default poll_interval


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    with StubServer() as server:
        yield server


def _idle_workspace(root: Path) -> Path:
    make_workspace(root, 1)  # f0.txt committed, and one todo we take away again
    (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=[])))
    return root


def _switches(pid: int) -> dict[int, int]:
    """Per thread: voluntary plus involuntary context switches so far."""
    counts: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            lines = (task / "status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        counts[int(task.name)] = int(fields["voluntary_ctxt_switches"]) + int(
            fields["nonvoluntary_ctxt_switches"]
        )
    return counts


def _agent(root: Path) -> dict[str, Any]:
    try:
        agent: dict[str, Any] = json.loads((root / ".agent/status.json").read_text())["agent"]
    except (OSError, ValueError, KeyError):
        return {}
    return agent


def _wait(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the loop exited with {proc.returncode}"
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _cli(*args: str) -> None:
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("loop", ["async", "legacy"])
def test_an_idle_loop_wakes_only_by_design_sees_a_flip_and_stops_on_sigterm(
    tmp_path: Path, stub: StubServer, loop: str
) -> None:
    root = _idle_workspace(tmp_path / "ws")
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, "run", "-w", str(root), "--loop", loop, "--llm-url", stub.url],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    stopped_in = math.inf
    try:
        _wait(lambda: _agent(root).get("state") == "idle", 60, proc)
        assert _agent(root)["loop"] == loop
        time.sleep(SETTLE_S)
        first = _switches(proc.pid)
        time.sleep(WINDOW_S)
        last = _switches(proc.pid)
        woke = {tid: n - first.get(tid, 0) for tid, n in last.items() if n != first.get(tid, 0)}
        # async: nothing at all. legacy: one wake-up per poll (two if the poll was preempted), one thread.
        budget = 0 if loop == "async" else 2 * math.ceil(WINDOW_S / POLL_INTERVAL_S) + 1
        assert sum(woke.values()) <= budget, f"wake-ups per thread over {WINDOW_S} s: {woke}"
        assert len(woke) <= (0 if loop == "async" else 1), woke

        _cli("flags", "set", "files=new", "-w", str(root), "--reason", "idle flip")
        time.sleep(1.0)  # a flip takes effect within a second; the todo below must see it
        _cli("todo", "add", 'append a line "line 0" to file f0.txt', "-f", "f0.txt", "-w", str(root))
        flags = root / ".agent/flags.toml"
        # Written by the health writer when the new path records outcomes (not only at exit).
        _wait(lambda: read_health(flags).get("files") is not None, 30, proc)
        assert read_health(flags)["files"].calls > 0
        _wait(lambda: _agent(root).get("processed") == 1, 30, proc)
    finally:
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
            stopped_in = time.monotonic() - started
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    assert stopped_in < 3.0
    assert "line 0" in (root / "f0.txt").read_text()
