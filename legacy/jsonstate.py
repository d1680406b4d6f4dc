"""Small helpers for the legacy agent's JSON state files.

* :func:`atomic_write_text` writes a whole file or nothing: a temp file in the
  same directory, flushed and fsynced, then ``os.replace``-d over the target, so a
  crash (even SIGKILL) never leaves a half-written document behind.
* :func:`read_model` reads and validates a document with
  :func:`codeagent.jsondoc.parse_document`; errors name the file, field and line.
* :func:`file_lock` serialises read-modify-write cycles across threads *and*
  processes (the CLI's ``todo add`` and the HTTP API may write while the loop runs).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from codeagent.errors import StateFileError
from codeagent.jsondoc import parse_document

M = TypeVar("M", bound=BaseModel)


def atomic_write_text(path: Path, text: str, *, fsync: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically, creating parent directories.

    The temp file is created with mode 0666 minus the umask, like ``open()``
    would; an existing file keeps its permission bits. With ``fsync`` the data
    reaches the disk before the rename, so the new name never points at an
    empty file after a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_text(path: Path, source: str) -> str | None:
    """The UTF-8 text of ``path``, or ``None`` when it does not exist.

    Raises :class:`StateFileError` (naming ``source``) when the file cannot be
    read or is not UTF-8.
    """
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:
        raise StateFileError(source, f"not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise StateFileError(source, f"cannot read: {exc.strerror or exc}") from exc


def read_model(path: Path, model: type[M], source: str) -> M | None:
    """Read and validate one JSON document; ``None`` when the file does not exist.

    ``source`` is how errors name the file (the workspace-relative path). An
    empty file is reported as invalid JSON, not treated as missing.
    """
    text = read_text(path, source)
    if text is None:
        return None
    return parse_document(text, model, source, StateFileError)


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block.

    ``flock`` locks belong to the open file description, so two threads of one
    process that each open the lock file exclude each other as two processes do.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
