"""The round-robin scheduler that replaces hypercorn's HTTP/2 priority tree (sans-I/O)."""

from __future__ import annotations

import hypercorn.protocol
import pytest
from hypercorn.config import Config
from priority.priority import DeadlockError, DuplicateStreamError, MissingStreamError, TooManyStreamsError

from llm_stub import hypercorn_fixes
from llm_stub.hypercorn_fixes import RoundRobinScheduler, StubConfig


def test_ready_streams_take_turns() -> None:
    tree = RoundRobinScheduler(maximum_streams=10)
    for stream_id in (1, 3, 5):
        tree.insert_stream(stream_id)
        tree.block(stream_id)
    with pytest.raises(DeadlockError):
        next(tree)
    tree.unblock(3)
    tree.unblock(1)
    assert [next(tree) for _ in range(4)] == [3, 1, 3, 1]
    tree.block(3)
    assert [next(tree) for _ in range(2)] == [1, 1]
    tree.remove_stream(1)
    with pytest.raises(DeadlockError):
        next(tree)
    tree.unblock(3)
    tree.unblock(3)  # twice is harmless
    tree.reprioritize(3, weight=200)  # priorities are ignored
    assert next(tree) == 3


def test_errors_match_the_priority_tree() -> None:
    tree = RoundRobinScheduler(maximum_streams=2)
    tree.insert_stream(1)
    with pytest.raises(DuplicateStreamError):
        tree.insert_stream(1)
    tree.insert_stream(3)
    with pytest.raises(TooManyStreamsError):
        tree.insert_stream(5)
    for call in (tree.block, tree.unblock, tree.remove_stream, tree.reprioritize):
        with pytest.raises(MissingStreamError):
            call(7)


def test_install_is_idempotent_and_only_stub_configs_get_the_fixes() -> None:
    assert hypercorn_fixes.install()
    assert hypercorn_fixes.install()
    assert hypercorn.protocol.H2Protocol is hypercorn_fixes.StubH2Protocol  # type: ignore[attr-defined]
    assert getattr(StubConfig(), "codeagent_stub_fixes", False) is True
    assert getattr(Config(), "codeagent_stub_fixes", False) is False
