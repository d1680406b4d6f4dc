"""Each target's entry: sizes and time from the context, the stub it needs, a JSON-ready result."""

from __future__ import annotations

import time
from typing import Any

from codeagent_app.chaos import crashes, procs
from codeagent_app.chaos.runner import Context, Runner
from llm_stub import StubOptions

#: The stub's latency for crash targets: small, so a todo is cheap and a kill lands often mid-todo.
CRASH_LATENCY_MS = 3.0


def _crash(name: str) -> Runner:
    def run(ctx: Context) -> dict[str, Any]:
        target = crashes.loop_targets()[name]
        if ctx.quick:
            target.todos_per_workspace = min(target.todos_per_workspace, 25)
        deadline = time.monotonic() + ctx.sizes.crash_seconds
        with procs.stub(StubOptions(latency_ms=CRASH_LATENCY_MS, seed=ctx.seed)) as stub:
            run = crashes.CrashRun(
                target,
                stub.url,
                ctx.work,
                ctx.rng(f"crash-{name}"),
                kills=ctx.kills,
                deadline=deadline,
                tick=ctx.load.tick,
            )
            stats = run.run()
        result = stats.as_dict()
        result["kills_planned"] = ctx.kills
        return result

    return run


def _crash_migrate(ctx: Context) -> dict[str, Any]:
    from codeagent_app.chaos.migrate_kills import MigrationKills, legacy_template

    with procs.stub(StubOptions(latency_ms=1.0, seed=ctx.seed)) as stub:
        template = legacy_template(ctx.work, stub.url, ctx.sizes.migrate_checkpoints)
    deadline = time.monotonic() + ctx.sizes.crash_seconds
    kills = MigrationKills(
        template, ctx.work, ctx.rng("crash-migrate"), kills=ctx.kills, deadline=deadline, tick=ctx.load.tick
    )
    stats = kills.run()
    parts = {op: s.as_dict() for op, s in stats.items()}
    return {
        "ok": all(p["ok"] for p in parts.values()),
        "checkpoints": ctx.sizes.migrate_checkpoints,
        "kills_planned": ctx.kills,
        **parts,
    }


def _lazy(module: str, function: str) -> Runner:
    def run(ctx: Context) -> dict[str, Any]:
        import importlib

        result: dict[str, Any] = getattr(importlib.import_module(f"codeagent_app.chaos.{module}"), function)(
            ctx
        )
        return result

    return run


RUNNERS: dict[str, Runner] = {
    "crash-legacy": _crash("legacy"),
    "crash-async": _crash("async"),
    "crash-worker": _crash("worker"),
    "crash-migrate": _crash_migrate,
    "llm": _lazy("llm_faults", "run"),
    "disk": _lazy("disk", "run"),
    "soak": _lazy("soak", "run"),
    "reload": _lazy("reloads", "run"),
    "fuzz": _lazy("fuzz", "run"),
    "escapes": _lazy("escapes", "run"),
    "api": _lazy("api_abuse", "run"),
}
