"""Read and validate the flag file; errors name the file, the key and the line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from codeagent.paths import FLAGS_RELPATH
from feature_flags.model import FlagSet

_HEADER = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_.\"-]+)\s*=")


class FlagFileError(Exception):
    """The flag file is unreadable or invalid; the last good flags stay in force."""

    def __init__(self, path: str, message: str, *, key: str | None = None, line: int | None = None):
        self.path = path
        self.key = key
        self.line = line
        self.reason = message
        where = path + (f":{line}" if line else "")
        super().__init__(f"{where}: {key + ': ' if key else ''}{message}")


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc)


def line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line of a key path in a TOML document: its ``[table]`` header, then ``key =``."""
    parts = [str(p) for p in loc]
    section: list[str] = []
    best: int | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            section = [p.strip().strip('"') for p in header.group(1).split(".")]
            if section == parts[: len(section)] and best is None and len(section) == len(parts):
                best = number
            continue
        key = _KEY.match(raw)
        if key:
            full = section + [p.strip('"') for p in key.group(1).split(".")]
            if full == parts:
                return number
    if best is not None:
        return best
    if len(parts) > 1:
        return line_of(text, tuple(parts[:-1]))
    return None


def _unknown_component_line(text: str, message: str) -> tuple[str | None, int | None]:
    match = re.search(r"unknown component\(s\) ([^;]+);", message)
    if not match:
        return None, None
    name = match.group(1).split(",")[0].strip()
    return f"components.{name}", line_of(text, ("components", name))


def parse_flags(text: str, source: str = FLAGS_RELPATH) -> FlagSet:
    """Parse and validate a flag document. Raises :class:`FlagFileError`."""
    if not text.strip():
        raise FlagFileError(source, "the flag file is empty (expected at least 'version = 1' and 'loop')")
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except RecursionError as exc:  # arrays or tables thousands deep: the decoder recurses per level
        raise FlagFileError(source, "not valid TOML: nested too deeply") from exc
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise FlagFileError(
            source, f"not valid TOML: {exc}", line=int(found.group(1)) if found else None
        ) from exc
    try:
        return FlagSet.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        key: str | None = _dotted(loc) or None
        line = line_of(text, loc) if loc else None
        if first["type"] == "missing":
            message = "required key is missing"
        if loc == ("components",):
            key, line = _unknown_component_line(text, message)
        raise FlagFileError(source, message, key=key, line=line) from exc


def read_flags(path: Path) -> FlagSet:
    """Read and validate the flag file at ``path``. Raises :class:`FlagFileError`."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise FlagFileError(str(path), "the flag file does not exist") from exc
    except OSError as exc:
        raise FlagFileError(str(path), f"cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlagFileError(str(path), f"not UTF-8 text (byte {exc.start})") from exc
    if "\x00" in text:
        raise FlagFileError(str(path), "binary content (NUL byte) in the flag file")
    return parse_flags(text, str(path))


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Outcome of one (re)load: the flags in force, and the error that kept the old ones, if any."""

    flags: FlagSet
    error: FlagFileError | None
