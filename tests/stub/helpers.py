"""Helpers shared by the stub LLM tests."""

from __future__ import annotations

from typing import Any

from codeagent.edits import apply_blocks, parse_edit_blocks
from codeagent.models import Todo
from codeagent.prompts import build_messages


def chat_body(text: str, files: dict[str, str | None] | None = None, **extra: Any) -> dict[str, Any]:
    """A chat completion request for one todo, built the way the agent builds it."""
    messages = build_messages(Todo(id="t-0001", text=text), files or {})
    return {"model": "stub-coder", "messages": messages, **extra}


def reply_text(body: dict[str, Any]) -> str:
    """The assistant text of a chat completion body."""
    content = body["choices"][0]["message"]["content"]
    assert isinstance(content, str)
    return content


def apply_reply(reply: str, files: dict[str, str | None]) -> dict[str, str]:
    """What the agent does with a reply: parse its edit blocks and apply them in memory."""
    return apply_blocks(files, parse_edit_blocks(reply))
