"""Git utilities, async: asyncio subprocesses with list arguments, one writer per repository.

Same commands and the same environment as the legacy implementation, so both
produce the same history: author and committer from the agent's config,
system config ignored, signing off, inherited ``GIT_*`` variables dropped.
Options end with ``--end-of-options`` / ``--`` wherever git takes a revision or
paths, so no todo id or file name can be read as an option. Commits of one
repository are serialised by a lock shared by every :class:`AsyncGitRepo` on
that path in the process (keyed by the absolute path, computed without I/O);
git's own ``index.lock`` still guards against other processes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import GitError
from core_async._compat import arun_process, ashared_lock

TRAILER_KEY = "Todo-Id"
_RECORD_SEP = "\x1e"
_FIELD_SEP = "\x1f"


class AsyncGitRepo:
    """One workspace's git repository."""

    def __init__(
        self, root: Path, author_name: str, author_email: str, *, timeout: float | None = 120.0
    ) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self._lock_key = f"git:{os.path.abspath(self.root)}"
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
        probe = await self._run(["rev-parse", "--is-inside-work-tree"], check=False)
        if probe.strip() == "true":
            return
        await self._run(["init", "-q", "-b", "main"])

    async def head(self) -> str | None:
        """The sha of ``HEAD``, or ``None`` in a repository with no commit yet."""
        out = await self._run(
            ["rev-parse", "--verify", "-q", "--end-of-options", "HEAD^{commit}"], check=False
        )
        return out.strip() or None

    async def find_commit(self, todo_id: str) -> str | None:
        """The newest commit in ``HEAD``'s history whose ``Todo-Id`` trailer is ``todo_id``."""
        if await self.head() is None:
            return None
        out = await self._run(
            [
                "log",
                "-F",
                f"--grep={TRAILER_KEY}: {todo_id}",
                f"--format=%H{_FIELD_SEP}%(trailers:key={TRAILER_KEY},valueonly,separator=%x1f){_RECORD_SEP}",
                "--end-of-options",
                "HEAD",
            ]
        )
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
        async with ashared_lock(self._lock_key):
            if paths:
                await self._run(["add", "-A", "--", *paths])
            args = ["commit", "-q", "--allow-empty", "--no-edit", "-F", "-"]
            if paths:
                args += ["--only", "--", *paths]
            await self._run(args, stdin=message)
            sha = await self.head()
        if sha is None:  # pragma: no cover - git said it committed
            raise GitError(args, 0, "no HEAD after commit")
        return sha
