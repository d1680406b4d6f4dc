"""Git utilities: the same history, trailers and errors from every implementation, in real repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from codeagent.errors import GitError
from codeagent.models import Todo
from codeagent.prompts import commit_message
from tests.parity._support import IMPLS, Impl, git, make_repo


def test_ensure_repo_initialises_once(impl: Impl, tmp_path: Path) -> None:
    repo = impl.git(tmp_path)
    repo.ensure_repo()
    assert (tmp_path / ".git").is_dir()
    assert repo.head() is None
    assert repo.find_commit("t-0001") is None
    repo.ensure_repo()  # already a repository: nothing happens
    assert git(tmp_path, "symbolic-ref", "HEAD").strip() == "refs/heads/main"


def test_inside_an_enclosing_repository_nothing_is_created(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "sub").mkdir()
    impl.git(tmp_path / "sub").ensure_repo()
    assert not (tmp_path / "sub" / ".git").exists()


def test_commit_only_the_named_paths_with_the_trailer(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path, {"a.txt": "a\n", "b.txt": "b\n"})
    repo = impl.git(tmp_path)
    (tmp_path / "a.txt").write_text("a2\n")
    (tmp_path / "b.txt").write_text("b2\n")  # changed but not named: stays uncommitted
    (tmp_path / "new dir").mkdir()
    (tmp_path / "new dir/c d.txt").write_text("c\n")
    todo = Todo(id="t-0007", text="change a and add c")
    sha = repo.commit(commit_message(todo), ["a.txt", "new dir/c d.txt"])
    assert sha == repo.head() == git(tmp_path, "rev-parse", "HEAD").strip()
    assert git(tmp_path, "show", "--name-only", "--format=", "HEAD").split("\n")[:2] == [
        "a.txt",
        "new dir/c d.txt",
    ]
    assert git(tmp_path, "status", "--porcelain").strip() == "M b.txt"
    body = git(tmp_path, "log", "-1", "--format=%an <%ae>%n%B")
    assert body.startswith("Code Agent <codeagent@localhost>\nchange a and add c\n\nTodo-Id: t-0007")
    assert repo.find_commit("t-0007") == sha
    assert repo.find_commit("t-000") is None  # a prefix is not the id
    assert repo.find_commit("t-0008") is None


def test_empty_commits_still_carry_the_trailer(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path)
    repo = impl.git(tmp_path)
    first = repo.commit("nothing changed\n\nTodo-Id: t-0001\n", [])
    second = repo.commit("again\n\nTodo-Id: t-0002\n", ["README.md"])
    assert first != second
    assert repo.find_commit("t-0001") == first
    assert repo.find_commit("t-0002") == second


def test_the_newest_commit_of_a_todo_wins_and_mentions_are_not_trailers(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path)
    repo = impl.git(tmp_path)
    repo.commit("x\n\nTodo-Id: t-0001\n", [])
    newer = repo.commit("y\n\nTodo-Id: t-0001\n", [])
    repo.commit("mentions Todo-Id: t-0009 in the subject only\n", [])
    assert repo.find_commit("t-0001") == newer
    assert repo.find_commit("t-0009") is None


@pytest.mark.parametrize("other", IMPLS)
def test_histories_agree(impl: Impl, tmp_path: Path, other: str) -> None:
    """A commit made by one implementation is found by every other."""
    make_repo(tmp_path)
    sha = impl.git(tmp_path).commit("x\n\nTodo-Id: t-0042\n", [])
    assert Impl(other, impl.runner).git(tmp_path).find_commit("t-0042") == sha


def test_failures_raise_git_error(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path)
    with pytest.raises(GitError, match="did not match any files"):
        impl.git(tmp_path).commit("x", ["missing.txt"])


def test_missing_workspace_raises_git_error(impl: Impl, tmp_path: Path) -> None:
    with pytest.raises(GitError):
        impl.git(tmp_path / "gone").commit("x", [])


def test_option_like_paths_are_paths(impl: Impl, tmp_path: Path) -> None:
    make_repo(tmp_path)
    (tmp_path / "--help").write_text("not an option\n")
    sha = impl.git(tmp_path).commit("odd name\n\nTodo-Id: t-0003\n", ["--help"])
    assert git(tmp_path, "show", "--name-only", "--format=", sha).strip() == "--help"


def test_first_commit_of_an_unborn_branch(impl: Impl, tmp_path: Path) -> None:
    """The root commit (``[main (root-commit) sha]``) is found and reported like any other."""
    repo = impl.git(tmp_path)
    repo.ensure_repo()
    (tmp_path / "a.txt").write_text("a\n")
    sha = repo.commit("first\n\nTodo-Id: t-0001\n", ["a.txt"])
    assert sha == git(tmp_path, "rev-parse", "HEAD").strip()
    assert repo.find_commit("t-0001") == sha


@pytest.mark.parametrize("where", ["odd]branch", "--detach"])
def test_commit_sha_on_odd_branches_and_detached_head(impl: Impl, tmp_path: Path, where: str) -> None:
    """Whatever git prints around the sha, the returned sha is the new HEAD."""
    make_repo(tmp_path)
    if where == "--detach":
        git(tmp_path, "checkout", "-q", "--detach")
    else:
        git(tmp_path, "checkout", "-q", "-b", where)
    repo = impl.git(tmp_path)
    sha = repo.commit("x\n\nTodo-Id: t-0005\n", [])
    assert sha == git(tmp_path, "rev-parse", "HEAD").strip()
    assert repo.find_commit("t-0005") == sha


def test_unreadable_history_raises_git_error(impl: Impl, tmp_path: Path) -> None:
    """A history git cannot walk is an error, never "no commit yet" (which would commit twice)."""
    make_repo(tmp_path)
    repo = impl.git(tmp_path)
    repo.commit("x\n\nTodo-Id: t-0001\n", [])
    first = git(tmp_path, "rev-list", "--max-parents=0", "HEAD").strip()
    (tmp_path / ".git" / "objects" / first[:2] / first[2:]).unlink()
    with pytest.raises(GitError):
        repo.find_commit("t-0001")
