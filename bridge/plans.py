"""How to shadow a call without doing its side effect twice: snapshots, scratch copies and digests.

A plan names the state an operation reads or writes. The dispatcher takes a
snapshot of it into a scratch directory, runs implementations there, digests
what each left behind (timestamps dropped) and compares. See
``bridge/_async/dispatch.py`` for which calls use which kind of plan.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from codeagent.errors import StateFileError
from codeagent.models import StatusFile, TodoFile
from codeagent.paths import STATUS_RELPATH, TODOS_RELPATH, check_relative_path, checkpoint_relpath
from codeagent.state_v2 import parse_checkpoint

_TIMESTAMPS = frozenset({"created_at", "updated_at", "started_at", "finished_at"})


class ShadowPlan(Protocol):
    """The state one operation touches, and how to copy and digest it."""

    #: The live workspace.
    root: Path
    #: True: both implementations run on copies of one snapshot. False: the served run on the
    #: live workspace is compared with the candidate's on a snapshot (the caller keeps the live
    #: state still meanwhile, as the git writer lock does for a commit).
    same_base: bool

    def snapshot(self) -> Path:
        """A new scratch directory holding the state the operation starts from."""
        ...

    def copy(self, base: Path) -> Path:
        """A second scratch directory holding what ``base`` holds."""
        ...

    def digest(self, where: Path) -> Any:
        """What the operation left in ``where`` (the live root or a scratch directory)."""
        ...


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


def _copy_tree(base: Path) -> Path:
    other = _scratch()
    shutil.copytree(base, other, dirs_exist_ok=True)
    return other


class StateFilesPlan:
    """State files under ``.agent/``: copied into the snapshot, digested after."""

    same_base = True

    def __init__(self, root: Path, relpaths: Sequence[str], digest: Callable[[Path], Any]) -> None:
        self.root = root
        self.relpaths = list(relpaths)
        self._digest = digest

    def snapshot(self) -> Path:
        scratch = _scratch()
        for rel in self.relpaths:
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(self.root / rel, target)
            except FileNotFoundError:
                continue
        return scratch

    def copy(self, base: Path) -> Path:
        return _copy_tree(base)

    def digest(self, where: Path) -> Any:
        return self._digest(where)


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
    return _read_doc(root / TODOS_RELPATH, TodoFile)


def status_digest(root: Path) -> Any:
    """The status document without timestamps."""
    return _read_doc(root / STATUS_RELPATH, StatusFile)


def checkpoint_digest(todo_id: str) -> Callable[[Path], Any]:
    """A digest of one todo's checkpoint read in either format (legacy or v2), without seq or time."""

    def digest(root: Path) -> Any:
        path = root / checkpoint_relpath(todo_id)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return without_timestamps(parse_checkpoint(text, str(path)).to_checkpoint())
        except StateFileError as exc:
            return ("unreadable", str(exc)[:200])

    return digest


def todos_plan(root: Path) -> StateFilesPlan:
    """The todo list."""
    return StateFilesPlan(root, [TODOS_RELPATH], todos_digest)


def status_plan(root: Path) -> StateFilesPlan:
    """The status document."""
    return StateFilesPlan(root, [STATUS_RELPATH], status_digest)


def checkpoint_plan(root: Path, todo_id: str) -> StateFilesPlan:
    """One todo's checkpoint file."""
    return StateFilesPlan(root, [checkpoint_relpath(todo_id)], checkpoint_digest(todo_id))


class WorkspaceWritePlan:
    """Workspace files being written: both implementations write into empty trees; contents compared."""

    same_base = True

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        self.root = root
        self.paths = list(paths)

    def snapshot(self) -> Path:
        return _scratch()

    def copy(self, base: Path) -> Path:
        return _copy_tree(base)

    def digest(self, where: Path) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for path in self.paths:
            try:
                rel = check_relative_path(path)
                out[path] = hashlib.sha256((where / rel).read_bytes()).hexdigest()
            except (OSError, ValueError):
                out[path] = None
        return out


def _git_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    return env


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=_git_env(), capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


class GitCommitPlan:
    """A commit: a shared clone at HEAD with the same working files; trees and messages compared.

    Not same-base: cloning twice per commit would double its cost, and the
    repository's single writer keeps the live HEAD still until the served
    commit's digest is taken.
    """

    same_base = False

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        self.root = root
        self.paths = list(paths)

    def snapshot(self) -> Path:
        repo = _scratch()
        if _git(self.root, "rev-parse", "--verify", "-q", "HEAD"):
            subprocess.run(
                ["git", "clone", "-q", "--shared", str(self.root), str(repo)],
                check=True,
                capture_output=True,
                env=_git_env(),
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

    def copy(self, base: Path) -> Path:
        return _copy_tree(base)

    def digest(self, where: Path) -> Any:
        return {
            "tree": _git(where, "rev-parse", "HEAD^{tree}"),
            "message": _git(where, "log", "-1", "--format=%B"),
            "parents": len(_git(where, "log", "-1", "--format=%P").split()),
        }
