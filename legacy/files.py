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
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import WorkspaceViolation
from codeagent.paths import check_relative_path, check_resolved
from legacy.jsonstate import atomic_write_text


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
            with open(real, "rb") as handle:
                data = handle.read(self.max_bytes + 1)
        except FileNotFoundError:
            return None
        except IsADirectoryError:
            raise WorkspaceViolation(path, "is a directory, not a file") from None
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
        if len(content.encode("utf-8")) > self.max_bytes:
            raise WorkspaceViolation(path, f"new content is larger than the {self.max_bytes}-byte limit")
        if real.is_dir():
            raise WorkspaceViolation(path, "is a directory, not a file")
        atomic_write_text(real, content)

    def write_many(self, contents: dict[str, str]) -> None:
        """Write several files. Every path is checked before the first write."""
        for path in contents:
            self.resolve(path)
        for path, content in contents.items():
            self.write(path, content)
