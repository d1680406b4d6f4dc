"""Which workspace is which across hosts: an id in the workspace, the same id and path in the database.

A workspace joins a fleet once (:func:`register`): it gets an id, written to
``.agent/workspace.json`` and recorded in the database with its path. Every
host must mount it at that same path (a shared volume). Before a worker drives
a workspace it checks (:func:`verify_identity`) that the id file at the
recorded path is the one the database knows, and refuses the job otherwise: a
host that sees another directory there (or none) never writes into it.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

from codeagent.errors import ConfigError, StateFileError
from codeagent.paths import WORKSPACE_ID_RELPATH
from core_async.pg_state import PgDatabase

IDENTITY_RELPATH = WORKSPACE_ID_RELPATH


def read_identity(root: Path) -> str | None:
    """The fleet id written in the workspace, or ``None`` when it never joined one."""
    try:
        data = json.loads((root / IDENTITY_RELPATH).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StateFileError(IDENTITY_RELPATH, f"unreadable: {exc}") from exc
    ident = data.get("id") if isinstance(data, dict) else None
    if not isinstance(ident, str) or not ident:
        raise StateFileError(IDENTITY_RELPATH, "no workspace id", field="id")
    return ident


def write_identity(root: Path) -> str:
    """Give the workspace a new fleet id (written atomically); return it."""
    ident = uuid.uuid4().hex
    path = root / IDENTITY_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"id": ident, "path": str(root)}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return ident


async def register(db: PgDatabase, root: Path) -> str:
    """The workspace's fleet id, joining the fleet when it has none yet."""
    ident = await asyncio.to_thread(read_identity, root)
    if ident is None:
        ident = await asyncio.to_thread(write_identity, root)
    await db.register(ident, root, root.name)
    return ident


async def verify_identity(db: PgDatabase, ident: str) -> Path:
    """The workspace's path on this host, once its id file there says it is the same workspace."""
    root = Path(await db.workspace_path(ident))
    try:
        found = await asyncio.to_thread(read_identity, root)
    except StateFileError as exc:
        raise ConfigError(str(root), f"not the fleet's workspace {ident} on this host ({exc})") from exc
    if found != ident:
        seen = "no workspace" if found is None else f"workspace {found}"
        raise ConfigError(
            str(root), f"this host sees {seen} at the path of {ident}: is the shared volume mounted here?"
        )
    return root
