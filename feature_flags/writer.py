"""Change the flag file the way a careful person would: keep their comments, validate, swap atomically.

Every write goes through :func:`update_flags`: read the current text, edit it
with tomlkit (comments and layout survive), validate the result with the same
parser the watcher uses, write it to a temp file in the same directory, fsync,
``os.replace``, fsync the directory, then append one audit entry. An flock on
a lock file beside the flag file serialises writers across processes (the
CLI, the API and an automatic rollback may race).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import Table

from feature_flags.audit import AuditEntry, Change, append_entry
from feature_flags.loader import FlagFileError, parse_flags
from feature_flags.model import COMPONENTS, FlagSet, Mode

TEMPLATE = """\
# Code Agent feature flags. Edit freely: the running agent reloads this file on save,
# and keeps the last good version if an edit is invalid (`codeagent flags show` says why).
version = 1

# Which loop runs: "legacy" (the synchronous while-True loop) or "async" (the async core).
loop = "legacy"
# When the async loop cannot start or dies, fall back to the legacy loop on the same workspace.
fallback_to_legacy = true

# Automatic rollback of a component's new path, over a sliding window of its calls.
[rollback]
enabled = true
max_error_rate = 0.05
max_mismatch_rate = 0.0
min_samples = 20
window = 200

# One table per component: mode = "legacy" | "new" | "shadow" | "canary".
# shadow runs both paths, serves `serve`, compares; canary sends `percent` of todos to the new path.
[components]
"""


@dataclass(frozen=True, slots=True)
class ComponentChange:
    """What to set on one component; ``None`` leaves a field as it is."""

    mode: Mode | None = None
    percent: float | None = None
    serve: str | None = None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _component_table(doc: tomlkit.TOMLDocument, name: str) -> Table:
    components = doc.get("components")
    if not isinstance(components, Table):
        components = tomlkit.table(is_super_table=True)
        doc["components"] = components
    table = components.get(name)
    if not isinstance(table, Table):
        table = tomlkit.table()
        table["mode"] = "legacy"
        components[name] = table
    return table


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


class FlagFileInvalid(FlagFileError):
    """The flag file as it stands is invalid (someone is mid-edit): no change is written over it."""


def update_flags(
    path: Path,
    *,
    components: Mapping[str, ComponentChange] | None = None,
    loop: str | None = None,
    source: str,
    reason: str,
) -> FlagSet:
    """Apply changes to the flag file atomically, audit them, and return the new flags.

    Raises :class:`FlagFileError` when the current file is invalid (a person is
    mid-edit: we do not overwrite their work), when the result would be, or when
    the disk refuses the write (full, read-only: the old file stays as it was).
    """
    try:
        return _update_flags(path, components=components, loop=loop, source=source, reason=reason)
    except OSError as exc:
        # An automatic rollback runs inside a routed call: a bare OSError there failed the todo.
        raise FlagFileError(str(path), f"cannot write: {exc.strerror or exc}") from exc


def _update_flags(
    path: Path,
    *,
    components: Mapping[str, ComponentChange] | None,
    loop: str | None,
    source: str,
    reason: str,
) -> FlagSet:
    components = components or {}
    for name in components:
        if name not in COMPONENTS:
            raise FlagFileError(str(path), f"unknown component {name!r}; known: {', '.join(COMPONENTS)}")
    with _locked(path):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = TEMPLATE
        try:
            parse_flags(text, str(path))
        except FlagFileError as exc:
            raise FlagFileInvalid(exc.path, exc.reason, key=exc.key, line=exc.line) from exc
        doc = tomlkit.parse(text)
        changes: list[Change] = []
        if loop is not None and _plain(doc.get("loop")) != loop:
            changes.append(Change("loop", _plain(doc.get("loop")), loop))
            doc["loop"] = loop
        for name, change in components.items():
            table = _component_table(doc, name)
            wanted: dict[str, Any] = {}
            if change.mode is not None:
                wanted["mode"] = change.mode.value
                if change.mode is not Mode.CANARY and change.percent is None:
                    wanted["percent"] = 0
            if change.percent is not None:
                wanted["percent"] = (
                    int(change.percent) if change.percent == int(change.percent) else change.percent
                )
            if change.serve is not None:
                wanted["serve"] = change.serve
            for key, value in wanted.items():
                old = _plain(table.get(key))
                if old == value or (key == "percent" and not old and not value):
                    continue
                if key == "percent" and not value:
                    table.pop("percent", None)
                else:
                    table[key] = value
                changes.append(Change(f"components.{name}.{key}", old, value))
        new_text = tomlkit.dumps(doc)
        flags = parse_flags(new_text, str(path))
        if changes or not path.exists():
            atomic_write_text(path, new_text)
        if changes:
            append_entry(path, AuditEntry(source=source, reason=reason, changes=changes))
        return flags


def ensure_flag_file(path: Path) -> None:
    """Create the flag file from the commented template when it does not exist."""
    if not path.exists():
        with _locked(path):
            if not path.exists():
                atomic_write_text(path, TEMPLATE)
