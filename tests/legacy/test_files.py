"""File operations and the workspace jail, on a real file system."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from codeagent.errors import WorkspaceViolation
from legacy.files import Files


@pytest.fixture
def files(workspace: Path) -> Files:
    return Files(workspace)


def test_read_absent_file_is_none(files: Files) -> None:
    assert files.read("missing.txt") is None


def test_write_creates_parents_and_reads_back(files: Files, workspace: Path) -> None:
    files.write("a/b/c.txt", "héllo\n")
    assert (workspace / "a" / "b" / "c.txt").read_text(encoding="utf-8") == "héllo\n"
    assert files.read("a/b/c.txt") == "héllo\n"
    assert files.read("./a//b/c.txt") == "héllo\n"


def test_write_replaces_atomically_and_leaves_no_temp_files(files: Files, workspace: Path) -> None:
    files.write("f.txt", "one\n")
    files.write("f.txt", "two\n")
    assert sorted(os.listdir(workspace)) == ["f.txt"]
    assert files.read("f.txt") == "two\n"


def test_read_many_keeps_order_and_reports_absent(files: Files) -> None:
    files.write("b.txt", "B")
    assert files.read_many(["b.txt", "a.txt"]) == {"b.txt": "B", "a.txt": None}


def test_write_many_writes_every_file(files: Files) -> None:
    files.write_many({"x.txt": "X\n", "d/y.txt": "Y\n"})
    assert files.read_many(["x.txt", "d/y.txt"]) == {"x.txt": "X\n", "d/y.txt": "Y\n"}


@pytest.mark.parametrize(
    "path",
    ["../x", "a/../../x", "/etc/x", "/etc/passwd", ".git/config", ".GIT/config", "./.git/HEAD", "", "a\x00b"],
)
def test_jail_refuses_lexically_bad_paths(files: Files, path: str) -> None:
    with pytest.raises(WorkspaceViolation):
        files.read(path)
    with pytest.raises(WorkspaceViolation):
        files.write(path, "x")


def test_jail_refuses_agent_state_directory(files: Files, workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    (workspace / ".agent" / "config.json").write_text('{"api": {"token": "secret"}}')
    with pytest.raises(WorkspaceViolation, match=r"\.agent"):
        files.read(".agent/config.json")
    with pytest.raises(WorkspaceViolation, match=r"\.agent"):
        files.write(".agent/todos.json", "{}")
    os.symlink(".agent", workspace / "state")
    with pytest.raises(WorkspaceViolation, match=r"\.agent"):
        files.read("state/config.json")


def test_jail_refuses_symlinked_directory_pointing_outside(
    files: Files, workspace: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    os.symlink(outside, workspace / "link")
    with pytest.raises(WorkspaceViolation, match="outside the workspace"):
        files.read("link/secret.txt")
    with pytest.raises(WorkspaceViolation, match="outside the workspace"):
        files.write("link/new.txt", "x")
    assert sorted(os.listdir(outside)) == ["secret.txt"]


def test_jail_refuses_symlinked_file_pointing_outside(files: Files, workspace: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    os.symlink(victim, workspace / "innocent.txt")
    with pytest.raises(WorkspaceViolation):
        files.read("innocent.txt")
    with pytest.raises(WorkspaceViolation):
        files.write("innocent.txt", "pwned")
    assert victim.read_text() == "untouched"


def test_jail_refuses_dangling_symlink_pointing_outside(
    files: Files, workspace: Path, tmp_path: Path
) -> None:
    os.symlink(tmp_path / "does-not-exist-yet.txt", workspace / "dangling.txt")
    with pytest.raises(WorkspaceViolation):
        files.write("dangling.txt", "x")
    assert not (tmp_path / "does-not-exist-yet.txt").exists()


def test_jail_refuses_symlink_into_git_dir(files: Files, workspace: Path) -> None:
    (workspace / ".git").mkdir()
    (workspace / ".git" / "config").write_text("[core]\n")
    os.symlink(".git", workspace / "g")
    with pytest.raises(WorkspaceViolation, match=r"\.git"):
        files.write("g/config", "[evil]\n")
    assert (workspace / ".git" / "config").read_text() == "[core]\n"


def test_symlink_inside_workspace_is_followed_and_kept(files: Files, workspace: Path) -> None:
    (workspace / "real.txt").write_text("old\n")
    os.symlink("real.txt", workspace / "alias.txt")
    assert files.read("alias.txt") == "old\n"
    files.write("alias.txt", "new\n")
    assert (workspace / "alias.txt").is_symlink()
    assert (workspace / "real.txt").read_text() == "new\n"


def test_workspace_given_through_a_symlink_still_works(tmp_path: Path, workspace: Path) -> None:
    os.symlink(workspace, tmp_path / "ws-link")
    files = Files(tmp_path / "ws-link")
    files.write("a.txt", "A")
    assert (workspace / "a.txt").read_text() == "A"


def test_write_many_checks_every_path_before_writing(files: Files, workspace: Path) -> None:
    with pytest.raises(WorkspaceViolation):
        files.write_many({"ok.txt": "fine", "../escape.txt": "bad"})
    assert not (workspace / "ok.txt").exists()


def test_size_limit_on_read_and_write(workspace: Path) -> None:
    files = Files(workspace, max_bytes=10)
    (workspace / "big.txt").write_text("x" * 11)
    (workspace / "ok.txt").write_text("x" * 10)
    assert files.read("ok.txt") == "x" * 10
    with pytest.raises(WorkspaceViolation, match="10-byte limit"):
        files.read("big.txt")
    with pytest.raises(WorkspaceViolation, match="10-byte limit"):
        files.write("new.txt", "é" * 6)


def test_binary_file_and_directory_are_refused_with_clear_reason(files: Files, workspace: Path) -> None:
    (workspace / "img.bin").write_bytes(b"\x89PNG\xff\x00")
    (workspace / "dir").mkdir()
    with pytest.raises(WorkspaceViolation, match="not UTF-8"):
        files.read("img.bin")
    with pytest.raises(WorkspaceViolation, match="directory"):
        files.read("dir")
    with pytest.raises(WorkspaceViolation, match="directory"):
        files.write("dir", "x")
