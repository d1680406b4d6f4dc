"""Derived figures, verdicts, the comparison with an earlier run, ``report.md`` and the console tables.

Acceptance lines (A2 of the mission) and project targets each get a verdict
computed from this run's figures; every verdict names the figure it reads.
"""

from __future__ import annotations

import math
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.scenarios import ASYNC_CONTENDERS, CONTENDERS, LABELS

A2_THROUGHPUT = "A2: throughput at least +30% (async vs legacy loop)"
A2_LATENCY = "A2: LLM request latency at least -20% (client overhead, async vs legacy client)"
A2_IDLE = "A2: idle CPU at least -15% (async vs legacy loop)"
A2_CONCURRENT = "A2: at least 100 concurrent operations"
T_20X = "target: async >= 20x legacy loop throughput at 100 concurrent"
T_2X = "target: async >= 2x the legacy thread pool at 100 concurrent"
T_IDEAL = "target: async >= 80% of the physical limit"
T_IDLE = "target: async idle CPU <= 1/20 of the legacy loop"
T_LAG = "target: event-loop lag p99 <= 5 ms under full load"
T_10K = "target: 10,000 LLM requests in flight without error"

#: LLM clients of the latency probe: the legacy client, the async client as configured (HTTP/2), and over HTTP/1.1.
LATENCY_CLIENTS = ("legacy", "async", "async_http1")


def _headline_level(levels: dict[str, Any]) -> str:
    keys = sorted(levels, key=int)
    return "100" if "100" in levels else keys[-1]


def derive_throughput(results: dict[str, Any]) -> None:
    """Physical limit per level and each contender's fraction of it."""
    through = results["throughput"]
    levels: dict[str, dict[str, Any]] = through["levels"]
    cores = results["meta"]["machine"]["cpus"] or 1
    latency_s = through["stub_latency_ms"] / 1000.0
    per_todo = [
        r["total_cpu_per_todo_s"]
        for runs in levels.values()
        for r in runs.values()
        if r["done"] and not math.isnan(r["total_cpu_per_todo_s"])
    ]
    cheapest = min(per_todo) if per_todo else math.nan
    through["cpu_per_todo_cheapest_s"] = cheapest
    through["cpu_bound_todos_per_s"] = cores / cheapest if cheapest > 0 else math.inf
    limits: dict[str, float] = {}
    for level, runs in levels.items():
        latency_bound = int(level) / latency_s if latency_s > 0 else math.inf
        limit = min(latency_bound, through["cpu_bound_todos_per_s"])
        limits[level] = limit
        for run in runs.values():
            run["fraction_of_limit"] = run["todos_per_s"] / limit if limit > 0 else math.nan
    through["physical_limit_todos_per_s"] = limits
    through["physical_limit_formula"] = (
        "min(concurrency / stub latency, cores / cheapest CPU-seconds per todo (agent + git + stub) in this run)"
    )


def _verdict(
    line: str, figure: str, value: float, threshold: float, passed: bool, note: str = ""
) -> dict[str, Any]:
    return {
        "line": line,
        "figure": figure,
        "value": value,
        "threshold": threshold,
        "pass": bool(passed),
        "note": note,
    }


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every acceptance line and project target with its figure and pass/fail."""
    out: list[dict[str, Any]] = []
    levels = results["throughput"]["levels"]
    head = _headline_level(levels)
    runs = levels[head]
    legacy = runs["legacy_loop"]["todos_per_s"]
    threads = runs["legacy_threads"]["todos_per_s"]
    for name in ASYNC_CONTENDERS:
        rate = runs[name]["todos_per_s"]
        gain = rate / legacy - 1 if legacy else math.inf
        out.append(
            _verdict(A2_THROUGHPUT, f"throughput c={head} {name} / legacy_loop - 1", gain, 0.30, gain >= 0.30)
        )
        ratio = rate / legacy if legacy else math.inf
        out.append(_verdict(T_20X, f"throughput c={head} {name} / legacy_loop", ratio, 20.0, ratio >= 20.0))
        vs_threads = rate / threads if threads else math.inf
        out.append(
            _verdict(T_2X, f"throughput c={head} {name} / legacy_threads", vs_threads, 2.0, vs_threads >= 2.0)
        )
        fraction = runs[name]["fraction_of_limit"]
        out.append(
            _verdict(
                T_IDEAL, f"throughput c={head} {name} / physical limit", fraction, 0.80, fraction >= 0.80
            )
        )
    for level, lat in results["latency"].items():
        for client, point in [(c, p) for c in LATENCY_CLIENTS[1:] if c in lat for p in ("p50", "p99")]:
            old = lat["legacy"]["overhead_ms"][point]
            new = lat[client]["overhead_ms"][point]
            change = (new - old) / old if old > 0 else math.inf
            out.append(
                _verdict(
                    A2_LATENCY,
                    f"LLM overhead {point}, {level} in flight: {client} vs legacy client (change)",
                    change,
                    -0.20,
                    change <= -0.20,
                    f"legacy {old:.2f} ms, async {new:.2f} ms",
                )
            )
    idle = results["idle_cpu"]
    base = idle["legacy_loop"]["cpu_ms_per_s"]
    for name in ASYNC_CONTENDERS:
        value = idle[name]["cpu_ms_per_s"]
        change = (value - base) / base if base > 0 else math.nan
        out.append(
            _verdict(
                A2_IDLE,
                f"idle CPU {name} vs legacy_loop (change)",
                change,
                -0.15,
                change <= -0.15,
                f"legacy {base:.3f} ms/s, {name} {value:.3f} ms/s",
            )
        )
        ratio = value / base if base > 0 else math.nan
        out.append(_verdict(T_IDLE, f"idle CPU {name} / legacy_loop", ratio, 0.05, ratio <= 0.05))
    inflight = results["inflight"]
    held = inflight["stub_max_in_flight"] if inflight["errors"] == 0 else 0
    out.append(
        _verdict(
            A2_CONCURRENT,
            "LLM requests held in flight at once without error (stub's count)",
            held,
            100,
            held >= 100,
            f"{inflight['errors']} errors of {inflight['requested']}",
        )
    )
    top = max(levels, key=int)
    for name in ASYNC_CONTENDERS:
        run = levels[top][name]
        ok = run["failed"] == 0 and run["done"] == run["todos"] and int(top) >= 100
        out.append(
            _verdict(
                A2_CONCURRENT,
                f"todos run with concurrency {top} by {name}, none failed",
                int(top),
                100,
                ok,
                f"{run['done']}/{run['todos']} done",
            )
        )
        lag = run["loop_lag_ms"].get("p99", math.nan)
        out.append(_verdict(T_LAG, f"loop lag p99 at c={top}, {name} (ms)", lag, 5.0, lag <= 5.0))
    out.append(
        _verdict(
            T_10K,
            "LLM requests held in flight at once without error",
            held,
            10_000,
            held >= 10_000,
            "" if inflight["requested"] >= 10_000 else f"this mode asks for {inflight['requested']} only",
        )
    )
    return out


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """The headline figures as ``{dotted.name: value}`` (what ``--compare`` compares)."""
    flat: dict[str, float] = {}
    for level, runs in results["throughput"]["levels"].items():
        for name, run in runs.items():
            flat[f"throughput.c{level}.{name}.todos_per_s"] = run["todos_per_s"]
            flat[f"throughput.c{level}.{name}.cpu_per_todo_ms"] = 1000 * run["cpu_per_todo_s"]
            if "loop_lag_ms" in run:
                flat[f"throughput.c{level}.{name}.loop_lag_p99_ms"] = run["loop_lag_ms"].get("p99", math.nan)
    for level, lat in results["latency"].items():
        for client in [c for c in LATENCY_CLIENTS if c in lat]:
            for point in ("p50", "p95", "p99"):
                flat[f"latency.c{level}.{client}.overhead_{point}_ms"] = lat[client]["overhead_ms"][point]
    for name, idle in results["idle_cpu"].items():
        flat[f"idle.{name}.cpu_ms_per_s"] = idle["cpu_ms_per_s"]
    flat["inflight.held"] = results["inflight"]["stub_max_in_flight"]
    flat["inflight.bytes_per_in_flight"] = results["inflight"]["bytes_per_in_flight"]
    return {k: v for k, v in flat.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def comparison(new: dict[str, Any], old: dict[str, Any]) -> list[dict[str, Any]]:
    """Each headline figure of both runs and its relative change."""
    before = old.get("figures") or flatten(old)
    after = new["figures"]
    rows = []
    for key in sorted(set(before) & set(after)):
        a, b = before[key], after[key]
        rows.append({"figure": key, "old": a, "new": b, "change": (b - a) / a if a else math.nan})
    return rows


def finish(results: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Add the derived figures, verdicts, flat figures and (with ``old``) the comparison."""
    derive_throughput(results)
    results["verdicts"] = verdicts(results)
    results["figures"] = flatten(results)
    if old is not None:
        results["comparison"] = {
            "old_started_at": old.get("meta", {}).get("started_at"),
            "rows": comparison(results, old),
        }


def _f(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _mark(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table of the report as ``(title, header, rows)``; shared by markdown and the console."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    through = results["throughput"]
    limits = through["physical_limit_todos_per_s"]
    rows = []
    for level, runs in sorted(through["levels"].items(), key=lambda kv: int(kv[0])):
        for name in CONTENDERS:
            run = runs[name]
            lag = run.get("loop_lag_ms", {}).get("p99", math.nan) if "loop_lag_ms" in run else math.nan
            rows.append(
                [
                    level,
                    name,
                    f"{run['done']}/{run['todos']}",
                    _f(run["todos_per_s"]),
                    _f(limits[level]),
                    f"{100 * run['fraction_of_limit']:.0f}%",
                    _f(1000 * run["cpu_per_todo_s"]),
                    _f(1000 * run["total_cpu_per_todo_s"]),
                    _f(lag, 2),
                    str(run["processes"]),
                ]
            )
    out.append(
        (
            f"Throughput (todos/s), stub latency {through['stub_latency_ms']:g} ms — answers A2 throughput +30%, "
            "targets 20x / 2x / 80% of ideal",
            [
                "c",
                "contender",
                "done",
                "todos/s",
                "limit",
                "of limit",
                "CPU ms/todo",
                "+stub ms/todo",
                "lag p99 ms",
                "procs",
            ],
            rows,
        )
    )
    rows = []
    for level, lat in sorted(results["latency"].items(), key=lambda kv: int(kv[0])):
        for client in [c for c in LATENCY_CLIENTS if c in lat]:
            r = lat[client]
            o, c, s = r["overhead_ms"], r["client_ms"], r["stub_ms"]
            rows.append(
                [
                    level,
                    client,
                    f"{r['matched']}/{r['requests']}",
                    _f(o["p50"], 2),
                    _f(o["p95"], 2),
                    _f(o["p99"], 2),
                    _f(c["p50"], 1),
                    _f(s["p50"], 1),
                    r.get("http_version", "HTTP/1.1"),
                ]
            )
    out.append(
        (
            "LLM request overhead (client-seen minus stub's own time, ms) — answers A2 latency -20%",
            ["in flight", "client", "matched", "p50", "p95", "p99", "client p50", "stub p50", "http"],
            rows,
        )
    )
    rows = [
        [name, _f(r["cpu_ms_per_s"], 3), _f(r["wakeups_per_s"], 1), _f(r["window_s"], 1)]
        for name, r in results["idle_cpu"].items()
    ]
    out.append(
        (
            "Idle CPU (process waiting for work) — answers A2 idle CPU -15%, target 1/20",
            ["contender", "CPU ms per s", "wake-ups per s", "window s"],
            rows,
        )
    )
    inf = results["inflight"]
    rows = [
        [
            str(v["requested"]),
            str(v.get("pools", 1)),
            str(v["ok"]),
            str(v["errors"]),
            str(v["stub_max_in_flight"]),
            str(v["client_max_in_flight"]),
            _f(v["bytes_per_in_flight"] / 1024, 1),
            str(v["connections"]),
            v["http_version"],
            _f(v["ended"] - v["started"], 2),
            _f(float(v.get("stub_latency_ms", math.nan)), 0),
        ]
        for v in inf.get("variants", {"only": inf}).values()
    ]
    out.append(
        (
            "LLM requests in flight (async client, uvloop) — "
            "answers A2 >= 100 concurrent, target 10,000 (httpcore carries at most 100 streams per HTTP/2 "
            "connection and opens no second one to the same origin, so one endpoint pool holds 100; the second "
            "row spreads the requests over requested/100 clients, each with its own pool)",
            [
                "requested",
                "pools",
                "ok",
                "errors",
                "held (stub)",
                "held (client)",
                "KiB / in flight",
                "conns",
                "http",
                "wall s",
                "stub ms",
            ],
            rows,
        )
    )
    rows = [
        [v["line"], v["figure"], _f(v["value"], 3), _f(float(v["threshold"]), 2), _mark(v["pass"]), v["note"]]
        for v in results["verdicts"]
    ]
    out.append(("Verdicts", ["line", "figure", "value", "threshold", "verdict", "note"], rows))
    if "comparison" in results:
        rows = [
            [
                r["figure"],
                _f(r["old"], 3),
                _f(r["new"], 3),
                "-" if math.isnan(r["change"]) else f"{100 * r['change']:+.1f}%",
            ]
            for r in results["comparison"]["rows"]
        ]
        out.append(
            (
                f"Change against {results['comparison']['old_started_at']}",
                ["figure", "old", "new", "change"],
                rows,
            )
        )
    return out


#: Calls per round of the bridge-overhead micro-benchmarks (benchmarks/micro/test_bridge_overhead.py).
BRIDGE_CALLS_PER_ROUND = 1000


def micro_derived(min_us: dict[str, float]) -> list[str]:
    """Bridge overhead per routed call, and per operation the twin vs legacy and async_to_sync vs twin."""
    lines: list[str] = []
    for face in ("sync", "async"):
        routed = min_us.get(f"test_routed_{face}_call_mode_new")
        direct = min_us.get(f"test_direct_{face}_call")
        if routed is not None and direct is not None:
            per_call = (routed - direct) / BRIDGE_CALLS_PER_ROUND
            lines.append(f"- bridge overhead per routed call, {face} face (mode new): {per_call:.2f} µs")
    rows: dict[str, dict[str, float]] = {}
    for name, value in min_us.items():
        match = re.fullmatch(r"test_(\w+)\[(\w+)\]", name)
        if match:
            rows.setdefault(match[1], {})[match[2]] = value
    table = []
    for operation, row in sorted(rows.items()):
        if "legacy" in row and "core_sync" in row:
            a2s = row.get("async_to_sync")
            a2s_cell = f"{a2s / row['core_sync']:.1f}x" if a2s is not None else "-"
            table.append(f"| {operation} | {row['core_sync'] / row['legacy']:.2f}x | {a2s_cell} |")
    if table:
        lines += ["", "| operation | twin / legacy | async_to_sync / twin |", "|---|---|---|", *table]
    return [*lines, ""] if lines else []


def markdown(results: dict[str, Any]) -> str:
    """``report.md``: machine, method, tables, verdicts, charts."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# A/B benchmark: legacy vs async Code Agent",
        "",
        f"Run {meta['started_at']} -> {meta['finished_at']} ({meta['duration_s']:.0f} s), mode `{meta['mode']}`.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpus_physical']} physical), {m['memory_gib']} GiB, {m['platform']}; "
        f"Python {m['python']} ({m['implementation']}); loops: asyncio and uvloop {m['uvloop']}; "
        f"load average at start {m['loadavg_at_start']}, at end {meta.get('loadavg_at_end')} "
        "(other work on the machine shows up here).",
        "",
        f"Code under test: commit `{(meta['source']['commit'] or '?')[:12]}`"
        + (
            f", with uncommitted changes in {', '.join(meta['source']['dirty_files'][:8])}"
            if meta["source"]["dirty_files"]
            else ", clean tree"
        )
        + ".",
        "",
        f"Workload: {meta['workload']}. Legacy loop deployment: {meta['legacy_loop_deployment']}. "
        "Thread pool: c threads calling `LegacyAgent.process`, one git lock per repository. "
        "Async: one kernel process over every workspace, `max_concurrency = c`. "
        "Every contender runs in its own child process on fresh workspaces; CPU is `getrusage` of the child and "
        "its git subprocesses over its working window, plus the stub process's CPU over the same run.",
        "",
        f"Physical limit: {results['throughput']['physical_limit_formula']}; cheapest CPU per todo in this run "
        f"{1000 * results['throughput']['cpu_per_todo_cheapest_s']:.1f} ms, so the CPU bound is "
        f"{results['throughput']['cpu_bound_todos_per_s']:.1f} todos/s.",
        "",
    ]
    for title, header, rows in tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
        lines.append("")
    for name in results.get("charts", []):
        lines += [f"![{name}]({name})", ""]
    micro = results.get("micro")
    if micro:
        lines += ["## Micro-benchmarks (read from " + micro["source"] + ")", ""]
        lines += micro_derived(micro["min_us"])
        lines += ["| benchmark | min µs |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in sorted(micro["min_us"].items())]
        lines.append("")
    else:
        lines += ["Micro-benchmarks: no pytest-benchmark JSON given (`--micro-json`), not rerun.", ""]
    labels = ", ".join(f"`{k}` = {v}" for k, v in LABELS.items())
    lines += [f"Contenders: {labels}.", ""]
    return "\n".join(lines)


def print_tables(results: dict[str, Any], console: Console) -> None:
    """The report's tables on the console."""
    for title, header, rows in tables(results):
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            styled = [f"[green]{c}" if c == "PASS" else f"[red]{c}" if c == "FAIL" else c for c in row]
            table.add_row(*styled)
        console.print(table)
