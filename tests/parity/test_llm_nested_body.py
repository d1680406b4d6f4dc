"""A 200 whose JSON nests thousands of levels deep is a malformed answer, on every client.

Found by ``codeagent chaos`` (the ``fuzz`` target's reasoning applied to the LLM's answers): both clients
raised a bare ``RecursionError`` out of ``chat()``, not an :class:`~codeagent.errors.LLMError` and not
retried, and the agent failed the todo with a traceback. Such a body is now treated like one that is not
JSON at all: retried like a cut-short body, then :class:`LLMMalformedResponse` once the retries are spent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from codeagent.errors import LLMMalformedResponse

DEEP = b'{"choices": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
MESSAGES = [{"role": "user", "content": "hello"}]


class _Deep(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        type(self).requests += 1
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(DEEP)))
        self.end_headers()
        self.wfile.write(DEEP)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def deep_llm() -> Iterator[str]:
    """An OpenAI-compatible endpoint whose every answer is a 200 nested 100,000 arrays deep."""
    _Deep.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Deep)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_legacy_client_treats_a_body_nested_too_deeply_as_malformed(deep_llm: str) -> None:
    from legacy.llm import LLMClient

    client = LLMClient(deep_llm, "sk-test", "stub-coder", 5.0, 1, backoff_base=0.01, backoff_max=0.02)
    try:
        with pytest.raises(LLMMalformedResponse):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert _Deep.requests == 2  # retried once, like any malformed or cut-short body


def test_async_client_treats_a_body_nested_too_deeply_as_malformed(deep_llm: str) -> None:
    from core_async.llm import AsyncLLMClient

    async def ask() -> None:
        client = AsyncLLMClient(deep_llm, "sk-test", "stub-coder", 5.0, 1, 0.0)
        try:
            with pytest.raises(LLMMalformedResponse):
                await client.chat(MESSAGES)
        finally:
            await client.aclose()

    asyncio.run(ask())
    assert _Deep.requests == 2


def test_sync_twin_client_treats_a_body_nested_too_deeply_as_malformed(deep_llm: str) -> None:
    from core_sync.llm import SyncLLMClient

    client = SyncLLMClient(deep_llm, "sk-test", "stub-coder", 5.0, 1, 0.0)
    try:
        with pytest.raises(LLMMalformedResponse):
            client.chat(MESSAGES)
    finally:
        client.close()
    assert _Deep.requests == 2
