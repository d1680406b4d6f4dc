"""Workspaces for the campaign, and what their files must hold once every todo is done.

A workload is ``n`` small todos, each appending one line to a file of its own
(``append a line "line i" to file f<i>.txt``, which the stub's bundled rules
answer with one SEARCH/REPLACE block). Every file therefore has exactly two
legal contents: before its todo (``file i``) and after it (``file i`` then
``line i``, once). Anything else (a doubled line, a half write, a stray byte) is
a defect, and it can be checked at any moment, not only at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codeagent.models import Todo, TodoFile, dump_json
from feature_flags.model import COMPONENTS

#: The identity of the campaign's own git commands (the loops commit with their configured one).
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Chaos",
    "GIT_AUTHOR_EMAIL": "chaos@localhost",
    "GIT_COMMITTER_NAME": "Chaos",
    "GIT_COMMITTER_EMAIL": "chaos@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(root: Path, *args: str, check: bool = True) -> str:
    """Run git in ``root`` (the campaign's identity, no global config quirks); its stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_ENV)
    done = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )
    return done.stdout


@dataclass(frozen=True)
class Workload:
    """``count`` append todos ``<prefix>-0001 ...``, each on its own file ``<stem><i>.txt``."""

    count: int
    prefix: str = "t"
    stem: str = "f"
    start: int = 0

    def todo_id(self, i: int) -> str:
        """The id of the ``i``-th todo (0-based, counted from ``start``)."""
        return f"{self.prefix}-{i + 1:05d}"

    def path(self, i: int) -> str:
        """The file the ``i``-th todo appends to."""
        return f"{self.stem}{i}.txt"

    def indexes(self) -> range:
        """The todos' indexes."""
        return range(self.start, self.start + self.count)

    def todos(self) -> list[Todo]:
        """The todo list."""
        return [
            Todo(
                id=self.todo_id(i),
                text=f'append a line "line {i}" to file {self.path(i)}',
                files=[self.path(i)],
            )
            for i in self.indexes()
        ]

    def before(self, i: int) -> str:
        """The content of the ``i``-th file before its todo."""
        return f"file {i}\n"

    def after(self, i: int) -> str:
        """The content of the ``i``-th file once its todo is done: the line appended, once."""
        return f"file {i}\nline {i}\n"

    def ids(self) -> list[str]:
        """Every todo id, in list order."""
        return [self.todo_id(i) for i in self.indexes()]


def fast_config(**llm: Any) -> dict[str, Any]:
    """A config that makes one todo cheap: short polls, LLM settings as given."""
    return {"poll_interval": 0.05, "llm": dict(llm)} if llm else {"poll_interval": 0.05}


def new_path_flags() -> str:
    """The flag file of the async targets: the async loop with every component on the new path.

    Without it the async loop routes every component to the legacy code (the flags' default), and a
    campaign against "the async core" would exercise the legacy components in threads.
    """
    lines = ["version = 1", 'loop = "async"', "fallback_to_legacy = false", ""]
    for component in COMPONENTS:
        lines += [f"[components.{component}]", 'mode = "new"', ""]
    return "\n".join(lines)


def make_workspace(
    root: Path,
    workloads: Sequence[Workload],
    *,
    config: dict[str, Any] | None = None,
    flags: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> None:
    """A git workspace at ``root`` holding the workloads' files and todos, one initial commit.

    ``.agent/`` is ignored by git (as ``codeagent demo`` does), so the state never
    shows in ``git status``.
    """
    root.mkdir(parents=True, exist_ok=True)
    todos: list[Todo] = []
    for load in workloads:
        for i in load.indexes():
            (root / load.path(i)).write_text(load.before(i), encoding="utf-8")
        todos += load.todos()
    for rel, text in (extra_files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    state = root / ".agent"
    state.mkdir(exist_ok=True)
    (state / "todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
    (state / "config.json").write_text(json.dumps(config or fast_config(), indent=2) + "\n", encoding="utf-8")
    if flags is not None:
        (state / "flags.toml").write_text(flags, encoding="utf-8")
    (root / ".gitignore").write_text(".agent/\n", encoding="utf-8")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")


def add_todos(root: Path, todos: Sequence[Todo]) -> None:
    """Append todos to the list the way ``codeagent todo add`` does (a temp file renamed over it)."""
    path = root / ".agent" / "todos.json"
    current = TodoFile.model_validate_json(path.read_text(encoding="utf-8"))
    tmp = path.with_name(f".todos.json.chaos.{os.getpid()}.tmp")
    tmp.write_text(dump_json(TodoFile(todos=[*current.todos, *todos])), encoding="utf-8")
    os.replace(tmp, path)
