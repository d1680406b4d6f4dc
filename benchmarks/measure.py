"""Measurement helpers shared by the A/B suite and ``kernel_bench.py``.

* CPU time: :func:`cpu_and_wakeups` (another live process, every thread, from
  ``/proc/<pid>/task/*/schedstat`` in nanoseconds), :func:`tree_counters` (the
  same summed over a process and all its descendants, with both kinds of
  context switch) and :func:`own_cpu_seconds` (this process and its waited-for
  children, e.g. the git subprocesses, from ``getrusage``).
* Rates: :func:`sustained_rate`, completions per second between the 10th and
  the 90th percentile completion instants.
* Clocks: every process of a run stamps ``time.monotonic()``; on Linux that is
  ``CLOCK_MONOTONIC``, one clock for the whole machine, so the parent can
  compare instants recorded by different children.
* :class:`LagTicker`: event-loop lag, the overshoot of a short ``asyncio.sleep``.
* :func:`percentiles`, :func:`machine_info`, :func:`child_env`.
"""

from __future__ import annotations

import asyncio
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process of the benchmark: this repository first on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "CODEAGENT_LOG_FORMAT": "text", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONASYNCIODEBUG", None)
    env.pop("CODEAGENT_KILL_AT", None)
    return {**env, **(extra or {})}


def cpu_and_wakeups(proc: psutil.Process) -> tuple[float, int]:
    """CPU seconds (every thread) and voluntary context switches (wake-ups) of a process so far.

    On Linux from ``/proc/<pid>/task/*/schedstat`` (nanoseconds; psutil's
    ``cpu_times`` only counts 10 ms clock ticks, too coarse for an idle
    process), elsewhere from psutil.
    """
    tasks = Path(f"/proc/{proc.pid}/task")
    if tasks.is_dir():
        cpu_ns = 0
        switches = 0
        for task in tasks.iterdir():
            try:
                cpu_ns += int((task / "schedstat").read_text().split()[0])
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        switches += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError):  # a thread ended meanwhile
                continue
        return cpu_ns / 1e9, switches
    times = proc.cpu_times()
    return float(times.user + times.system), int(proc.num_ctx_switches().voluntary)


def _thread_counters(pid: int) -> tuple[float, int, int]:
    """CPU seconds, context switches (voluntary + involuntary) and threads of one live process."""
    cpu_ns = 0
    switches = 0
    threads = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu_ns += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    switches += int(line.split()[1])
            threads += 1
        except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
            continue
    return cpu_ns / 1e9, switches, threads


def tree_counters(pid: int) -> dict[int, tuple[float, int, int]]:
    """Per process of the tree rooted at ``pid`` (itself and every descendant alive now):
    ``(CPU seconds, context switches of every thread, both kinds, threads)``. Linux only."""
    try:
        root = psutil.Process(pid)
        pids = [pid, *(child.pid for child in root.children(recursive=True))]
    except psutil.NoSuchProcess:
        return {}
    out: dict[int, tuple[float, int, int]] = {}
    for member in pids:
        try:
            out[member] = _thread_counters(member)
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
    return out


def sustained_rate(instants: Sequence[float]) -> tuple[float, float] | None:
    """``(completions per second, window seconds)`` between the 10th and 90th percentile instants.

    The window leaves out the start (processes starting, the first answers
    still on their way) and the drain (the last, slowest todos, a hang's
    timeout); ``None`` with fewer than 10 instants or a window of no length.
    """
    if len(instants) < 10:
        return None
    ordered = sorted(instants)
    n = len(ordered)
    low = math.floor(0.1 * n)
    high = math.ceil(0.9 * n) - 1
    window = ordered[high] - ordered[low]
    if high <= low or window <= 0:
        return None
    return (high - low) / window, window


def own_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of every child it has waited for."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def rss_bytes() -> int:
    """The current resident set size of this process."""
    return int(psutil.Process().memory_info().rss)


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ..., "max": ..., "n": ...}`` (nearest-rank); empty input gives ``{}``."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for point in points:
        rank = max(0, min(len(ordered) - 1, math.ceil(point / 100 * len(ordered)) - 1))
        out[f"p{point}"] = ordered[rank]
    out["mean"] = statistics.fmean(ordered)
    out["max"] = ordered[-1]
    out["n"] = float(len(ordered))
    return out


class LagTicker:
    """Event-loop lag: how late a ``sleep(interval)`` wakes up, sampled for as long as it runs."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval)
            self.samples_ms.append(max(0.0, (time.perf_counter() - before - self.interval) * 1000.0))

    def start(self) -> None:
        """Start sampling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> dict[str, float]:
        """Stop sampling; return the lag percentiles in milliseconds."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        return percentiles(self.samples_ms)


def scratch_filesystem(path: Path) -> dict[str, Any]:
    """The file system the workspaces live on: its type, device and options, and for ext4 whether it journals.

    It matters to the figures: on ext4 without a journal every new inode skips the
    inodes freed in the last minute or more of its group, one inode-table look-up
    each, so creating a file costs more the more files were deleted just before.
    """
    real = os.path.realpath(path)
    best: Any = None
    for part in psutil.disk_partitions(all=True):
        mount = part.mountpoint.rstrip("/") or "/"
        inside = real == mount or real.startswith(mount + "/") or mount == "/"
        if inside and (best is None or len(mount) > len(best.mountpoint.rstrip("/") or "/")):
            best = part
    if best is None:  # pragma: no cover - every path is under some mount
        return {"path": real, "fstype": "?"}
    info: dict[str, Any] = {
        "path": real,
        "mountpoint": best.mountpoint,
        "device": best.device,
        "fstype": best.fstype,
        "options": best.opts,
    }
    if best.fstype == "ext4":
        name = os.path.basename(os.path.realpath(best.device))
        try:
            journals = os.listdir("/proc/fs/jbd2")
        except OSError:
            journals = None
        info["journal"] = None if journals is None else any(j.startswith(f"{name}-") for j in journals)
    return info


def machine_info(loop_names: Sequence[str] = ()) -> dict[str, Any]:
    """What the figures were measured on."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpus_physical": psutil.cpu_count(logical=False),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "loops": list(loop_names),
    }
    try:
        import uvloop

        info["uvloop"] = getattr(uvloop, "__version__", "?")
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        info["uvloop"] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    info["loadavg_at_start"] = [round(x, 2) for x in load]
    return info
