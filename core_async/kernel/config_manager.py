"""ConfigurationManager: async load and hot reload of ``.agent/config.json``.

The file is the legacy one, read unchanged and validated by the domain's
:func:`codeagent.config.parse_config`, through whichever loader the kernel was
given (the plain ``core_async`` one, or the bridge's routed facade, so that the
flags route the configuration too). :meth:`ConfigurationManager.watch_config`
watches the file's *parent directory* with watchfiles, so an editor that saves
by writing a temp file and renaming it over the old one (a new inode) is seen
as well as a plain write. A bad edit keeps the last good configuration; the
log line names the file, the key and the line at fault, and listeners are told
nothing changed. A good edit replaces the configuration and every listener is
called with ``(old, new)``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from codeagent.config import CONFIG_RELPATH, AgentConfig
from codeagent.errors import ConfigError
from codeagent.protocols import AsyncConfigSource
from core_async._compat import ato_thread
from core_async.kernel.components import ConfigFile
from core_async.kernel.events import EventBus
from core_async.kernel.metrics import MetricsCollector
from core_async.kernel.watching import DirectoryWatcher

log = logging.getLogger("codeagent.kernel.config")

Listener = Callable[[AgentConfig, AgentConfig], Awaitable[None] | None]


class ConfigurationManager:
    """Holds the current (last good) configuration of one workspace and reloads it on change."""

    def __init__(
        self,
        workspace: Path,
        *,
        label: str | None = None,
        events: EventBus | None = None,
        metrics: MetricsCollector | None = None,
        source: AsyncConfigSource | None = None,
    ) -> None:
        self.workspace = Path(workspace)
        self.path = self.workspace / CONFIG_RELPATH
        self.source = source or ConfigFile(self.workspace)
        self.label = label or self.workspace.name
        self.events = events
        self.metrics = metrics
        self._config: AgentConfig | None = None
        self.last_error: ConfigError | None = None
        self._listeners: list[Listener] = []

    @property
    def config(self) -> AgentConfig:
        """The current configuration (defaults before the first load)."""
        return self._config if self._config is not None else AgentConfig()

    @property
    def loaded(self) -> bool:
        """Whether a configuration was loaded successfully."""
        return self._config is not None

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` (sync or async) after every change that took effect."""
        self._listeners.append(listener)

    async def load_config(self) -> AgentConfig:
        """Read and validate the file now (defaults when it is missing) and make it current.

        Raises :class:`ConfigError` naming the file, the key and the line; the
        current configuration is then left as it was.
        """
        config = await self.source.load()
        self._config = config
        self.last_error = None
        return config

    async def reload(self) -> bool:
        """Re-read the file; return whether the configuration changed.

        An invalid file keeps the last good configuration, logs the fault
        (key and line) and records it in :attr:`last_error`.
        """
        try:
            config = await self.source.load()
        except ConfigError as exc:
            if self.last_error is None or str(exc) != str(self.last_error):
                log.error("config of %s rejected, keeping the last good one: %s", self.label, exc)
                self._count("rejected")
                if self.events is not None:
                    self.events.publish(
                        "config.rejected",
                        workspace=self.label,
                        error=str(exc),
                        field=exc.field,
                        line=exc.line,
                    )
            self.last_error = exc
            return False
        recovered = self.last_error is not None
        self.last_error = None
        old = self.config
        self._config = config
        if config == old:
            if recovered:
                log.info("config of %s is valid again (unchanged from the last good one)", self.label)
            return False
        changed = sorted(_changed_keys(old, config))
        log.info("config of %s reloaded; changed: %s", self.label, ", ".join(changed) or "(formatting)")
        self._count("applied")
        if self.events is not None:
            self.events.publish("config.reloaded", workspace=self.label, changed=changed)
        for listener in list(self._listeners):
            try:
                result = listener(old, config)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("config listener %r failed", listener)
        return True

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.config_reloads.labels(outcome).inc()

    async def watch_config(
        self, stop: asyncio.Event | None = None, *, ready: asyncio.Event | None = None
    ) -> None:
        """Reload on every change of the file until ``stop`` is set or the task is cancelled.

        The parent directory (``.agent/``) is watched, not the file, so saves by
        rename and files created later are seen. ``ready`` is set once the
        watch is in place.
        """
        directory = self.path.parent
        await ato_thread(directory.mkdir, parents=True, exist_ok=True)
        watcher = DirectoryWatcher()
        watcher.add(directory, self.path.name, self._reload_quietly)
        if stop is None:
            await watcher.run(ready)
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(watcher.run(ready))
            try:
                await stop.wait()
            finally:
                watcher.stop()

    async def _reload_quietly(self) -> None:
        await self.reload()


def _changed_keys(old: AgentConfig, new: AgentConfig) -> set[str]:
    """Dotted keys whose values differ between two configurations."""
    out: set[str] = set()

    def walk(prefix: str, a: object, b: object) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in set(a) | set(b):
                walk(f"{prefix}.{key}" if prefix else str(key), a.get(key), b.get(key))
        elif a != b:
            out.add(prefix)

    walk("", old.model_dump(mode="json"), new.model_dump(mode="json"))
    return out
