"""The workspace lock: one holder at a time, and the holder tidies what crashed writers left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest.mock import ANY

import pytest

from legacy.workspace_lock import (
    PROBE_GRACE_S,
    STALE_INDEX_LOCK_S,
    WorkspaceBusy,
    hold_workspace,
    remove_stale_git_locks,
    sweep_stale_temps,
    workspace_holder,
)


def test_a_second_holder_is_refused_and_the_first_is_named(workspace: Path) -> None:
    second = hold_workspace(workspace, "async")
    with hold_workspace(workspace, "legacy"), pytest.raises(WorkspaceBusy, match=f"pid {os.getpid()}"):
        second.__enter__()
    with hold_workspace(workspace, "async"):
        pass


def test_taking_the_workspace_removes_temp_files_of_interrupted_state_writes(workspace: Path) -> None:
    """Chaos campaign finding: every SIGKILL mid-write left a ``.status.json.xxxxxxxx.tmp`` for good."""
    state = workspace / ".agent"
    (state / "checkpoints").mkdir(parents=True)
    left = [
        state / ".status.json.0123abcd.tmp",
        state / ".todos.json.89abcdef.tmp",
        state / "checkpoints" / ".t-0001.json.00ff00ff.tmp",
    ]
    kept = [
        state / "status.json",
        state / ".flags.toml.0123abcd.tmp",  # not a file this sweep knows the writers of
        state / ".todos.json.chaos.tmp",
        state / "checkpoints" / "t-0001.json",
    ]
    for path in left + kept:
        path.write_text("x")
    with hold_workspace(workspace, "legacy"):
        assert [p.exists() for p in left] == [False] * len(left)
        assert [p.exists() for p in kept] == [True] * len(kept)
    assert sweep_stale_temps(workspace) == []


def test_the_sweep_needs_no_state_directory_contents(workspace: Path) -> None:
    (workspace / ".agent").mkdir()
    assert sweep_stale_temps(workspace) == []


def test_taking_the_workspace_removes_an_index_lock_a_killed_git_write_left(workspace: Path) -> None:
    """Chaos campaign finding (crash-async): a SIGKILL during libgit2's index write left ``.git/index.lock``,
    and every later ``git add`` of the workspace failed with "index.lock: File exists" (30 todos lost)."""
    if not (workspace / ".git").is_dir():
        subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    lock = workspace / ".git" / "index.lock"
    lock.write_bytes(b"")
    with hold_workspace(workspace, "async"):
        assert lock.exists()  # the last holder let go cleanly: a fresh lock may be another tool's write, kept
    old = time.time() - STALE_INDEX_LOCK_S - 1
    os.utime(lock, (old, old))
    with hold_workspace(workspace, "async"):
        assert not lock.exists()
    subprocess.run(["git", "-C", str(workspace), "add", "-A"], check=True)
    assert remove_stale_git_locks(workspace) == []  # nothing left to remove


def test_an_index_lock_is_kept_while_a_git_process_works_in_the_workspace(workspace: Path) -> None:
    if not (workspace / ".git").is_dir():
        subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    lock = workspace / ".git" / "index.lock"
    lock.write_bytes(b"")
    # `git var GIT_EDITOR`-style long runner: a git process whose working directory is the workspace.
    busy = subprocess.Popen(["git", "hash-object", "--stdin"], cwd=workspace, stdin=subprocess.PIPE)
    try:
        # Popen may return (vfork) before the child's exec renames it from "python" to "git".
        deadline = time.monotonic() + 30
        while Path(f"/proc/{busy.pid}/comm").read_text().strip() != "git":
            assert time.monotonic() < deadline, "the git child never exec'd"
            time.sleep(0.01)
        assert remove_stale_git_locks(workspace, now=time.time() + 60, holder_died=True) == []
    finally:
        busy.communicate(b"x")
    assert remove_stale_git_locks(workspace, now=time.time() + 60) == [".git/index.lock"]


_HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from legacy.workspace_lock import hold_workspace
with hold_workspace(Path(sys.argv[1]), "async"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_holder_killed_mid_write_leaves_ref_locks_the_next_holder_removes_at_once(workspace: Path) -> None:
    """Chaos campaign finding (crash-async, 1,000 kills): a SIGKILL during libgit2's ref update left
    ``.git/refs/heads/main.lock``; the next life started within a second, kept the young lock, and every
    commit of the workspace failed with "failed to lock file ... main.lock" (132 todos lost)."""
    if not (workspace / ".git").is_dir():
        subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_AND_WAIT, str(workspace)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
    git_dir = workspace / ".git"
    (git_dir / "refs" / "heads").mkdir(parents=True, exist_ok=True)
    left = [git_dir / "index.lock", git_dir / "HEAD.lock", git_dir / "refs" / "heads" / "main.lock"]
    for lock in left:
        lock.write_bytes(b"")  # young: written a moment ago, as by the write the kill interrupts
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    with hold_workspace(workspace, "async"):
        assert [lock.exists() for lock in left] == [False, False, False]
    # This holder let go cleanly: a young lock found next time is kept (it may be another tool's write).
    left[0].write_bytes(b"")
    with hold_workspace(workspace, "async"):
        assert left[0].exists()


def test_someone_asking_who_holds_the_workspace_does_not_make_it_busy(workspace: Path) -> None:
    """Chaos finding (`crash-migrate`): `migrate apply` refused ("held by pid N", a process killed before) because
    it started in the instant another process asked `workspace_holder`, which takes the lock to test it."""
    stop = threading.Event()
    asked = 0

    def ask() -> None:  # a dashboard, `codeagent status`, the campaign's own probe: as fast as it can
        nonlocal asked
        while not stop.is_set():
            workspace_holder(workspace)
            asked += 1

    asker = threading.Thread(target=ask)
    asker.start()
    refused = taken = 0
    deadline = time.monotonic() + 20.0
    try:
        while (taken + refused < 300 or asked < 300) and time.monotonic() < deadline:
            try:
                with hold_workspace(workspace, "migrate"):
                    taken += 1
            except WorkspaceBusy:
                refused += 1
    finally:
        stop.set()
        asker.join()
    assert refused == 0 and taken >= 300 and asked >= 300  # 18 of 300 refused before the grace


def test_a_live_holder_is_still_refused_after_the_grace(workspace: Path) -> None:
    with hold_workspace(workspace, "async"):
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy, match="async loop"), hold_workspace(workspace, "migrate"):
            pass
        assert time.monotonic() - started >= PROBE_GRACE_S
        assert workspace_holder(workspace) == {"pid": os.getpid(), "loop": "async", "since": ANY}
