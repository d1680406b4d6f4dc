"""Git utilities, async: libgit2 in process, the git CLI where libgit2 differs; one writer per repository.

The CLI path. Same commands and the same environment as the legacy implementation, so both
produce the same history: author and committer from the agent's config,
system config ignored, signing off, inherited ``GIT_*`` variables dropped.
Options end with ``--end-of-options`` / ``--`` wherever git takes a revision or
paths, so no todo id or file name can be read as an option. Commits of one
repository are serialised by a lock shared by every :class:`AsyncGitRepo` on
that path in the process (keyed by the absolute path, computed without I/O);
git's own ``index.lock`` still guards against other processes.

Spawning git is most of a todo's CPU (about 3 ms of parent and child CPU per
call on this stack), so each operation spawns as few as it can: ``find_commit``
runs one ``git log`` (it asks for ``HEAD`` only when that log fails, to tell an
unborn branch from an error) and ``commit`` runs ``add`` and ``commit`` and reads
the new sha from commit's own summary line (``core.abbrev=no`` prints it in
full), falling back to ``rev-parse`` only if that line is not understood.
``git commit`` also starts ``git maintenance run --auto`` after every commit
(a whole extra process, half of a commit's CPU: 5.4 ms -> 3.2 ms here without
it), so commits run with ``maintenance.auto=false`` and the repository gets
``git gc --auto`` once every :attr:`AsyncGitRepo.maintenance_every` commits
instead (it detaches, and does nothing until git's own thresholds are met).
Legacy runs five or six processes per todo for the same history; the CLI path here runs three.

In-process git (``native``, the default): with pygit2 importable, each operation is
one call into :mod:`core_async.git_native` (libgit2), one thread hop, no process:

* ``commit`` stages and commits in process, producing what ``git add -A`` + ``git commit
  --only`` would (same tree, message bytes, identity, parent, ref and index); a
  repository or a commit libgit2 would get wrong (hooks, conversion attributes such
  as LFS, ``core.autocrlf``, an odd path, a merge in progress...: see that module)
  goes through the CLI as before, the reason logged once per repository;
* ``find_commit`` answers from the repository's trailer index
  (:class:`core_async.git_trailers.TrailerIndex`): one ``HEAD`` read and a dict
  lookup, whatever the history's length. The index is built by one ``git log`` the
  first time (and whenever ``HEAD`` moved other than by this process's own commits:
  an outside commit, a reset, a rebase, a branch switch), and extended by every
  commit made here;
* ``head`` and ``ensure_repo``'s probe read the repository directly.

Per todo that is one thread hop for the lookup and one for the commit, and no
process (bar the ``gc --auto`` every :attr:`AsyncGitRepo.maintenance_every` commits).
``native=False`` (or no pygit2) is the CLI path above, unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import GitError
from core_async._compat import arun_process, ashared_lock, ato_thread, ato_thread_settled
from core_async.git_native import NativeRepo, NativeUnavailable, native_repo
from core_async.git_trailers import TRAILER_KEY, rebuild_args

__all__ = ["TRAILER_KEY", "AsyncGitRepo"]

_RECORD_SEP = "\x1e"
_FIELD_SEP = "\x1f"
#: ``[main 1f0c...]``, ``[main (root-commit) 1f0c...]``, ``[detached HEAD 1f0c...]``: git's summary line.
_SUMMARY = re.compile(r"^\[[^\]\n]*?\b([0-9a-f]{40}|[0-9a-f]{64})\] ", re.MULTILINE)


class AsyncGitRepo:
    """One workspace's git repository."""

    #: Commits between two ``git gc --auto`` runs (git's own per-commit check is switched off).
    maintenance_every = 50

    def __init__(
        self,
        root: Path,
        author_name: str,
        author_email: str,
        *,
        timeout: float | None = 120.0,
        native: bool = True,
    ) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self._lock_key = f"git:{os.path.abspath(self.root)}"
        self._commits = 0
        self._author = (author_name, author_email)
        #: The in-process repository shared by every component on this path; ``None``: CLI only.
        self.native: NativeRepo | None = native_repo(self.root) if native else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(
            GIT_AUTHOR_NAME=author_name,
            GIT_AUTHOR_EMAIL=author_email,
            GIT_COMMITTER_NAME=author_name,
            GIT_COMMITTER_EMAIL=author_email,
            GIT_CONFIG_NOSYSTEM="1",
            GIT_TERMINAL_PROMPT="0",
            LC_ALL="C",
        )
        self._env = env

    async def _run(self, args: list[str], *, stdin: str | None = None, check: bool = True) -> str:
        """Run ``git <args>`` in the workspace; return stdout, raise :class:`GitError` on failure."""
        cmd = ["git", "-c", "commit.gpgsign=false", "-c", "core.quotepath=false", *args]
        try:
            done = await arun_process(
                cmd,
                cwd=self.root,
                env=self._env,
                input_bytes=None if stdin is None else stdin.encode("utf-8"),
                time_limit=self.timeout,
            )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise GitError(args, -1, f"no exit within {self.timeout}s") from exc
        except OSError as exc:  # git missing, workspace missing
            raise GitError(args, -1, str(exc)) from exc
        stdout = done.stdout.decode("utf-8", errors="replace")
        if check and done.returncode != 0:
            raise GitError(args, done.returncode, done.stderr.decode("utf-8", errors="replace") or stdout)
        return stdout

    async def ensure_repo(self) -> None:
        """Make the workspace a git repository (``git init -b main``) unless it already is in one."""
        if self.native is not None and await ato_thread(self.native.probe):
            return
        probe = await self._run(["rev-parse", "--is-inside-work-tree"], check=False)
        if probe.strip() == "true":
            return
        await self._run(["init", "-q", "-b", "main"])

    async def head(self) -> str | None:
        """The sha of ``HEAD``, or ``None`` in a repository with no commit yet."""
        if self.native is not None:
            try:
                return await ato_thread(self.native.head)
            except NativeUnavailable:
                pass
        out = await self._run(
            ["rev-parse", "--verify", "-q", "--end-of-options", "HEAD^{commit}"], check=False
        )
        return out.strip() or None

    async def find_commit(self, todo_id: str) -> str | None:
        """The newest commit in ``HEAD``'s history whose ``Todo-Id`` trailer is ``todo_id``."""
        native = self.native
        if native is not None and "\n" not in todo_id:
            try:
                known, found = await ato_thread(native.lookup, todo_id)
            except NativeUnavailable:
                pass
            else:
                if known:
                    return found
                assert found is not None  # the HEAD to index
                out = await self._run(rebuild_args(found))
                return await ato_thread(native.install, found, out, todo_id)
        return await self._log_find_commit(todo_id)

    async def _log_find_commit(self, todo_id: str) -> str | None:
        """``find_commit`` by walking the history with ``git log --grep`` (the CLI path)."""
        args = [
            "log",
            "-F",
            f"--grep={TRAILER_KEY}: {todo_id}",
            f"--format=%H{_FIELD_SEP}%(trailers:key={TRAILER_KEY},valueonly,separator=%x1f){_RECORD_SEP}",
            "--end-of-options",
            "HEAD",
        ]
        try:
            out = await self._run(args)
        except GitError:
            if await self.head() is None:  # an unborn branch has no history to search
                return None
            raise
        for record in out.split(_RECORD_SEP):
            sha, _, values = record.strip().partition(_FIELD_SEP)
            if sha and todo_id in (v.strip() for v in values.split(_FIELD_SEP)):
                return sha
        return None

    async def commit(self, message: str, paths: Sequence[str]) -> str:
        """Stage ``paths`` and commit them (and only them) with ``message``; return the new sha.

        The commit is made even when nothing changed (``--allow-empty``), so
        every todo gets exactly one commit carrying its trailer. One writer per
        repository at a time.
        """
        paths = list(paths)
        native = self.native
        async with ashared_lock(self._lock_key):
            sha: str | None = None
            if native is not None:
                try:
                    # Settled: the writer lock is held until the commit is really over.
                    sha = await ato_thread_settled(native.commit, message, paths, *self._author)
                except NativeUnavailable:
                    sha = None
            if sha is None:
                sha = await self._cli_commit(message, paths)
                if native is not None:
                    await ato_thread_settled(native.note_commit, sha)
        self._commits += 1
        if self._commits % self.maintenance_every == 0:
            # Outside the writer lock: gc takes git's own locks and detaches by default.
            await self._run(["gc", "--auto", "--quiet"], check=False)
        return sha

    async def _cli_commit(self, message: str, paths: list[str]) -> str:
        """``git add -A -- paths`` and ``git commit --only -- paths``; the new sha (the CLI path)."""
        if paths:
            await self._run(["add", "-A", "--", *paths])
        args = ["-c", "core.abbrev=no", "-c", "maintenance.auto=false"]
        args += ["commit", "--allow-empty", "--no-edit", "-F", "-"]
        if paths:
            args += ["--only", "--", *paths]
        summary = _SUMMARY.search(await self._run(args, stdin=message))
        sha = summary.group(1) if summary else await self.head()
        if sha is None:  # pragma: no cover - git said it committed
            raise GitError(args, 0, "no HEAD after commit")
        return sha
