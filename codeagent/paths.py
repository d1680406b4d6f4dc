"""Where the agent keeps its state, and the lexical half of the workspace jail (sans-I/O).

Every ``.agent/...`` name is defined here, once; the components, the bridge,
the flags, the migration and the application import them from here.

Every implementation first calls :func:`check_relative_path`; then, with the
file system at hand, it resolves symlinks and checks the real path is still
inside the workspace with :func:`check_resolved`.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from codeagent.errors import WorkspaceViolation

STATE_DIR = ".agent"

#: The agent's configuration (legacy format, read by every loop).
CONFIG_RELPATH = f"{STATE_DIR}/config.json"
#: The todo list and the lock around its read-modify-write.
TODOS_RELPATH = f"{STATE_DIR}/todos.json"
TODOS_LOCK_RELPATH = f"{STATE_DIR}/todos.lock"
#: The loop's state and each todo's status, and their lock.
STATUS_RELPATH = f"{STATE_DIR}/status.json"
STATUS_LOCK_RELPATH = f"{STATE_DIR}/status.lock"
#: Rewritten by ``todo retry`` (CLI and API) after it puts todos back to pending: the async
#: kernel watches it (it does not watch ``status.json``, which it writes itself all the time).
REQUEUE_RELPATH = f"{STATE_DIR}/requeue.json"
#: One checkpoint file per todo: ``<todo-id>.json``.
CHECKPOINTS_RELDIR = f"{STATE_DIR}/checkpoints"
#: One driver per workspace: the flock and who holds it.
AGENT_LOCK_RELPATH = f"{STATE_DIR}/agent.lock"
#: The feature flags (their audit log and health file live beside it, wherever it is).
FLAGS_RELPATH = f"{STATE_DIR}/flags.toml"
#: A fleet workspace's id, as the fleet's database knows it (with its path).
WORKSPACE_ID_RELPATH = f"{STATE_DIR}/workspace.json"
#: Shadow runs' disagreements (JSON lines).
MISMATCHES_RELPATH = f"{STATE_DIR}/shadow-mismatches.jsonl"
#: The migration's marker of the state format, journal, staging area and backups.
FORMAT_MARKER_RELPATH = f"{STATE_DIR}/format.json"
MIGRATE_JOURNAL_RELPATH = f"{STATE_DIR}/migrate-journal.json"
MIGRATE_STAGING_RELPATH = f"{STATE_DIR}/migrate-staging"
BACKUPS_RELDIR = f"{STATE_DIR}/backup"
#: Where the state lives when it is not in the files above (PostgreSQL: DSN, workspace id, since when),
#: and the journal of a move between files and PostgreSQL (``codeagent migrate apply --to ...``).
STORE_MARKER_RELPATH = f"{STATE_DIR}/store.json"
STORE_JOURNAL_RELPATH = f"{STATE_DIR}/store-journal.json"


def checkpoint_relpath(todo_id: str) -> str:
    """The workspace-relative path of one todo's checkpoint file."""
    return f"{CHECKPOINTS_RELDIR}/{todo_id}.json"


def check_relative_path(path: str) -> str:
    """Return the normalised relative path, or raise :class:`WorkspaceViolation`.

    Refuses empty paths, absolute paths (POSIX or Windows style), any ``..``
    component, NUL bytes and other control characters (a newline or CR in a
    name), names that are not UTF-8 text (lone surrogates), components starting
    with ``-`` (they read as options to a command), anything inside a ``.git``
    directory at any depth (a nested repository's hooks run code), and
    anything inside the agent's own state directory ``.agent``.
    """
    if not path or not path.strip():
        raise WorkspaceViolation(path, "empty path")
    if "\x00" in path:
        raise WorkspaceViolation(path, "NUL byte in path")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise WorkspaceViolation(path, "control character (newline, CR, ...) in path")
    if not _is_utf8(path):
        raise WorkspaceViolation(path, "path is not UTF-8 text")
    if path.startswith(("/", "\\")) or PureWindowsPath(path).drive:
        raise WorkspaceViolation(path, "absolute paths are not allowed")
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if any(part == ".." for part in parts):
        raise WorkspaceViolation(path, "'..' would leave the workspace")
    parts = tuple(p for p in parts if p not in ("", "."))
    if not parts:
        raise WorkspaceViolation(path, "path names the workspace itself")
    if parts[0].lower() == ".git":
        raise WorkspaceViolation(path, "writes into .git/ are not allowed")
    if parts[0] == STATE_DIR:
        raise WorkspaceViolation(path, f"{STATE_DIR}/ holds the agent's own state and is not editable")
    if any(part.lower() == ".git" for part in parts[1:]):
        raise WorkspaceViolation(path, "writes into a nested repository's .git/ are not allowed")
    if any(part.startswith("-") for part in parts):
        raise WorkspaceViolation(path, "a name starting with '-' would read as an option")
    return "/".join(parts)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_resolved(root_real: str, target_real: str, path: str) -> None:
    """Raise unless ``target_real`` (symlinks resolved) lies inside ``root_real``."""
    root = root_real.rstrip("/") + "/"
    if not (target_real + "/").startswith(root) or target_real == root_real:
        raise WorkspaceViolation(path, "resolves outside the workspace (symlink?)")
    inner = target_real[len(root) :]
    parts = inner.split("/")
    if any(part.lower() == ".git" for part in parts):
        raise WorkspaceViolation(path, "resolves into .git/")
    if parts[0] == STATE_DIR:
        raise WorkspaceViolation(path, f"resolves into {STATE_DIR}/")
