"""The LLM endpoint a workspace talks to, and the embedded stub when none is configured.

``--llm-url`` wins, then the workspace's ``llm.base_url``; with neither, the
bundled OpenAI-compatible stub is started on a free loopback port (one line on
stderr says so) and stopped with the loop. Both loops get it from here: the
legacy loop as a context manager, the async kernel as an injected provider.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from llm_stub import StubServer


def start_embedded_stub() -> StubServer:
    """Start the bundled stub LLM on a free loopback port and say where (blocking, about 50 ms)."""
    stub = StubServer().start()
    print(
        f"codeagent: no LLM configured; using the embedded stub LLM at {stub.url}",
        file=sys.stderr,
        flush=True,
    )
    return stub


@contextmanager
def embedded_stub() -> Iterator[str]:
    """The embedded stub's base URL for the duration of the block."""
    stub = start_embedded_stub()
    try:
        yield stub.url
    finally:
        stub.stop()


@asynccontextmanager
async def aembedded_stub() -> AsyncIterator[str]:
    """:func:`embedded_stub` for the async kernel: started and stopped off the event loop."""
    stub = await asyncio.to_thread(start_embedded_stub)
    try:
        yield stub.url
    finally:
        await asyncio.to_thread(stub.stop)


@contextmanager
def llm_endpoint(llm_url: str | None, configured: str | None) -> Iterator[str]:
    """``llm_url``, else ``configured``, else the embedded stub's URL while the block runs."""
    chosen = llm_url or configured
    if chosen:
        yield chosen
        return
    with embedded_stub() as url:
        yield url
