"""Fixtures of the async-specific suite: one stub LLM per module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.parity._support import stub_server_fixture


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Any]:
    yield from stub_server_fixture()


@pytest.fixture
def stub(stub_server: Any) -> Any:
    stub_server.reset()
    stub_server.set_options(latency_ms=0, fail_rate=0.0, retry_after_s=0.2, hang_s=30)
    return stub_server
