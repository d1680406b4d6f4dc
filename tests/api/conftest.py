"""Fixtures of the REST API suite: a workspace with state, and each server over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codeagent.models import Checkpoint, Stage, TodoState, TodoStatus
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from tests.api.servers import start_server
from tests.kernel.workspaces import make_workspace

SERVERS = ["legacy", "async"]
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git workspace with three todos: the first done (status and checkpoint), the others pending."""
    root = tmp_path / "ws"
    make_workspace(root, 3)
    StatusStore(root).set_todo("t-0001", TodoState(status=TodoStatus.DONE, commit=SHA, attempts=1))
    StatusStore(root).set_todo("t-0002", TodoState(status=TodoStatus.FAILED, error="LLM said no", attempts=2))
    CheckpointStore(root).save(Checkpoint(todo_id="t-0001", stage=Stage.COMMITTED, reply="r", commit=SHA))
    return root


@pytest.fixture(params=SERVERS)
def api(request: pytest.FixtureRequest, workspace: Path) -> Iterator[httpx.Client]:
    """An HTTP client on the legacy or the async server (no token); ``client.kind`` says which."""
    running = start_server(request.param, workspace, None)
    try:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            client.kind = request.param  # type: ignore[attr-defined]
            yield client
    finally:
        running.stop()  # type: ignore[operator]


@pytest.fixture(params=SERVERS)
def secured(request: pytest.FixtureRequest, workspace: Path) -> Iterator[httpx.Client]:
    """An HTTP client on the legacy or the async server, configured with the token ``tok``."""
    running = start_server(request.param, workspace, "tok")
    try:
        with httpx.Client(base_url=running.url, timeout=10) as client:
            client.kind = request.param  # type: ignore[attr-defined]
            yield client
    finally:
        running.stop()  # type: ignore[operator]
