"""Test support for the git suites: count the git processes an operation starts, compare two commits.

:class:`GitSpy` puts a stand-in ``git`` first on ``PATH`` that logs its arguments and
runs the real git, so it sees every git child of every implementation (``subprocess``,
the pidfd spawner, git's own sub-commands started through ``PATH`` do not matter:
git runs those from its exec path). The tests' own ``git`` helper goes through it too,
so a test calls :meth:`GitSpy.reset` right before the operation it measures.
"""

from __future__ import annotations

import os
import shlex
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.parity._support import git


class GitSpy:
    """Every git process started while it is installed, one line of arguments each."""

    def __init__(self, where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        real = shutil.which("git")
        assert real is not None
        where.mkdir(parents=True, exist_ok=True)
        self.log = where / "git-calls.log"
        shim = where / "git"
        shim.write_text(
            f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(str(self.log))}\nexec {shlex.quote(real)} "$@"\n'
        )
        shim.chmod(0o755)
        monkeypatch.setenv("PATH", f"{where}{os.pathsep}{os.environ['PATH']}")

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@contextmanager
def local_timezone(spec: str) -> Iterator[None]:
    """``TZ=spec`` for this process (libgit2 reads the C library's zone) and its children."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = spec
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def _ident(value: str) -> tuple[str, int, str]:
    """``Name <email> 1700000000 +0530`` -> (``Name <email>``, time, zone)."""
    who, when, zone = value.rsplit(" ", 2)
    return who, int(when), zone


def commit_facts(root: Path, rev: str = "HEAD") -> dict[str, Any]:
    """What a commit is made of, minus its times (returned apart, under ``"times"``)."""
    raw = git(root, "cat-file", "commit", rev)
    headers, _, message = raw.partition("\n\n")
    fields: dict[str, list[str]] = {}
    for line in headers.splitlines():
        key, _, value = line.partition(" ")
        fields.setdefault(key, []).append(value)
    author, author_time, author_zone = _ident(fields["author"][0])
    committer, committer_time, committer_zone = _ident(fields["committer"][0])
    return {
        "headers": sorted(fields),
        "tree": fields["tree"][0],
        "parents": fields.get("parent", []),
        "author": (author, author_zone),
        "committer": (committer, committer_zone),
        "message": message,
        "times": (author_time, committer_time),
    }


def repo_state(root: Path) -> dict[str, str]:
    """The index and work tree as git reports them, and the reflog's last subject."""
    return {
        "ls_files": git(root, "ls-files", "-s"),
        "status": git(root, "status", "--porcelain"),
        "staged": git(root, "diff", "--cached", "--name-status"),
        "reflog": git(root, "reflog", "-1", "--format=%gs"),
        "branch": git(root, "rev-parse", "--abbrev-ref", "HEAD"),
    }
