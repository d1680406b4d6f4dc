"""Generate the sync twins from the async sources: ``core_sync/`` and ``bridge/_sync/``.

``python tools/codegen.py`` regenerates; ``python tools/codegen.py --check``
regenerates into a temp dir and exits 1, naming each file, when

* a generated file is missing or stale (its source changed since),
* a generated file was edited by hand (its content hash no longer matches),
* a generated file has no source (an orphan in a target directory),
* a listed module has no source,
* a replacement rule matched nothing in any source (a dead rule hides drift),
* the output still names something that has no sync form (``asyncio``, ...).

Two groups of twins are generated, each from its async source directory:
the components (``core_async`` -> ``core_sync``) and the bridge's faces
(``bridge/_async`` -> ``bridge/_sync``). Pipeline per module: unasync's token
rewriting with :data:`REPLACEMENTS` (plus the group's own, unasync's built-in
``__aenter__`` -> ``__enter__`` ones and ``AsyncX`` -> ``SyncX``), then
``ruff check --fix-only`` with :data:`RUFF_FIXES` (a rename can move an import
to another section)
and ``ruff format`` with the project's configuration, then the header. Each
group's ``_compat`` module is written by hand on both sides.

This is a developer tool: it lives outside the installed packages, as
httpcore keeps its ``scripts/unasync.py``.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import re
import subprocess
import sys
import tempfile
import tokenize
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import tokenize_rt  # type: ignore[import-untyped]
import unasync

PROG = "tools/codegen.py"


@dataclass(frozen=True)
class TwinGroup:
    """One source directory and the directory its twins are generated into."""

    source: str
    target: str
    #: Modules that get a generated twin, in dependency order.
    modules: tuple[str, ...]
    #: Source modules that stay async-only (no twin).
    async_only: frozenset[str]
    #: Files of the target written by hand (never generated, never orphans).
    hand_written: frozenset[str] = frozenset({"__init__", "_compat"})
    #: Replacements this group needs on top of :data:`REPLACEMENTS`; each must match in the group.
    extra_replacements: Mapping[str, str] = field(default_factory=dict)

    def with_modules(self, modules: Iterable[str]) -> TwinGroup:
        """The same group over other modules (tests)."""
        return replace(self, modules=tuple(modules))


#: The components: every module an implementation of a component is made of.
CORE = TwinGroup(
    source="core_async",
    target="core_sync",
    modules=(
        "fsops",
        "files",
        "config",
        "todos",
        "status",
        "checkpoints",
        "git_trailers",
        "git_native",
        "git",
        "ratelimit",
        "llm_wire",
        "llm_transport",
        "llm",
        "components",
        "agent",
        "pg_state",
    ),
    async_only=frozenset({"__init__", "_compat", "_aiohttp", "_process", "_httpcore_fixes", "kernel"}),
)

#: The bridge's faces: the dispatcher, the component facades, the LLM facade and its recorder.
BRIDGE = TwinGroup(
    source="bridge/_async",
    target="bridge/_sync",
    modules=("dispatch", "facades", "llm"),
    async_only=frozenset({"__init__", "_compat"}),
    extra_replacements={"_async": "_sync"},
)

GROUPS: tuple[TwinGroup, ...] = (CORE, BRIDGE)

#: The project's rules on top of unasync's built-ins; each must match at least once in some group.
REPLACEMENTS: dict[str, str] = {
    "core_async": "core_sync",
    "agather": "gather",
    "asleep": "sleep",
    "ALock": "Lock",
    "ASemaphore": "Semaphore",
    "AEvent": "Event",
    "AResult": "Result",
    "ato_thread": "to_thread",
    "ato_thread_settled": "to_thread_settled",
    "arun_process": "run_process",
    "aspawn": "spawn",
    "atimeout": "timeout",
    "ashared_lock": "shared_lock",
    "await_event": "wait_event",
    "AsyncClient": "Client",
    "AsyncConnectionPool": "ConnectionPool",
    "AsyncConnection": "Connection",
    "AsyncBaseTransport": "BaseTransport",
    "AsyncHTTPTransport": "HTTPTransport",
    "aclose": "close",
    "aread": "read",
    "aiter_lines": "iter_lines",
    "handle_async_request": "handle_request",
}

#: Names that must not survive into a sync twin (a compat function is missing).
FORBIDDEN_NAMES: frozenset[str] = frozenset({"asyncio", "aiofiles", "core_async", "anyio", "await", "_async"})

#: ruff fixes applied to unasync's output: import order (a rename can move an import to
#: another section), ``io.open`` -> ``open`` and an import a rename left unused.
RUFF_FIXES = "I,UP020,F401"

#: The project's own packages, named so import sorting does not depend on where the tree lives.
FIRST_PARTY = (
    "codeagent",
    "codeagent_app",
    "llm_stub",
    "legacy",
    "core_async",
    "core_sync",
    "bridge",
    "feature_flags",
    "migration",
)

HEADER_RE = re.compile(
    r"\A# GENERATED by tools/codegen\.py from (?P<source>\S+) -- do not edit by hand\.\n"
    r"# content-sha256: (?P<digest>[0-9a-f]{64})\n"
)


def header_for(source: str, body: str) -> str:
    """The two header lines: which source file, and the hash of what follows them."""
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return f"# GENERATED by {PROG} from {source} -- do not edit by hand.\n# content-sha256: {digest}\n"


def split_header(text: str) -> tuple[str | None, str | None, str]:
    """``(source, digest, body)`` of a generated file; ``(None, None, text)`` without a header."""
    match = HEADER_RE.match(text)
    if match is None:
        return None, None, text
    return match["source"], match["digest"], text[match.end() :]


def edited_by_hand(text: str) -> bool:
    """True when a file carries the header but its body no longer matches the recorded hash."""
    _source, digest, body = split_header(text)
    return digest is not None and hashlib.sha256(body.encode("utf-8")).hexdigest() != digest


class CountingRule(unasync.Rule):  # type: ignore[misc]
    """unasync's rule, counting how often each project replacement fires."""

    def __init__(self, group: TwinGroup, replacements: Mapping[str, str]) -> None:
        super().__init__(f"/{group.source}/", f"/{group.target}/", dict(replacements))
        self.project_rules = dict(replacements)
        self.hits: Counter[str] = Counter()

    def _unasync_name(self, name: str) -> str:
        if name in self.project_rules:
            self.hits[name] += 1
        result: str = super()._unasync_name(name)
        return result

    def convert(self, source: str) -> str:
        """Rewrite one module's source text."""
        tokens = tokenize_rt.src_to_tokens(source)
        return str(tokenize_rt.tokens_to_src(list(self._unasync_tokens(tokens))))


@dataclass
class Generation:
    """The outcome of generating every twin: texts by file name and the problems found."""

    outputs: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _ruff_fix_and_format(root: Path, directory: Path) -> None:
    """Apply :data:`RUFF_FIXES` and ``ruff format`` to every file below ``directory`` (two ruff runs)."""
    config = ["--config", "lint.isort.known-first-party = [" + ", ".join(f'"{p}"' for p in FIRST_PARTY) + "]"]
    if (root / "pyproject.toml").is_file():
        config = ["--config", str(root / "pyproject.toml"), *config]
    for args in (["check", "--fix-only", "--select", RUFF_FIXES], ["format"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *args, "--quiet", *config, str(directory)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).decode(errors="replace")
            raise RuntimeError(f"ruff {args[0]} failed on the generated code: {detail}")


def _leftover_names(text: str) -> Iterator[str]:
    for token in tokenize_rt.src_to_tokens(text):
        if token.name == "NAME" and token.src in FORBIDDEN_NAMES:
            yield token.src
        elif token.name == "STRING" and token.src[:2].lower() in ('f"', "f'") and "await " in token.src:
            yield "await (inside an f-string)"


def generate(
    root: Path,
    groups: Sequence[TwinGroup] = GROUPS,
    replacements: Mapping[str, str] | None = None,
) -> Generation:
    """Produce the text of every twin (nothing in the tree is written) and the problems found."""
    shared = dict(REPLACEMENTS if replacements is None else replacements)
    result = Generation()
    converted: dict[str, tuple[str, str]] = {}  # target path -> (source path, text)
    shared_hits: Counter[str] = Counter()
    for group in groups:
        rule = CountingRule(group, {**shared, **group.extra_replacements})
        for module in group.modules:
            source = f"{group.source}/{module}.py"
            target = f"{group.target}/{module}.py"
            source_path = root / source
            if not source_path.is_file():
                result.problems.append(f"{target}: listed module has no source {source}")
                continue
            try:
                text = rule.convert(source_path.read_text(encoding="utf-8"))
                ast.parse(text, filename=target)
            except (SyntaxError, tokenize.TokenError) as exc:
                result.problems.append(f"{source}: cannot be converted: {exc}")
                continue
            for name in sorted(set(_leftover_names(text))):
                result.problems.append(
                    f"{target}: still names {name!r} after unasync (add a compat function)"
                )
            converted[target] = (source, text)
        for name, replacement in group.extra_replacements.items():
            if rule.hits[name] == 0:
                result.problems.append(f"{group.source}: rule {name!r} -> {replacement!r} matched nothing")
        shared_hits.update({name: rule.hits[name] for name in shared})
    with tempfile.TemporaryDirectory(prefix="codegen-") as tmp:
        staging = Path(tmp)
        for target, (_source, text) in converted.items():
            (staging / target).parent.mkdir(parents=True, exist_ok=True)
            (staging / target).write_text(text, encoding="utf-8")
        if converted:
            _ruff_fix_and_format(root, staging)
        for target, (source, _text) in converted.items():
            body = (staging / target).read_text(encoding="utf-8")
            result.outputs[target] = header_for(source, body) + body
    for name, replacement in shared.items():
        if shared_hits[name] == 0:
            result.problems.append(f"replacement rule {name!r} -> {replacement!r} matched nothing")
    return result


def _orphans(root: Path, groups: Sequence[TwinGroup], expected: Iterable[str]) -> list[Path]:
    wanted = set(expected)
    found = []
    for group in groups:
        for path in sorted((root / group.target).glob("*.py")):
            if path.stem in group.hand_written or f"{group.target}/{path.name}" in wanted:
                continue
            found.append(path)
    return found


def _unlisted_sources(root: Path, groups: Sequence[TwinGroup]) -> list[str]:
    out = []
    for group in groups:
        known = set(group.modules) | group.async_only
        out += [
            f"{group.source}/{p.name}"
            for p in sorted((root / group.source).glob("*.py"))
            if p.stem not in known
        ]
    return out


def check(
    root: Path,
    groups: Sequence[TwinGroup] = GROUPS,
    replacements: Mapping[str, str] | None = None,
) -> list[str]:
    """Regenerate into memory and compare with the tree; return one line per problem."""
    generation = generate(root, groups, replacements)
    problems = list(generation.problems)
    for name, text in generation.outputs.items():
        current_path = root / name
        if not current_path.is_file():
            problems.append(f"{name}: missing (run python {PROG})")
            continue
        current = current_path.read_text(encoding="utf-8")
        if current == text:
            continue
        if split_header(current)[1] is None:
            problems.append(f"{name}: has no GENERATED header (written by hand?)")
        elif edited_by_hand(current):
            problems.append(f"{name}: edited by hand (content hash mismatch); edit its async source instead")
        else:
            problems.append(f"{name}: stale (its source changed; run python {PROG})")
    for orphan in _orphans(root, groups, generation.outputs):
        rel = orphan.relative_to(root).as_posix()
        problems.append(f"{rel}: generated file has no source in {_group_of(groups, rel).source}/")
    return problems


def _group_of(groups: Sequence[TwinGroup], target_file: str) -> TwinGroup:
    return next(g for g in groups if target_file.startswith(g.target + "/"))


def write(root: Path, groups: Sequence[TwinGroup] = GROUPS) -> tuple[list[str], list[str]]:
    """Regenerate in place; return ``(files changed, problems)``. Generated orphans are removed."""
    generation = generate(root, groups)
    changed = []
    for name, text in generation.outputs.items():
        path = root / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            changed.append(name)
    problems = list(generation.problems)
    for orphan in _orphans(root, groups, generation.outputs):
        rel = orphan.relative_to(root).as_posix()
        if split_header(orphan.read_text(encoding="utf-8"))[0] is not None:
            orphan.unlink()
            changed.append(f"{rel} (removed: no source)")
        else:
            problems.append(f"{rel}: not generated and not hand-written compat code")
    return changed, problems


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog=f"python {PROG}", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if a twin is not what would be generated")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    args = parser.parse_args(argv)
    root: Path = args.root.resolve()
    for name in _unlisted_sources(root, GROUPS):
        print(f"note: {name} is not listed in codegen (a twin or async-only)", file=sys.stderr)
    if args.check:
        problems = check(root)
        for line in problems:
            print(f"codegen --check: {line}", file=sys.stderr)
        if not problems:
            count = sum(len(g.modules) for g in GROUPS)
            targets = ", ".join(f"{g.target}/" for g in GROUPS)
            print(f"codegen --check: {targets} up to date ({count} modules)")
        return 1 if problems else 0
    changed, problems = write(root)
    for name in changed:
        print(f"generated {name}")
    for line in problems:
        print(f"codegen: {line}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
