"""Run the campaign: which targets, how big (``--quick`` or the full campaign), in what order, with what seed.

Every target gets a share of the time (``--quick`` fits in about two and a half
minutes on 2 cores) and its own work directory under the output directory; each
reports a JSON-ready dict with ``ok`` (its invariants held). The whole run is
``results.json`` in the output directory; the full campaign also updates
``docs/reliability.json`` and ``docs/reliability.md`` (:mod:`~codeagent_app.chaos.report`).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codeagent_app.chaos import procs

#: Every target, in the order a campaign runs them; ``crash`` names the four crash targets.
TARGETS = (
    "crash-legacy",
    "crash-async",
    "crash-worker",
    "crash-migrate",
    "llm",
    "disk",
    "soak",
    "reload",
    "fuzz",
    "escapes",
    "api",
)
GROUPS = {"crash": TARGETS[:4], "all": TARGETS}


@dataclass(frozen=True)
class Sizes:
    """How big each target runs."""

    kills: int
    crash_seconds: float
    llm_todos: int
    soak_todos: int
    soak_legacy_todos: int
    reload_todos: int
    reload_edits: int
    fuzz_examples: int
    idle_connections: int
    migrate_checkpoints: int

    @classmethod
    def quick(cls) -> Sizes:
        """CI's run: every target, small (at most ~3 minutes on 2 cores)."""
        return cls(
            kills=6,
            crash_seconds=10,
            llm_todos=30,
            soak_todos=300,
            soak_legacy_todos=0,
            reload_todos=60,
            reload_edits=12,
            fuzz_examples=60,
            idle_connections=200,
            migrate_checkpoints=60,
        )

    @classmethod
    def full(cls) -> Sizes:
        """The report's campaign."""
        return cls(
            kills=1000,
            crash_seconds=4 * 3600,
            llm_todos=120,
            soak_todos=10_000,
            soak_legacy_todos=2_000,
            reload_todos=500,
            reload_edits=100,
            fuzz_examples=2000,
            idle_connections=1000,
            migrate_checkpoints=200,
        )


def expand(names: list[str] | None) -> list[str]:
    """The targets named (groups expanded, order kept, duplicates dropped); ValueError for an unknown one."""
    wanted: list[str] = []
    for raw in names or ["all"]:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            if name in GROUPS:
                wanted += GROUPS[name]
            elif name in TARGETS:
                wanted.append(name)
            else:
                raise ValueError(f"unknown target {name!r} (known: {', '.join((*GROUPS, *TARGETS))})")
    return [t for t in TARGETS if t in wanted]


@dataclass
class Context:
    """What every target receives."""

    sizes: Sizes
    quick: bool
    seed: int
    work: Path
    out: Path
    load: procs.LoadWatch
    kills: int

    def rng(self, name: str) -> random.Random:
        """A generator of its own per target, from the seed."""
        return random.Random(f"{self.seed}:{name}")


Runner = Callable[[Context], dict[str, Any]]


def _runners() -> dict[str, Runner]:
    from codeagent_app.chaos import families

    return families.RUNNERS


def run_campaign(
    *,
    quick: bool,
    out: Path,
    targets: list[str],
    seed: int,
    kills: int | None = None,
    echo: Callable[[str], None] = print,
    sizes: Sizes | None = None,
) -> dict[str, Any]:
    """Run the targets; write ``out/results.json``; return the results (``sizes``: other than quick's or full's)."""
    sizes = sizes or (Sizes.quick() if quick else Sizes.full())
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="codeagent-chaos-"))
    load = procs.LoadWatch()
    load.tick()
    ctx = Context(sizes, quick, seed, work, out, load, kills if kills is not None else sizes.kills)
    started = time.monotonic()
    results: dict[str, Any] = {
        "campaign": "quick" if quick else "full",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "sizes": asdict(sizes),
        "kills_per_target": ctx.kills,
        **procs.head_commit(),
        "machine": procs.machine(),
        "targets": {},
    }
    runners = _runners()
    for name in targets:
        echo(f"chaos: {name} ...")
        began = time.monotonic()
        try:
            result = runners[name](ctx)
        except Exception as exc:  # a broken target is a failed target, not a lost campaign
            result = {
                "ok": False,
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(),
            }
        result.setdefault("seconds", round(time.monotonic() - began, 1))
        results["targets"][name] = result
        load.tick()
        echo(f"chaos: {name}: {'ok' if result.get('ok') else 'FAILED'} in {result['seconds']}s")
        _write(out, results)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["load_during_run"] = load.summary()
    results["ok"] = all(r.get("ok") for r in results["targets"].values())
    _write(out, results)
    if results["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        results["work_dir"] = str(work)
        _write(out, results)
    return results


def _write(out: Path, results: dict[str, Any]) -> None:
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / "results.json")
