"""Hot reloads under load: flag-file and config edits while a served loop works through todos.

``codeagent serve`` (each loop) works through a workspace of todos while an
editor rewrites ``.agent/flags.toml`` (each component's mode among legacy, new,
shadow and canary) and ``.agent/config.json`` (the limits, the poll interval,
the LLM timeout) again and again: 10% of the edits are malformed (bad TOML or
JSON, an unknown mode or key, an empty or binary file), and each edit lands
one of three ways: written in place, written to a temp file and renamed over
(as editors save), or a symlink swapped to a new version file. After each edit
the flags in force (``GET /flags``) must settle on the last good file within
:data:`SETTLE_S` and, after a malformed edit, stay on it; on the async loop the
limits in force (``GET /v1/limits``) must match the last good config. At the
end: 0 failed todos, each done once with its exact content.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace
from feature_flags.model import COMPONENTS
from llm_stub import StubOptions

SETTLE_S = 3.0
MODES = ("legacy", "new", "shadow", "canary")
METHODS = ("write", "rename", "symlink")
MALFORMED_SHARE = 0.10
BAD_FLAGS = (
    "",
    "version = 1\nloop = [",
    'version = 1\nloop = "legacy"\n[components.files]\nmode = "sideways"\n',
    'version = 1\nloop = "legacy"\n[components.warp]\nmode = "new"\n',
    "\x00\x01binary",
    'version = 2\nloop = "legacy"\n',
)
BAD_CONFIGS = (
    '{"poll_interval": ',
    '{"poll_interval": -1}',
    '{"limits": {"llm_slots": 0}}',
    '{"nonsense": 1}',
    "[]",
)


def flags_text(rng: random.Random, loop: str) -> tuple[str, dict[str, str]]:
    """A valid flag file with random modes, and the mode of every component it sets."""
    lines = ["version = 1", f'loop = "{loop}"', "", "[rollback]", "enabled = false", ""]
    modes: dict[str, str] = {}
    for component in COMPONENTS:
        mode = rng.choice(MODES)
        modes[component] = mode
        lines.append(f"[components.{component}]")
        lines.append(f'mode = "{mode}"')
        if mode == "canary":
            lines.append(f"percent = {rng.randint(0, 100)}")
        lines.append("")
    return "\n".join(lines), modes


def config_text(rng: random.Random) -> tuple[str, dict[str, int]]:
    """A valid config with random limits, and the limits it sets."""
    limits = {
        "max_concurrency": rng.randint(4, 256),
        "per_workspace": rng.randint(2, 64),
        "llm_slots": rng.randint(2, 256),
        "file_slots": rng.randint(2, 64),
    }
    doc = {**fast_config(timeout=rng.choice([10.0, 30.0, 60.0])), "limits": limits}
    doc["poll_interval"] = rng.choice([0.05, 0.1, 0.2])
    return json.dumps(doc, indent=2) + "\n", limits


class Editor:
    """Writes the flag file and the config the three ways, keeping the last good content of each."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.versions = root.parent / f"{root.name}-versions"
        self.versions.mkdir(exist_ok=True)
        self.counts: dict[str, int] = {m: 0 for m in METHODS} | {"malformed": 0, "flags": 0, "config": 0}
        self._n = 0

    def write(self, name: str, text: str, method: str) -> None:
        """Replace ``.agent/NAME`` with ``text`` the way ``method`` says."""
        target = self.root / ".agent" / name
        self._n += 1
        self.counts[method] += 1
        if method == "write":
            if target.is_symlink():
                target.unlink()
            with target.open(
                "w", encoding="utf-8"
            ) as handle:  # truncate, then write: a reader may see it empty
                handle.write(text)
        elif method == "rename":
            tmp = target.with_name(f".{name}.swp{self._n}")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, target)
        else:
            version = self.versions / f"{name}.{self._n}"
            version.write_text(text, encoding="utf-8")
            link = target.with_name(f".{name}.link{self._n}")
            link.symlink_to(version)
            os.replace(link, target)


def in_force_modes(url: str) -> dict[str, str] | None:
    """The modes ``GET /flags`` says are in force (``None`` when it does not answer)."""
    try:
        status, doc = procs.http_json("GET", f"{url}/flags", timeout=5)
    except OSError:
        return None
    if status != 200 or not isinstance(doc, dict):
        return None
    return {row["component"]: row["mode"] for row in doc.get("components", [])}


def in_force_limits(url: str) -> dict[str, int] | None:
    """The limits ``GET /v1/limits`` says are in force."""
    try:
        status, doc = procs.http_json("GET", f"{url}/v1/limits", timeout=5)
    except OSError:
        return None
    return doc.get("limits") if status == 200 and isinstance(doc, dict) else None


def _settle(check: Any, within: float) -> float | None:
    """Seconds until ``check()`` holds (``None``: it never did within ``within``)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def one_loop(ctx: Context, loop: str, url: str) -> dict[str, Any]:
    """The edits during one served loop's run; the figures and the problems."""
    rng = ctx.rng(f"reload-{loop}")
    load = Workload(ctx.sizes.reload_todos)
    root = ctx.work / f"reload-{loop}"
    first_flags, good_modes = flags_text(rng, loop)
    first_config, good_limits = config_text(rng)
    good_text = {"flags.toml": first_flags, "config.json": first_config}
    make_workspace(root, [load], flags=first_flags)
    (root / ".agent" / "config.json").write_text(first_config, encoding="utf-8")
    editor = Editor(root, rng)
    served = procs.start_serving(
        procs.codeagent(
            "serve", "--loop", loop, "-w", str(root), "--port", "0", "--llm-url", url, "--grace", "30"
        ),
        ctx.work / f"reload-{loop}.log",
    )
    problems: list[str] = []
    settle_times: list[float] = []
    try:
        for k in range(ctx.sizes.reload_edits):
            target = "flags.toml" if rng.random() < 0.7 else "config.json"
            method = rng.choice(METHODS)
            editor.counts["flags" if target == "flags.toml" else "config"] += 1
            if rng.random() < MALFORMED_SHARE:
                editor.counts["malformed"] += 1
                bad = rng.choice(BAD_FLAGS if target == "flags.toml" else BAD_CONFIGS)
                editor.write(target, bad, method)
                time.sleep(0.5)  # it must not take: the last good file stays in force
            elif target == "flags.toml":
                text, good_modes = flags_text(rng, loop)
                editor.write(target, text, method)
                good_text[target] = text
            else:
                text, good_limits = config_text(rng)
                editor.write(target, text, method)
                good_text[target] = text
            modes = dict(good_modes)
            took = _settle(lambda m=modes: in_force_modes(served.url) == m, SETTLE_S)
            if took is None:
                problems.append(
                    f"edit {k + 1} ({target}, {method}): flags in force {in_force_modes(served.url)}"
                    f" are not the last good file's {modes}"
                )
            else:
                settle_times.append(took)
            if loop == "async":
                limits = dict(good_limits)
                if _settle(lambda w=limits: in_force_limits(served.url) == w, SETTLE_S) is None:
                    problems.append(
                        f"edit {k + 1} ({target}, {method}): limits in force"
                        f" {in_force_limits(served.url)} are not the last good config's {limits}"
                    )
        waited = _settle(
            lambda: (
                checks.status_counts(root).get("done", 0) + checks.status_counts(root).get("failed", 0)
                >= load.count
            ),
            600,
        )
        if waited is None:
            problems.append("the todos did not finish within 600 s of the last edit")
        for name, text in good_text.items():  # a malformed last edit is fixed, as a person would
            editor.write(name, text, "rename")
    finally:
        exit_code = procs.stop_serving(served)
    counts = checks.status_counts(root)
    problems += checks.final_check(root, [load])
    if exit_code != 0:
        problems.append(f"serve exited {exit_code} on SIGTERM")
    mismatches = root / ".agent" / "shadow-mismatches.jsonl"
    return {
        "ok": not problems,
        "todos": load.count,
        "outcomes": counts,
        "failed": counts.get("failed", 0),
        "edits": editor.counts,
        "settle_s": {
            "mean": round(sum(settle_times) / max(1, len(settle_times)), 3),
            "max": round(max(settle_times, default=0.0), 3),
        },
        "shadow_mismatches": sum(1 for _ in mismatches.open()) if mismatches.exists() else 0,
        "problems": problems[:20],
    }


def run(ctx: Context) -> dict[str, Any]:
    """Both loops."""
    parts: dict[str, Any] = {}
    with procs.stub(StubOptions(latency_ms=5.0, seed=ctx.seed)) as stub:
        for loop in ("legacy", "async"):
            parts[loop] = one_loop(ctx, loop, stub.url)
            ctx.load.tick()
    return {
        "ok": all(p["ok"] for p in parts.values()),
        **parts,
        "problems": [f"{loop}: {p}" for loop, part in parts.items() for p in part["problems"]][:30],
    }
