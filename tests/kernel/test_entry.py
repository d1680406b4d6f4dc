"""The kernel's entry points the application calls (run_async, serve_async) and the loop choice."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from codeagent.errors import ConfigError
from core_async.kernel import loop_policy
from core_async.kernel.entry import ensure_logging, run_async, serve_async
from core_async.kernel.loop_policy import choose_loop
from core_async.kernel.server_core import KernelOptions
from tests.kernel.workspaces import make_workspace, trailers


def test_run_async_on_uvloop_says_so_and_processes_everything(
    tmp_path: Path, stub_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 3)
    with caplog.at_level(logging.INFO, logger="codeagent.kernel.loop"):
        assert run_async([root], llm_url=stub_url, until_idle=True) == 3
    lines = [r.getMessage() for r in caplog.records if r.name == "codeagent.kernel.loop"]
    assert len(lines) == 1 and lines[0].startswith("event loop: uvloop")
    assert sorted(trailers(root)) == ["t-0001", "t-0002", "t-0003"]


def test_the_fallback_loop_is_logged_with_its_reason(
    tmp_path: Path, stub_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 1)
    with caplog.at_level(logging.INFO, logger="codeagent.kernel.loop"):
        assert run_async([root], llm_url=stub_url, until_idle=True, use_uvloop=False) == 1
    assert "event loop: asyncio default loop (fallback: uvloop not requested)" in caplog.text
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    _, name, reason = choose_loop(True)
    assert name == "asyncio" and "uvloop is not available" in reason


def test_ensure_logging_leaves_a_configured_application_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    ensure_logging()
    assert [h.get_name() for h in root.handlers] == ["codeagent-kernel"]
    ensure_logging()
    assert len(root.handlers) == 1


def test_run_async_reports_a_missing_workspace_and_a_missing_endpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workspace directory does not exist"):
        run_async([tmp_path / "missing"], llm_url=None, until_idle=True)
    root = tmp_path / "ws"
    make_workspace(root, 1)
    # No llm.base_url, no --llm-url and no fallback endpoint injected: refused, naming the key.
    with pytest.raises(ConfigError, match=r"llm\.base_url"):
        run_async([root], llm_url=None, until_idle=True)


def test_the_fallback_endpoint_is_entered_once_and_left_at_close(tmp_path: Path, stub_url: str) -> None:
    import contextlib
    from collections.abc import AsyncIterator

    calls: list[str] = []

    @contextlib.asynccontextmanager
    async def endpoint() -> AsyncIterator[str]:
        calls.append("enter")
        try:
            yield stub_url
        finally:
            calls.append("exit")

    roots = []
    for name in ("a", "b"):
        roots.append(tmp_path / name)
        make_workspace(roots[-1], 2)
    assert run_async(roots, llm_url=None, until_idle=True, options=KernelOptions(fallback_llm=endpoint)) == 4
    assert calls == ["enter", "exit"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_async_answers_then_stops_on_sigterm(tmp_path: Path, stub_url: str) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 2)
    port = free_port()
    seen: dict[str, object] = {}

    def client() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                seen["health"] = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)  # the kernel's handler turns it into a graceful stop

    helper = threading.Thread(target=client)
    helper.start()
    serve_async(
        [root], llm_url=stub_url, options=KernelOptions(host="127.0.0.1", port=port, grace_seconds=2.0)
    )
    helper.join()
    assert seen["health"] == {"status": "ok", "loop": "async"}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed on the way out


def test_the_shipped_processes_tune_the_collector_and_a_library_caller_keeps_its_own() -> None:
    probe = (
        "import gc, json, sys\n"
        "from core_async.kernel import loop_policy\n"
        "before = gc.get_threshold()\n"
        "loop_policy.freeze_started_heap()\n"  # not tuned: no effect
        "untouched = gc.get_freeze_count()\n"
        "loop_policy.tune_gc()\n"
        "frozen = gc.get_freeze_count()\n"
        "loop_policy.freeze_started_heap()\n"
        "print(json.dumps([before, untouched, gc.get_threshold(), frozen > 0]))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    before, untouched, after, frozen = json.loads(out)
    assert before[0] == 700 and untouched == 0
    assert after == [loop_policy.GEN0_THRESHOLD, before[1], before[2]] and frozen
    assert gc.get_threshold()[0] != loop_policy.GEN0_THRESHOLD  # this test process is left alone


def test_the_console_script_and_the_worker_tune_the_collector() -> None:
    probe = (
        "import gc, sys\n"
        "from unittest import mock\n"
        "import codeagent_app.cli as cli\n"
        "with mock.patch('codeagent_app.cli_errors.run', lambda app, name: print(gc.get_threshold()[0])):\n"
        "    cli.main()\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert int(out) == loop_policy.GEN0_THRESHOLD
    worker = (
        "import gc, runpy, sys\n"
        "sys.argv = ['worker']\n"  # no spec: it prints its usage and exits 2, after the tuning
        "try:\n"
        "    runpy.run_module('codeagent_app.worker', run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    print(exc.code, gc.get_threshold()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", worker], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2", str(loop_policy.GEN0_THRESHOLD)]
