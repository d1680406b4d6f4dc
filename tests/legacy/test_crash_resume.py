"""Crash and resume with real processes: SIGKILL right after a checkpoint, then a clean restart.

The child runs ``legacy_agent(...).run(until_idle=True)`` against a stub LLM
served by this test process; ``CODEAGENT_KILL_AT`` makes it SIGKILL itself right
after saving the named checkpoint. The restarted child must finish every todo
with exactly one commit per todo and files holding exactly the expected bytes
(an "append" replayed twice would show up as a doubled line).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from codeagent.models import Stage, TodoStatus
from legacy.checkpoints import CheckpointStore
from legacy.status import StatusStore
from legacy.todos import TodoStore
from tests.legacy.conftest import REPO_ROOT, git, trailers

CHILD = (
    "import sys\n"
    "from pathlib import Path\n"
    "from tests.agents import legacy_agent\n"
    "agent = legacy_agent(Path(sys.argv[1]), llm_url=sys.argv[2])\n"
    "try:\n"
    "    print(agent.run(until_idle=True))\n"
    "finally:\n"
    "    agent.close()\n"
)

EXPECTED = {
    "notes.txt": "first line\nhello world\n",
    "docs/intro.md": "# Intro\n",
    "src/calc.py": "def add(a, b):\n    return a + b  # bar\n",
}


def run_child(root: Path, url: str, kill_at: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CODEAGENT_KILL_AT"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    if kill_at is not None:
        env["CODEAGENT_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(root), url],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def add_todos(root: Path) -> None:
    store = TodoStore(root)
    store.add('append a line "hello world" to file notes.txt', ["notes.txt"])
    store.add('create file docs/intro.md with content "# Intro"')
    store.add('replace "foo" with "bar" in file src/calc.py', ["src/calc.py"])


def assert_all_done_once(root: Path) -> None:
    final = StatusStore(root).load().todos
    assert {k: v.status for k, v in final.items()} == {f"t-000{n}": TodoStatus.DONE for n in (1, 2, 3)}
    assert trailers(root) == ["t-0003", "t-0002", "t-0001", ""]
    for todo_id, state in final.items():
        assert state.commit == git(root, "log", "-1", "--format=%H", f"--grep=Todo-Id: {todo_id}").strip()
    for path, content in EXPECTED.items():
        assert (root / path).read_text() == content, path
    assert git(root, "status", "--porcelain").strip() == "?? .agent/"
    leftovers = [p for p in root.rglob("*.tmp") if ".git" not in p.parts]
    assert leftovers == []


@pytest.mark.parametrize("stage", ["started", "answered", "edited", "committed"])
def test_sigkill_after_checkpoint_of_one_todo_then_resume(repo: Path, stub: Any, stage: str) -> None:
    add_todos(repo)

    crashed = run_child(repo, stub.url, f"{stage}:t-0002")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    status = StatusStore(repo).load().todos
    assert status["t-0001"].status is TodoStatus.DONE
    assert status["t-0002"].status is TodoStatus.RUNNING
    assert "t-0003" not in status
    checkpoint = CheckpointStore(repo).load("t-0002")
    assert checkpoint is not None
    assert checkpoint.stage is Stage(stage)
    commits_before = len(trailers(repo))
    assert commits_before == (3 if stage == "committed" else 2)

    resumed = run_child(repo, stub.url, None)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "2"

    assert_all_done_once(repo)
    assert StatusStore(repo).load().todos["t-0002"].attempts == 2
    asked = stub.stats()["by_path"]
    # Each todo's answer is asked for exactly once: a saved answer is never asked again.
    assert asked == {"/v1/chat/completions": 3}


def test_sigkill_of_the_first_todo_reaching_a_stage_then_resume(repo: Path, stub: Any) -> None:
    add_todos(repo)
    crashed = run_child(repo, stub.url, "edited")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (repo / "notes.txt").read_text() == EXPECTED["notes.txt"]  # written, not yet committed
    assert trailers(repo) == [""]

    resumed = run_child(repo, stub.url, None)
    assert resumed.returncode == 0, resumed.stderr
    assert_all_done_once(repo)


def test_repeated_crashes_at_every_stage_converge(repo: Path, stub: Any) -> None:
    add_todos(repo)
    for kill_at in ("committed:t-0001", "answered:t-0002", "edited:t-0002", "started:t-0003"):
        crashed = run_child(repo, stub.url, kill_at)
        assert crashed.returncode == -signal.SIGKILL, (kill_at, crashed.stderr)
    resumed = run_child(repo, stub.url, None)
    assert resumed.returncode == 0, resumed.stderr
    assert_all_done_once(repo)
