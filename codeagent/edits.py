"""SEARCH/REPLACE edit blocks, as aider defines them: parse and apply (sans-I/O).

An answer holds any number of blocks::

    path/to/file.py
    ```python
    <<<<<<< SEARCH
    old lines
    =======
    new lines
    >>>>>>> REPLACE
    ```

The file name is the nearest non-fence line above ``<<<<<<< SEARCH`` (a block
with none reuses the previous block's file). An empty SEARCH creates the file,
or appends to it when it exists. Otherwise the first exact occurrence of SEARCH
(starting at the beginning of a line) is replaced; failing that, a match that ignores leading and trailing whitespace
of each line is tried, and the replacement is re-indented to fit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from codeagent.errors import EditError

_SEARCH = re.compile(r"^\s*<{5,9} SEARCH\s*$")
_DIVIDER = re.compile(r"^\s*={5,9}\s*$")
_EXACT_DIVIDER = re.compile(r"^={7}\s*$")
_REPLACE = re.compile(r"^\s*>{5,9} REPLACE\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_LOOKBACK = 3


@dataclass(frozen=True, slots=True)
class EditBlock:
    """One SEARCH/REPLACE block: ``search`` empty means create or append."""

    path: str
    search: str
    replace: str
    index: int  # 1-based position in the answer, for error messages


def _clean_filename(line: str) -> str:
    name = line.strip()
    name = name.rstrip(":").strip()
    name = name.strip("`*#").strip()
    return name


def _find_filename(lines: list[str], at: int) -> str | None:
    for back in range(1, _LOOKBACK + 1):
        i = at - back
        if i < 0:
            break
        raw = lines[i]
        if _FENCE.match(raw):
            # A fence line may carry a language (```python) or, in some answers, the name itself.
            rest = _FENCE.sub("", raw).strip()
            if rest and ("/" in rest or "." in rest):
                return _clean_filename(rest)
            continue
        if not raw.strip():
            continue
        name = _clean_filename(raw)
        if name and " " not in name:
            return name
        return None
    return None


def parse_edit_blocks(text: str) -> list[EditBlock]:
    """Parse every SEARCH/REPLACE block of an LLM answer.

    Raises :class:`EditError` naming the block (1-based) for an unterminated
    block, a missing divider or a block with no file name, and for an answer
    that is not UTF-8 text (a lone surrogate, which a JSON ``\ud800`` escape
    decodes to: no file and no checkpoint could hold it).
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise EditError(f"the answer is not UTF-8 text (a lone surrogate at character {exc.start})") from None
    lines = text.splitlines(keepends=True)
    blocks: list[EditBlock] = []
    current_path: str | None = None
    i = 0
    while i < len(lines):
        if not _SEARCH.match(lines[i]):
            if _REPLACE.match(lines[i]):
                raise EditError(
                    "marker outside a block (missing '<<<<<<< SEARCH' above it)", block=len(blocks) + 1
                )
            i += 1
            continue
        index = len(blocks) + 1
        path = _find_filename(lines, i) or current_path
        if not path:
            raise EditError("no file name before '<<<<<<< SEARCH'", block=index)
        end = _block_end(lines, i + 1)
        if end is None:
            raise EditError("missing '>>>>>>> REPLACE' end marker", block=index, path=path)
        divider = _divider(lines, i + 1, end)
        if divider is None:
            raise EditError("missing '=======' divider", block=index, path=path)
        search = lines[i + 1 : divider]
        replace = lines[divider + 1 : end]
        j = end
        blocks.append(EditBlock(path=path, search="".join(search), replace="".join(replace), index=index))
        current_path = path
        i = j + 1
    return blocks


def _block_end(lines: list[str], start: int) -> int | None:
    """Index of the block's ``>>>>>>> REPLACE`` line; a new SEARCH before it is an error."""
    for k in range(start, len(lines)):
        if _REPLACE.match(lines[k]):
            return k
        if _SEARCH.match(lines[k]):
            return None
    return None


def _divider(lines: list[str], start: int, end: int) -> int | None:
    """Index of the divider between ``start`` and ``end``.

    The canonical divider is exactly seven ``=``; looser runs of 5 to 9 are
    accepted only when no canonical one is present, so a file line such as
    ``=====`` inside SEARCH is not mistaken for the divider.
    """
    loose: int | None = None
    for k in range(start, end):
        if _EXACT_DIVIDER.match(lines[k]):
            return k
        if loose is None and _DIVIDER.match(lines[k]):
            loose = k
    return loose


def _ensure_newline(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _leading(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _fuzzy_replace(content: str, search: str, replace: str) -> str | None:
    """Match SEARCH line by line ignoring surrounding whitespace; re-indent REPLACE."""
    c_lines = content.splitlines(keepends=True)
    s_lines = search.splitlines()
    while s_lines and not s_lines[-1].strip():
        s_lines.pop()
    while s_lines and not s_lines[0].strip():
        s_lines.pop(0)
    if not s_lines:
        return None
    wanted = [s.strip() for s in s_lines]
    n = len(wanted)
    for start in range(len(c_lines) - n + 1):
        if all(c_lines[start + k].strip() == wanted[k] for k in range(n)):
            have = _leading(c_lines[start])
            had = _leading(s_lines[0])
            out: list[str] = []
            for r in _ensure_newline(replace).splitlines(keepends=True):
                if r.strip() and r.startswith(had):
                    r = have + r[len(had) :]
                out.append(r)
            return "".join(c_lines[:start] + out + c_lines[start + n :])
    return None


def _line_aligned_find(content: str, search: str) -> int:
    """First occurrence of ``search`` that starts at the beginning of a line, or -1."""
    at = content.find(search)
    while at > 0 and content[at - 1] != "\n":
        at = content.find(search, at + 1)
    return at


def apply_block(content: str | None, block: EditBlock) -> str:
    """Apply one block to a file's content (``None``: the file does not exist yet)."""
    if not block.search.strip():
        if content is None:
            return block.replace
        return _ensure_newline(content) + block.replace if content else block.replace
    if content is None:
        raise EditError("the file does not exist and SEARCH is not empty", block=block.index, path=block.path)
    at = _line_aligned_find(content, block.search)
    if at >= 0:
        return content[:at] + block.replace + content[at + len(block.search) :]
    fuzzy = _fuzzy_replace(content, block.search, block.replace)
    if fuzzy is None:
        first = block.search.strip().splitlines()[0][:60]
        raise EditError(
            f"SEARCH text not found in the file (first line: {first!r})", block=block.index, path=block.path
        )
    return fuzzy


def apply_blocks(files: dict[str, str | None], blocks: list[EditBlock]) -> dict[str, str]:
    """Apply blocks in order to in-memory file contents; return the new content of each touched file.

    ``files`` maps each path to its current content (``None`` when absent). Paths
    a block names that are missing from ``files`` are treated as absent files.
    """
    state: dict[str, str | None] = dict(files)
    touched: dict[str, str] = {}
    for block in blocks:
        new = apply_block(state.get(block.path), block)
        state[block.path] = new
        touched[block.path] = new
    return touched


def render_block(path: str, search: str, replace: str) -> str:
    """Write one block in the canonical form (used by the stub LLM and by tests)."""
    return (
        f"{path}\n```\n<<<<<<< SEARCH\n{_ensure_newline(search)}=======\n"
        f"{_ensure_newline(replace)}>>>>>>> REPLACE\n```\n"
    )
