"""Processes of the campaign: the stub LLM, ``codeagent`` children, kills, /proc samples, the machine.

Everything here works on real processes: a target is the shipped command line
(``python -m codeagent_app.cli ...``) started with :func:`start`, killed with
SIGKILL at a moment the campaign draws, and sampled through ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from llm_stub import StubOptions
from llm_stub.process import start_stub_process, stop_stub_process

REPO = Path(__file__).resolve().parents[2]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a campaign child: this checkout importable, no test crash hooks."""
    env = {k: v for k, v in os.environ.items() if k not in ("CODEAGENT_KILL_AT", "CODEAGENT_MIGRATE_KILL_AT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONASYNCIODEBUG", None)
    env.update(extra or {})
    return env


def codeagent(*args: str) -> list[str]:
    """The command line of ``codeagent ARGS`` run from this checkout's interpreter."""
    return [sys.executable, "-m", "codeagent_app.cli", *args]


def start(
    args: Sequence[str],
    log: IO[bytes] | int = subprocess.DEVNULL,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own process group (so a kill of the group takes its helpers too)."""
    return subprocess.Popen(
        list(args),
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env or child_env(),
        cwd=cwd or REPO,
        start_new_session=True,
        preexec_fn=preexec_fn,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and everything in its process group; reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    """The child's exit code within ``timeout``, else kill it (group) and return ``None``."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (``/proc/PID/task/*/children``)."""
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                found += [int(x) for x in (task / "children").read_text().split()]
    return found


def cmdline(pid: int) -> list[str]:
    """The command line of ``pid`` (``[]`` when gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass
class Sample:
    """One look at a process: seconds since the start, RSS (KiB), open fds, threads."""

    t: float
    rss_kb: int
    fds: int
    threads: int


def sample(pid: int, t: float) -> Sample | None:
    """RSS, fds and threads of ``pid`` from ``/proc`` (``None`` when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    values: dict[str, int] = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "Threads"):
            values[key] = int(rest.split()[0])
    return Sample(t=round(t, 2), rss_kb=values.get("VmRSS", 0), fds=fds, threads=values.get("Threads", 0))


@dataclass
class Curve:
    """Samples of one process over a run, and what they say about growth."""

    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Start, end, max, and each half's max and median, per measure."""
        out: dict[str, Any] = {"samples": len(self.samples)}
        if not self.samples:
            return out
        for name in ("rss_kb", "fds", "threads"):
            values = [getattr(s, name) for s in self.samples]
            half = max(1, len(values) // 2)
            first, last = values[:half], values[half:] or values[-1:]
            out[name] = {
                "start": values[0],
                "end": values[-1],
                "max": max(values),
                "first_half_max": max(first),
                "second_half_max": max(last),
                "first_half_median": sorted(first)[len(first) // 2],
                "second_half_median": sorted(last)[len(last) // 2],
            }
        return out


@contextlib.contextmanager
def stub(options: StubOptions) -> Iterator[StubHandle]:
    """The stub LLM in a child process for the block."""
    process, url = start_stub_process(options)
    try:
        yield StubHandle(url)
    finally:
        stop_stub_process(process)


@dataclass
class StubHandle:
    """The base URL of a running stub and its admin calls."""

    url: str

    @property
    def root(self) -> str:
        """The stub's origin (its admin routes live under ``/_stub/``)."""
        return self.url.removesuffix("/v1")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.root + path, data=data, method=method)
        request.add_header("content-type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def stats(self, recent: int = 0, *, by_todo: bool = False) -> dict[str, Any]:
        """``GET /_stub/stats`` (with every todo's request count, asked)."""
        result: dict[str, Any] = self._call("GET", f"/_stub/stats?recent={recent}&by_todo={int(by_todo)}")
        return result

    def reset(self) -> None:
        """``POST /_stub/reset``: counters and scripted faults cleared."""
        self._call("POST", "/_stub/reset", {})

    def configure(self, **changes: Any) -> None:
        """``POST /_stub/options``."""
        self._call("POST", "/_stub/options", changes)


def head_commit() -> dict[str, Any]:
    """The checkout's commit and whether the tree has changes."""

    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
            ).stdout
        except OSError:
            return ""

    sha = run("rev-parse", "HEAD").strip() or "unknown"
    dirty = bool(run("status", "--porcelain", "--untracked-files=no").strip())
    return {"commit": sha, "dirty": dirty}


def machine() -> dict[str, Any]:
    """Cores, Python, platform, and the load average now."""
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": list(os.getloadavg()),
        "root": os.geteuid() == 0,
    }


class LoadWatch:
    """Load average samples taken while the campaign runs (call :meth:`tick` now and then)."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self._last = 0.0

    def tick(self) -> None:
        """Record the 1-minute load average, at most once per 5 s."""
        now = time.monotonic()
        if now - self._last >= 5.0:
            self._last = now
            self.values.append(os.getloadavg()[0])

    def summary(self) -> dict[str, float]:
        """Mean and max of the samples."""
        if not self.values:
            return {}
        return {"mean": round(sum(self.values) / len(self.values), 2), "max": round(max(self.values), 2)}


@dataclass
class Served:
    """A ``codeagent serve`` child and its API's base URL."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path


def start_serving(args: Sequence[str], log: Path, *, within: float = 60.0) -> Served:
    """Start ``codeagent serve ...`` (its args include ``--port 0``); wait for its API's URL in the log."""
    import re

    out = log.open("wb")
    proc = start(args, out)
    out.close()
    deadline = time.monotonic() + within
    while True:
        found = re.search(r"API listening on (http://[0-9.:]+)", log.read_text(errors="replace"))
        if found:
            return Served(proc, found.group(1), log)
        if proc.poll() is not None or time.monotonic() > deadline:
            kill_group(proc)
            raise RuntimeError(f"the server did not start: {log.read_text(errors='replace')[-500:]}")
        time.sleep(0.05)


def stop_serving(served: Served, timeout: float = 60.0) -> int | None:
    """SIGTERM the server (it drains), its exit code (``None``: it had to be killed)."""
    if served.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(served.proc.pid, signal.SIGTERM)
    return wait_or_kill(served.proc, timeout)


def http_json(
    method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One request; ``(status, decoded JSON or None)`` (an HTTP error status is returned, not raised)."""
    import urllib.error

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None
