"""``codeagent serve`` as a real process (either loop) on a demo workspace, for the dashboard's tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from codeagent_app.sample import create_sample_workspace
from feature_flags.mismatches import Mismatch, MismatchLog

REPO = Path(__file__).resolve().parents[2]
#: The committed A/B report: what the dashboard's A/B view shows in the tests.
BENCH_DIR = REPO / "docs" / "ab"


def demo_workspace(root: Path, *, token: str | None = None, hold_todos: bool = False) -> Path:
    """The sample workspace (12 todos); ``hold_todos`` keeps its list aside (see :func:`release_todos`)."""
    create_sample_workspace(root)
    if token is not None:
        (root / ".agent" / "config.json").write_text(json.dumps({"api": {"token": token}}), encoding="utf-8")
    if hold_todos:
        os.replace(root / ".agent" / "todos.json", root / ".agent" / "todos.held.json")
    return root


def release_todos(root: Path) -> None:
    """Put the held todo list in place at once (the loop sees 12 new todos)."""
    os.replace(root / ".agent" / "todos.held.json", root / ".agent" / "todos.json")


def plant_mismatch(root: Path, component: str = "files") -> None:
    """One shadow mismatch, written as the bridge writes them (``feature_flags.mismatches``)."""
    log = MismatchLog(root / ".agent" / "shadow-mismatches.jsonl")
    log.record(
        Mismatch(
            component=component,
            operation="read_text",
            todo_id="t-0003",
            served="legacy",
            legacy={"path": "src/calc.py", "text": "def add(a, b):\n    return a + b\n"},
            new={"path": "src/calc.py", "text": "def add(a, b):\n    return sum((a, b))\n"},
            legacy_ms=1.25,
            new_ms=1.5,
        )
    )
    log.close()


@contextmanager
def serving(
    loop: str, roots: list[Path], llm_url: str, *, log: Path, extra: tuple[str, ...] = ()
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``codeagent serve --loop LOOP`` on a free port; yields the process and the API's URL."""
    workspaces = [arg for root in roots for arg in ("-w", str(root))]
    env = {**os.environ, "CODEAGENT_BENCH_DIR": str(BENCH_DIR)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeagent_app.cli", "serve", "--loop", loop, *workspaces,
             "--port", "0", "--llm-url", llm_url, "--grace", "5", *extra],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                found = re.search(r"API listening on (http://[0-9.:]+)", log.read_text(errors="replace"))
                if found:
                    break
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            yield proc, found.group(1)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for(check: Callable[[], Any], within: float, what: str) -> Any:
    """Poll ``check`` until it returns something true (and return it)."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
