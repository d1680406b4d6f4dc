"""``--workers N``: the async loop on every core, the workspace as the unit of ownership.

One Python process runs Python on one core at a time, so the async loop
shares its workspaces among N worker processes (``codeagent_app/worker.py``),
each an ordinary async kernel over the workspaces it claims with the workspace
lock. This supervisor:

* starts the workers, each allowed ``ceil(workspaces / N)`` workspaces, and
  restarts one that dies (a SIGKILL frees its locks with its process; the new
  worker claims them and resumes every todo from its checkpoints);
* serves the one HTTP API of the set (``serve``): the same REST routes over the
  workspaces' state files (a todo added lands in ``todos.json``, whose owner
  wakes on the change), ``/events`` carrying every worker's events (each
  worker's pipe keeps its order, so one workspace's events stay in order; the
  supervisor numbers them, so ``?after=N`` replays work), ``/metrics``
  aggregated over the workers (prometheus_client's multiprocess mode), and
  ``GET /v1/workers``;
* on SIGTERM / SIGINT, passes the signal on and waits for every worker to
  drain within the grace period, then exits 0.

With ``--until-idle`` the set ends once every worker has ended.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codeagent.protocols import ExtraRoute
from codeagent_app.worker import EXIT_NOTHING_TO_CLAIM, WorkerSpec

if TYPE_CHECKING:
    from codeagent_app.runner import LoopRequest
    from core_async.kernel.events import EventBus

log = logging.getLogger("codeagent.workers")

#: prometheus_client's multiprocess directory variable (named here: importing the library would read it).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: A worker that dies is started again after this long, doubling while it keeps dying young.
RESTART_DELAY = 0.1
RESTART_DELAY_MAX = 5.0
#: A worker that lived this long before dying starts again at once.
HEALTHY_AFTER = 10.0


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class WorkerSlot:
    """One worker position of the set and the process currently filling it."""

    index: int
    process: asyncio.subprocess.Process | None = None
    pid: int | None = None
    workspaces: list[str] = field(default_factory=list)
    starts: int = 0
    processed: int = 0
    exited: int | None = None
    started_at: float = 0.0

    def view(self) -> dict[str, Any]:
        """What ``GET /v1/workers`` says of it."""
        return {
            "worker": self.index,
            "pid": self.pid,
            "alive": self.process is not None and self.process.returncode is None,
            "workspaces": self.workspaces,
            "restarts": max(0, self.starts - 1),
            "processed": self.processed,
        }


class Supervisor:
    """Starts, watches, restarts and stops the workers; serves their one API."""

    def __init__(self, request: LoopRequest, roots: Sequence[Path], workers: int, metrics_dir: str) -> None:
        self.request = request
        self.roots = list(roots)
        self.count = workers
        self.capacity = math.ceil(len(self.roots) / workers)
        self.metrics_dir = metrics_dir
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self.fallback_llm_url: str | None = None
        self.events: EventBus | None = None
        self._stopping = asyncio.Event()
        self._force = False

    # ----------------------------------------------------------------- the set

    async def run(self) -> int:
        """Run the set until it stops; return how many todos the workers processed."""
        from core_async.kernel.events import EventBus

        self.events = EventBus()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            async with AsyncExitStack() as stack:
                self.fallback_llm_url = await stack.enter_async_context(self._fallback_llm())
                if self.request.api is not None:
                    await stack.enter_async_context(self._api())
                self.events.publish("server.started", loop="async", workers=self.count, api=self._api_url)
                await asyncio.gather(*(self._keep(slot) for slot in self.slots))
                self.events.publish("server.stopped", processed=sum(s.processed for s in self.slots))
                self.events.close()
                await self.events.wait_released(1.0)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return sum(slot.processed for slot in self.slots)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._stopping.is_set():
            log.warning("received %s again: workers stop now", name)
            self._force = True
        else:
            log.info("received %s: stopping %d worker(s)", name, self.count)
        self._stopping.set()
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signal.SIGKILL if self._force else signal.SIGTERM)

    async def _keep(self, slot: WorkerSlot) -> None:
        """Keep one worker position filled until the set stops (or, until idle, its worker is done)."""
        delay = RESTART_DELAY
        while not self._stopping.is_set():
            code = await self._run_worker(slot)
            if self._stopping.is_set():
                return
            if code == 0 and self.request.until_idle:
                return
            if code == EXIT_NOTHING_TO_CLAIM and self.request.until_idle:
                return
            lived = time.monotonic() - slot.started_at
            delay = RESTART_DELAY if lived >= HEALTHY_AFTER else min(delay * 2, RESTART_DELAY_MAX)
            reason = f"signal {-code}" if code < 0 else f"exit status {code}"
            log.warning("worker %d (pid %s) ended with %s; starting it again", slot.index, slot.pid, reason)
            if self.events is not None:
                self.events.publish("worker.lost", worker=slot.index, pid=slot.pid, reason=reason)
            try:
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                continue

    async def _run_worker(self, slot: WorkerSlot) -> int:
        """Start one worker, relay its events until it ends; return its exit status."""
        read_fd, write_fd = os.pipe()
        spec = WorkerSpec(
            index=slot.index,
            workspaces=[str(r) for r in self.roots],
            capacity=self.capacity,
            events_fd=write_fd,
            until_idle=self.request.until_idle,
            llm_url=self.request.llm_url,
            fallback_llm_url=self.fallback_llm_url,
            flags=str(self.request.flags) if self.request.flags else None,
            use_uvloop=self.request.use_uvloop,
            grace_seconds=self.request.grace_seconds,
            limits=dict(self.request.limits),
            supervisor_pid=os.getpid(),
        )
        env = {**os.environ, MULTIPROC_ENV: self.metrics_dir}
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "codeagent_app.worker", spec.to_json(), pass_fds=(write_fd,), env=env
            )
        finally:
            os.close(write_fd)
        slot.process, slot.pid, slot.workspaces = process, process.pid, []
        slot.starts += 1
        slot.started_at = time.monotonic()
        # Every event of the worker is relayed before its exit is acted on, so a workspace that moves
        # to the next worker has all of its earlier events published first.
        await self._relay(slot, read_fd)
        code = await process.wait()
        from core_async.kernel.metrics import forget_process

        forget_process(process.pid)
        slot.exited = code
        return code

    async def _relay(self, slot: WorkerSlot, read_fd: int) -> None:
        reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            while line := await reader.readline():
                self._on_message(slot, json.loads(line))
        finally:
            transport.close()

    def _on_message(self, slot: WorkerSlot, message: dict[str, Any]) -> None:
        kind = str(message.pop("type", ""))
        if kind == "worker.claimed":
            slot.workspaces = list(message.get("workspaces", []))
        elif kind == "worker.result":
            slot.processed += int(message.get("processed", 0))
            return
        message.pop("seq", None)
        message.pop("time", None)
        if kind in ("server.started", "server.draining", "server.stopped"):
            kind = f"worker.{kind.split('.', 1)[1]}"
        message.setdefault("worker", slot.index)
        if self.events is not None and not self.events.closed:
            self.events.publish(kind, **message)

    # ----------------------------------------------------------------- the LLM endpoint

    @asynccontextmanager
    async def _fallback_llm(self) -> Any:
        """The embedded stub when a workspace has no endpoint and none was given: started once, for all."""
        from codeagent_app.endpoint import aembedded_stub
        from legacy.config import load_config

        def needed() -> bool:
            return self.request.llm_url is None and any(not load_config(r).llm.base_url for r in self.roots)

        if not await asyncio.to_thread(needed):
            yield None
            return
        async with aembedded_stub() as url:
            yield url

    # ----------------------------------------------------------------- the API

    _api_url: str | None = None

    @asynccontextmanager
    async def _api(self) -> Any:
        from codeagent_app.dashboard import dashboard_mounts
        from codeagent_app.flags_api import flags_routes
        from codeagent_app.runner import flags_path
        from core_async.kernel.api_app import create_api_app
        from core_async.kernel.http_server import ApiServer
        from core_async.kernel.metrics import MetricsCollector
        from legacy.config import load_config

        assert self.request.api is not None and self.events is not None
        host, port = self.request.api
        config = await asyncio.to_thread(load_config, self.roots[0])
        workers_route = ExtraRoute("GET", "/workers", self._workers_handler())
        fronts = [
            FrontWorkspace(root, label, self.events, self.request.flags)
            for root, label in _labelled(self.roots)
        ]
        app = create_api_app(
            fronts,
            metrics=MetricsCollector(),
            events=self.events,
            token=config.api.token,
            extra_routes=[*flags_routes(flags_path(self.roots[0], self.request.flags)), workers_route],
            limits=self._limits_view,
            mounts=dashboard_mounts(self.request, self.roots, "async"),  # the dashboard at /ui (issue 15)
        )
        server = ApiServer(app, host, port)
        try:
            await server.start()
        except OSError as exc:
            from codeagent.errors import ConfigError

            raise ConfigError(
                f"{host}:{port}", f"the API cannot listen there ({exc})", field="api.port"
            ) from exc
        self._api_url = server.url
        print(f"codeagent: API listening on {server.url} ({self.count} workers)", file=sys.stderr, flush=True)
        try:
            yield server
        finally:
            await server.aclose()
            for front in fronts:
                await front.runtime.drain()
                await asyncio.to_thread(front.runtime.close)

    def _limits_view(self) -> dict[str, Any]:
        """``GET /v1/limits`` of the set: each worker's ceilings, and what all of them use now."""
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)  # type: ignore[no-untyped-call]
        limits: dict[str, int] = {}
        in_use: dict[str, int] = {}
        for family in registry.collect():
            for sample in family.samples:
                resource = sample.labels.get("resource")
                if sample.name == "codeagent_resource_limit" and resource:
                    limits[resource] = int(sample.value)
                elif sample.name == "codeagent_resource_in_use" and resource:
                    in_use[resource] = int(sample.value)
        return {"limits": limits, "limits_are": "per worker process", "workers": self.count, "in_use": in_use}

    def _workers_handler(self) -> Callable[[str | None, Any], tuple[int, Any]]:
        def handler(ident: str | None, body: Any) -> tuple[int, Any]:
            views = [slot.view() for slot in list(self.slots)]
            if ident is None:
                return 200, {"workers": views}
            found = next((v for v in views if str(v["worker"]) == ident), None)
            if found is None:
                return 404, {"error": {"code": "not_found", "message": f"no worker {ident!r}"}}
            return 200, found

        return handler


def _labelled(roots: Sequence[Path]) -> list[tuple[Path, str]]:
    seen: dict[str, int] = {}
    out = []
    for root in roots:
        base = root.name or "workspace"
        seen[base] = seen.get(base, 0) + 1
        out.append((root, base if seen[base] == 1 else f"{base}-{seen[base]}"))
    return out


class FrontWorkspace:
    """The API's view of one workspace: its state files (whoever drives it), and an add that says so.

    The worker that owns the workspace wakes on the change of ``todos.json``;
    ``todo.added`` is published here, where the API runs.
    """

    def __init__(self, root: Path, label: str, events: EventBus, flags: Path | None) -> None:
        from bridge.runtime import BridgeRuntime
        from bridge.wiring import RoutedComponents
        from codeagent_app.flags_cli import register_in_force
        from codeagent_app.runner import flags_path

        self.label = label
        self.path = str(root)
        # Routed as the workers' stores are, so the flags steer what the API writes too; the health
        # file stays the workers' to write.
        self.runtime = BridgeRuntime(root, flags_path(root, flags), write_health=False)
        register_in_force(self.runtime.store)  # GET /flags and /ui: what the set routes by (the same file)
        self.todos, self.status, self.checkpoints = RoutedComponents(self.runtime).stores(root)
        self._events = events

    @property
    def root(self) -> Path:
        """The workspace directory."""
        return Path(self.path)

    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Any:
        """Append a todo and tell the event stream."""
        todo = await self.todos.add(text, files)
        self._events.publish("todo.added", workspace=self.label, todo_id=todo.id, text=todo.text)
        return todo

    async def operate(self, action: Any, todo_ids: Sequence[str], *, source: str) -> Any:
        """Retry or cancel, on the workspace's files (its worker wakes on the requeue notice)."""
        from core_async.kernel.api_app import operate_on_files

        return await operate_on_files(self.root, action, todo_ids, source=source)


def drive_workers(request: LoopRequest, roots: Sequence[Path], workers: int) -> int:
    """Run the async loop over ``roots`` in ``workers`` processes behind one supervisor; return todos processed."""
    with tempfile.TemporaryDirectory(prefix="codeagent-metrics-") as metrics_dir:
        # prometheus_client reads this when first imported: set before the supervisor's API imports it.
        previous = os.environ.get(MULTIPROC_ENV)
        os.environ[MULTIPROC_ENV] = metrics_dir
        try:
            from core_async.kernel.entry import ensure_logging
            from core_async.kernel.loop_policy import run_on_best_loop

            ensure_logging()
            supervisor = Supervisor(request, roots, workers, metrics_dir)
            return run_on_best_loop(supervisor.run(), use_uvloop=request.use_uvloop)
        finally:
            if previous is None:
                os.environ.pop(MULTIPROC_ENV, None)
            else:
                os.environ[MULTIPROC_ENV] = previous
