"""The campaign's invariants: state files parse, no todo lost, none committed twice, exact contents.

Two levels:

* :func:`quick_check`, after every restart: every state file under ``.agent/``
  parses with the domain's readers; no ``Todo-Id`` trailer appears twice in the
  history; every workload file holds one of its two legal contents (before or
  after its todo), never a mix, never the line twice.
* :func:`final_check`, at the end of a workload: the above, plus every todo
  ``done`` with the commit that carries its trailer, every trailer once, every
  file exactly what the edits say, and the work tree clean.

Each returns a list of problems (empty: the invariants hold); the campaign
counts them and never stops at the first.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from codeagent.config import parse_config
from codeagent.errors import AgentError
from codeagent.jsondoc import parse_document
from codeagent.models import StatusFile, TodoFile, TodoStatus
from codeagent.state_v2 import parse_checkpoint
from codeagent_app.chaos.workload import Workload, git
from feature_flags.loader import FlagFileError, parse_flags

STATE = ".agent"


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        return f"\x00unreadable: {exc}"


def state_file_problems(root: Path) -> list[str]:
    """Every state file under ``.agent/`` that does not parse with the domain's readers."""
    problems: list[str] = []
    state = root / STATE

    def check(rel: str, parse: object) -> None:
        text = _read(root / rel)
        if text is None:
            return
        if text.startswith("\x00unreadable"):
            problems.append(f"{rel}: {text[1:]}")
            return
        try:
            parse(text, rel)  # type: ignore[operator]
        except (AgentError, FlagFileError) as exc:
            problems.append(f"{rel}: {exc}")

    check(f"{STATE}/todos.json", lambda t, s: parse_document(t, TodoFile, s))
    check(f"{STATE}/status.json", lambda t, s: parse_document(t, StatusFile, s))
    check(f"{STATE}/config.json", parse_config)
    check(f"{STATE}/flags.toml", parse_flags)
    for name in ("format.json", "store.json", "workspace.json", "requeue.json", "migrate-journal.json"):
        check(f"{STATE}/{name}", _parse_json_object)
    checkpoints = state / "checkpoints"
    if checkpoints.is_dir():
        for entry in sorted(checkpoints.iterdir()):
            if entry.suffix == ".json" and not entry.name.startswith("."):
                check(f"{STATE}/checkpoints/{entry.name}", parse_checkpoint)
    return problems


def _parse_json_object(text: str, source: str) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AgentError(f"{source}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise AgentError(f"{source}: not a JSON object")


def leftover_temp_files(root: Path) -> list[str]:
    """Temp files of interrupted atomic writes (``.name.xxxx.tmp``) under ``.agent/`` and the work tree."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(found)


def trailer_counts(root: Path) -> Counter[str]:
    """How many commits on HEAD carry each ``Todo-Id`` trailer value."""
    out = git(root, "log", "--format=%x1e%(trailers:key=Todo-Id,valueonly)")
    values = (record.strip() for record in out.split("\x1e")[1:])
    return Counter(v for v in values if v)


def commit_of(root: Path) -> dict[str, str]:
    """Each ``Todo-Id`` trailer value and the sha of the (last) commit carrying it."""
    out = git(root, "log", "--format=%x1e%H%x1f%(trailers:key=Todo-Id,valueonly)")
    found: dict[str, str] = {}
    for record in out.split("\x1e")[1:]:
        sha, _, value = record.partition("\x1f")
        if value.strip():
            found.setdefault(value.strip(), sha.strip())
    return found


def doubled(root: Path) -> list[str]:
    """Todo ids committed more than once."""
    return sorted(t for t, n in trailer_counts(root).items() if n > 1)


def content_problems(root: Path, loads: Sequence[Workload], *, final: bool) -> list[str]:
    """Files holding neither legal content (or, with ``final``, not the after-content)."""
    problems: list[str] = []
    for load in loads:
        for i in load.indexes():
            rel = load.path(i)
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{rel}: unreadable: {exc}")
                continue
            legal = (load.after(i),) if final else (load.before(i), load.after(i))
            if text not in legal:
                problems.append(f"{rel}: unexpected content {text[:80]!r}")
    return problems


def quick_check(root: Path, loads: Sequence[Workload]) -> list[str]:
    """The invariants that must hold at any moment (after every restart)."""
    problems = state_file_problems(root)
    problems += [f"{todo}: committed more than once" for todo in doubled(root)]
    problems += content_problems(root, loads, final=False)
    return problems


def final_check(root: Path, loads: Sequence[Workload], *, allow_failed: bool = False) -> list[str]:
    """Everything :func:`quick_check` checks, plus: every todo done once, exact contents, clean tree.

    With ``allow_failed`` a todo may have ended ``failed`` (with a reason) instead
    of ``done``; its file must then hold its before-content and it has no commit.
    """
    problems = state_file_problems(root)
    counts = trailer_counts(root)
    shas = commit_of(root)
    try:
        status = StatusFile.model_validate_json((root / STATE / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [*problems, f"status.json: {exc}"]
    failed_ok: set[str] = set()
    for load in loads:
        for i in load.indexes():
            todo = load.todo_id(i)
            state = status.todos.get(todo)
            if state is None:
                problems.append(f"{todo}: lost (no status)")
                continue
            if allow_failed and state.status is TodoStatus.FAILED:
                if not state.error:
                    problems.append(f"{todo}: failed without a reason")
                failed_ok.add(todo)
                continue
            if state.status is not TodoStatus.DONE:
                problems.append(f"{todo}: ended {state.status.value} ({state.error})")
                continue
            if counts.get(todo, 0) != 1:
                problems.append(f"{todo}: {counts.get(todo, 0)} commits carry its trailer")
            elif state.commit != shas.get(todo):
                problems.append(f"{todo}: status says commit {state.commit}, history {shas.get(todo)}")
    problems += [f"{t}: committed more than once" for t, n in counts.items() if n > 1]
    for load in loads:
        for i in load.indexes():
            rel = load.path(i)
            want = load.before(i) if load.todo_id(i) in failed_ok else load.after(i)
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{rel}: unreadable: {exc}")
                continue
            if text != want:
                problems.append(f"{rel}: holds {text[:80]!r}, the edits say {want[:80]!r}")
    dirty = [line for line in git(root, "status", "--porcelain").splitlines() if line.strip()]
    problems += [f"work tree not clean: {line}" for line in dirty[:5]]
    return problems


def status_counts(root: Path) -> dict[str, int]:
    """Todos by status in ``status.json`` (``{}`` when it does not parse)."""
    try:
        status = StatusFile.model_validate_json((root / STATE / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(Counter(state.status.value for state in status.todos.values()))


def running_todos(root: Path) -> list[str]:
    """Todos ``status.json`` says are running (a kill landed while they were in flight)."""
    try:
        status = StatusFile.model_validate_json((root / STATE / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return sorted(t for t, s in status.todos.items() if s.status is TodoStatus.RUNNING)
