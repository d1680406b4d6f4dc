"""The entry points the CLI wires (run_async, serve_async, python -m core_async.kernel) and the loop choice."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from core_async.kernel import __main__ as kernel_main
from core_async.kernel.entry import ensure_logging, run_async, serve_async
from core_async.kernel.loop_policy import choose_loop
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


def test_module_entry_runs_and_reports_bad_workspaces(
    tmp_path: Path, stub_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 2)
    argv = ["run", "-w", str(root), "--until-idle", "--llm-url", stub_url, "--no-uvloop", "--llm-slots", "2"]
    assert kernel_main.main(argv) == 0
    assert "processed 2 todo(s)" in capsys.readouterr().out
    assert kernel_main.main(["run", "-w", str(tmp_path / "missing"), "--until-idle"]) == 2
    assert "workspace directory does not exist" in capsys.readouterr().err


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
    serve_async([root], host="127.0.0.1", port=port, llm_url=stub_url, grace_seconds=2.0)
    helper.join()
    assert seen["health"] == {"status": "ok", "loop": "async"}
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed on the way out
