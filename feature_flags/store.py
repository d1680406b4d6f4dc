"""The flags in force: an immutable snapshot, swapped atomically on reload, last good kept on error.

Callers on the hot path read :attr:`FlagStore.flags` (one attribute read, no
I/O). :meth:`FlagStore.reload` is what the watcher calls on a change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from feature_flags.loader import FlagFileError, LoadResult, read_flags
from feature_flags.model import FlagSet, default_flags

log = logging.getLogger("codeagent.flags")

Listener = Callable[[FlagSet, FlagSet], None]


class FlagStore:
    """Holds the current :class:`FlagSet` of one flag file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._flags = default_flags()
        self.last_error: FlagFileError | None = None
        self.loaded_at: datetime | None = None
        self._listeners: list[Listener] = []
        self._reload_lock = threading.Lock()
        if path.exists():
            self.reload()

    @property
    def flags(self) -> FlagSet:
        """The flags in force (never ``None``; defaults when no file was ever read)."""
        return self._flags

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener(old, new)`` after every successful reload that changed something."""
        self._listeners.append(listener)

    def reload(self) -> LoadResult:
        """Read the file again; on any error keep the last good flags and remember why."""
        with self._reload_lock:
            try:
                new = read_flags(self.path)
            except FlagFileError as exc:
                self.last_error = exc
                log.warning("flag file rejected, keeping the last good flags: %s", exc)
                return LoadResult(self._flags, exc)
            old, self._flags = self._flags, new
            self.last_error = None
            self.loaded_at = datetime.now(UTC)
        if new != old:
            log.info("flags reloaded from %s", self.path)
            for listener in list(self._listeners):
                try:
                    listener(old, new)
                except Exception:  # a listener's bug must not undo a good reload
                    log.exception("flag listener failed")
        return LoadResult(new, None)
