"""Crashes of the migration: SIGKILL ``codeagent migrate apply`` / ``rollback`` at random moments.

Each round copies a legacy workspace (the state a real legacy run left: todos,
status, one checkpoint per todo), then runs ``migrate apply`` with a kill drawn
uniformly over its expected duration, again and again until a run exits 0; then
``migrate verify``; then the same with ``migrate rollback``. After every kill the
workspace's state must be exactly the state before the operation or exactly the
state after it, never a mix: the config, todos and status byte for byte as
before, and the checkpoint set either every legacy document as it was or every
v2 document holding the same fields (``seq`` 1). After the rollback the state
is the original legacy state again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.crashes import STARTUP_SHARE, KillStats
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace

STATE = (".agent/config.json", ".agent/todos.json", ".agent/status.json")
CHECKPOINTS = ".agent/checkpoints"


def state_bytes(root: Path) -> dict[str, bytes]:
    """The files migration converts or must leave alone, by workspace-relative path."""
    out = {rel: (root / rel).read_bytes() for rel in STATE if (root / rel).exists()}
    directory = root / CHECKPOINTS
    if directory.is_dir():
        for path in directory.iterdir():
            if path.suffix == ".json" and not path.name.startswith("."):
                out[f"{CHECKPOINTS}/{path.name}"] = path.read_bytes()
    return out


def _doc(data: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def classify(now: dict[str, bytes], legacy: dict[str, bytes]) -> str:
    """``"before"`` (every legacy document as it was), ``"after"`` (every one as v2) or ``"mix"``.

    Config, todos and status must be byte for byte the legacy ones either way;
    a checkpoint is compared by its fields (v2 adds ``schema_version`` 2 and ``seq``).
    """
    if set(now) != set(legacy):
        return "mix"
    kinds: set[str] = set()
    for rel, data in legacy.items():
        if not rel.startswith(CHECKPOINTS):
            if now[rel] != data:
                return "mix"
            continue
        doc, old = _doc(now[rel]), _doc(data)
        if doc is None or old is None:
            return "mix"
        if "schema_version" in doc:
            version, seq = doc.pop("schema_version"), doc.pop("seq", None)
            kinds.add("after" if version == 2 and isinstance(seq, int) and doc == old else "mix")
        else:
            kinds.add("before" if doc == old else "mix")
    if len(kinds) > 1 or "mix" in kinds:
        return "mix"
    return kinds.pop() if kinds else "before"


def legacy_template(work: Path, url: str, todos: int) -> Path:
    """A workspace a real legacy run finished (one legacy checkpoint per todo)."""
    root = work / "migrate-template"
    make_workspace(root, [Workload(todos)], config=fast_config())
    with (work / "migrate-template.log").open("wb") as log:
        proc = procs.start(
            procs.codeagent("run", "--loop", "legacy", "-w", str(root), "--llm-url", url, "--until-idle"), log
        )
        code = procs.wait_or_kill(proc, 1800)
    if code != 0:
        raise RuntimeError(f"the legacy run that makes the migration's workspace exited {code}")
    return root


class MigrationKills:
    """Rounds of apply-then-rollback, each operation killed at random moments until it completes."""

    def __init__(
        self,
        template: Path,
        work: Path,
        rng: random.Random,
        *,
        kills: int,
        deadline: float,
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.template = template
        self.work = work
        self.rng = rng
        self.kills_wanted = kills
        self.deadline = deadline
        self.tick = tick
        self.legacy = state_bytes(template)
        self.stats = {op: KillStats(f"migrate-{op}") for op in ("apply", "rollback")}
        self.duration = {"apply": 1.0, "rollback": 1.0}
        self.startup = 0.3
        self._round = 0

    def _copy(self) -> Path:
        self._round += 1
        root = self.work / f"migrate-round{self._round:04d}"
        shutil.copytree(self.template, root, symlinks=True)
        return root

    def _run(self, op: str, root: Path, log: Any) -> subprocess.Popen[bytes]:
        return procs.start(procs.codeagent("migrate", op, "-w", str(root)), log)

    def calibrate(self) -> None:
        """How long apply and rollback take, unkilled."""
        root = self._copy()
        with (root.parent / "migrate-calibration.log").open("ab") as log:
            for op in ("apply", "rollback"):
                started = time.monotonic()
                proc = self._run(op, root, log)
                while proc.poll() is None and not self._in_progress(root):
                    time.sleep(0.002)
                if op == "apply":
                    self.startup = time.monotonic() - started
                code = procs.wait_or_kill(proc, 600)
                self.duration[op] = time.monotonic() - started
                self.stats[op].calibration_s = round(self.duration[op], 2)
                if code != 0:
                    self.stats[op].absorb([f"calibration {op} exited {code}"], "calibration")
        shutil.rmtree(root)

    def _operation(self, op: str, root: Path, expect_from: str, log: Any) -> None:
        stats = self.stats[op]
        target = "after" if op == "apply" else "before"
        while True:
            self.tick()
            proc = self._run(op, root, log)
            budget_left = time.monotonic() < self.deadline and stats.landed_working < self.kills_wanted
            if not budget_left:
                code = procs.wait_or_kill(proc, 600)
            else:
                code = self._kill_at_random(proc, root, stats, op)
            stats.quick_checks += 1
            now = classify(state_bytes(root), self.legacy)
            if now == "mix" or (
                code is not None and now != {"apply": "after", "rollback": "before"}[op] and code == 0
            ):
                stats.absorb(
                    [f".agent/: the state is a mix of before and after {op} ({now})"], f"round {self._round}"
                )
            stats.absorb(checks.state_file_problems(root), f"round {self._round}")
            if code is not None:
                if code != 0:
                    stats.exits_without_kill += 1
                    stats.absorb([f"{op} exited {code} without a kill"], f"round {self._round}")
                break
            stats.restarts += 1
        stats.final_checks += 1
        if classify(state_bytes(root), self.legacy) != target:
            stats.absorb([f"{op} finished but the state is not the expected one"], f"round {self._round}")
        if expect_from == "apply":
            verify = procs.wait_or_kill(
                procs.start(procs.codeagent("migrate", "verify", "-w", str(root)), log), 300
            )
            if verify != 0:
                stats.absorb([f"migrate verify after apply exited {verify}"], f"round {self._round}")
        stats.leftover_tmp_files += len(checks.leftover_temp_files(root / ".agent"))

    def _kill_at_random(
        self, proc: subprocess.Popen[bytes], root: Path, stats: KillStats, op: str
    ) -> int | None:
        """Kill ``proc`` at a random moment (start-up, or once it holds the workspace); its exit code if it ended first."""
        stats.kills += 1
        if self.rng.random() < STARTUP_SHARE:
            delay = self.rng.uniform(0.0, self.startup)
        else:
            while not self._in_progress(root):
                if proc.poll() is not None:
                    stats.missed += 1
                    return proc.wait()
                time.sleep(0.002)
            delay = self.rng.uniform(0.0, max(0.05, self.duration[op] - self.startup))
        try:
            code = proc.wait(delay)
        except subprocess.TimeoutExpired:
            busy = self._in_progress(root)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            stats.landed += 1
            stats.landed_working += int(busy)
            return None
        stats.missed += 1
        return code

    @staticmethod
    def _in_progress(root: Path) -> bool:
        state = root / ".agent"
        return any((state / name).exists() for name in ("migrate-journal.json", "migrate-staging")) or (
            (state / "agent.lock").exists() and _lock_held(state / "agent.lock")
        )

    def run(self) -> dict[str, KillStats]:
        """Rounds until both operations had their kills (or the deadline passed)."""
        started = time.monotonic()
        self.calibrate()
        while time.monotonic() < self.deadline and any(
            s.landed_working < self.kills_wanted for s in self.stats.values()
        ):
            root = self._copy()
            with (root.parent / f"migrate-round{self._round:04d}.log").open("ab") as log:
                self._operation("apply", root, "apply", log)
                self._operation("rollback", root, "rollback", log)
            for stats in self.stats.values():
                stats.rounds += 1
                stats.todos += len([p for p in self.legacy if p.startswith(CHECKPOINTS)])
            if not any(s.problems for s in self.stats.values()):
                shutil.rmtree(root)
        for stats in self.stats.values():
            stats.seconds = round(time.monotonic() - started, 1)
        return self.stats


def _lock_held(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
