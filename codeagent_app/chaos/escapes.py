"""Adversarial edits: every way out of the workspace, through both loops' file components and the loops.

Three parts, each counting writes that land outside the workspace (or into
``.git/`` or ``.agent/``) by comparing digests of those trees before and after:

* ``components``: the legacy file component, the generated sync twin and the
  async one get each hostile edit (``..``, absolute and drive paths, ``.git/``
  at any depth and ``.agent/`` targets, symlinks pointing out, dangling, into
  ``.git`` or ``.agent``, NUL, newline and CR in names, names starting with
  ``-``, content over the size limit or not encodable as UTF-8) and must refuse
  each with a reason; reads of hostile files (symlinked out, not UTF-8, a
  FIFO, too large) likewise;
* ``race``: a thread flips ``sub`` between a directory and a symlink to a
  directory outside while writes of ``sub/f.txt`` run (the check-then-write race);
* ``loops``: todos whose answers (the stub's ``create file`` rule) propose those
  edits, run by both loops: each must end ``failed`` with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codeagent.errors import WorkspaceViolation
from codeagent.models import StatusFile, Todo, TodoFile, TodoStatus, dump_json
from codeagent_app.chaos import procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, fast_config, git, make_workspace
from llm_stub import StubOptions

MAX_BYTES = 4096

#: (path, content): every one must be refused.
HOSTILE_WRITES: list[tuple[str, str]] = [
    ("../outside.txt", "x"),
    ("a/../../outside.txt", "x"),
    ("sub/../../outside.txt", "x"),
    ("/tmp/chaos-absolute.txt", "x"),
    ("C:\\chaos.txt", "x"),
    ("\\\\server\\share\\x", "x"),
    ("..\\outside.txt", "x"),
    (".git/config", "x"),
    (".git/hooks/post-commit", "#!/bin/sh\n"),
    (".GIT/hooks/pre-commit", "x"),
    ("nested/.git/hooks/post-checkout", "#!/bin/sh\n"),
    (".agent/todos.json", "{}"),
    (".agent/config.json", "{}"),
    ("./.agent/status.json", "{}"),
    ("link-out/x.txt", "x"),
    ("link-file.txt", "x"),
    ("link-git/config", "x"),
    ("link-agent/todos.json", "x"),
    ("dangling.txt", "x"),
    ("a\x00b.txt", "x"),
    ("a\nb.txt", "x"),
    ("a\rb.txt", "x"),
    ("-rf.txt", "x"),
    ("sub/--exec=x.txt", "x"),
    ("big.txt", "x" * (MAX_BYTES + 1)),
    ("surrogate.txt", "\ud800 lone"),
    ("", "x"),
    (".", "x"),
    ("sub", "x"),
]
#: paths whose reads must be refused (absent files read as None, which is fine, and are not listed).
HOSTILE_READS = [
    "link-file.txt",
    "link-out/secret.txt",
    "not-utf8.txt",
    "fifo",
    "huge.txt",
    "link-git/config",
    "../outside/secret.txt",
    "sub",
]


def _digest(root: Path) -> str:
    """One digest of every entry (path, kind, bytes) under ``root``, symlinks not followed."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, root).encode("utf-8", "surrogateescape") + b"\0")
            if os.path.islink(path):
                h.update(b"L" + os.readlink(path).encode("utf-8", "surrogateescape"))
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    h.update(b"F" + handle.read())
    return h.hexdigest()


def hostile_workspace(base: Path) -> tuple[Path, Path]:
    """A workspace with every hostile fixture (symlinks out, a nested repo, a FIFO, ...), and the outside."""
    root, outside = base / "ws", base / "outside"
    outside.mkdir(parents=True)
    (outside / "secret.txt").write_text("secret\n")
    make_workspace(root, [Workload(1)], config=fast_config(), extra_files={"sub/f.txt": "inside\n"})
    nested = root / "nested"
    nested.mkdir()
    git(nested, "init", "-q")
    (root / "link-out").symlink_to(outside, target_is_directory=True)
    (root / "link-file.txt").symlink_to(outside / "secret.txt")
    (root / "link-git").symlink_to(root / ".git", target_is_directory=True)
    (root / "link-agent").symlink_to(root / ".agent", target_is_directory=True)
    (root / "dangling.txt").symlink_to(outside / "not-yet.txt")
    (root / "not-utf8.txt").write_bytes(b"caf\xe9\n")
    (root / "huge.txt").write_text("y" * (MAX_BYTES + 1))
    os.mkfifo(root / "fifo")
    return root, outside


def _guarded(root: Path, outside: Path, *, loop_running: bool = False) -> dict[str, str]:
    """Digests of what no edit may change (a loop itself writes ``.git`` objects and ``.agent`` state)."""
    guarded = {
        "outside": _digest(outside),
        "nested/.git": _digest(root / "nested" / ".git"),
        ".git/hooks": _digest(root / ".git" / "hooks"),
        ".git/config": _digest_file(root / ".git" / "config"),
        ".agent/todos.json": _digest_file(root / ".agent" / "todos.json"),
    }
    if not loop_running:
        guarded |= {".git": _digest(root / ".git"), ".agent": _digest(root / ".agent")}
    return guarded


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def _implementations(root: Path) -> dict[str, tuple[Callable[[str, str], None], Callable[[str], Any]]]:
    from core_async.files import AsyncWorkspaceFiles
    from core_sync.files import SyncWorkspaceFiles
    from legacy.files import Files

    legacy, twin, new = (
        Files(root, MAX_BYTES),
        SyncWorkspaceFiles(root, MAX_BYTES),
        AsyncWorkspaceFiles(root, MAX_BYTES),
    )
    return {
        "legacy": (legacy.write, legacy.read),
        "core_sync": (twin.write, twin.read),
        "core_async": (
            lambda p, c: asyncio.run(new.write(p, c), debug=False),
            lambda p: asyncio.run(new.read(p), debug=False),
        ),
    }


def components(base: Path) -> dict[str, Any]:
    """Each hostile write and read through each implementation."""
    root, outside = hostile_workspace(base)
    before = _guarded(root, outside)
    results: dict[str, Any] = {}
    for name, (write, read) in _implementations(root).items():
        refused, accepted, crashed = 0, [], []
        for path, content in HOSTILE_WRITES:
            try:
                write(path, content)
                accepted.append(path)
            except WorkspaceViolation:
                refused += 1
            except Exception as exc:  # not a clean refusal
                crashed.append(f"write {path!r}: {type(exc).__name__}: {exc}")
        read_refused = 0
        for path in HOSTILE_READS:
            try:
                value = read(path)
                accepted.append(f"read {path!r} -> {str(value)[:20]!r}")
            except WorkspaceViolation:
                read_refused += 1
            except Exception as exc:
                crashed.append(f"read {path!r}: {type(exc).__name__}: {exc}")
        results[name] = {
            "writes_refused": refused,
            "reads_refused": read_refused,
            "accepted": accepted,
            "unclean": crashed,
        }
    after = _guarded(root, outside)
    escapes = [where for where in before if before[where] != after[where]]
    return {
        "attempts": len(HOSTILE_WRITES) + len(HOSTILE_READS),
        "implementations": results,
        "escapes": escapes,
    }


def race(base: Path, seconds: float) -> dict[str, Any]:
    """Writes of ``sub/f.txt`` while another thread flips ``sub`` to a symlink pointing out and back."""
    root, outside = base / "ws", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    stop = threading.Event()
    flips = 0

    def flipper() -> None:
        nonlocal flips
        sub, parked, link = root / "sub", root / "sub.parked", root / "sub.link"
        while not stop.is_set():
            try:
                if not os.path.islink(sub) and os.path.isdir(sub):
                    if os.path.isdir(parked):
                        shutil.rmtree(sub)  # the writer made a new ``sub`` meanwhile: drop it
                    else:
                        os.rename(sub, parked)
                if not os.path.lexists(link):
                    os.symlink(outside, link, target_is_directory=True)
                os.replace(link, sub)  # ``sub`` now points out of the workspace
                flips += 1
                time.sleep(0)
                os.unlink(sub)
                os.rename(parked, sub)  # and back
            except OSError:
                continue  # the writer raced us (it creates missing directories): try again

    out: dict[str, Any] = {}
    for name, (write, _) in _implementations(root).items():
        thread = threading.Thread(target=flipper, daemon=True)
        stop.clear()
        thread.start()
        written = refused = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                write("sub/f.txt", f"{name} {written}\n")
                written += 1
            except (WorkspaceViolation, OSError):
                refused += 1
        stop.set()
        thread.join()
        out[name] = {"writes": written, "refused": refused, "outside_entries": sorted(os.listdir(outside))}
        for entry in os.listdir(outside):
            os.unlink(outside / entry)
    escapes = sum(len(v["outside_entries"]) for v in out.values())
    return {"flips": flips, "implementations": out, "escapes": escapes}


def loops(base: Path, url: str) -> dict[str, Any]:
    """The stub proposes each hostile edit as a todo's answer; both loops must fail each with a reason."""
    targets = [
        "../outside.txt",
        "/tmp/chaos-loop-absolute.txt",
        ".git/hooks/post-commit",
        ".agent/todos.json",
        "link-out/x.txt",
        "nested/.git/hooks/post-commit",
        "-rf.txt",
        "link-file.txt",
        "dangling.txt",
    ]
    out: dict[str, Any] = {"todos": len(targets)}
    for loop in ("legacy", "async"):
        root, outside = hostile_workspace(base / loop)
        todos = [
            Todo(id=f"x-{i + 1:04d}", text=f'create file {t} with content "pwned"')
            for i, t in enumerate(targets)
        ]
        (root / ".agent" / "todos.json").write_text(dump_json(TodoFile(todos=todos)), encoding="utf-8")
        before = _guarded(root, outside, loop_running=True)
        proc = procs.start(
            procs.codeagent(
                "run", "--loop", loop, "-w", str(root), "--llm-url", url, "--until-idle", "--workers", "1"
            )
        )
        code = procs.wait_or_kill(proc, 300)
        after = _guarded(root, outside, loop_running=True)
        status = StatusFile.model_validate_json((root / ".agent" / "status.json").read_text(encoding="utf-8"))
        outcomes = {t.id: status.todos.get(t.id) for t in todos}
        not_refused = [
            f"{tid}: {s.status.value if s else 'no status'} ({s.error if s else ''})"
            for tid, s in outcomes.items()
            if s is None or s.status is not TodoStatus.FAILED or not s.error
        ]
        out[loop] = {
            "exit_code": code,
            "escapes": [w for w in before if before[w] != after[w]],
            "not_refused": not_refused,
            "reasons": sorted({(s.error or "")[:70] for s in outcomes.values() if s}),
        }
    return out


def run(ctx: Context) -> dict[str, Any]:
    """The three parts."""
    comp = components(ctx.work / "escapes-components")
    raced = race(ctx.work / "escapes-race", 1.0 if ctx.quick else 10.0)
    with procs.stub(StubOptions(seed=ctx.seed)) as stub:
        looped = loops(ctx.work / "escapes-loops", stub.url)
    problems = [f"components: writes into {w}" for w in comp["escapes"]]
    for name, r in comp["implementations"].items():
        problems += [f"{name}: not refused: {a}" for a in r["accepted"]]
        problems += [f"{name}: not a clean refusal: {u}" for u in r["unclean"]]
    problems += [
        f"race: {name} wrote outside: {r['outside_entries']}"
        for name, r in raced["implementations"].items()
        if r["outside_entries"]
    ]
    for loop in ("legacy", "async"):
        problems += [f"{loop} loop: writes into {w}" for w in looped[loop]["escapes"]]
        problems += [f"{loop} loop: {x}" for x in looped[loop]["not_refused"]]
    escapes = (
        len(comp["escapes"])
        + raced["escapes"]
        + sum(len(looped[lp]["escapes"]) for lp in ("legacy", "async"))
    )
    return {
        "ok": not problems,
        "escapes": escapes,
        "components": comp,
        "race": raced,
        "loops": looped,
        "problems": problems[:40],
    }
