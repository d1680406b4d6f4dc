"""Linux inotify through ctypes: directory change events on a file descriptor the event loop reads.

With the descriptor registered by ``loop.add_reader``, a waiting kernel costs
no CPU at all: nothing runs until the kernel (the OS one) reports a change.
watchfiles, the portable fallback, has to look at its stop flag every step
from its own thread (about 1 ms of CPU per second at a 50 ms step).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
#: What counts as "a file in the directory changed": written, replaced by a rename, created, removed.
WATCH_MASK = IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_HEADER = struct.Struct("iIII")
_READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One inotify event: which watch, what happened, to which name (empty for the directory itself)."""

    wd: int
    mask: int
    name: str


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load
        return None
    if not all(hasattr(lib, name) for name in ("inotify_init1", "inotify_add_watch")):
        return None  # pragma: no cover - a libc without inotify
    return lib


_LIB = _libc()


def available() -> bool:
    """Whether inotify can be used here (Linux with a C library that has it)."""
    return _LIB is not None


class Inotify:
    """One inotify instance: a non-blocking, close-on-exec descriptor and its watches."""

    def __init__(self) -> None:
        if _LIB is None:
            raise OSError(errno.ENOSYS, "inotify is not available on this system")
        fd = _LIB.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self.watches: dict[int, Path] = {}

    def add_directory(self, directory: Path) -> int:
        """Watch the entries of ``directory`` (not its subdirectories); return the watch descriptor."""
        assert _LIB is not None
        wd = _LIB.inotify_add_watch(self.fd, os.fsencode(directory), WATCH_MASK | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self.watches[wd] = Path(directory)
        return int(wd)

    def read_events(self) -> list[RawEvent]:
        """Every event queued now (never blocks; an empty list when there is none)."""
        events: list[RawEvent] = []
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            if not data:  # pragma: no cover - inotify never reports end of file
                return events
            events.extend(parse_events(data))

    def close(self) -> None:
        """Close the descriptor (which removes every watch)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def parse_events(data: bytes) -> Iterator[RawEvent]:
    """Decode a buffer of ``struct inotify_event`` records."""
    offset = 0
    while offset + _HEADER.size <= len(data):
        wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
        offset += _HEADER.size
        raw = data[offset : offset + length]
        offset += length
        yield RawEvent(wd, mask, os.fsdecode(raw.split(b"\0", 1)[0]))
