"""Disk and OS faults: writes that fail part-way, then the fault lifted and the work resumed.

Scenarios, each on both loops over a workspace of small todos:

* ``fsize``: the loop runs under ``RLIMIT_FSIZE`` (SIGXFSZ ignored, so a write
  past the limit fails with EFBIG instead of killing the process): the status
  document outgrows the limit part-way through the run;
* ``enospc``: ``.agent/`` is a tiny tmpfs that fills up part-way (needs the
  privilege to mount; skipped, and said so, without it);
* ``readonly``: ``.agent/`` is made read-only (a read-only bind mount; ``chmod``
  when not root, since root ignores permissions) while the loop works.

After the fault: the loop must have stopped with a one-line error (no
traceback), every state file must parse and every file hold a legal content
(the last good state); then the fault is lifted, failed todos are retried
(``codeagent todo retry --failed``), the loop runs again, and every invariant
of the end must hold.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from codeagent_app.chaos import checks, procs
from codeagent_app.chaos.runner import Context
from codeagent_app.chaos.workload import Workload, fast_config, make_workspace, new_path_flags
from llm_stub import StubOptions

FSIZE_LIMIT = 6000
TMPFS_KB = 48
LOOPS = ("legacy", "async")


def _run_cmd(*args: str) -> bool:
    try:
        return subprocess.run(list(args), capture_output=True, check=False).returncode == 0
    except OSError:  # no such command
        return False


def can_mount(work: Path) -> bool:
    """Whether this process may mount a tmpfs (root with CAP_SYS_ADMIN)."""
    probe = work / "mount-probe"
    probe.mkdir(parents=True, exist_ok=True)
    if not _run_cmd("mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(probe)):
        return False
    _run_cmd("umount", str(probe))
    return True


def _grow(state: Path) -> None:
    if not _run_cmd("mount", "-o", "remount,size=8m", str(state)):
        raise RuntimeError(f"cannot grow the tmpfs on {state}")


@contextlib.contextmanager
def state_on_tmpfs(root: Path, size_kb: int) -> Iterator[Callable[[], None]]:
    """``.agent/`` on a tmpfs of ``size_kb``; yields a function that grows it to 8 MB (the fault lifted)."""
    state, saved = root / ".agent", root.parent / f"{root.name}.agent-saved"
    state.rename(saved)
    state.mkdir()
    if not _run_cmd("mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(state)):
        raise RuntimeError(f"cannot mount a tmpfs on {state}")
    try:
        for entry in saved.iterdir():
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, state / entry.name)
        yield lambda: _grow(state)
    finally:
        keep = root.parent / f"{root.name}.agent-final"
        with contextlib.suppress(OSError):
            shutil.copytree(state, keep)
        _run_cmd("umount", str(state))
        shutil.rmtree(saved, ignore_errors=True)
        state.rmdir()
        keep.rename(state)


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """Functions that make ``path`` read-only and writable again (bind mount as root, chmod otherwise)."""
    mounted = False

    def freeze() -> None:
        nonlocal mounted
        if os.geteuid() == 0:
            mounted = _run_cmd("mount", "--bind", str(path), str(path))
            # EBUSY while a write through the new mount is in flight: try again at once
            for _ in range(500):
                if mounted and _run_cmd("mount", "-o", "remount,bind,ro", str(path)):
                    return
                time.sleep(0.002)
            raise RuntimeError(f"cannot make {path} read-only")
        else:  # pragma: no cover - depends on who runs the campaign
            for p in [path, *path.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)

    def thaw() -> None:
        nonlocal mounted
        if mounted:
            if not _run_cmd("umount", str(path)):
                _run_cmd("umount", "-l", str(path))
            mounted = False
        elif os.geteuid() != 0:  # pragma: no cover
            for p in [path, *path.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)

    try:
        yield freeze, thaw
    finally:
        thaw()


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE_LIMIT, FSIZE_LIMIT))


class Scenario:
    """One fault on one loop: run into it, check what is left, lift it, resume, check the end."""

    def __init__(self, name: str, loop: str, root: Path, url: str, todos: int) -> None:
        self.name, self.loop, self.root, self.url = name, loop, root, url
        self.load = Workload(todos)
        make_workspace(
            root, [self.load], config=fast_config(), flags=new_path_flags() if loop == "async" else None
        )
        self.result: dict[str, Any] = {"scenario": name, "loop": loop, "todos": todos}

    def args(self) -> list[str]:
        return procs.codeagent(
            "run",
            "--loop",
            self.loop,
            "-w",
            str(self.root),
            "--llm-url",
            self.url,
            "--until-idle",
            "--workers",
            "1",
        )

    def faulted_run(
        self, preexec: Callable[[], None] | None = None, during: Callable[[], None] | None = None
    ) -> None:
        """Run the loop into the fault (``during`` is applied once some todos are done)."""
        proc = procs.start(self.args(), subprocess.PIPE, preexec_fn=preexec)
        output = b""
        if during is not None:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                if checks.status_counts(self.root).get("done", 0) >= self.load.count // 4:
                    break
                time.sleep(0.01)
            try:
                during()
            except BaseException:
                procs.kill_group(proc)
                raise
        try:
            output, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            procs.kill_group(proc)
            self.result["hung"] = True
        text = output.decode("utf-8", "replace")
        (self.root.parent / f"{self.root.name}.log").write_text(text, encoding="utf-8")  # kept on failure
        lines = [line for line in text.splitlines() if line.strip()]
        self.result.update(
            exit_code=proc.returncode,
            last_line=lines[-1][:300] if lines else "",
            traceback="Traceback (most recent call last)" in text,
            during_fault=checks.status_counts(self.root),
        )
        self.result["state_problems"] = checks.quick_check(self.root, [self.load])

    def recover(self) -> None:
        """Retry what failed, run again, check every invariant of the end."""
        retry = subprocess.run(
            procs.codeagent("todo", "retry", "--failed", "-w", str(self.root)),
            capture_output=True,
            env=procs.child_env(),
            cwd=procs.REPO,
            check=False,
        )
        proc = procs.start(self.args(), subprocess.PIPE)
        try:
            output, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            procs.kill_group(proc)
            output = b"(timed out)"
        problems = checks.final_check(self.root, [self.load])
        if proc.returncode != 0:
            problems.append(f"the run after the fault exited {proc.returncode}: {output.decode()[-300:]}")
        self.result.update(
            retried=retry.returncode == 0, recovered=not problems, recovery_problems=problems[:10]
        )

    def verdict(self) -> dict[str, Any]:
        """The scenario's result with ``ok``."""
        r = self.result
        clean_stop = r.get("exit_code") not in (0, None) and not r.get("traceback") and not r.get("hung")
        stopped_ok = clean_stop or r.get("exit_code") == 0  # a fault the loop rode out is fine too
        r["ok"] = bool(stopped_ok and not r["state_problems"] and r.get("recovered"))
        return r


def run(ctx: Context) -> dict[str, Any]:
    """Every scenario on both loops."""
    todos = 40 if ctx.quick else 60
    mount_ok = can_mount(ctx.work)
    results: list[dict[str, Any]] = []
    with procs.stub(StubOptions(latency_ms=2.0, seed=ctx.seed)) as stub:
        for loop in LOOPS:
            s = Scenario("fsize", loop, ctx.work / f"disk-fsize-{loop}", stub.url, todos)
            s.faulted_run(preexec=_limit_file_size)
            s.recover()
            results.append(s.verdict())
            if mount_ok:
                s = Scenario("enospc", loop, ctx.work / f"disk-enospc-{loop}", stub.url, todos)
                with state_on_tmpfs(s.root, TMPFS_KB) as grow:
                    s.faulted_run()
                    grow()
                    s.recover()
                results.append(s.verdict())
            if os.geteuid() == 0 and not mount_ok:
                continue  # root ignores permissions and may not mount: no way to make .agent/ read-only
            s = Scenario("readonly", loop, ctx.work / f"disk-readonly-{loop}", stub.url, todos)
            with read_only(s.root / ".agent") as (freeze, thaw):
                s.faulted_run(during=freeze)
                thaw()
                s.recover()
            results.append(s.verdict())
            ctx.load.tick()
    problems = [
        f"{r['scenario']}/{r['loop']}: {p}"
        for r in results
        for p in r["state_problems"] + r.get("recovery_problems", [])
    ]
    problems += [
        f"{r['scenario']}/{r['loop']}: stopped with a traceback" for r in results if r.get("traceback")
    ]
    return {
        "ok": all(r["ok"] for r in results),
        "mount_privilege": mount_ok,
        "how": {
            "fsize": f"RLIMIT_FSIZE={FSIZE_LIMIT} bytes in the loop's process, SIGXFSZ ignored (EFBIG)",
            "enospc": f"a {TMPFS_KB} KiB tmpfs mounted on .agent/ (ENOSPC), grown to 8 MiB to recover"
            if mount_ok
            else "skipped: no privilege to mount a tmpfs",
            "readonly": "a read-only bind mount of .agent/ once a quarter of the todos are done (EROFS)"
            if os.geteuid() == 0 and mount_ok
            else "chmod a-w of .agent/ once a quarter of the todos are done (EACCES)"
            if os.geteuid() != 0
            else "skipped: root without the privilege to mount ignores permissions",
        },
        "scenarios": results,
        "problems": problems[:30],
    }
