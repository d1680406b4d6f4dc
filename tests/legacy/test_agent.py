"""The legacy loop end to end: real git workspace, real files, the stub LLM over loopback HTTP."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeagent.config import AgentConfig
from codeagent.errors import ConfigError, StateFileError
from codeagent.models import Checkpoint, Stage, TodoState, TodoStatus
from legacy.agent import LegacyAgent
from legacy.api import LegacyAPIServer
from legacy.checkpoints import CheckpointStore
from legacy.files import Files
from legacy.git import GitRepo
from legacy.llm import LLMClient
from legacy.status import StatusStore
from legacy.todos import TodoStore
from tests.agents import legacy_agent as build_agent
from tests.legacy.conftest import git, trailers

APPEND = 'append a line "hello world" to file notes.txt'
CREATE = 'create file docs/intro.md with content "# Intro"'
REPLACE = 'replace "foo" with "bar" in file src/calc.py'


def make_agent(root: Path, url: str, *, poll_interval: float = 0.05, **llm: Any) -> LegacyAgent:
    """A legacy agent wired by hand (injection), with a fast poll and fast LLM backoff."""
    config = AgentConfig.model_validate({"poll_interval": poll_interval})
    options: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.01}
    options.update(llm)
    return LegacyAgent(
        root,
        config,
        todos=TodoStore(root),
        status=StatusStore(root),
        checkpoints=CheckpointStore(root),
        files=Files(root),
        git=GitRepo(root, "Code Agent", "agent@example.invalid"),
        llm=LLMClient(url, "sk-test", "stub-coder", **options),
    )


def run_until_idle(agent: LegacyAgent) -> int:
    try:
        return agent.run(until_idle=True)
    finally:
        agent.close()


def states(root: Path) -> dict[str, TodoState]:
    return StatusStore(root).load().todos


def test_every_todo_done_with_one_commit_each(repo: Path, stub: Any) -> None:
    store = TodoStore(repo)
    store.add(APPEND, ["notes.txt"])
    store.add(CREATE)
    store.add(REPLACE, ["src/calc.py"])

    assert run_until_idle(build_agent(repo, llm_url=stub.url)) == 3

    assert (repo / "notes.txt").read_text() == "first line\nhello world\n"
    assert (repo / "docs" / "intro.md").read_text() == "# Intro\n"
    assert (repo / "src" / "calc.py").read_text() == "def add(a, b):\n    return a + b  # bar\n"
    assert trailers(repo) == ["t-0003", "t-0002", "t-0001", ""]
    final = states(repo)
    for todo_id in ("t-0001", "t-0002", "t-0003"):
        state = final[todo_id]
        assert (state.status, state.error, state.attempts) == (TodoStatus.DONE, None, 1)
        assert state.started_at is not None
        assert state.finished_at is not None
        assert state.started_at <= state.finished_at
        assert state.commit == git(repo, "log", "-1", "--format=%H", f"--grep=Todo-Id: {todo_id}").strip()
        checkpoint = CheckpointStore(repo).load(todo_id)
        assert checkpoint is not None
        assert (checkpoint.stage, checkpoint.commit) == (Stage.COMMITTED, state.commit)
    assert git(repo, "show", "--name-only", "--format=", final["t-0002"].commit or "").split() == [
        "docs/intro.md"
    ]
    assert git(repo, "log", "-1", "--format=%s%n%n%b").strip() == f"{REPLACE}\n\nTodo-Id: t-0003"
    assert git(repo, "status", "--porcelain").strip() == "?? .agent/"
    agent_state = StatusStore(repo).load().agent
    assert (agent_state.state, agent_state.processed, agent_state.pid) == ("stopped", 3, os.getpid())

    # Nothing left: a second run does nothing and makes no commit.
    assert run_until_idle(build_agent(repo, llm_url=stub.url)) == 0
    assert len(trailers(repo)) == 4


def test_plain_directory_becomes_a_repository(workspace: Path, stub: Any) -> None:
    TodoStore(workspace).add(CREATE)
    assert run_until_idle(make_agent(workspace, stub.url)) == 1
    assert (workspace / "docs" / "intro.md").read_text() == "# Intro\n"
    assert trailers(workspace) == ["t-0001"]


def test_todo_file_paths_are_normalised(repo: Path, stub: Any) -> None:
    TodoStore(repo).add(APPEND, ["./notes.txt", "notes.txt"])
    assert run_until_idle(make_agent(repo, stub.url)) == 1
    assert (repo / "notes.txt").read_text() == "first line\nhello world\n"


def test_one_bad_todo_fails_and_the_loop_goes_on(repo: Path, stub: Any, tmp_path: Path) -> None:
    store = TodoStore(repo)
    store.add("tidy up the universe")  # no rule: an answer without edit blocks
    mismatch = r"notes.txt\n```\n<<<<<<< SEARCH\nno such line\n=======\nx\n>>>>>>> REPLACE\n```\n"
    store.add(f'reply with "{mismatch}"', ["notes.txt"])
    store.add('append a line "pwned" to file ../evil.txt')
    store.add('append a line "x" to file .git/config')
    unterminated = r"notes.txt\n```\n<<<<<<< SEARCH\nfirst line\n=======\n"
    store.add(f'reply with "{unterminated}"', ["notes.txt"])
    store.add(APPEND, ["notes.txt"])

    assert run_until_idle(make_agent(repo, stub.url)) == 6

    final = states(repo)
    assert [final[f"t-000{n}"].status for n in range(1, 7)] == [TodoStatus.FAILED] * 5 + [TodoStatus.DONE]
    assert final["t-0001"].error == "LLM answer contained no edit blocks"
    assert final["t-0002"].error == (
        "edit block 1 for notes.txt: SEARCH text not found in the file (first line: 'no such line')"
    )
    assert final["t-0003"].error is not None
    assert "'../evil.txt'" in final["t-0003"].error
    assert final["t-0004"].error is not None
    assert ".git" in final["t-0004"].error
    assert final["t-0005"].error is not None
    assert "missing '>>>>>>> REPLACE'" in final["t-0005"].error
    assert all(final[f"t-000{n}"].commit is None for n in range(1, 6))
    assert not (tmp_path / "evil.txt").exists()
    assert "pwned" not in (repo / ".git" / "config").read_text()
    assert (repo / "notes.txt").read_text() == "first line\nhello world\n"
    assert trailers(repo) == ["t-0006", ""]


def test_llm_failures_fail_the_todo_after_retries(repo: Path, stub: Any) -> None:
    store = TodoStore(repo)
    store.add(APPEND, ["notes.txt"])
    store.add(CREATE)
    store.add(REPLACE, ["src/calc.py"])
    stub.queue_faults(["quota", "500", "500", "malformed", "malformed"])  # a cut-short body is retried

    assert run_until_idle(make_agent(repo, stub.url, max_retries=1)) == 3

    final = states(repo)
    assert final["t-0001"].status is TodoStatus.FAILED
    assert final["t-0001"].error is not None
    assert "HTTP 429" in final["t-0001"].error
    assert "quota" in final["t-0001"].error
    assert final["t-0002"].status is TodoStatus.FAILED
    assert final["t-0002"].error is not None
    assert final["t-0002"].error.startswith("HTTP 500")
    assert final["t-0003"].status is TodoStatus.FAILED
    assert "not JSON" in (final["t-0003"].error or "")
    assert stub.stats()["by_fault"] == {"quota": 1, "500": 2, "malformed": 2}
    assert trailers(repo) == [""]


def test_transient_llm_faults_are_retried_within_a_todo(repo: Path, stub: Any) -> None:
    TodoStore(repo).add(APPEND, ["notes.txt"])
    stub.set_options(retry_after_s=0.05)
    stub.queue_faults(["500", "429", "reset"])
    assert run_until_idle(make_agent(repo, stub.url)) == 1
    assert states(repo)["t-0001"].status is TodoStatus.DONE
    assert (repo / "notes.txt").read_text() == "first line\nhello world\n"


def test_corrupt_checkpoint_fails_only_its_todo(repo: Path, stub: Any) -> None:
    store = TodoStore(repo)
    store.add(APPEND, ["notes.txt"])
    store.add(CREATE)
    cp_dir = repo / ".agent" / "checkpoints"
    cp_dir.mkdir(parents=True)
    (cp_dir / "t-0001.json").write_text('{"todo_id": "t-0001",\n "stage": "answered",\n "writes": []}\n')

    assert run_until_idle(make_agent(repo, stub.url)) == 2

    final = states(repo)
    assert final["t-0001"].status is TodoStatus.FAILED
    assert final["t-0001"].error is not None
    assert final["t-0001"].error.startswith(".agent/checkpoints/t-0001.json:3: writes:")
    assert final["t-0002"].status is TodoStatus.DONE
    assert (repo / "notes.txt").read_text() == "first line\n"


def test_malformed_todo_file_is_reported_with_file_field_and_line(repo: Path, stub: Any) -> None:
    (repo / ".agent").mkdir()
    (repo / ".agent" / "todos.json").write_text(
        '{\n  "version": 1,\n  "todos": [\n    {"id": "t-0001", "text": "x", "files": "notes.txt"}\n  ]\n}\n'
    )
    agent = make_agent(repo, stub.url)
    with pytest.raises(StateFileError) as info:
        run_until_idle(agent)
    assert str(info.value).startswith(".agent/todos.json:4: todos[0].files:")


def test_service_loop_survives_a_bad_todo_file_until_it_is_fixed(repo: Path, stub: Any) -> None:
    agent = make_agent(repo, stub.url, poll_interval=0.02)
    (repo / ".agent").mkdir()
    todos_path = repo / ".agent" / "todos.json"
    todos_path.write_text("{ not json")
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(agent.run(stop=stop)))
    thread.start()
    try:
        time.sleep(0.2)
        assert thread.is_alive()
        todos_path.unlink()
        TodoStore(repo).add(APPEND, ["notes.txt"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "t-0001" not in states(repo):
            time.sleep(0.02)
        while time.monotonic() < deadline and states(repo)["t-0001"].status is not TodoStatus.DONE:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(5)
        agent.close()
    assert not thread.is_alive()
    assert result == [1]
    assert states(repo)["t-0001"].status is TodoStatus.DONE


def test_malformed_config_names_file_and_field(repo: Path) -> None:
    (repo / ".agent").mkdir()
    (repo / ".agent" / "config.json").write_text('{\n  "llm": {"max_retries": "many"}\n}\n')
    with pytest.raises(ConfigError) as info:
        build_agent(repo, llm_url="http://127.0.0.1:9/v1")
    assert str(info.value).startswith(".agent/config.json:2: llm.max_retries:")


def test_the_component_builder_follows_the_config(repo: Path, stub: Any) -> None:
    (repo / ".agent").mkdir()
    (repo / ".agent" / "config.json").write_text(
        json.dumps({"llm": {"base_url": stub.url, "max_retries": 7}})
    )
    agent = build_agent(repo)
    try:
        assert isinstance(agent.llm, LLMClient)
        assert agent.llm.base_url == stub.url
        assert agent.llm.max_retries == 7
    finally:
        agent.close()
    agent = build_agent(repo, llm_url="http://127.0.0.1:9/v1")
    assert isinstance(agent.llm, LLMClient)
    assert agent.llm.base_url == "http://127.0.0.1:9/v1"
    agent.close()


# ---------------------------------------------------------------- resume after a crash (in process)


def test_resume_from_answered_writes_the_planned_content(repo: Path, stub: Any) -> None:
    todo = TodoStore(repo).add(APPEND, ["notes.txt"])
    StatusStore(repo).set_todo(todo.id, TodoState(status=TodoStatus.RUNNING, attempts=1))
    planned = {"notes.txt": "first line\nfrom the checkpoint\n"}
    CheckpointStore(repo).save(Checkpoint(todo_id=todo.id, stage=Stage.ANSWERED, reply="r", writes=planned))

    assert run_until_idle(make_agent(repo, stub.url)) == 1

    assert (repo / "notes.txt").read_text() == planned["notes.txt"]
    assert stub.stats()["requests_total"] == 0  # the answer was not asked again
    state = states(repo)[todo.id]
    assert (state.status, state.attempts) == (TodoStatus.DONE, 2)
    assert trailers(repo) == [todo.id, ""]


def test_resume_from_edited_does_not_commit_twice(repo: Path, stub: Any) -> None:
    todo = TodoStore(repo).add(APPEND, ["notes.txt"])
    (repo / "notes.txt").write_text("first line\nhello world\n")
    sha = GitRepo(repo, "A", "a@example.invalid").commit(f"x\n\nTodo-Id: {todo.id}\n", ["notes.txt"])
    CheckpointStore(repo).save(
        Checkpoint(todo_id=todo.id, stage=Stage.EDITED, writes={"notes.txt": "first line\nhello world\n"})
    )

    assert run_until_idle(make_agent(repo, stub.url)) == 1

    assert states(repo)[todo.id].commit == sha
    assert trailers(repo) == [todo.id, ""]
    checkpoint = CheckpointStore(repo).load(todo.id)
    assert checkpoint is not None
    assert (checkpoint.stage, checkpoint.commit) == (Stage.COMMITTED, sha)


def test_resume_from_committed_only_marks_done(repo: Path, stub: Any) -> None:
    todo = TodoStore(repo).add(APPEND, ["notes.txt"])
    head = git(repo, "rev-parse", "HEAD").strip()
    CheckpointStore(repo).save(Checkpoint(todo_id=todo.id, stage=Stage.COMMITTED, commit=head))
    assert run_until_idle(make_agent(repo, stub.url)) == 1
    assert states(repo)[todo.id].commit == head
    assert trailers(repo) == [""]
    assert (repo / "notes.txt").read_text() == "first line\n"


def test_interrupted_and_running_todos_are_resumed_in_file_order(repo: Path, stub: Any) -> None:
    store = TodoStore(repo)
    first, second = store.add(APPEND, ["notes.txt"]), store.add(CREATE)
    StatusStore(repo).set_todo(second.id, TodoState(status=TodoStatus.INTERRUPTED, attempts=1))
    StatusStore(repo).set_todo(first.id, TodoState(status=TodoStatus.RUNNING, attempts=3))
    assert run_until_idle(make_agent(repo, stub.url)) == 2
    final = states(repo)
    assert (final[first.id].attempts, final[second.id].attempts) == (4, 2)
    assert trailers(repo) == [second.id, first.id, ""]


def test_failed_todos_are_not_retried(repo: Path, stub: Any) -> None:
    todo = TodoStore(repo).add(APPEND, ["notes.txt"])
    StatusStore(repo).set_todo(todo.id, TodoState(status=TodoStatus.FAILED, error="earlier", attempts=1))
    assert run_until_idle(make_agent(repo, stub.url)) == 0
    assert states(repo)[todo.id].error == "earlier"


# ---------------------------------------------------------------- the service loop


def test_stop_event_ends_an_idle_loop_promptly(repo: Path, stub: Any) -> None:
    agent = make_agent(repo, stub.url, poll_interval=30)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, kwargs={"stop": stop})
    thread.start()
    time.sleep(0.1)
    assert StatusStore(repo).load().agent.state == "idle"
    started = time.monotonic()
    stop.set()
    thread.join(5)
    agent.close()
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0
    assert StatusStore(repo).load().agent.state == "stopped"


def test_api_wakes_a_sleeping_loop(repo: Path, stub: Any) -> None:
    agent = make_agent(repo, stub.url, poll_interval=30)
    api = LegacyAPIServer(
        agent.todos,
        agent.status,
        agent.checkpoints,
        on_todo_added=lambda _t: agent.wake(),
        poll_interval=0.02,
    )
    api.start()
    thread = threading.Thread(target=agent.run)
    thread.start()
    try:
        time.sleep(0.1)
        response = httpx.post(f"{api.url}/todos", json={"text": APPEND, "files": ["notes.txt"]}, timeout=5)
        assert response.status_code == 201
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            body = httpx.get(f"{api.url}/todos/t-0001", timeout=5).json()
            if body["status"] == "done":
                break
            time.sleep(0.02)
        assert body["status"] == "done"
        assert httpx.get(f"{api.url}/checkpoints/t-0001", timeout=5).json()["stage"] == "committed"
    finally:
        agent.request_stop()
        thread.join(5)
        api.stop()
        agent.close()
    assert not thread.is_alive()
    assert (repo / "notes.txt").read_text() == "first line\nhello world\n"


class _ExplodingLLM:
    """An LLM component (not a transport) whose chat raises a given exception."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.closed = False

    def chat(self, messages: list[dict[str, str]]) -> str:
        raise self.exc

    def close(self) -> None:
        self.closed = True


def _agent_with_llm(root: Path, llm: _ExplodingLLM) -> LegacyAgent:
    return LegacyAgent(
        root,
        AgentConfig(),
        todos=TodoStore(root),
        status=StatusStore(root),
        checkpoints=CheckpointStore(root),
        files=Files(root),
        git=GitRepo(root, "Code Agent", "agent@example.invalid"),
        llm=llm,
    )


def test_unexpected_error_fails_the_todo_with_its_type(repo: Path) -> None:
    TodoStore(repo).add(APPEND, ["notes.txt"])
    TodoStore(repo).add(CREATE)
    llm = _ExplodingLLM(RuntimeError("boom"))
    agent = _agent_with_llm(repo, llm)
    assert agent.run(until_idle=True) == 2
    agent.close()
    assert llm.closed
    assert [s.error for s in states(repo).values()] == ["RuntimeError: boom"] * 2


def test_keyboard_interrupt_marks_the_todo_interrupted_and_resumable(repo: Path, stub: Any) -> None:
    todo = TodoStore(repo).add(APPEND, ["notes.txt"])
    agent = _agent_with_llm(repo, _ExplodingLLM(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        agent.run(until_idle=True)
    state = states(repo)[todo.id]
    assert (state.status, state.attempts) == (TodoStatus.INTERRUPTED, 1)
    assert StatusStore(repo).load().agent.state == "stopped"
    assert run_until_idle(make_agent(repo, stub.url)) == 1
    assert states(repo)[todo.id].status is TodoStatus.DONE


def test_git_failure_fails_the_todo_with_gits_message(repo: Path, stub: Any) -> None:
    (repo / ".gitignore").write_text("docs/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore docs")
    TodoStore(repo).add(CREATE)
    TodoStore(repo).add(APPEND, ["notes.txt"])
    assert run_until_idle(make_agent(repo, stub.url)) == 2
    final = states(repo)
    assert final["t-0001"].status is TodoStatus.FAILED
    assert final["t-0001"].error is not None
    assert final["t-0001"].error.startswith("git add -A -- docs/intro.md exited 1")
    assert "ignored" in final["t-0001"].error
    assert final["t-0002"].status is TodoStatus.DONE
    assert trailers(repo)[:1] == ["t-0002"]
