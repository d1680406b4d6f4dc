"""One worker process of ``codeagent run|serve --loop async --workers N``.

The supervisor (``codeagent_app/workers.py``) starts it with a JSON spec: every
workspace of the command line, how many this worker may take, and the options
of the loop. The worker claims workspaces nobody holds (the workspace lock, an
flock released with the process, so a killed worker frees its workspaces at
once), drives them with the async kernel exactly as a single-process
``codeagent run --loop async`` would (routed through the bridge), and sends
every kernel event to the supervisor as one JSON line on a pipe, in the order
published (so the order of one workspace's events is kept).

Exit status: 0 after a clean stop (or, with ``until_idle``, once its
workspaces have nothing left); :data:`EXIT_NOTHING_TO_CLAIM` when every
workspace was held by someone else.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EXIT_NOTHING_TO_CLAIM = 75  # EX_TEMPFAIL: try again later


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells one worker."""

    index: int
    workspaces: list[str]
    capacity: int
    events_fd: int
    until_idle: bool = False
    llm_url: str | None = None
    fallback_llm_url: str | None = None
    flags: str | None = None
    use_uvloop: bool = True
    grace_seconds: float = 10.0
    limits: dict[str, int] = field(default_factory=dict)
    supervisor_pid: int | None = None

    def to_json(self) -> str:
        """The spec as the command line argument the worker is started with."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        """The spec the supervisor wrote."""
        return cls(**json.loads(text))


class EventPipe:
    """JSON lines to the supervisor on a non-blocking pipe, written from the event loop without waiting.

    A full pipe (a busy supervisor) parks the rest in memory and hands it over
    when the loop says the pipe is writable again, so the kernel never blocks.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._pending = bytearray()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message and write what the pipe takes now."""
        if self._closed:
            return
        self._pending += json.dumps(message, separators=(",", ":"), default=str).encode() + b"\n"
        self._flush()

    def _flush(self) -> None:
        while self._pending:
            try:
                written = os.write(self.fd, self._pending)
            except BlockingIOError:
                self._wait_writable()
                return
            except OSError as exc:  # the supervisor is gone: nobody to tell any more
                if exc.errno == errno.EPIPE:
                    self._pending.clear()
                    self._closed = True
                    return
                raise
            del self._pending[:written]
        if self._loop is not None:
            if not self._loop.is_closed():
                self._loop.remove_writer(self.fd)
            self._loop = None

    def _wait_writable(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            return  # the loop's writer callback will flush
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (start-up, the final result): wait for the pipe
            self._loop = None
            os.set_blocking(self.fd, True)
            try:
                os.write(self.fd, self._pending)
            finally:
                os.set_blocking(self.fd, False)
            self._pending.clear()
            return
        self._loop.add_writer(self.fd, self._flush)

    def close(self) -> None:
        """Write what is left (blocking) and close the pipe."""
        if not self._closed and self._pending:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_writer(self.fd)
            self._loop = None
            os.set_blocking(self.fd, True)
            try:
                os.write(self.fd, self._pending)
            except OSError:
                pass
        self._closed = True
        os.close(self.fd)


def claim(roots: list[Path], index: int, capacity: int, stack: ExitStack) -> list[Path]:
    """Hold up to ``capacity`` of ``roots`` that nobody holds, starting at this worker's share."""
    from legacy.workspace_lock import WorkspaceBusy, hold_workspace

    claimed: list[Path] = []
    start = (index * capacity) % len(roots)
    for offset in range(len(roots)):
        if len(claimed) == capacity:
            break
        root = roots[(start + offset) % len(roots)]
        try:
            stack.enter_context(hold_workspace(root, "async"))
        except WorkspaceBusy:
            continue
        claimed.append(root)
    return claimed


def die_with(supervisor_pid: int | None) -> None:
    """Be sent SIGTERM when the supervisor dies (even by SIGKILL): an orphan would hold its workspaces."""
    if supervisor_pid is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != supervisor_pid:  # it died before the line above took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _fixed_endpoint(url: str) -> Callable[[], Any]:
    @asynccontextmanager
    async def endpoint() -> AsyncIterator[str]:
        yield url

    return endpoint


def run(spec: WorkerSpec) -> int:
    """Claim, drive, report; return the exit status."""
    from bridge.wiring import recording_transport
    from codeagent_app.runner import routed_components
    from core_async.kernel.entry import ensure_logging, run_kernel
    from core_async.kernel.events import Event
    from core_async.kernel.loop_policy import run_on_best_loop
    from core_async.kernel.server_core import KernelOptions

    die_with(spec.supervisor_pid)
    pipe = EventPipe(spec.events_fd)
    with ExitStack() as stack:
        roots = [Path(p) for p in spec.workspaces]
        claimed = claim(roots, spec.index, spec.capacity, stack)
        pipe.send(
            {
                "type": "worker.claimed",
                "worker": spec.index,
                "pid": os.getpid(),
                "workspaces": [str(p) for p in claimed],
            }
        )
        if not claimed:
            pipe.close()
            return EXIT_NOTHING_TO_CLAIM

        def forward(event: Event) -> None:
            pipe.send(event.to_json())

        ensure_logging()
        options = KernelOptions(
            grace_seconds=spec.grace_seconds,
            limit_overrides=spec.limits,
            limits_from=roots[0],
            components=routed_components(Path(spec.flags) if spec.flags else None),
            fallback_llm=_fixed_endpoint(spec.fallback_llm_url) if spec.fallback_llm_url else None,
            wrap_llm_transport=recording_transport,
            on_event=forward,
        )
        processed = run_on_best_loop(
            run_kernel(claimed, llm_url=spec.llm_url, until_idle=spec.until_idle, options=options),
            use_uvloop=spec.use_uvloop,
        )
        pipe.send({"type": "worker.result", "worker": spec.index, "processed": processed})
        pipe.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m codeagent_app.worker SPEC_JSON`` (started by the supervisor only)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m codeagent_app.worker SPEC_JSON (the supervisor starts workers)", file=sys.stderr
        )
        return 2
    from codeagent.errors import AgentError

    try:
        return run(WorkerSpec.from_json(args[0]))
    except AgentError as exc:
        print(f"codeagent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from core_async.kernel.loop_policy import tune_gc

    tune_gc()
    sys.exit(main())
