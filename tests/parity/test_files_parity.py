"""Workspace files: the same jail, limits, atomicity and errors from every implementation.

One difference on purpose: ``write_many`` of the new implementations checks
every size before the first write (nothing is written when one file is too
large); legacy checks paths first but sizes file by file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from codeagent.errors import WorkspaceViolation
from tests.parity._support import Impl


def test_read_missing_is_none(impl: Impl, tmp_path: Path) -> None:
    assert impl.files(tmp_path).read("nope.txt") is None


def test_write_then_read(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path)
    files.write("src/deep/new.py", "print('hi')\n")
    assert (tmp_path / "src/deep/new.py").read_text() == "print('hi')\n"
    assert files.read("src/deep/new.py") == "print('hi')\n"
    assert files.read("./src//deep/new.py") == "print('hi')\n"


def test_newlines_and_unicode_are_kept(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path)
    text = "a\r\nb\rc\nü€\n"
    files.write("x.txt", text)
    assert (tmp_path / "x.txt").read_bytes() == text.encode("utf-8")
    assert files.read("x.txt") == text


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside.txt", "'..'"),
        ("a/../../outside.txt", "'..'"),
        (".git/config", ".git"),
        (".GIT/hooks/x", ".git"),
        (".agent/todos.json", r"\.agent"),
        ("", "empty"),
        ("a\x00b", "NUL"),
        ("C:\\x", "absolute"),
    ],
)
def test_jail_refuses(impl: Impl, tmp_path: Path, path: str, reason: str) -> None:
    files = impl.files(tmp_path)
    with pytest.raises(WorkspaceViolation, match=reason):
        files.read(path)
    with pytest.raises(WorkspaceViolation, match=reason):
        files.write(path, "x")


def test_symlinks_out_of_the_workspace_are_refused(impl: Impl, tmp_path: Path) -> None:
    root, outside = tmp_path / "ws", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "gitlink").symlink_to(root / ".git")
    (root / "statelink").symlink_to(root / ".agent")
    files = impl.files(root)
    with pytest.raises(WorkspaceViolation, match="outside the workspace"):
        files.read("link/secret.txt")
    with pytest.raises(WorkspaceViolation, match="outside the workspace"):
        files.write("link/new.txt", "x")
    with pytest.raises(WorkspaceViolation, match=r"into \.git"):
        files.write("gitlink/config", "x")
    with pytest.raises(WorkspaceViolation, match=r"\.agent"):
        files.write("statelink/todos.json", "x")
    assert not (outside / "new.txt").exists()


def test_symlinks_inside_the_workspace_are_followed(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real", target_is_directory=True)
    impl.files(tmp_path).write("alias/f.txt", "via link\n")
    assert (tmp_path / "real/f.txt").read_text() == "via link\n"


def test_size_limits(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path, max_bytes=10)
    (tmp_path / "big.txt").write_text("x" * 11)
    (tmp_path / "ok.txt").write_text("x" * 10)
    with pytest.raises(WorkspaceViolation, match="10-byte limit"):
        files.read("big.txt")
    assert files.read("ok.txt") == "x" * 10
    with pytest.raises(WorkspaceViolation, match="new content is larger"):
        files.write("new.txt", "é" * 6)  # 12 bytes in UTF-8
    assert not (tmp_path / "new.txt").exists()


def test_directories_and_binary_files(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path)
    (tmp_path / "adir").mkdir()
    (tmp_path / "bin.dat").write_bytes(b"\x00\xff\xfe")
    with pytest.raises(WorkspaceViolation, match="is a directory"):
        files.read("adir")
    with pytest.raises(WorkspaceViolation, match="is a directory"):
        files.write("adir", "x")
    with pytest.raises(WorkspaceViolation, match="not UTF-8 text"):
        files.read("bin.dat")
    with pytest.raises(WorkspaceViolation, match="is a directory"):
        files.read_many(["adir"])
    with pytest.raises(WorkspaceViolation, match="not UTF-8 text"):
        files.read_many(["bin.dat"])


def test_unreadable_file(impl: Impl, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = tmp_path / "loop"
        target.symlink_to(target)  # ELOOP: an OSError that is neither missing nor a directory
        name = "loop"
    else:  # pragma: no cover - depends on the user running the tests
        target = tmp_path / "locked.txt"
        target.write_text("x")
        target.chmod(0)
        name = "locked.txt"
    with pytest.raises(WorkspaceViolation):
        impl.files(tmp_path).read(name)
    with pytest.raises(WorkspaceViolation):
        impl.files(tmp_path).read_many([name])


def test_permissions_are_kept_and_no_temp_file_is_left(impl: Impl, tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o754)
    impl.files(tmp_path).write("run.sh", "#!/bin/sh\necho hi\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o754
    assert script.read_text() == "#!/bin/sh\necho hi\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.sh"]


def test_read_many_keeps_order_and_keys(impl: Impl, tmp_path: Path) -> None:
    for n in range(5):
        (tmp_path / f"f{n}.txt").write_text(f"{n}\n")
    files = impl.files(tmp_path)
    wanted = ["f3.txt", "missing.txt", "f0.txt", "./f1.txt"]
    got = files.read_many(wanted)
    assert list(got) == wanted
    assert got == {"f3.txt": "3\n", "missing.txt": None, "f0.txt": "0\n", "./f1.txt": "1\n"}
    assert files.read_many([]) == {}


def test_read_many_raises_the_first_refused_path(impl: Impl, tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("ok")
    with pytest.raises(WorkspaceViolation) as caught:
        impl.files(tmp_path).read_many(["ok.txt", "../a", ".git/b"])
    assert caught.value.path == "../a"


def test_write_many_checks_every_path_before_writing(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path)
    with pytest.raises(WorkspaceViolation):
        files.write_many({"a.txt": "a", "../b.txt": "b"})
    assert not (tmp_path / "a.txt").exists()
    files.write_many({"a.txt": "a\n", "sub/b.txt": "b\n"})
    assert files.read_many(["a.txt", "sub/b.txt"]) == {"a.txt": "a\n", "sub/b.txt": "b\n"}
    files.write_many({})


def test_write_many_size_check_differs_on_purpose(impl: Impl, tmp_path: Path) -> None:
    files = impl.files(tmp_path, max_bytes=4)
    with pytest.raises(WorkspaceViolation, match="larger"):
        files.write_many({"a.txt": "a", "b.txt": "too long"})
    if impl.name == "legacy":
        assert (tmp_path / "a.txt").read_text() == "a"  # written before b.txt was refused
    else:
        assert not (tmp_path / "a.txt").exists()  # nothing written: all checked first


def _swap_after_the_check(root: Path, outside: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``sub`` a symlink to ``outside`` right after the jail resolved a path under it (the TOCTOU race)."""
    real = os.path.realpath

    def realpath_then_swap(path: Any, *args: Any, **kwargs: Any) -> Any:
        out = real(path, *args, **kwargs)
        sub = root / "sub"
        if str(path).endswith("sub/f.txt") and not sub.is_symlink():
            sub.rename(root / "sub.moved")
            sub.symlink_to(outside, target_is_directory=True)
        return out

    monkeypatch.setattr(os.path, "realpath", realpath_then_swap)


def _unswap(root: Path) -> None:
    (root / "sub").unlink()
    (root / "sub.moved").rename(root / "sub")


def test_a_directory_swapped_for_a_symlink_after_the_check_is_refused(
    impl: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign finding: the write followed a symlink swapped in after the jail's check."""
    root, outside = tmp_path / "ws", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub/f.txt").write_text("inside\n")
    (outside / "f.txt").write_text("secret\n")
    files = impl.files(root)
    _swap_after_the_check(root, outside, monkeypatch)
    with pytest.raises(WorkspaceViolation, match="symlink swapped in"):
        files.write("sub/f.txt", "written through the link\n")
    assert (outside / "f.txt").read_text() == "secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]
    _unswap(root)
    with pytest.raises(WorkspaceViolation, match="symlink swapped in"):
        files.read("sub/f.txt")
    _unswap(root)
    with pytest.raises(WorkspaceViolation, match="symlink swapped in"):
        files.read_many(["sub/f.txt"])
    _unswap(root)
    monkeypatch.undo()
    assert files.read("sub/f.txt") == "inside\n"


def test_temp_files_a_crashed_writer_left_are_removed_on_the_next_write(impl: Impl, tmp_path: Path) -> None:
    """Chaos campaign finding: a SIGKILL mid-write left ``.f.txt.xxxxxxxx.tmp`` in the work tree for good."""
    stale = tmp_path / ".f.txt.0123abcd.tmp"
    stale.write_text("half a wri")
    os.utime(stale, (1, 1))  # older than this process: its writer is gone
    fresh = tmp_path / ".f.txt.89abcdef.tmp"
    fresh.write_text("a write of this process, in flight")
    other = tmp_path / ".g.txt.0123abcd.tmp"
    other.write_text("another file's")
    os.utime(other, (1, 1))
    impl.files(tmp_path).write("f.txt", "whole\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".f.txt.89abcdef.tmp",
        ".g.txt.0123abcd.tmp",
        "f.txt",
    ]


def test_a_fifo_is_refused_without_blocking_the_reader(impl: Impl, tmp_path: Path) -> None:
    """Chaos campaign finding: reading a FIFO named by a todo blocked the loop forever."""
    os.mkfifo(tmp_path / "pipe")
    files = impl.files(tmp_path)
    with pytest.raises(WorkspaceViolation, match="not a regular file"):
        files.read("pipe")
    with pytest.raises(WorkspaceViolation, match="not a regular file"):
        files.read_many(["pipe"])


def test_a_write_the_disk_refuses_is_refused_with_the_reason_and_keeps_the_old_content(
    impl: Impl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chaos campaign finding: a full disk failed the todo with a bare ``OSError`` (and a logged traceback)."""
    import errno

    def no_space(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    files = impl.files(tmp_path)
    files.write("f.txt", "old\n")
    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(WorkspaceViolation, match="cannot write: No space left on device"):
        files.write("f.txt", "new\n")
    monkeypatch.undo()
    assert files.read("f.txt") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_content_that_is_not_utf8_text_is_refused_with_a_reason(impl: Impl, tmp_path: Path) -> None:
    """Chaos campaign finding: a lone surrogate in new content raised UnicodeEncodeError, not a refusal."""
    files = impl.files(tmp_path)
    with pytest.raises(WorkspaceViolation, match="not UTF-8 text"):
        files.write("x.txt", "lone \ud800")
    with pytest.raises(WorkspaceViolation, match="not UTF-8 text"):
        files.write_many({"y.txt": "fine\n", "x.txt": "lone \ud800"})
    assert not (tmp_path / "x.txt").exists()  # (legacy checks sizes file by file: y.txt may be written)
