"""Blocking file-system steps, each a whole operation, meant to run in ONE thread hop.

The async components call these only through ``await ato_thread(...)``; the
generated sync twins call them directly. Grouping the syscalls of one
operation (mkdir, open, write, fsync, chmod, rename, fsync of the directory)
into one function is the design choice that keeps async state I/O cheap:
one thread hop costs about as much as the whole small operation, while a hop
per syscall (what aiofiles does) would cost several times more.

* :func:`atomic_write_text` writes a whole file or nothing: temp file in the
  same directory, fsynced, ``os.replace``-d over the target, then the directory
  itself fsynced so the rename survives a power loss.
* :func:`read_model` reads and validates one JSON state document; errors name
  the workspace-relative file, the field and the line.
* :func:`file_lock` holds an exclusive ``flock`` across threads and processes.
* :func:`resolve_in_workspace` is the workspace jail (the domain's lexical
  check, then the same with symlinks resolved), as legacy applies it.
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

from codeagent.errors import StateFileError, WorkspaceViolation
from codeagent.jsondoc import parse_document
from codeagent.paths import check_relative_path, check_resolved

M = TypeVar("M", bound=BaseModel)


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (a rename, a new file) to disk."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, fsync: bool = True, fsync_dir: bool = True) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically, creating parent directories.

    The temp file gets mode 0666 minus the umask like ``open()``; an existing
    file keeps its permission bits. With ``fsync`` the data reaches the disk
    before the rename, and with ``fsync_dir`` as well the directory is fsynced
    after it (a batch of writes passes ``False`` and fsyncs each directory once).
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
    if fsync and fsync_dir:
        fsync_directory(path.parent)


def read_text(path: Path, source: str) -> str | None:
    """The UTF-8 text of ``path``, or ``None`` when it does not exist.

    Raises :class:`StateFileError` naming ``source`` when the file cannot be
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

    An empty file is reported as invalid JSON, not treated as missing.
    """
    text = read_text(path, source)
    if text is None:
        return None
    return parse_document(text, model, source, StateFileError)


@contextlib.contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the block.

    ``flock`` belongs to the open file description, so two threads that each
    open the lock file exclude each other as two processes do.
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def resolve_in_workspace(root_real: str, path: str) -> Path:
    """The real location of workspace-relative ``path``, or :class:`WorkspaceViolation`.

    The domain's two checks, as legacy applies them: the lexical one (no
    absolute path, no ``..``, nothing in ``.git/`` or ``.agent/``), then the
    same on the target with symlinks resolved.
    """
    rel = check_relative_path(path)
    real = os.path.realpath(os.path.join(root_real, rel))
    check_resolved(root_real, real, path)
    return Path(real)


def decode_limited(path: str, data: bytes, max_bytes: int) -> str:
    """Decode what was read (at most ``max_bytes + 1`` bytes) or refuse it with a reason."""
    if len(data) > max_bytes:
        raise WorkspaceViolation(path, f"file is larger than the {max_bytes}-byte limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkspaceViolation(path, f"not UTF-8 text (byte {exc.start})") from exc


def read_limited(real: Path, path: str, max_bytes: int) -> str | None:
    """Read one resolved workspace file; ``None`` when absent; errors as :func:`decode_limited`."""
    try:
        with open(real, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise WorkspaceViolation(path, "is a directory, not a file") from None
    except OSError as exc:
        raise WorkspaceViolation(path, f"cannot read: {exc.strerror or exc}") from exc
    return decode_limited(path, data, max_bytes)


def check_writable(real: Path, path: str, content: str, max_bytes: int) -> None:
    """Refuse a write that is too large or would replace a directory."""
    if len(content.encode("utf-8")) > max_bytes:
        raise WorkspaceViolation(path, f"new content is larger than the {max_bytes}-byte limit")
    if real.is_dir():
        raise WorkspaceViolation(path, "is a directory, not a file")
