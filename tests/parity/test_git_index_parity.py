"""The trailer index: ``find_commit`` answers as legacy's ``git log --grep`` does, without a process per lookup.

Legacy is the oracle for every answer. The index must be used (no git process, no
history walk per lookup), kept current by the component's own commits, and rebuilt
(once) when ``HEAD`` moves otherwise: an outside commit, an amend, a reset, a rebase,
a branch switch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from codeagent.errors import GitError
from codeagent.models import Todo
from codeagent.prompts import commit_message
from core_sync.git_trailers import message_todo_ids, stripspace
from tests.parity._git_spy import GitSpy
from tests.parity._support import Impl, git, make_repo
from tests.parity.test_agent_parity import EXPECTED_FILES, EXPECTED_STATUS, REPO_ROOT, run_agent, snapshot
from tests.parity.test_agent_parity import workspace as agent_workspace

NEW = ("core_sync", "core_async")
IDENT = ("-c", "user.name=Someone", "-c", "user.email=someone@example.invalid", "-c", "commit.gpgsign=false")

#: Message shapes around git's trailer rules; the ids queried are t-0001 .. t-0027 and a few odd ones.
TRICKY = [
    "plain\n\nTodo-Id: t-0001\n",
    "lower-case key: a trailer for git, not for the grep\n\ntodo-id: t-0002\n",
    "lower-case key, mentioned Todo-Id: t-0003\n\ntodo-id: t-0003\n",
    "two spaces\n\nTodo-Id:  t-0004\n",
    "no space\n\nTodo-Id:t-0005\n",
    "continued value\n\nTodo-Id: t-0006\n  more\n",
    "mixed block with a git trailer\n\nSigned-off-by: A <a@example.invalid>\nsome prose line\nTodo-Id: t-0007\n",
    "mostly prose\n\nThis is prose\nand more prose\nTodo-Id: t-0008\n",
    "only the subject mentions Todo-Id: t-0009\n",
    "two ids\n\nTodo-Id: t-0010\nTodo-Id: t-0011\n",
    "duplicate, older\n\nTodo-Id: t-0012\n",
    "comment-like line\n\n# Todo-Id: t-0013\nTodo-Id: t-0013\n",
    "divider\n\n---\nTodo-Id: t-0014\n",
    "blank before the colon\n\nTodo-Id : t-0015\n",
    "more after the id\n\nTodo-Id: t-0016 extra\n",
    "longer id\n\nTodo-Id: t-00170\n",
    "one paragraph\nTodo-Id: t-0018\n",
    "Todo-Id: t-0019\n",
    "three paragraphs\n\nbody Todo-Id: t-0020 here\n\nReviewed-by: x\n",
    "tab\n\nTodo-Id:\tt-0021\n",
    "cherry-picked\n\n(cherry picked from commit 0123456789abcdef0123456789abcdef01234567)\nTodo-Id: t-0022\n",
    "old conflicts block\n\nTodo-Id: t-0023\nConflicts:\n\ta.txt\n",
    "crlf\r\n\r\nTodo-Id: t-0024\r\n",
    "unicode ü subject\n\nTodo-Id: t-0025\n",
    "trailers, then prose\n\nTodo-Id: t-0026\n\nfinal prose\n",
    "duplicate, newer\n\nTodo-Id: t-0012\n",
    "  leading blanks and trailing   \n\n\n\nTodo-Id: t-0027   \n\n\n",
]
QUERIES = [f"t-{n:04d}" for n in range(1, 28)] + ["t-000", "t-0017", "", "Todo-Id", "t-0001\n"]


def _legacy(runner: Any, root: Path) -> Any:
    return Impl("legacy", runner).git(root)


def _outside_commit(root: Path, message: str) -> str:
    git(root, *IDENT, "commit", "-q", "--allow-empty", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def _assert_agrees(runner: Any, root: Path, repo: Any, queries: list[str]) -> None:
    oracle = _legacy(runner, root)
    assert {q: repo.find_commit(q) for q in queries} == {q: oracle.find_commit(q) for q in queries}


@pytest.mark.parametrize("name", NEW)
def test_lookups_use_the_index(
    name: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ``git log`` builds the index; then no lookup (hit or miss) and no own commit starts a process."""
    root = make_repo(tmp_path / "repo")
    shas = {f"t-{n:04d}": _outside_commit(root, f"c{n}\n\nTodo-Id: t-{n:04d}") for n in range(1, 31)}
    spy = GitSpy(tmp_path / "bin", monkeypatch)
    repo = Impl(name, runner).git(root)
    index = repo.target.native.index
    spy.reset()
    assert repo.find_commit("t-0007") == shas["t-0007"]
    assert [call.split(" log ")[0] for call in spy.calls()] == [
        "-c commit.gpgsign=false -c core.quotepath=false -c log.showSignature=false"
    ]
    assert index.builds == 1
    spy.reset()
    for _ in range(20):
        for todo_id, sha in shas.items():
            assert repo.find_commit(todo_id) == sha
        assert repo.find_commit("t-9999") is None
    assert repo.head() == shas["t-0030"]
    (root / "new.txt").write_text("new\n")
    own = repo.commit("own\n\nTodo-Id: t-0031\n", ["new.txt"])
    assert repo.find_commit("t-0031") == own
    assert repo.find_commit("t-0001") == shas["t-0001"]
    assert spy.calls() == []
    assert (index.builds, index.extensions) == (1, 1)
    # Every component on the path shares the index.
    other = Impl(name, runner).git(root)
    assert other.target.native is repo.target.native
    assert other.find_commit("t-0031") == own
    assert spy.calls() == [] and index.builds == 1


MOVES = {
    "outside-commit": lambda root: _outside_commit(root, "outside\n\nTodo-Id: t-0100"),
    "amend": lambda root: git(root, *IDENT, "commit", "-q", "--amend", "-m", "amended\n\nTodo-Id: t-0101"),
    "reset-hard": lambda root: git(root, "reset", "-q", "--hard", "HEAD~1"),
    "rebase-dropping-one": lambda root: git(root, *IDENT, "rebase", "-q", "--onto", "HEAD~3", "HEAD~2"),
    "branch-switch": lambda root: git(root, "checkout", "-q", "-b", "older", "HEAD~2"),
    "detached": lambda root: git(root, "checkout", "-q", "--detach", "HEAD~1"),
}


@pytest.mark.parametrize("move", list(MOVES))
@pytest.mark.parametrize("name", NEW)
def test_index_rebuilt_when_head_moves_elsewhere(
    name: str, move: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "repo")
    spy = GitSpy(tmp_path / "bin", monkeypatch)  # before the component: it keeps the PATH it saw
    repo = Impl(name, runner).git(root)
    repo.find_commit("t-0000")  # build it
    for n in range(1, 6):
        (root / f"f{n}.txt").write_text(f"{n}\n")
        repo.commit(f"c{n}\n\nTodo-Id: t-000{n}\n", [f"f{n}.txt"])
    index = repo.target.native.index
    assert (index.builds, index.extensions) == (1, 5)
    queries = [f"t-000{n}" for n in range(1, 6)] + ["t-0100", "t-0101"]
    MOVES[move](root)
    spy.reset()
    answers = {q: repo.find_commit(q) for q in queries}
    assert len(spy.calls()) == 1 and index.builds == 2  # rebuilt once
    spy.reset()
    assert {q: repo.find_commit(q) for q in queries} == answers
    assert spy.calls() == []
    _assert_agrees(runner, root, repo, queries)
    moved_away = {"reset-hard": "t-0005", "rebase-dropping-one": "t-0003", "branch-switch": "t-0004"}
    if move in moved_away:
        assert answers[moved_away[move]] is None
    if move in ("outside-commit", "amend"):
        assert (
            answers["t-0100" if move == "outside-commit" else "t-0101"]
            == git(root, "rev-parse", "HEAD").strip()
        )


@pytest.mark.parametrize("name", NEW)
def test_answers_match_legacy_for_every_message_shape(name: str, runner: Any, tmp_path: Path) -> None:
    """Commits made outside (the index is built by ``git log``) and by the component (extended) alike."""
    outside = make_repo(tmp_path / "outside")
    for message in TRICKY:
        message_file = tmp_path / "message"
        message_file.write_bytes(message.encode())
        git(outside, *IDENT, "commit", "-q", "--allow-empty", "-F", str(message_file))
    _assert_agrees(runner, outside, Impl(name, runner).git(outside), QUERIES)

    own = make_repo(tmp_path / "own")
    repo = Impl(name, runner).git(own)
    repo.find_commit("warm")
    index = repo.target.native.index
    walked = []
    for n, message in enumerate(TRICKY):
        repo.commit(message, [])
        builds = index.builds
        repo.find_commit("warm")
        if index.builds != builds:
            walked.append(message)
        if n % 9 == 0:
            _assert_agrees(runner, own, repo, QUERIES)
    _assert_agrees(runner, own, repo, QUERIES)
    # Only the shapes the plain parser leaves to git cost a walk; the agent's own shape is plain.
    assert walked == [m for m in TRICKY if message_todo_ids(stripspace(m)) is None]
    assert len(walked) < len(TRICKY) / 2
    assert message_todo_ids(commit_message(Todo(id="t-0001", text="  # odd: subject  \n more"))) is None
    assert message_todo_ids(commit_message(Todo(id="t-0001", text="Fix: the thing"))) == ["t-0001"]


@pytest.mark.parametrize("name", NEW)
def test_trailer_configuration_makes_every_own_commit_a_rebuild(
    name: str, runner: Any, tmp_path: Path
) -> None:
    """``trailer.separators`` changes what git reads as a trailer: the index lets git decide each time."""
    root = make_repo(tmp_path / "repo")
    git(root, "config", "trailer.separators", ":=")
    repo = Impl(name, runner).git(root)
    repo.find_commit("warm")
    repo.commit("equals\n\nTodo-Id= t-0001 and Todo-Id: t-0001\n", [])
    repo.commit("plain\n\nTodo-Id: t-0002\n", [])
    index = repo.target.native.index
    assert index.extensions == 0
    _assert_agrees(runner, root, repo, ["t-0001", "t-0002", "t-0001 and Todo-Id: t-0001"])
    assert index.builds == 2


def test_sync_twin_shares_one_index_across_threads(runner: Any, tmp_path: Path) -> None:
    """The legacy loop's threads: lookups and commits of one repository at once, each todo once."""
    root = make_repo(tmp_path / "repo")
    made: dict[str, str] = {}
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        repo = Impl("core_sync", runner).git(root)
        try:
            for n in range(10):
                todo_id = f"t-{k}{n:03d}"
                assert repo.find_commit(todo_id) is None
                (root / f"{todo_id}.txt").write_text(todo_id)
                made[todo_id] = repo.commit(f"{todo_id}\n\nTodo-Id: {todo_id}\n", [f"{todo_id}.txt"])
                assert repo.find_commit(todo_id) == made[todo_id]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(made) == 40
    assert len(git(root, "log", "--format=%H").split()) == 41
    _assert_agrees(runner, root, Impl("core_sync", runner).git(root), sorted(made))


@pytest.mark.parametrize("name", NEW)
def test_the_rebuild_keeps_the_time_limit(
    name: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_repo(tmp_path / "repo")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (bin_dir / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    impl = Impl(name, runner)
    repo = impl.wrap(impl.cls("git")(root, "A", "a@b", timeout=0.3))
    started = time.monotonic()
    with pytest.raises(GitError, match=r"no exit within 0\.3s"):
        repo.find_commit("t-0001")
    assert time.monotonic() - started < 5


KILL_AFTER_COMMIT = """
import os, signal, sys
import core_async.git, core_sync.git
from tests.parity._agent_main import main

def killing(commit, is_async):
    if is_async:
        async def wrapper(self, message, paths):
            sha = await commit(self, message, paths)
            if "Todo-Id: t-0002" in message:
                os.kill(os.getpid(), signal.SIGKILL)
            return sha
    else:
        def wrapper(self, message, paths):
            sha = commit(self, message, paths)
            if "Todo-Id: t-0002" in message:
                os.kill(os.getpid(), signal.SIGKILL)
            return sha
    return wrapper

core_async.git.AsyncGitRepo.commit = killing(core_async.git.AsyncGitRepo.commit, True)
core_sync.git.SyncGitRepo.commit = killing(core_sync.git.SyncGitRepo.commit, False)
main(*sys.argv[1:4])
"""


@pytest.mark.parametrize("name", NEW)
def test_sigkill_right_after_the_commit_then_resume_commits_once(
    name: str, runner: Any, tmp_path: Path, stub: Any
) -> None:
    """The commit is in git, the checkpoint still says ``edited``: a fresh process finds it (index built anew)."""
    root = agent_workspace(tmp_path / "ws", stub.url)
    crashed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_COMMIT, name, str(root), stub.url],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    impl = Impl(name, runner)
    assert impl.checkpoints(root).load("t-0002").stage.value == "edited"
    assert len(git(root, "log", "--format=%H", "--grep=Todo-Id: t-0002").split()) == 1
    run_agent(impl, root, stub.url)
    got = snapshot(root)
    assert got["files"] == EXPECTED_FILES
    assert got["states"] == EXPECTED_STATUS
    assert got["commit_counts"]["t-0002"] == 1
