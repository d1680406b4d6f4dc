"""File operations confined to the workspace (the workspace jail).

Every path goes through two checks: the lexical one shared by all
implementations (:func:`codeagent.paths.check_relative_path`: no absolute
paths, no ``..``, nothing in ``.git/``), then, with symlinks resolved by
``os.path.realpath``, :func:`codeagent.paths.check_resolved` (the real target
is still inside the workspace and not in ``.git/``). The agent's own state
directory ``.agent/`` is refused as well: an LLM answer must not be able to
rewrite the todo list or leak the API token in the config.

Writes create parent directories and are atomic (temp file + ``os.replace``),
so a crash leaves either the old or the new content, never a mix; the data is
fsynced before the rename so that the ``edited`` checkpoint saved after a write
never claims content that a power loss could still take back.

The checked path is then reached from the workspace's root one directory at a
time without following any symlink (``O_NOFOLLOW`` relative to the parent's
descriptor), for reads and writes alike: a symlink swapped in between the check
and the operation is refused instead of followed out of the workspace. Temp
files that a crashed writer left beside a file (``.NAME.xxxxxxxx.tmp``, older
than this process) are removed when the file is written again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import WorkspaceViolation
from codeagent.paths import check_relative_path, check_resolved

_PROCESS_STARTED = time.time()
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SWAPPED = "changed while being reached (a symlink swapped in?): refused"


def _open_parent(root_real: str, real: Path, path: str, *, create: bool) -> tuple[int, str]:
    """The directory of ``real`` reached from the root without following a symlink, and the name."""
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
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise WorkspaceViolation(path, _SWAPPED) from exc
        raise
    return fd, parts[-1]


def _remove_stale_temps(dir_fd: int, name: str) -> None:
    pattern = re.compile(rf"^\.{re.escape(name)}\.[0-9a-f]{{8}}\.tmp$")
    with contextlib.suppress(OSError):
        for entry in os.listdir(dir_fd):
            if pattern.match(entry):
                with contextlib.suppress(OSError):
                    if os.stat(entry, dir_fd=dir_fd, follow_symlinks=False).st_mtime < _PROCESS_STARTED:
                        os.unlink(entry, dir_fd=dir_fd)


class Files:
    """Read and write text files of one workspace, refusing anything outside it."""

    def __init__(self, root: Path, max_bytes: int = 1_000_000) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._root_real = os.path.realpath(self.root)

    def resolve(self, path: str) -> Path:
        """The real location of a workspace-relative ``path``; raises :class:`WorkspaceViolation`."""
        rel = check_relative_path(path)
        real = os.path.realpath(os.path.join(self._root_real, rel))
        check_resolved(self._root_real, real, path)
        return Path(real)

    def read(self, path: str) -> str | None:
        """The UTF-8 content of ``path``, or ``None`` when the file does not exist."""
        real = self.resolve(path)
        try:
            dir_fd, name = _open_parent(self._root_real, real, path, create=False)
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
                data = handle.read(self.max_bytes + 1)
            except OSError as exc:
                raise WorkspaceViolation(path, f"cannot read: {exc.strerror or exc}") from exc
        if len(data) > self.max_bytes:
            raise WorkspaceViolation(path, f"file is larger than the {self.max_bytes}-byte limit")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WorkspaceViolation(path, f"not UTF-8 text (byte {exc.start})") from exc

    def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Read several files, one after the other; keys are the paths as given."""
        return {path: self.read(path) for path in paths}

    def write(self, path: str, content: str) -> None:
        """Atomically replace (or create) ``path`` with ``content``."""
        real = self.resolve(path)
        try:
            size = len(content.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise WorkspaceViolation(path, f"new content is not UTF-8 text (character {exc.start})") from None
        if size > self.max_bytes:
            raise WorkspaceViolation(path, f"new content is larger than the {self.max_bytes}-byte limit")
        if real.is_dir():
            raise WorkspaceViolation(path, "is a directory, not a file")
        try:
            dir_fd, name = _open_parent(self._root_real, real, path, create=True)
        except OSError as exc:
            raise WorkspaceViolation(path, f"cannot write: {exc.strerror or exc}") from exc
        try:
            _remove_stale_temps(dir_fd, name)
            tmp = f".{name}.{secrets.token_hex(4)}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
                    handle.write(content)
                    handle.flush()
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

    def write_many(self, contents: dict[str, str]) -> None:
        """Write several files. Every path is checked before the first write."""
        for path in contents:
            self.resolve(path)
        for path, content in contents.items():
            self.write(path, content)
