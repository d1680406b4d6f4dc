"""Where migration keeps its files, and the low-level file operations it trusts.

* :func:`atomic_write` - temp file, fsync, rename, fsync of the directory.
* :func:`exchange_dirs` - swaps two directories in one ``renameat2(RENAME_EXCHANGE)``
  call (Linux), the single commit point of ``apply`` and ``rollback``.
* :func:`fault_point` - the test hook: ``CODEAGENT_MIGRATE_FAIL_AT=<step>`` raises
  :class:`InjectedFault` at that step, ``CODEAGENT_MIGRATE_KILL_AT=<step>`` SIGKILLs
  the process there (a real crash). :data:`STEPS` are the file-format migration's,
  :data:`PG_STEPS` and :data:`FILES_STEPS` the moves to PostgreSQL and back.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import secrets
import signal
from pathlib import Path

from codeagent.paths import (
    BACKUPS_RELDIR,
    CHECKPOINTS_RELDIR,
    CONFIG_RELPATH,
    FORMAT_MARKER_RELPATH,
    MIGRATE_JOURNAL_RELPATH,
    MIGRATE_STAGING_RELPATH,
    MISMATCHES_RELPATH,
    STATUS_RELPATH,
    STORE_JOURNAL_RELPATH,
    STORE_MARKER_RELPATH,
    TODOS_RELPATH,
    WORKSPACE_ID_RELPATH,
)

# The migration's short names for the workspace's state paths (defined in codeagent.paths).
CONFIG = CONFIG_RELPATH
TODOS = TODOS_RELPATH
STATUS = STATUS_RELPATH
CHECKPOINTS = CHECKPOINTS_RELDIR
MARKER = FORMAT_MARKER_RELPATH
JOURNAL = MIGRATE_JOURNAL_RELPATH
STAGING = MIGRATE_STAGING_RELPATH
BACKUPS = BACKUPS_RELDIR
MISMATCHES = MISMATCHES_RELPATH
STORE = STORE_MARKER_RELPATH
STORE_JOURNAL = STORE_JOURNAL_RELPATH
IDENTITY = WORKSPACE_ID_RELPATH

FAIL_ENV = "CODEAGENT_MIGRATE_FAIL_AT"
KILL_ENV = "CODEAGENT_MIGRATE_KILL_AT"
STEPS = ("survey", "backup", "stage", "journal", "swap", "marker", "verify", "cleanup")
#: The steps of ``apply --to postgres``: after the backup, the journal, the registration, the copy
#: (committed), the verification, the marker (the commit point), the removal of the state files.
PG_STEPS = ("pg-backup", "pg-journal", "pg-register", "pg-copy", "pg-verify", "pg-marker", "pg-cleanup")
#: The steps of ``apply --to files``: after the backup, the journal, the files written, their
#: verification, the database's rows removed (the commit point), the markers.
FILES_STEPS = ("files-backup", "files-journal", "files-write", "files-verify", "files-forget", "files-marker")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class InjectedFault(RuntimeError):
    """Raised at a step named by ``CODEAGENT_MIGRATE_FAIL_AT`` (tests only)."""


def fault_point(step: str) -> None:
    """Fail or die here when the environment asks for it (tests only)."""
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(FAIL_ENV) == step:
        raise InjectedFault(f"fault injected at step {step!r} ({FAIL_ENV})")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dir_hashes(directory: Path) -> dict[str, str]:
    """``{name: sha256}`` of the ``*.json`` files directly in ``directory`` (empty when absent)."""
    if not directory.is_dir():
        return {}
    return {p.name: sha256_file(p) for p in sorted(directory.glob("*.json")) if p.is_file()}


def fsync_dir(directory: Path) -> None:
    """Make renames inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap directories ``a`` and ``b`` atomically (both must exist, same file system).

    Uses ``renameat2(RENAME_EXCHANGE)``; where the C library lacks it, falls
    back to two renames (the journal lets a rerun finish a swap cut in half).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(libc, "renameat2", None)
    if func is not None:
        rc = func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if rc == 0:
            fsync_dir(a.parent)
            if b.parent != a.parent:
                fsync_dir(b.parent)
            return
        err = ctypes.get_errno()
        if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back
            raise OSError(err, os.strerror(err), str(a))
    aside = a.with_name(a.name + ".swap-old")
    os.rename(a, aside)
    os.rename(b, a)
    os.rename(aside, b)
    fsync_dir(a.parent)
