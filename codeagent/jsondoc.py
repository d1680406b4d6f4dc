"""Parse JSON documents into models with errors that name file, field and line."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from codeagent.errors import StateFileError

M = TypeVar("M", bound=BaseModel)


def field_name(loc: tuple[int | str, ...]) -> str:
    """``("llm", "timeout")`` -> ``"llm.timeout"``; list indexes as ``todos[3]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(document)"


def line_of_key(text: str, key: str) -> int | None:
    """Best-effort line number of ``"key"`` in a JSON document (for error messages)."""
    needle = f'"{key}"'
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    return None


def parse_document(
    text: str,
    model: type[M],
    source: str,
    error: type[StateFileError] | Any = StateFileError,
) -> M:
    """Decode ``text`` as JSON and validate it as ``model``.

    ``error`` is the exception class to raise; it is called as
    ``error(source, message, field=..., line=...)``.
    """
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(source, f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
    except RecursionError as exc:  # "[[[[..." thousands deep: the decoder recurses per level
        raise error(source, "not valid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise error(source, "the document must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        last_key = next((str(p) for p in reversed(loc) if isinstance(p, str)), None)
        line = line_of_key(text, last_key) if last_key else None
        raise error(source, first["msg"], field=field_name(loc), line=line) from exc
