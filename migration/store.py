"""Where a workspace's state lives: in its files (the embedded default) or in PostgreSQL.

``.agent/store.json`` is written by ``codeagent migrate apply --to postgres``
once the database holds, verified, everything the files held; from then on
the database is the state and the files are gone from ``.agent/`` (they stay
in the move's backup)::

    {"store": "postgresql", "dsn": "postgresql://agent@db:5432/fleet",
     "workspace_id": "3f2a...", "moved_at": "2025-01-01T12:00:00.000Z",
     "backup": ".agent/backup/20250101T120000.000000Z"}

No marker: the files are the state. The DSN is kept without its password
(libpq then takes it from ``PGPASSWORD`` or ``~/.pgpass``; ``--dsn`` overrides
it). ``.agent/store-journal.json`` exists only while a move is under way: the
next ``apply --to postgres`` or ``apply --to files`` finishes or undoes it.

This module reads and writes those two small files and nothing else (no
database driver), so the application can ask :func:`state_elsewhere` before it
starts a loop on the files.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codeagent.errors import StateFileError
from migration import layout

POSTGRESQL = "postgresql"

_URL_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@?#]*:)[^@/?#]*@")
_KEY_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


@dataclass(frozen=True, slots=True)
class StoreMarker:
    """What ``.agent/store.json`` says: the database, the workspace's id there, since when, the backup."""

    store: str
    dsn: str
    workspace_id: str
    moved_at: str
    backup: str

    def describe(self) -> str:
        """``PostgreSQL (DSN, workspace ID)`` for messages (never a password)."""
        return f"PostgreSQL ({display_dsn(self.dsn)}, workspace {self.workspace_id})"


def display_dsn(dsn: str) -> str:
    """The DSN as it may be printed: any password replaced by ``***``."""
    return _KEY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", dsn))


def storable_dsn(dsn: str) -> str:
    """The DSN as the marker keeps it: as given, or without its password when it has one."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    if "password" not in params:
        return dsn
    del params["password"]
    return make_conninfo("", **params)


def same_database(a: str, b: str) -> bool:
    """Whether two DSNs name the same database (passwords and spelling aside)."""
    from psycopg.conninfo import conninfo_to_dict

    def key(dsn: str) -> dict[str, Any]:
        params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if k != "password"}
        params.setdefault("port", "5432")
        return params

    try:
        return key(a) == key(b)
    except Exception:  # an unparsable DSN names nothing we can compare
        return a == b


def read_store_marker(root: Path) -> StoreMarker | None:
    """The marker, or ``None`` when the files are the state; :class:`StateFileError` when unreadable."""
    path = Path(root) / layout.STORE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(layout.STORE, f"unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise StateFileError(layout.STORE, "not a JSON object")
    for key in ("store", "dsn", "workspace_id"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise StateFileError(layout.STORE, "missing or empty", field=key)
    if data["store"] != POSTGRESQL:
        raise StateFileError(layout.STORE, f"unknown store {data['store']!r}", field="store")
    return StoreMarker(
        store=data["store"],
        dsn=data["dsn"],
        workspace_id=data["workspace_id"],
        moved_at=str(data.get("moved_at") or ""),
        backup=str(data.get("backup") or ""),
    )


def write_store_marker(root: Path, marker: StoreMarker) -> None:
    """Record (atomically) that the state lives in the database."""
    layout.atomic_write(Path(root) / layout.STORE, json.dumps(asdict(marker), indent=2) + "\n")


def remove_store_marker(root: Path) -> None:
    """The files are the state again."""
    (Path(root) / layout.STORE).unlink(missing_ok=True)


def read_store_journal(root: Path) -> dict[str, Any] | None:
    """The journal of a move under way (``{"op": "unknown"}`` when unreadable), or ``None``."""
    try:
        data: Any = json.loads((Path(root) / layout.STORE_JOURNAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"op": "unknown"}
    return data if isinstance(data, dict) else {"op": "unknown"}


def write_store_journal(root: Path, journal: dict[str, Any]) -> None:
    """Record (atomically) the move about to change things."""
    layout.atomic_write(Path(root) / layout.STORE_JOURNAL, json.dumps(journal, indent=2) + "\n")


def remove_store_journal(root: Path) -> None:
    """The move is over (done or undone)."""
    (Path(root) / layout.STORE_JOURNAL).unlink(missing_ok=True)


def state_elsewhere(root: Path) -> str | None:
    """Why no loop may run on the workspace's files, or ``None`` when the files are its state.

    Said when the state lives in PostgreSQL (``.agent/store.json``), when a
    move between files and PostgreSQL was interrupted, and when the marker is
    unreadable (the state may be in a database).
    """
    root = Path(root)
    if (root / layout.STORE_JOURNAL).exists():
        return (
            f"an interrupted move between its files and PostgreSQL is pending ({layout.STORE_JOURNAL}):"
            f" finish it with `codeagent migrate apply -w {root} --to postgres DSN`"
            f" or undo it with `codeagent migrate apply -w {root} --to files`"
        )
    try:
        marker = read_store_marker(root)
    except StateFileError as exc:
        return f"{exc}; its state may live in PostgreSQL: see `codeagent migrate status -w {root}`"
    if marker is None:
        return None
    return (
        f"its state lives in {marker.describe()} since {marker.moved_at or '?'}:"
        f" drive it with `codeagent worker --queue DSN` (add todos with `codeagent todo add --queue DSN`),"
        f" or bring it back to files with `codeagent migrate apply -w {root} --to files`"
    )
