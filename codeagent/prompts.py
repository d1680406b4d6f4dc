"""Chat prompts for one todo, and the reverse parse the stub LLM uses (sans-I/O).

Files travel between explicit BEGIN/END marker lines rather than Markdown
fences so that a file which itself contains fences is quoted faithfully.
"""

from __future__ import annotations

import re

from codeagent.models import Todo

SYSTEM_PROMPT = """You are Code Agent, an expert software engineer working in a git repository.
Make the change the task asks for by answering with SEARCH/REPLACE edit blocks and nothing else.
Each block is: the file's path on its own line, then a fenced block holding
<<<<<<< SEARCH
the exact existing lines to change
=======
the lines to put in their place
>>>>>>> REPLACE
An empty SEARCH section creates a new file (or appends to an existing one).
Only touch files inside the repository. Never edit files under .git/."""

_BEGIN = "----- BEGIN FILE {path} -----"
_END = "----- END FILE {path} -----"
_ABSENT = "----- FILE {path} DOES NOT EXIST -----"
_FILE_RE = re.compile(
    r"^----- BEGIN FILE (?P<path>.+?) -----\n(?P<body>.*?)^----- END FILE (?P=path) -----$",
    re.S | re.M,
)
_ABSENT_RE = re.compile(r"^----- FILE (?P<path>.+?) DOES NOT EXIST -----$", re.M)
_TASK_RE = re.compile(r"^Task (?P<id>\S+): (?P<text>.*)$", re.M)

Message = dict[str, str]


def build_messages(todo: Todo, files: dict[str, str | None]) -> list[Message]:
    """The chat messages for one todo: the system rules, then the task and its files."""
    parts = [f"Task {todo.id}: {todo.text}", ""]
    if files:
        parts.append("Files:")
        for path, content in files.items():
            if content is None:
                parts.append(_ABSENT.format(path=path))
                continue
            body = content if content.endswith("\n") or not content else content + "\n"
            parts.append(_BEGIN.format(path=path))
            parts.append(body.rstrip("\n") if body else "")
            parts.append(_END.format(path=path))
    else:
        parts.append("No files were named; create what the task needs.")
    user = "\n".join(parts).replace("\n\n----- END", "\n----- END") + "\n"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_user_prompt(text: str) -> tuple[str, str, dict[str, str | None]]:
    """Recover ``(todo id, task text, files)`` from a user message built by :func:`build_messages`.

    File contents come back with a trailing newline (the prompt normalises it).
    Unknown text yields an empty id and the whole message as the task.
    """
    match = _TASK_RE.search(text)
    todo_id, task = (match.group("id"), match.group("text")) if match else ("", text.strip())
    files: dict[str, str | None] = {}
    for m in _FILE_RE.finditer(text):
        files[m.group("path")] = m.group("body")
    for m in _ABSENT_RE.finditer(text):
        files[m.group("path")] = None
    return todo_id, task, files


def commit_message(todo: Todo) -> str:
    """The commit message for a todo: a subject line, then the ``Todo-Id`` trailer."""
    subject = todo.text.strip().splitlines()[0]
    if len(subject) > 72:
        subject = subject[:69] + "..."
    return f"{subject}\n\nTodo-Id: {todo.id}\n"
