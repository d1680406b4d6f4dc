"""LLM faults at 20%: both loops against a stub that answers one request in five with a fault.

Two mixes, each on both loops (and the async client streaming, where a ``cut``
breaks the stream mid-answer):

* ``transient``: 500s, 429s with Retry-After, hangs (past the client's timeout),
  connection resets, malformed JSON and bodies cut short, 20% in all. Every
  one is a transport fault a client retries, so at least 99% of the todos must
  end ``done``.
* ``mixed``: the same at 17%, plus 3% answers whose edit blocks are broken
  (well-formed 200s a model may send). Every todo must end ``done`` or
  ``failed`` with a reason.

In both: no todo left ``running`` or ``pending``, every done todo committed
once with its exact content, a failed one with its file untouched, and the
requests per todo bounded by the client's attempts (``max_retries + 1``),
read from the stub's per-todo counts. Draws are keyed by prompt
(``draws = "prompt"``), so the loops meet the same faults on the same todos.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

from codeagent.models import StatusFile, TodoStatus
from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace, new_path_flags
from llm_stub import StubOptions

TRANSIENT = {"500": 0.04, "429": 0.04, "reset": 0.03, "malformed": 0.03, "hang": 0.02, "cut": 0.04}
MIXED = {
    "500": 0.03,
    "429": 0.03,
    "reset": 0.03,
    "malformed": 0.03,
    "hang": 0.02,
    "cut": 0.03,
    "broken_edit": 0.03,
}
#: The client's timeout (a hang lasts longer) and retries: 4 attempts per todo at most.
TIMEOUT_S = 1.0
MAX_RETRIES = 3
DONE_FLOOR = 0.99

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "legacy": ("legacy", {}),
    "async": ("async", {}),
    "async-stream": ("async", {"stream": True}),
}


def reason_of(error: str | None) -> str:
    """A failure's reason without the parts that differ per todo (ids, paths, numbers)."""
    if not error:
        return "(no reason)"
    words = []
    for word in error.split()[:8]:
        words.append("#" if any(ch.isdigit() for ch in word) else word)
    return " ".join(words)


def one_run(ctx: Context, mix_name: str, mix: dict[str, float], variant: str, work: Path) -> dict[str, Any]:
    """One loop on one workspace against the stub with ``mix``; the outcome and the figures."""
    loop, llm = VARIANTS[variant]
    load = Workload(ctx.sizes.llm_todos)
    root = work / f"llm-{mix_name}-{variant}"
    config = fast_config(timeout=TIMEOUT_S, max_retries=MAX_RETRIES, **llm)
    make_workspace(root, [load], config=config, flags=new_path_flags() if loop == "async" else None)
    options = StubOptions(
        latency_ms=5.0, fault_rates=mix, retry_after_s=0.1, hang_s=30.0, draws="prompt", seed=ctx.seed
    )
    started = time.monotonic()
    with procs.stub(options) as stub, (root.parent / f"{root.name}.log").open("wb") as log:
        proc = procs.start(
            procs.codeagent(
                "run",
                "--loop",
                loop,
                "-w",
                str(root),
                "--llm-url",
                stub.url,
                "--until-idle",
                "--workers",
                "1",
            ),
            log,
        )
        code = procs.wait_or_kill(proc, 900)
        stats = stub.stats(by_todo=True)
    seconds = round(time.monotonic() - started, 1)
    status = StatusFile.model_validate_json((root / ".agent" / "status.json").read_text(encoding="utf-8"))
    outcomes = Counter(s.status.value for s in status.todos.values())
    reasons = Counter(reason_of(s.error) for s in status.todos.values() if s.status is TodoStatus.FAILED)
    per_todo = list(stats["by_todo"].values())
    problems = checks.final_check(root, [load], allow_failed=True)
    if code != 0:
        problems.append(f"the loop exited {code}")
    left = sorted(t for t in load.ids() if t not in status.todos or not status.todos[t].status.finished)
    problems += [
        f"{t}: not finished ({status.todos[t].status.value if t in status.todos else 'no status'})"
        for t in left
    ]
    done_share = outcomes.get("done", 0) / load.count
    if mix_name == "transient" and done_share < DONE_FLOOR:
        problems.append(
            f"only {done_share:.1%} of the todos done at 20% transient faults (floor {DONE_FLOOR:.0%})"
        )
    bound = MAX_RETRIES + 1
    storms = sorted(t for t, n in stats["by_todo"].items() if n > bound)
    problems += [f"{t}: {stats['by_todo'][t]} requests (retry storm; bound {bound})" for t in storms[:5]]
    return {
        "ok": not problems,
        "loop": loop,
        "client": llm or {},
        "todos": load.count,
        "outcomes": dict(outcomes),
        "done_share": round(done_share, 4),
        "failed_reasons": dict(reasons.most_common(8)),
        "requests": stats["by_path"].get("/v1/chat/completions", 0),
        "faults_served": stats["by_fault"],
        "requests_per_todo": {
            "mean": round(sum(per_todo) / max(1, len(per_todo)), 3),
            "max": max(per_todo, default=0),
            "bound": bound,
            "histogram": dict(sorted(Counter(per_todo).items())),
        },
        "seconds": seconds,
        "problems": problems[:20],
    }


def run(ctx: Context) -> dict[str, Any]:
    """Both mixes on every variant."""
    runs: dict[str, Any] = {}
    for mix_name, mix in (("transient", TRANSIENT), ("mixed", MIXED)):
        for variant in VARIANTS:
            runs[f"{mix_name}/{variant}"] = one_run(ctx, mix_name, mix, variant, ctx.work)
            ctx.load.tick()
    return {
        "ok": all(r["ok"] for r in runs.values()),
        "fault_rates": {"transient": TRANSIENT, "mixed": MIXED},
        "client": {"timeout_s": TIMEOUT_S, "max_retries": MAX_RETRIES},
        "runs": runs,
        "problems": [f"{name}: {p}" for name, r in runs.items() for p in r["problems"]][:30],
    }
