"""Serve an ASGI app with uvicorn on the kernel's own event loop, started and stopped by the kernel.

uvicorn's ``Server.serve()`` installs its own signal handlers and wakes every
100 ms to look for an exit flag. The kernel owns signals and must not poll, so
it drives the server's lifecycle directly: :meth:`ApiServer.start` binds and
listens (``Server.startup``), :meth:`ApiServer.aclose` stops listening, asks
open connections (WebSockets included) to close, and waits for them within a
bound (``Server.shutdown``). No ``Date`` header is sent, since refreshing it
is what uvicorn's 100 ms tick is for.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct

import uvicorn
from starlette.types import ASGIApp

log = logging.getLogger("codeagent.kernel.http")


class ApiServer:
    """uvicorn serving one ASGI app on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: int = 3
    ) -> None:
        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
            date_header=False,
            server_header=False,
            ws="websockets-sansio",
            timeout_graceful_shutdown=shutdown_timeout,
        )
        self.server = uvicorn.Server(self.config)
        self._started = False
        self._listening: list[socket.socket] = []

    @property
    def started(self) -> bool:
        """Whether the server is listening."""
        return self._started

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    port: int = sock.getsockname()[1]
                    return port
        raise RuntimeError("the API server is not listening")

    @property
    def url(self) -> str:
        """``http://host:port`` of the listening socket."""
        host = self.config.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    async def start(self) -> None:
        """Bind and start accepting connections; raises ``OSError`` when the port is taken."""
        if not self.config.loaded:
            self.config.load()
        self.server.lifespan = self.config.lifespan_class(self.config)
        try:
            await self.server.startup()
        except SystemExit as exc:  # uvicorn exits the process when it cannot bind; we report instead
            raise OSError(
                f"the API server could not listen on {self.config.host}:{self.config.port}"
            ) from exc
        if not self.server.started:  # pragma: no cover - startup returned without listening
            raise OSError(f"the API server could not listen on {self.config.host}:{self.config.port}")
        await self.server.on_tick(0)  # fills uvicorn's default headers once
        self._started = True
        self._watch_backlog()
        log.info("API listening on %s", self.url)

    def _watch_backlog(self) -> None:
        """Let the app's load shedding see the listen backlog (``app.state.listen_backlog``).

        A burst beyond what the loop serves waits there, not in the app: the
        loop accepts connections only as fast as it answers them.
        """
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                with contextlib.suppress(OSError, ValueError):
                    self._listening.append(socket.fromfd(sock.fileno(), sock.family, sock.type))
        state = getattr(self.config.app, "state", None)
        if state is not None and self._listening:
            state.listen_backlog = self.waiting

    def waiting(self) -> int:
        """Connections waiting to be accepted now (Linux' ``TCP_INFO``; 0 where it cannot tell)."""
        total = 0
        for sock in self._listening:
            try:
                info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
                total += int(struct.unpack_from("I", info, 24)[0])  # tcpi_unacked: the accept queue's length
            except (OSError, AttributeError, struct.error):
                return 0
        return total

    async def aclose(self) -> None:
        """Stop listening, close connections (WebSockets get a close frame), wait for them (bounded)."""
        if not self._started:
            return
        self._started = False
        self.server.should_exit = True
        await self.server.shutdown()
        for sock in self._listening:
            sock.close()
        self._listening.clear()
