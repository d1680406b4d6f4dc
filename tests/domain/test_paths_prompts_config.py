"""Path jail (lexical half), prompt round trip, config and state parsing errors."""

from __future__ import annotations

import pytest

from codeagent.config import AgentConfig, parse_config, render_config
from codeagent.errors import ConfigError, StateFileError, WorkspaceViolation
from codeagent.jsondoc import field_name, parse_document
from codeagent.models import (
    StatusFile,
    Todo,
    TodoFile,
    TodoState,
    TodoStatus,
    new_todo_id,
    pending_todos,
    todo_view,
)
from codeagent.paths import check_relative_path, check_resolved
from codeagent.prompts import build_messages, commit_message, parse_user_prompt


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("/etc/passwd", "absolute"),
        ("C:\\x", "absolute"),
        ("\\\\server\\x", "absolute"),
        (".git/config", ".git"),
        (".GIT/hooks/pre-commit", ".git"),
        (".agent/status.json", ".agent"),
        ("a\x00b", "NUL"),
        (".", "workspace itself"),
        # Found by the chaos campaign (adversarial edits): each was accepted before.
        ("vendor/lib/.git/hooks/post-checkout", "nested repository"),
        ("a/.GIT/config", "nested repository"),
        ("a\nb.txt", "control character"),
        ("a\rb.txt", "control character"),
        ("tab\tname", "control character"),
        ("-rf.txt", "option"),
        ("src/--exec=x", "option"),
        ("bad\ud800.txt", "not UTF-8"),
    ],
)
def test_refused_paths(path: str, reason: str) -> None:
    with pytest.raises(WorkspaceViolation, match=reason.replace(".", r"\.").replace("(", r"\(")):
        check_relative_path(path)


@pytest.mark.parametrize(
    ("path", "normal"), [("a.txt", "a.txt"), ("./src//x.py", "src/x.py"), ("d\\e.txt", "d/e.txt")]
)
def test_accepted_paths_are_normalised(path: str, normal: str) -> None:
    assert check_relative_path(path) == normal


def test_check_resolved() -> None:
    check_resolved("/w", "/w/a/b", "a/b")
    for target in ("/etc/passwd", "/w2/x", "/w"):
        with pytest.raises(WorkspaceViolation):
            check_resolved("/w", target, "x")
    with pytest.raises(WorkspaceViolation, match=r"\.git"):
        check_resolved("/w", "/w/.git/config", "link")
    with pytest.raises(WorkspaceViolation, match=r"\.git"):  # a symlink into a nested repository's .git
        check_resolved("/w", "/w/vendor/lib/.git/hooks/x", "link")
    check_resolved("/w", "/w/a/.gitignore", "a/.gitignore")


def test_prompt_round_trip_keeps_files_faithfully() -> None:
    todo = Todo(id="t-0001", text="append a line x to file a.md", files=["a.md", "gone.txt"])
    content = "```\nfenced\n```\n----- not a marker -----\n"
    messages = build_messages(todo, {"a.md": content, "gone.txt": None, "empty.txt": ""})
    assert messages[0]["role"] == "system"
    todo_id, text, files = parse_user_prompt(messages[1]["content"])
    assert (todo_id, text) == ("t-0001", todo.text)
    assert files == {"a.md": content, "gone.txt": None, "empty.txt": ""}


def test_commit_message_has_the_trailer_and_a_short_subject() -> None:
    todo = Todo(id="t-0042", text="x" * 100)
    message = commit_message(todo)
    subject, _, rest = message.partition("\n\n")
    assert len(subject) == 72
    assert rest == "Todo-Id: t-0042\n"


def test_config_defaults_and_errors() -> None:
    assert parse_config("") == AgentConfig()
    assert parse_config(render_config(AgentConfig())) == AgentConfig()
    cfg = parse_config('{"llm": {"base_url": "http://x/v1", "timeout": 5}}')
    assert cfg.llm.timeout == 5
    with pytest.raises(ConfigError) as info:
        parse_config('{\n  "llm": {\n    "timeout": -1\n  }\n}', ".agent/config.json")
    assert (info.value.field, info.value.line) == ("llm.timeout", 3)
    assert str(info.value).startswith(".agent/config.json:3: llm.timeout:")
    with pytest.raises(ConfigError, match="Extra inputs"):
        parse_config('{"llm": {"modle": "x"}}')
    with pytest.raises(ConfigError, match=r":2: not valid JSON"):
        parse_config('{\n  "llm": }')
    with pytest.raises(ConfigError, match="must be a JSON object"):
        parse_config("[1, 2]")


def test_state_documents_name_the_field() -> None:
    text = '{"version": 1, "todos": [{"id": "t-1", "text": "ok"}, {"id": "bad id!", "text": "x"}]}'
    with pytest.raises(StateFileError) as info:
        parse_document(text, TodoFile, ".agent/todos.json")
    assert info.value.field == "todos[1].id"
    assert field_name(("todos", 1, "id")) == "todos[1].id"


def test_models_helpers() -> None:
    todos = [Todo(id=f"t-{i}", text="x") for i in range(4)]
    status = StatusFile(
        todos={
            "t-0": TodoState(status=TodoStatus.DONE),
            "t-1": TodoState(status=TodoStatus.FAILED),
            "t-2": TodoState(status=TodoStatus.INTERRUPTED),
        }
    )
    assert [t.id for t in pending_todos(todos, status)] == ["t-2", "t-3"]
    assert new_todo_id({"t-0001", "t-0003"}) == "t-0004"
    assert new_todo_id({"t-0002"}) == "t-0003"
    view = todo_view(todos[0], status.todos["t-0"])
    assert view["status"] == "done"
    assert view["updated_at"].endswith("Z")
    assert todo_view(todos[3], None)["status"] == "pending"


def test_documents_nested_too_deeply_are_refused_with_the_parsers_error() -> None:
    """Chaos campaign finding: JSON thousands of levels deep raised RecursionError out of every reader."""
    from codeagent.models import StatusFile, TodoFile

    deep = '{"a": ' * 50_000 + "1" + "}" * 50_000
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config(deep)
    for model in (TodoFile, StatusFile):
        with pytest.raises(StateFileError, match="nested too deeply"):
            parse_document("[" * 100_000 + "]" * 100_000, model, "doc.json")
