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
=================  ==================  ==========================================

Thread hops are the one price async file I/O pays (aiofiles is a thread hop per
call too). Components therefore hop once per *operation* (a whole
read-modify-write of a state file, a batch of reads), never once per syscall.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from core_async import _httpcore_fixes
from core_async._process import PIDFD, spawn_and_collect

T = TypeVar("T")
P = ParamSpec("P")

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
    "ProcessResult",
    "agather",
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
