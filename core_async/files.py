"""Workspace file operations, async: batched parallel reads, atomic writes, the jail.

Every path goes through the workspace jail (:func:`core_async.fsops.resolve_in_workspace`:
the domain's lexical check, then symlinks resolved; ``.git/`` and ``.agent/``
refused), exactly as the legacy implementation does. The resolved path is then
reached from the workspace's root without following any symlink
(:func:`core_async.fsops.write_beneath`, :func:`core_async.fsops.read_beneath`):
a symlink swapped in between the check and the operation is refused, never
followed out of the workspace.

Thread hops, the design choice: on this machine one aiofiles 4 KiB write+read
costs ~0.5 ms against ~0.15 ms for plain calls, because aiofiles hops to a
worker thread once per call (open, read, close ...), while ONE hop for a batch
of 1,000 small files costs about what sequential code does. Hence:

* :meth:`AsyncWorkspaceFiles.read` checks and reads one file in one hop;
* :meth:`AsyncWorkspaceFiles.read_many` checks and reads a whole batch per
  hop, splitting large batches into a few chunks read in parallel threads;
* :meth:`AsyncWorkspaceFiles.write` / :meth:`AsyncWorkspaceFiles.write_many`
  run each whole atomic write (temp file, fsync, rename, fsync of the
  directory) in one hop, since a hop per syscall would multiply the cost.

Unlike legacy, ``write_many`` checks every path *and* every size before the
first write, so a refused batch writes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import WorkspaceViolation
from core_async._compat import agather, ato_thread
from core_async.fsops import (
    check_writable,
    fsync_directory,
    read_beneath,
    resolve_in_workspace,
    write_beneath,
)

#: Batches up to this many paths are read in a single hop.
CHUNK_SIZE = 64
#: At most this many hops of one batch run at the same time.
MAX_PARALLEL_CHUNKS = 4

ReadOutcome = str | None | WorkspaceViolation


class AsyncWorkspaceFiles:
    """Read and write text files of one workspace, refusing anything outside it."""

    def __init__(self, root: Path, max_bytes: int = 1_000_000) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._root_real: str | None = None

    def _real_root(self) -> str:
        if self._root_real is None:
            self._root_real = os.path.realpath(self.root)
        return self._root_real

    def _resolve_now(self, path: str) -> Path:
        return resolve_in_workspace(self._real_root(), path)

    async def resolve(self, path: str) -> Path:
        """The real location of workspace-relative ``path``; raises :class:`WorkspaceViolation`."""
        return await ato_thread(self._resolve_now, path)

    async def read(self, path: str) -> str | None:
        """The UTF-8 content of ``path``, or ``None`` when the file does not exist.

        Raises :class:`WorkspaceViolation` for a path outside the workspace, a
        directory, a file over ``max_bytes`` or one that is not UTF-8.
        """
        return await ato_thread(self._read_now, path)

    def _read_now(self, path: str) -> str | None:
        return read_beneath(self._real_root(), self._resolve_now(path), path, self.max_bytes)

    def _read_chunk(self, paths: list[str]) -> list[ReadOutcome]:
        out: list[ReadOutcome] = []
        for path in paths:
            try:
                out.append(self._read_now(path))
            except WorkspaceViolation as exc:
                out.append(exc)
        return out

    async def read_many(self, paths: Sequence[str]) -> dict[str, str | None]:
        """Read several files at once; keys are the paths as given, in order.

        The first refused path (in the order given) raises, as reading them one
        by one would.
        """
        wanted = list(paths)
        chunk = max(CHUNK_SIZE, -(-len(wanted) // MAX_PARALLEL_CHUNKS))
        parts = [wanted[i : i + chunk] for i in range(0, len(wanted), chunk)]
        results = await agather(*(ato_thread(self._read_chunk, part) for part in parts))
        out: dict[str, str | None] = {}
        for part, outcomes in zip(parts, results, strict=True):
            for path, outcome in zip(part, outcomes, strict=True):
                if isinstance(outcome, WorkspaceViolation):
                    raise outcome
                out[path] = outcome
        return out

    def _write_all(self, contents: dict[str, str]) -> None:
        targets = {path: self._resolve_now(path) for path in contents}
        for path, content in contents.items():
            check_writable(targets[path], path, content, self.max_bytes)
        directories: set[Path] = set()
        for path, content in contents.items():
            write_beneath(self._real_root(), targets[path], path, content)
            directories.add(targets[path].parent)
        for directory in sorted(directories):
            fsync_directory(directory)

    async def write(self, path: str, content: str) -> None:
        """Atomically replace (or create) ``path`` with ``content``, fsynced."""
        await ato_thread(self._write_all, {path: content})

    async def write_many(self, contents: dict[str, str]) -> None:
        """Write several files; every path and size is checked before the first write."""
        if contents:
            await ato_thread(self._write_all, dict(contents))
