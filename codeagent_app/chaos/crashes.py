"""Crashes: SIGKILL at random moments of a real target, restart it, check the invariants.

Targets (each a shipped command line on real workspaces, the stub LLM at a low latency):

* ``legacy``: ``codeagent run --loop legacy --until-idle``;
* ``async``: ``codeagent run --loop async --workers 1 --until-idle``;
* ``worker``: one worker of ``codeagent run --loop async --workers 2 --until-idle`` over several
  workspaces (the supervisor restarts it; the supervisor itself is never killed);
* ``migrate``: ``codeagent migrate apply`` then ``rollback`` (see :mod:`~codeagent_app.chaos.migrate_kills`).

Each life of the target is killed at a moment drawn at random: a fifth of the
kills (:data:`STARTUP_SHARE`) uniformly over its start-up, the others, once it
works (its pid recorded in ``status.json``), uniformly over what is left of its
run (the todos left times the cost of one, measured by a clean run first). A
kill counts as *landed* when the target was alive at that moment, *working*
when it had also recorded itself as the workspace's loop, *mid-todo* when a
todo was running as well; a target that finished first is a *missed* kill;
the budget (``--kills``) counts the working ones. Only the killed process dies
(its git children may finish on their own, as after a real crash). After every
kill the state is checked (:func:`~codeagent_app.chaos.checks.quick_check`),
the target restarted with the same command, and at the end of each round every
invariant is checked (:func:`~codeagent_app.chaos.checks.final_check`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace, new_path_flags

#: A round with this many lives in a row that finished no todo is stalled (a defect).
STALL_LIVES = 40
#: The share of kills drawn over the target's start-up (the rest wait until it works).
STARTUP_SHARE = 0.2


@dataclass
class KillStats:
    """What one crash target went through, and what the invariants found."""

    target: str
    kills: int = 0
    landed: int = 0
    landed_working: int = 0
    mid_todo: int = 0
    missed: int = 0
    restarts: int = 0
    rounds: int = 0
    todos: int = 0
    quick_checks: int = 0
    final_checks: int = 0
    unreadable_state: int = 0
    lost: int = 0
    doubled: int = 0
    wrong_content: int = 0
    other_problems: int = 0
    exits_without_kill: int = 0
    leftover_tmp_files: int = 0
    seconds: float = 0.0
    calibration_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def absorb(self, found: list[str], where: str) -> None:
        """Count problems by kind; keep the first few verbatim."""
        for problem in found:
            if "committed more than once" in problem or "commits carry" in problem:
                self.doubled += 1
            elif "lost" in problem or "ended " in problem:
                self.lost += 1
            elif problem.startswith(".agent/"):
                self.unreadable_state += 1
            elif "content" in problem or "holds" in problem:
                self.wrong_content += 1
            else:
                self.other_problems += 1
            if len(self.problems) < 30:
                self.problems.append(f"{where}: {problem}")

    @property
    def ok(self) -> bool:
        """Nothing unreadable, lost, doubled or wrong."""
        bad = self.unreadable_state + self.lost + self.doubled + self.wrong_content + self.other_problems
        return bad == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


def agent_pid(root: Path) -> int | None:
    """The pid the loop recorded as the workspace's driver (``None``: none yet or unreadable)."""
    try:
        data = json.loads((root / ".agent" / "status.json").read_text(encoding="utf-8"))
        pid = data["agent"]["pid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if isinstance(pid, int) else None


def done_count(root: Path) -> int:
    """Todos ``status.json`` says are done."""
    return checks.status_counts(root).get("done", 0)


@dataclass
class LoopTarget:
    """A loop target: how to start it on workspaces, how many, and which process a kill hits."""

    name: str
    args: Callable[[list[Path], str], list[str]]
    workspaces: int = 1
    todos_per_workspace: int = 40
    #: Kill one worker of a supervisor (``True``) or the started process itself.
    kill_worker: bool = False
    #: The workspaces' ``flags.toml`` (``None``: none, every component legacy).
    flags: str | None = None


def loop_targets() -> dict[str, LoopTarget]:
    """The crash targets that run the agent's loops."""

    def run(loop: str, *extra: str) -> Callable[[list[Path], str], list[str]]:
        def args(roots: list[Path], url: str) -> list[str]:
            ws = [a for r in roots for a in ("-w", str(r))]
            return procs.codeagent("run", "--loop", loop, *ws, "--llm-url", url, "--until-idle", *extra)

        return args

    return {
        "legacy": LoopTarget("legacy", run("legacy")),
        "async": LoopTarget("async", run("async", "--workers", "1"), flags=new_path_flags()),
        "worker": LoopTarget(
            "worker",
            run("async", "--workers", "2"),
            workspaces=4,
            todos_per_workspace=15,
            kill_worker=True,
            flags=new_path_flags(),
        ),
    }


class CrashRun:
    """Drives one loop target through rounds of kill-and-restart until ``kills`` landed or time ran out."""

    def __init__(
        self,
        target: LoopTarget,
        url: str,
        work: Path,
        rng: random.Random,
        *,
        kills: int,
        deadline: float,
        max_horizon: float = 3.0,
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        self.target = target
        self.url = url
        self.work = work
        self.rng = rng
        self.kills_wanted = kills
        self.deadline = deadline
        self.max_horizon = max_horizon
        self.tick = tick
        self.stats = KillStats(target.name)
        self.startup_s = 1.0
        self.per_todo_s = 0.05
        #: From working to the first todo done in a fresh process (its first LLM answer, lazy imports, the
        #: trailer index): a life needs at least this to finish anything, however few todos are left.
        self.first_done_s = 0.05
        self._round = 0

    def _new_round(self) -> tuple[list[Path], list[Workload]]:
        self._round += 1
        t = self.target
        base = self.work / f"{t.name}-round{self._round:04d}"
        roots = [base / f"ws{i}" for i in range(t.workspaces)]
        load = Workload(t.todos_per_workspace)
        for root in roots:
            make_workspace(root, [load], config=fast_config(), flags=t.flags)
        return roots, [load]

    def calibrate(self) -> None:
        """One clean run: start-up and per-todo cost, so kill moments spread over a whole run."""
        roots, loads = self._new_round()
        started = time.monotonic()
        first: float | None = None
        first_done: float | None = None
        with (self.work / f"{self.target.name}-calibration.log").open("wb") as log:
            proc = procs.start(self.target.args(roots, self.url), log)
            while proc.poll() is None and time.monotonic() - started < 300:
                if first is None and any((r / ".agent" / "status.json").exists() for r in roots):
                    first = time.monotonic() - started
                if first is not None and first_done is None and any(done_count(r) for r in roots):
                    first_done = time.monotonic() - started - first
                time.sleep(0.01)
            code = procs.wait_or_kill(proc, 1)
        took = time.monotonic() - started
        self.stats.calibration_s = round(took, 2)
        todos = sum(load.count for load in loads) * len(roots)
        if code != 0:
            self.stats.absorb([f"calibration run exited {code}"], "calibration")
        self.stats.absorb(self._final(roots, loads), "calibration")
        self.startup_s = first if first is not None else took / 2
        self.per_todo_s = max(0.005, (took - self.startup_s) / max(1, todos))
        self.first_done_s = first_done if first_done is not None else self.per_todo_s
        self.stats.extra.update(
            startup_s=round(self.startup_s, 3),
            per_todo_s=round(self.per_todo_s, 4),
            first_done_s=round(self.first_done_s, 3),
        )

    def _final(self, roots: list[Path], loads: list[Workload]) -> list[str]:
        found: list[str] = []
        for root in roots:
            found += checks.final_check(root, loads)
            self.stats.leftover_tmp_files += len(checks.leftover_temp_files(root))
        self.stats.final_checks += 1
        return found

    def _quick(self, roots: list[Path], loads: list[Workload], where: str) -> None:
        for root in roots:
            self.stats.absorb(checks.quick_check(root, loads), where)
        self.stats.quick_checks += 1

    def _remaining(self, roots: list[Path], loads: list[Workload]) -> int:
        total = sum(load.count for load in loads) * len(roots)
        return total - sum(done_count(r) for r in roots)

    def run(self) -> KillStats:
        """Rounds until enough kills landed while the target worked (or the deadline passed)."""
        started = time.monotonic()
        self.calibrate()
        while self._want_more():
            roots, loads = self._new_round()
            if self.target.kill_worker:
                self._round_workers(roots, loads)
            else:
                self._round_process(roots, loads)
            self.stats.rounds += 1
            self.stats.todos += sum(load.count for load in loads) * len(roots)
            self.stats.seconds = round(time.monotonic() - started, 1)
            progress = self.work / f"{self.target.name}-progress.json"
            progress.write_text(json.dumps(self.stats.as_dict(), indent=1), encoding="utf-8")
        self.stats.seconds = round(time.monotonic() - started, 1)
        return self.stats

    def _want_more(self) -> bool:
        return self.stats.landed_working < self.kills_wanted and time.monotonic() < self.deadline

    def _log(self, roots: list[Path]) -> Path:
        return roots[0].parent / "target.log"

    def kill_horizon(self, remaining: int) -> float:
        """Seconds after a life starts working over which its kill is drawn: what is left of its run.

        A fresh life takes :attr:`first_done_s` to finish its first todo, then about
        :attr:`per_todo_s` per todo. Drawn over ``remaining x per_todo_s`` alone, a life
        with a few todos left was killed before its first LLM answer every time:
        the crash-async run of 1,000 kills had two rounds of 40 lives in a row
        without a finished todo (a livelock of the schedule, not of the target).
        """
        rest = max(0, remaining - 1) * self.per_todo_s / max(1, self.target.workspaces // 2)
        return max(0.05, min(self.max_horizon, self.first_done_s + rest))

    def _wait_for_moment(
        self,
        proc: subprocess.Popen[bytes],
        working: Callable[[], bool],
        remaining: int,
        gone: Callable[[], bool] = lambda: False,
    ) -> bool:
        """Sleep until the kill moment; ``False`` when the process ended first.

        A share of the kills (:data:`STARTUP_SHARE`) is drawn over the start-up;
        the others wait until the target works, then draw over what is left of its run.
        """
        if self.rng.random() < STARTUP_SHARE:
            delay = self.rng.uniform(0.0, self.startup_s)
        else:
            while not working():
                if proc.poll() is not None or gone():
                    return False
                time.sleep(0.005)
            delay = self.rng.uniform(0.0, self.kill_horizon(remaining))
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            return True
        return False

    def _round_process(self, roots: list[Path], loads: list[Workload]) -> None:
        """Kill the started process itself, restart it, until a life ends by itself with everything done."""
        args = self.target.args(roots, self.url)
        idle_lives = 0
        with self._log(roots).open("ab") as log:
            while True:
                self.tick()
                remaining = self._remaining(roots, loads)
                proc = procs.start(args, log)
                if stalled := idle_lives >= STALL_LIVES:
                    self.stats.absorb([f"no todo finished in {STALL_LIVES} lives in a row"], "stall")
                if stalled or remaining == 0 or not self._want_more():  # the last life runs to its end
                    code = procs.wait_or_kill(proc, 600)
                    if code != 0:
                        self.stats.exits_without_kill += 1
                        self.stats.absorb([f"final life exited {code}"], f"round {self._round}")
                    break
                pid = proc.pid
                if self._wait_for_moment(proc, self._recorded(pid, roots), remaining):
                    self._kill(pid, roots)
                    proc.wait()
                else:
                    code = proc.wait()
                    self.stats.kills += 1
                    self.stats.missed += 1
                    if code == 0:
                        break
                    self.stats.exits_without_kill += 1
                    self.stats.absorb([f"exited {code} before its kill"], f"round {self._round}")
                self._quick(roots, loads, f"round {self._round} after kill {self.stats.kills}")
                self.stats.restarts += 1
                idle_lives = idle_lives + 1 if self._remaining(roots, loads) == remaining else 0
        self.stats.absorb(self._final(roots, loads), f"round {self._round} final")

    @staticmethod
    def _recorded(pid: int, roots: list[Path]) -> Callable[[], bool]:
        """Whether ``pid`` has recorded itself as the loop of one of ``roots``."""
        return lambda: any(agent_pid(root) == pid for root in roots)

    def _gone(self, pid: int, supervisor: int) -> Callable[[], bool]:
        """Whether worker ``pid`` is no longer a child of the supervisor."""
        return lambda: pid not in self._workers(supervisor)

    def _kill(self, pid: int, roots: list[Path]) -> None:
        working = any(agent_pid(root) == pid for root in roots)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.stats.kills += 1
        self.stats.landed += 1
        self.stats.landed_working += int(working)
        self.stats.mid_todo += int(working and any(checks.running_todos(root) for root in roots))

    def _workers(self, supervisor: int) -> list[int]:
        return [pid for pid in procs.children(supervisor) if "codeagent_app.worker" in procs.cmdline(pid)]

    def _round_workers(self, roots: list[Path], loads: list[Workload]) -> None:
        """Kill one worker of a running supervisor at a time; the supervisor restarts it."""
        args = self.target.args(roots, self.url)
        with self._log(roots).open("ab") as log:
            proc = procs.start(args, log)
            round_started = time.monotonic()
            while proc.poll() is None:
                self.tick()
                if time.monotonic() - round_started > 900:
                    self.stats.absorb(["the supervisor did not finish within 900 s"], f"round {self._round}")
                    procs.kill_group(proc)
                    break
                if not self._want_more():
                    procs.wait_or_kill(proc, 600)
                    break
                workers = self._workers(proc.pid)
                while not workers and proc.poll() is None:  # between a death and its restart: wait
                    time.sleep(0.02)
                    workers = self._workers(proc.pid)
                if not workers:
                    break
                victim = self.rng.choice(workers)
                arrived = self._wait_for_moment(
                    proc,
                    self._recorded(victim, roots),
                    self._remaining(roots, loads),
                    gone=self._gone(victim, proc.pid),
                )
                if not arrived and proc.poll() is not None:
                    break
                if victim not in self._workers(proc.pid):  # it finished its workspaces meanwhile
                    self.stats.kills += 1
                    self.stats.missed += 1
                    continue
                self._kill(victim, roots)
                self._quick(roots, loads, f"round {self._round} after kill {self.stats.kills}")
                self.stats.restarts += 1
            code = proc.wait()
            if code != 0:
                self.stats.exits_without_kill += 1
                self.stats.absorb([f"the supervisor exited {code}"], f"round {self._round}")
        self.stats.absorb(self._final(roots, loads), f"round {self._round} final")
