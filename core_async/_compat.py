"""The async half of the compat pair: every primitive the component modules may await.

Component modules in ``core_async`` never import :mod:`asyncio` (or anything
else that unasync cannot rename) directly. They import from here, and the
generator (:mod:`codeagent.codegen`) renames each name to its sync counterpart
in the hand-written ``core_sync/_compat.py``:

=================  ==================  ==========================================
async (here)       sync (core_sync)    what it is
=================  ==================  ==========================================
``agather``        ``gather``          run awaitables concurrently, results in order
``asleep``         ``sleep``           sleep without blocking the loop
``ALock``          ``Lock``            mutual exclusion (asyncio / threading)
``ASemaphore``     ``Semaphore``       bounded slots (asyncio / threading)
``AEvent``         ``Event``           a flag to wait on (asyncio / threading)
``ato_thread``     ``to_thread``       ONE hop of blocking work to a worker thread
``ato_thread_settled`` ``to_thread_settled`` the same, but a cancelled caller waits for it to finish
``arun_process``   ``run_process``     a subprocess with list arguments
``atimeout``       ``timeout``         a hard deadline around a block
``ashared_lock``   ``shared_lock``     a lock shared by key (one git writer per repo)
``await_event``    ``wait_event``      wait for an event with a timeout
``AsyncHedge``     ``SyncHedge``       race an attempt against one delayed copy (sync: no copy)
``aiohttp_sender``  (same name)      HTTP/1.1 on aiohttp (sync: ``None``, no such client)
=================  ==================  ==========================================

Thread hops are the one price async file I/O pays (aiofiles is a thread hop per
call too). Components therefore hop once per *operation* (a whole
read-modify-write of a state file, a batch of reads), never once per syscall.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from core_async import _httpcore_fixes
from core_async._process import PIDFD, spawn_and_collect

if TYPE_CHECKING:
    from core_async._aiohttp import AiohttpSender

T = TypeVar("T")
P = ParamSpec("P")
log = logging.getLogger(__name__)

ALock = asyncio.Lock
ASemaphore = asyncio.Semaphore
AEvent = asyncio.Event

#: What the loop built on these primitives calls itself in the status file.
LOOP_KIND = "async"

__all__ = [
    "H2_SHARED_READ",
    "LOOP_KIND",
    "AEvent",
    "ALock",
    "ASemaphore",
    "AsyncHedge",
    "ProcessResult",
    "agather",
    "aiohttp_sender",
    "arun_process",
    "ashared_lock",
    "asleep",
    "atimeout",
    "ato_thread",
    "ato_thread_settled",
    "await_event",
    "install_transport_fixes",
]

#: The request extension that opts an HTTP/2 request into the shared read (see ``_httpcore_fixes``).
H2_SHARED_READ = _httpcore_fixes.SHARED_READ


def install_transport_fixes() -> bool:
    """Put the HTTP/2 shared-read fix of async httpcore in place (once); ``True`` when it is."""
    return _httpcore_fixes.install()


@dataclass(frozen=True, slots=True)
class ProcessResult:
    """What a finished subprocess left behind."""

    returncode: int
    stdout: bytes
    stderr: bytes


async def agather(*aws: Awaitable[T]) -> list[T]:
    """Await every awaitable concurrently and return their results in argument order.

    The first exception propagates (the others keep running to completion, as
    with :func:`asyncio.gather`); callers that must not lose one result to
    another's failure catch inside each awaitable.
    """
    return list(await asyncio.gather(*aws))


async def asleep(seconds: float) -> None:
    """Suspend the current task for ``seconds`` (zero yields to the loop once)."""
    await asyncio.sleep(max(0.0, seconds))


async def ato_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking ``func`` in the default executor and await its result (one thread hop).

    If the awaiting task is cancelled the call still runs to completion in its
    thread; the functions handed here are written so that finishing is safe
    (atomic writes, locks released in ``finally``).
    """
    return await asyncio.to_thread(func, *args, **kwargs)


async def ato_thread_settled(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """:func:`ato_thread`, except that cancellation waits until ``func`` has finished in its thread.

    For work other tasks depend on (a batch written for several callers): when
    the caller sees :class:`asyncio.CancelledError`, the work is done, so
    whoever waits on its outcome is never told "written" before it is.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func, *args, **kwargs))
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                raise
            cancelled = True  # keep waiting: the thread cannot be stopped
            continue
        if cancelled:
            raise asyncio.CancelledError
        return result


async def await_event(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass (``None``: forever); return whether it is set."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


def atimeout(seconds: float | None) -> AbstractAsyncContextManager[object]:
    """A hard deadline: the block is cancelled and :class:`TimeoutError` raised after ``seconds``.

    ``None`` means no deadline. The sync twin cannot interrupt a blocking call,
    so sync code also passes the remaining time to the I/O it performs.
    """
    return asyncio.timeout(seconds)


async def arun_process(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    input_bytes: bytes | None = None,
    time_limit: float | None = None,
) -> ProcessResult:
    """Run ``args`` (a list, never a shell string) and collect its exit code and output.

    After ``time_limit`` seconds (or on cancellation) the process is killed and reaped before the
    exception propagates, so no zombie is left behind. On Linux the child is started by
    :mod:`subprocess` and awaited on a pidfd (see :mod:`core_async._process` for why).
    """
    if PIDFD:
        returncode, stdout, stderr = await spawn_and_collect(
            args, cwd=os.fspath(cwd), env=env, input_bytes=input_bytes, time_limit=time_limit
        )
        return ProcessResult(returncode, stdout, stderr)
    return await _loop_run_process(args, cwd=cwd, env=env, input_bytes=input_bytes, time_limit=time_limit)


async def _loop_run_process(
    args: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None,
    input_bytes: bytes | None,
    time_limit: float | None,
) -> ProcessResult:
    """:func:`arun_process` on the loop's own subprocess support (where there are no pidfds)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=os.fspath(cwd),
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if input_bytes is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(time_limit):
            stdout, stderr = await proc.communicate(input_bytes)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return ProcessResult(proc.returncode, stdout, stderr)


_SHARED_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def ashared_lock(key: str) -> asyncio.Lock:
    """The one lock of ``key`` (e.g. a repository's real path) on the running loop.

    Every component instance asking for the same key gets the same lock, so two
    objects pointing at one repository still serialise their writes. Locks are
    kept per event loop because an asyncio lock belongs to one loop.
    """
    loop = asyncio.get_running_loop()
    locks = _SHARED_LOCKS.setdefault(loop, {})
    lock = locks.get(key)
    if lock is None:
        lock = locks[key] = asyncio.Lock()
    return lock


class AsyncHedge(Generic[T]):
    """One attempt raced, if it is slow to start, by one copy of itself (a hedged request).

    :meth:`run` starts ``attempt(False)``; ``delay`` seconds later, unless the
    attempt called :meth:`first_byte` meanwhile (or ``may_send()`` says no),
    it starts ``attempt(True)`` as a task. The first outcome that ``settles``
    (a success, or a failure no retry can fix) is returned and the other
    attempt is cancelled; when one ends unsettled (a failure worth a retry),
    the other's outcome is awaited. ``delay=None``: no hedge, no task, no timer.
    The sync twin runs the attempt alone (a thread has nothing to race with).
    """

    __slots__ = (
        "_hedge",
        "_hedge_settled",
        "_loop",
        "_scope",
        "_settles",
        "_timer",
        "primary_started",
        "sent",
        "won",
    )

    def __init__(self) -> None:
        self.sent = False
        self.won = False
        self.primary_started = False
        self._hedge: asyncio.Task[T] | None = None
        self._hedge_settled = False
        self._timer: asyncio.TimerHandle | None = None
        self._scope: asyncio.Timeout | None = None

    def first_byte(self) -> None:
        """The first attempt's answer has started: no hedge for it."""
        self.primary_started = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def run(
        self,
        attempt: Callable[[bool], Coroutine[Any, Any, T]],
        delay: float | None,
        may_send: Callable[[], bool],
        settles: Callable[[T], bool],
    ) -> T:
        """The outcome of the race (see the class)."""
        if delay is None:
            return await attempt(False)
        loop = self._loop = asyncio.get_running_loop()
        self._settles = settles

        def fire() -> None:
            self._timer = None
            if self.primary_started or not may_send():
                return
            self.sent = True
            hedge = self._hedge = loop.create_task(attempt(True))
            hedge.add_done_callback(self._hedge_done)

        self._timer = loop.call_later(max(0.0, delay), fire)
        try:
            try:
                async with asyncio.timeout(None) as scope:
                    self._scope = scope
                    result = await attempt(False)
            except TimeoutError:
                if not (scope.expired() and self._hedge_settled and self._hedge is not None):
                    raise
                self.won = True
                return self._hedge.result()
            finally:
                self._scope = None
                if self._timer is not None:
                    self._timer.cancel()
                    self._timer = None
            hedge = self._hedge
            if hedge is None or settles(result):
                return result
            try:
                other = await hedge
            except Exception:  # the copy failed in a way the attempt does not report: keep the first outcome
                log.exception("hedged attempt failed unexpectedly")
                return result
            self.won = settles(other)
            return other if self.won else result
        finally:
            hedge = self._hedge
            if hedge is not None and not hedge.done():
                hedge.cancel()

    def _hedge_done(self, task: asyncio.Task[T]) -> None:
        if task.cancelled() or task.exception() is not None or not self._settles(task.result()):
            return
        self._hedge_settled = True
        scope = self._scope
        if scope is not None and not scope.expired():
            scope.reschedule(self._loop.time())  # cuts the first attempt short: the copy won


def aiohttp_sender(
    *,
    connections: int,
    keepalive_expiry: float,
    on_connect: Callable[[], None] | None = None,
) -> AiohttpSender | None:
    """HTTP/1.1 on aiohttp (:class:`~core_async._aiohttp.AiohttpSender`): the LLM client's requests go
    straight to aiohttp, and its :meth:`~core_async._aiohttp.AiohttpSender.transport` gives httpx's
    interface on the same session; ``None`` when aiohttp is not installed.

    Up to ``connections`` connections, idle ones kept ``keepalive_expiry``
    seconds, ``on_connect`` called for each new one. Blocking (a TLS context
    is loaded): call it in a thread hop.
    """
    try:
        from core_async._aiohttp import AiohttpSender
    except ImportError:  # pragma: no cover - the optional dependency is missing
        return None
    return AiohttpSender(connections=connections, keepalive_expiry=keepalive_expiry, on_connect=on_connect)
