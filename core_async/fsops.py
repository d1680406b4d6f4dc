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
  check, then the same with symlinks resolved), as legacy applies it;
  :func:`write_beneath` and :func:`read_beneath` then reach the resolved path
  from the workspace's root one directory at a time without following any
  symlink, so a symlink swapped in between the check and the write (or read)
  is refused instead of followed out of the workspace.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import time
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


def atomic_write_text(path: Path, text: str, *, fsync: bool = True, fsync_dir: bool = True) -> os.stat_result:
    """Replace ``path`` with ``text`` (UTF-8) atomically, creating parent directories.

    The temp file gets mode 0666 minus the umask like ``open()``; an existing
    file keeps its permission bits. With ``fsync`` the data reaches the disk
    before the rename, and with ``fsync_dir`` as well the directory is fsynced
    after it (a batch of writes passes ``False`` and fsyncs each directory once).
    Returns the new file's status (its inode, size and modification time
    identify this version of the file).

    The parent directories are created only when the first attempt finds them
    missing, and the mode is copied only when it differs: state files are
    rewritten several times per todo, and each saved syscall counts there.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
            written = os.fstat(handle.fileno())
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode != stat.S_IMODE(written.st_mode):
                os.chmod(tmp, mode)
                written = os.stat(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if fsync and fsync_dir:
        fsync_directory(path.parent)
    return written


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


def check_writable(real: Path, path: str, content: str, max_bytes: int) -> None:
    """Refuse a write that is too large, is not UTF-8 text, or would replace a directory."""
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise WorkspaceViolation(path, f"new content is not UTF-8 text (character {exc.start})") from None
    if size > max_bytes:
        raise WorkspaceViolation(path, f"new content is larger than the {max_bytes}-byte limit")
    if real.is_dir():
        raise WorkspaceViolation(path, "is a directory, not a file")


#: When this process started using the module: a temp file older than this was left by another
#: process, i.e. by an atomic write that a crash cut short (one loop owns a workspace at a time).
_PROCESS_STARTED = time.time()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SWAPPED = "changed while being reached (a symlink swapped in?): refused"


def _swapped(exc: OSError) -> bool:
    return exc.errno in (errno.ELOOP, errno.ENOTDIR)


def open_parent(root_real: str, real: Path, path: str, *, create: bool) -> tuple[int, str]:
    """A descriptor of the directory of ``real`` (inside ``root_real``), and the file's name.

    The directory is reached from the root one component at a time with
    ``O_NOFOLLOW``, creating missing ones when ``create``: a component that is
    (now) a symlink raises :class:`WorkspaceViolation`. ``FileNotFoundError``
    when a directory is missing and ``create`` is false. The caller closes it.
    """
    parts = os.path.relpath(real, root_real).split(os.sep)
    fd = os.open(root_real, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        if _swapped(exc):
            raise WorkspaceViolation(path, _SWAPPED) from exc
        raise
    return fd, parts[-1]


def remove_stale_temps(dir_fd: int, name: str) -> None:
    """Delete the temp files (``.NAME.xxxxxxxx.tmp``) that writes of ``name`` by an earlier process left.

    A SIGKILL between the temp file's creation and its rename leaves it behind;
    in the work tree it would show in ``git status``. Only files older than
    this process are removed: one loop owns a workspace at a time, so their
    writer is gone, while this process's own concurrent writes are left alone.
    """
    pattern = re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]{{8}}\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(dir_fd):
            if not pattern.match(entry):
                continue
            with contextlib.suppress(OSError):
                if os.stat(entry, dir_fd=dir_fd, follow_symlinks=False).st_mtime < _PROCESS_STARTED:
                    os.unlink(entry, dir_fd=dir_fd)


def write_beneath(root_real: str, real: Path, path: str, text: str, *, fsync: bool = True) -> None:
    """Atomically replace ``real`` (a resolved path inside ``root_real``) with ``text``, never leaving the root.

    The directory is reached with :func:`open_parent`; the temp file is created
    in it (``O_EXCL | O_NOFOLLOW``) and renamed over the name relative to that
    descriptor, so the rename replaces whatever is there (a symlink included)
    rather than following it. Stale temps of crashed writers are removed first.
    """
    try:
        dir_fd, name = open_parent(root_real, real, path, create=True)
    except OSError as exc:
        raise WorkspaceViolation(path, f"cannot write: {exc.strerror or exc}") from exc
    try:
        remove_stale_temps(dir_fd, name)
        tmp = f".{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                handle.write(text)
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())
            with contextlib.suppress(FileNotFoundError):
                current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISREG(current.st_mode):
                    os.chmod(tmp, stat.S_IMODE(current.st_mode), dir_fd=dir_fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
    except IsADirectoryError:
        raise WorkspaceViolation(path, "is a directory, not a file") from None
    except OSError as exc:  # a full disk, a read-only file system: the old content stays
        raise WorkspaceViolation(path, f"cannot write: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)


def read_beneath(root_real: str, real: Path, path: str, max_bytes: int) -> str | None:
    """Read a resolved workspace file reached without following a symlink; ``None`` when absent.

    Refuses (:class:`WorkspaceViolation`) a directory, anything but a regular
    file (a FIFO would block the reader forever), a symlink swapped in since
    the check, a file over ``max_bytes`` or one that is not UTF-8.
    """
    try:
        dir_fd, name = open_parent(root_real, real, path, create=False)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise WorkspaceViolation(path, _SWAPPED) from exc
        raise WorkspaceViolation(path, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(dir_fd)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        why = "is a directory, not a file" if stat.S_ISDIR(mode) else "is not a regular file"
        raise WorkspaceViolation(path, why)
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise WorkspaceViolation(path, f"cannot read: {exc.strerror or exc}") from exc
    return decode_limited(path, data, max_bytes)
