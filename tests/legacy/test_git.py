"""Git utilities against real repositories in temp directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent.errors import GitError
from codeagent.models import Todo
from codeagent.prompts import commit_message
from legacy.git import GitRepo
from tests.legacy.conftest import git, trailers


def _repo(root: Path) -> GitRepo:
    return GitRepo(root, "Code Agent", "agent@example.invalid")


def test_ensure_repo_initialises_once(workspace: Path) -> None:
    repo = _repo(workspace)
    repo.ensure_repo()
    assert (workspace / ".git").is_dir()
    assert git(workspace, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert repo.head() is None
    repo.ensure_repo()  # idempotent
    assert repo.head() is None


def test_ensure_repo_keeps_an_existing_repository(repo: Path) -> None:
    before = git(repo, "rev-parse", "HEAD").strip()
    gr = _repo(repo)
    gr.ensure_repo()
    assert gr.head() == before


def test_commit_adds_named_paths_with_trailer_and_configured_identity(repo: Path, clean_env: Path) -> None:
    gr = _repo(repo)
    (repo / "notes.txt").write_text("first line\nsecond\n")
    (repo / "new").mkdir()
    (repo / "new" / "file.md").write_text("# New\n")
    todo = Todo(id="t-0001", text="append a line")
    sha = gr.commit(commit_message(todo), ["new/file.md", "notes.txt"])
    assert sha == gr.head() == git(repo, "rev-parse", "HEAD").strip()
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip() == (
        "Code Agent <agent@example.invalid>|Code Agent <agent@example.invalid>"
    )
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["new/file.md", "notes.txt"]
    assert trailers(repo) == ["t-0001", ""]
    assert git(repo, "status", "--porcelain") == ""


def test_commit_takes_only_its_paths_not_other_staged_work(repo: Path) -> None:
    gr = _repo(repo)
    (repo / "mine.txt").write_text("mine\n")
    (repo / "theirs.txt").write_text("theirs\n")
    git(repo, "add", "theirs.txt")
    gr.commit("mine\n\nTodo-Id: a\n", ["mine.txt"])
    assert git(repo, "show", "--name-only", "--format=", "HEAD").split() == ["mine.txt"]
    assert git(repo, "status", "--porcelain").strip() == "A  theirs.txt"


def test_commit_is_made_even_when_nothing_changed(repo: Path) -> None:
    gr = _repo(repo)
    before = gr.head()
    sha = gr.commit("no-op\n\nTodo-Id: t-0009\n", ["notes.txt"])
    assert sha != before
    assert gr.find_commit("t-0009") == sha


def test_find_commit_matches_whole_trailer_value(repo: Path) -> None:
    gr = _repo(repo)
    assert gr.find_commit("t-1") is None
    (repo / "a.txt").write_text("a")
    sha10 = gr.commit("ten\n\nTodo-Id: t-10\n", ["a.txt"])
    (repo / "b.txt").write_text("b")
    sha_dot = gr.commit("dot\n\nTodo-Id: t.1\n", ["b.txt"])
    assert gr.find_commit("t-1") is None  # no prefix match
    assert gr.find_commit("t-10") == sha10
    assert gr.find_commit("t.1") == sha_dot
    assert gr.find_commit("tx1") is None  # no regex match on '.'
    # mentioned in the body is not a trailer
    (repo / "c.txt").write_text("c")
    gr.commit("mention\n\nsee Todo-Id: t-77 in prose\n\nTodo-Id: t-78\n", ["c.txt"])
    assert gr.find_commit("t-77") is None
    assert gr.find_commit("t-78") is not None


def test_find_commit_in_empty_repository(workspace: Path) -> None:
    gr = _repo(workspace)
    gr.ensure_repo()
    assert gr.find_commit("t-0001") is None


def test_git_environment_of_the_caller_is_ignored(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    gr = _repo(repo)
    (repo / "a.txt").write_text("a")
    gr.commit("x\n\nTodo-Id: t-1\n", ["a.txt"])
    monkeypatch.delenv("GIT_DIR")
    assert git(repo, "log", "-1", "--format=%an").strip() == "Code Agent"


def test_failures_raise_git_error_with_stderr(repo: Path) -> None:
    gr = _repo(repo)
    with pytest.raises(GitError) as info:
        gr.commit("x\n\nTodo-Id: t-1\n", ["no/such/file.txt"])
    assert info.value.returncode != 0
    assert "no/such/file.txt" in str(info.value)


def test_missing_workspace_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError):
        _repo(tmp_path / "nope").head()
