"""Subprocesses awaited on a pidfd: output, input, limits, cancellation, on asyncio and uvloop."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from core_async import _compat, _process
from core_async._compat import arun_process

PY = sys.executable
pytestmark = pytest.mark.skipif(not _process.PIDFD, reason="needs pidfds (Linux 5.3+)")


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still a process of ours (a zombie counts: nobody reaped it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def on_uvloop(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def test_large_input_and_output_flow_through_the_pipes() -> None:
    """More than a pipe's buffer each way, both directions at once, so no side can block the other."""
    data = os.urandom(300_000)
    code = "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1]); sys.stderr.write('x' * 100000)"
    done = await arun_process([PY, "-c", code], cwd=".", input_bytes=data)
    assert done.returncode == 0
    assert done.stdout == data[::-1]
    assert done.stderr == b"x" * 100_000


async def test_a_child_that_ignores_its_input_still_finishes() -> None:
    done = await arun_process(
        [PY, "-c", "import sys; sys.stdin.close()"], cwd=".", input_bytes=b"y" * 1_000_000
    )
    assert done.returncode == 0


async def test_signals_are_negative_exit_codes() -> None:
    done = await arun_process([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], cwd=".")
    assert done.returncode == -15


async def test_missing_program_and_missing_directory_raise_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await arun_process(["/no/such/program"], cwd=".")
    with pytest.raises(FileNotFoundError):
        await arun_process([PY, "-c", "pass"], cwd=tmp_path / "gone")


async def test_cancellation_kills_and_reaps_the_child(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(30)"
    task = asyncio.ensure_future(arun_process([PY, "-c", code], cwd="."))
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not _alive(int(pid_file.read_text()))  # killed and reaped: not even a zombie


async def test_time_limit_does_not_wait_for_a_grandchild_holding_the_pipes() -> None:
    """The child is killed at the limit; a grandchild keeping stdout open must not hang the caller."""
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)']); time.sleep(30)"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await arun_process([PY, "-c", code], cwd=".", time_limit=0.5)
    assert time.monotonic() - started < 4


def test_the_same_on_uvloop(tmp_path: Path) -> None:
    async def main() -> tuple[int, bytes, bytes, float]:
        done = await arun_process(
            [PY, "-c", "import sys; print(sys.stdin.read()[::-1])"], cwd=".", input_bytes=b"abc"
        )
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await arun_process([PY, "-c", "import time; time.sleep(30)"], cwd=".", time_limit=0.3)
        return done.returncode, done.stdout, done.stderr, time.monotonic() - started

    returncode, stdout, stderr, waited = on_uvloop(main)
    assert (returncode, stdout, stderr) == (0, b"cba\n", b"")
    assert waited < 4


async def test_without_pidfds_the_loops_own_subprocesses_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = _compat._loop_run_process

    async def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append("loop")
        return await real(*args, **kwargs)

    monkeypatch.setattr(_compat, "PIDFD", False)
    monkeypatch.setattr(_compat, "_loop_run_process", spy)
    code = "import sys; print(sys.stdin.read().upper()); sys.exit(2)"
    done = await arun_process([PY, "-c", code], cwd=".", input_bytes=b"hi")
    assert (done.returncode, done.stdout.strip(), calls) == (2, b"HI", ["loop"])
    with pytest.raises(TimeoutError):
        await arun_process([PY, "-c", "import time; time.sleep(30)"], cwd=".", time_limit=0.3)
