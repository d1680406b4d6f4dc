"""The bundled sample workspace used by ``codeagent demo`` and the benchmarks.

:func:`create_sample_workspace` copies the sample files into a directory, makes
it a git repository with one initial commit, and writes the sample todo list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from codeagent.models import Todo, TodoFile, dump_json

_GIT_ENV = {
    "GIT_AUTHOR_NAME": "Sample",
    "GIT_AUTHOR_EMAIL": "sample@localhost",
    "GIT_COMMITTER_NAME": "Sample",
    "GIT_COMMITTER_EMAIL": "sample@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def sample_todo_specs() -> list[dict[str, object]]:
    """The sample's todos as ``{"text", "files"}`` dicts, in order."""
    text = resources.files(__name__).joinpath("todos.json").read_text(encoding="utf-8")
    specs: list[dict[str, object]] = json.loads(text)
    return specs


def _git(dest: Path, *args: str) -> None:
    env = {**os.environ, **_GIT_ENV}
    subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=dest,
        env=env,
        check=True,
        capture_output=True,
    )


def create_sample_workspace(dest: Path, *, copies: int = 1, todo_prefix: str = "t") -> list[Todo]:
    """Create the sample workspace at ``dest`` (which must be absent or empty).

    ``copies`` repeats the todo list that many times (for load tests); each
    repetition after the first works on its own numbered files so that every
    todo still applies cleanly.
    """
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; pick a new directory for the sample workspace")
    source = resources.files(__name__).joinpath("workspace")
    with resources.as_file(source) as src_dir:
        shutil.copytree(src_dir, dest, dirs_exist_ok=True)
    todos: list[Todo] = []
    specs = sample_todo_specs()
    for copy in range(copies):
        for spec in specs:
            text = str(spec["text"])
            files = [str(f) for f in spec["files"]]  # type: ignore[attr-defined]
            if copy:
                text, files = _renumber(text, files, copy)
            todos.append(Todo(id=f"{todo_prefix}-{len(todos) + 1:04d}", text=text, files=files))
    if copies > 1:
        _add_copies(dest, copies)
    state = dest / ".agent"
    state.mkdir(exist_ok=True)
    (state / "todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
    (dest / ".gitignore").write_text(".agent/\n", encoding="utf-8")
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "Sample workspace")
    return todos


_COPIED = ("CHANGELOG.md", "notes.txt", "README.md", "src/calc.py", "src/greet.py")


def _numbered(path: str, copy: int) -> str:
    stem, dot, ext = path.rpartition(".")
    return f"{stem}_{copy}.{ext}" if dot else f"{path}_{copy}"


def _renumber(text: str, files: list[str], copy: int) -> tuple[str, list[str]]:
    target = text.rsplit(" file ", 1)[-1].split(" ", 1)[0]
    new_target = _numbered(target, copy)
    head, _, tail = text.rpartition(f" file {target}")
    return f"{head} file {new_target}{tail}", [_numbered(f, copy) for f in files]


def _add_copies(dest: Path, copies: int) -> None:
    for copy in range(1, copies):
        for rel in _COPIED:
            (dest / _numbered(rel, copy)).write_bytes((dest / rel).read_bytes())
