"""Idle cost of ``codeagent run`` as shipped: wake-ups and CPU per second of a loop waiting for work.

For each loop (``--loop async`` and ``--loop legacy``, bridge and flag watcher
on, as the CLI wires them) this starts ``python -m codeagent_app.cli run -w WS
--loop LOOP`` on a workspace with no pending todo, lets it settle, and reads
every thread of the process over a window:

* wake-ups: ``voluntary_ctxt_switches + nonvoluntary_ctxt_switches`` summed over
  ``/proc/<pid>/task/*/status``;
* CPU: ``utime + stime`` of ``/proc/<pid>/stat`` (clock ticks, coarse) and the
  nanosecond figure of :func:`benchmarks.measure.cpu_and_wakeups` (schedstat);
* per thread (by name), the wake-ups, so that a waker can be named.

The LLM endpoint is a stub in another process (``--llm-url``), so its own
server threads are not counted; ``--embedded`` measures instead the default of
a workspace with no LLM configured, the stub started in-process. ``--todos N``
gives the workspace N todos and starts the window once they are committed
(then the settle time): idle after work, with the LLM connection pooled.

Run: ``python -m benchmarks.idle_wakeups [--seconds 10] [--settle 3] [--loop async] [--embedded]
[--todos N] [--json F]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from benchmarks.measure import REPO, child_env, cpu_and_wakeups
from benchmarks.scenarios import make_workspace
from llm_stub import StubOptions, start_stub_process, stop_stub_process

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Sample:
    """Counters of one process at one instant."""

    at: float
    cpu_ticks: int
    cpu_ns_seconds: float
    #: thread id -> (name, voluntary + nonvoluntary context switches)
    threads: dict[int, tuple[str, int]]

    @property
    def wakeups(self) -> int:
        """Context switches of every thread, both kinds."""
        return sum(n for _name, n in self.threads.values())


def sample(pid: int) -> Sample:
    """Read the process's counters now (Linux ``/proc``)."""
    at = time.monotonic()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    threads: dict[int, tuple[str, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text().splitlines()
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
        values = dict(line.split(":", 1) for line in status if ":" in line)
        switches = int(values["voluntary_ctxt_switches"]) + int(values["nonvoluntary_ctxt_switches"])
        threads[int(task.name)] = (values["Name"].strip(), switches)
    cpu_s, _voluntary = cpu_and_wakeups(psutil.Process(pid))
    return Sample(at, ticks, cpu_s, threads)


def window(pid: int, seconds: float) -> dict[str, Any]:
    """Wake-ups and CPU per second of process ``pid`` over ``seconds``, with the wakers named."""
    first = sample(pid)
    time.sleep(seconds)
    last = sample(pid)
    wall = last.at - first.at
    by_thread: dict[str, int] = {}
    for tid, (name, after) in last.threads.items():
        before = first.threads.get(tid, (name, 0))[1]
        if after - before:
            key = f"{name}[{tid}]"
            by_thread[key] = after - before
    return {
        "window_s": round(wall, 2),
        "wakeups": last.wakeups - first.wakeups,
        "wakeups_per_s": round((last.wakeups - first.wakeups) / wall, 2),
        "cpu_ms_per_s": round(1000 * (last.cpu_ns_seconds - first.cpu_ns_seconds) / wall, 4),
        "cpu_ms_per_s_stat_ticks": round(1000 * (last.cpu_ticks - first.cpu_ticks) / _TICKS / wall, 3),
        "threads": len(last.threads),
        "wakers": by_thread,
    }


def commits(workspace: Path) -> int:
    """How many commits the workspace's branch has."""
    done = subprocess.run(
        ["git", "rev-list", "--count", "HEAD"], cwd=workspace, capture_output=True, text=True, check=True
    )
    return int(done.stdout)


def wait_for_commits(workspace: Path, count: int, child: subprocess.Popen[str], timeout: float) -> None:
    """Wait until the workspace has ``count`` commits (the todos are done)."""
    deadline = time.monotonic() + timeout
    while commits(workspace) < count:
        if child.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the todos of {workspace} were not all committed")
        time.sleep(0.1)


def measure_loop(
    loop: str, workspace: Path, llm_url: str | None, *, settle: float, seconds: float, todos: int = 0
) -> dict[str, Any]:
    """Start ``codeagent run --loop LOOP`` on ``workspace``, measure an idle window, stop it with SIGTERM."""
    command = [sys.executable, "-m", "codeagent_app.cli", "run", "-w", str(workspace), "--loop", loop]
    if llm_url is not None:
        command += ["--llm-url", llm_url]
    child = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        if todos:
            wait_for_commits(workspace, todos + 1, child, timeout=60)
        time.sleep(settle)
        if child.poll() is not None:
            raise RuntimeError(f"{' '.join(command)} exited early: {child.communicate()[1][-2000:]}")
        figures = window(child.pid, seconds)
    finally:
        child.terminate()
        try:
            _out, err = child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            _out, err = child.communicate()
    figures["exit_code"] = child.returncode
    if child.returncode != 0:
        figures["stderr_tail"] = err[-2000:]
    return figures


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure the loops asked for; print (and optionally write) the figures as JSON."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window")
    parser.add_argument("--settle", type=float, default=3.0, help="wait this long after start")
    parser.add_argument("--loop", action="append", choices=("async", "legacy"), default=None)
    parser.add_argument("--embedded", action="store_true", help="no --llm-url: the in-process stub")
    parser.add_argument("--todos", type=int, default=0, help="todos to finish before the window")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    loops = args.loop or ["async", "legacy"]
    results: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    base = Path(tempfile.mkdtemp(prefix="idle-wakeups-"))
    stub: subprocess.Popen[str] | None = None
    url: str | None = None
    try:
        if not args.embedded:
            stub, url = start_stub_process(StubOptions())
        for loop in loops:
            root = base / loop
            make_workspace(root, args.todos)
            key = f"{loop}{'_embedded_stub' if args.embedded else ''}{'_after_work' if args.todos else ''}"
            results[key] = measure_loop(
                loop, root, url, settle=args.settle, seconds=args.seconds, todos=args.todos
            )
            print(json.dumps({key: results[key]}, indent=2), flush=True)
    finally:
        if stub is not None:
            stop_stub_process(stub)
        shutil.rmtree(base, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
