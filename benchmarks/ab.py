"""The A/B benchmark suite: legacy and async Code Agent on the same workload, same machine, one run.

``python -m benchmarks [--quick|--smoke] [--out DIR] [--compare OLD.json]`` (the CLI wires
:data:`bench_app` / :func:`run_bench` as ``codeagent bench``).

Contenders (see :mod:`benchmarks.contenders`): the legacy ``while True`` loop
(one process per workspace, as a legacy server serves one workspace: at
concurrency ``c`` there are ``min(c, workspaces)`` loop processes, each going
through its share of the workspaces one after another), the legacy components
on a thread pool of ``c`` threads, and the async kernel on the default asyncio
loop and on uvloop (one process for every workspace, ``max_concurrency = c``).
The stub LLM runs in its own process and answers after ``latency_ms``.

Scenarios: throughput at each concurrency level against the physical limit
``min(c / latency, cores / CPU-seconds per todo)``; LLM request overhead
(client-seen time minus the stub's own time) of the legacy and async clients;
idle CPU; the most LLM requests held in flight; event-loop lag under load.
Every figure comes from this run (see :mod:`benchmarks.measure`).
"""

from __future__ import annotations

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
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import charts, report
from benchmarks.measure import REPO, child_env, cpu_and_wakeups, machine_info
from benchmarks.scenarios import ASYNC_CONTENDERS, Plan, make_plan, make_workspace, make_workspaces
from llm_stub import StubOptions, start_stub_process, stop_stub_process

CHILD_TIMEOUT_S = 900.0


class BenchError(RuntimeError):
    """A contender or probe failed; the message holds the tail of its stderr."""


class Bench:
    """One run of the suite: the plan, a scratch directory, the stub LLM, and the figures gathered."""

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

    def _spawn(self, kind: str, args: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path, Path]:
        self._seq += 1
        out = self.logs / f"{self._seq:03d}-{kind}.json"
        err = self.logs / f"{self._seq:03d}-{kind}.stderr"
        with err.open("wb") as handle:
            proc = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.contenders", kind, json.dumps(args), str(out)],
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
        """Run jobs at once, each in its own child process; return their figures in order."""
        started = [(kind, *self._spawn(kind, args)) for kind, args in jobs]
        return [self._collect(proc, out, err, kind) for kind, proc, out, err in started]

    @contextmanager
    def stub_llm(self, latency_ms: float) -> Iterator[tuple[subprocess.Popen[str], str]]:
        """A stub LLM child process answering after ``latency_ms``."""
        proc, url = start_stub_process(StubOptions(latency_ms=latency_ms))
        try:
            yield proc, url
        finally:
            stop_stub_process(proc)

    def stub_cpu(self) -> float:
        """CPU seconds the main stub process has used so far."""
        assert self.stub is not None
        return cpu_and_wakeups(psutil.Process(self.stub.pid))[0]

    # ------------------------------------------------------------------ scenarios

    def throughput(self, contender: str, concurrency: int) -> dict[str, Any]:
        """One contender at one concurrency level, on fresh workspaces."""
        plan = self.plan
        per = plan.todos_per_workspace[concurrency]
        base = self.scratch / f"tp-c{concurrency}-{contender}"
        roots = [str(r) for r in make_workspaces(base, plan.workspaces, per)]
        jobs: list[tuple[str, dict[str, Any]]]
        if contender == "legacy_loop":
            processes = min(concurrency, len(roots))
            groups = [roots[i::processes] for i in range(processes)]
            jobs = [("legacy_loop", {"roots": group, "url": self.url}) for group in groups]
        elif contender == "legacy_threads":
            jobs = [("legacy_threads", {"roots": roots, "url": self.url, "threads": concurrency})]
        else:
            use_uvloop = contender == "async_uvloop"
            jobs = [
                ("async", {"roots": roots, "url": self.url, "concurrency": concurrency, "uvloop": use_uvloop})
            ]
        stub0 = self.stub_cpu()
        parts = self.run_children(jobs)
        stub_cpu = self.stub_cpu() - stub0
        started = min(p["started"] for p in parts)
        ended = max(p["ended"] for p in parts)
        wall = ended - started
        done = sum(p["done"] for p in parts)
        failed = sum(p["failed"] for p in parts)
        cpu = sum(p["cpu_s"] for p in parts)
        shutil.rmtree(base, ignore_errors=True)
        result: dict[str, Any] = {
            "processes": len(parts),
            "todos": plan.workspaces * per,
            "done": done,
            "failed": failed,
            "started": started,
            "ended": ended,
            "wall_s": wall,
            "todos_per_s": done / wall if wall > 0 else 0.0,
            "cpu_s": cpu,
            "stub_cpu_s": stub_cpu,
            "cpu_per_todo_s": cpu / done if done else math.nan,
            "total_cpu_per_todo_s": (cpu + stub_cpu) / done if done else math.nan,
        }
        if contender in ASYNC_CONTENDERS:
            result["loop_lag_ms"] = parts[0]["loop_lag_ms"]
        errors = [e for p in parts for e in p.get("errors", [])]
        if errors:
            result["errors"] = errors[:5]
        return result

    @staticmethod
    def _settle(handles: dict[str, psutil.Process], *, step: float = 0.5, limit: float = 30.0) -> float:
        """Wait until every process has finished starting up; return how long that took (seconds).

        A fixed warm-up is not enough on a loaded machine: a process still
        importing or opening its workspace would count its start-up as idle
        CPU. Settled means a whole ``step`` in which every process used under
        5 ms of CPU (the idle loops use well under 1 ms per second).
        """
        t0 = time.monotonic()
        last = {name: cpu_and_wakeups(h)[0] for name, h in handles.items()}
        while time.monotonic() - t0 < limit:
            time.sleep(step)
            now = {name: cpu_and_wakeups(h)[0] for name, h in handles.items()}
            busy = [name for name in handles if now[name] - last[name] > 0.005]
            last = now
            if not busy:
                break
        return time.monotonic() - t0

    def idle(self) -> dict[str, Any]:
        """CPU and wake-ups of every contender waiting for work, measured over one shared window."""
        plan = self.plan
        jobs: dict[str, tuple[str, dict[str, Any]]] = {}
        for contender in plan.contenders:
            root = self.scratch / f"idle-{contender}"
            make_workspace(root, 0)
            if contender == "legacy_loop":
                jobs[contender] = ("idle_legacy_loop", {"root": str(root), "url": self.url})
            elif contender == "legacy_threads":
                jobs[contender] = ("idle_legacy_threads", {"root": str(root), "url": self.url, "threads": 10})
            else:
                jobs[contender] = (
                    "idle_async",
                    {"root": str(root), "url": self.url, "uvloop": contender == "async_uvloop"},
                )
        spawned = {name: self._spawn(kind, args) for name, (kind, args) in jobs.items()}
        try:
            time.sleep(plan.idle_warmup)
            for name, (proc, _out, err) in spawned.items():
                if proc.poll() is not None:
                    tail = err.read_text(encoding="utf-8", errors="replace")[-2000:]
                    raise BenchError(f"idle {name} exited early ({proc.returncode}):\n{tail}")
            handles = {name: psutil.Process(proc.pid) for name, (proc, _o, _e) in spawned.items()}
            settled_after = self._settle(handles)
            before = {name: cpu_and_wakeups(h) for name, h in handles.items()}
            t0 = time.monotonic()
            time.sleep(plan.idle_seconds)
            after = {name: cpu_and_wakeups(h) for name, h in handles.items()}
            window = time.monotonic() - t0
        finally:
            for proc, _out, _err in spawned.values():
                if proc.poll() is None:
                    proc.terminate()
            for proc, _out, _err in spawned.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        return {
            name: {
                "cpu_s": after[name][0] - before[name][0],
                "cpu_ms_per_s": 1000.0 * (after[name][0] - before[name][0]) / window,
                "wakeups_per_s": (after[name][1] - before[name][1]) / window,
                "window_s": window,
                "window_started": t0,
                "settled_after_s": settled_after,
            }
            for name in spawned
        }

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
        # One endpoint pool holds 100 requests at most (httpcore, see contenders.inflight): the
        # "one_pool" variant shows that with a few hundred requests; "pools" spreads the target
        # over target/100 clients, each with its own pool.
        sizes = {
            "one_pool": (min(plan.inflight_target, 300), 1, plan.inflight_latency_ms / 3),
            "pools": (plan.inflight_target, math.ceil(plan.inflight_target / 100), plan.inflight_latency_ms),
        }
        with self.stub_llm(plan.inflight_latency_ms) as (_proc, url):
            origin = url.rsplit("/v1", 1)[0]
            for name, (n, pools, latency) in sizes.items():
                httpx.post(
                    f"{origin}/_stub/options", json={"latency_ms": latency}, timeout=30
                ).raise_for_status()
                (variants[name],) = self.run_children([("inflight", {"url": url, "n": n, "pools": pools})])
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
            return {
                "source": str(candidate),
                "min_us": {b["name"]: b["stats"]["min"] * 1e6 for b in data.get("benchmarks", [])},
            }
    return None


def collect(
    plan: Plan, console: Console, *, micro_json: Path | None = None, keep_scratch: bool = False
) -> dict[str, Any]:
    """Run every scenario of ``plan``; return the results document (before verdicts)."""
    scratch = Path(tempfile.mkdtemp(prefix="ab-bench-"))
    bench = Bench(plan, scratch, console)
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_started_monotonic": time.monotonic(),
            "mode": plan.mode,
            "plan": plan.view(),
            "machine": machine_info(("asyncio", "uvloop")),
            "command": " ".join(sys.argv),
            "source": _source_state(),
            "workload": "W workspaces, one file per todo (append a line); stub LLM in its own process",
            "legacy_loop_deployment": "one legacy loop process per workspace; min(c, W) processes at concurrency c",
        }
    }
    total_steps = len(plan.concurrency) * len(plan.contenders) + 1 + len(plan.latency_concurrency) + 1
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    try:
        with progress:
            task = progress.add_task("starting stub LLM", total=total_steps)
            with bench.stub_llm(plan.latency_ms) as (stub, url):
                bench.stub, bench.url = stub, url
                steps: dict[str, float] = {}
                results["meta"]["steps_s"] = steps
                levels: dict[str, dict[str, Any]] = {}
                for c in plan.concurrency:
                    levels[str(c)] = {}
                    for contender in plan.contenders:
                        progress.update(task, description=f"throughput c={c} {contender}")
                        t0 = time.monotonic()
                        levels[str(c)][contender] = bench.throughput(contender, c)
                        steps[f"throughput.c{c}.{contender}"] = time.monotonic() - t0
                        progress.advance(task)
                results["throughput"] = {"levels": levels, "stub_latency_ms": plan.latency_ms}
                progress.update(task, description=f"idle CPU ({plan.idle_seconds:g}s window)")
                t0 = time.monotonic()
                results["idle_cpu"] = bench.idle()
                steps["idle"] = time.monotonic() - t0
                progress.advance(task)
                results["latency"] = {}
                for c in plan.latency_concurrency:
                    progress.update(task, description=f"LLM latency, {c} in flight")
                    t0 = time.monotonic()
                    results["latency"][str(c)] = bench.latency(c)
                    steps[f"latency.c{c}"] = time.monotonic() - t0
                    progress.advance(task)
            progress.update(task, description=f"{plan.inflight_target} LLM requests in flight")
            t0 = time.monotonic()
            results["inflight"] = bench.inflight()
            results["meta"]["steps_s"]["inflight"] = time.monotonic() - t0
            progress.advance(task)
            progress.update(task, description="done")
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
        plan = make_plan(mode, concurrency=concurrency, latency_ms=latency_ms)
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
    results["charts"] = ["throughput.png", "latency.png", "idle_cpu.png"]
    (out_dir / "results.json").write_text(
        json.dumps(_json_safe(results), indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8"
    )
    (out_dir / "report.md").write_text(report.markdown(results), encoding="utf-8")
    charts.draw(results, out_dir)
    screen = Console()
    report.print_tables(results, screen if screen.is_terminal else Console(width=200))
    console.print(f"[green]report: {out_dir / 'report.md'}  figures: {out_dir / 'results.json'}")
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
    latency_ms: Annotated[float, typer.Option("--latency-ms", help="stub LLM latency")] = 200.0,
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
    code = run_bench(quick, out, compare, concurrency or None, latency_ms, smoke=smoke, micro_json=micro_json)
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
