"""Derived figures, verdicts, the comparison with an earlier run, ``report.md`` and the console tables.

Each target of the issue gets a verdict computed from this run's figures of
the contenders it names (never from the bare kernel, a reference line); every
verdict names its contender, profile and level and the figure it reads. A
verdict whose figures this run did not measure (a smaller mode, one profile,
other levels) says so instead of passing or failing.
"""

from __future__ import annotations

import math
import re
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.scenarios import ASYNC_SHIPPED, CONTENDERS, LABELS, REFERENCE, SHORT

T_CPU_LOOP = "throughput: async (workers = cores) >= 1.8x the legacy loop, cpu profile, c = 100"
T_CPU_THREADS = (
    "throughput: async (workers = cores) at least level with the legacy thread pool, cpu profile, c = 100"
)
T_REAL_THREADS = "throughput: async >= 1.4x the legacy thread pool, realistic profile, c = 1,000"
T_REAL_LOOP = "throughput: async >= 8x the legacy loop, realistic profile, c = 100"
T_REAL_LIMIT = (
    "throughput: async >= 85% of min(c / mean stub latency, cores / CPU per todo), realistic profile, c = 100"
)
T_IDLE_WAKEUPS = "idle, as shipped: async 0 wake-ups per second"
T_IDLE_CPU = "idle, as shipped: async <= 0.05 ms CPU per second"
T_LATENCY = "LLM request overhead: the async client at least 20% below the legacy client"
T_CONCURRENT = "at least 100 todos in progress at once (LLM requests in flight), none failed"
T_10K = "10,000 LLM requests in flight at once without error (async client)"
T_1K_DEFAULT = "1,000 concurrent LLM requests through the async client's default transport: 0 errors"
T_OVERHEAD_1 = "client overhead at 1 in flight, fixed 200 ms stub: async p50 <= legacy p50"
T_CPU_PER_TODO = (
    "CPU per todo (agent + git + children): async (workers = cores) <= 0.6x the legacy loop, cpu c = 100"
)
T_TAILS_P99 = "realistic tails per LLM request (micro, scaled): async p99 <= 0.7x legacy at the same load"
T_TAILS_P50 = "realistic tails per LLM request (micro, scaled): async p50 <= 1.0x legacy at the same load"
T_HEDGES = "hedged requests <= 5% of requests (realistic tails, micro)"

#: The micro-benchmark tests whose extra_info carries the scaled realistic tails, per client.
TAILS_TEST = "test_tails_of_the_scaled_realistic_profile[{client}]"

#: LLM clients of the latency probe: the legacy client, the async client as configured (HTTP/2), and over HTTP/1.1.
LATENCY_CLIENTS = ("legacy", "async", "async_http1")
#: Idle lines that are the async loop as shipped (each gets the idle verdicts).
IDLE_ASYNC = ("async_default", "async_w1")
IDLE_LABELS = {
    "legacy_loop": "legacy loop as shipped, one workspace",
    "async_default": "async loop as shipped, default --workers, W workspaces",
    "async_w1": "async loop as shipped, --workers 1, one workspace",
    "bare_kernel": "bare kernel (reference), one workspace",
}


def _cores(results: dict[str, Any]) -> int:
    return int(results["meta"]["machine"]["cpus"] or 1)


def throughput_lines(results: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every throughput line as ``(profile, level, run)``."""
    return [
        (name, level, run)
        for name, prof in results["profiles"].items()
        for level, runs in prof["levels"].items()
        for run in runs.values()
    ]


def derive_throughput(results: dict[str, Any]) -> None:
    """Per line: its limit ``min(c / mean stub latency, cores / cheapest CPU per todo)``, its share, per core."""
    cores = _cores(results)
    for prof in results["profiles"].values():
        runs = [r for runs in prof["levels"].values() for r in runs.values()]
        per_todo = [
            r["total_cpu_per_todo_s"]
            for r in runs
            if r["done"]
            and r["contender"] not in REFERENCE
            and isinstance(r["total_cpu_per_todo_s"], float)
            and math.isfinite(r["total_cpu_per_todo_s"])
        ]
        cheapest = min(per_todo) if per_todo else math.nan
        prof["cpu_per_todo_cheapest_s"] = cheapest
        prof["cpu_bound_todos_per_s"] = cores / cheapest if cheapest and cheapest > 0 else math.inf
        for run in runs:
            measured = run["stub"].get("latency_mean_ms")
            latency_ms = float(measured) if measured else float(prof["stub_mean_latency_ms"])
            run["mean_stub_latency_ms"] = latency_ms
            bound = run["concurrency"] / (latency_ms / 1000.0) if latency_ms > 0 else math.inf
            run["latency_bound_todos_per_s"] = bound
            limit = min(bound, prof["cpu_bound_todos_per_s"])
            run["limit_todos_per_s"] = limit
            run["fraction_of_limit"] = run["todos_per_s"] / limit if limit > 0 else math.nan
            run["todos_per_s_per_core"] = run["todos_per_s"] / cores
    results["limit_formula"] = (
        "min(c / mean stub latency of the line's own run, cores / cheapest CPU-seconds per todo "
        "(process tree + stub) among the profile's lines, reference line excluded)"
    )


def _verdict(
    line: str,
    contender: str,
    figure: str,
    value: float,
    threshold: float,
    passed: bool,
    note: str = "",
    *,
    measured: bool = True,
) -> dict[str, Any]:
    return {
        "line": line,
        "contender": contender,
        "figure": figure,
        "value": value,
        "threshold": threshold,
        "pass": bool(passed) and measured,
        "measured": measured,
        "note": note,
    }


def _run(results: dict[str, Any], profile: str, level: int, contender: str) -> dict[str, Any] | None:
    prof = results["profiles"].get(profile)
    if prof is None:
        return None
    run: dict[str, Any] | None = prof["levels"].get(str(level), {}).get(contender)
    return run


def _missing(line: str, contender: str, figure: str, threshold: float, why: str) -> dict[str, Any]:
    return _verdict(line, contender, figure, math.nan, threshold, False, why, measured=False)


def _ratio(
    results: dict[str, Any],
    line: str,
    profile: str,
    level: int,
    contender: str,
    base: str,
    threshold: float,
) -> dict[str, Any]:
    """A verdict on ``contender / base`` todos/s (sustained), with the batch ratio in the note."""
    figure = f"todos/s {profile} c={level}: {contender} / {base}"
    new, old = _run(results, profile, level, contender), _run(results, profile, level, base)
    if new is None or old is None:
        absent = " and ".join(n for n, r in ((contender, new), (base, old)) if r is None)
        return _missing(line, contender, figure, threshold, f"not measured in this run: {absent}")
    ratio = new["todos_per_s"] / old["todos_per_s"] if old["todos_per_s"] else math.inf
    batch = new["batch_todos_per_s"] / old["batch_todos_per_s"] if old["batch_todos_per_s"] else math.inf
    note = (
        f"{new['todos_per_s']:.2f} vs {old['todos_per_s']:.2f} todos/s sustained; "
        f"batch (start to exit) {new['batch_todos_per_s']:.2f} vs {old['batch_todos_per_s']:.2f} = {batch:.2f}x"
    )
    if new["failed"] or old["failed"]:
        note += f"; failed todos {new['failed']} / {old['failed']}"
    for run in (new, old):
        if run.get("crashed"):
            note += f"; {run['contender']} process failed: {run['crashed'][0][:200]}"
    return _verdict(line, contender, figure, ratio, threshold, ratio >= threshold, note)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue with its figure and pass/fail (or not measured)."""
    out: list[dict[str, Any]] = [
        _ratio(results, T_CPU_LOOP, "cpu", 100, "async_wn", "legacy_loop", 1.8),
        _ratio(results, T_CPU_THREADS, "cpu", 100, "async_wn", "legacy_threads", 1.0),
    ]
    for contender in reversed(ASYNC_SHIPPED):
        out.append(_ratio(results, T_REAL_THREADS, "realistic", 1000, contender, "legacy_threads", 1.4))
    for contender in reversed(ASYNC_SHIPPED):
        out.append(_ratio(results, T_REAL_LOOP, "realistic", 100, contender, "legacy_loop", 8.0))
    for contender in reversed(ASYNC_SHIPPED):
        figure = f"todos/s realistic c=100: {contender} / its limit"
        run = _run(results, "realistic", 100, contender)
        if run is None:
            out.append(
                _missing(T_REAL_LIMIT, contender, figure, 0.85, f"not measured in this run: {contender}")
            )
            continue
        note = (
            f"{run['todos_per_s']:.2f} todos/s of a limit of {run['limit_todos_per_s']:.2f} "
            f"(latency bound {run['latency_bound_todos_per_s']:.2f} = 100 / {run['mean_stub_latency_ms'] / 1000:.2f} s, "
            f"CPU bound {results['profiles']['realistic']['cpu_bound_todos_per_s']:.2f}); "
            f"batch {run['batch_todos_per_s'] / run['limit_todos_per_s']:.0%} of it"
        )
        out.append(
            _verdict(
                T_REAL_LIMIT,
                contender,
                figure,
                run["fraction_of_limit"],
                0.85,
                run["fraction_of_limit"] >= 0.85,
                note,
            )
        )
    idle = results.get("idle_cpu", {})
    legacy = idle.get("legacy_loop")
    legacy_note = (
        f"legacy loop as shipped: {legacy['wakeups_per_s']:.2f} wake-ups/s, {legacy['cpu_ms_per_s']:.3f} ms CPU/s"
        if legacy
        else "legacy loop not measured"
    )
    for name in IDLE_ASYNC:
        row = idle.get(name)
        if row is None:
            out.append(_missing(T_IDLE_WAKEUPS, name, "idle wake-ups per second", 0.0, "not measured"))
            out.append(_missing(T_IDLE_CPU, name, "idle CPU ms per second", 0.05, "not measured"))
            continue
        tree = f"{row['processes']} process(es), {row['threads']} threads; {legacy_note}"
        out.append(
            _verdict(
                T_IDLE_WAKEUPS,
                name,
                f"idle wake-ups per second, whole process tree ({row['window_s']:.0f} s window)",
                row["wakeups_per_s"],
                0.0,
                row["wakeups_per_s"] <= 0.0,
                tree,
            )
        )
        out.append(
            _verdict(
                T_IDLE_CPU,
                name,
                f"idle CPU ms per second, whole process tree ({row['window_s']:.0f} s window)",
                row["cpu_ms_per_s"],
                0.05,
                row["cpu_ms_per_s"] <= 0.05,
                tree,
            )
        )
    for level, lat in results.get("latency", {}).items():
        for client, point in [(c, p) for c in LATENCY_CLIENTS[1:] if c in lat for p in ("p50", "p99")]:
            old = lat["legacy"]["overhead_ms"][point]
            new = lat[client]["overhead_ms"][point]
            change = (new - old) / old if old > 0 else math.inf
            out.append(
                _verdict(
                    T_LATENCY,
                    f"{client} client",
                    f"LLM overhead {point}, {level} in flight: {client} vs legacy client (change)",
                    change,
                    -0.20,
                    change <= -0.20,
                    f"legacy {old:.2f} ms, {client} {new:.2f} ms",
                )
            )
    for name, prof in results["profiles"].items():
        top = max(prof["levels"], key=int)
        run = prof["levels"][top].get("async_wn")
        if run is None:
            continue
        held = int(run["stub"]["max_in_flight"])
        ok = run["failed"] == 0 and run["done"] == run["todos"] and held >= 100
        out.append(
            _verdict(
                T_CONCURRENT,
                "async_wn",
                f"most LLM requests in flight at once (stub's count), {name} c={top}",
                held,
                100,
                ok,
                f"{run['done']}/{run['todos']} done, {run['failed']} failed",
            )
        )
    inflight = results.get("inflight")
    if inflight:
        held = inflight["stub_max_in_flight"] if inflight["errors"] == 0 else 0
        out.append(
            _verdict(
                T_10K,
                "async client",
                "LLM requests held in flight at once without error (stub's count)",
                held,
                10_000,
                held >= 10_000,
                f"{inflight['errors']} errors of {inflight['requested']}"
                + ("" if inflight["requested"] >= 10_000 else "; this mode asks for fewer"),
                measured=inflight["requested"] >= 10_000,
            )
        )
        default = inflight.get("variants", {}).get("default_transport")
        if default is not None:
            out.append(
                _verdict(
                    T_1K_DEFAULT,
                    f"async client, {default['http_version']}",
                    "errors among the requests held at once",
                    default["errors"],
                    0,
                    default["errors"] == 0
                    and default["stub_max_in_flight"] >= min(1000, default["requested"]) * 0.95,
                    f"{default['ok']}/{default['requested']} answered; the stub held {default['stub_max_in_flight']} at once",
                    measured=default["requested"] >= 1000,
                )
            )
    out += _client_verdicts(results)
    return out


def _client_verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The LLM client's lines: overhead at 1 in flight, CPU per todo, and the scaled realistic tails."""
    out: list[dict[str, Any]] = []
    one = results.get("latency", {}).get("1") or results.get("latency", {}).get(1)
    if one and "legacy" in one and "async" in one:
        old, new = one["legacy"]["overhead_ms"]["p50"], one["async"]["overhead_ms"]["p50"]
        ratio = new / old if old > 0 else math.inf
        note = f"legacy {old:.2f} ms, async {new:.2f} ms ({one['async'].get('http_version', '?')})"
        out.append(
            _verdict(
                T_OVERHEAD_1, "async client", "overhead p50: async / legacy", ratio, 1.0, ratio <= 1.0, note
            )
        )
    else:
        out.append(
            _missing(T_OVERHEAD_1, "async client", "overhead p50: async / legacy", 1.0, "not measured")
        )
    new_run, old_run = _run(results, "cpu", 100, "async_wn"), _run(results, "cpu", 100, "legacy_loop")
    if new_run is not None and old_run is not None and old_run.get("cpu_per_todo_s"):
        ratio = new_run["cpu_per_todo_s"] / old_run["cpu_per_todo_s"]
        note = f"async_wn {new_run['cpu_per_todo_s'] * 1000:.1f} ms, legacy loop {old_run['cpu_per_todo_s'] * 1000:.1f} ms"
        out.append(
            _verdict(
                T_CPU_PER_TODO, "async_wn", "CPU ms per todo: async / legacy", ratio, 0.6, ratio <= 0.6, note
            )
        )
    extra = (results.get("micro") or {}).get("extra", {})
    legacy, async_ = (
        extra.get(TAILS_TEST.format(client="legacy")),
        extra.get(TAILS_TEST.format(client="async")),
    )
    if legacy is None or async_ is None:
        for line, threshold in ((T_TAILS_P99, 0.7), (T_TAILS_P50, 1.0), (T_HEDGES, 0.05)):
            out.append(
                _missing(line, "async client", "micro figures", threshold, "no micro tails in this run")
            )
        return out
    load = f"{async_['requests']} requests, {async_['in_flight']} in flight, {async_['errors']} errors"
    for line, point, threshold in ((T_TAILS_P99, "wall_p99_ms", 0.7), (T_TAILS_P50, "wall_p50_ms", 1.0)):
        ratio = async_[point] / legacy[point]
        note = f"legacy {legacy[point]:.0f} ms, async {async_[point]:.0f} ms; {load}"
        out.append(
            _verdict(
                line, "async client", f"{point}: async / legacy", ratio, threshold, ratio <= threshold, note
            )
        )
    share = float(async_.get("hedge_share", math.nan))
    note = f"{async_.get('hedges')} hedges, {async_.get('hedge_wins')} won"
    out.append(_verdict(T_HEDGES, "async client", "hedges / requests", share, 0.05, share <= 0.05, note))
    return out


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """The headline figures as ``{dotted.name: value}`` (what ``--compare`` compares)."""
    flat: dict[str, float] = {}
    for profile, level, run in throughput_lines(results):
        key = f"throughput.{profile}.c{level}.{run['contender']}"
        flat[f"{key}.todos_per_s"] = run["todos_per_s"]
        flat[f"{key}.batch_todos_per_s"] = run["batch_todos_per_s"]
        flat[f"{key}.cpu_per_todo_ms"] = 1000 * run["cpu_per_todo_s"]
        if "loop_lag_ms" in run:
            flat[f"{key}.loop_lag_p99_ms"] = run["loop_lag_ms"].get("p99", math.nan)
    for level, lat in results.get("latency", {}).items():
        for client in [c for c in LATENCY_CLIENTS if c in lat]:
            for point in ("p50", "p95", "p99"):
                flat[f"latency.c{level}.{client}.overhead_{point}_ms"] = lat[client]["overhead_ms"][point]
    for name, idle in results.get("idle_cpu", {}).items():
        flat[f"idle.{name}.cpu_ms_per_s"] = idle["cpu_ms_per_s"]
        flat[f"idle.{name}.wakeups_per_s"] = idle["wakeups_per_s"]
    if results.get("inflight"):
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
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def _mark(verdict: dict[str, Any]) -> str:
    if not verdict.get("measured", True):
        return "NOT MEASURED"
    return "PASS" if verdict["pass"] else "FAIL"


def _process_name(role: str) -> str:
    """``python -m codeagent_app.worker (pid 12)`` -> ``codeagent_app.worker``; a command -> ``supervisor``."""
    if role.startswith("python -m "):
        return role.removeprefix("python -m ").split(" (pid")[0]
    return "main process"


def _limits(run: dict[str, Any]) -> str:
    limits = run.get("limits")
    if isinstance(limits, dict):
        return (
            f"max-concurrency {limits['max_concurrency']}, per-workspace {limits['per_workspace']}, "
            f"llm-slots {limits['llm_slots']}, file-slots {limits['file_slots']}"
        )
    return str(limits)


def _faults(run: dict[str, Any]) -> str:
    faults = run["stub"].get("by_fault") or {}
    return " ".join(f"{k}x{v}" for k, v in sorted(faults.items())) or "-"


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table of the report as ``(title, header, rows)``; shared by markdown and the console."""
    out: list[tuple[str, list[str], list[list[str]]]] = []
    levels = sorted({int(lv) for prof in results["profiles"].values() for lv in prof["levels"]})
    rows = []
    for name, prof in results["profiles"].items():
        for contender in CONTENDERS:
            cells = []
            for level in levels:
                run = prof["levels"].get(str(level), {}).get(contender)
                cells.append("-" if run is None else _f(run["todos_per_s"], 1))
            if any(cell != "-" for cell in cells):
                workers = next(
                    (
                        r["workers"]
                        for runs in prof["levels"].values()
                        for n, r in runs.items()
                        if n == contender
                    ),
                    1,
                )
                label = SHORT[contender] + (f" ({workers})" if contender == "async_wn" else "")
                rows.append([name, f"{contender}: {label}", *cells])
    out.append(
        (
            "Headline: todos/s (sustained) at each concurrency c",
            ["profile", "contender", *(f"c = {c}" for c in levels)],
            rows,
        )
    )
    for name, prof in results["profiles"].items():
        profile = prof["profile"]
        rows = []
        for level, runs in sorted(prof["levels"].items(), key=lambda kv: int(kv[0])):
            for contender in [c for c in CONTENDERS if c in runs]:
                run = runs[contender]
                lag = run.get("loop_lag_ms", {}).get("p99", math.nan) if "loop_lag_ms" in run else math.nan
                rows.append(
                    [
                        level,
                        contender,
                        str(run["workers"]),
                        _limits(run),
                        f"{run['done']}/{run['todos']}",
                        _f(run["todos_per_s"], 2),
                        _f(run["batch_todos_per_s"], 2),
                        _f(run["todos_per_s_per_core"], 2),
                        _f(run["limit_todos_per_s"], 1),
                        f"{100 * run['fraction_of_limit']:.0f}%",
                        _f(1000 * run["cpu_per_todo_s"]),
                        _f(1000 * run["total_cpu_per_todo_s"]),
                        _f(run["cores_busy"], 2),
                        _f(run.get("other_cores_busy", math.nan), 2),
                        str(run["stub"]["max_in_flight"]),
                        _faults(run),
                        _f(run["wall_s"], 1),
                        _f(lag, 1),
                        "; ".join(run.get("crashed", [])[:1])[:300]
                        + (f"; {run['failed']} todo(s) failed" if run["failed"] else ""),
                    ]
                )
            for contender, why in profile["skipped"].get(level, {}).items():
                rows.append([level, contender, *(["-"] * 16), f"not run: {why}"])
        title = (
            f"Throughput, {name} profile ({profile['description']}); client timeout "
            f"{profile['client_timeout_s']:g} s, {profile['max_retries']} retries"
        )
        out.append(
            (
                title,
                [
                    "c",
                    "contender",
                    "workers",
                    "limits",
                    "done",
                    "todos/s",
                    "batch todos/s",
                    "todos/s per core",
                    "limit",
                    "of limit",
                    "CPU ms/todo",
                    "+stub ms/todo",
                    "cores busy",
                    "others' cores busy",
                    "LLM in flight max",
                    "faults served",
                    "wall s",
                    "lag p99 ms",
                    "note",
                ],
                rows,
            )
        )
    rows = [
        [contender, row["command"], str(row["workspaces"]), _f(row["wall_s"], 2), _f(row["cpu_s"], 2)]
        for contender, row in results.get("startup", {}).items()
    ]
    if rows:
        out.append(
            (
                "Start-up and shut-down of the shipped commands (empty workspaces, --until-idle; "
                "included in every line's CPU and batch figures)",
                ["contender", "command", "workspaces", "wall s", "CPU s (tree)"],
                rows,
            )
        )
    rows = []
    for level, lat in sorted(results.get("latency", {}).items(), key=lambda kv: int(kv[0])):
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
    if rows:
        out.append(
            (
                "LLM request overhead (client-seen minus the stub's own time, ms; stub at the cpu profile's fixed latency)",
                ["in flight", "client", "matched", "p50", "p95", "p99", "client p50", "stub p50", "http"],
                rows,
            )
        )
    rows = [
        [
            name,
            r["command"],
            str(r["workspaces"]),
            str(r["processes"]),
            str(r["threads"]),
            _f(r["cpu_ms_per_s"], 3),
            _f(r["wakeups_per_s"], 2),
            _f(r["window_s"], 1),
            "; ".join(
                f"{_process_name(row['process'])} {row['wakeups_per_s']:.2f}/s {row['cpu_ms_per_s']:.3f} ms/s"
                for row in r.get("per_process", [])
            )
            if len(r.get("per_process", [])) > 1
            else "",
        ]
        for name, r in results.get("idle_cpu", {}).items()
    ]
    if rows:
        out.append(
            (
                "Idle (waiting for work): every process of the tree, every thread, both kinds of context switch",
                [
                    "contender",
                    "command",
                    "workspaces",
                    "processes",
                    "threads",
                    "CPU ms per s",
                    "wake-ups per s",
                    "window s",
                    "per process (wake-ups, CPU)",
                ],
                rows,
            )
        )
    inf = results.get("inflight")
    if inf:
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
                "LLM requests in flight (async client, uvloop; first row: the default transport, HTTP/1.1 on "
                "aiohttp, one pool; second row: HTTP/2, whose pool holds 100 at most (httpcore carries 100 streams "
                "per connection and opens no second one to the same origin), spread over requested/100 clients)",
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
        [
            v["line"],
            v["contender"],
            v["figure"],
            _f(float(v["value"]), 3),
            _f(float(v["threshold"]), 2),
            _mark(v),
            v["note"],
        ]
        for v in results["verdicts"]
    ]
    out.append(
        ("Verdicts", ["target", "contender", "figure", "value", "threshold", "verdict", "figures"], rows)
    )
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


def _loadavg(meta: dict[str, Any]) -> str:
    samples = meta.get("loadavg_samples") or []
    text = f"load average at start {meta['machine']['loadavg_at_start']}, at end {meta.get('loadavg_at_end')}"
    if samples:
        ones = [s[1] for s in samples]
        text += f"; 1-minute load average sampled before each step: {min(ones):.2f} to {max(ones):.2f}"
    return text + " (other work on the machine shows up here)"


def _scratch_fs(meta: dict[str, Any]) -> list[str]:
    """The workspaces' file system, and why it is named (older results have no record of it)."""
    fs = meta.get("scratch_fs")
    if not fs:
        return []
    journal = fs.get("journal")
    kind = f"{fs.get('fstype')}" + (
        "" if journal is None else (" with a journal" if journal else " without a journal")
    )
    text = (
        f"Workspaces: on {kind} ({fs.get('device')} at {fs.get('mountpoint')}, {fs.get('options')}). Every line's "
        "workspaces are kept until the suite ends, so no line pays for the deletion of another's"
    )
    if journal is False:
        text += (
            ": on ext4 without a journal each new inode skips the inodes its group freed in the last minute or "
            "more, so creating a file costs more the more files were deleted just before (this is also why a "
            "line that follows heavy deletions on the machine runs slower)"
        )
    return [text + ".", ""]


def _method(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    plan = meta["plan"]
    cores = _cores(results)
    workers = plan["workers"]
    lines = [
        "## Method",
        "",
        f"Workload: {meta['workload']}; W = {plan['workspaces']} workspaces. Every workspace has the same "
        "`.agent/config.json` (the stub's `llm.base_url`, the profile's `llm.timeout` and `llm.max_retries`); "
        'the async contenders\' workspaces also have `.agent/flags.toml` with `loop = "async"` and every component '
        '`mode = "new"`, the legacy ones have none (every component legacy). Each profile has its own stub LLM '
        "process; its counters are reset before each line, and its draws are keyed by prompt in the realistic "
        "profile, so every line meets the same latencies and faults for the same todos.",
        "",
        "Contenders: "
        + "; ".join(f"`{k}` = {v}" for k, v in LABELS.items() if k != "async_wn")
        + f"; `async_wn` = `codeagent run --loop async --workers {workers}` as shipped (workers = the {workers} "
        "cores this process may use). Legacy loop deployment: " + meta["legacy_loop_deployment"] + ". "
        "The async commands get `--max-concurrency c --per-workspace ceil(c / W) --llm-slots c "
        "--file-slots max(64, c)` (each worker applies them; `per-workspace` bounds the whole set to c todos at "
        "once for c >= W); the bare kernel gets the same limits in-process. "
        + (
            ""
            if meta.get("workers_option", True)
            else "`codeagent run` had no `--workers` option at this commit: `async_w1` ran without it (one "
            "process) and `async_wn` could not run. "
        ),
        "",
        "What is counted: every contender runs in child processes of the suite, each in its own session, and "
        "the suite waits for each with `os.wait4`. **CPU per todo** is the `rusage` (user + system) of those "
        "processes and of every descendant they waited for (git, the async loop's worker processes): the whole "
        "process tree from exec to exit, start-up and shut-down included (the start-up table shows that part), "
        "divided by the todos done; **+stub** adds the stub LLM process's CPU over the same line (from "
        "`/proc/<pid>/task/*/schedstat`). **todos/s** is sustained throughput: the todos finished between the "
        "10th and the 90th percentile completion instants (`finished_at` in each workspace's status file) divided "
        "by the time between them, which leaves out process start-up and the drain of the last, slowest todos "
        "(a hang's timeout); **batch todos/s** is todos done / (last process exit - first process start), "
        "the wall time a batch takes. Verdicts read todos/s and show the batch ratio beside. "
        f"**todos/s per core** = todos/s / the machine's {cores} cores (not the cores a line kept busy; "
        "**cores busy** = (CPU of the tree + stub) / wall; **others' cores busy** = the machine's busy CPU time over the same wall time, less the line's and the stub's, / wall: other work competing for the cores). **LLM in flight max** is the stub's count of "
        "requests in flight at once during the line. **limit** = " + results.get("limit_formula", "") + ".",
        "",
        "Idle: each loop as shipped, started without `--until-idle` on workspaces with nothing to do, settled, "
        "then measured side by side over one window: CPU from schedstat and context switches (voluntary and "
        "involuntary) of every thread of every process of its tree (supervisor and workers).",
        "",
    ]
    for name, prof in results["profiles"].items():
        p = prof["profile"]
        lines.append(
            f"Profile `{name}`: {p['description']}. Stub options: "
            + ", ".join(
                f"{k}={v}"
                for k, v in prof["stub_options"].items()
                if k
                in (
                    "latency_ms",
                    "latency_p99_ms",
                    "jitter_ms",
                    "fault_rates",
                    "retry_after_s",
                    "hang_s",
                    "seed",
                    "draws",
                )
            )
            + f"; mean latency of the distribution {prof['stub_mean_latency_ms']:.0f} ms. Client: `llm.timeout = "
            f"{p['client_timeout_s']:g}` s (a hang costs that, then a retry, on both loops), `llm.max_retries = "
            f"{p['max_retries']}`. Levels {', '.join(str(c) for c in p['levels'])}; todos per workspace "
            + ", ".join(f"c={c}: {n}" for c, n in p["todos_per_workspace"].items())
            + " (legacy loop: "
            + ", ".join(
                f"c={c}: {n}"
                for c, n in p["legacy_loop_todos_per_workspace"].items()
                if "legacy_loop" in p["contenders"].get(str(c), ())
            )
            + f"); cheapest CPU per todo {1000 * prof['cpu_per_todo_cheapest_s']:.1f} ms, so the CPU bound is "
            f"{prof['cpu_bound_todos_per_s']:.1f} todos/s."
        )
        lines.append("")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """``report.md``: machine, method, tables, verdicts, charts."""
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        "# A/B benchmark: legacy vs async Code Agent, as shipped",
        "",
        f"Run {meta['started_at']} -> {meta['finished_at']} ({meta['duration_s']:.0f} s), mode `{meta['mode']}`, "
        f"profiles {', '.join(results['profiles'])}.",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpus_physical']} physical), {m['memory_gib']} GiB, {m['platform']}; "
        f"Python {m['python']} ({m['implementation']}); uvloop {m['uvloop']}; {_loadavg(meta)}.",
        "",
        *_scratch_fs(meta),
        f"Code under test: commit `{(meta['source']['commit'] or '?')[:12]}`"
        + (
            f", with uncommitted changes in {', '.join(meta['source']['dirty_files'][:12])}"
            + (" ..." if len(meta["source"]["dirty_files"]) > 12 else "")
            if meta["source"]["dirty_files"]
            else ", clean tree"
        )
        + ".",
        "",
        *_method(results),
    ]
    for title, header, rows in tables(results):
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
        lines.append("")
    for name in results.get("charts", []):
        lines += [f"![{name}]({name})", ""]
    micro = results.get("micro")
    if micro:
        added = meta.get("micro_added")
        lines += [
            "## Micro-benchmarks (read from "
            + micro["source"]
            + (", run after the suite and added by --from-results" if added else "")
            + ")",
            "",
        ]
        lines += micro_derived(micro["min_us"])
        lines += ["| benchmark | min µs |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in sorted(micro["min_us"].items())]
        lines.append("")
    else:
        lines += ["Micro-benchmarks: no pytest-benchmark JSON given (`--micro-json`), not rerun.", ""]
    steps = meta.get("steps_s") or {}
    if steps:
        lines += ["Seconds per step: " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + ".", ""]
    return "\n".join(lines)


def print_tables(results: dict[str, Any], console: Console) -> None:
    """The report's tables on the console."""
    for title, header, rows in tables(results):
        table = Table(title=title, title_justify="left", show_lines=False)
        for column in header:
            table.add_column(column, overflow="fold")
        for row in rows:
            styled = [
                f"[green]{c}"
                if c == "PASS"
                else f"[red]{c}"
                if c == "FAIL"
                else f"[yellow]{c}"
                if c == "NOT MEASURED"
                else c
                for c in row
            ]
            table.add_row(*styled)
        console.print(table)
