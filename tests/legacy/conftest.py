"""Fixtures of the legacy suite: real workspaces in tmp_path, real git, the stub LLM over loopback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` for an assertion; identity and config independent of the person running tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="Test",
        GIT_AUTHOR_EMAIL="test@example.invalid",
        GIT_COMMITTER_NAME="Test",
        GIT_COMMITTER_EMAIL="test@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
    )
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


def trailers(root: Path) -> list[str]:
    """The ``Todo-Id`` trailer of every commit on HEAD, newest first (empty string for none)."""
    out = git(root, "log", "--format=%x1e%(trailers:key=Todo-Id,valueonly)")
    return [record.strip() for record in out.split("\x1e")[1:]]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """An empty workspace directory (no git repository yet)."""
    root = tmp_path / "ws"
    root.mkdir()
    return root


@pytest.fixture
def repo(workspace: Path) -> Path:
    """A workspace that is a git repository with one initial commit holding a few files."""
    (workspace / "src").mkdir()
    (workspace / "src" / "calc.py").write_text("def add(a, b):\n    return a + b  # foo\n")
    (workspace / "notes.txt").write_text("first line\n")
    git(workspace, "init", "-q", "-b", "main")
    git(workspace, "add", "-A")
    git(workspace, "commit", "-q", "-m", "initial")
    return workspace


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A HOME whose global git config would break naive commits (signing on, another identity)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Global Person\n\temail = global@example.invalid\n"
        "[commit]\n\tgpgsign = true\n[gpg]\n\tprogram = false\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


@pytest.fixture
def stub() -> Iterator[Any]:
    """A fresh stub LLM server on loopback (no latency, no random faults)."""
    from llm_stub import StubOptions, StubServer

    with StubServer(StubOptions(latency_ms=0, fail_rate=0.0, seed=0, retry_after_s=0.2, hang_s=30)) as server:
        yield server
