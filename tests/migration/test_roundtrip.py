"""Property: legacy -> new -> legacy gives back the original files, byte for byte, for generated states."""

from __future__ import annotations

import tempfile
from datetime import UTC
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codeagent.models import Checkpoint, Stage, StatusFile, Todo, TodoFile, TodoState, TodoStatus, dump_json
from legacy.checkpoints import CheckpointStore
from migration import engine
from migration.verify import verify_workspace
from tests.migration.conftest import state_bytes

ids = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
times = st.datetimes(timezones=st.just(UTC))
paths = st.from_regex(r"[a-z]{1,8}(/[a-z]{1,8})?\.(py|md|txt)", fullmatch=True)
texts = st.text(max_size=40)


@st.composite
def states(draw: st.DrawFn) -> tuple[list[Todo], StatusFile, list[Checkpoint]]:
    todo_ids = draw(st.lists(ids, min_size=1, max_size=6, unique=True))
    todos = [
        Todo(id=i, text=draw(st.text(min_size=1, max_size=30)), files=draw(st.lists(paths, max_size=3)))
        for i in todo_ids
    ]
    status = StatusFile()
    checkpoints: list[Checkpoint] = []
    for todo_id in todo_ids:
        if draw(st.booleans()):
            status.todos[todo_id] = TodoState(
                status=draw(st.sampled_from(list(TodoStatus))), attempts=draw(st.integers(0, 5))
            )
        if draw(st.booleans()):
            checkpoints.append(
                Checkpoint(
                    todo_id=todo_id,
                    stage=draw(st.sampled_from(list(Stage))),
                    reply=draw(st.none() | texts),
                    writes=draw(st.dictionaries(paths, texts, max_size=3)),
                    commit=draw(st.none() | st.from_regex(r"[0-9a-f]{40}", fullmatch=True)),
                    updated_at=draw(times),
                )
            )
    return todos, status, checkpoints


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(states())
def test_legacy_new_legacy_is_identity(state: tuple[list[Todo], StatusFile, list[Checkpoint]]) -> None:
    todos, status, checkpoints = state
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".agent").mkdir()
        (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
        (root / ".agent/status.json").write_text(dump_json(status), encoding="utf-8")
        store = CheckpointStore(root)
        for checkpoint in checkpoints:
            store.save(checkpoint)
        before = state_bytes(root)
        applied = engine.apply(root)
        assert applied.ok, applied.lines
        assert verify_workspace(root)[0] == []
        rolled = engine.rollback(root)
        assert rolled.ok, rolled.lines
        assert state_bytes(root) == before
        assert [store.load(c.todo_id) for c in checkpoints] == checkpoints
