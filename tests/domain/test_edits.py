"""The SEARCH/REPLACE parser and applier: table tests, malformed blocks included."""

from __future__ import annotations

import pytest

from codeagent.edits import EditBlock, apply_block, apply_blocks, parse_edit_blocks, render_block
from codeagent.errors import EditError

S, D, R = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"

PARSE_CASES: list[tuple[str, str, list[tuple[str, str, str]]]] = [
    ("plain", f"a.py\n{S}\nx = 1\n{D}\nx = 2\n{R}\n", [("a.py", "x = 1\n", "x = 2\n")]),
    ("fenced", f"a.py\n```python\n{S}\nx\n{D}\ny\n{R}\n```\n", [("a.py", "x\n", "y\n")]),
    ("name in backticks", f"`src/a.py`\n```\n{S}\nx\n{D}\ny\n{R}\n```", [("src/a.py", "x\n", "y\n")]),
    ("bold name with colon", f"**src/a.py**:\n```\n{S}\nx\n{D}\ny\n{R}\n```", [("src/a.py", "x\n", "y\n")]),
    ("name on the fence", f"```src/a.py\n{S}\nx\n{D}\ny\n{R}\n```", [("src/a.py", "x\n", "y\n")]),
    ("empty search creates", f"new.txt\n{S}\n{D}\nhello\n{R}\n", [("new.txt", "", "hello\n")]),
    ("empty replace deletes", f"a.py\n{S}\nx\n{D}\n{R}\n", [("a.py", "x\n", "")]),
    (
        "two blocks, second reuses the file",
        f"prose first\n\na.py\n{S}\nx\n{D}\ny\n{R}\n{S}\nz\n{D}\nw\n{R}\n",
        [("a.py", "x\n", "y\n"), ("a.py", "z\n", "w\n")],
    ),
    (
        "two files",
        f"a.py\n{S}\nx\n{D}\ny\n{R}\nb.py\n{S}\n1\n{D}\n2\n{R}\n",
        [("a.py", "x\n", "y\n"), ("b.py", "1\n", "2\n")],
    ),
    (
        "loose markers",
        "a.py\n<<<<<<<< SEARCH\nx\n=========\ny\n>>>>>>>> REPLACE\n",
        [("a.py", "x\n", "y\n")],
    ),
    (
        "a ===== line inside SEARCH is content",
        f"notes.txt\n{S}\nNotes\n=====\n{D}\nNotes\n=====\nmore\n{R}\n",
        [("notes.txt", "Notes\n=====\n", "Notes\n=====\nmore\n")],
    ),
    ("no blocks at all", "I could not find anything to change.", []),
]


@pytest.mark.parametrize(("name", "text", "expected"), PARSE_CASES, ids=[c[0] for c in PARSE_CASES])
def test_parse(name: str, text: str, expected: list[tuple[str, str, str]]) -> None:
    blocks = parse_edit_blocks(text)
    assert [(b.path, b.search, b.replace) for b in blocks] == expected
    assert [b.index for b in blocks] == list(range(1, len(expected) + 1))


MALFORMED: list[tuple[str, str, str]] = [
    ("no file name", f"{S}\nx\n{D}\ny\n{R}\n", "edit block 1: no file name"),
    ("no divider", f"a.py\n{S}\nx\ny\n{R}\n", "edit block 1 for a.py: missing '=======' divider"),
    ("unterminated", f"a.py\n{S}\nx\n{D}\ny\n", "edit block 1 for a.py: missing '>>>>>>> REPLACE'"),
    ("new SEARCH inside block", f"a.py\n{S}\nx\n{S}\ny\n{D}\nz\n{R}\n", "edit block 1 for a.py: missing '>>>>>>> REPLACE'"),
    ("stray REPLACE", f"a.py\n{R}\n", "marker outside a block"),
    ("second block broken", f"a.py\n{S}\nx\n{D}\ny\n{R}\nb.py\n{S}\nq\n", "edit block 2 for b.py"),
    ("name with spaces", f"please edit this file\n{S}\nx\n{D}\ny\n{R}\n", "no file name"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "text", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_blocks_name_the_block(name: str, text: str, message: str) -> None:
    with pytest.raises(EditError) as info:
        parse_edit_blocks(text)
    assert message in str(info.value)


APPLY_CASES: list[tuple[str, str | None, EditBlock, str]] = [
    ("exact", "a\nb\nc\n", EditBlock("f", "b\n", "B\n", 1), "a\nB\nc\n"),
    ("first match only", "x\nx\n", EditBlock("f", "x\n", "y\n", 1), "y\nx\n"),
    ("create", None, EditBlock("f", "", "new\n", 1), "new\n"),
    ("append to existing", "a\n", EditBlock("f", "", "b\n", 1), "a\nb\n"),
    ("append adds missing newline", "a", EditBlock("f", "", "b\n", 1), "a\nb\n"),
    ("fill an empty file", "", EditBlock("f", "  \n", "b\n", 1), "b\n"),
    (
        "whitespace-tolerant, re-indented",
        "def f():\n    return 1\n",
        EditBlock("f", "return 1\n", "x = 1\nreturn x\n", 1),
        "def f():\n    x = 1\n    return x\n",
    ),
    (
        "trailing spaces ignored",
        "a  \nb\n",
        EditBlock("f", "a\nb\n", "c\n", 1),
        "c\n",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "block", "expected"), APPLY_CASES, ids=[c[0] for c in APPLY_CASES]
)
def test_apply(name: str, content: str | None, block: EditBlock, expected: str) -> None:
    assert apply_block(content, block) == expected


def test_apply_errors_name_block_and_file() -> None:
    with pytest.raises(EditError, match=r"edit block 3 for f\.py: SEARCH text not found.*'nope'"):
        apply_block("a\n", EditBlock("f.py", "nope\n", "x\n", 3))
    with pytest.raises(EditError, match=r"edit block 1 for g\.py: the file does not exist"):
        apply_block(None, EditBlock("g.py", "x\n", "y\n", 1))


def test_apply_blocks_chains_edits_and_reports_only_touched_files() -> None:
    blocks = parse_edit_blocks(
        render_block("a", "1\n", "2\n") + render_block("a", "2\n", "3\n") + render_block("n", "", "x\n")
    )
    out = apply_blocks({"a": "1\n", "untouched": "u\n"}, blocks)
    assert out == {"a": "3\n", "n": "x\n"}


def test_render_round_trips() -> None:
    text = render_block("dir/f.md", "old", "new")
    assert parse_edit_blocks(text) == [EditBlock("dir/f.md", "old\n", "new\n", 1)]


def test_an_answer_that_is_not_utf8_text_is_refused() -> None:
    """Chaos campaign finding: a JSON ``\\ud800`` escape in an answer decodes to a lone surrogate, which
    no file and no checkpoint can hold: the checkpoint's save raised UnicodeEncodeError (a traceback)."""
    answer = render_block("a.txt", "", "bad \ud800 text\n")
    with pytest.raises(EditError, match="not UTF-8 text"):
        parse_edit_blocks(answer)
