"""The fleet as the command line drives it: ``worker``, ``serve --queue``, ``todo add --queue``, ``queue status``.

A workspace joins the fleet once (:func:`register`): it gets an id, written to
``.agent/workspace.json`` and recorded in the database with its path. Every
host must mount it at that same path (a shared volume); a worker checks, before
it drives a workspace, that the id file at the recorded path is the one the
database knows, and refuses the job otherwise: a host that sees a different
directory there (or none) never writes into it.

The state of a fleet workspace (todos, status, checkpoints, events) lives in
PostgreSQL; its files and git repository stay on the shared disk. The flags
still route the configuration, files, git and the LLM client per workspace.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from codeagent.errors import ConfigError
from codeagent.models import OperatorAction, Todo, TodoChange, utcnow
from core_async.pg_state import (
    AsyncPgCheckpointStore,
    AsyncPgEventLog,
    AsyncPgStatusStore,
    AsyncPgTodoStore,
    PgDatabase,
)
from fleet.events import EventFollower, EventSink
from fleet.pools import STATE_POOL_DEFAULT
from fleet.queue import FleetQueue, Timing, WorkspaceHeld
from fleet.workspaces import register, verify_identity

# Every fleet command needs the queue and the database, imported above: an import is a blocking call,
# and made inside a coroutine it holds the event loop (asyncio's debug mode reports it). The kernel's
# own modules stay imported where only ``worker`` and ``serve --queue`` need them.


class FleetComponents:
    """A fleet workspace's components for the kernel: state in PostgreSQL, the rest routed by its flags."""

    def __init__(self, db: PgDatabase, ident: str, routed: Any) -> None:
        self.db = db
        self.ident = ident
        self.routed = routed

    def config_source(self, root: Path) -> Any:
        """The routed configuration loader."""
        return self.routed.config_source(root)

    def stores(self, root: Path) -> tuple[Any, Any, Any]:
        """The workspace's state in PostgreSQL."""
        return (
            AsyncPgTodoStore(self.db, self.ident),
            AsyncPgStatusStore(self.db, self.ident),
            AsyncPgCheckpointStore(self.db, self.ident),
        )

    async def workers(self, root: Path, config: Any, base_url: str, pool: Any) -> Any:
        """Files, git and the LLM client, routed."""
        return await self.routed.workers(root, config, base_url, pool)

    async def aclose(self) -> None:
        """Close the routed part (the database belongs to the worker)."""
        await self.routed.aclose()


class _SharedStub:
    """One embedded stub LLM per worker process, started the first time a workspace needs it."""

    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._url: str | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def provider(self) -> AsyncIterator[str]:
        async with self._lock:
            if self._url is None:
                from codeagent_app.endpoint import aembedded_stub

                self._url = await self._stack.enter_async_context(aembedded_stub())
        yield self._url

    async def aclose(self) -> None:
        await self._stack.aclose()


async def run_worker(
    dsn: str,
    *,
    concurrency: int,
    llm_url: str | None,
    flags: Path | None,
    stalled_after: float,
    db_connections: int = STATE_POOL_DEFAULT,
) -> int:
    """``codeagent worker``: take workspace drains from the queue until SIGTERM / SIGINT.

    The worker opens at most ``db_connections`` for the workspaces' state and
    :data:`QUEUE_POOL_MAX` for the queue, whatever its concurrency: state
    statements are short, so a small pool serves many drains, and a fleet of N
    workers stays within N x (both) of the server's ``max_connections``.
    """
    from bridge.wiring import recording_transport
    from codeagent_app.runner import routed_components
    from core_async.kernel.entry import run_kernel
    from core_async.kernel.server_core import KernelOptions
    from legacy.workspace_lock import WorkspaceBusy, hold_workspace

    db = await PgDatabase(dsn, max_size=db_connections).open()
    queue = FleetQueue(dsn, Timing.for_stalled_after(stalled_after))
    stub = _SharedStub()
    name = f"{socket.gethostname()}:{os.getpid()}"
    sink = EventSink(AsyncPgEventLog(db), source={"host": name}).start()
    routed = routed_components(flags)

    async def drain(ident: str) -> None:
        root = await verify_identity(db, ident)
        async with AsyncExitStack() as stack:
            try:
                await asyncio.to_thread(stack.enter_context, hold_workspace(root, "fleet"))
            except WorkspaceBusy as exc:  # e.g. by a worker taken for lost while only slow: wait for it
                raise WorkspaceHeld(str(exc)) from exc
            options = KernelOptions(
                install_signal_handlers=False,
                components=lambda r: FleetComponents(db, ident, routed(r)),
                fallback_llm=stub.provider,
                wrap_llm_transport=recording_transport,
                on_event=sink.offer,
            )
            await run_kernel([root], llm_url=llm_url, until_idle=True, options=options)

    try:
        async with queue.app.open_async():
            await queue.ensure_schema()
            print(f"codeagent: worker {name} takes drains from the queue", file=sys.stderr, flush=True)
            await queue.run_worker(drain, concurrency=concurrency, name=name)
    finally:
        await sink.aclose()
        await stub.aclose()
        await db.aclose()
    return 0


async def add_todo(dsn: str, root: Path, text: str, files: Sequence[str]) -> Todo:
    """``codeagent todo add --queue``: the todo into the fleet's state, and a drain of its workspace asked for."""
    db = await PgDatabase(dsn, max_size=2).open()
    try:
        ident = await register(db, root)
        todo = await AsyncPgTodoStore(db, ident).add(text, files)
        await AsyncPgEventLog(db).append([(root.name, "todo.added", _now(), _added(root.name, todo, "cli"))])
        queue = FleetQueue(dsn)
        async with queue.app.open_async():
            await queue.ensure_schema()
            await queue.defer_drain(ident)
    finally:
        await db.aclose()
    return todo


def _now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


def _added(label: str, todo: Todo, source: str) -> dict[str, Any]:
    return {"workspace": label, "todo_id": todo.id, "text": todo.text, "source": source}


async def queue_status(dsn: str) -> dict[str, Any]:
    """``codeagent queue status``: workers and their heartbeats, drains by workspace and status."""
    db = await PgDatabase(dsn, max_size=2).open()
    try:
        workspaces = {ident: {"path": path, "label": label} for ident, path, label in await db.workspaces()}
        queue = FleetQueue(dsn)
        async with queue.app.open_async():
            await queue.ensure_schema()
            status = await queue.status()
    finally:
        await db.aclose()
    for job in status["jobs"]:
        job["path"] = workspaces.get(job["workspace"], {}).get("path")
    status["workspaces"] = [{"id": k, **v} for k, v in workspaces.items()]
    return status


class FleetWorkspace:
    """One fleet workspace as a node's API sees it: state in PostgreSQL; adds and retries ask for a drain."""

    def __init__(
        self, db: PgDatabase, queue: FleetQueue, sink: EventSink, ident: str, path: str, label: str
    ) -> None:
        self.label = label
        self.path = path
        self.ident = ident
        self.todos = AsyncPgTodoStore(db, ident)
        self.status = AsyncPgStatusStore(db, ident)
        self.checkpoints = AsyncPgCheckpointStore(db, ident)
        self._queue = queue
        self._sink = sink

    @property
    def root(self) -> Path:
        """Where the workspace is checked out."""
        return Path(self.path)

    async def add_todo(self, text: str, files: Sequence[str] = ()) -> Todo:
        """Append a todo, say so on the fleet's event log, and ask for a drain."""
        todo = await self.todos.add(text, files)
        self._sink.offer_raw(self.label, "todo.added", _added(self.label, todo, "api"))
        await self._queue.defer_drain(self.ident)
        return todo

    async def operate(
        self, action: OperatorAction, todo_ids: Sequence[str], *, source: str
    ) -> list[TodoChange]:
        """Retry or cancel in the fleet's state; a retry asks for a drain."""
        changes = await self.status.operate(action, todo_ids, source=source, loop_running=True)
        if action == "retry" and any(c.refused is None for c in changes):
            await self._queue.defer_drain(self.ident)
        return changes


async def serve_fleet(dsn: str, host: str, port: int, token: str | None, extra_routes: Sequence[Any]) -> int:
    """``codeagent serve --queue``: this node's API over every workspace of the fleet, until SIGTERM."""
    import signal

    from core_async.kernel.api_app import create_api_app
    from core_async.kernel.events import EventBus
    from core_async.kernel.http_server import ApiServer
    from core_async.kernel.metrics import MetricsCollector

    db = await PgDatabase(dsn).open()
    queue = FleetQueue(dsn)
    metrics = MetricsCollector()
    bus = EventBus(on_publish=_count_into(metrics))
    log_ = AsyncPgEventLog(db)
    sink = EventSink(log_).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    follower = EventFollower(dsn, log_, bus)
    ready = asyncio.Event()
    try:
        async with queue.app.open_async():
            await queue.ensure_schema()
            registered = await db.workspaces()
            if not registered:
                raise ConfigError(
                    dsn, "no workspace has joined this fleet yet (codeagent todo add --queue DSN -w DIR)"
                )
            views = [FleetWorkspace(db, queue, sink, ident, path, label) for ident, path, label in registered]
            following = asyncio.create_task(follower.run(ready), name="fleet-event-follower")
            await ready.wait()
            app = create_api_app(views, metrics=metrics, events=bus, token=token, extra_routes=extra_routes)
            server = ApiServer(app, host, port)
            await server.start()
            print(
                f"codeagent: API listening on {server.url} (fleet of {len(views)} workspaces)",
                file=sys.stderr,
                flush=True,
            )
            try:
                await stop.wait()
            finally:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
                bus.close()
                await bus.wait_released(1.0)
                await server.aclose()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await sink.aclose()
        await db.aclose()
    return 0


def _count_into(metrics: Any) -> Callable[[Any], None]:
    """The fleet's todo counters, kept from the event stream (no database query per scrape)."""

    def count(event: Any) -> None:
        metrics.events.inc()
        workspace = event.data.get("workspace")
        if event.type in ("todo.done", "todo.failed") and workspace is not None:
            metrics.todo_finished(str(workspace), event.type.split(".", 1)[1])

    return count
