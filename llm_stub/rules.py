"""Scripted answers of the stub LLM: a TOML rules file, loaded, checked and matched.

A rules file is a list of ``[[rules]]`` tables, tried in order against the task
text of the last user message (as :func:`codeagent.prompts.build_messages` wrote
it); the first whose ``pattern`` is found answers. Keys of a rule:

``name``
    shown in stats and errors.
``pattern``
    a Python regular expression, searched case-insensitively unless
    ``case_sensitive = true``. Its named groups become ``{name}`` values.
``action``
    ``append`` (``path``, ``line``), ``create`` (``path``, ``content``),
    ``replace`` (``path``, ``old``, ``new``) or ``reply`` (``template``).
    Each of those keys is a template whose ``{name}`` fields are filled from
    the pattern's named groups (plus ``todo_id`` and ``task``); by default a
    key is ``{key}``, i.e. the group of the same name. Captured values have
    ``\\n``, ``\\t``, ``\\"`` and ``\\\\`` decoded, so one line of prose can
    carry several lines of code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from codeagent.prompts import parse_user_prompt
from llm_stub import actions

ACTION_KEYS: dict[str, tuple[str, ...]] = {
    "append": ("path", "line"),
    "create": ("path", "content"),
    "replace": ("path", "old", "new"),
    "reply": ("template",),
}
BUILTIN_VALUES = ("todo_id", "task")
_FIELD = re.compile(r"\{(\w+)\}")
_ESCAPE = re.compile(r"\\([nt\"\\])")
_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


class RulesError(ValueError):
    """A rules file is unreadable or one of its rules is invalid (the message says which)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One scripted answer: when ``pattern`` is found in the task, run ``action``."""

    name: str
    pattern: re.Pattern[str]
    action: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class Answer:
    """The stub's reply to one prompt, and the rule that produced it (``None``: no match)."""

    text: str
    rule: str | None


def unescape(text: str) -> str:
    """Decode the few backslash escapes a task text may carry (``\\n \\t \\" \\\\``)."""
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group(1)], text)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace each ``{name}`` whose name is in ``values``; leave any other braces alone."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def _parse_rule(raw: Any, index: int, origin: str) -> Rule:
    where = f"{origin}: rules[{index}]"
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: expected a table")
    name = str(raw.get("name") or f"rule-{index}")
    where = f"{where} ({name})"
    action = raw.get("action")
    if action not in ACTION_KEYS:
        raise RulesError(f"{where}: action must be one of {', '.join(ACTION_KEYS)}, got {action!r}")
    pattern_text = raw.get("pattern")
    if not isinstance(pattern_text, str) or not pattern_text:
        raise RulesError(f"{where}: pattern must be a non-empty string")
    flags = 0 if raw.get("case_sensitive", False) else re.IGNORECASE
    try:
        pattern = re.compile(pattern_text, flags)
    except re.error as exc:
        raise RulesError(f"{where}: bad pattern: {exc}") from None
    known = set(ACTION_KEYS[action]) | {"name", "action", "pattern", "case_sensitive"}
    extra = sorted(set(raw) - known)
    if extra:
        raise RulesError(f"{where}: unknown key(s) {', '.join(extra)} for action {action!r}")
    params: dict[str, str] = {}
    available = set(pattern.groupindex) | set(BUILTIN_VALUES)
    for key in ACTION_KEYS[action]:
        if key not in raw and action == "reply":
            raise RulesError(f"{where}: a reply rule needs a template")
        template = raw.get(key, "{" + key + "}")
        if not isinstance(template, str):
            raise RulesError(f"{where}: {key} must be a string")
        missing = sorted(set(_FIELD.findall(template)) - available) if action != "reply" else []
        if missing:
            raise RulesError(f"{where}: {key} uses {{{missing[0]}}} but the pattern has no such group")
        params[key] = template
    return Rule(name=name, pattern=pattern, action=action, params=params)


def parse_rules(text: str, origin: str = "<rules>") -> list[Rule]:
    """Parse and check the TOML text of a rules file."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{origin}: not valid TOML: {exc}") from None
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise RulesError(f"{origin}: 'rules' must be an array of tables ([[rules]])")
    return [_parse_rule(raw, i, origin) for i, raw in enumerate(raw_rules)]


def default_rules_text() -> str:
    """The bundled ``rules.toml``."""
    return resources.files("llm_stub").joinpath("rules.toml").read_text(encoding="utf-8")


class RuleBook:
    """An ordered list of rules that answers prompts."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def load(cls, path: str | None = None) -> RuleBook:
        """Load a rules file (``None``: the bundled default)."""
        if path is None:
            return cls(parse_rules(default_rules_text(), "rules.toml (bundled)"))
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
        return cls(parse_rules(text, path))

    def answer(self, user_text: str) -> Answer:
        """The reply to a user message: the first matching rule's, or a plain no-edit sentence."""
        todo_id, task, files = parse_user_prompt(user_text)
        for rule in self.rules:
            match = rule.pattern.search(task)
            if match is None:
                continue
            values = {k: unescape(v) for k, v in match.groupdict().items() if v is not None}
            values.setdefault("todo_id", todo_id)
            values.setdefault("task", task)
            return Answer(text=_run(rule, values, files), rule=rule.name)
        return Answer(text=actions.no_rule_reply(task), rule=None)


def _run(rule: Rule, values: dict[str, str], files: actions.Files) -> str:
    params = {key: fill(template, values) for key, template in rule.params.items()}
    if rule.action == "reply":
        return params["template"]
    path = actions.clean_path(params["path"])
    if not path:
        return f"The task names no file for rule {rule.name!r}, so I am not proposing any edits."
    if rule.action == "append":
        return actions.append_line(files, path, params["line"])
    if rule.action == "create":
        return actions.create_file(files, path, params["content"])
    return actions.replace_text(files, path, params["old"], params["new"])
