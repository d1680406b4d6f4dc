"""The A/B benchmark suite: legacy and async Code Agent as users run them, same workload, same machine, one run.

``python -m benchmarks [--quick|--smoke] [--profile cpu|realistic|both] [--out DIR] [--compare OLD.json]``
(the CLI wires :data:`bench_app` / :func:`run_bench` as ``codeagent bench``).

Contenders (see :mod:`benchmarks.scenarios`): ``codeagent run --loop legacy``
as shipped (one process per workspace: at concurrency ``c`` there are
``min(c, W)`` of them at once, each going through its share of the workspaces
one after another), ``codeagent run --loop async`` as shipped with
``--workers 1`` and ``--workers`` = cores (one command over every workspace,
limits from ``c``), the legacy components on a pool of ``c`` threads, and the
bare async kernel (a reference line only). Every contender runs in child
processes on fresh workspaces and the suite waits for them (see
:mod:`benchmarks.shipped`).

Profiles: ``cpu`` (the stub answers after a fixed 200 ms, no faults) and
``realistic`` (lognormal latency, median 2 s, p99 10 s; 3% 429s with
Retry-After; 0.5% hangs); each profile has its own stub LLM process.

Scenarios: throughput at each concurrency level of each profile; idle CPU and
wake-ups of the loops as shipped; LLM request overhead of the legacy and async
clients; the most LLM requests held in flight. Every figure comes from this
run (see :mod:`benchmarks.measure`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from benchmarks import charts, report
from benchmarks.measure import (
    REPO,
    child_env,
    cpu_and_wakeups,
    machine_info,
    scratch_filesystem,
    sustained_rate,
    tree_counters,
)
from benchmarks.scenarios import (
    ASYNC_SHIPPED,
    SHIPPED,
    Plan,
    Profile,
    async_flags_toml,
    make_plan,
    make_workspaces,
)
from benchmarks.shipped import (
    async_command,
    async_limits,
    job_command,
    legacy_command,
    run_options,
    run_slots,
    short_command,
    supports_workers,
)
from llm_stub import StubOptions, start_stub_process, stop_stub_process
from llm_stub.options import options_view

CHILD_TIMEOUT_S = 900.0


class BenchError(RuntimeError):
    """A contender or probe failed; the message holds the tail of its stderr."""


def _finish_instants(roots: list[Path]) -> tuple[dict[str, int], list[float]]:
    """Todos done / failed / other in ``roots``, and the wall-clock instants the done ones finished."""
    from legacy.status import StatusStore

    counts = {"done": 0, "failed": 0, "other": 0}
    instants: list[float] = []
    for root in roots:
        for state in StatusStore(root).load().todos.values():
            key = state.status.value if state.status.value in counts else "other"
            counts[key] += 1
            if key == "done" and state.finished_at is not None:
                instants.append(state.finished_at.timestamp())
    return counts, instants


def _processed(stdout: str) -> int | None:
    """``N`` of the ``processed N todo(s)`` line a shipped ``codeagent run --until-idle`` prints."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("processed ") and line.endswith(" todo(s)"):
            try:
                return int(line.split()[1])
            except ValueError:
                return None
    return None


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every CPU: user, nice, system, interrupts) so far."""
    times = psutil.cpu_times()
    # guest time is already counted in user (and guest_nice in nice); steal is another VM's
    return float(sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq")))


def _role(pid: int) -> str:
    """A short name for a process of a contender's tree: its command line, shortened."""
    try:
        cmdline = psutil.Process(pid).cmdline()
    except psutil.Error:
        return f"pid {pid}"
    if "-m" in cmdline and cmdline.index("-m") + 1 < len(cmdline):
        module = cmdline[cmdline.index("-m") + 1]
        if module != "codeagent_app.cli":  # a worker, a job: its module names it (its arguments are long)
            return f"python -m {module} (pid {pid})"
    return f"{short_command(cmdline)[:100]} (pid {pid})"


class Bench:
    """One run of the suite: the plan, a scratch directory, the stub LLM in use, and the figures gathered."""

    def __init__(self, plan: Plan, scratch: Path, console: Console) -> None:
        self.plan = plan
        self.scratch = scratch
        self.console = console
        self.logs = scratch / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self.stub: subprocess.Popen[str] | None = None
        self.url = ""

    # ------------------------------------------------------------------ children

    def _name(self, kind: str) -> str:
        self._seq += 1
        return f"{self._seq:03d}-{kind}"

    def _spawn(self, kind: str, args: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path, Path]:
        name = self._name(kind)
        out = self.logs / f"{name}.json"
        err = self.logs / f"{name}.stderr"
        with err.open("wb") as handle:
            proc = subprocess.Popen(
                job_command(kind, args, out),
                cwd=REPO,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=handle,
            )
        return proc, out, err

    @staticmethod
    def _collect(proc: subprocess.Popen[bytes], out: Path, err: Path, kind: str) -> dict[str, Any]:
        try:
            code = proc.wait(CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise BenchError(f"{kind} did not finish within {CHILD_TIMEOUT_S:g}s") from None
        if code != 0 or not out.exists():
            tail = err.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise BenchError(f"{kind} exited {code}:\n{tail}")
        result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
        return result

    def run_children(self, jobs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Run probe jobs at once, each in its own child process; return their figures in order."""
        started = [(kind, *self._spawn(kind, args)) for kind, args in jobs]
        return [self._collect(proc, out, err, kind) for kind, proc, out, err in started]

    @contextmanager
    def stub_llm(self, options: StubOptions) -> Iterator[tuple[subprocess.Popen[str], str]]:
        """A stub LLM child process with ``options``."""
        proc, url = start_stub_process(options)
        try:
            yield proc, url
        finally:
            stop_stub_process(proc)

    def stub_cpu(self) -> float:
        """CPU seconds the stub process in use has used so far."""
        assert self.stub is not None
        return cpu_and_wakeups(psutil.Process(self.stub.pid))[0]

    def _stub_admin(self, method: str, path: str) -> dict[str, Any]:
        origin = self.url.rsplit("/v1", 1)[0]
        response = httpx.request(method, f"{origin}/_stub/{path}", timeout=30)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def _stub_quiet(self, limit: float = 30.0) -> None:
        """Wait until the stub has no request in flight (a previous contender's hung ones end with it)."""
        deadline = time.monotonic() + limit
        while self._stub_admin("GET", "stats?recent=0")["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.1)

    # ------------------------------------------------------------------ scenarios

    def _slots(
        self, profile: Profile, contender: str, concurrency: int, roots: list[Path], name: str
    ) -> tuple[list[list[list[str]]], dict[str, Any]]:
        """The command lines of ``contender`` (slots run at once, commands one after another) and its setup."""
        plan = self.plan
        if contender == "legacy_loop":
            processes = min(concurrency, len(roots))
            slots = [[legacy_command(r) for r in roots[i::processes]] for i in range(processes)]
            return slots, {
                "workers": 1,
                "limits": f"{processes} process(es) at once, one workspace each",
                "processes_at_once": processes,
            }
        if contender in ASYNC_SHIPPED:
            workers = 1 if contender == "async_w1" else plan.workers
            limits = async_limits(concurrency, len(roots))
            return [[async_command(roots, workers=workers, limits=limits)]], {
                "workers": workers,
                "limits": limits,
                "processes_at_once": 1 + (workers if supports_workers() else 0),
            }
        out = self.logs / f"{name}.json"
        if contender == "legacy_threads":
            args: dict[str, Any] = {"roots": [str(r) for r in roots], "url": self.url, "threads": concurrency}
            return [[job_command("legacy_threads", args, out)]], {
                "workers": 1,
                "limits": f"{concurrency} threads",
                "processes_at_once": 1,
                "out": str(out),
            }
        args = {"roots": [str(r) for r in roots], "url": self.url, "concurrency": concurrency, "uvloop": True}
        return [[job_command("bare_kernel", args, out)]], {
            "workers": 1,
            "limits": async_limits(concurrency, len(roots)),
            "processes_at_once": 1,
            "out": str(out),
        }

    def throughput(self, profile: Profile, contender: str, concurrency: int) -> dict[str, Any]:
        """One contender at one concurrency level under one profile, on fresh workspaces."""
        plan = self.plan
        per = profile.todos_each(contender, concurrency)
        base = self.scratch / f"tp-{profile.name}-c{concurrency}-{contender}"
        flags = async_flags_toml() if contender in ASYNC_SHIPPED else None
        roots = make_workspaces(base, plan.workspaces, per, config=profile.config(self.url), flags=flags)
        name = self._name(f"{profile.name}-c{concurrency}-{contender}")
        slots, setup = self._slots(profile, contender, concurrency, roots, name)
        self._stub_quiet()
        self._stub_admin("POST", "reset")
        stub0 = self.stub_cpu()
        busy0 = _machine_busy_s()
        finished = run_slots(slots, self.logs, name, CHILD_TIMEOUT_S)
        busy = _machine_busy_s() - busy0
        stub_cpu = self.stub_cpu() - stub0
        stub = self._stub_admin("GET", "stats?recent=0")
        # A process that fails is reported on its line (the run goes on; the suite exits 1 at the end).
        crashed = [
            f"`{short_command(f.command)}` exited {f.exit_code}{' (timed out)' if f.timed_out else ''}: "
            + " / ".join(f.stderr_tail.strip().splitlines()[-3:])
            for f in finished
            if f.exit_code != 0
        ]
        if crashed:
            self.console.print(f"[red]{profile.name} c={concurrency} {contender}: {crashed[0]}")
        counts, instants = _finish_instants(roots)
        started = min(f.started for f in finished)
        ended = max(f.ended for f in finished)
        started_wall = min(f.started_wall for f in finished)
        wall = ended - started
        done = counts["done"]
        cpu = sum(f.cpu_s for f in finished)
        sustained = sustained_rate(instants)
        batch = done / wall if wall > 0 else 0.0
        result: dict[str, Any] = {
            "contender": contender,
            "profile": profile.name,
            "concurrency": concurrency,
            "command": finished[0].view()["command"],
            **{k: v for k, v in setup.items() if k != "out"},
            "processes": len(finished),
            "todos": plan.workspaces * per,
            "done": done,
            "failed": counts["failed"],
            "other": counts["other"],
            "processed_reported": sum(p for f in finished if (p := _processed(f.stdout)) is not None),
            "started": started,
            "ended": ended,
            "wall_s": wall,
            "batch_todos_per_s": batch,
            "sustained_todos_per_s": sustained[0] if sustained else batch,
            "sustained_window_s": sustained[1] if sustained else wall,
            "sustained_from": "10th-90th percentile completions" if sustained else "batch (too few todos)",
            "first_done_after_s": (min(instants) - started_wall) if instants else math.nan,
            "last_done_after_s": (max(instants) - started_wall) if instants else math.nan,
            "cpu_s": cpu,
            "stub_cpu_s": stub_cpu,
            "cpu_per_todo_s": cpu / done if done else math.nan,
            "total_cpu_per_todo_s": (cpu + stub_cpu) / done if done else math.nan,
            "cores_busy": (cpu + stub_cpu) / wall if wall > 0 else math.nan,
            # CPU the whole machine spent meanwhile on anything but this line and its stub (the suite's own
            # process included, a few ms): other work competing for the same cores
            "other_cores_busy": max(0.0, busy - cpu - stub_cpu) / wall if wall > 0 else math.nan,
            "stub": {
                "requests": stub["requests_total"],
                "by_status": stub["by_status"],
                "by_fault": stub["by_fault"],
                "max_in_flight": stub["max_in_flight"],
                "latency_mean_ms": stub.get("latency_drawn_mean_ms"),
                "latency_draws": stub.get("latency_draws"),
                "client_disconnects": stub["client_disconnects"],
            },
            "per_process": [f.view() for f in finished],
        }
        result["todos_per_s"] = result["sustained_todos_per_s"]
        if crashed:
            result["crashed"] = crashed[:5]
        if "out" in setup and Path(setup["out"]).is_file():
            inner = json.loads(Path(setup["out"]).read_text(encoding="utf-8"))
            if "loop_lag_ms" in inner:
                result["loop_lag_ms"] = inner["loop_lag_ms"]
            if inner.get("errors"):
                result["errors"] = inner["errors"][:5]
        # The workspaces stay until the suite ends (see collect): deleting thousands of files here
        # would make the next line's file creations dearer on a file system that skips recently
        # freed inodes (ext4 without a journal), charging one contender for another's clean-up.
        return result

    def startup(self, profile: Profile) -> dict[str, Any]:
        """Start-up and shut-down of each shipped command on empty workspaces (``--until-idle``, nothing to do)."""
        out: dict[str, Any] = {}
        for contender in SHIPPED:
            base = self.scratch / f"startup-{contender}"
            flags = async_flags_toml() if contender in ASYNC_SHIPPED else None
            count = 1 if contender == "legacy_loop" else self.plan.workspaces
            roots = make_workspaces(base, count, 0, config=profile.config(self.url), flags=flags)
            if contender == "legacy_loop":
                command = legacy_command(roots[0])
            else:
                workers = 1 if contender == "async_w1" else self.plan.workers
                command = async_command(roots, workers=workers)
            (finished,) = run_slots([[command]], self.logs, self._name(f"startup-{contender}"), 120.0)
            if finished.exit_code != 0:
                raise BenchError(
                    f"`{' '.join(command)}` exited {finished.exit_code}:\n{finished.stderr_tail}"
                )
            out[contender] = {
                "command": finished.view()["command"],
                "workspaces": count,
                "wall_s": finished.ended - finished.started,
                "cpu_s": finished.cpu_s,
            }
        return out

    @staticmethod
    def _totals(counters: dict[int, tuple[float, int, int]]) -> tuple[float, int]:
        return sum(c[0] for c in counters.values()), sum(c[1] for c in counters.values())

    def _settle(self, pids: dict[str, int], *, step: float = 0.5, limit: float = 30.0) -> float:
        """Wait until every process tree has finished starting up; return how long that took (seconds).

        A fixed warm-up is not enough on a loaded machine: a process still
        importing or opening its workspaces would count its start-up as idle.
        Settled means two whole ``step``s in a row in which every tree used
        under 5 ms of CPU and woke at most twice (an idle loop uses well under
        1 ms per second; the legacy loop's poll wakes once a second). CPU alone
        is not enough: a worker's start-up ends in a burst of thread hand-offs
        (hundreds of wake-ups) that cost almost no CPU.
        """
        t0 = time.monotonic()
        last = {name: self._totals(tree_counters(pid)) for name, pid in pids.items()}
        quiet = 0
        while time.monotonic() - t0 < limit:
            time.sleep(step)
            now = {name: self._totals(tree_counters(pid)) for name, pid in pids.items()}
            busy = [
                name
                for name in pids
                if now[name][0] - last[name][0] > 0.005 or now[name][1] - last[name][1] > 2
            ]
            last = now
            quiet = 0 if busy else quiet + 1
            if quiet == 2:
                break
        return time.monotonic() - t0

    def idle(self) -> dict[str, Any]:
        """CPU and wake-ups of the loops as shipped (and the bare kernel) waiting for work, over one shared window.

        Every process of each tree counts (a supervisor and its workers), every
        thread, both kinds of context switch.
        """
        plan = self.plan
        config = {"llm": {"base_url": self.url, "timeout": 20.0, "max_retries": 3}}
        commands: dict[str, list[str]] = {}
        described: dict[str, dict[str, Any]] = {}
        for contender in plan.idle_contenders:
            count = plan.workspaces if contender == "async_default" else 1
            flags = None if contender in ("legacy_loop", "bare_kernel") else async_flags_toml()
            roots = make_workspaces(self.scratch / f"idle-{contender}", count, 0, config=config, flags=flags)
            if contender == "legacy_loop":
                commands[contender] = legacy_command(roots[0], until_idle=False)
            elif contender == "async_default":
                commands[contender] = async_command(roots, workers=None, until_idle=False)
            elif contender == "async_w1":
                commands[contender] = async_command(roots, workers=1, until_idle=False)
            else:
                commands[contender] = job_command(
                    "idle_bare_kernel",
                    {"root": str(roots[0]), "url": self.url},
                    self.logs / f"{self._name('idle-bare_kernel')}.json",
                )
            described[contender] = {"workspaces": count}
        spawned: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        try:
            for name, command in commands.items():
                err = self.logs / f"{self._name('idle-' + name)}.stderr"
                with err.open("wb") as handle:
                    spawned[name] = (
                        subprocess.Popen(
                            command,
                            cwd=REPO,
                            env=child_env(),
                            stdout=subprocess.DEVNULL,
                            stderr=handle,
                            start_new_session=True,
                        ),
                        err,
                    )
            time.sleep(plan.idle_warmup)
            for name, (proc, err) in spawned.items():
                if proc.poll() is not None:
                    tail = err.read_text(encoding="utf-8", errors="replace")[-2000:]
                    raise BenchError(f"idle {name} exited early ({proc.returncode}):\n{tail}")
            pids = {name: proc.pid for name, (proc, _e) in spawned.items()}
            settled_after = self._settle(pids)
            before = {name: tree_counters(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            time.sleep(plan.idle_seconds)
            after = {name: tree_counters(pid) for name, pid in pids.items()}
            window = time.monotonic() - t0
            roles = {pid: _role(pid) for counters in after.values() for pid in counters}
        finally:
            for proc, _err in spawned.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc, _err in spawned.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, 9)
                    proc.wait()
        out: dict[str, Any] = {}
        for name in spawned:
            common = set(before[name]) & set(after[name])
            cpu = sum(after[name][p][0] - before[name][p][0] for p in common)
            wakeups = sum(after[name][p][1] - before[name][p][1] for p in common)
            out[name] = {
                **described[name],
                "command": short_command(commands[name])
                if name != "bare_kernel"
                else "bare kernel (in-process)",
                "processes": len(after[name]),
                "threads": sum(c[2] for c in after[name].values()),
                "tree_changed": set(before[name]) != set(after[name]),
                "cpu_s": cpu,
                "cpu_ms_per_s": 1000.0 * cpu / window,
                "wakeups_per_s": wakeups / window,
                "per_process": [
                    {
                        "process": roles.get(pid, str(pid)),
                        "cpu_ms_per_s": 1000.0 * (after[name][pid][0] - before[name][pid][0]) / window,
                        "wakeups_per_s": (after[name][pid][1] - before[name][pid][1]) / window,
                    }
                    for pid in sorted(common)
                ],
                "window_s": window,
                "window_started": t0,
                "settled_after_s": settled_after,
            }
        return out

    def latency(self, concurrency: int) -> dict[str, Any]:
        """LLM request overhead of the legacy and async clients at ``concurrency`` requests at once."""
        plan = self.plan
        n = plan.latency_rounds * concurrency if concurrency > 1 else plan.latency_requests
        n = min(n, 1900)
        (legacy,) = self.run_children(
            [("latency_legacy", {"url": self.url, "n": n, "concurrency": concurrency})]
        )
        (async_,) = self.run_children(
            [("latency_async", {"url": self.url, "n": n, "concurrency": concurrency})]
        )
        args = {"url": self.url, "n": n, "concurrency": concurrency, "http": "http1"}
        (async_http1,) = self.run_children([("latency_async", args)])
        return {"requests": n, "legacy": legacy, "async": async_, "async_http1": async_http1}

    def inflight(self) -> dict[str, Any]:
        """The most LLM requests the async client holds in flight at once (own stub, long latency)."""
        plan = self.plan
        variants: dict[str, Any] = {}
        # The client's default transport (HTTP/1.1 on aiohttp, a connection per request) in one pool,
        # up to 1,000 at once; and HTTP/2, whose pool holds 100 requests at most (httpcore, see
        # contenders.inflight), spread over target/100 clients each with its own pool.
        sizes = {
            "default_transport": (min(plan.inflight_target, 1000), 1, plan.inflight_latency_ms, "auto"),
            "http2_pools": (
                plan.inflight_target,
                math.ceil(plan.inflight_target / 100),
                plan.inflight_latency_ms,
                "http2",
            ),
        }
        with self.stub_llm(StubOptions(latency_ms=plan.inflight_latency_ms)) as (_proc, url):
            origin = url.rsplit("/v1", 1)[0]
            for name, (n, pools, latency, transport) in sizes.items():
                httpx.post(
                    f"{origin}/_stub/options", json={"latency_ms": latency}, timeout=30
                ).raise_for_status()
                child = {"url": url, "n": n, "pools": pools, "transport": transport}
                (variants[name],) = self.run_children([("inflight", child)])
                variants[name]["stub_latency_ms"] = latency
        held = {k: v["stub_max_in_flight"] if v["errors"] == 0 else 0 for k, v in variants.items()}
        best = max(held, key=lambda k: held[k])
        return {**variants[best], "best": best, "variants": variants}


def _source_state() -> dict[str, Any]:
    """The commit the code under test is at, and whether the working tree had changes."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip() or None, "dirty_files": changed[:50]}


def _micro_summary(path: Path | None) -> dict[str, Any] | None:
    """Best (min) time per micro-benchmark from a pytest-benchmark JSON file, if there is one."""
    candidates = [path] if path is not None else [REPO / "bench-results" / "micro.json"]
    for candidate in candidates:
        if candidate is not None and candidate.is_file():
            data = json.loads(candidate.read_text(encoding="utf-8"))
            benches = data.get("benchmarks", [])
            return {
                "source": str(candidate),
                "min_us": {b["name"]: b["stats"]["min"] * 1e6 for b in benches},
                # The LLM client's figures (tails, overhead, transport CPU) live in each test's extra_info.
                "extra": {b["name"]: b["extra_info"] for b in benches if b.get("extra_info")},
            }
    return None


def collect(
    plan: Plan, console: Console, *, micro_json: Path | None = None, keep_scratch: bool = False
) -> dict[str, Any]:
    """Run every scenario of ``plan``; return the results document (before verdicts)."""
    # Every line's workspaces live here until the end, deleted all at once after the last line.
    scratch = Path(tempfile.mkdtemp(prefix="ab-bench-"))
    bench = Bench(plan, scratch, console)
    workers_supported = supports_workers()
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_started_monotonic": time.monotonic(),
            "mode": plan.mode,
            "plan": plan.view(),
            "machine": machine_info(("asyncio", "uvloop")),
            "scratch_fs": scratch_filesystem(scratch),
            "command": " ".join(sys.argv),
            "source": _source_state(),
            "workload": "W workspaces, one file per todo (append a line); stub LLM in its own process",
            "legacy_loop_deployment": "`codeagent run --loop legacy --until-idle` serves one workspace per process: "
            "min(c, W) processes at once, each slot going through its share of the workspaces one after another",
            "workers_option": workers_supported,
            "run_options": sorted(run_options()),
            "loadavg_samples": [],
        }
    }
    if not workers_supported:
        console.print(
            "[yellow]`codeagent run` has no --workers at this commit: async_w1 runs without it (one process),"
            f" async_wn (--workers {plan.workers}) cannot run and is left out"
        )
        plan_profiles = []
        for profile in plan.profiles:
            contenders = {
                c: tuple(n for n in names if n != "async_wn") for c, names in profile.contenders.items()
            }
            skipped = {c: dict(v) for c, v in profile.skipped.items()}
            for c in profile.levels:
                if "async_wn" in profile.contenders[c]:
                    skipped.setdefault(c, {})["async_wn"] = (
                        "`codeagent run` has no --workers option at this commit"
                    )
            plan_profiles.append(dataclasses.replace(profile, contenders=contenders, skipped=skipped))
        plan = dataclasses.replace(plan, profiles=tuple(plan_profiles))
        bench.plan = plan
        results["meta"]["plan"] = plan.view()
    steps_total = sum(len(p.contenders[c]) for p in plan.profiles for c in p.levels)
    total_steps = steps_total + 2 + len(plan.latency_concurrency) + 1
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    steps: dict[str, float] = {}
    results["meta"]["steps_s"] = steps

    def step(task: TaskID, description: str) -> None:
        progress.update(task, description=description)
        results["meta"]["loadavg_samples"].append(
            [round(time.monotonic() - results["meta"]["run_started_monotonic"], 1), *os.getloadavg()]
        )

    try:
        with progress:
            task = progress.add_task("starting", total=total_steps)
            results["profiles"] = {}
            for profile in plan.profiles:
                with bench.stub_llm(StubOptions(**profile.stub)) as (stub, url):
                    bench.stub, bench.url = stub, url
                    levels: dict[str, dict[str, Any]] = {}
                    for c in profile.levels:
                        levels[str(c)] = {}
                        for contender in profile.contenders[c]:
                            step(task, f"{profile.name} c={c} {contender}")
                            t0 = time.monotonic()
                            levels[str(c)][contender] = bench.throughput(profile, contender, c)
                            steps[f"{profile.name}.c{c}.{contender}"] = time.monotonic() - t0
                            progress.advance(task)
                results["profiles"][profile.name] = {
                    "profile": profile.view(),
                    "stub_options": options_view(StubOptions(**profile.stub)),
                    "stub_mean_latency_ms": StubOptions(**profile.stub).mean_latency_ms,
                    "levels": levels,
                }
            with bench.stub_llm(StubOptions(latency_ms=plan.latency_ms)) as (stub, url):
                bench.stub, bench.url = stub, url
                step(task, "start-up cost of the shipped commands")
                t0 = time.monotonic()
                results["startup"] = bench.startup(plan.profiles[0])
                steps["startup"] = time.monotonic() - t0
                progress.advance(task)
                step(task, f"idle CPU ({plan.idle_seconds:g}s window)")
                t0 = time.monotonic()
                results["idle_cpu"] = bench.idle()
                steps["idle"] = time.monotonic() - t0
                progress.advance(task)
                results["latency"] = {}
                for c in plan.latency_concurrency:
                    step(task, f"LLM latency, {c} in flight")
                    t0 = time.monotonic()
                    results["latency"][str(c)] = bench.latency(c)
                    steps[f"latency.c{c}"] = time.monotonic() - t0
                    progress.advance(task)
            step(task, f"{plan.inflight_target} LLM requests in flight")
            t0 = time.monotonic()
            results["inflight"] = bench.inflight()
            steps["inflight"] = time.monotonic() - t0
            progress.advance(task)
            step(task, "done")
    finally:
        if not keep_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    results["meta"]["run_ended_monotonic"] = time.monotonic()
    results["meta"]["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["meta"]["duration_s"] = (
        results["meta"]["run_ended_monotonic"] - results["meta"]["run_started_monotonic"]
    )
    results["micro"] = _micro_summary(micro_json)
    return results


def _json_safe(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run_bench(
    quick: bool = False,
    out: Path | None = None,
    compare: Path | None = None,
    concurrency: list[int] | None = None,
    latency_ms: float = 200.0,
    *,
    smoke: bool = False,
    profile: str = "both",
    micro_json: Path | None = None,
    console: Console | None = None,
) -> int:
    """Run the suite, write ``report.md``, ``results.json`` and charts to ``out``; return an exit code.

    ``smoke`` is the smallest end-to-end run (seconds; tests). The exit code is
    0 whenever the suite ran (verdicts are figures, not a gate), 1 when a
    contender failed to run, 2 for bad arguments.
    """
    console = console or Console(stderr=True)
    mode = "smoke" if smoke else "quick" if quick else "full"
    try:
        plan = make_plan(mode, concurrency=concurrency, latency_ms=latency_ms, profile=profile)
    except ValueError as exc:
        console.print(f"[red]{exc}")
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = out if out is not None else Path("bench-results") / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    old: dict[str, Any] | None = None
    if compare is not None:
        try:
            old = json.loads(compare.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            console.print(f"[red]cannot read {compare}: {exc}")
            return 2
    try:
        results = collect(plan, console, micro_json=micro_json)
    except BenchError as exc:
        console.print(f"[red]benchmark failed: {exc}")
        return 1
    report.finish(results, old)
    results["charts"] = charts.NAMES
    crashed = [
        f"{profile} c={level} {run['contender']}"
        for profile, level, run in report.throughput_lines(results)
        if run.get("crashed")
    ]
    (out_dir / "results.json").write_text(
        json.dumps(_json_safe(results), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(report.markdown(results), encoding="utf-8")
    charts.draw(results, out_dir)
    screen = Console()
    report.print_tables(results, screen if screen.is_terminal else Console(width=200))
    console.print(f"[green]report: {out_dir / 'report.md'}  figures: {out_dir / 'results.json'}")
    if crashed:
        console.print(f"[red]a contender's process failed in: {', '.join(crashed)} (see the report)")
        return 1
    return 0


bench_app = typer.Typer(
    add_completion=False, help="A/B benchmark: legacy vs async Code Agent on one workload."
)


@bench_app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="smaller run, under 2 minutes")] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="the smallest end-to-end run (seconds)")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="output directory (default bench-results/<ts>/)")
    ] = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="an earlier results.json")] = None,
    concurrency: Annotated[
        list[int] | None, typer.Option("--concurrency", "-c", help="levels (repeat)")
    ] = None,
    latency_ms: Annotated[
        float, typer.Option("--latency-ms", help="stub LLM latency of the cpu profile")
    ] = 200.0,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            help="LLM profile: cpu (fixed latency, no faults), realistic (lognormal latency, median 2 s,"
            " p99 10 s, 3% 429s, 0.5% hangs) or both",
        ),
    ] = "both",
    micro_json: Annotated[
        Path | None, typer.Option("--micro-json", help="pytest-benchmark JSON to include")
    ] = None,
    from_results: Annotated[
        Path | None,
        typer.Option(
            "--from-results",
            help="write the report, table and charts again from an earlier results.json (runs nothing;"
            " --micro-json adds or replaces its micro-benchmark figures)",
        ),
    ] = None,
) -> None:
    """Run the A/B suite and write report.md, results.json and PNG charts."""
    if from_results is not None:
        raise typer.Exit(render_again(from_results, out, micro_json=micro_json, compare=compare))
    code = run_bench(
        quick,
        out,
        compare,
        concurrency or None,
        latency_ms,
        smoke=smoke,
        profile=profile,
        micro_json=micro_json,
    )
    raise typer.Exit(code)


def render_again(
    results_json: Path, out: Path | None, *, micro_json: Path | None = None, compare: Path | None = None
) -> int:
    """Verdicts, report, table and charts of an earlier run, with fresh micro figures if given."""
    console = Console(stderr=True)
    try:
        results = json.loads(results_json.read_text(encoding="utf-8"))
        old = json.loads(compare.read_text(encoding="utf-8")) if compare is not None else None
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot read {exc}")
        return 2
    if "profiles" not in results:
        console.print(
            f"[red]{results_json} comes from an earlier version of the suite (no profiles, bare contenders):"
            " its figures cannot be rendered as this report; run the suite again"
        )
        return 2
    if micro_json is not None:
        results["micro"] = _micro_summary(micro_json)
        results["meta"]["micro_added"] = f"{micro_json} (after the run, by --from-results)"
    out_dir = out if out is not None else results_json.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    report.finish(results, old)
    (out_dir / "results.json").write_text(
        json.dumps(_json_safe(results), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(report.markdown(results), encoding="utf-8")
    charts.draw(results, out_dir)
    screen = Console()
    report.print_tables(results, screen if screen.is_terminal else Console(width=200))
    console.print(f"[green]report: {out_dir / 'report.md'}  figures: {out_dir / 'results.json'}")
    return 0
