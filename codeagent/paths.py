"""Lexical half of the workspace jail (sans-I/O).

Every implementation first calls :func:`check_relative_path`; then, with the
file system at hand, it resolves symlinks and checks the real path is still
inside the workspace with :func:`check_resolved`.
"""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

from codeagent.errors import WorkspaceViolation

STATE_DIR = ".agent"


def check_relative_path(path: str) -> str:
    """Return the normalised relative path, or raise :class:`WorkspaceViolation`.

    Refuses empty paths, absolute paths (POSIX or Windows style), any ``..``
    component, NUL bytes, and anything inside ``.git`` or the agent's own
    state directory ``.agent``.
    """
    if not path or not path.strip():
        raise WorkspaceViolation(path, "empty path")
    if "\x00" in path:
        raise WorkspaceViolation(path, "NUL byte in path")
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
    return "/".join(parts)


def check_resolved(root_real: str, target_real: str, path: str) -> None:
    """Raise unless ``target_real`` (symlinks resolved) lies inside ``root_real``."""
    root = root_real.rstrip("/") + "/"
    if not (target_real + "/").startswith(root) or target_real == root_real:
        raise WorkspaceViolation(path, "resolves outside the workspace (symlink?)")
    inner = target_real[len(root) :]
    first = inner.split("/", 1)[0]
    if first.lower() == ".git":
        raise WorkspaceViolation(path, "resolves into .git/")
    if first == STATE_DIR:
        raise WorkspaceViolation(path, f"resolves into {STATE_DIR}/")
