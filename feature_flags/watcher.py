"""Reload the flag file when it changes, from a thread (sync loop) or a task (async core).

The parent directory is watched, not the file: editors save by writing a new
file and renaming it over the old one, and deployments swap symlinks; both
replace the inode a file watch would be holding. Any event naming the flag
file (or one of its ``.flags.toml.*`` temp files; or, for a symlink, anything
in the directory) triggers a reload; the store keeps the last good flags when
the new text is invalid.

Two backends:

* a *directory notifier* handed in by the caller (on Linux the bridge passes
  the kernel's inotify binding, :class:`core_async.kernel.inotify.Inotify`,
  which this package may not import): the thread blocks in ``poll()`` on the
  notifier's descriptor and a stop pipe, with no timeout, so a watcher with
  nothing to do never wakes up;
* watchfiles, when no notifier is given or it cannot be set up (not Linux,
  ``fs.inotify.max_user_instances`` reached): its thread looks at the stop
  flag every ``STEP_MS`` (about 50 wake-ups a second).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

import watchfiles

from feature_flags.store import FlagStore

log = logging.getLogger("codeagent.flags")

# watchfiles batches events for 1.6 s by default; a flag flip must take effect within a second.
DEBOUNCE_MS = 50
STEP_MS = 20


class DirectoryEvent(Protocol):
    """One change in a watched directory: the entry's name (empty for the directory itself)."""

    @property
    def name(self) -> str:
        """The entry that changed; empty for an event about the directory or the queue."""
        ...


class DirectoryNotifier(Protocol):
    """A readable descriptor reporting changes to directory entries (inotify's shape)."""

    fd: int

    def add_directory(self, directory: Path) -> int:
        """Watch the entries of ``directory``; raises :class:`OSError` when it cannot."""
        ...

    def read_events(self) -> Sequence[DirectoryEvent]:
        """Every event queued now, without blocking."""
        ...

    def close(self) -> None:
        """Release the descriptor and its watches."""
        ...


NotifierFactory = Callable[[], DirectoryNotifier]


def _concerns(store: FlagStore, changes: Iterable[tuple[watchfiles.Change, str]]) -> bool:
    return _concerns_names(store, (Path(changed).name for _change, changed in changes))


def _concerns_names(store: FlagStore, names: Iterable[str]) -> bool:
    target = store.path.name
    is_link: bool | None = None
    for name in names:
        # An event without a name is about the directory or the queue (an overflow lost events):
        # reload rather than risk missing a change.
        if not name or name == target or name.startswith(f".{target}."):
            return True
        if is_link is None:
            is_link = store.path.is_symlink()
        if is_link:
            return True
    return False


def _open_notifier(factory: NotifierFactory | None, directory: Path) -> DirectoryNotifier | None:
    """A notifier watching ``directory``, or ``None`` (with one log line) to fall back to watchfiles."""
    if factory is None:
        return None
    notifier: DirectoryNotifier | None = None
    try:
        notifier = factory()
        notifier.add_directory(directory)
    except OSError as exc:  # e.g. inotify instance or watch limits reached
        log.warning("cannot watch %s with events (%s); polling it with watchfiles instead", directory, exc)
        if notifier is not None:
            notifier.close()
        return None
    return notifier


def _take(store: FlagStore, notifier: DirectoryNotifier) -> bool:
    """Drain ``notifier``; whether any of its events concerns the flag file."""
    names = [event.name for event in notifier.read_events()]
    if any(not name for name in names):
        # The watch was dropped (the directory removed or unmounted) or the queue overflowed:
        # watch it again (a no-op while the watch holds) so that later changes are still seen.
        try:
            notifier.add_directory(store.path.parent)
        except OSError as exc:
            log.error("lost the watch on %s: %s; flag changes are no longer seen", store.path, exc)
    return _concerns_names(store, names)


class FlagWatcher:
    """Watches one flag file in a background thread (for the sync loop, and the bridge of either loop).

    With a ``notifier`` factory (see the module docstring) the thread sleeps
    until the directory changes or :meth:`stop` is called; without one, or if
    it fails, it polls through watchfiles.
    """

    def __init__(self, store: FlagStore, *, notifier: NotifierFactory | None = None) -> None:
        self.store = store
        self._notifier_factory = notifier
        #: ``"events"`` or ``"watchfiles"`` once started.
        self.backend: str | None = None
        self._stop = threading.Event()
        self._stop_r, self._stop_w = -1, -1
        self._thread: threading.Thread | None = None

    def start(self) -> FlagWatcher:
        """Start watching (the OS watch is in place when this returns); returns self."""
        directory = self.store.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        notifier = _open_notifier(self._notifier_factory, directory)
        if notifier is not None:
            self.backend = "events"
            self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
            self._thread = threading.Thread(
                target=self._run_events, args=(notifier,), name="flag-watcher", daemon=True
            )
        else:
            self.backend = "watchfiles"
            self._thread = threading.Thread(target=self._run_watchfiles, name="flag-watcher", daemon=True)
        self._thread.start()
        return self

    def _run_events(self, notifier: DirectoryNotifier) -> None:
        poller = select.poll()
        poller.register(notifier.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        try:
            while True:
                if self._wait(poller, None) is None:
                    return
                if not _take(self.store, notifier):
                    continue
                # Gather the rest of an editor's save (temp file, write, rename) into one reload,
                # so a half-written file is not read and rejected on the way.
                deadline = time.monotonic() + DEBOUNCE_MS / 1000
                while (left := deadline - time.monotonic()) > 0:
                    readable = self._wait(poller, left)
                    if readable is None:
                        return
                    if readable:
                        _take(self.store, notifier)
                self._reload()
        except Exception:  # the thread must say why it ended, or flips would silently stop working
            log.exception("the flag watcher of %s stopped", self.store.path)
        finally:
            notifier.close()

    def _wait(self, poller: select.poll, seconds: float | None) -> bool | None:
        """Block until the notifier is readable (``True``) or ``seconds`` pass (``False``).

        ``None`` once :meth:`stop` was called.
        """
        timeout = None if seconds is None else max(1, round(seconds * 1000))
        ready = poller.poll(timeout)
        if any(fd == self._stop_r for fd, _mask in ready):
            return None
        return bool(ready)

    def _reload(self) -> None:
        try:
            self.store.reload()
        except Exception:  # a failing reload must not end the watch
            log.exception("reloading %s failed", self.store.path)

    def _run_watchfiles(self) -> None:
        for changes in watchfiles.watch(
            self.store.path.parent,
            stop_event=self._stop,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=200,
            yield_on_timeout=False,
        ):
            if _concerns(self.store, changes):
                self.store.reload()

    def stop(self) -> None:
        """Stop watching and wait for the thread to end."""
        self._stop.set()
        if self._stop_w >= 0:
            os.write(self._stop_w, b"\0")
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():  # stuck in a reload: leave it the descriptors it polls
                log.warning("the flag watcher of %s did not stop in time", self.store.path)
                return
            self._thread = None
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r, self._stop_w = -1, -1


async def watch_flags(
    store: FlagStore, stop: asyncio.Event | None = None, *, notifier: NotifierFactory | None = None
) -> None:
    """Reload ``store`` on every change of its file until ``stop`` is set (or the task is cancelled).

    With a ``notifier`` factory its descriptor is read by the event loop itself
    (no thread, no wake-up until something changes); otherwise watchfiles
    polls from its thread. The reload itself (one small file read and a parse)
    runs in a worker thread so the event loop never blocks on the file system.
    """
    store.path.parent.mkdir(parents=True, exist_ok=True)
    opened = _open_notifier(notifier, store.path.parent)
    if opened is not None:
        await _watch_events(store, opened, stop or asyncio.Event())
        return
    async for changes in watchfiles.awatch(
        store.path.parent, stop_event=stop, debounce=DEBOUNCE_MS, step=STEP_MS, rust_timeout=200
    ):
        if _concerns(store, changes):
            await asyncio.to_thread(store.reload)


async def _watch_events(store: FlagStore, notifier: DirectoryNotifier, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    changed = asyncio.Event()

    def on_readable() -> None:
        if _take(store, notifier):
            changed.set()

    loop.add_reader(notifier.fd, on_readable)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            waiting = asyncio.ensure_future(changed.wait())
            try:
                await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            if stop.is_set():
                return
            # As in the thread: let the rest of a save arrive before reading the file once.
            await asyncio.sleep(DEBOUNCE_MS / 1000)
            changed.clear()
            await asyncio.to_thread(store.reload)
    finally:
        stopped.cancel()
        loop.remove_reader(notifier.fd)
        # Closing an inotify descriptor waits for the kernel to retire its watches (~10-20 ms).
        await asyncio.shield(asyncio.to_thread(notifier.close))
