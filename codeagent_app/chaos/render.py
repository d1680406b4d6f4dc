"""``docs/reliability.md`` from the campaign's record (:mod:`~codeagent_app.chaos.report`)."""

from __future__ import annotations

import json
from typing import Any

from codeagent_app.chaos.findings import DEFECTS, MISSING

FULL_KILLS = 1000


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def _run_line(result: dict[str, Any]) -> str:
    run = result.get("run") or {}
    machine = run.get("machine") or {}
    load = run.get("load_during_run") or {}
    commit = str(run.get("commit") or "?")[:12] + (" (+ uncommitted changes)" if run.get("dirty") else "")
    shards = run.get("shards")
    pieces = f"{shards} shards side by side (seeds {run.get('seed')}), " if shards else ""
    return (
        f"_{run.get('campaign', '?')} run of {run.get('started_at', '?')}, {pieces}commit {commit}, "
        f"{machine.get('usable_cores', '?')} cores, Python {machine.get('python', '?')}, "
        f"load average during the run {load.get('mean', '?')} (max {load.get('max', '?')}), "
        f"{result.get('seconds', '?')} s, {'invariants held' if result.get('ok') else '**FAILED**'}._"
    )


def _crash_rows(record: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    targets = record["targets"]
    for name, label in (
        ("crash-legacy", "legacy loop"),
        ("crash-async", "async core"),
        ("crash-worker", "one worker of 2"),
    ):
        r = targets.get(name)
        if r and "landed" in r:
            rows.append(_crash_row(label, r))
    migrate = targets.get("crash-migrate") or {}
    for op in ("apply", "rollback"):
        if isinstance(migrate.get(op), dict):
            part = {**migrate[op], "kills_planned": migrate.get("kills_planned")}
            part["todos"] = f"{part.get('todos')} checkpoints"
            rows.append(_crash_row(f"`migrate {op}`", part))
    return rows


def _crash_row(label: str, r: dict[str, Any]) -> list[Any]:
    return [
        label,
        f"{r.get('landed')} / {r.get('kills_planned')}",
        r.get("landed_working"),
        r.get("mid_todo"),
        r.get("missed"),
        r.get("restarts"),
        r.get("todos"),
        r.get("unreadable_state"),
        r.get("lost"),
        r.get("doubled"),
        r.get("wrong_content"),
        r.get("other_problems"),
        r.get("leftover_tmp_files"),
        r.get("seconds"),
    ]


def crash_section(record: dict[str, Any]) -> list[str]:
    """Kills per target and what the invariants found."""
    out = ["## 1. Crashes: SIGKILL at random moments, restart, check", ""]
    out += [
        "Each life of a target is killed with SIGKILL at a random moment: a fifth of the kills uniformly over "
        "its start-up, the others, once it works, uniformly over what is left of its run (the todos left times "
        "the cost of one, measured by a clean run). Only the process dies: its git children may finish on their "
        "own, as after a real crash. After each kill the state is checked (every state file parses, no "
        "`Todo-Id` trailer twice, every file holds its before- or after-content) and the same command starts "
        "again, until the workload is done; then every invariant is checked (every todo `done` with the commit "
        "carrying its trailer, each trailer once, every file exactly what the edits say, the work tree clean). "
        "*Landed*: the target was alive; *working*: it had recorded itself as the workspace's loop (a "
        "migration: its lock or journal was on disk), the kills the budget counts; *mid-todo*: a todo was "
        "running too; *missed*: the target finished before its kill. Workloads: rounds of 40 small todos "
        "(legacy, async; 4 workspaces of 15 for the worker), the stub at 3 ms; the migration: a workspace a "
        "legacy run finished (one checkpoint per todo), `apply` then `rollback` per round.",
        "",
    ]
    rows = _crash_rows(record)
    if not rows:
        return [*out, "_Not run yet._", ""]
    out += _table(
        [
            "target",
            "kills landed / planned",
            "working",
            "mid-todo",
            "missed",
            "restarts",
            "todos",
            "unreadable state files",
            "lost",
            "doubled",
            "wrong content",
            "other",
            "temp files left",
            "s",
        ],
        rows,
    )
    for name in ("crash-legacy", "crash-async", "crash-worker", "crash-migrate"):
        if name in record["targets"]:
            out += [f"- `{name}`: " + _run_line(record["targets"][name])]
            problems = _problems(record["targets"][name])
            out += [f"  - {p}" for p in problems[:5]]
    return [*out, ""]


def _problems(result: dict[str, Any]) -> list[str]:
    found = list(result.get("problems") or [])
    for key in ("apply", "rollback", "legacy", "async"):
        part = result.get(key)
        if isinstance(part, dict):
            found += [f"{key}: {p}" for p in part.get("problems") or []]
    if result.get("error"):
        found.append(f"error: {result['error']}")
    # One line each: a problem quoting a program's output (git's advice runs over several lines) stays one item.
    return [" ".join(str(p).split()) for p in found]


def generic_section(title: str, result: dict[str, Any] | None, lines: list[str]) -> list[str]:
    """A section with its prose, the run line, and the result's problems."""
    out = [title, ""]
    if result is None:
        return [*out, "_Not run yet._", ""]
    out += [*lines, _run_line(result), ""]
    problems = _problems(result)
    if problems:
        out += ["Problems found:", ""] + [f"- {p}" for p in problems[:10]] + [""]
    return out


def page(record: dict[str, Any]) -> str:
    """The whole page."""
    from codeagent_app.chaos import sections

    targets = record["targets"]
    out = [
        "# Reliability: what the agent survived",
        "",
        "Written by `codeagent chaos` (the full campaign; `nox -s chaos`), from `docs/reliability.json`. "
        "The campaign runs the shipped command lines as real processes on real git workspaces with the stub "
        "LLM (`llm_stub/`), and checks the invariants after every fault. `codeagent chaos --quick` (every "
        "target, small) runs in CI (`.ci/run`). Run the rest of the campaign, or all of it again, with "
        "`codeagent chaos [--targets crash,llm,...] [--kills N] [--seed N]`.",
        "",
        "## Summary",
        "",
    ]
    out += sections.summary(record)
    out += crash_section(record)
    out += sections.llm(targets.get("llm"))
    out += sections.disk(targets.get("disk"), targets.get("soak"))
    out += sections.reloads(targets.get("reload"))
    out += sections.fuzz(targets.get("fuzz"), targets.get("escapes"))
    out += sections.api(targets.get("api"))
    out += ["## Defects the campaign found (each fixed with a regression test)", ""]
    out += [f"{i}. {d}" for i, d in enumerate(DEFECTS, 1)] + [""]
    out += ["## Not covered yet", ""] + [f"- {m}" for m in MISSING] + [""]
    out += ["## Runs", ""]
    out += _table(
        ["started", "campaign", "targets", "s", "commit", "cores", "load (mean/max)", "ok"],
        [
            [
                r.get("started_at"),
                r.get("campaign"),
                ", ".join(r.get("targets") or []),
                r.get("seconds"),
                str(r.get("commit"))[:12] + ("+" if r.get("dirty") else ""),
                (r.get("machine") or {}).get("usable_cores"),
                f"{(r.get('load_during_run') or {}).get('mean')}/{(r.get('load_during_run') or {}).get('max')}",
                r.get("ok"),
            ]
            for r in record.get("runs", [])[-20:]
        ],
    )
    return "\n".join(out).rstrip() + "\n"


def dump(value: Any) -> str:
    """Compact JSON for a table cell."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
