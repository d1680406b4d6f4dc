"""Fixtures for the stub LLM tests: a started server, and a check that none is left running."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from llm_stub import StubOptions, StubServer


def stub_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("codeagent-llm-stub")]


@pytest.fixture(autouse=True)
def _no_stub_left_running() -> Iterator[None]:
    before = set(stub_threads())
    yield
    left = [t for t in stub_threads() if t not in before]
    assert not left, f"stub server thread(s) still running after the test: {left}"


@pytest.fixture
def stub() -> Iterator[StubServer]:
    """A stub server with default options (no latency, no faults)."""
    with StubServer(StubOptions()) as server:
        yield server
