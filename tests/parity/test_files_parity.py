"""Workspace files: the same jail, limits, atomicity and errors from every implementation.

One difference on purpose: ``write_many`` of the new implementations checks
every size before the first write (nothing is written when one file is too
large); legacy checks paths first but sizes file by file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

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
