"""Git utilities for the legacy agent: ``subprocess.run`` with list arguments.

Commits do not depend on the person's git configuration: author and committer
come from the agent's config through the environment, system config is
ignored (``GIT_CONFIG_NOSYSTEM``), signing is off (``-c commit.gpgsign=false``),
and ``GIT_*`` variables inherited from a caller (``GIT_DIR``, ``GIT_INDEX_FILE``
inside a hook, ...) are dropped so that git always works on the workspace.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from codeagent.errors import GitError

TRAILER_KEY = "Todo-Id"
_RECORD_SEP = "\x1e"
_FIELD_SEP = "\x1f"


class GitRepo:
    """One workspace's git repository."""

    def __init__(self, root: Path, author_name: str, author_email: str) -> None:
        self.root = Path(root)
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

    def _run(self, args: list[str], *, input: str | None = None, check: bool = True) -> str:
        """Run ``git <args>`` in the workspace; return stdout, raise :class:`GitError` on failure."""
        cmd = ["git", "-c", "commit.gpgsign=false", "-c", "core.quotepath=false", *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.root,
                env=self._env,
                input=input,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                check=False,
            )
        except OSError as exc:  # git missing, workspace missing
            raise GitError(args, -1, str(exc)) from exc
        if check and proc.returncode != 0:
            raise GitError(args, proc.returncode, proc.stderr or proc.stdout)
        return proc.stdout

    def ensure_repo(self) -> None:
        """Make the workspace a git repository (``git init -b main``) unless it already is in one."""
        probe = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"],
            cwd=self.root,
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "true":
            return
        self._run(["init", "-q", "-b", "main"])

    def head(self) -> str | None:
        """The sha of ``HEAD``, or ``None`` in a repository with no commit yet."""
        out = self._run(["rev-parse", "--verify", "-q", "HEAD^{commit}"], check=False).strip()
        return out or None

    def find_commit(self, todo_id: str) -> str | None:
        """The newest commit in ``HEAD``'s history whose ``Todo-Id`` trailer is ``todo_id``."""
        if self.head() is None:
            return None
        out = self._run(
            [
                "log",
                "-F",
                f"--grep={TRAILER_KEY}: {todo_id}",
                f"--format=%H{_FIELD_SEP}%(trailers:key={TRAILER_KEY},valueonly,separator=%x1f){_RECORD_SEP}",
                "HEAD",
            ]
        )
        for record in out.split(_RECORD_SEP):
            sha, _, values = record.strip().partition(_FIELD_SEP)
            if sha and todo_id in (v.strip() for v in values.split(_FIELD_SEP)):
                return sha
        return None

    def commit(self, message: str, paths: Sequence[str]) -> str:
        """Stage ``paths`` and commit them (and only them) with ``message``; return the new sha.

        The commit is made even when nothing changed (``--allow-empty``), so every
        todo gets exactly one commit carrying its trailer.
        """
        paths = list(paths)
        if paths:
            self._run(["add", "-A", "--", *paths])
        args = ["commit", "-q", "--allow-empty", "--no-edit", "-F", "-"]
        if paths:
            args += ["--only", "--", *paths]
        self._run(args, input=message)
        sha = self.head()
        if sha is None:  # pragma: no cover - git said it committed
            raise GitError(args, 0, "no HEAD after commit")
        return sha
