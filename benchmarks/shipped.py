"""The shipped commands the suite measures, and how it runs every contender: child processes it waits for.

Each contender is a list of *slots* run at once; a slot is a list of command
lines run one after another (the legacy loop at c < W: one slot per process it
may run at once, going through its share of the workspaces). Each process
starts in a session of its own (so that a timeout can end its whole tree), and
the suite collects it with ``os.wait4``: its CPU figure is the ``rusage`` of
the process and of every descendant it waited for (git, the async loop's
worker processes), i.e. the whole process tree, start-up and shut-down
included.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.measure import REPO, child_env


def codeagent(*args: str) -> list[str]:
    """``python -m codeagent_app.cli ARGS``: the ``codeagent`` command as shipped, in a child process."""
    return [sys.executable, "-m", "codeagent_app.cli", *args]


@cache
def run_options() -> frozenset[str]:
    """The long options ``codeagent run`` accepts at this commit (read from its ``--help``)."""
    done = subprocess.run(
        codeagent("run", "--help"),
        cwd=REPO,
        env={**child_env(), "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    words = done.stdout.replace("│", " ").replace(",", " ").split()
    return frozenset(w for w in words if w.startswith("--"))


def supports_workers() -> bool:
    """Whether ``codeagent run`` has ``--workers`` at this commit."""
    return "--workers" in run_options()


def async_limits(concurrency: int, workspaces: int) -> dict[str, int]:
    """The async loop's limits at concurrency ``c``: the same for ``--workers 1``, ``--workers N`` and the kernel.

    ``per_workspace = ceil(c / W)`` bounds the whole set to ``W * ceil(c / W)``
    todos at once however many workers share the workspaces; each worker also
    has ``max_concurrency = c``.
    """
    return {
        "max_concurrency": concurrency,
        "per_workspace": max(1, math.ceil(concurrency / workspaces)),
        "llm_slots": concurrency,
        "file_slots": max(64, concurrency),
    }


def legacy_command(root: Path, *, until_idle: bool = True) -> list[str]:
    """``codeagent run --loop legacy -w ROOT [--until-idle]`` (the URL comes from the workspace's config)."""
    return codeagent("run", "--loop", "legacy", "-w", str(root), *(["--until-idle"] if until_idle else []))


def async_command(
    roots: Sequence[Path],
    *,
    workers: int | None,
    limits: dict[str, int] | None = None,
    until_idle: bool = True,
) -> list[str]:
    """``codeagent run --loop async [--workers N] -w ROOT ... [--until-idle] [limits]``.

    ``workers=None`` leaves the option out (the shipped default); so does
    ``workers=1`` when this commit has no ``--workers`` yet (one process is what it runs).
    """
    args = ["run", "--loop", "async"]
    if workers is not None and (workers != 1 or supports_workers()):
        args += ["--workers", str(workers)]
    for root in roots:
        args += ["-w", str(root)]
    if until_idle:
        args.append("--until-idle")
    for name, value in (limits or {}).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return codeagent(*args)


def job_command(kind: str, args: dict[str, Any], out: Path) -> list[str]:
    """One job of :mod:`benchmarks.contenders` in a child process."""
    return [sys.executable, "-m", "benchmarks.contenders", kind, json.dumps(args), str(out)]


@dataclass
class Finished:
    """One child process the suite waited for."""

    command: list[str]
    started: float
    ended: float
    started_wall: float
    exit_code: int
    #: ``rusage`` of the process and of every descendant it waited for (user + system seconds)
    cpu_s: float
    stdout: str
    stderr_tail: str
    timed_out: bool = False

    def view(self) -> dict[str, Any]:
        """A JSON-ready dict (without the output)."""
        return {
            "command": short_command(self.command),
            "started": self.started,
            "ended": self.ended,
            "exit_code": self.exit_code,
            "cpu_s": self.cpu_s,
            "timed_out": self.timed_out,
        }


def short_command(command: Sequence[str]) -> str:
    """The command line as a person would type it: ``codeagent`` for the module, paths shortened to
    their last part, a run of more than two ``-w`` options shown as ``-w ws00 ... -w ws09``."""
    words = list(command)
    if words[:3] == [sys.executable, "-m", "codeagent_app.cli"]:
        words = ["codeagent", *words[3:]]
    elif words[:3] == [sys.executable, "-m", "benchmarks.contenders"]:
        words = ["python -m benchmarks.contenders", words[3]]
    words = [Path(w).name if "/" in w and not w.startswith("--") else w for w in words]
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and words[j] == "-w":
            j += 2
        if j - i > 4:
            out += ["-w", words[i + 1], "...", "-w", words[j - 1]]
            i = j
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def run_command(command: list[str], logs: Path, name: str, timeout: float) -> Finished:
    """Run one command to its end; its CPU is the ``wait4`` rusage of its whole (waited-for) tree."""
    out_path, err_path = logs / f"{name}.stdout", logs / f"{name}.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started_wall = time.time()
        started = time.monotonic()
        proc = subprocess.Popen(
            command, cwd=REPO, env=child_env(), stdout=out, stderr=err, start_new_session=True
        )
    reaped = threading.Event()
    timed_out = threading.Event()

    def kill_tree() -> None:
        if not reaped.is_set():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    timer = threading.Timer(timeout, kill_tree)
    timer.daemon = True
    timer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        reaped.set()
        timer.cancel()
    ended = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Finished(
        command=command,
        started=started,
        ended=ended,
        started_wall=started_wall,
        exit_code=proc.returncode,
        cpu_s=usage.ru_utime + usage.ru_stime,
        stdout=out_path.read_text(encoding="utf-8", errors="replace"),
        stderr_tail=err_path.read_text(encoding="utf-8", errors="replace")[-3000:],
        timed_out=timed_out.is_set(),
    )


def run_slots(slots: list[list[list[str]]], logs: Path, prefix: str, timeout: float) -> list[Finished]:
    """Run every slot at once, each slot's commands one after another; every process, in start order."""
    results: list[list[Finished]] = [[] for _ in slots]
    failures: list[BaseException] = []

    def run_slot(index: int) -> None:
        try:
            for step, command in enumerate(slots[index]):
                results[index].append(
                    run_command(command, logs, f"{prefix}-s{index:02d}-{step:02d}", timeout)
                )
        except BaseException as exc:  # reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=run_slot, args=(i,), daemon=True) for i in range(len(slots))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return sorted((f for slot in results for f in slot), key=lambda f: f.started)
