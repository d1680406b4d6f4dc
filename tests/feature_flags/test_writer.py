"""Writes keep the person's comments, are validated and atomic, and every change is audited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from feature_flags import (
    ComponentChange,
    FlagFileError,
    Mode,
    ensure_flag_file,
    read_entries,
    read_flags,
    update_flags,
)

HAND_WRITTEN = """\
# Our flags. Ask Dana before touching git.
version = 1
loop = "legacy"  # not yet

[components.git]
# git stays on legacy until the worktree bug is fixed
mode = "legacy"
"""


def test_set_keeps_comments_and_layout(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text(HAND_WRITTEN)
    flags = update_flags(
        path,
        components={"llm": ComponentChange(mode=Mode.CANARY, percent=10)},
        source="cli",
        reason="try llm",
    )
    text = path.read_text()
    assert "# Our flags. Ask Dana before touching git." in text
    assert 'loop = "legacy"  # not yet' in text
    assert "# git stays on legacy until the worktree bug is fixed" in text
    assert flags.flag("llm").mode is Mode.CANARY and flags.flag("llm").percent == 10
    assert read_flags(path) == flags


def test_every_change_is_audited_with_old_and_new(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    ensure_flag_file(path)
    update_flags(
        path, components={"llm": ComponentChange(mode=Mode.CANARY, percent=10)}, source="cli", reason="a"
    )
    update_flags(
        path, components={"llm": ComponentChange(mode=Mode.NEW)}, loop="async", source="api", reason="b"
    )
    update_flags(path, components={"llm": ComponentChange(mode=Mode.NEW)}, source="cli", reason="no-op")
    entries = read_entries(path)
    assert [e.reason for e in entries] == ["a", "b"]  # the no-op wrote nothing
    assert entries[1].source == "api"
    keys = {c.key: (c.old, c.new) for c in entries[1].changes}
    assert keys == {
        "loop": ("legacy", "async"),
        "components.llm.mode": ("canary", "new"),
        "components.llm.percent": (10, 0),
    }
    assert read_flags(path).flag("llm").percent == 0


def test_refuses_to_overwrite_a_file_a_person_broke(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text('version = 1\nloop = "legacy"\n[components.llm]\nmode = "nope"\n')
    before = path.read_bytes()
    with pytest.raises(FlagFileError, match=r"components\.llm\.mode"):
        update_flags(path, components={"git": ComponentChange(mode=Mode.NEW)}, source="cli", reason="x")
    assert path.read_bytes() == before
    assert read_entries(path) == []


def test_unknown_component_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    with pytest.raises(FlagFileError, match="unknown component 'cache'"):
        update_flags(path, components={"cache": ComponentChange(mode=Mode.NEW)}, source="cli", reason="x")
    assert not path.exists()


def test_write_is_atomic_no_temp_files_left(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    for i in range(6):
        mode = Mode.NEW if i % 2 else Mode.LEGACY
        update_flags(path, components={"files": ComponentChange(mode=mode)}, source="cli", reason=str(i))
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert read_flags(path).flag("files").mode is Mode.NEW


_REFUSED_WRITE = """\
import resource, signal, sys
from pathlib import Path
from feature_flags import ComponentChange, FlagFileError, Mode, update_flags
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
try:
    update_flags(Path(sys.argv[1]), components={"files": ComponentChange(mode=Mode.NEW)}, source="auto-rollback", reason="r")
except FlagFileError as exc:
    print(exc)
"""


def test_a_write_the_disk_refuses_is_a_flag_file_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    # Found by `codeagent chaos` (disk, ENOSPC on the async loop): an automatic rollback's write on a full disk
    # raised a bare OSError inside the routed call and failed the todo with a traceback.
    path = tmp_path / "flags.toml"
    path.write_text(HAND_WRITTEN)
    done = subprocess.run(
        [sys.executable, "-c", _REFUSED_WRITE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == f"{path}: cannot write: File too large"
    assert path.read_text() == HAND_WRITTEN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flags.toml", "flags.toml.lock"]
