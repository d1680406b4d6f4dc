"""The whole per-todo flow, end to end: a small workspace, the stub LLM, each implementation.

Every implementation must leave the same files, the same statuses and one
commit per finished todo; crashes (SIGKILL right after a checkpoint) resume
without a second commit or a doubled edit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import core_sync.agent
import legacy.checkpoints
import legacy.files
import legacy.git
import legacy.llm
import legacy.status
import legacy.todos
from codeagent.models import Todo, TodoFile, TodoStatus, dump_json
from tests.parity._support import FAST_RETRY, IMPLS, Impl, git, make_repo

REPO_ROOT = Path(__file__).resolve().parents[2]

TODOS = [
    ('append a line "hello" to file notes.txt', ["notes.txt"]),
    ('create file docs/intro.md with content "# Intro"', []),
    ('replace "return a + b" with "return sum((a, b))" in file src/calc.py', ["src/calc.py"]),
    ("dance a little jig", []),
    ('create file ../escape.txt with content "x"', []),
    ('append a line "bye" to file notes.txt', ["notes.txt"]),
]
EXPECTED_STATUS = {
    "t-0001": ("done", None),
    "t-0002": ("done", None),
    "t-0003": ("done", None),
    "t-0004": ("failed", "LLM answer contained no edit blocks"),
    "t-0005": ("failed", "refused path '../escape.txt': '..' would leave the workspace"),
    "t-0006": ("done", None),
}
EXPECTED_FILES = {
    "README.md": "Sample\n",
    "notes.txt": "notes\nhello\nbye\n",
    "docs/intro.md": "# Intro\n",
    "src/calc.py": "def add(a, b):\n    return sum((a, b))\n",
}


def workspace(root: Path, url: str) -> Path:
    make_repo(
        root,
        {
            "README.md": "Sample\n",
            "notes.txt": "notes\n",
            "src/calc.py": "def add(a, b):\n    return a + b\n",
        },
    )
    config = {"llm": {"base_url": url, "timeout": 5, "max_retries": 1}, "poll_interval": 0.05}
    (root / ".agent").mkdir()
    (root / ".agent/config.json").write_text(json.dumps(config))
    when = datetime(2026, 1, 1, tzinfo=UTC)
    todos = [
        Todo(id=f"t-{n:04d}", text=text, files=files, created_at=when)
        for n, (text, files) in enumerate(TODOS, 1)
    ]
    (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=todos)))
    return root


def snapshot(root: Path) -> dict[str, Any]:
    """What a run leaves behind, minus what legitimately differs (timestamps, shas, formats)."""
    files = {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] not in (".git", ".agent")
    }
    status = json.loads((root / ".agent/status.json").read_text())
    states = {tid: (s["status"], s["error"]) for tid, s in status["todos"].items()}
    commits = {tid: git(root, "log", "--format=%H", f"--grep=Todo-Id: {tid}").split() for tid in states}
    return {
        "files": files,
        "states": states,
        "commit_counts": {tid: len(shas) for tid, shas in commits.items()},
        "total_commits": len(git(root, "log", "--format=%H").split()),
        "subjects": git(root, "log", "--reverse", "--format=%s").splitlines(),
        "todos_json": (root / ".agent/todos.json").read_text(),
        "agent_state": status["agent"]["state"],
        "clean": git(root, "status", "--porcelain", "--", ".", ":!.agent"),
    }


def run_agent(impl: Impl, root: Path, url: str) -> int:
    agent = impl.agent(root, url)
    try:
        return int(agent.run(until_idle=True))
    finally:
        agent.aclose() if impl.is_async else agent.close()


def test_every_todo_processed_with_the_expected_outcome(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = workspace(tmp_path / "ws", stub.url)
    assert run_agent(impl, root, stub.url) == len(TODOS)
    got = snapshot(root)
    assert got["files"] == EXPECTED_FILES
    assert got["states"] == EXPECTED_STATUS
    done = [tid for tid, (state, _) in EXPECTED_STATUS.items() if state == "done"]
    assert got["commit_counts"] == {tid: 1 if tid in done else 0 for tid in EXPECTED_STATUS}
    assert got["total_commits"] == 1 + len(done)
    assert got["agent_state"] == "stopped"
    assert got["clean"] == ""
    for tid in done:
        assert impl.checkpoints(root).load(tid).stage.value == "committed"
    assert run_agent(impl, root, stub.url) == 0  # nothing left: nothing more happens


def test_all_implementations_leave_identical_results(runner: Any, tmp_path: Path, stub: Any) -> None:
    results = {}
    for name in IMPLS:
        root = workspace(tmp_path / name, stub.url)
        run_agent(Impl(name, runner), root, stub.url)
        results[name] = snapshot(root)
    assert results["core_sync"] == results["legacy"]
    assert results["core_async"] == results["legacy"]


def test_failed_llm_is_recorded_and_the_loop_goes_on(impl: Impl, tmp_path: Path, stub: Any) -> None:
    root = workspace(tmp_path / "ws", stub.url)
    stub.queue_faults(["quota"])
    run_agent(impl, root, stub.url)
    states = snapshot(root)["states"]
    state, error = states["t-0001"]
    assert state == "failed"
    assert error.startswith("HTTP 429: You exceeded your current quota")
    assert states["t-0002"] == ("done", None)


def _crash(name: str, root: Path, url: str, kill_at: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEAGENT_KILL_AT": kill_at, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "tests.parity._agent_main", name, str(root), url],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("kill_at", ["answered:t-0002", "edited:t-0002", "committed:t-0002"])
def test_resume_after_sigkill_makes_no_second_commit(
    impl: Impl, tmp_path: Path, stub: Any, kill_at: str
) -> None:
    root = workspace(tmp_path / "ws", stub.url)
    crashed = _crash(impl.name, root, stub.url, kill_at)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    stage = kill_at.split(":")[0]
    assert impl.checkpoints(root).load("t-0002").stage.value == stage
    assert json.loads((root / ".agent/status.json").read_text())["todos"]["t-0002"]["status"] == "running"
    run_agent(impl, root, stub.url)
    got = snapshot(root)
    assert got["files"] == EXPECTED_FILES
    assert got["states"] == EXPECTED_STATUS
    assert got["commit_counts"]["t-0002"] == 1
    status = json.loads((root / ".agent/status.json").read_text())
    assert status["todos"]["t-0002"]["attempts"] == 2


def test_new_implementations_resume_what_legacy_left(runner: Any, tmp_path: Path, stub: Any) -> None:
    """A legacy crash (legacy checkpoint format) resumes on the async core."""
    root = workspace(tmp_path / "ws", stub.url)
    assert _crash("legacy", root, stub.url, "edited:t-0003").returncode == -signal.SIGKILL
    run_agent(Impl("core_async", runner), root, stub.url)
    got = snapshot(root)
    assert got["files"] == EXPECTED_FILES
    assert got["commit_counts"]["t-0003"] == 1


def test_generated_twin_runs_on_legacy_components(tmp_path: Path, stub: Any) -> None:
    """The twin is typed by the Sync* protocols, so legacy components plug straight in."""
    root = workspace(tmp_path / "ws", stub.url)
    config = Impl("legacy", None).load_config(root)  # type: ignore[arg-type]
    agent = core_sync.agent.SyncAgent(
        root,
        config,
        legacy.todos.TodoStore(root),
        legacy.status.StatusStore(root),
        legacy.checkpoints.CheckpointStore(root),
        legacy.files.Files(root),
        legacy.git.GitRepo(root, "Code Agent", "codeagent@localhost"),
        legacy.llm.LLMClient(stub.url, "k", "stub-coder", 5, 1, **FAST_RETRY),
    )
    try:
        assert agent.run(until_idle=True) == len(TODOS)
    finally:
        agent.close()
    assert snapshot(root)["states"] == EXPECTED_STATUS
    assert {s for s, _ in snapshot(root)["states"].values()} == {
        TodoStatus.DONE.value,
        TodoStatus.FAILED.value,
    }
