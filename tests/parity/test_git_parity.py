"""Git utilities: the same history, trailers and errors from every implementation, in real repos."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import legacy.git
from codeagent.errors import GitError
from codeagent.models import Todo
from codeagent.prompts import commit_message
from tests.parity._git_spy import GitSpy, commit_facts, local_timezone, repo_state
from tests.parity._support import IMPLS, Impl, git, make_repo

REPO_ROOT = Path(__file__).resolve().parents[2]


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


# --- in-process commits (libgit2) against the CLI -------------------------------------------------
#
# Each scenario runs twice on two copies of one repository: legacy's CLI commit in one, the
# implementation under test in the other; the commits and what they leave behind must be the
# same (tree, parents, message bytes, author and committer, zone, index, work tree, reflog), with
# dates within a second, and the in-process path must not have started a git process.

NEW = ("core_sync", "core_async")
#: A zone with a half-hour offset, so a wrong offset cannot pass for a right one.
ZONE = "XST-5:30"


def _agent_edit(root: Path) -> tuple[str, list[str]]:
    (root / "a.txt").write_text("a2\n")
    (root / "b.txt").write_text("b2\n")  # changed, not named: stays out of the commit
    (root / "new dir").mkdir()
    (root / "new dir/c d.txt").write_text("c\n")
    return commit_message(Todo(id="t-0001", text="change a and add c")), ["a.txt", "new dir/c d.txt"]


def _delete(root: Path) -> tuple[str, list[str]]:
    (root / "a.txt").unlink()
    return "drop a\n\nTodo-Id: t-0002\n", ["a.txt"]


def _unchanged(root: Path) -> tuple[str, list[str]]:
    return "nothing to change\n\nTodo-Id: t-0003\n", ["a.txt"]


def _staged_by_someone_else(root: Path) -> tuple[str, list[str]]:
    """Named paths: only they are committed; what someone else staged stays staged."""
    (root / "b.txt").write_text("staged elsewhere\n")
    git(root, "add", "b.txt")
    (root / "a.txt").write_text("a3\n")
    return "a only\n\nTodo-Id: t-0004\n", ["a.txt"]


def _whole_index(root: Path) -> tuple[str, list[str]]:
    """No paths: the index as it stands is committed (``git commit`` without pathspec)."""
    (root / "b.txt").write_text("staged elsewhere\n")
    git(root, "add", "b.txt")
    return "the index\n\nTodo-Id: t-0005\n", []


def _modes_and_links(root: Path) -> tuple[str, list[str]]:
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "link").symlink_to("a.txt")
    (root / "b.txt").chmod(0o755)
    return "modes\n\nTodo-Id: t-0006\n", ["run.sh", "link", "b.txt"]


def _messy_message(root: Path) -> tuple[str, list[str]]:
    (root / "a.txt").write_text("a4\n")
    message = "\n  \nsubject with trailing blanks \t\r\n\n\n\n\tindented body\t \n# not a comment here\n\nTodo-Id: t-0007   \n\n"
    return message, ["a.txt"]


def _gpgsign_configured(root: Path) -> tuple[str, list[str]]:
    """``commit.gpgsign=true``: the component signs on neither path (the CLI runs with it off)."""
    git(root, "config", "commit.gpgsign", "true")
    git(root, "config", "user.signingkey", "nonexistent-key")
    (root / "a.txt").write_text("a5\n")
    return "unsigned\n\nTodo-Id: t-0008\n", ["a.txt"]


def _pre_push_hook(root: Path) -> tuple[str, list[str]]:
    """A hook no commit runs (and a non-executable commit hook) keeps the in-process path."""
    hooks = root / ".git" / "hooks"
    (hooks / "pre-push").write_text("#!/bin/sh\nexit 1\n")
    (hooks / "pre-push").chmod(0o755)
    (hooks / "pre-commit").write_text("#!/bin/sh\nexit 1\n")  # not executable: git ignores it
    (root / "a.txt").write_text("a6\n")
    return "hooks that do not run\n\nTodo-Id: t-0009\n", ["a.txt"]


def _ignored_but_tracked(root: Path) -> tuple[str, list[str]]:
    (root / ".gitignore").write_text("*.txt\n")
    (root / "a.txt").write_text("a7\n")
    return "tracked files are committed even when ignored\n\nTodo-Id: t-0010\n", ["a.txt"]


IN_PROCESS = {
    "agent-edit": _agent_edit,
    "delete": _delete,
    "unchanged": _unchanged,
    "staged-by-someone-else": _staged_by_someone_else,
    "whole-index": _whole_index,
    "modes-and-links": _modes_and_links,
    "messy-message": _messy_message,
    "gpgsign-configured": _gpgsign_configured,
    "pre-push-hook": _pre_push_hook,
    "ignored-but-tracked": _ignored_but_tracked,
}


def _twins(tmp_path: Path, setup: Any) -> tuple[Path, Path, str, list[str]]:
    base = make_repo(tmp_path / "base", {"a.txt": "a\n", "b.txt": "b\n", "README.md": "hello\n"})
    cli_root, new_root = tmp_path / "cli", tmp_path / "new"
    shutil.copytree(base, cli_root, symlinks=True)
    shutil.copytree(base, new_root, symlinks=True)
    message, paths = setup(cli_root)
    assert setup(new_root) == (message, paths)
    return cli_root, new_root, message, paths


def _assert_same_commit(cli_root: Path, new_root: Path) -> None:
    """The two ``HEAD`` commits agree; their parents by tree (two commits in a row differ in dates)."""
    cli, new = commit_facts(cli_root), commit_facts(new_root)
    cli_times, new_times = cli.pop("times"), new.pop("times")
    for facts, root in ((cli, cli_root), (new, new_root)):
        facts["parents"] = [git(root, "rev-parse", f"{p}^{{tree}}") for p in facts["parents"]]
    assert new == cli
    assert new_times[0] == new_times[1]  # one timestamp for author and committer, as the CLI
    assert abs(new_times[0] - cli_times[0]) <= 1
    assert repo_state(new_root) == repo_state(cli_root)


@pytest.mark.parametrize("scenario", list(IN_PROCESS))
@pytest.mark.parametrize("name", NEW)
def test_in_process_commit_is_the_cli_commit(
    name: str, scenario: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli_root, new_root, message, paths = _twins(tmp_path, IN_PROCESS[scenario])
    spy = GitSpy(tmp_path / "bin", monkeypatch)
    with local_timezone(ZONE):
        cli_sha = Impl("legacy", runner).git(cli_root).commit(message, paths)
        repo = Impl(name, runner).git(new_root)
        spy.reset()
        sha = repo.commit(message, paths)
        assert spy.calls() == []  # no git process: libgit2 made it
    assert sha == git(new_root, "rev-parse", "HEAD").strip()
    assert commit_facts(new_root)["author"][1] == "+0530"
    _assert_same_commit(cli_root, new_root)
    assert "gpgsig" not in commit_facts(cli_root)["headers"]
    assert (
        Impl("legacy", runner)
        .git(new_root)
        .find_commit(commit_facts(new_root)["message"].rsplit("Todo-Id: ", 1)[1].strip())
        == sha
    )
    assert (
        Impl(name, runner)
        .git(cli_root)
        .find_commit(commit_facts(cli_root)["message"].rsplit("Todo-Id: ", 1)[1].strip())
        == cli_sha
    )


@pytest.mark.parametrize("name", NEW)
def test_in_process_first_commit_and_workspace_below_the_top(
    name: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unborn branch, and a workspace that is a subdirectory of the repository (paths are relative to it)."""
    spy = GitSpy(tmp_path / "bin", monkeypatch)
    for root in (tmp_path / "cli", tmp_path / "new"):
        (root / "ws" / "src").mkdir(parents=True)
        git(root, "init", "-q", "-b", "main")
        (root / "ws" / "src" / "x.py").write_text("x = 1\n")
        (root / "top.txt").write_text("outside the workspace\n")
    with local_timezone(ZONE):
        Impl("legacy", runner).git(tmp_path / "cli" / "ws").commit("first\n\nTodo-Id: t-0001\n", ["src/x.py"])
        spy.reset()
        repo = Impl(name, runner).git(tmp_path / "new" / "ws")
        repo.commit("first\n\nTodo-Id: t-0001\n", ["src/x.py"])
        assert spy.calls() == []
    _assert_same_commit(tmp_path / "cli", tmp_path / "new")
    assert git(tmp_path / "new", "ls-files").split() == ["ws/src/x.py"]


def _hook(root: Path, name: str, body: str, hooks_dir: Path | None = None) -> None:
    where = hooks_dir or root / ".git" / "hooks"
    where.mkdir(parents=True, exist_ok=True)
    (where / name).write_text(f"#!/bin/sh\n{body}\n")
    (where / name).chmod(0o755)


def _commit_msg_hook(root: Path) -> None:
    _hook(root, "commit-msg", 'printf "Hooked: yes\\n" >> "$1"')


def _hooks_path(root: Path) -> None:
    git(root, "config", "core.hooksPath", "my-hooks")  # relative: to the work tree
    _hook(root, "pre-commit", "touch pre-commit-ran", root / "my-hooks")


def _filter_attribute(root: Path) -> None:
    git(root, "config", "filter.upper.clean", "tr a-z A-Z")
    git(root, "config", "filter.upper.smudge", "cat")
    (root / ".gitattributes").write_text("*.txt filter=upper\n")


def _lfs_like(root: Path) -> None:
    """What ``git lfs track`` leaves: a ``filter=lfs`` attribute (here with a stand-in clean filter)."""
    git(root, "config", "filter.lfs.clean", "sed s/^/pointer:/")
    git(root, "config", "filter.lfs.smudge", "cat")
    (root / ".gitattributes").write_text("*.txt filter=lfs diff=lfs merge=lfs -text\n")


def _info_attributes(root: Path) -> None:
    git(root, "config", "filter.upper.clean", "tr a-z A-Z")
    (root / ".git" / "info").mkdir(exist_ok=True)
    (root / ".git" / "info" / "attributes").write_text("a.txt filter=upper\n")


def _attributes_file(root: Path) -> None:
    git(root, "config", "filter.upper.clean", "tr a-z A-Z")
    git(root, "config", "core.attributesFile", str(root / "my-attributes"))
    (root / "my-attributes").write_text("*.txt filter=upper\n")


def _eol_attribute(root: Path) -> None:
    (root / ".gitattributes").write_text("*.txt text eol=lf\n")


def _autocrlf(root: Path) -> None:
    git(root, "config", "core.autocrlf", "input")


FALLBACKS = {
    "commit-msg-hook": (_commit_msg_hook, "hooks commit-msg"),
    "core.hooksPath": (_hooks_path, "hooks pre-commit"),
    "filter-attribute": (_filter_attribute, "gitattributes filter=upper"),
    "lfs": (_lfs_like, "gitattributes filter=lfs"),
    "info-attributes": (_info_attributes, "gitattributes filter=upper"),
    "core.attributesFile": (_attributes_file, "gitattributes filter=upper"),
    "eol-attribute": (_eol_attribute, "gitattributes text=True"),
    "core.autocrlf": (_autocrlf, "core.autocrlf=input"),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
@pytest.mark.parametrize("name", NEW)
def test_what_libgit2_does_differently_goes_through_the_cli(
    name: str,
    case: str,
    runner: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hooks, filters (LFS), eol conversion: the CLI commits, the result is legacy's, said once per repository."""
    setup, why = FALLBACKS[case]

    def scenario(root: Path) -> tuple[str, list[str]]:
        setup(root)
        (root / "a.txt").write_text("line one\r\nline two\r\n")
        return "converted or hooked\n\nTodo-Id: t-0001\n", ["a.txt"]

    cli_root, new_root, message, paths = _twins(tmp_path, scenario)
    spy = GitSpy(tmp_path / "bin", monkeypatch)
    caplog.set_level(logging.INFO)
    Impl("legacy", runner).git(cli_root).commit(message, paths)
    repo = Impl(name, runner).git(new_root)
    spy.reset()
    repo.commit(message, paths)
    assert any(" commit " in f" {call} " for call in spy.calls())  # the CLI made it
    _assert_same_commit(cli_root, new_root)
    for root in (cli_root, new_root):
        (root / "a.txt").write_text("line three\r\n")
    Impl("legacy", runner).git(cli_root).commit("again\n\nTodo-Id: t-0002\n", paths)
    sha = repo.commit("again\n\nTodo-Id: t-0002\n", paths)
    _assert_same_commit(cli_root, new_root)
    said = [r.getMessage() for r in caplog.records if "committing through the git CLI" in r.getMessage()]
    assert len(said) == 1 and why in said[0], said
    assert str(new_root) in said[0]
    assert repo.find_commit("t-0002") == sha  # the index follows the CLI's commits too
    if case == "commit-msg-hook":
        assert commit_facts(new_root)["message"].endswith("Hooked: yes\n")
    if case == "core.hooksPath":
        assert (new_root / "pre-commit-ran").exists()


@pytest.mark.parametrize("name", NEW)
def test_attributes_in_a_subdirectory_apply_to_its_files(name: str, runner: Any, tmp_path: Path) -> None:
    def scenario(root: Path) -> tuple[str, list[str]]:
        git(root, "config", "filter.upper.clean", "tr a-z A-Z")
        (root / "deep" / "er").mkdir(parents=True)
        (root / "deep" / ".gitattributes").write_text("*.txt filter=upper\n")
        (root / "deep" / "er" / "x.txt").write_text("lower case\n")
        (root / "y.txt").write_text("not below deep/\n")
        return "nested\n\nTodo-Id: t-0001\n", ["deep/er/x.txt", "y.txt"]

    cli_root, new_root, message, paths = _twins(tmp_path, scenario)
    Impl("legacy", runner).git(cli_root).commit(message, paths)
    Impl(name, runner).git(new_root).commit(message, paths)
    _assert_same_commit(cli_root, new_root)
    assert git(new_root, "show", "HEAD:deep/er/x.txt") == "LOWER CASE\n"


@pytest.mark.parametrize("name", NEW)
def test_a_hook_added_later_is_noticed(
    name: str, runner: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_repo(tmp_path / "repo")
    root = tmp_path / "repo"
    repo = Impl(name, runner).git(root)
    spy = GitSpy(tmp_path / "bin", monkeypatch)
    spy.reset()
    repo.commit("before\n\nTodo-Id: t-0001\n", [])
    assert spy.calls() == []
    _hook(root, "post-commit", "touch post-commit-ran")
    repo.commit("after\n\nTodo-Id: t-0002\n", [])
    assert (root / "post-commit-ran").exists()
    (root / ".git" / "hooks" / "post-commit").unlink()
    spy.reset()
    repo.commit("gone again\n\nTodo-Id: t-0003\n", [])
    assert spy.calls() == []


PATHSPECS = {
    "glob": (["sub/*.txt"], None),
    "directory": (["sub"], None),
    "ignored-untracked": (["build.log"], "ignored by one of your .gitignore files"),
    "missing": (["nowhere.txt"], "did not match any files"),
}


@pytest.mark.parametrize("case", list(PATHSPECS))
@pytest.mark.parametrize("name", NEW)
def test_paths_git_reads_as_pathspecs_go_through_the_cli(
    name: str, case: str, runner: Any, tmp_path: Path
) -> None:
    paths, error = PATHSPECS[case]

    def scenario(root: Path) -> tuple[str, list[str]]:
        (root / "sub").mkdir()
        (root / "sub" / "x.txt").write_text("x\n")
        (root / "sub" / "y.txt").write_text("y\n")
        (root / ".gitignore").write_text("*.log\n")
        (root / "build.log").write_text("log\n")
        return "pathspec\n\nTodo-Id: t-0001\n", list(paths)

    cli_root, new_root, message, paths = _twins(tmp_path, scenario)
    if error is not None:
        with pytest.raises(GitError, match=error):
            Impl("legacy", runner).git(cli_root).commit(message, paths)
        with pytest.raises(GitError, match=error):
            Impl(name, runner).git(new_root).commit(message, paths)
    else:
        Impl("legacy", runner).git(cli_root).commit(message, paths)
        Impl(name, runner).git(new_root).commit(message, paths)
        _assert_same_commit(cli_root, new_root)


@pytest.mark.parametrize("name", NEW)
def test_a_subject_of_several_lines_goes_through_the_cli(name: str, runner: Any, tmp_path: Path) -> None:
    """git's reflog entry names a subject's first line only (libgit2's would name them all)."""

    def scenario(root: Path) -> tuple[str, list[str]]:
        (root / "a.txt").write_text("a2\n")
        return "first line\nsecond line\n\nTodo-Id: t-0001\n", ["a.txt"]

    cli_root, new_root, message, paths = _twins(tmp_path, scenario)
    Impl("legacy", runner).git(cli_root).commit(message, paths)
    Impl(name, runner).git(new_root).commit(message, paths)
    _assert_same_commit(cli_root, new_root)
    assert repo_state(new_root)["reflog"] == "commit: first line\n"


@pytest.mark.parametrize("name", NEW)
def test_identity_is_written_as_git_writes_it(name: str, runner: Any, tmp_path: Path) -> None:
    """Names and emails with characters git trims or drops (``ident.c``) come out the same."""
    cli_root, new_root, message, paths = _twins(tmp_path, _unchanged)
    who = (" .Dr. Ünïcode <Agent>; ", ' "agent@example.invalid". ')
    legacy.git.GitRepo(cli_root, *who).commit(message, paths)
    Impl(name, runner).wrap(Impl(name, runner).cls("git")(new_root, *who)).commit(message, paths)
    _assert_same_commit(cli_root, new_root)
    assert commit_facts(new_root)["author"][0] == "Dr. Ünïcode Agent <agent@example.invalid>"


@pytest.mark.parametrize("name", NEW)
def test_merge_in_progress_goes_through_the_cli(name: str, runner: Any, tmp_path: Path) -> None:
    """During a merge git refuses a partial commit; the component reports git's refusal."""
    root = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    git(root, "checkout", "-q", "-b", "side")
    (root / "a.txt").write_text("side\n")
    git(root, "-c", "user.name=T", "-c", "user.email=t@t", "commit", "-qam", "side")
    git(root, "checkout", "-q", "main")
    (root / "a.txt").write_text("main\n")
    git(root, "-c", "user.name=T", "-c", "user.email=t@t", "commit", "-qam", "main")
    subprocess.run(["git", "merge", "-q", "side"], cwd=root, capture_output=True, check=False)
    (root / "a.txt").write_text("resolved\n")
    with pytest.raises(GitError, match="partial commit during a merge"):
        Impl(name, runner).git(root).commit("x\n\nTodo-Id: t-0001\n", ["a.txt"])


@pytest.mark.parametrize("lock", ["index.lock", "refs/heads/main.lock"])
@pytest.mark.parametrize("paths", [["a.txt"], []], ids=["paths", "no-paths"])
def test_a_lock_held_by_another_git_fails_the_commit(
    impl: Impl, tmp_path: Path, lock: str, paths: list[str]
) -> None:
    """Another git at work (its lock file present): an error, nothing committed; fine once it is gone."""
    root = make_repo(tmp_path / "repo", {"a.txt": "a\n"})
    (root / "a.txt").write_text("a2\n")
    before = git(root, "rev-parse", "HEAD").strip()
    (root / ".git" / lock).write_text("")
    repo = impl.git(root)
    with pytest.raises(GitError):
        repo.commit("x\n\nTodo-Id: t-0001\n", paths)
    assert git(root, "rev-parse", "HEAD").strip() == before
    assert repo.find_commit("t-0001") is None
    (root / ".git" / lock).unlink()
    sha = repo.commit("x\n\nTodo-Id: t-0001\n", paths)
    assert repo.find_commit("t-0001") == sha == git(root, "rev-parse", "HEAD").strip()


def test_without_pygit2_everything_runs_through_the_cli(tmp_path: Path) -> None:
    """pygit2 not importable: one log line, and the components work as before (both faces)."""
    root = make_repo(tmp_path / "repo")
    program = (
        "import asyncio, logging, sys\n"
        "sys.modules['pygit2'] = None\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s %(message)s')\n"
        "from pathlib import Path\n"
        "import core_async.git, core_sync.git\n"
        "root = Path(sys.argv[1])\n"
        "sync = [core_sync.git.SyncGitRepo(root, 'A', 'a@b') for _ in range(2)]\n"
        "assert all(r.native is None for r in sync)\n"
        "sha = sync[0].commit('x\\n\\nTodo-Id: t-0001\\n', [])\n"
        "assert sync[1].find_commit('t-0001') == sha\n"
        "async def main():\n"
        "    repo = core_async.git.AsyncGitRepo(root, 'A', 'a@b')\n"
        "    assert repo.native is None\n"
        "    assert await repo.find_commit('t-0001') == sha\n"
        "asyncio.run(main())\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, str(root)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    lines = [line for line in done.stderr.splitlines() if "pygit2" in line]
    assert lines == [
        "core_sync.git_native pygit2 cannot be imported: git runs through the git CLI (a process per step)",
        "core_async.git_native pygit2 cannot be imported: git runs through the git CLI (a process per step)",
    ]
