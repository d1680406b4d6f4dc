"""What a matched rule answers: SEARCH/REPLACE edit blocks computed from the prompt's files.

Every function here is pure: it takes the file contents quoted in the prompt
(``None`` for a file the prompt says does not exist, missing for a file it does
not mention) and returns the assistant's reply text.
"""

from __future__ import annotations

import posixpath

from codeagent.edits import render_block

Files = dict[str, str | None]


def clean_path(raw: str) -> str:
    """A path captured from prose, without quotes, backticks or trailing punctuation."""
    path = raw.strip().strip("`'\"").rstrip(".,;:!?)").strip("`'\"")
    if not path:
        return path
    normal = posixpath.normpath(path)
    return normal[2:] if normal.startswith("./") else normal


def lookup(files: Files, path: str) -> tuple[str, str | None]:
    """The prompt's own spelling of ``path`` and its content (``None``: absent or not quoted)."""
    if path in files:
        return path, files[path]
    for name, content in files.items():
        if clean_path(name) == path:
            return name, content
    return path, None


def _line(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def unique_suffix(content: str) -> str:
    """The shortest run of whole lines at the end of ``content`` that occurs nowhere earlier.

    Whitespace-only runs are skipped (an empty SEARCH means "append" to the
    agent), so the result always holds some text. Returns ``""`` when the
    content is blank.
    """
    if not content.strip():
        return ""
    lines = content.splitlines(keepends=True)
    for count in range(1, len(lines) + 1):
        suffix = "".join(lines[-count:])
        if not suffix.strip():
            continue
        if content.find(suffix) == len(content) - len(suffix):
            return suffix
    return content


def append_line(files: Files, path: str, line: str) -> str:
    """Reply appending ``line`` to ``path``: SEARCH is the file's unique last lines."""
    name, content = lookup(files, path)
    if content is None or not content.strip():
        block = render_block(name, "", _line(line))
    else:
        suffix = unique_suffix(_line(content))
        block = render_block(name, suffix, suffix + _line(line))
    return f"I will append one line to {name}.\n\n{block}"


def create_file(files: Files, path: str, content: str) -> str:
    """Reply creating ``path`` with ``content`` (replacing it whole when the prompt shows it)."""
    name, current = lookup(files, path)
    if current is not None and current.strip():
        block = render_block(name, current, _line(content))
        return f"{name} already exists; I will replace its content.\n\n{block}"
    block = render_block(name, "", _line(content) if content else "")
    return f"I will create {name}.\n\n{block}"


def replace_text(files: Files, path: str, old: str, new: str) -> str:
    """Reply replacing the first ``old`` with ``new`` in ``path``.

    SEARCH is exactly the whole line(s) holding that occurrence; REPLACE is the
    same lines with the change made. If the file or the text is not in the
    prompt the reply is a plain sentence without any edit block.
    """
    name, content = lookup(files, path)
    if content is None:
        return f"I cannot replace {old!r} in {name}: the file was not shown to me."
    if not old:
        return f"I cannot replace an empty text in {name}."
    at = content.find(old)
    if at < 0:
        return f"I cannot find {old!r} in {name}, so I am not proposing any edit."
    start = content.rfind("\n", 0, at) + 1
    end_nl = content.find("\n", at + len(old))
    end = len(content) if end_nl < 0 else end_nl + 1
    search = content[start:end]
    replace = search[: at - start] + new + search[at - start + len(old) :]
    block = render_block(name, search, replace)
    return f"I will replace {old!r} with {new!r} in {name}.\n\n{block}"


def no_rule_reply(task: str) -> str:
    """The plain sentence answered when no rule matches (it holds no edit block)."""
    short = task if len(task) <= 120 else task[:117] + "..."
    return f"I have no scripted answer for the task {short!r}, so I am not proposing any edits."
