"""How to shadow a write without doing it twice: scratch copies and digests.

A write's served path changes the real workspace; its candidate runs against a
scratch directory that starts from the same state. Afterwards both states are
digested (what the write left behind, with timestamps dropped) and compared.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from codeagent.errors import StateFileError
from codeagent.models import StatusFile, TodoFile
from codeagent.paths import check_relative_path
from codeagent.state_v2 import parse_checkpoint

_TIMESTAMPS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})


def without_timestamps(value: Any) -> Any:
    """A model or JSON value with every ``*_at`` timestamp removed (they differ run to run)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k not in _TIMESTAMPS}
    if isinstance(value, list | tuple):
        return [without_timestamps(v) for v in value]
    return value


def _scratch() -> Path:
    return Path(tempfile.mkdtemp(prefix="codeagent-shadow-"))


class StateFilesPlan:
    """Shadow a state-store write: copy the state files, digest them after."""

    def __init__(self, root: Path, relpaths: Sequence[str], digest: Callable[[Path], Any]) -> None:
        self.root = root
        self.relpaths = list(relpaths)
        self.digest = digest

    def prepare(self) -> Path:
        scratch = _scratch()
        for rel in self.relpaths:
            source = self.root / rel
            if source.exists():
                target = scratch / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        return scratch

    def digest_real(self) -> Any:
        return self.digest(self.root)

    def digest_scratch(self, scratch: Path) -> Any:
        return self.digest(scratch)


def _read_doc(path: Path, model: type[BaseModel]) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return without_timestamps(model.model_validate_json(text))
    except ValueError as exc:
        return ("unreadable", str(exc)[:200])


def todos_digest(root: Path) -> Any:
    """The todo list without creation times."""
    return _read_doc(root / ".agent/todos.json", TodoFile)


def status_digest(root: Path) -> Any:
    """The status document without timestamps."""
    return _read_doc(root / ".agent/status.json", StatusFile)


def checkpoint_digest(todo_id: str) -> Callable[[Path], Any]:
    """A digest of one todo's checkpoint read in either format (legacy or v2), without seq or time."""

    def digest(root: Path) -> Any:
        path = root / ".agent/checkpoints" / f"{todo_id}.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return without_timestamps(parse_checkpoint(text, str(path)).to_checkpoint())
        except StateFileError as exc:
            return ("unreadable", str(exc)[:200])

    return digest


class WorkspaceWritePlan:
    """Shadow a workspace file write: the candidate writes into an empty scratch tree."""

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        self.root = root
        self.paths = list(paths)

    def prepare(self) -> Path:
        return _scratch()

    def _digest(self, base: Path) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for path in self.paths:
            try:
                rel = check_relative_path(path)
                out[path] = hashlib.sha256((base / rel).read_bytes()).hexdigest()
            except (OSError, ValueError):
                out[path] = None
        return out

    def digest_real(self) -> Any:
        return self._digest(self.root)

    def digest_scratch(self, scratch: Path) -> Any:
        return self._digest(scratch)


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


class GitCommitPlan:
    """Shadow a commit: a shared clone at HEAD with the same working files, commit there, compare trees."""

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        self.root = root
        self.paths = list(paths)

    def prepare(self) -> Path:
        repo = _scratch()
        if _git(self.root, "rev-parse", "--verify", "-q", "HEAD"):
            subprocess.run(
                ["git", "clone", "-q", "--shared", str(self.root), str(repo)],
                check=True,
                capture_output=True,
                env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1"},
            )
        else:
            _git(repo, "init", "-q")
        for path in self.paths:
            rel = check_relative_path(path)
            source, target = self.root / rel, repo / rel
            if source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            elif target.exists():
                target.unlink()
        return repo

    def _digest(self, repo: Path) -> Any:
        return {
            "tree": _git(repo, "rev-parse", "HEAD^{tree}"),
            "message": _git(repo, "log", "-1", "--format=%B"),
            "parents": len(_git(repo, "log", "-1", "--format=%P").split()),
        }

    def digest_real(self) -> Any:
        return self._digest(self.root)

    def digest_scratch(self, scratch: Path) -> Any:
        return self._digest(scratch)
