"""The sync half of the compat pair, written by hand (not generated).

Each name here is the name in ``core_async/_compat.py`` without its leading
``a``/``A``, with the same signature minus ``async``, so that code unasync
renames from ``core_async`` runs unchanged. See that module for the table.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, ParamSpec, TypeVar

if TYPE_CHECKING:
    from core_sync.llm_wire import SyncSender

T = TypeVar("T")
P = ParamSpec("P")

Lock = threading.Lock
Semaphore = threading.Semaphore
Event = threading.Event

#: What the loop built on these primitives calls itself in the status file.
LOOP_KIND = "sync"

__all__ = [
    "H2_SHARED_READ",
    "LOOP_KIND",
    "Event",
    "Lock",
    "ProcessResult",
    "Semaphore",
    "SyncHedge",
    "aiohttp_sender",
    "gather",
    "install_transport_fixes",
    "run_process",
    "shared_lock",
    "sleep",
    "timeout",
    "to_thread",
    "to_thread_settled",
    "wait_event",
]


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What a finished subprocess left behind."""

    returncode: int
    stdout: bytes
    stderr: bytes


def gather(*results: T) -> list[T]:
    """The sync twin of ``agather``: the arguments were already computed, in order."""
    return list(results)


def sleep(seconds: float) -> None:
    """Block the calling thread for ``seconds``."""
    time.sleep(max(0.0, seconds))


def to_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """The sync twin of ``ato_thread``: just call ``func`` (we are already off any loop)."""
    return func(*args, **kwargs)


def to_thread_settled(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """The sync twin of ``ato_thread_settled``: just call ``func``."""
    return func(*args, **kwargs)


def wait_event(event: threading.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass (``None``: forever); return whether it is set."""
    return event.wait(seconds)


@contextlib.contextmanager
def _no_deadline() -> Iterator[object]:
    yield None


def timeout(seconds: float | None) -> AbstractContextManager[object]:
    """The sync twin of ``atimeout``: nothing can interrupt a blocking call from here.

    Sync code bounds its waits by passing the remaining time to the I/O itself
    (httpx timeouts, subprocess timeouts), which is what the components do.
    """
    del seconds
    return _no_deadline()


def run_process(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    time_limit: float | None = None,
) -> ProcessResult:
    """Run ``args`` (a list, never a shell string) and collect its exit code and output.

    After ``time_limit`` seconds a watchdog kills the process and
    :class:`TimeoutError` is raised, as the async twin does. (A watchdog rather
    than ``communicate(timeout=...)``: with a timeout, ``subprocess`` polls for
    the exit with sleeps, which adds ~0.7 ms to every short git command.)
    """
    proc = subprocess.Popen(
        list(args),
        cwd=os.fspath(cwd),
        env=dict(env) if env is not None else None,
        stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    watchdog = threading.Timer(time_limit, expire) if time_limit is not None else None
    with proc:
        if watchdog is not None:
            watchdog.daemon = True
            watchdog.start()
        try:
            stdout, stderr = proc.communicate(input_bytes)
        finally:
            if watchdog is not None:
                watchdog.cancel()
    if expired.is_set():
        raise TimeoutError(f"{args[0]} did not finish within {time_limit} s")
    return ProcessResult(proc.returncode, stdout, stderr)


_SHARED_LOCKS: dict[str, threading.Lock] = {}
_SHARED_LOCKS_GUARD = threading.Lock()


def shared_lock(key: str) -> threading.Lock:
    """The one lock of ``key`` in this process (e.g. one git writer per repository)."""
    with _SHARED_LOCKS_GUARD:
        lock = _SHARED_LOCKS.get(key)
        if lock is None:
            lock = _SHARED_LOCKS[key] = threading.Lock()
        return lock


#: The request extension the async client uses to share HTTP/2 reads; httpcore's sync
#: connection ignores extensions it does not know, so the generated client may pass it.
H2_SHARED_READ = "codeagent.h2_shared_read"


def install_transport_fixes() -> bool:
    """Nothing to fix on the sync side: each thread reads its own stream's answer; ``False``."""
    return False


class SyncHedge(Generic[T]):
    """The sync twin of ``AsyncHedge``: the attempt runs alone (a thread has nothing to race with)."""

    __slots__ = ("primary_started", "sent", "won")

    def __init__(self) -> None:
        self.sent = False
        self.won = False
        self.primary_started = False

    def first_byte(self) -> None:
        """The attempt's answer has started."""
        self.primary_started = True

    def run(
        self,
        attempt: Callable[[bool], T],
        delay: float | None,
        may_send: Callable[[], bool],
        settles: Callable[[T], bool],
    ) -> T:
        """The attempt's outcome: no hedge is ever sent."""
        del delay, may_send, settles
        return attempt(False)


def aiohttp_sender(
    *,
    connections: int,
    keepalive_expiry: float,
    on_connect: Callable[[], None] | None = None,
) -> SyncSender | None:
    """aiohttp has no sync client: ``None``, and the endpoint pool falls back to HTTP/1.1 on httpcore."""
    del connections, keepalive_expiry, on_connect
    return None
