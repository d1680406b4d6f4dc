"""What the A/B suite runs: the workload, the contenders, the LLM profiles, and every size per mode.

The throughput workload is ``W`` git workspaces whose todos each append one
line to their own file (``append a line "line i" to file f<i>.txt``): every
todo is a real LLM request, file edit, checkpoint trail and git commit, and no
two todos of a workspace touch the same file, so a contender that can run
todos concurrently is free to. (The bundled sample workspace is not used for
throughput: a quarter of its todos name no file, which makes them exclusive in
their workspace, and several share files, so it measures the scheduler's
conflict rules rather than concurrency.)

Every workspace of a run carries the same ``.agent/config.json`` (the stub's
URL, the client timeout and retries of the profile); the async contenders'
workspaces also carry a flag file selecting the async loop and every
component ``new``; the legacy ones have none (every component ``legacy``).

Contenders (see :data:`LABELS`): the two loops as shipped (``codeagent run
--loop legacy`` and ``codeagent run --loop async``, the latter with
``--workers 1`` and ``--workers`` = cores), the legacy components on a thread
pool (not a shipped command: what a competent team would build instead of the
migration), and the bare async kernel of the previous suite (a reference line;
no verdict reads it).

LLM profiles (see :func:`profiles_for`): ``cpu``, a fixed latency (200 ms)
and no faults, so the contenders' own CPU decides; ``realistic``, a seeded
lognormal latency (median 2 s, p99 10 s) with 3% 429s carrying Retry-After
and 0.5% hangs, drawn per prompt so that every contender meets the same
latencies and faults.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codeagent.models import Todo, TodoFile, dump_json
from feature_flags.model import COMPONENTS

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "Bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}

#: Every contender, in the order they are run and shown.
CONTENDERS: tuple[str, ...] = ("legacy_loop", "legacy_threads", "async_w1", "async_wn", "bare_kernel")
#: The shipped commands (``codeagent run``), each run as a child process of the suite.
SHIPPED: tuple[str, ...] = ("legacy_loop", "async_w1", "async_wn")
#: ``codeagent run --loop async`` with ``--workers 1`` and with ``--workers`` = cores.
ASYNC_SHIPPED: tuple[str, ...] = ("async_w1", "async_wn")
#: Lines shown for reference only: no verdict is computed from them.
REFERENCE: tuple[str, ...] = ("bare_kernel",)
LABELS: dict[str, str] = {
    "legacy_loop": "`codeagent run --loop legacy` as shipped (bridge, every component legacy), "
    "one process per workspace",
    "legacy_threads": "legacy components on a pool of c threads (not a shipped command)",
    "async_w1": "`codeagent run --loop async --workers 1` as shipped (bridge, every component new)",
    "async_wn": "`codeagent run --loop async --workers <cores>` as shipped (bridge, every component new)",
    "bare_kernel": "bare async kernel on uvloop, no bridge (reference only)",
}
SHORT: dict[str, str] = {
    "legacy_loop": "legacy loop",
    "legacy_threads": "legacy thread pool",
    "async_w1": "async, workers 1",
    "async_wn": "async, workers = cores",
    "bare_kernel": "bare kernel (reference)",
}


def cores() -> int:
    """The CPUs this process may run on (the worker count of ``async_wn``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def async_flags_toml() -> str:
    """The flag file of the async contenders: the async loop, every component on the new path."""
    lines = ["version = 1", 'loop = "async"', "fallback_to_legacy = false", ""]
    for component in COMPONENTS:
        lines += [f"[components.{component}]", 'mode = "new"', ""]
    return "\n".join(lines)


def make_workspace(
    root: Path,
    n: int,
    *,
    poll_interval: float | None = None,
    prefix: str = "t",
    start: int = 0,
    config: dict[str, Any] | None = None,
    flags: str | None = None,
) -> None:
    """A git workspace with ``n`` todos ``append a line "line i" to file f<i>.txt`` (one file each).

    ``config`` is written to ``.agent/config.json`` (with ``poll_interval`` if
    given), ``flags`` to ``.agent/flags.toml``.
    """
    root.mkdir(parents=True)
    todos = []
    for i in range(start, start + n):
        (root / f"f{i}.txt").write_text(f"file {i}\n", encoding="utf-8")
        todos.append(
            Todo(
                id=f"{prefix}-{i + 1:04d}",
                text=f'append a line "line {i}" to file f{i}.txt',
                files=[f"f{i}.txt"],
            )
        )
    (root / ".agent").mkdir()
    (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
    document = dict(config or {})
    if poll_interval is not None:
        document["poll_interval"] = poll_interval
    if document:
        (root / ".agent/config.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if flags is not None:
        (root / ".agent/flags.toml").write_text(flags, encoding="utf-8")
    (root / ".gitignore").write_text(".agent/\n", encoding="utf-8")
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(
            ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
            cwd=root,
            env=env,
            check=True,
        )


def make_workspaces(
    base: Path,
    count: int,
    todos_each: int,
    *,
    config: dict[str, Any] | None = None,
    flags: str | None = None,
) -> list[Path]:
    """``count`` fresh workspaces under ``base`` (which must not exist), ``todos_each`` todos each."""
    roots = [base / f"ws{i:02d}" for i in range(count)]
    for root in roots:
        make_workspace(root, todos_each, config=config, flags=flags)
    return roots


@dataclass(frozen=True)
class Profile:
    """One LLM profile: the stub's knobs, the client's config, and the levels run under it."""

    name: str
    #: one line for the report
    description: str
    #: keyword arguments of :class:`llm_stub.StubOptions`
    stub: dict[str, Any]
    #: ``llm.timeout`` and ``llm.max_retries`` of every workspace's config
    client_timeout_s: float
    max_retries: int
    levels: tuple[int, ...]
    #: todos per workspace at each level (every contender but the legacy loop)
    todos_per_workspace: dict[int, int]
    #: todos per workspace of the legacy loop at each level (it runs min(c, W) todos at once)
    legacy_loop_todos_per_workspace: dict[int, int]
    #: contenders run at each level
    contenders: dict[int, tuple[str, ...]]
    #: contenders not run at a level, and why
    skipped: dict[int, dict[str, str]] = field(default_factory=dict)

    def config(self, url: str) -> dict[str, Any]:
        """The ``.agent/config.json`` of every workspace under this profile."""
        return {"llm": {"base_url": url, "timeout": self.client_timeout_s, "max_retries": self.max_retries}}

    def todos_each(self, contender: str, level: int) -> int:
        """Todos per workspace of ``contender`` at ``level``."""
        if contender == "legacy_loop":
            return self.legacy_loop_todos_per_workspace[level]
        return self.todos_per_workspace[level]

    def view(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        for key in ("todos_per_workspace", "legacy_loop_todos_per_workspace", "contenders", "skipped"):
            data[key] = {str(k): v for k, v in data[key].items()}
        return data


@dataclass(frozen=True)
class Plan:
    """The size of every scenario of one run."""

    mode: str
    workspaces: int
    #: the worker count of ``async_wn`` (the cores this process may run on)
    workers: int
    profiles: tuple[Profile, ...]
    idle_seconds: float
    idle_warmup: float
    latency_ms: float
    latency_requests: int
    #: at more than one in flight: requests = in-flight x latency_rounds
    latency_rounds: int
    latency_concurrency: tuple[int, ...]
    inflight_target: int
    inflight_latency_ms: float
    #: idle contenders, measured side by side over one window
    idle_contenders: tuple[str, ...] = ("legacy_loop", "async_default", "async_w1", "bare_kernel")
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def contenders(self) -> tuple[str, ...]:
        """Every contender some profile runs, in :data:`CONTENDERS` order."""
        used = {c for p in self.profiles for names in p.contenders.values() for c in names}
        return tuple(c for c in CONTENDERS if c in used)

    def profile(self, name: str) -> Profile:
        """The profile called ``name``."""
        for profile in self.profiles:
            if profile.name == name:
                return profile
        raise KeyError(name)

    def view(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["profiles"] = [p.view() for p in self.profiles]
        return data


def todos_for(concurrency: int, workspaces: int, *, rounds: float, floor: int) -> int:
    """Todos per workspace so that ``concurrency`` slots are refilled about ``rounds`` times."""
    return max(floor, math.ceil(concurrency * rounds / workspaces))


def _todos_each(concurrency: int, workspaces: int) -> int:
    """Todos per workspace at a level given on the command line: about 10 rounds up to c = 100, 1.5 above
    (where the CPU, not the rounds, decides)."""
    return todos_for(concurrency, workspaces, rounds=10 if concurrency <= 100 else 1.5, floor=2)


PROFILE_NAMES: tuple[str, ...] = ("cpu", "realistic")

#: The realistic profile's LLM: lognormal latency (median 2 s, p99 10 s), 3% 429 (Retry-After 1 s), 0.5% hangs.
REALISTIC_STUB: dict[str, Any] = {
    "latency_ms": 2000.0,
    "latency_p99_ms": 10000.0,
    "fault_rates": {"429": 0.03, "hang": 0.005},
    "retry_after_s": 1.0,
    "hang_s": 3600.0,
    "draws": "prompt",
    "seed": 20261201,
}
#: Every workspace's client timeout (both loops): a hang costs 20 s, then a retry. 2x the realistic
#: p99; the lognormal's tail beyond it (0.04% of answers) times out and is retried the same way.
CLIENT_TIMEOUT_S = 20.0
MAX_RETRIES = 3


def _levels(given: list[int] | None, default: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(set(given))) if given else default


def _contenders_at(
    levels: tuple[int, ...], workspaces: int, names: tuple[str, ...]
) -> dict[int, tuple[str, ...]]:
    """``names`` at every level, but the legacy loop not above the level it is compared at.

    The legacy loop runs min(c, W) processes, so above c = W its deployment no
    longer changes: it runs up to c = 100 (the verdicts' level; or the first
    level >= W when 100 is not among them), not above.
    """
    cap = 100 if 100 in levels else min((c for c in levels if c >= workspaces), default=max(levels))
    return {c: tuple(n for n in names if n != "legacy_loop" or c <= cap) for c in levels}


def _skips(
    contenders: dict[int, tuple[str, ...]], names: tuple[str, ...], workspaces: int, mode: str
) -> dict[int, dict[str, str]]:
    """The contenders of ``names`` not run at each level, and why."""
    out: dict[int, dict[str, str]] = {}
    ran = [c for c, run in contenders.items() if "legacy_loop" in run]
    for c, run in contenders.items():
        missing: dict[str, str] = {}
        for name in names:
            if name in run:
                continue
            if name == "legacy_loop" and ran:
                missing[name] = (
                    f"min(c, W) = {min(c, workspaces)} processes, the same deployment as at c = {max(ran)}"
                )
            elif name == "bare_kernel":
                missing[name] = "reference line of the full run's cpu profile only"
            else:
                missing[name] = "full run only" if mode != "full" else "no verdict reads it at this level"
        if missing:
            out[c] = missing
    return out


def profiles_for(
    mode: str,
    *,
    workspaces: int,
    concurrency: list[int] | None,
    latency_ms: float,
    which: tuple[str, ...],
) -> tuple[Profile, ...]:
    """The profiles of ``mode`` (only those named in ``which``)."""
    everyone = CONTENDERS
    profiles: list[Profile] = []
    if mode == "smoke":
        levels = _levels(concurrency, (1, 4))
        cpu = Profile(
            name="cpu",
            description=f"fixed {min(latency_ms, 20.0):g} ms per answer, no faults (smoke size)",
            stub={"latency_ms": min(latency_ms, 20.0)},
            client_timeout_s=5.0,
            max_retries=MAX_RETRIES,
            levels=levels,
            todos_per_workspace={c: todos_for(c, workspaces, rounds=2, floor=1) for c in levels},
            legacy_loop_todos_per_workspace={c: todos_for(c, workspaces, rounds=2, floor=1) for c in levels},
            contenders={c: everyone for c in levels},
        )
        real_levels = _levels(concurrency, (4,))[-1:]
        names = ("legacy_loop", "legacy_threads", "async_w1", "async_wn")
        realistic = Profile(
            name="realistic",
            description="lognormal latency, median 20 ms, p99 100 ms; 3% 429 (Retry-After 0.05 s), "
            "0.5% hangs (the realistic profile at 1/100 of its latency: smoke size)",
            stub={
                **REALISTIC_STUB,
                "latency_ms": 20.0,
                "latency_p99_ms": 100.0,
                "retry_after_s": 0.05,
            },
            client_timeout_s=2.0,
            max_retries=MAX_RETRIES,
            levels=real_levels,
            todos_per_workspace={c: todos_for(c, workspaces, rounds=3, floor=2) for c in real_levels},
            legacy_loop_todos_per_workspace={c: 2 for c in real_levels},
            contenders={c: names for c in real_levels},
            skipped={c: {"bare_kernel": "reference line of the cpu profile only"} for c in real_levels},
        )
        profiles = [cpu, realistic]
    elif mode in ("quick", "full"):
        full = mode == "full"
        # Todos per workspace: about 10 rounds of every slot at c <= 100 (the sustained rate needs a
        # steady state between start-up and drain); at c = 1000 the CPU is the limit, not the rounds.
        cpu_levels = _levels(concurrency, (1, 10, 100, 1000) if full else (100,))
        cpu_todos = {1: 2, 10: 10, 100: 100, 1000: 150} if full else {100: 20}
        todos = {c: cpu_todos.get(c) or _todos_each(c, workspaces) for c in cpu_levels}
        cpu_names = everyone if full else ("legacy_loop", "legacy_threads", "async_w1", "async_wn")
        cpu_contenders = _contenders_at(cpu_levels, workspaces, cpu_names)
        profiles.append(
            Profile(
                name="cpu",
                description=f"fixed {latency_ms:g} ms per answer, no faults",
                stub={"latency_ms": latency_ms},
                client_timeout_s=CLIENT_TIMEOUT_S,
                max_retries=MAX_RETRIES,
                levels=cpu_levels,
                todos_per_workspace=todos,
                legacy_loop_todos_per_workspace=todos,
                contenders=cpu_contenders,
                skipped=_skips(cpu_contenders, everyone, workspaces, mode),
            )
        )
        real_levels = _levels(concurrency, (100, 1000) if full else (100,))
        real_todos = {100: 100, 1000: 150} if full else {100: 20}
        loop_todos = {100: 10} if full else {100: 2}
        # --quick runs one realistic line: a line that meets a hang lasts at least the client's timeout
        # (20 s) plus a retry, so each realistic line costs about half a minute however small.
        real_names = ("legacy_loop", "legacy_threads", "async_w1", "async_wn") if full else ("async_wn",)
        real_contenders = _contenders_at(real_levels, workspaces, real_names)
        profiles.append(
            Profile(
                name="realistic",
                description="lognormal latency per answer, median 2 s, p99 10 s (seeded, drawn per prompt); "
                "3% 429 with Retry-After 1 s; 0.5% hangs (until the client's timeout)",
                stub=dict(REALISTIC_STUB),
                client_timeout_s=CLIENT_TIMEOUT_S,
                max_retries=MAX_RETRIES,
                levels=real_levels,
                todos_per_workspace={c: real_todos.get(c) or _todos_each(c, workspaces) for c in real_levels},
                legacy_loop_todos_per_workspace={
                    c: loop_todos.get(c) or todos_for(min(c, workspaces), workspaces, rounds=10, floor=2)
                    for c in real_levels
                },
                contenders=real_contenders,
                skipped=_skips(real_contenders, everyone, workspaces, mode),
            )
        )
    else:
        raise ValueError(f"unknown mode {mode!r}: expected smoke, quick or full")
    return tuple(p for p in profiles if p.name in which)


def make_plan(
    mode: str,
    *,
    concurrency: list[int] | None = None,
    latency_ms: float = 200.0,
    workspaces: int = 10,
    profile: str = "both",
) -> Plan:
    """The plan of ``mode`` (``smoke``, ``quick`` or ``full``) for ``profile`` (``cpu``, ``realistic``, ``both``)."""
    if profile not in (*PROFILE_NAMES, "both"):
        raise ValueError(f"unknown profile {profile!r}: expected cpu, realistic or both")
    which = PROFILE_NAMES if profile == "both" else (profile,)
    if mode == "smoke":
        workspaces = 2
    profiles = profiles_for(
        mode, workspaces=workspaces, concurrency=concurrency, latency_ms=latency_ms, which=which
    )
    sizes: dict[str, tuple[float, float, int, int, int, float]] = {
        # idle window, warm-up, latency requests at 1 in flight, rounds, in-flight target, its stub latency
        "smoke": (1.0, 1.5, 10, 2, 50, 600.0),
        "quick": (3.0, 2.0, 10, 4, 1000, 1500.0),
        "full": (20.0, 3.0, 100, 25, 10_000, 12000.0),  # long enough for all 10,000 to be in flight at once
    }
    idle, warm, lat_n, lat_rounds, inflight, inflight_ms = sizes[mode]
    return Plan(
        mode=mode,
        workspaces=workspaces,
        workers=cores(),
        profiles=profiles,
        idle_seconds=idle,
        idle_warmup=warm,
        latency_ms=min(latency_ms, 20.0) if mode == "smoke" else latency_ms,
        latency_requests=lat_n,
        latency_rounds=lat_rounds,
        latency_concurrency=(1, 4) if mode == "smoke" else (1, 64),
        inflight_target=inflight,
        inflight_latency_ms=inflight_ms,
    )
