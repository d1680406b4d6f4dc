"""Reload the flag file when it changes, from a thread (sync loop) or a task (async core).

The parent directory is watched, not the file: editors save by writing a new
file and renaming it over the old one, and deployments swap symlinks; both
replace the inode a file watch would be holding. Any event naming the flag
file (or, for a symlink, anything in the directory) triggers a reload; the
store keeps the last good flags when the new text is invalid.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from pathlib import Path

import watchfiles

from feature_flags.store import FlagStore

# watchfiles batches events for 1.6 s by default; a flag flip must take effect within a second.
DEBOUNCE_MS = 50
STEP_MS = 20


def _concerns(store: FlagStore, changes: Iterable[tuple[watchfiles.Change, str]]) -> bool:
    target = store.path.name
    is_link = store.path.is_symlink()
    for _change, changed in changes:
        name = Path(changed).name
        if name == target or is_link or name.startswith(f".{target}."):
            return True
    return False


class FlagWatcher:
    """Watches one flag file in a background thread (for the sync loop)."""

    def __init__(self, store: FlagStore) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> FlagWatcher:
        """Start watching; returns self."""
        self.store.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="flag-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
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
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


async def watch_flags(store: FlagStore, stop: asyncio.Event | None = None) -> None:
    """Reload ``store`` on every change of its file until ``stop`` is set (or the task is cancelled).

    The reload itself (one small file read and a parse) runs in a worker thread
    so the event loop never blocks on the file system.
    """
    store.path.parent.mkdir(parents=True, exist_ok=True)
    async for changes in watchfiles.awatch(
        store.path.parent, stop_event=stop, debounce=DEBOUNCE_MS, step=STEP_MS, rust_timeout=200
    ):
        if _concerns(store, changes):
            await asyncio.to_thread(store.reload)
