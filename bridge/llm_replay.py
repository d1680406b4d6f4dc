"""Shadow runs of the LLM without a second request: record the served exchange, replay it.

The served client's transport records each chat-completion exchange (status,
headers, body) into a list the facade provides through a context variable;
the candidate client's transport answers from that list instead of the
network. Both clients then parse the same bytes, so a mismatch means their
handling differs (status codes, retries, parsing), never that the model
answered differently.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class Exchange:
    """One recorded response to a chat-completion request."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


recording: ContextVar[list[Exchange] | None] = ContextVar("llm_recording", default=None)
replaying: ContextVar[list[Exchange] | None] = ContextVar("llm_replaying", default=None)


def _is_chat(request: httpx.Request) -> bool:
    return request.url.path.endswith("/chat/completions")


def _record(response: httpx.Response, body: bytes) -> httpx.Response:
    sink = recording.get()
    exchange = Exchange(response.status_code, list(response.headers.multi_items()), body)
    if sink is not None:
        sink.append(exchange)
    return httpx.Response(exchange.status, headers=exchange.headers, content=body)


def _replay(request: httpx.Request) -> httpx.Response:
    if not _is_chat(request):
        return httpx.Response(404, request=request)  # e.g. the HTTP/2 probe: any answer will do
    source = replaying.get()
    if not source:
        raise httpx.ConnectError("shadow replay: no recorded exchange left", request=request)
    exchange = source.pop(0)
    headers = [
        (k, v) for k, v in exchange.headers if k.lower() not in ("content-length", "transfer-encoding")
    ]
    return httpx.Response(exchange.status, headers=headers, content=exchange.body, request=request)


class RecordingTransport(httpx.BaseTransport):
    """Wraps a real transport; copies chat exchanges into :data:`recording` when it is set."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if not _is_chat(request) or recording.get() is None:
            return response
        try:
            body = response.read()
        finally:
            response.close()
        return _record(response, body)

    def close(self) -> None:
        self.inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`RecordingTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Forward the request; record the exchange when a recording is active."""
        response = await self.inner.handle_async_request(request)
        if not _is_chat(request) or recording.get() is None:
            return response
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return _record(response, body)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.inner.aclose()


class ReplayTransport(httpx.BaseTransport):
    """Answers chat requests from :data:`replaying`; never touches the network."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return _replay(request)


class AsyncReplayTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`ReplayTransport`."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer from the recording (no I/O)."""
        return _replay(request)
