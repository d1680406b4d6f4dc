"""SIGTERM on a real serving process with 100 todos in flight: exit 0 within the grace period, then resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from llm_stub import StubOptions, StubServer
from tests.kernel.workspaces import make_workspace, trailers

GRACE = 2.0
#: Slack for a loaded, shared machine: interpreter exit and fsyncs on top of the grace period.
MARGIN = 3.0
REPO = Path(__file__).resolve().parents[2]


def kernel_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "codeagent_app.cli", *args, "--loop", "async"]


def wait_for_url(log_path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(
            r"codeagent: API listening on (http://[0-9.:]+)", log_path.read_text(errors="replace")
        )
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"the kernel exited early:\n{log_path.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"the kernel did not start:\n{log_path.read_text()}")


def statuses(root: Path) -> Counter[str]:
    doc = json.loads((root / ".agent/status.json").read_text(encoding="utf-8"))
    return Counter(state["status"] for state in doc["todos"].values())


@pytest.mark.slow
def test_sigterm_drains_interrupts_and_a_restart_finishes_everything_once(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    make_workspace(root, 100)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CODEAGENT_LOG_FORMAT": "json"}
    log_path = tmp_path / "serve.log"
    with StubServer(StubOptions(latency_ms=200)) as stub, log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            kernel_command(
                "serve",
                "-w",
                str(root),
                "--port",
                "0",
                "--llm-url",
                stub.url,
                "--grace",
                str(GRACE),
                "--max-concurrency",
                "100",
                "--per-workspace",
                "100",
                "--llm-slots",
                "5",
            ),
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            url = wait_for_url(log_path, proc)
            with httpx.Client(base_url=url, timeout=10) as client:
                while True:  # all 100 are in flight (5 at a time in the LLM); stop once some are done
                    todos = client.get("/v1/todos").json()["todos"]
                    states = Counter(t["status"] for t in todos)
                    if states["done"] >= 10:
                        break
                    time.sleep(0.05)
                assert states["running"] + states["done"] >= 80, states
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=GRACE + 30)
            elapsed = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    log_text = log_path.read_text(errors="replace")
    assert code == 0, log_text
    assert elapsed <= GRACE + MARGIN, f"took {elapsed:.2f}s to stop"
    after_stop = statuses(root)
    assert set(after_stop) <= {"done", "interrupted"}, after_stop  # nothing left "running", nothing failed
    assert after_stop["interrupted"] >= 1, after_stop  # 5 LLM slots x 200 ms cannot finish 90 todos in time
    interrupted_ids = [
        tid
        for tid, st in json.loads((root / ".agent/status.json").read_text())["todos"].items()
        if st["status"] == "interrupted"
    ]
    assert all((root / f".agent/checkpoints/{tid}.json").exists() for tid in interrupted_ids)
    agent = json.loads((root / ".agent/status.json").read_text())["agent"]
    assert agent["state"] == "stopped" and agent["loop"] == "async"
    assert '"message": "received SIGTERM' in log_text  # JSON lines when asked for

    with StubServer(StubOptions(latency_ms=5)) as stub:
        rerun = subprocess.run(
            kernel_command("run", "-w", str(root), "--until-idle", "--llm-url", stub.url, "--no-uvloop"),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert rerun.returncode == 0, rerun.stderr
    assert statuses(root) == Counter({"done": 100})
    log = trailers(root)
    assert len(log) == len(set(log)) == 100  # every todo committed, none twice
    for i in (0, 42, 99):
        assert (root / f"f{i}.txt").read_text() == f"file {i}\nline {i}\n"
