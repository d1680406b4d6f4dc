"""Hostile input: hypothesis over every parser, and over both servers' HTTP API.

Each parser gets arbitrary text, JSON of any shape, valid documents with one
value replaced by anything, and valid documents with random edits (bytes
inserted, cut, replaced). The only acceptable outcomes are a parsed document
or the parser's own error (:class:`~codeagent.errors.ConfigError`,
:class:`~feature_flags.loader.FlagFileError`, :class:`~codeagent.errors.StateFileError`,
:class:`~codeagent.errors.EditError`); anything else is a failure, kept with
its (shrunk) example. The APIs get arbitrary methods, paths, ids, query
strings and bodies (the async one in-process through Starlette's test client,
WebSocket ``/events`` included; the legacy one over real HTTP): every answer
must be below 500, JSON, and an error must have the shape
``{"error": {"code", "message"}}``; no request may log a traceback.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeagent.config import parse_config
from codeagent.edits import apply_blocks, parse_edit_blocks
from codeagent.errors import ConfigError, EditError, StateFileError
from codeagent.jsondoc import parse_document
from codeagent.models import StatusFile, TodoFile
from codeagent.state_v2 import parse_checkpoint
from codeagent_app.chaos.runner import Context
from feature_flags.loader import FlagFileError, parse_flags

VALID_CONFIG = {
    "llm": {"base_url": "http://127.0.0.1:1/v1", "timeout": 5.0, "max_retries": 2},
    "api": {"token": "t"},
    "limits": {"llm_slots": 8},
    "poll_interval": 0.5,
}
VALID_TODOS = {
    "version": 1,
    "todos": [{"id": "t-0001", "text": "do it", "files": ["a.txt"], "created_at": "2026-01-01T00:00:00Z"}],
}
VALID_STATUS = {
    "version": 1,
    "agent": {"state": "working", "current_todo": "t-0001", "pid": 1},
    "todos": {"t-0001": {"status": "running", "attempts": 1}},
}
VALID_CHECKPOINT = {
    "schema_version": 2,
    "seq": 3,
    "todo_id": "t-0001",
    "stage": "answered",
    "reply": "r",
    "writes": {"a.txt": "x\n"},
}
VALID_FLAGS = 'version = 1\nloop = "async"\n[rollback]\nmin_samples = 5\n[components.files]\nmode = "canary"\npercent = 10\n'
EDIT_LINES = (
    "<<<<<<< SEARCH",
    "=======",
    ">>>>>>> REPLACE",
    "```",
    "```python",
    "a.txt",
    "b/c.txt",
    "../x",
    "",
    "old",
    "new",
    "  indented",
    "<<<<< SEARCH",
    "=====",
    ">>>>>> REPLACE",
    "a.txt:",
)


def _strategies() -> Any:
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    )

    def edited(text: str) -> Any:
        edits = st.lists(
            st.tuples(st.integers(0, len(text)), st.integers(0, 4), st.text(max_size=4)), max_size=4
        )

        def apply(changes: list[tuple[int, int, str]]) -> str:
            out = text
            for at, cut, insert in changes:
                at = min(at, len(out))
                out = out[:at] + insert + out[at + cut :]
            return out

        return edits.map(apply)

    def one_leaf_replaced(doc: Any) -> Any:
        paths: list[tuple[Any, ...]] = []

        def walk(node: Any, path: tuple[Any, ...]) -> None:
            paths.append(path)
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, (*path, key))
            elif isinstance(node, list):
                for i, value in enumerate(node):
                    walk(value, (*path, i))

        walk(doc, ())

        def put(choice: tuple[tuple[Any, ...], Any]) -> str:
            path, value = choice
            if not path:
                return json.dumps(value)
            copy = json.loads(json.dumps(doc))
            node = copy
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            return json.dumps(copy)

        return st.tuples(st.sampled_from(paths), json_values).map(put)

    def documents(valid: Any) -> Any:
        text = valid if isinstance(valid, str) else json.dumps(valid, indent=2)
        deep = st.integers(2, 120_000).map(lambda n: "[" * n + "]" * n)  # past the decoders' recursion limit
        parts = [
            st.text(max_size=300),
            json_values.map(json.dumps),
            edited(text),
            deep,
            st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
        ]
        if not isinstance(valid, str):
            parts.append(one_leaf_replaced(valid))
        else:
            parts.append(st.integers(2, 120_000).map(lambda n: text + "\nx = " + "[" * n + "]" * n))
        return st.one_of(*parts)

    answers = st.lists(st.sampled_from(EDIT_LINES) | st.text(max_size=30), max_size=25).map("\n".join)
    return st, json_values, documents, answers


class Tally:
    """Examples run and failures kept, per target."""

    def __init__(self) -> None:
        self.examples: dict[str, int] = {}
        self.failures: dict[str, list[str]] = {}

    def check(self, name: str, examples: int, seed: int, strategy: Any, body: Callable[[Any], None]) -> None:
        """Run ``body`` on ``examples`` drawn from ``strategy``; a failure keeps its shrunk example."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import seed as with_seed

        self.examples.setdefault(name, 0)

        def counted(value: Any) -> None:
            self.examples[name] += 1
            body(value)

        given_any: Any = given  # strategies are built untyped (Any) here
        drawn: Any = given_any(strategy)(counted)
        configured: Any = settings(
            max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )(drawn)
        test: Callable[[], None] = with_seed(seed)(configured)
        try:
            test()
        except Exception as exc:  # hypothesis re-raises the shrunk failure
            self.failures.setdefault(name, []).append(f"{type(exc).__name__}: {str(exc)[:400]}")


def _expect(errors: tuple[type[BaseException], ...], parse: Callable[[str], object]) -> Callable[[str], None]:
    def body(text: str) -> None:
        try:
            parse(text)
        except errors:
            pass

    return body


def fuzz_parsers(tally: Tally, examples: int, seed: int) -> None:
    """Every parser of the agent's files and of the LLM's answers."""
    _, _, documents, answers = _strategies()
    tally.check(
        "config (codeagent.config.parse_config)",
        examples,
        seed,
        documents(VALID_CONFIG),
        _expect((ConfigError,), parse_config),
    )
    tally.check(
        "flags (feature_flags.loader.parse_flags)",
        examples,
        seed,
        documents(VALID_FLAGS),
        _expect((FlagFileError,), parse_flags),
    )
    tally.check(
        "todos (TodoFile via codeagent.jsondoc)",
        examples,
        seed,
        documents(VALID_TODOS),
        _expect((StateFileError,), lambda t: parse_document(t, TodoFile, "todos.json")),
    )
    tally.check(
        "status (StatusFile via codeagent.jsondoc)",
        examples,
        seed,
        documents(VALID_STATUS),
        _expect((StateFileError,), lambda t: parse_document(t, StatusFile, "status.json")),
    )
    tally.check(
        "checkpoints (codeagent.state_v2.parse_checkpoint)",
        examples,
        seed,
        documents(VALID_CHECKPOINT),
        _expect((StateFileError,), lambda t: parse_checkpoint(t, "c.json")),
    )

    files = {"a.txt": "old\nkeep\n", "b/c.txt": None}

    def edits(text: str) -> None:
        try:
            apply_blocks(dict(files), parse_edit_blocks(text))
        except EditError:
            pass

    tally.check(
        "edit blocks (codeagent.edits.parse_edit_blocks + apply_blocks)", examples, seed, answers, edits
    )


def run(ctx: Context) -> dict[str, Any]:
    """The parsers, then both APIs."""
    from codeagent_app.chaos import fuzz_api

    tally = Tally()
    examples = ctx.sizes.fuzz_examples
    fuzz_parsers(tally, examples, ctx.seed)
    ctx.load.tick()
    captured = _TracebackCatcher()
    logging.getLogger().addHandler(captured)
    try:
        with tempfile.TemporaryDirectory(prefix="chaos-fuzz-", dir=ctx.work) as scratch:
            fuzz_api.fuzz_async_api(tally, examples, ctx.seed, Path(scratch) / "async")
            ctx.load.tick()
            fuzz_api.fuzz_legacy_api(tally, examples, ctx.seed, Path(scratch) / "legacy")
    finally:
        logging.getLogger().removeHandler(captured)
    failures = {name: found for name, found in tally.failures.items() if found}
    if captured.records:
        failures["tracebacks logged"] = captured.records[:5]
    return {
        "ok": not failures,
        "examples": tally.examples,
        "examples_total": sum(tally.examples.values()),
        "failures": failures,
        "problems": [f"{name}: {f}" for name, found in failures.items() for f in found][:20],
    }


class _TracebackCatcher(logging.Handler):
    """Keeps every log record that carries a traceback (an unexpected exception in a request)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and len(self.records) < 50:
            self.records.append(f"{record.name}: {record.getMessage()[:200]}")
