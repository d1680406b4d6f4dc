"""The todo, status and checkpoint stores on real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from codeagent.errors import StateFileError, WorkspaceViolation
from codeagent.models import (
    AgentState,
    Checkpoint,
    Stage,
    StatusFile,
    TodoFile,
    TodoState,
    TodoStatus,
    dump_json,
)
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from legacy.todos import TodoStore
from tests.legacy.conftest import REPO_ROOT

# ---------------------------------------------------------------- todos


def test_todos_missing_file_is_empty(workspace: Path) -> None:
    store = TodoStore(workspace)
    assert store.load() == []
    assert store.get("t-0001") is None


def test_todo_add_assigns_ids_and_persists_in_shared_format(workspace: Path) -> None:
    store = TodoStore(workspace)
    first = store.add("append a line to notes", ["notes.txt", "./src//a.py"])
    second = store.add("another")
    assert (first.id, second.id) == ("t-0001", "t-0002")
    assert first.files == ["notes.txt", "src/a.py"]
    text = (workspace / ".agent" / "todos.json").read_text()
    assert text == dump_json(TodoFile(todos=[first, second]))
    assert TodoStore(workspace).get("t-0002") == second
    assert [t.id for t in store.load()] == ["t-0001", "t-0002"]


def test_todo_add_refuses_empty_text_and_bad_paths(workspace: Path) -> None:
    store = TodoStore(workspace)
    with pytest.raises(ValidationError):
        store.add("")
    with pytest.raises(WorkspaceViolation):
        store.add("x", ["../outside.txt"])
    with pytest.raises(WorkspaceViolation):
        store.add("x", [".git/config"])
    assert store.load() == []


def test_todo_file_errors_name_file_field_and_line(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    path = workspace / ".agent" / "todos.json"
    path.write_text('{\n  "version": 1,\n  "todos": [\n    {"id": "t 1", "text": "x"}\n  ]\n}\n')
    with pytest.raises(StateFileError) as info:
        TodoStore(workspace).load()
    assert info.value.path == ".agent/todos.json"
    assert info.value.field == "todos[0].id"
    assert info.value.line == 4


def test_duplicate_todo_ids_are_refused(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    doc = {"todos": [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]}
    (workspace / ".agent" / "todos.json").write_text(json.dumps(doc))
    with pytest.raises(StateFileError, match="duplicate todo id 'a'") as info:
        TodoStore(workspace).load()
    assert info.value.field == "todos[1].id"


def test_todo_add_from_many_processes_loses_nothing(workspace: Path) -> None:
    script = (
        "import sys\nfrom pathlib import Path\nfrom legacy.todos import TodoStore\n"
        "store = TodoStore(Path(sys.argv[1]))\n"
        "for i in range(10):\n    store.add(f'{sys.argv[2]}-{i}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(workspace), f"p{n}"], env=env) for n in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    todos = TodoStore(workspace).load()
    assert len(todos) == 40
    assert len({t.id for t in todos}) == 40
    assert sorted(t.text for t in todos) == sorted(f"p{n}-{i}" for n in range(4) for i in range(10))


# ---------------------------------------------------------------- status


def test_status_missing_file_is_default(workspace: Path) -> None:
    # agent.updated_at defaults to the moment of creation: two defaults differ there, and only there.
    untimed = {"agent": {"updated_at"}}
    assert StatusStore(workspace).load().model_dump(exclude=untimed) == StatusFile().model_dump(
        exclude=untimed
    )


def test_status_updates_keep_each_other(workspace: Path) -> None:
    store = StatusStore(workspace)
    running = TodoState(status=TodoStatus.RUNNING, attempts=1)
    done = TodoState(status=TodoStatus.DONE, commit="abc", attempts=1)
    agent = AgentState(state="working", current_todo="t-0002", pid=123, processed=1)
    store.set_todo("t-0001", done)
    store.set_todo("t-0002", running)
    store.set_agent(agent)
    loaded = StatusStore(workspace).load()
    assert loaded.todos == {"t-0001": done, "t-0002": running}
    assert loaded.agent == agent
    assert (workspace / ".agent" / "status.json").read_text() == dump_json(loaded)


def test_corrupt_status_file_names_file(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "status.json").write_text('{"todos": {"t-1": {"status": "weird"}}}')
    with pytest.raises(StateFileError) as info:
        StatusStore(workspace).load()
    assert info.value.path == ".agent/status.json"
    assert info.value.field == "todos.t-1.status"
    with pytest.raises(StateFileError):
        StatusStore(workspace).set_todo("t-2", TodoState())


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_and_listing(workspace: Path) -> None:
    store = CheckpointStore(workspace)
    assert store.list_ids() == []
    assert store.load("t-0001") is None
    cp = Checkpoint(todo_id="t-0002", stage=Stage.ANSWERED, reply="r", writes={"a.txt": "A\n"})
    store.save(Checkpoint(todo_id="t-0001", stage=Stage.STARTED))
    store.save(cp)
    assert store.load("t-0002") == cp
    assert store.list_ids() == ["t-0001", "t-0002"]
    edited = cp.model_copy(update={"stage": Stage.EDITED})
    store.save(edited)
    assert CheckpointStore(workspace).load("t-0002") == edited
    assert sorted(os.listdir(workspace / ".agent" / "checkpoints")) == ["t-0001.json", "t-0002.json"]


def test_checkpoint_ids_cannot_escape_the_directory(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "status.json").write_text("{}")
    store = CheckpointStore(workspace)
    assert store.load("../status") is None
    with pytest.raises(ValueError, match="invalid todo id"):
        store.save(Checkpoint(todo_id="../../evil", stage=Stage.STARTED))


def test_corrupt_checkpoint_names_its_file(workspace: Path) -> None:
    store = CheckpointStore(workspace)
    store.dir.mkdir(parents=True)
    (store.dir / "t-0003.json").write_text('{"todo_id": "t-0003", "stage": "halfway"}')
    with pytest.raises(StateFileError) as info:
        store.load("t-0003")
    assert info.value.path == ".agent/checkpoints/t-0003.json"
    assert info.value.field == "stage"
    (store.dir / "t-0004.json").write_text('{"todo_id": "t-0009", "stage": "started"}')
    with pytest.raises(StateFileError, match="belongs to todo 't-0009'"):
        store.load("t-0004")
