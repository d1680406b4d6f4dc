"""Fixtures of the kernel tests: a stub LLM in a background thread."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from llm_stub import StubOptions, StubServer


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    """A stub LLM with a little latency, shared by a test module."""
    with StubServer(StubOptions(latency_ms=20)) as stub:
        yield stub.url


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The kernel's entry points configure logging; leave the root logger as it was."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    noisy = {
        name: logging.getLogger(name).level for name in ("httpx", "httpcore", "watchfiles", "uvicorn.error")
    }
    yield
    root.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    for name, old in noisy.items():
        logging.getLogger(name).setLevel(old)
