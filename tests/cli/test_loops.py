"""Choosing the loop (``--loop`` or the flag file), hot flag flips under load, and the legacy fallback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from codeagent.models import Todo, TodoFile, dump_json
from codeagent_app import runner
from codeagent_app.sample import create_sample_workspace
from feature_flags import ComponentChange, Mode, read_entries, update_flags
from llm_stub import StubOptions, StubServer

CLI = [sys.executable, "-m", "codeagent_app.cli"]


@pytest.fixture(scope="module")
def slow_stub() -> Iterator[StubServer]:
    with StubServer(StubOptions(latency_ms=150)) as stub:
        yield stub


def _status(root: Path) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads((root / ".agent/status.json").read_text())["todos"]
    return data


def _trailers(root: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--format=%(trailers:key=Todo-Id,valueonly)"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_the_flag_file_picks_the_loop(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    create_sample_workspace(root)
    update_flags(root / ".agent/flags.toml", loop="async", source="cli", reason="try async")
    done = subprocess.run(
        [*CLI, "run", "-w", str(root), "--until-idle"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    status = json.loads((root / ".agent/status.json").read_text())
    assert status["agent"]["loop"] == "async"
    assert {s["status"] for s in status["todos"].values()} == {"done"}
    assert sorted(_trailers(root)) == sorted(status["todos"])


def test_run_async_over_several_workspaces(tmp_path: Path, slow_stub: StubServer) -> None:
    roots = [tmp_path / f"ws{i}" for i in range(3)]
    for root in roots:
        create_sample_workspace(root)
    args = [*CLI, "run", "--loop", "async", "--until-idle", "--llm-url", slow_stub.url]
    for root in roots:
        args += ["--workspace", str(root)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "processed 36 todo(s)" in done.stdout
    for root in roots:
        assert {s["status"] for s in _status(root).values()} == {"done"}
        assert len(_trailers(root)) == 12
    legacy = subprocess.run(
        [*CLI, "run", "--loop", "legacy", "--until-idle", "-w", str(roots[0]), "-w", str(roots[1])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert legacy.returncode == 2
    assert "the legacy loop serves one workspace" in legacy.stderr


def _hundred_todos(root: Path) -> None:
    create_sample_workspace(root)
    for i in range(100):
        (root / f"f{i:03d}.txt").write_text(f"file {i}\n")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, capture_output=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "files"],
        cwd=root,
        check=True,
        capture_output=True,
    )
    todos = [
        Todo(
            id=f"t-{i + 1:04d}",
            text=f'append a line "line {i}" to file f{i:03d}.txt',
            files=[f"f{i:03d}.txt"],
        )
        for i in range(100)
    ]
    (root / ".agent/todos.json").write_text(dump_json(TodoFile(todos=todos)))


def test_a_flag_flip_under_load_reroutes_within_a_second_and_fails_nothing(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    _hundred_todos(root)
    with StubServer(StubOptions(latency_ms=400)) as stub:
        proc = subprocess.Popen(
            [*CLI, "run", "--loop", "async", "--until-idle", "-w", str(root), "--llm-url", stub.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status_file = root / ".agent/status.json"
                if (
                    status_file.exists()
                    and sum(s.get("status") == "done" for s in _status(root).values()) >= 5
                ):
                    break
                time.sleep(0.05)
            flipped_at = datetime.now().astimezone()
            update_flags(
                root / ".agent/flags.toml",
                components={"checkpoints": ComponentChange(mode=Mode.NEW)},
                source="cli",
                reason="flip under load",
            )
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    status = _status(root)
    assert len(status) == 100
    assert {s["status"] for s in status.values()} == {"done"}, [
        s for s in status.values() if s["status"] != "done"
    ]
    assert len(_trailers(root)) == 100
    late = early = 0
    for todo_id, state in status.items():
        checkpoint = json.loads((root / f".agent/checkpoints/{todo_id}.json").read_text())
        finished = datetime.fromisoformat(str(state["finished_at"]).replace("Z", "+00:00"))
        seconds_after_flip = (finished - flipped_at).total_seconds()
        if seconds_after_flip > 1.0:
            late += 1
            assert checkpoint.get("schema_version") == 2, (todo_id, seconds_after_flip)
        elif seconds_after_flip < 0:
            early += 1
            assert "schema_version" not in checkpoint, todo_id
    assert early >= 5
    assert late >= 10


def test_async_failure_falls_back_to_legacy_and_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core_async.kernel.entry as entry

    root = tmp_path / "ws"
    create_sample_workspace(root)
    with StubServer() as stub:

        def broken(*args: object, **kwargs: object) -> int:
            raise RuntimeError("event loop exploded")

        monkeypatch.setattr(entry, "run_async", broken)
        processed = runner.run_workspace(root, llm_url=stub.url, until_idle=True, loop="async")
    assert processed == 12
    status = json.loads((root / ".agent/status.json").read_text())
    assert status["agent"]["loop"] == "legacy"
    assert {s["status"] for s in status["todos"].values()} == {"done"}
    entry_ = read_entries(root / ".agent/flags.toml")[-1]
    assert entry_.source == "fallback"
    assert "event loop exploded" in entry_.reason


def test_fallback_can_be_forbidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core_async.kernel.entry as entry

    root = tmp_path / "ws"
    create_sample_workspace(root)
    (root / ".agent/flags.toml").write_text('version = 1\nloop = "async"\nfallback_to_legacy = false\n')

    def broken(*args: object, **kwargs: object) -> int:
        raise RuntimeError("no loop today")

    monkeypatch.setattr(entry, "run_async", broken)
    with pytest.raises(RuntimeError, match="no loop today"):
        runner.run_workspace(root, llm_url="http://127.0.0.1:9/v1", until_idle=True)
    assert not (root / ".agent/status.json").exists()


@pytest.mark.parametrize("loop", ["legacy", "async"])
def test_malformed_flag_files_never_stop_a_running_loop(tmp_path: Path, loop: str) -> None:
    from tests.feature_flags.test_loader import CORPUS

    root = tmp_path / "ws"
    _hundred_todos(root)
    flags_file = root / ".agent/flags.toml"
    update_flags(
        flags_file, components={"checkpoints": ComponentChange(mode=Mode.NEW)}, source="cli", reason="good"
    )
    with StubServer(StubOptions(latency_ms=20)) as stub:
        proc = subprocess.Popen(
            [*CLI, "run", "--loop", loop, "--until-idle", "-w", str(root), "--llm-url", stub.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the loop has read the good flags and is working
                if (root / ".agent/status.json").exists() and any(
                    s.get("status") == "done" for s in _status(root).values()
                ):
                    break
                time.sleep(0.02)
            bad_files = [text for _, text, *_ in CORPUS] + ["\x00\x01 binary junk \xff"]
            for text in bad_files:
                flags_file.write_text(text, encoding="utf-8", errors="surrogateescape")
                time.sleep(0.1)
            _out, err = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert "flag file rejected, keeping the last good flags" in err or "keeping the last good" in err
    status = _status(root)
    assert {s["status"] for s in status.values()} == {"done"}
    assert len(_trailers(root)) == 100
    # The last good flags (checkpoints on the new path) stayed in force throughout.
    for todo_id in status:
        checkpoint = json.loads((root / f".agent/checkpoints/{todo_id}.json").read_text())
        assert checkpoint.get("schema_version") == 2, todo_id
