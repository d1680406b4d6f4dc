"""AsyncServerCore: the async main loop over one or more workspaces.

* :meth:`AsyncServerCore.start` builds everything through the
  :class:`AsyncIoCContainer` (metrics, event bus, orchestrator, the shared LLM
  connection pool, the embedded stub LLM when no endpoint is configured, one
  :class:`WorkspaceRuntime` per workspace, the API server when asked for) and
  installs the SIGTERM / SIGINT handlers.
* :meth:`AsyncServerCore.run_main_loop` schedules every unfinished todo on the
  :class:`TaskOrchestrator` and then sleeps until something happens: a todo
  added through the API, a change to a workspace's ``.agent/todos.json`` or
  ``.agent/config.json`` seen by the directory watcher, a ``todo retry``
  (which rewrites ``.agent/requeue.json``), a todo finishing, or a stop
  request. It never polls.
* :meth:`AsyncServerCore.handle_shutdown` is the graceful stop: no new todos;
  running ones get the grace period to finish; those still running are
  cancelled at their next safe point and recorded ``interrupted`` (their
  checkpoints stay, so the next start resumes them); then every resource is
  closed in reverse order of creation.

A first signal starts the graceful stop; a second one cuts the grace period short.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Self

import httpx

from codeagent.config import CONFIG_RELPATH, AgentConfig
from codeagent.errors import AgentError, ConfigError, WorkspaceViolation
from codeagent.models import Todo, TodoState, TodoStatus
from codeagent.mounts import Mount
from codeagent.paths import REQUEUE_RELPATH, STATE_DIR, check_relative_path
from codeagent.protocols import ExtraRoute
from core_async._compat import ato_thread
from core_async.kernel.components import ComponentProvider
from core_async.kernel.config_manager import ConfigurationManager
from core_async.kernel.container import AsyncIoCContainer, CloseFailure, Token
from core_async.kernel.events import Event, EventBus
from core_async.kernel.limits import ResourceLimits
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.orchestrator import TaskOrchestrator, TaskState
from core_async.kernel.services import EndpointProvider, Services, register_services
from core_async.kernel.watching import DirectoryWatcher
from core_async.kernel.workspace import WorkspaceRuntime

log = logging.getLogger("codeagent.kernel.core")

#: Todos scheduled per turn of the event loop when a workspace's list is (re)read.
SCHEDULE_BATCH = 64
#: How long event-stream clients get to receive the last events before the API closes.
STREAM_FLUSH_SECONDS = 1.0

WORKSPACES: Token[list[WorkspaceRuntime]] = Token("workspaces")


@dataclass(frozen=True)
class KernelOptions:
    """Knobs of the kernel. ``port=None`` serves no API; ``token`` overrides the config's ``api.token``."""

    #: The built-in limits; the first workspace's ``limits`` config and then ``limit_overrides`` go over them.
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    #: Limits given on the command line: they win over the configuration, also on reload.
    limit_overrides: Mapping[str, int] = field(default_factory=dict)
    #: The workspace whose ``limits`` config applies (default: the first one served). A worker of a
    #: set takes the command line's first workspace, served or not, so every worker follows one file.
    limits_from: Path | None = None
    grace_seconds: float = 10.0
    host: str = "127.0.0.1"
    port: int | None = None
    token: str | None = None
    event_capacity: int = 4096
    install_signal_handlers: bool = True
    #: Builds each workspace's components (default: plain core_async ones; the entry may route them).
    components: Callable[[Path], ComponentProvider] | None = None
    #: JSON routes the entry adds to the API (e.g. ``/flags``).
    extra_routes: Sequence[ExtraRoute] = ()
    #: ASGI apps the entry serves under a path prefix (e.g. its dashboard at ``/ui``): :mod:`codeagent.mounts`.
    mounts: Sequence[Mount] = ()
    #: Where workspaces without ``llm.base_url`` get an endpoint (``None``: they are refused).
    fallback_llm: EndpointProvider | None = None
    #: Called with every event the kernel publishes, on the loop (a worker forwards them to its supervisor).
    on_event: Callable[[Event], None] | None = None
    #: Wraps every transport of the shared LLM pool (the bridge records exchanges for shadow runs).
    wrap_llm_transport: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] | None = None


def _files_key(todo: Todo) -> list[str] | None:
    """The files a todo claims (normalised), or ``None`` (exclusive) when it names none or a bad one."""
    try:
        files = [check_relative_path(f) for f in todo.files]
    except WorkspaceViolation:
        return None
    return files or None


def _resolve_workspace(path: Path) -> Path:
    root = path.expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(str(path), "workspace directory does not exist")
    (root / ".agent").mkdir(exist_ok=True)
    return root


def _labels(roots: Sequence[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for root in roots:
        base = root.name or "workspace"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
    return out


class AsyncServerCore:
    """The async kernel: many workspaces, one event loop, todos run concurrently within limits."""

    def __init__(
        self,
        workspaces: Sequence[Path],
        *,
        llm_url: str | None = None,
        options: KernelOptions | None = None,
        until_idle: bool = False,
    ) -> None:
        if not workspaces:
            raise ValueError("at least one workspace is needed")
        self.workspace_paths = [Path(p) for p in workspaces]
        self.llm_url = llm_url
        self.options = options or KernelOptions()
        self.until_idle = until_idle
        self.container = AsyncIoCContainer()
        self.runtimes: list[WorkspaceRuntime] = []
        self.processed = 0
        self._services: Services | None = None
        self._watcher = DirectoryWatcher()
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._main_done = asyncio.Event()
        self._main_running = False
        self._dirty: set[WorkspaceRuntime] = set()
        self._failed_keys: set[str] = set()
        self._idle_state: dict[str, str] = {}
        self._scan_errors: dict[str, str] = {}
        self._fatal: AgentError | None = None
        self._signals: list[int] = []
        self._shut_down = False
        self.close_failures: list[CloseFailure] = []

    # ----------------------------------------------------------------- accessors

    @property
    def services(self) -> Services:
        """The kernel's shared services (after :meth:`start`)."""
        if self._services is None:
            raise RuntimeError("the kernel is not started")
        return self._services

    @property
    def metrics(self) -> MetricsCollector:
        """The kernel's metrics."""
        return self.services.metrics

    @property
    def events(self) -> EventBus:
        """The kernel's event bus."""
        return self.services.events

    @property
    def orchestrator(self) -> TaskOrchestrator:
        """The kernel's orchestrator."""
        return self.services.orchestrator

    @property
    def api_url(self) -> str | None:
        """``http://host:port`` of the API, when one is served."""
        api = self.services.api
        return api.url if api is not None else None

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._stop.is_set()

    # ----------------------------------------------------------------- start

    async def start(self) -> None:
        """Build and start every component; raises :class:`ConfigError` for a bad workspace or config."""
        roots = [await ato_thread(_resolve_workspace, p) for p in self.workspace_paths]
        register_services(self.container, self.options)
        self._services = services = await Services.resolve_base(self.container)
        loop_name = (
            "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
        )
        services.metrics.event_loop.labels(loop_name).set(1)
        runtimes = [
            WorkspaceRuntime(
                root,
                label,
                llm_url=self.llm_url,
                pool=services.pool,
                resources=services.orchestrator.resources,
                metrics=services.metrics,
                events=services.events,
                components=self.options.components(root) if self.options.components else None,
            )
            for root, label in zip(roots, _labels(roots), strict=True)
        ]
        for runtime in runtimes:
            await runtime.config_manager.load_config()
        if any(not rt.llm_base_url(rt.config) for rt in runtimes):
            stub_url = await services.fallback_llm_url(self.container)
            for runtime in runtimes:
                runtime.fallback_llm_url = stub_url
        self.runtimes = runtimes
        limits_config = await self._limits_config(runtimes)
        self._apply_limits(limits_config.config)
        limits_config.add_listener(self._on_limits_config_change)
        self.container.register_instance(WORKSPACES, runtimes, close=self._close_runtimes)
        for runtime in runtimes:
            await runtime.start()
            runtime.on_todo_added = self._on_todo_added
            self._watch(runtime)
        if self.options.install_signal_handlers:  # before the API answers: a client may signal at once
            self._install_signal_handlers()
        if self.options.port is not None:
            try:
                await services.start_api(
                    self.container,
                    self.runtimes,
                    self._token,
                    host=self.options.host,
                    port=self.options.port,
                    extra_routes=self.options.extra_routes,
                    mounts=self.options.mounts,
                )
            except OSError as exc:
                where = f"{self.options.host}:{self.options.port}"
                raise ConfigError(where, f"the API cannot listen there ({exc})", field="api.port") from exc
        self._dirty = set(self.runtimes)
        services.events.publish(
            "server.started",
            loop=loop_name,
            workspaces=[rt.label for rt in self.runtimes],
            api=self.api_url,
        )

    async def _limits_config(self, runtimes: Sequence[WorkspaceRuntime]) -> ConfigurationManager:
        """The configuration the limits follow: a served workspace's, or one watched for that alone."""
        source = self.options.limits_from
        if source is None:
            return runtimes[0].config_manager
        resolved = await ato_thread(Path(source).resolve)
        for runtime in runtimes:
            if runtime.root == resolved:
                return runtime.config_manager
        manager = ConfigurationManager(resolved, label="limits", events=self.events, metrics=self.metrics)
        await manager.load_config()

        async def changed() -> None:
            await manager.reload()

        self._watcher.add(resolved / STATE_DIR, PurePosixPath(CONFIG_RELPATH).name, changed)
        return manager

    def _apply_limits(self, config: AgentConfig) -> ResourceLimits:
        """The limits in force: built-in, then the limits config, then the command line."""
        limits = self.options.limits.with_values(config.limits.given(), self.options.limit_overrides)
        if limits != self.orchestrator.limits:
            log.info("limits: %s", ", ".join(f"{k}={v}" for k, v in limits.as_dict().items()))
        self.orchestrator.manage_resources(limits)
        return limits

    def _on_limits_config_change(self, old: AgentConfig, new: AgentConfig) -> None:
        if old.limits != new.limits:
            limits = self._apply_limits(new)
            self.events.publish("limits.changed", **limits.as_dict())

    def _token(self) -> str | None:
        return self.options.token or self.runtimes[0].config.api.token

    @staticmethod
    async def _close_runtimes(runtimes: list[WorkspaceRuntime]) -> None:
        for runtime in reversed(runtimes):
            await runtime.aclose()

    def _watch(self, runtime: WorkspaceRuntime) -> None:
        directory = runtime.root / ".agent"

        async def todos_changed() -> None:
            self._mark_dirty(runtime)

        async def config_changed() -> None:
            await runtime.config_manager.reload()

        async def requeued() -> None:  # `todo retry` put todos back: run them, even ones that raised
            prefix = f"{runtime.label}/"
            self._failed_keys = {key for key in self._failed_keys if not key.startswith(prefix)}
            self._mark_dirty(runtime)

        self._watcher.add(directory, "todos.json", todos_changed)
        self._watcher.add(directory, "config.json", config_changed)
        self._watcher.add(directory, PurePosixPath(REQUEUE_RELPATH).name, requeued)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (
                NotImplementedError,
                RuntimeError,
                ValueError,
            ):  # pragma: no cover - not main thread / Windows
                continue
            self._signals.append(sig)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if self._stop.is_set():
            log.warning("received %s again: interrupting running todos now", name)
            self.request_shutdown(name, force=True)
        else:
            log.info("received %s: stopping (running todos get %.1fs)", name, self.options.grace_seconds)
            self.request_shutdown(name)

    # ----------------------------------------------------------------- waking

    def wake(self, runtime: WorkspaceRuntime | None = None) -> None:
        """Look at a workspace's todo list again (every workspace when none is named)."""
        for rt in [runtime] if runtime is not None else self.runtimes:
            self._mark_dirty(rt)

    def _mark_dirty(self, runtime: WorkspaceRuntime) -> None:
        self._dirty.add(runtime)
        self._wake.set()

    def _on_todo_added(self, runtime: WorkspaceRuntime, todo: Todo) -> None:
        self._mark_dirty(runtime)

    def request_shutdown(self, reason: str = "requested", *, force: bool = False) -> None:
        """Ask the main loop to stop (thread-unsafe: call on the loop); ``force`` skips the grace period."""
        if not self._stop.is_set():
            log.info("shutdown requested (%s)", reason)
        self._stop.set()
        if force:
            self._force.set()
        self._wake.set()

    def _job_raised(self, key: str, exc: Exception) -> None:
        """A todo's job raised (its outcome could not be recorded, e.g. the disk is full).

        Running ``until_idle`` (a batch), that ends the run with the error, as the
        legacy loop's does, instead of reporting "no todo left" with todos
        still unrecorded; the todo stays resumable from its checkpoint. A
        service keeps serving the other todos (the failed one runs again after
        a ``todo retry`` or a restart).
        """
        if not self.until_idle or self._fatal is not None:
            return
        self._fatal = (
            exc if isinstance(exc, AgentError) else AgentError(f"{key}: {type(exc).__name__}: {exc}")
        )
        self.request_shutdown("a todo's outcome could not be recorded")

    # ----------------------------------------------------------------- the main loop

    async def run_main_loop(self) -> int:
        """Process todos until a stop is requested (or, with ``until_idle``, none is left); return how many.

        Raises the :class:`AgentError` of an unreadable todo or status file
        when running ``until_idle`` (as the legacy loop does); otherwise such a
        file is logged and looked at again on its next change.
        """
        services = self.services
        self._main_running = True
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(services.orchestrator.execute_parallel(), name="kernel-dispatcher")
                ready = asyncio.Event()
                watching = group.create_task(self._watcher.run(ready), name="kernel-watcher")
                try:
                    await ready.wait()
                    await self._loop_until_stopped()
                except asyncio.CancelledError:
                    self._force.set()
                    raise
                finally:
                    await self._drain()
                    self._watcher.stop()
                    await asyncio.wait({watching})
        finally:
            self._main_running = False
            self._main_done.set()
        if self._fatal is not None:
            raise self._fatal
        return self.processed

    async def _loop_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            for runtime in dirty:
                await self._scan(runtime)
            await self._record_idle_states()
            if self.until_idle and not self._dirty and self.orchestrator.is_idle():
                log.info("no todo left; stopping (--until-idle)")
                return
            if not self._dirty and not self._stop.is_set():
                await self._wake.wait()

    async def _scan(self, runtime: WorkspaceRuntime) -> None:
        try:
            pending = await runtime.pending()
        except AgentError as exc:
            if self.until_idle:
                self._fatal = exc
                self.request_shutdown("unreadable state file")
                return
            if self._scan_errors.get(runtime.label) != str(exc):
                log.error(
                    "cannot read the todos of %s: %s (waiting for the file to change)", runtime.label, exc
                )
                self.events.publish("workspace.error", workspace=runtime.label, error=str(exc))
            self._scan_errors[runtime.label] = str(exc)
            return
        self._scan_errors.pop(runtime.label, None)
        for index, todo in enumerate(pending):
            if index and index % SCHEDULE_BATCH == 0:
                await asyncio.sleep(0)  # a long todo list is scheduled over several turns of the loop
            key = f"{runtime.label}/{todo.id}"
            if (
                key in self._failed_keys
                or self.orchestrator.is_active(key)
                or not self.orchestrator.accepting
            ):
                continue
            self.orchestrator.schedule_task(
                runtime.label, key, self._job_for(runtime, todo, key), files=_files_key(todo)
            )
            self.events.publish("todo.queued", workspace=runtime.label, todo_id=todo.id)

    def _job_for(self, runtime: WorkspaceRuntime, todo: Todo, key: str) -> _TodoJob:
        return _TodoJob(self, runtime, todo, key)

    async def _record_idle_states(self) -> None:
        for runtime in self.runtimes:
            state = "working" if self.orchestrator.active_in(runtime.label) else "idle"
            if self._idle_state.get(runtime.label) == state:
                continue
            self._idle_state[runtime.label] = state
            if state == "idle":
                try:
                    await runtime.set_agent_state("idle")
                except AgentError as exc:
                    log.error("cannot record the state of %s: %s", runtime.label, exc)

    async def _drain(self) -> None:
        grace = 0.0 if self._force.is_set() else self.options.grace_seconds
        budget = max(0.0, grace - min(1.0, grace * 0.2))  # keep some of the grace period for closing
        running = self.orchestrator.running_keys()
        if running:
            log.info("waiting up to %.1fs for %d running todo(s)", budget, len(running))
        self.events.publish("server.draining", running=len(running), grace=grace)
        interrupted = await self.orchestrator.drain(
            budget, force=self._force, before_cancel=self._hold_interrupts
        )
        cut: dict[str, list[str]] = {}
        for task in interrupted:
            if task.state is TaskState.CANCELLED:
                cut.setdefault(task.workspace, []).append(task.key.split("/", 1)[1])
        for runtime in self.runtimes if interrupted else []:
            try:
                await runtime.mark_interrupted(cut.get(runtime.label, []))
            except AgentError as exc:
                log.error("cannot record the interrupted todos of %s: %s", runtime.label, exc)
        if interrupted:
            log.info("interrupted %d todo(s); they resume on the next start", len(interrupted))

    def _hold_interrupts(self, _tasks: object) -> None:
        for runtime in self.runtimes:
            runtime.status.hold_interrupts()

    # ----------------------------------------------------------------- shutdown

    async def handle_shutdown(self) -> list[CloseFailure]:
        """Stop gracefully (see the module docstring) and close every resource; return close failures.

        Safe to call more than once, before or after the main loop ended.
        """
        if self._shut_down:
            return []
        self._shut_down = True
        self.request_shutdown("shutdown")
        if self._main_running:
            await self._main_done.wait()
        self._remove_signal_handlers()
        if self._services is not None:
            for runtime in self.runtimes:
                try:
                    await runtime.set_agent_state("stopped")
                except AgentError as exc:
                    log.error("cannot record the state of %s: %s", runtime.label, exc)
            self.events.publish("server.stopped", processed=self.processed)
            self.events.close()
            await self.events.wait_released(STREAM_FLUSH_SECONDS)
        self.close_failures = await self.container.aclose()
        for failure in self.close_failures:
            log.error("resource %s did not close cleanly: %s", failure.key, failure.error)
        return self.close_failures

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.handle_shutdown()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.handle_shutdown()


class _TodoJob:
    """The orchestrator's job for one todo: run it, count it, wake the main loop."""

    def __init__(self, core: AsyncServerCore, runtime: WorkspaceRuntime, todo: Todo, key: str) -> None:
        self.core = core
        self.runtime = runtime
        self.todo = todo
        self.key = key

    async def __call__(self) -> TodoState:
        try:
            state = await self.runtime.process(self.todo)
        except Exception as exc:
            self.core._failed_keys.add(self.key)  # e.g. the status file cannot be written: do not loop on it
            self.core._job_raised(self.key, exc)
            raise
        finally:
            self.core._wake.set()
        if state.status is not TodoStatus.CANCELLED:
            self.core.processed += 1
        return state
