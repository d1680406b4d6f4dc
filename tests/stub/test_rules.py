"""Scripted answers: rules file parsing, the edit each action proposes, and the agent's round trip."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from codeagent.edits import parse_edit_blocks
from llm_stub import StubOptions, StubServer
from llm_stub.actions import unique_suffix
from llm_stub.rules import RuleBook, RulesError, parse_rules
from tests.stub.helpers import apply_reply, chat_body, reply_text

BOOK = RuleBook.load()


def answer(text: str, files: dict[str, str | None] | None = None) -> str:
    body = chat_body(text, files)
    return BOOK.answer(body["messages"][-1]["content"]).text


@pytest.mark.parametrize(
    ("content", "suffix"),
    [
        ("a\nb\nc\n", "c\n"),
        ("a\nb\na\n", "b\na\n"),
        ("x\nx\nx\n", "x\nx\nx\n"),
        ("a\n\n", "a\n\n"),
        ("a\nb\n  \n", "b\n  \n"),
        ("\n\n", ""),
    ],
)
def test_unique_suffix_is_the_shortest_run_of_last_lines_found_once(content: str, suffix: str) -> None:
    assert unique_suffix(content) == suffix


ROUND_TRIPS = [
    pytest.param(
        'append a line "hello world" to file notes.txt',
        {"notes.txt": "first\nsecond\n"},
        {"notes.txt": "first\nsecond\nhello world\n"},
        id="append",
    ),
    pytest.param(
        'append a line "hello world" to file notes.txt',
        {"notes.txt": "end\nmiddle\nend\n"},
        {"notes.txt": "end\nmiddle\nend\nhello world\n"},
        id="append-after-repeated-last-line",
    ),
    pytest.param(
        'append a line "hello" to file notes.txt',
        {"notes.txt": "no newline at end"},
        {"notes.txt": "no newline at end\nhello\n"},
        id="append-to-file-without-final-newline",
    ),
    pytest.param(
        'append a line "first" to file new.txt',
        {"new.txt": None},
        {"new.txt": "first\n"},
        id="append-to-missing-file",
    ),
    pytest.param(
        'append a line "first" to file empty.txt',
        {"empty.txt": ""},
        {"empty.txt": "first\n"},
        id="append-to-empty-file",
    ),
    pytest.param(
        'Add a line "x = 1\\ny = 2" to the file src/vars.py.',
        {"src/vars.py": "# vars\n"},
        {"src/vars.py": "# vars\nx = 1\ny = 2\n"},
        id="add-two-lines-with-escapes-and-trailing-period",
    ),
    pytest.param(
        'create file docs/intro.md with content "# Intro"',
        {"docs/intro.md": None},
        {"docs/intro.md": "# Intro\n"},
        id="create",
    ),
    pytest.param(
        'create file docs/intro.md with content "# Intro"',
        {},
        {"docs/intro.md": "# Intro\n"},
        id="create-file-not-named-in-todo",
    ),
    pytest.param(
        'create file docs/intro.md with content "# New"',
        {"docs/intro.md": "# Old\ntext\n"},
        {"docs/intro.md": "# New\n"},
        id="create-over-existing-file",
    ),
    pytest.param(
        'replace "foo" with "bar" in file src/calc.py',
        {"src/calc.py": "def foo(a):\n    return foo_helper(a)\n"},
        {"src/calc.py": "def bar(a):\n    return foo_helper(a)\n"},
        id="replace-first-occurrence",
    ),
    pytest.param(
        'replace "return a\\n    # end" with "return a + 1" in file src/calc.py',
        {"src/calc.py": "def f(a):\n    return a\n    # end\n\nprint(f(1))\n"},
        {"src/calc.py": "def f(a):\n    return a + 1\n\nprint(f(1))\n"},
        id="replace-across-lines",
    ),
    pytest.param(
        'Replace "1" with "2" in src/v.txt',
        {"src/v.txt": "v=1"},
        {"src/v.txt": "v=2\n"},
        id="replace-in-file-without-final-newline",
    ),
]


@pytest.mark.parametrize(("text", "files", "expected"), ROUND_TRIPS)
def test_answers_apply_to_the_expected_content(
    text: str, files: dict[str, str | None], expected: dict[str, str]
) -> None:
    assert apply_reply(answer(text, files), files) == expected


def test_replace_search_is_exactly_the_lines_holding_the_text() -> None:
    files: dict[str, str | None] = {"src/calc.py": "import os\nx = foo + 1\ny = 2\n"}
    [block] = parse_edit_blocks(answer('replace "foo" with "bar" in file src/calc.py', files))
    assert (block.path, block.search, block.replace) == ("src/calc.py", "x = foo + 1\n", "x = bar + 1\n")


def test_append_search_is_the_unique_suffix() -> None:
    files: dict[str, str | None] = {"notes.txt": "a\nb\na\n"}
    [block] = parse_edit_blocks(answer('append a line "c" to file notes.txt', files))
    assert (block.search, block.replace) == ("b\na\n", "b\na\nc\n")


def test_replace_of_text_not_in_the_file_proposes_no_edit() -> None:
    reply = answer('replace "nope" with "x" in file a.py', {"a.py": "print(1)\n"})
    assert parse_edit_blocks(reply) == []
    assert "cannot find 'nope'" in reply


def test_unmatched_task_gets_a_plain_sentence_without_edits() -> None:
    reply = answer("refactor everything, please", {"a.py": "x\n"})
    assert parse_edit_blocks(reply) == []
    assert "no scripted answer" in reply


def test_reply_rule_fills_the_template_from_named_groups() -> None:
    assert answer('say "all good"') == "all good"
    assert BOOK.answer(chat_body('reply "x"')["messages"][-1]["content"]).rule == "reply"


def test_custom_rules_file(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        """
[[rules]]
name = "greet"
pattern = 'greet (?P<who>\\w+)'
action = "reply"
template = "Hello, {who}! (todo {todo_id}) {unknown}"

[[rules]]
name = "log"
pattern = 'log (?P<word>\\w+)'
action = "append"
path = "logs/{word}.log"
line = "saw {word}"
case_sensitive = true
""",
        encoding="utf-8",
    )
    book = RuleBook.load(str(rules))
    text = chat_body("greet Ada")["messages"][-1]["content"]
    assert book.answer(text).text == "Hello, Ada! (todo t-0001) {unknown}"
    reply = book.answer(chat_body("log boot")["messages"][-1]["content"]).text
    assert apply_reply(reply, {}) == {"logs/boot.log": "saw boot\n"}
    assert book.answer(chat_body("LOG boot")["messages"][-1]["content"]).rule is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("rules = 3", "must be an array"),
        ("[[rules]]\npattern = 'x'\naction = 'delete'", "action must be one of"),
        ("[[rules]]\npattern = '(x'\naction = 'reply'\ntemplate = 'y'", "bad pattern"),
        ("[[rules]]\npattern = 'x'\naction = 'reply'", "needs a template"),
        ("[[rules]]\npattern = 'to (?P<path>\\S+)'\naction = 'append'", "uses {line}"),
        (
            "[[rules]]\npattern = 'x'\naction = 'reply'\ntemplate = 'y'\ncolour = 'red'",
            "unknown key(s) colour",
        ),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_bad_rules_files_are_refused_with_the_reason(toml: str, message: str) -> None:
    with pytest.raises(RulesError, match=r"rules\.toml") as info:
        parse_rules(toml, "my/rules.toml")
    assert message in str(info.value)


def test_missing_rules_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read the rules file"):
        StubServer(StubOptions(rules_path=str(tmp_path / "absent.toml")))


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
@pytest.mark.parametrize(
    ("text", "files", "expected"), ROUND_TRIPS[:1] + ROUND_TRIPS[6:7] + ROUND_TRIPS[9:10]
)
async def test_round_trip_over_http(
    stub: StubServer, http2: bool, text: str, files: dict[str, str | None], expected: dict[str, str]
) -> None:
    """build_messages -> stub over HTTP -> parse_edit_blocks -> apply_blocks."""
    async with httpx.AsyncClient(http1=not http2, http2=http2) as client:
        response = await client.post(f"{stub.url}/chat/completions", json=chat_body(text, files))
    assert response.status_code == 200
    assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    assert apply_reply(reply_text(response.json()), files) == expected


async def test_rules_file_can_be_swapped_at_run_time(stub: StubServer, tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[[rules]]\npattern = '.'\naction = 'reply'\ntemplate = 'always this'\n", encoding="utf-8"
    )
    stub.set_options(rules_path=str(rules))
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{stub.url}/chat/completions", json=chat_body("anything"))
        assert reply_text(response.json()) == "always this"
        bad = await client.post(f"{stub.url[:-3]}/_stub/options", json={"rules_path": str(tmp_path / "nope")})
        assert bad.status_code == 400
        assert "cannot read the rules file" in bad.json()["error"]["message"]
        again = await client.post(f"{stub.url}/chat/completions", json=chat_body("anything"))
        assert reply_text(again.json()) == "always this"
