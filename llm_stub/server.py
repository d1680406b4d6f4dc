"""Serving the stub LLM: hypercorn tuned for load, in a background thread or in the foreground.

Why hypercorn, and why these settings: it is the ASGI server that speaks
HTTP/1.1 and cleartext HTTP/2 (prior knowledge, ``PRI *`` preface) on one port.
Its defaults do not survive a benchmark, so :func:`hypercorn_config` changes:

* ``keep_alive_max_requests`` (default 1,000): after that many requests on one
  connection hypercorn sends GOAWAY (HTTP/2) or ``Connection: close``. Raised to
  effectively unlimited.
* ``h2_max_concurrent_streams`` (default 100): raised to 10,000 so that one
  HTTP/2 connection can carry 1,000+ requests at once.
* ``backlog`` (default 100): raised so 1,000 HTTP/1.1 connections opened at once
  are not dropped from the listen queue.
* ``keep_alive_timeout`` (default 5 s): raised above httpx's 5 s pool expiry so
  the server is not the side that closes a connection a client is reusing.
* hypercorn's HTTP/2 send scheduler (a ``priority`` tree) kills the connection
  at the 1,000th concurrent stream and costs O(N^2 log N);
  :mod:`llm_stub.hypercorn_fixes` replaces it, for this server only.
* logs go to the ``llm_stub.server`` logger instead of hypercorn's own
  stderr handler.

The loop is uvloop's when uvloop is installed, with asyncio debug mode off even
under ``PYTHONASYNCIODEBUG=1``: the stub is test infrastructure, not code under
test, and debug mode would make it the bottleneck of every benchmark.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Sockets
from hypercorn.utils import wrap_app

from llm_stub import hypercorn_fixes
from llm_stub.app import StubApp
from llm_stub.hypercorn_fixes import StubConfig
from llm_stub.options import StubOptions, changed_options, check_fault_kind
from llm_stub.state import StubState

log = logging.getLogger("llm_stub.server")

READY_LINE = "codeagent llm-stub listening on {url}"
LISTEN_BACKLOG = 4096
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 5.0

T = TypeVar("T")


def hypercorn_config() -> StubConfig:
    """The hypercorn configuration the stub runs with (see the module docstring)."""
    config = StubConfig()
    config.keep_alive_max_requests = 2**62
    config.h2_max_concurrent_streams = 10_000
    config.backlog = LISTEN_BACKLOG
    config.keep_alive_timeout = 75.0
    config.graceful_timeout = 5.0
    config.errorlog = log
    config.accesslog = None
    return config


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed, else ``None`` (plain asyncio)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock


def base_url(sock: socket.socket) -> str:
    """The OpenAI-style base URL (``http://HOST:PORT/v1``) of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/v1"


async def drain(state: StubState) -> None:
    """Wait until no API request is in flight (then a moment more, for the last frames to leave)."""
    await state.idle.wait()
    await asyncio.sleep(0.01)


async def run_stub(state: StubState, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve the stub on ``sock`` until ``stop`` is set, then shut down gracefully.

    On stop, requests that are hanging or waiting out their latency are told
    first (they answer 503 or finish now), new ones get 503, and once none is
    in flight (at most :data:`DRAIN_TIMEOUT_S`) hypercorn closes every
    connection. Draining first matters for HTTP/2: hypercorn sends GOAWAY as
    soon as a connection is idle, and httpx fails every stream still open on
    a connection that received GOAWAY.
    """

    async def shutdown_trigger() -> None:
        await stop.wait()
        state.stopping.set()
        try:
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await drain(state)
        except TimeoutError:
            log.warning("stopping with %d request(s) still in flight", state.stats.in_flight)

    hypercorn_fixes.install()
    config = hypercorn_config()
    app = wrap_app(cast(Any, StubApp(state)), config.wsgi_max_body_size, "asgi")
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    await worker_serve(app, config, sockets=sockets, shutdown_trigger=shutdown_trigger)


class StubServer:
    """The stub LLM server in a background thread with its own event loop.

    Use as a context manager (``with StubServer(opts) as stub: ... stub.url``) or
    call :meth:`start` and :meth:`stop`. :meth:`stats`, :meth:`queue_faults` and
    :meth:`set_options` may be called from any thread, started or not.
    """

    def __init__(self, options: StubOptions | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._state = StubState(options or StubOptions())
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def options(self) -> StubOptions:
        """The options in force (changed by :meth:`set_options` or ``POST /_stub/options``)."""
        return self._state.options

    def start(self) -> StubServer:
        """Bind, start serving in a background thread, and return once connections are accepted."""
        if self._thread is not None:
            return self
        sock = bind_socket(self.host, self.port)
        self.url = base_url(sock)
        self._state.new_run()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"codeagent-llm-stub {self.url}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"the stub LLM server did not start: {error!r}") from error
        return self

    def _run(self, sock: socket.socket) -> None:
        try:
            with asyncio.Runner(debug=False, loop_factory=loop_factory()) as runner:
                runner.run(self._main(sock))
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            log.exception("the stub LLM server failed")
        finally:
            sock.close()
            self._loop = None
            self._ready.set()

    async def _main(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        serving = asyncio.ensure_future(run_stub(self._state, sock, self._stop))
        await asyncio.sleep(0)
        self._ready.set()
        await serving

    def stop(self) -> None:
        """Stop serving: hanging requests end, connections drain and close, the thread exits.

        Raises RuntimeError if the server thread had failed (so tests notice).
        """
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:  # the loop has already closed
                pass
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            raise RuntimeError(f"the stub LLM server at {self.url} did not stop within {STOP_TIMEOUT_S}s")
        self._thread = None
        self._stop = None
        error, self._error = self._error, None
        if error is not None:
            raise RuntimeError(f"the stub LLM server at {self.url} failed: {error!r}") from error

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, func: Callable[[], T]) -> T:
        """Run ``func`` on the server's loop (or right here when it is not running)."""
        loop = self._loop
        if loop is None or not loop.is_running() or threading.current_thread() is self._thread:
            return func()

        async def call() -> T:
            return func()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)

    def stats(self, recent: int = 50) -> dict[str, Any]:
        """Counters since start or the last reset (``GET /_stub/stats`` returns the same)."""
        state = self._state
        return self._call(lambda: state.stats.view(recent) | {"queued_faults": state.faults.queued})

    def queue_faults(self, kinds: list[str]) -> None:
        """Script the faults of the next requests, in order (``"ok"`` lets one through)."""
        for kind in kinds:
            check_fault_kind(kind, allow_ok=True)
        self._call(lambda: self._state.faults.queue(list(kinds)))

    def set_options(self, **changes: Any) -> None:
        """Change knobs at run time, e.g. ``set_options(latency_ms=50, fail_rate=0.1)``."""
        changed_options(self.options, changes)  # validate here, so errors raise in the caller
        self._call(lambda: self._state.configure(changes))

    def reset(self) -> None:
        """Zero the counters and drop scripted faults (``POST /_stub/reset``)."""
        self._call(self._state.reset)


def _print_ready(line: str) -> None:
    print(line, flush=True)


def serve_forever(
    options: StubOptions, host: str, port: int, *, ready: Callable[[str], None] | None = None
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (the ``codeagent llm-stub`` command).

    Prints ``codeagent llm-stub listening on http://HOST:PORT/v1`` on stdout
    once connections are accepted (``ready``, if given, receives that line
    instead). Call it from the main thread (it installs signal handlers).
    Raises OSError when the port cannot be bound, RulesError (a ValueError)
    for a bad rules file.
    """
    state = StubState(options)
    sock = bind_socket(host, port)
    url = base_url(sock)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        serving = asyncio.ensure_future(run_stub(state, sock, stop))
        await asyncio.sleep(0)
        (ready or _print_ready)(READY_LINE.format(url=url))
        await serving

    try:
        with asyncio.Runner(debug=False, loop_factory=loop_factory()) as runner:
            runner.run(main())
    finally:
        sock.close()
