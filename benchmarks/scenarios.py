"""What the A/B suite runs: the workload, and the size of every scenario per mode (smoke, quick, full).

The throughput workload is ``W`` git workspaces whose todos each append one
line to their own file (``append a line "line i" to file f<i>.txt``): every
todo is a real LLM request, file edit, checkpoint trail and git commit, and no
two todos of a workspace touch the same file, so a contender that can run
todos concurrently is free to. (The bundled sample workspace is not used for
throughput: a quarter of its todos name no file, which makes them exclusive in
their workspace, and several share files, so it measures the scheduler's
conflict rules rather than concurrency.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codeagent.models import Todo, TodoFile, dump_json

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}

#: The four contenders, in the order they are run and shown.
CONTENDERS: tuple[str, ...] = ("legacy_loop", "legacy_threads", "async_asyncio", "async_uvloop")
ASYNC_CONTENDERS: tuple[str, ...] = ("async_asyncio", "async_uvloop")
LABELS: dict[str, str] = {
    "legacy_loop": "legacy while-True loop",
    "legacy_threads": "legacy components on a thread pool",
    "async_asyncio": "async core, asyncio loop",
    "async_uvloop": "async core, uvloop",
}


def make_workspace(
    root: Path, n: int, *, poll_interval: float | None = None, prefix: str = "t", start: int = 0
) -> None:
    """A git workspace with ``n`` todos ``append a line "line i" to file f<i>.txt`` (one file each)."""
    root.mkdir(parents=True)
    todos = []
    for i in range(start, start + n):
        (root / f"f{i}.txt").write_text(f"file {i}\n", encoding="utf-8")
        todos.append(
            Todo(
                id=f"{prefix}-{i + 1:04d}",
                text=f'append a line "line {i}" to file f{i}.txt',
                files=[f"f{i}.txt"],
            )
        )
    (root / ".agent").mkdir()
    (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
    if poll_interval is not None:
        (root / ".agent/config.json").write_text(
            json.dumps({"poll_interval": poll_interval}), encoding="utf-8"
        )
    (root / ".gitignore").write_text(".agent/\n", encoding="utf-8")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(
            ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
            cwd=root,
            env=env,
            check=True,
        )


def make_workspaces(base: Path, count: int, todos_each: int) -> list[Path]:
    """``count`` fresh workspaces under ``base`` (which must not exist), ``todos_each`` todos each."""
    roots = [base / f"ws{i:02d}" for i in range(count)]
    for root in roots:
        make_workspace(root, todos_each)
    return roots


@dataclass(frozen=True)
class Plan:
    """The size of every scenario of one run."""

    mode: str
    workspaces: int
    concurrency: tuple[int, ...]
    #: todos per workspace at each concurrency level (same for every contender)
    todos_per_workspace: dict[int, int]
    latency_ms: float
    idle_seconds: float
    idle_warmup: float
    latency_requests: int
    #: at more than one in flight: requests = in-flight x latency_rounds
    latency_rounds: int
    latency_concurrency: tuple[int, ...]
    inflight_target: int
    inflight_latency_ms: float
    contenders: tuple[str, ...] = CONTENDERS
    extra: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["todos_per_workspace"] = {str(k): v for k, v in self.todos_per_workspace.items()}
        return data


def todos_for(concurrency: int, workspaces: int, *, rounds: float, floor: int) -> int:
    """Todos per workspace so that ``concurrency`` slots are refilled about ``rounds`` times."""
    return max(floor, math.ceil(concurrency * rounds / workspaces))


def make_plan(
    mode: str, *, concurrency: list[int] | None = None, latency_ms: float = 200.0, workspaces: int = 10
) -> Plan:
    """The plan of ``mode`` (``smoke``, ``quick`` or ``full``), optionally with other concurrency levels."""
    if mode == "smoke":
        levels = tuple(concurrency or (1, 4))
        return Plan(
            mode=mode,
            workspaces=2,
            concurrency=levels,
            todos_per_workspace={c: todos_for(c, 2, rounds=2, floor=1) for c in levels},
            latency_ms=min(latency_ms, 20.0),
            idle_seconds=1.0,
            idle_warmup=1.5,
            latency_requests=10,
            latency_rounds=2,
            latency_concurrency=(1, 4),
            inflight_target=50,
            inflight_latency_ms=600.0,
        )
    if mode == "quick":
        levels = tuple(concurrency or (1, 10, 100))
        rounds, floor, idle, warm, lat_n, lat_rounds, inflight, inflight_ms = (
            2.0,
            1,
            3.0,
            2.0,
            10,
            8,
            1000,
            1500.0,
        )
    elif mode == "full":
        levels = tuple(concurrency or (1, 10, 100, 1000))
        rounds, floor, idle, warm, lat_n, lat_rounds, inflight, inflight_ms = (
            1.5,
            2,
            20.0,
            3.0,
            100,
            25,
            10_000,
            12000.0,  # long enough for all 10,000 to be in flight before the first answer
        )
    else:
        raise ValueError(f"unknown mode {mode!r}: expected smoke, quick or full")
    return Plan(
        mode=mode,
        workspaces=workspaces,
        concurrency=levels,
        todos_per_workspace={c: todos_for(c, workspaces, rounds=rounds, floor=floor) for c in levels},
        latency_ms=latency_ms,
        idle_seconds=idle,
        idle_warmup=warm,
        latency_requests=lat_n,
        latency_rounds=lat_rounds,
        latency_concurrency=(1, 64),
        inflight_target=inflight,
        inflight_latency_ms=inflight_ms,
    )
