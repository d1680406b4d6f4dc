"""The sections of ``docs/reliability.md`` after the crashes: LLM faults, disk, reloads, fuzzing, the API."""

from __future__ import annotations

from typing import Any

from codeagent_app.chaos.render import _table, dump, generic_section


def _mib(kb: Any) -> str:
    return f"{kb / 1024:.0f}" if isinstance(kb, int | float) else "—"


def summary(record: dict[str, Any]) -> list[str]:
    """The headline figures, one line per target family."""
    t = record["targets"]
    out: list[str] = []
    for name, label in (
        ("crash-legacy", "legacy loop"),
        ("crash-async", "async core"),
        ("crash-worker", "one worker of 2"),
    ):
        r = t.get(name)
        if r and "landed" in r:
            bad = (
                r.get("unreadable_state", 0)
                + r.get("lost", 0)
                + r.get("doubled", 0)
                + r.get("wrong_content", 0)
            )
            out.append(
                f"- **Kills, {label}**: {r.get('landed_working')} SIGKILLs while it worked ({r.get('landed')} "
                f"landed in all) over {r.get('todos')} todos: {r.get('unreadable_state')} unreadable state "
                f"files, {r.get('lost')} lost, {r.get('doubled')} doubled, {r.get('wrong_content')} wrong "
                f"contents{'' if bad == 0 else ' — **FAILED**'}."
            )
    m = t.get("crash-migrate") or {}
    if isinstance(m.get("apply"), dict):
        out.append(
            f"- **Kills, migration**: `apply` {m['apply'].get('landed_working')} and `rollback` "
            f"{m['rollback'].get('landed_working')} SIGKILLs mid-operation ({m.get('checkpoints')} checkpoints): "
            f"the state was exactly before or after every time, {'never' if m.get('ok') else '**not always**'} a mix."
        )
    llm = t.get("llm")
    if llm:
        shares = {
            k: v.get("done_share") for k, v in llm.get("runs", {}).items() if k.startswith("transient/")
        }
        out.append(
            "- **LLM faults at 20%**: done at 20% transient faults: "
            + ", ".join(f"{k.split('/')[1]} {v:.1%}" for k, v in shares.items() if v is not None)
            + "; no todo left running; max requests per todo "
            + str(max((v["requests_per_todo"]["max"] for v in llm.get("runs", {}).values()), default="—"))
            + "."
        )
    if t.get("disk"):
        sc = t["disk"].get("scenarios", [])
        out.append(
            f"- **Disk and OS faults**: {sum(1 for s in sc if s.get('ok'))}/{len(sc)} scenarios stopped cleanly, "
            "left the last good state readable and resumed to the end."
        )
    if t.get("soak"):
        for loop in ("async", "legacy"):
            s = t["soak"].get(loop)
            if s:
                c = s.get("curve", {})
                out.append(
                    f"- **Soak, {loop}**: {s.get('todos_done')} todos; RSS {_mib(c.get('rss_kb', {}).get('start'))} → "
                    f"{_mib(c.get('rss_kb', {}).get('end'))} MiB (max {_mib(c.get('rss_kb', {}).get('max'))}), fds max "
                    f"{c.get('fds', {}).get('max')}, threads max {c.get('threads', {}).get('max')}."
                )
    if t.get("reload"):
        parts = [
            f"{loop} {t['reload'][loop].get('failed')} failed of {t['reload'][loop].get('todos')}"
            for loop in ("legacy", "async")
            if loop in t["reload"]
        ]
        out.append(
            f"- **Hot reloads**: {', '.join(parts)}; the last good file in force after every edit: "
            f"{'yes' if t['reload'].get('ok') else '**no**'}."
        )
    if t.get("fuzz"):
        out.append(
            f"- **Fuzzing**: {t['fuzz'].get('examples_total')} examples over {len(t['fuzz'].get('examples', {}))} "
            f"parsers and servers: {sum(len(v) for v in t['fuzz'].get('failures', {}).values())} failures."
        )
    if t.get("escapes"):
        out.append(f"- **Adversarial edits**: {t['escapes'].get('escapes')} writes outside the workspace.")
    if t.get("api"):
        out.append(
            f"- **API abuse**: {'every check held' if t['api'].get('ok') else '**FAILED**'} on both servers."
        )
    return [*out, ""]


def llm(result: dict[str, Any] | None) -> list[str]:
    """LLM faults."""
    lines: list[str] = []
    if result:
        rates = result.get("fault_rates", {})
        lines += [
            f"Fault rates: transient {dump(rates.get('transient'))}; mixed {dump(rates.get('mixed'))}. "
            f"Client: {dump(result.get('client'))} (a hang outlasts the timeout). Draws keyed by prompt.",
            "",
        ]
        rows = []
        for name, r in result.get("runs", {}).items():
            per = r.get("requests_per_todo", {})
            faults = sum(r.get("faults_served", {}).values())
            rows.append(
                [
                    name,
                    r.get("todos"),
                    dump(r.get("outcomes")),
                    f"{r.get('done_share', 0):.1%}",
                    dump(r.get("failed_reasons")) if r.get("failed_reasons") else "—",
                    r.get("requests"),
                    f"{faults} ({faults / max(1, r.get('requests', 1)):.0%})",
                    dump(r.get("faults_served")),
                    f"{per.get('mean')} / {per.get('max')} (bound {per.get('bound')})",
                    r.get("seconds"),
                ]
            )
        lines += _table(
            [
                "mix / loop",
                "todos",
                "outcomes",
                "done",
                "failed because",
                "requests",
                "faults",
                "fault kinds",
                "requests per todo mean / max",
                "s",
            ],
            rows,
        )
    return generic_section("## 2. LLM faults at 20%", result, lines)


def disk(result: dict[str, Any] | None, soak: dict[str, Any] | None) -> list[str]:
    """Disk and OS faults, and the soak."""
    lines: list[str] = []
    if result:
        lines += [f"- {k}: {v}" for k, v in result.get("how", {}).items()] + [""]
        rows = [
            [
                s["scenario"],
                s["loop"],
                dump(s.get("during_fault")),
                s.get("exit_code"),
                s.get("last_line"),
                "yes" if s.get("traceback") else "no",
                len(s.get("state_problems", [])),
                "yes" if s.get("recovered") else "**no**",
            ]
            for s in result.get("scenarios", [])
        ]
        lines += _table(
            [
                "fault",
                "loop",
                "todos when it stopped",
                "exit",
                "its last line",
                "traceback",
                "unreadable state",
                "resumed to the end",
            ],
            rows,
        )
    out = generic_section("## 3. Disk and OS faults", result, lines)
    soak_lines: list[str] = []
    if soak:
        rows = []
        for loop in ("async", "legacy"):
            s = soak.get(loop)
            if not s:
                continue
            c = s.get("curve", {})
            rss, fds, th = c.get("rss_kb", {}), c.get("fds", {}), c.get("threads", {})
            rest = s.get("at_rest", {}).get("fds", {})
            rows.append(
                [
                    loop,
                    f"{s.get('todos_done')} / {s.get('todos_planned')}",
                    s.get("workspaces"),
                    s.get("seconds"),
                    s.get("todos_per_s"),
                    f"{_mib(rss.get('start'))} / {_mib(rss.get('end'))} / {_mib(rss.get('max'))} "
                    f"(halves' max {_mib(rss.get('first_half_max'))} → {_mib(rss.get('second_half_max'))})",
                    f"{fds.get('start')} / {fds.get('end')} / {fds.get('max')} "
                    + (
                        f"(at rest, medians {rest.get('first_half_median')} → {rest.get('second_half_median')})"
                        if rest
                        else f"(medians {fds.get('first_half_median')} → {fds.get('second_half_median')})"
                    ),
                    f"{th.get('start')} / {th.get('end')} / {th.get('max')}",
                    s.get("rss_kb_per_todo_second_half"),
                ]
            )
        soak_lines += _table(
            [
                "loop",
                "todos done / planned",
                "workspaces",
                "s",
                "todos/s",
                "RSS MiB start / end / max",
                "fds start / end / max",
                "threads start / end / max",
                "RSS KiB per todo (2nd half)",
            ],
            rows,
        )
    return out + generic_section("### The soak (RSS, fds, threads)", soak, soak_lines)


def reloads(result: dict[str, Any] | None) -> list[str]:
    """Hot reloads under load."""
    lines: list[str] = []
    if result:
        rows = [
            [
                loop,
                r.get("todos"),
                r.get("failed"),
                dump(r.get("edits")),
                dump(r.get("settle_s")),
                r.get("shadow_mismatches"),
                len(r.get("problems", [])),
            ]
            for loop, r in result.items()
            if isinstance(r, dict) and "edits" in r
        ]
        lines += _table(
            [
                "loop",
                "todos",
                "failed",
                "edits (how, what)",
                "seconds to take effect",
                "shadow mismatches",
                "problems",
            ],
            rows,
        )
    return generic_section("## 4. Hot reloads under load", result, lines)


def fuzz(result: dict[str, Any] | None, escapes: dict[str, Any] | None) -> list[str]:
    """Fuzzing and adversarial edits."""
    lines: list[str] = []
    if result:
        rows = [
            [name, n, len(result.get("failures", {}).get(name, []))]
            for name, n in result.get("examples", {}).items()
        ]
        lines += _table(["parser or server", "examples", "failures"], rows)
    out = generic_section("## 5. Hostile input: fuzzing", result, lines)
    esc: list[str] = []
    if escapes:
        comp = escapes.get("components", {})
        rows = [
            [
                name,
                f"{r.get('writes_refused')} writes + {r.get('reads_refused')} reads refused of {comp.get('attempts')}",
                len(r.get("accepted", [])),
                len(r.get("unclean", [])),
            ]
            for name, r in comp.get("implementations", {}).items()
        ]
        esc += _table(["file component", "refused with a reason", "accepted", "not a clean refusal"], rows)
        race = escapes.get("race", {})
        esc += [
            f"Check-then-write race: {race.get('flips')} flips of `sub` to a symlink pointing out while writes ran: "
            + ", ".join(
                f"{k} {v.get('writes')} written, {v.get('refused')} refused, {len(v.get('outside_entries', []))} outside"
                for k, v in race.get("implementations", {}).items()
            )
            + ".",
            "",
        ]
        loops = escapes.get("loops", {})
        esc += [
            f"Through the loops: {loops.get('todos')} todos whose answers propose hostile edits; "
            + ", ".join(
                f"{lp}: {len(loops[lp].get('not_refused', []))} not refused, {len(loops[lp].get('escapes', []))} escapes"
                for lp in ("legacy", "async")
                if lp in loops
            )
            + ".",
            "",
            f"**Writes outside the workspace: {escapes.get('escapes')}.**",
            "",
        ]
    return out + generic_section("### Adversarial edits", escapes, esc)


def api(result: dict[str, Any] | None) -> list[str]:
    """The API under abuse."""
    lines: list[str] = []
    if result:
        rows = []
        for loop in ("legacy", "async"):
            r = result.get(loop)
            if not r:
                continue
            tok, over, idle, b = (
                r.get("tokens", {}),
                r.get("oversized", {}),
                r.get("idle", {}),
                r.get("burst", {}),
            )
            rows.append(
                [
                    loop,
                    f"{tok.get('requests')} refused: {len(tok.get('let_in', [])) == 0}",
                    dump(tok.get("websocket")) if tok.get("websocket") else "— (no WebSocket)",
                    f"declared {over.get('declared')}, streamed {over.get('streamed')}",
                    f"{idle.get('opened')} held; /health {idle.get('health_while_held')} in {idle.get('health_seconds')} s; "
                    f"{idle.get('todos_done_meanwhile')} todos done; threads {idle.get('server_threads')}",
                    f"{b.get('service_rate_per_s')}/s served → {b.get('offered_rate_per_s')}/s offered, {b.get('requests')} "
                    f"requests: {dump(b.get('statuses'))}; p50 {b.get('latency_p50_s')} s, max {b.get('latency_max_s')} s; "
                    f"RSS {_mib(b.get('rss_kb_before'))} → {_mib(b.get('rss_kb_peak'))} MiB; {b.get('todos_done_meanwhile')} todos done",
                ]
            )
        lines += _table(
            [
                "server",
                "bad tokens on every route",
                "WebSocket /events",
                "bodies over 1 MB",
                "idle connections",
                "burst at 10x the service rate",
            ],
            rows,
        )
    return generic_section("## 6. The API under abuse", result, lines)
