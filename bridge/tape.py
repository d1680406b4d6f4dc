"""Shadow runs of the LLM without a second request: the served exchange is recorded, then replayed.

The served client's transport copies each chat-completion exchange (status,
headers, body) into the list the facade puts in :data:`recording`; the
candidate client's transport answers from :data:`replaying` instead of the
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


def is_chat(request: httpx.Request) -> bool:
    """Whether a request is a chat completion (the only exchanges recorded and replayed)."""
    return request.url.path.endswith("/chat/completions")


def record(response: httpx.Response, body: bytes) -> httpx.Response:
    """Keep one exchange on the current tape; return a response that can still be read."""
    sink = recording.get()
    exchange = Exchange(response.status_code, list(response.headers.multi_items()), body)
    if sink is not None:
        sink.append(exchange)
    return httpx.Response(exchange.status, headers=exchange.headers, content=body)


def replay(request: httpx.Request) -> httpx.Response:
    """The next recorded answer to a chat request (any answer to the HTTP/2 probe)."""
    if not is_chat(request):
        return httpx.Response(404, request=request)
    source = replaying.get()
    if not source:
        raise httpx.ConnectError("shadow replay: no recorded exchange left", request=request)
    exchange = source.pop(0)
    headers = [
        (k, v) for k, v in exchange.headers if k.lower() not in ("content-length", "transfer-encoding")
    ]
    return httpx.Response(exchange.status, headers=headers, content=exchange.body, request=request)
