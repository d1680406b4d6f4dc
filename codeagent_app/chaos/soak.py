"""The soak: thousands of todos through a running loop, its RSS, open fds and threads sampled.

The async core runs as a service (``codeagent run --loop async --workers 1``,
no ``--until-idle``) over several workspaces while the campaign feeds it todos
in batches (appended to each ``todos.json`` the way ``todo add`` does; the
kernel wakes on the change). ``/proc`` is sampled every half second: the curve
the report shows. The legacy loop gets the same on one workspace, as long as
its share of the time allows. At the end every todo must be done exactly once
with its exact content.

Growth is judged on the loop *at rest*: one more sample the moment each batch
is done (every todo fed so far done, none in flight). The running curve cannot
tell a leak from load. Its first seconds are the interpreter importing (3 fds,
one thread) before the loop opens anything, so on a short run its first half
is mostly start-up; and while todos run, its level follows what is in flight:
a descriptor per status write waiting on ``.agent/status.lock`` (one per
thread of the bridge's pools, up to 64 per workspace, whose queue lengthens
as the status document grows), the pipes of git children, the LLM
connections in use. At rest those are closed; what stays is the loop's own
(workspace locks, inotify watches, the event loop's descriptors), the idle
pooled connections (until their keep-alive expiry) and the pool threads at
their high water, all bounded by the configured pools. A leak stays open, so
it raises every later rest sample by what it leaked per todo times the todos
done since.

Bounded means the second half of the rest samples is no higher than a margin
above the first half: RSS peaks within 25%, threads peaks within 16, fds
medians within 16. The halves' medians lie about half the todos apart, so a
leak of one descriptor per 9 todos crosses it on the quick run's 300 (one per
300 on the full run's 10,000). The RSS growth per todo over the second half is
reported beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, add_todos, fast_config, make_workspace, new_path_flags
from llm_stub import StubOptions

BATCHES = 20
RSS_MARGIN = 1.25
COUNT_MARGIN = 16


class Sampler(threading.Thread):
    """Samples one process every ``every`` seconds until stopped."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.curve = procs.Curve()
        self._stop_event = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(self.every):
            found = procs.sample(self.pid, time.monotonic() - self.started)
            if found is None:
                return
            self.curve.samples.append(found)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def bounded(summary: dict[str, Any]) -> list[str]:
    """Upward trends in the summary of the rest samples' curve (empty: bounded).

    RSS and threads by their peaks (the second half within 25% / 16 of the
    first); fds by their medians (within 16), a late connection or a
    descriptor still closing at the moment of a sample does not count.
    """
    problems: list[str] = []
    rss = summary.get("rss_kb")
    if rss and rss["second_half_max"] > rss["first_half_max"] * RSS_MARGIN:
        problems.append(f"RSS grew: {rss['first_half_max']} KiB -> {rss['second_half_max']} KiB")
    threads = summary.get("threads")
    if threads and threads["second_half_max"] > threads["first_half_max"] + COUNT_MARGIN:
        problems.append(f"threads grew: {threads['first_half_max']} -> {threads['second_half_max']}")
    fds = summary.get("fds")
    if fds and fds["second_half_median"] > fds["first_half_median"] + COUNT_MARGIN:
        problems.append(f"fds grew: median {fds['first_half_median']} -> {fds['second_half_median']}")
    return problems


def at_rest(pid: int, t: float, done: int, rest: list[tuple[int, procs.Sample]]) -> None:
    """Sample ``pid`` now, a batch just done (``done`` todos in all), into ``rest``."""
    found = procs.sample(pid, t)
    if found is not None:
        rest.append((done, found))


def rest_bounded(rest: list[tuple[int, procs.Sample]]) -> list[str]:
    """Upward trends of the loop at rest, one sample per batch done (see :func:`bounded`)."""
    return bounded(procs.Curve([s for _, s in rest]).summary())


def slope_kb_per_todo(samples: list[procs.Sample], done_at: list[tuple[float, int]]) -> float | None:
    """RSS growth per todo done over the run's second half (KiB), from the samples and the progress."""
    if len(samples) < 4 or len(done_at) < 2:
        return None
    half = samples[len(samples) // 2 :]
    t0, t1 = half[0].t, half[-1].t
    done = [n for t, n in done_at if t0 <= t <= t1]
    if len(done) < 2 or done[-1] == done[0]:
        return None
    return round((half[-1].rss_kb - half[0].rss_kb) / (done[-1] - done[0]), 2)


def soak(ctx: Context, loop: str, total: int, workspaces: int, deadline: float) -> dict[str, Any]:
    """``total`` todos over ``workspaces`` fed in batches to one running loop; the curve and the checks."""
    per_ws = total // workspaces
    roots = [ctx.work / f"soak-{loop}" / f"ws{i}" for i in range(workspaces)]
    whole = Workload(per_ws)
    for root in roots:
        make_workspace(
            root,
            [Workload(0)],
            config=fast_config(),
            flags=new_path_flags() if loop == "async" else None,
            extra_files={whole.path(i): whole.before(i) for i in whole.indexes()},
        )
    batch = max(1, per_ws // BATCHES)
    fed = 0
    started = time.monotonic()
    with procs.stub(StubOptions(latency_ms=2.0, seed=ctx.seed)) as stub:
        ws_args = [a for r in roots for a in ("-w", str(r))]
        extra = ["--workers", "1"] if loop == "async" else []
        log = (ctx.work / f"soak-{loop}.log").open("wb")
        proc = procs.start(
            procs.codeagent("run", "--loop", loop, *ws_args, "--llm-url", stub.url, *extra), log
        )
        sampler = Sampler(proc.pid)
        sampler.start()
        done_at: list[tuple[float, int]] = []
        rest: list[tuple[int, procs.Sample]] = []  # (todos done, the loop at rest) per batch done
        try:
            while fed < per_ws and time.monotonic() < deadline and proc.poll() is None:
                part = Workload(min(batch, per_ws - fed), start=fed)
                for root in roots:
                    add_todos(root, part.todos())
                fed += part.count
                while proc.poll() is None and time.monotonic() < deadline:  # the batch done: the next one
                    done = sum(checks.status_counts(r).get("done", 0) for r in roots)
                    now = time.monotonic() - sampler.started
                    done_at.append((now, done))
                    if done >= fed * len(roots):
                        at_rest(proc.pid, now, done, rest)
                        break
                    time.sleep(0.2)
                ctx.load.tick()
        finally:
            sampler.stop()
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                exit_code: int | None = proc.wait(60)
            except subprocess.TimeoutExpired:
                procs.kill_group(proc)
                exit_code = None
            log.close()
    seconds = time.monotonic() - started
    done_load = Workload(fed)
    problems: list[str] = []
    for root in roots:
        problems += checks.final_check(root, [done_load])
    summary = sampler.curve.summary()
    problems += [f"at rest, {p}" for p in rest_bounded(rest)]
    if exit_code != 0:
        problems.append(f"the loop exited {exit_code} on SIGTERM")
    return {
        "ok": not problems,
        "loop": loop,
        "todos_planned": per_ws * len(roots),
        "todos_done": fed * len(roots),
        "workspaces": len(roots),
        "batches": -(-fed // batch),
        "seconds": round(seconds, 1),
        "todos_per_s": round(fed * len(roots) / max(seconds, 0.001), 1),
        "curve": summary,
        "at_rest": procs.Curve([s for _, s in rest]).summary(),
        "rss_kb_per_todo_second_half": slope_kb_per_todo(sampler.curve.samples, done_at),
        "samples": [
            [s.t, s.rss_kb, s.fds, s.threads]
            for s in sampler.curve.samples[:: max(1, len(sampler.curve.samples) // 60)]
        ],
        "rest_samples": [[n, s.t, s.rss_kb, s.fds, s.threads] for n, s in rest],
        "problems": problems[:20],
    }


def run(ctx: Context) -> dict[str, Any]:
    """The async soak, then the legacy one (if asked for)."""
    sizes = ctx.sizes
    budget = 120.0 if ctx.quick else 3600.0
    parts = {"async": soak(ctx, "async", sizes.soak_todos, 3 if ctx.quick else 20, time.monotonic() + budget)}
    if sizes.soak_legacy_todos:
        parts["legacy"] = soak(ctx, "legacy", sizes.soak_legacy_todos, 1, time.monotonic() + budget)
    return {
        "ok": all(p["ok"] for p in parts.values()),
        **parts,
        "problems": [f"{name}: {p}" for name, part in parts.items() for p in part["problems"]][:20],
    }
