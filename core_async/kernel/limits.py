"""Resource limits of the kernel: resizable capacity limiters and the pool the components draw from.

* :class:`CapacityLimiter` is a semaphore whose capacity can change while it
  is in use (a hot-reloaded limit takes effect for the next acquirer), that
  serves waiters first come first served, and that never leaks a slot to a
  cancelled waiter.
* :class:`ResourcePool` holds the shared limits of one kernel: LLM slots,
  file-operation slots, and one git writer lock per repository.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """How much the kernel may do at once.

    ``max_concurrency`` todos run at once across every workspace, at most
    ``per_workspace`` of them in one workspace; ``llm_slots`` LLM requests are
    in flight at once; ``file_slots`` file operations hold handles at once.
    """

    # Chosen by measurement (docs/ab and README): 10 workspaces x 25 todos on 2 cores, 2 workers, took
    # 11.7 s at 2 s of LLM latency with 64/16/32 and 10.5 s with these; 7.1 vs 6.5 s at 200 ms.
    max_concurrency: int = 256
    per_workspace: int = 64
    llm_slots: int = 256
    file_slots: int = 64

    def __post_init__(self) -> None:
        for name in LIMIT_NAMES:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def with_values(self, *layers: Mapping[str, int]) -> ResourceLimits:
        """These limits with each layer's values put over them, in order (later layers win)."""
        values = {name: getattr(self, name) for name in LIMIT_NAMES}
        for layer in layers:
            values.update({k: v for k, v in layer.items() if k in values})
        return ResourceLimits(**values)

    def as_dict(self) -> dict[str, int]:
        """``{name: value}`` of every limit."""
        return {name: getattr(self, name) for name in LIMIT_NAMES}


#: The limits a user can set (``.agent/config.json`` ``limits``, or ``--max-concurrency`` ... options).
LIMIT_NAMES = ("max_concurrency", "per_workspace", "llm_slots", "file_slots")


class CapacityLimiter:
    """A first-come-first-served semaphore with a capacity that can be changed at any time."""

    def __init__(self, name: str, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"{name}: capacity must be at least 1, got {capacity}")
        self.name = name
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def capacity(self) -> int:
        """How many holders are allowed at once."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """How many holders there are now (may exceed the capacity right after a shrink)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """How many acquirers are queued."""
        return sum(1 for w in self._waiters if not w.done())

    def resize(self, capacity: int) -> None:
        """Change the capacity; a growth admits waiters at once, a shrink lets holders finish."""
        if capacity < 1:
            raise ValueError(f"{self.name}: capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_use += 1
                waiter.set_result(None)

    async def acquire(self) -> None:
        """Take one slot, waiting in line for it."""
        if self._in_use < self._capacity and not self._waiters:
            self._in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # granted just as we were cancelled
                self.release()
            else:
                try:
                    self._waiters.remove(waiter)
                except ValueError:  # pragma: no cover - already popped
                    pass
            raise

    def release(self) -> None:
        """Give one slot back."""
        if self._in_use <= 0:
            raise RuntimeError(f"{self.name}: release without acquire")
        self._in_use -= 1
        self._wake()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class ResourcePool:
    """The limited resources every workspace shares: LLM slots, file slots, git writers."""

    def __init__(self, limits: ResourceLimits) -> None:
        self.llm = CapacityLimiter("llm_slots", limits.llm_slots)
        self.files = CapacityLimiter("file_slots", limits.file_slots)
        self._git_writers: dict[str, asyncio.Lock] = {}

    def apply(self, limits: ResourceLimits) -> None:
        """Resize the limiters to new limits."""
        self.llm.resize(limits.llm_slots)
        self.files.resize(limits.file_slots)

    def git_writer(self, repository: str | os.PathLike[str]) -> asyncio.Lock:
        """The one writer lock of a repository; pass its resolved root (no file-system call here)."""
        key = os.fspath(repository)
        lock = self._git_writers.get(key)
        if lock is None:
            lock = self._git_writers[key] = asyncio.Lock()
        return lock

    def git_writers_busy(self) -> int:
        """How many repositories have a git write in progress."""
        return sum(1 for lock in self._git_writers.values() if lock.locked())
