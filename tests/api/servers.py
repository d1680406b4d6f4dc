"""The two API servers under test, started on loopback ports: the legacy one and the async one."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from pathlib import Path

from core_async.checkpoints import AsyncCheckpointJsonStore
from core_async.kernel.api_app import StoreWorkspace, create_api_app
from core_async.kernel.events import EventBus
from core_async.kernel.http_server import ApiServer
from core_async.kernel.metrics import MetricsCollector
from core_async.status import AsyncStatusJsonStore
from core_async.todos import AsyncTodoJsonStore
from legacy.api import LegacyAPIServer
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from legacy.todos import TodoStore


@dataclass
class Running:
    """A started server: which kind, where, and how to stop it."""

    kind: str
    url: str
    stop: object


class ThreadedAsyncAPI:
    """The async API (Starlette + uvicorn) on its own event loop in a background thread."""

    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root
        self.token = token
        self.url = ""
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="async-api", daemon=True)

    def start(self) -> ThreadedAsyncAPI:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the async API did not start: {self._error!r}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        workspace = StoreWorkspace(
            self.root.name,
            AsyncTodoJsonStore(self.root),
            AsyncStatusJsonStore(self.root),
            AsyncCheckpointJsonStore(self.root),
            path=str(self.root),
        )
        app = create_api_app([workspace], metrics=MetricsCollector(), events=EventBus(), token=self.token)
        server = ApiServer(app, "127.0.0.1", 0)
        await server.start()
        self.url = server.url
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await server.aclose()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def start_server(kind: str, root: Path, token: str | None) -> Running:
    """Start the ``legacy`` or ``async`` API over the workspace at ``root``."""
    if kind == "legacy":
        legacy = LegacyAPIServer(
            TodoStore(root), StatusStore(root), CheckpointStore(root), port=0, token=token
        )
        legacy.start()
        return Running(kind, legacy.url, legacy.stop)
    threaded = ThreadedAsyncAPI(root, token).start()
    return Running(kind, threaded.url, threaded.stop)
