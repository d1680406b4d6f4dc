"""The command line as a new user runs it: real processes, the embedded stub, real git."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from codeagent_app.sample import create_sample_workspace, sample_todo_specs
from legacy.workspace_lock import hold_workspace

CLI = [sys.executable, "-m", "codeagent_app.cli"]


def _run(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


def _trailers(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--format=%(trailers:key=Todo-Id,valueonly)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def test_demo_finishes_every_sample_todo_with_one_commit_each(tmp_path: Path) -> None:
    ws = tmp_path / "demo"
    result = _run("demo", "--workspace", str(ws))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(sample_todo_specs())
    assert f"{count}/{count} todos done" in result.stdout
    status = json.loads((ws / ".agent" / "status.json").read_text())
    assert {s["status"] for s in status["todos"].values()} == {"done"}
    trailers = _trailers(ws)
    assert sorted(trailers) == [f"t-{i:04d}" for i in range(1, count + 1)]
    assert "- Added a changelog" in (ws / "CHANGELOG.md").read_text()
    assert (ws / "notes.txt").read_text().endswith("Remember to run the tests.\nAsk before deleting files.\n")


def test_todo_add_then_run_until_idle_with_the_embedded_stub(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    (ws / ".agent" / "todos.json").write_text('{"version": 1, "todos": []}\n')
    added = _run(
        "todo",
        "add",
        "--workspace",
        str(ws),
        'append a line "from the CLI" to file notes.txt',
        "--file",
        "notes.txt",
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "t-0001"
    result = _run("run", "--workspace", str(ws), "--until-idle")
    assert result.returncode == 0, result.stderr
    assert "using the embedded stub LLM" in result.stderr
    assert "processed 1 todo(s)" in result.stdout
    assert (ws / "notes.txt").read_text().endswith("from the CLI\n")
    assert _trailers(ws) == ["t-0001"]


def test_bad_input_exits_non_zero_naming_the_file_and_field(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    (ws / ".agent" / "config.json").write_text('{\n  "poll_interval": "soon"\n}\n')
    result = _run("run", "--workspace", str(ws), "--until-idle")
    assert result.returncode == 2
    assert ".agent/config.json:2: poll_interval" in result.stderr
    missing = _run("run", "--workspace", str(tmp_path / "nope"), "--until-idle")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    refused = _run("todo", "add", "--workspace", str(ws), "x", "--file", "../escape.txt")
    assert refused.returncode == 2
    assert "'..' would leave the workspace" in refused.stderr


def test_a_second_loop_on_the_same_workspace_is_refused(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    with hold_workspace(ws.resolve(), "legacy"):
        result = _run("run", "--workspace", str(ws), "--until-idle")
    assert result.returncode == 2
    assert f"is held by pid {os.getpid()} (legacy loop)" in result.stderr


def test_serve_answers_the_api_and_stops_on_sigterm(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    create_sample_workspace(ws)
    proc = subprocess.Popen(
        [*CLI, "serve", "--workspace", str(ws), "--port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not url:
            line = proc.stderr.readline()
            if "API listening on" in line:
                url = line.rsplit(" ", 1)[-1].strip()
        assert url, "serve never printed its URL"
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/health").json()["status"] == "ok"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                todos = client.get("/todos").json()["todos"]
                if all(t["status"] == "done" for t in todos):
                    break
                time.sleep(0.2)
            assert all(t["status"] == "done" for t in todos)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_llm_stub_command_holds_completions_until_n_are_in_flight() -> None:
    """``codeagent llm-stub --hold-until-in-flight N`` (the stub's own ``python -m llm_stub`` had it; the
    shipped command did not): one request waits, the second releases both."""
    proc = subprocess.Popen(
        [*CLI, "llm-stub", "--port", "0", "--hold-until-in-flight", "2", "--model", "held-model"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split("listening on", 1)[1].strip()
        body = {"model": "held-model", "messages": [{"role": "user", "content": "x"}]}
        with httpx.Client(base_url=url, timeout=30) as client:
            assert [m["id"] for m in client.get("/models").json()["data"]] == ["held-model"]
            with pytest.raises(httpx.ReadTimeout):  # alone: held
                client.post("/chat/completions", json=body, timeout=1.0)
            with ThreadPoolExecutor(2) as pool:
                answers = list(pool.map(lambda _: client.post("/chat/completions", json=body), range(2)))
        assert [a.status_code for a in answers] == [200, 200]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
