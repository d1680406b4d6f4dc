"""Kernel benchmarks (figures, not a gate): idle CPU, and wall time of 100 todos across 10 workspaces.

(a) Idle CPU: a server waiting for work for ``--idle-seconds``; CPU time of
    every thread of the child process and its wake-ups (voluntary context
    switches) over that window, after a warm-up. Legacy: ``benchmarks.plain.legacy_agent(ws).run()``
    polling every ``poll_interval`` (default 1 s; ``--poll-interval`` for
    another); async: ``python -m core_async.kernel run`` (no API) and ``serve``
    (with the API), which wake on file-system events only.
(b) Throughput: ``--workspaces`` x ``--todos`` append todos, stub LLM with
    ``--latency-ms`` in its own process. Legacy: one loop, the workspaces one
    after another (what one legacy server does), and for reference one legacy
    process per workspace, all at once. Async: one process serving every
    workspace, on uvloop and on the default asyncio loop.

Run: ``python benchmarks/kernel_bench.py [--idle-seconds 10] [--json out.json]``.
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
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.measure import child_env, cpu_and_wakeups  # noqa: E402
from benchmarks.scenarios import make_workspace  # noqa: E402
from llm_stub import StubOptions, start_stub_process, stop_stub_process  # noqa: E402

LEGACY_RUN = (
    "import sys; from pathlib import Path; from benchmarks.plain import legacy_agent as build_agent; "
    "agent = build_agent(Path(sys.argv[1]), sys.argv[2]); "
    "print(agent.run(until_idle=sys.argv[3] == 'idle')); agent.close()"
)


def idle_cpu(command: Sequence[str], seconds: float, warmup: float) -> dict[str, float]:
    """CPU time and wake-ups of a child over ``seconds`` of waiting for work, after ``warmup``."""
    child = subprocess.Popen(
        command, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc = psutil.Process(child.pid)
        time.sleep(warmup)
        if child.poll() is not None:
            raise RuntimeError(f"{command} exited early with {child.returncode}")
        cpu0, wake0 = cpu_and_wakeups(proc)
        wall = time.monotonic()
        time.sleep(seconds)
        cpu1, wake1 = cpu_and_wakeups(proc)
        wall = time.monotonic() - wall
    finally:
        child.terminate()
        child.wait(30)
    return {
        "cpu_ms_per_s": round(1000 * (cpu1 - cpu0) / wall, 4),
        "wakeups_per_s": round((wake1 - wake0) / wall, 2),
        "window_s": round(wall, 2),
    }


def timed_run(commands: Sequence[Sequence[str]], *, parallel: bool) -> float:
    """Wall seconds to run ``commands`` (one after another, or all at once); each must exit 0."""
    started = time.monotonic()
    if parallel:
        procs = [
            subprocess.Popen(c, cwd=REPO, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for c in commands
        ]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(err.decode(errors="replace")[-2000:])
    else:
        for command in commands:
            done = subprocess.run(command, cwd=REPO, env=child_env(), capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-2000:])
    return round(time.monotonic() - started, 3)


def fresh(base: Path, name: str, workspaces: int, todos: int) -> list[Path]:
    roots = [base / name / f"ws{i:02d}" for i in range(workspaces)]
    for root in roots:
        make_workspace(root, todos)
    return roots


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument(
        "--poll-interval", type=float, default=None, help="legacy poll interval (config default: 1 s)"
    )
    parser.add_argument("--workspaces", type=int, default=10)
    parser.add_argument("--todos", type=int, default=10, help="todos per workspace")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--skip-idle", action="store_true")
    args = parser.parse_args(argv)
    py = sys.executable
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    base = Path(tempfile.mkdtemp(prefix="kernel-bench-"))
    stub, url = start_stub_process(StubOptions(latency_ms=args.latency_ms))
    try:
        if not args.skip_idle:
            idle_root = base / "idle"
            make_workspace(idle_root, 0, poll_interval=args.poll_interval)
            ws = str(idle_root)
            results["idle_cpu"] = {
                "legacy_loop": idle_cpu(
                    [py, "-c", LEGACY_RUN, ws, url, "forever"], args.idle_seconds, args.warmup
                ),
                "async_run": idle_cpu(
                    [py, "-m", "core_async.kernel", "run", "-w", ws, "--llm-url", url],
                    args.idle_seconds,
                    args.warmup,
                ),
                "async_serve": idle_cpu(
                    [py, "-m", "core_async.kernel", "serve", "-w", ws, "--llm-url", url, "--port", "0"],
                    args.idle_seconds,
                    args.warmup,
                ),
            }
            print(json.dumps({"idle_cpu": results["idle_cpu"]}, indent=2), flush=True)

        n = args.workspaces * args.todos
        through: dict[str, Any] = {
            "todos": n,
            "workspaces": args.workspaces,
            "stub_latency_ms": args.latency_ms,
        }
        roots = fresh(base, "legacy-seq", args.workspaces, args.todos)
        through["legacy_one_loop_s"] = timed_run(
            [[py, "-c", LEGACY_RUN, str(r), url, "idle"] for r in roots], parallel=False
        )
        roots = fresh(base, "legacy-par", args.workspaces, args.todos)
        through["legacy_process_per_workspace_s"] = timed_run(
            [[py, "-c", LEGACY_RUN, str(r), url, "idle"] for r in roots], parallel=True
        )
        for name, extra in (("async_uvloop_s", []), ("async_asyncio_s", ["--no-uvloop"])):
            roots = fresh(base, name, args.workspaces, args.todos)
            ws_args = [a for r in roots for a in ("-w", str(r))]
            through[name] = timed_run(
                [[py, "-m", "core_async.kernel", "run", *ws_args, "--until-idle", "--llm-url", url, *extra]],
                parallel=False,
            )
        best = min(through["async_uvloop_s"], through["async_asyncio_s"])
        through["todos_per_s"] = {
            "legacy_one_loop": round(n / through["legacy_one_loop_s"], 1),
            "async_uvloop": round(n / through["async_uvloop_s"], 1),
            "async_asyncio": round(n / through["async_asyncio_s"], 1),
        }
        through["speedup_async_vs_legacy_one_loop"] = round(through["legacy_one_loop_s"] / best, 2)
        results["throughput"] = through
        print(json.dumps({"throughput": through}, indent=2), flush=True)
    finally:
        stop_stub_process(stub)
        shutil.rmtree(base, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
