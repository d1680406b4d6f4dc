"""A loopback HTTP/1.1 server that answers every chat request with canned bytes, and counts them.

For answers the stub LLM does not give: a 200 that is JSON but no completion,
a body cut short by the connection closing before its ``Content-Length``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        canned = self.server.owner
        with canned.lock:
            canned.requests += 1
            status, body, declared = canned.replies[0] if len(canned.replies) == 1 else canned.replies.pop(0)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)
        if declared is not None and declared != len(body):
            self.wfile.flush()
            self.close_connection = True

    def do_GET(self) -> None:
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    owner: CannedServer


class CannedServer:
    """Answers chat requests with ``(status, body, declared length)`` replies, in order (the last repeats).

    ``declared`` other than ``None`` is the ``Content-Length`` sent, so a body
    shorter than it is cut short: the connection closes after the bytes given.
    """

    def __init__(
        self, status: int = 200, body: bytes = b"{}", *replies: tuple[int, bytes, int | None]
    ) -> None:
        self.replies: list[tuple[int, bytes, int | None]] = list(replies) or [(status, body, None)]
        self.requests = 0
        self.lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.owner = self
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CannedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
