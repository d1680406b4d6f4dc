"""One directory watcher for many workspaces: wake on changes to named files, never poll.

The kernel watches each workspace's ``.agent/`` directory (not the files in
it): editors and atomic writers replace a file by renaming a new one over it,
which a watch on the old inode would miss. One watcher serves every
workspace; each batch of changes (gathered for ``debounce_ms``) calls the
callbacks of the files it touched, once per batch.

Backends:

* ``inotify`` (Linux, the default there): the inotify descriptor is read by
  the event loop itself (``loop.add_reader``), so a waiting kernel uses no CPU
  until the OS reports a change.
* ``watchfiles`` (everywhere else, or ``CODEAGENT_WATCH_BACKEND=watchfiles``):
  a watch thread that looks at its stop flag every ``step_ms`` (about 1 ms of
  CPU per second at 50 ms) and hands changes over in batches.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

import watchfiles

from core_async.kernel import inotify

log = logging.getLogger("codeagent.kernel.watching")

#: Changes are gathered this long before the callbacks run (watchfiles' own default, 1.6 s, is too slow).
DEBOUNCE_MS = 50
#: How often the watchfiles thread checks its stop flag.
STEP_MS = 50
#: How long the watchfiles thread waits before handing back "nothing happened". Each hand-back is a
#: thread round trip; stopping never waits for it, the stop flag is seen every step.
RUST_TIMEOUT_MS = 600_000
BACKEND_ENV = "CODEAGENT_WATCH_BACKEND"

Callback = Callable[[], Awaitable[None]]


def concerns_file(name: str, changes: Iterable[tuple[object, str]]) -> bool:
    """Whether a batch of changes touches file ``name`` (by name, or one of its ``.name.*`` temp files)."""
    return any(names_file(Path(changed).name, name) for _change, changed in changes)


def names_file(base: str, name: str) -> bool:
    """Whether directory entry ``base`` is file ``name`` or one of its ``.name.*`` temp files."""
    return base == name or base.startswith(f".{name}.")


def default_backend() -> str:
    """``inotify`` on Linux, else ``watchfiles``; ``CODEAGENT_WATCH_BACKEND`` overrides."""
    wanted = os.environ.get(BACKEND_ENV, "").strip().lower()
    if wanted in ("inotify", "watchfiles"):
        return wanted
    return "inotify" if inotify.available() else "watchfiles"


class DirectoryWatcher:
    """Calls a callback when a named file in a watched directory changes (created, written, renamed over)."""

    def __init__(self, *, debounce_ms: int = DEBOUNCE_MS, step_ms: int = STEP_MS, backend: str | None = None):
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.backend = backend or default_backend()
        if self.backend not in ("inotify", "watchfiles"):
            raise ValueError(f"unknown watch backend {self.backend!r}")
        self._interests: dict[Path, dict[str, list[Callback]]] = {}
        self._stop = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._pending: set[tuple[Path, str]] = set()
        self._flush: asyncio.TimerHandle | None = None
        self._running = False

    def add(self, directory: Path, name: str, callback: Callback) -> None:
        """Call ``callback`` after changes to ``directory/name``; register before :meth:`run`."""
        if self._running:
            raise RuntimeError("add every directory before the watcher runs")
        self._interests.setdefault(Path(directory), {}).setdefault(name, []).append(callback)

    @property
    def directories(self) -> list[Path]:
        """The watched directories."""
        return list(self._interests)

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()
        self._wakeup.set()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Watch until :meth:`stop` (or cancellation); ``ready`` is set once the OS watches are in place.

        The directories must exist. A failing callback is logged and does not
        end the watch.
        """
        if not self._interests:
            if ready is not None:
                ready.set()
            await self._stop.wait()
            return
        self._running = True
        try:
            if self.backend == "inotify":
                await self._run_inotify(ready)
            else:
                await self._run_watchfiles(ready)
        finally:
            self._running = False

    # ----------------------------------------------------------------- inotify

    async def _run_inotify(self, ready: asyncio.Event | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            notifier = inotify.Inotify()
        except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
            log.warning("inotify unavailable (%s); watching with watchfiles instead", exc)
            self.backend = "watchfiles"
            await self._run_watchfiles(ready)
            return
        try:
            for directory in self._interests:
                notifier.add_directory(directory)
            loop.add_reader(notifier.fd, self._on_readable, notifier)
            if ready is not None:
                ready.set()
            while not self._stop.is_set():
                await self._wakeup.wait()
                self._wakeup.clear()
                batch, self._pending = self._pending, set()
                if batch:
                    await self._dispatch({(None, str(d / n)) for d, n in batch})
        finally:
            loop.remove_reader(notifier.fd)
            # Closing an inotify descriptor waits for the kernel to retire its watches (~10-20 ms).
            await asyncio.shield(asyncio.to_thread(notifier.close))
            if self._flush is not None:
                self._flush.cancel()
                self._flush = None

    def _on_readable(self, notifier: inotify.Inotify) -> None:
        for event in notifier.read_events():
            if event.mask & inotify.IN_Q_OVERFLOW:  # events were lost: treat every file as changed
                log.warning("inotify queue overflowed; reloading every watched file")
                self._pending.update((d, n) for d, names in self._interests.items() for n in names)
                continue
            directory = notifier.watches.get(event.wd)
            if directory is None or not event.name:
                if event.mask & inotify.IN_IGNORED and directory is not None:
                    log.warning("%s is no longer watched (removed?)", directory)
                continue
            # The agent's own writes (status, checkpoints) land in the same directories many
            # times per todo; drop what no one watches before any further work.
            if any(names_file(event.name, name) for name in self._interests.get(directory, ())):
                self._pending.add((directory, event.name))
        if self._pending and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.debounce_ms / 1000, self._release)

    def _release(self) -> None:
        self._flush = None
        self._wakeup.set()

    # ----------------------------------------------------------------- watchfiles

    async def _run_watchfiles(self, ready: asyncio.Event | None) -> None:
        changes_iter = watchfiles.awatch(
            *self._interests,
            stop_event=self._stop,
            debounce=self.debounce_ms,
            step=self.step_ms,
            recursive=False,
            rust_timeout=RUST_TIMEOUT_MS,
        )
        pending: asyncio.Future[set[tuple[watchfiles.Change, str]]] = asyncio.ensure_future(
            anext(changes_iter)
        )
        try:
            # One turn of the loop lets the generator open its OS watches before anyone is told "ready".
            await asyncio.sleep(0)
            if ready is not None:
                ready.set()
            while True:
                # asyncio.wait, not await: a cancellation must not cancel the watch thread's wait;
                # the finally below stops it through the stop flag instead.
                await asyncio.wait({pending})
                try:
                    changes = pending.result()
                except StopAsyncIteration:
                    return
                await self._dispatch(set(changes))
                pending = asyncio.ensure_future(anext(changes_iter))
        finally:
            self._stop.set()
            if not pending.done():
                pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
            await changes_iter.aclose()

    # ----------------------------------------------------------------- callbacks

    async def _dispatch(self, changes: set[tuple[object, str]]) -> None:
        called: set[int] = set()
        for directory, names in self._interests.items():
            prefix = str(directory)
            mine = [(c, p) for c, p in changes if str(Path(p).parent) == prefix]
            if not mine:
                continue
            for name, callbacks in names.items():
                if not concerns_file(name, mine):
                    continue
                for callback in callbacks:
                    if id(callback) in called:
                        continue
                    called.add(id(callback))
                    try:
                        await callback()
                    except Exception:
                        log.exception("watch callback for %s/%s failed", directory, name)
