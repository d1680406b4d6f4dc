"""The trailer index's text rules against git itself: message cleanup and trailer reading.

Property tests: every generated message is cleaned as ``git stripspace`` cleans it, and
whenever :func:`message_todo_ids` claims to know a message's ids, they are the ids
git's own ``%(trailers)`` (plus legacy's grep rule) gives for a commit with that message.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core_async.git_trailers import (
    TrailerIndex,
    message_todo_ids,
    parse_rebuild,
    rebuild_args,
    stripspace,
)

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _git(root: Path, *args: str, stdin: str | None = None) -> str:
    """git's stdout, bytes decoded as they are (no newline translation: ``\r`` matters here)."""
    done = subprocess.run(
        ["git", *args],
        cwd=root,
        input=None if stdin is None else stdin.encode(),
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trailers")
    _git(root, "init", "-q", "-b", "main")
    return root


CHUNKS = st.lists(
    st.sampled_from(["a", "b", " ", "\t", "\r", "\v", "#", "é", ":", "\n", "\n\n", "Todo-Id: t-1"]),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(CHUNKS)
def test_stripspace_is_git_stripspace(repo: Path, message: str) -> None:
    assert stripspace(message) == _git(repo, "stripspace", stdin=message)


LINES = st.sampled_from(
    [
        "subject",
        "Fix: the thing",
        "prose line",
        "",
        "",
        "Todo-Id: t-1",
        "Todo-Id: t-2",
        "todo-id: t-1",
        "TODO-ID: t-2 mention Todo-Id: t-2",
        "Todo-Id:  t-1",
        "Todo-Id : t-1",
        "Todo-Id:t-2",
        "Todo-Id: t-1 extra",
        "Signed-off-by: A <a@b>",
        "Reviewed-by: B",
        "  continued",
        "\tcontinued",
        "# comment",
        "---",
        "(cherry picked from commit 0123)",
        "Conflicts:",
        "mentions Todo-Id: t-1 inline",
    ]
)


TRAILERISH = st.sampled_from(
    [
        "Todo-Id: t-1",
        "Todo-Id: t-2",
        "todo-id: t-1",
        "Todo-Id: t-1 extra",
        "Signed-off-by: A <a@b>",
        "Reviewed-by: B",
    ]
)
#: Mostly subject, body, then a last paragraph of trailer-like lines (the shapes the index reads itself).
MESSAGES = st.one_of(
    st.lists(LINES, min_size=1, max_size=8).map("\n".join),
    st.tuples(
        LINES,
        st.lists(st.lists(LINES, min_size=1, max_size=3).map("\n".join), max_size=2),
        st.lists(st.one_of(TRAILERISH, TRAILERISH, LINES), min_size=1, max_size=4).map("\n".join),
    ).map(lambda parts: "\n\n".join([parts[0], *parts[1], parts[2]])),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(MESSAGES)
def test_plain_trailer_reading_is_gits(repo: Path, text: str) -> None:
    message = stripspace(text)
    mine = message_todo_ids(message)
    if not message or mine is None:
        return  # not a plain shape: the index asks git (a rebuild) instead
    sha = _git(repo, "commit-tree", EMPTY_TREE, "-F", "-", stdin=message).strip()
    output = _git(repo, *rebuild_args(sha)[2:])  # without the leading "-c log.showSignature=false"
    theirs = sorted({i for i, s in parse_rebuild(output).items() if s == sha})
    assert sorted(set(mine)) == theirs, message


def test_parse_rebuild_first_commit_wins_and_bad_output_is_refused() -> None:
    out = (
        "b" * 40
        + "\nt-1\x1ft-2\x00x\n\nTodo-Id: t-1\nTodo-Id: t-2\n\x00"
        + "a" * 40
        + "\nt-1\x00y\n\nTodo-Id: t-1\n\x00"
    )
    assert parse_rebuild(out) == {"t-1": "b" * 40, "t-2": "b" * 40}
    assert parse_rebuild("") == {}
    with pytest.raises(ValueError, match="records"):
        parse_rebuild("a" * 40 + "\nt-1\x00")


def test_index_extends_only_from_its_own_head() -> None:
    index = TrailerIndex()
    index.extend([], "r" * 40, "root\n\nTodo-Id: t-1\n")  # a root commit: its history is itself
    assert index.answer("r" * 40, "t-1") == (True, "r" * 40)
    index.extend(["r" * 40], "c" * 40, "child\n\nTodo-Id: t-1\n")
    assert index.answer("c" * 40, "t-1") == (True, "c" * 40)
    index.extend(["x" * 40], "d" * 40, "elsewhere\n\nTodo-Id: t-2\n")  # not on top of the indexed head
    assert index.answer("d" * 40, "t-2") == (False, None)
    assert index.answer("c" * 40, "t-2") == (True, None)
    index.extend(["c" * 40, "x" * 40], "m" * 40, "merge\n\nTodo-Id: t-3\n")  # a merge: no
    assert index.head == "c" * 40
    index.extend(["c" * 40], "e" * 40, "# odd\n\nTodo-Id: t-4\n")  # not plain: rebuild
    assert index.head is None
    index.install("e" * 40, {"t-4": "e" * 40})
    index.extend(["e" * 40], "f" * 40, None)  # parser not trusted here: rebuild
    assert (index.head, index.builds, index.extensions) == (None, 1, 2)
