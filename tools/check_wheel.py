"""CI check: a plain install of the wheel (no extras) runs the async server.

``python tools/check_wheel.py`` builds the project's wheel, installs it without
extras into a fresh virtualenv (pip takes the runtime dependencies from the
registry, nothing from this checkout or the developer's environment), then with
that virtualenv's ``codeagent``:

1. ``codeagent demo --workspace WS`` creates the sample workspace, runs it and
   prints ``12/12 todos done``;
2. ``codeagent serve --loop async -w WS --port 0`` starts, announces
   ``codeagent: API listening on URL`` on stderr without falling back to the
   legacy loop, answers ``GET /health`` with ``"loop": "async"``, and its
   WebSocket ``/events?after=0`` (opened with the ``websockets`` package of the
   fresh virtualenv) replays at least one event (``server.started``);
3. SIGTERM stops it with exit status 0 within 30 s.

It guards against a runtime dependency that only the dev extra brings in: the
async loop, or uvicorn's WebSocket protocol, would then fail only on a plain
``pip install``. One line per step; on the first failure, a message saying
what failed (with the server's log) and exit status 1. The wheel is built from
a copy of the working tree, so no ``build/`` is left in it and no stale build
output ends up in the wheel. Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_DONE = "12/12 todos done"
LISTENING = re.compile(r"^codeagent: API listening on (http://\S+)\s*$", re.MULTILINE)
FALLBACK = "falling back to the legacy loop"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Never copied into the build tree: VCS data, virtualenvs, caches, earlier build output.
IGNORED = shutil.ignore_patterns(
    ".git",
    ".nox",
    ".ci-venv",
    ".venv",
    "venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    ".import_linter_cache",
    "bench-results",
    ".coverage",
    ".coverage.*",
)
# Talks to the server's /events with the fresh virtualenv's websockets: prints the
# stream's hello frame, then the first event (a frame with a seq), as JSON lines.
WS_CLIENT = """
import json, sys
from websockets.sync.client import connect

with connect(sys.argv[1], open_timeout=15, close_timeout=5) as ws:
    while True:
        frame = json.loads(ws.recv(timeout=15))
        print(json.dumps(frame), flush=True)
        if "seq" in frame:
            break
"""


class CheckFailed(Exception):
    """A step failed; the message says which and why."""


def say(message: str) -> None:
    print(f"check_wheel: {message}", flush=True)


def tail(text: str, lines: int = 40) -> str:
    kept = text.strip().splitlines()[-lines:]
    return "\n".join(f"    | {line}" for line in kept) if kept else "    | (nothing)"


def child_env(venv: Path) -> dict[str, str]:
    """The environment for the fresh virtualenv's commands: nothing of this checkout or the caller's venv."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    }
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["COLUMNS"] = "300"  # rich wraps its output at the terminal width
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run(
    what: str, cmd: Sequence[str | Path], *, cwd: Path, env: dict[str, str] | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            [str(part) for part in cmd],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"{what}: no result within {timeout:.0f} s") from exc
    if result.returncode != 0:
        raise CheckFailed(
            f"{what}: exit status {result.returncode}\n  $ {' '.join(map(str, cmd))}\n"
            f"  stdout:\n{tail(result.stdout)}\n  stderr:\n{tail(result.stderr)}"
        )
    return result


def build_wheel(tmp: Path) -> Path:
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED, symlinks=True)
    wheels = tmp / "wheels"
    run(
        "pip wheel . --no-deps",
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--quiet", "-w", wheels],
        cwd=source,
        env=None,
        timeout=600,
    )
    built = sorted(wheels.glob("*.whl"))
    if len(built) != 1:
        raise CheckFailed(f"pip wheel: expected one wheel in {wheels}, found {[w.name for w in built]}")
    return built[0]


def make_venv(tmp: Path, wheel: Path) -> Path:
    venv = tmp / "venv"
    run("python -m venv", [sys.executable, "-m", "venv", venv], cwd=tmp, env=None, timeout=300)
    python = venv / "bin" / "python"
    # The wheel alone, no extras: pip resolves the runtime dependencies from the registry.
    run(
        "pip install <wheel> (no extras)",
        [python, "-m", "pip", "install", "--quiet", wheel],
        cwd=tmp,
        env=child_env(venv),
        timeout=900,
    )
    return venv


def check_installed(tmp: Path, venv: Path) -> str:
    """The packages come from the fresh venv, and no dev-only package came along."""
    probe = (
        "import importlib.metadata as m, importlib.util as u, json\n"
        "print(json.dumps({'origin': u.find_spec('codeagent_app').origin,\n"
        "  'dists': sorted({(d.metadata['Name'] or '').lower() for d in m.distributions()})}))\n"
        # every shipped command's modules import: bench (psutil, matplotlib) and chaos (hypothesis) included
        "import benchmarks.ab, benchmarks.charts, benchmarks.fleet, codeagent_app.chaos.fuzz, codeagent_app.fleet_cli\n"
        "import codeagent_app.dashboard.app, hypothesis, matplotlib.pyplot, psutil"
    )
    result = run(
        "inspect the fresh venv",
        [venv / "bin" / "python", "-c", probe],
        cwd=tmp,
        env=child_env(venv),
        timeout=60,
    )
    found = json.loads(result.stdout)
    origin = Path(found["origin"])
    if not origin.is_relative_to(venv):
        raise CheckFailed(f"codeagent_app is imported from {origin}, not from the fresh venv {venv}")
    dists: list[str] = found["dists"]
    dev_only = sorted({"pytest", "import-linter", "nox", "mypy", "openai"} & set(dists))
    if dev_only:
        raise CheckFailed(f"the plain install brought dev-only packages along: {dev_only}")
    ws = "websockets" if "websockets" in dists else "NO websockets"
    return f"{len(dists)} distributions, {ws}, codeagent_app from {origin.parent}"


def run_demo(tmp: Path, venv: Path, workspace: Path) -> None:
    result = run(
        "codeagent demo",
        [venv / "bin" / "codeagent", "demo", "--workspace", workspace],
        cwd=tmp,
        env=child_env(venv),
        timeout=600,
    )
    if DEMO_DONE not in result.stdout:
        raise CheckFailed(f"codeagent demo: no {DEMO_DONE!r} in its output:\n{tail(result.stdout)}")


class Server:
    """``codeagent serve --loop async`` as a child process, its output in files."""

    def __init__(self, tmp: Path, venv: Path, workspace: Path) -> None:
        self.stdout_path = tmp / "serve.stdout"
        self.stderr_path = tmp / "serve.stderr"
        cmd = [venv / "bin" / "codeagent", "serve", "--loop", "async", "-w", workspace, "--port", "0"]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # Its own session: on failure the whole group (the server and anything it started) is killed.
            self.proc = subprocess.Popen(
                [str(part) for part in cmd],
                cwd=tmp,
                env=child_env(venv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> str:
        out = self.stdout_path.read_text(errors="replace")
        return f"  server stdout:\n{tail(out)}\n  server stderr:\n{tail(self.stderr())}"

    def check_no_fallback(self) -> None:
        if FALLBACK in self.stderr():
            raise CheckFailed(
                f"the async loop failed and the server fell back to the legacy loop\n{self.logs()}"
            )

    def wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = self.stderr()
            # The legacy fallback announces its own API: judge the fallback first.
            self.check_no_fallback()
            match = LISTENING.search(text)
            if match:
                return match.group(1)
            if self.proc.poll() is not None:
                raise CheckFailed(
                    f"codeagent serve exited ({self.proc.returncode}) before listening\n{self.logs()}"
                )
            time.sleep(0.1)
        raise CheckFailed(
            f"codeagent serve: no 'API listening' line within {START_TIMEOUT:.0f} s\n{self.logs()}"
        )

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise CheckFailed(
                f"codeagent serve: still running {STOP_TIMEOUT:.0f} s after SIGTERM\n{self.logs()}"
            ) from exc

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def check_health(server: Server, url: str) -> str:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            status: int = response.status
            body: str = response.read().decode("utf-8", "replace")
    except OSError as exc:
        raise CheckFailed(f"GET {url}/health: {exc}\n{server.logs()}") from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise CheckFailed(f"GET {url}/health: not JSON: {body[:200]!r}") from exc
    if (
        status != 200
        or not isinstance(data, dict)
        or data.get("loop") != "async"
        or data.get("status") != "ok"
    ):
        raise CheckFailed(
            f'GET {url}/health: {status} {body[:200]!r}, expected {{"status": "ok", "loop": "async"}}'
        )
    return body.strip()


def check_events(tmp: Path, venv: Path, server: Server, url: str) -> str:
    ws_url = "ws://" + url.removeprefix("http://") + "/events?after=0"
    try:
        result = run(
            f"WebSocket {ws_url} (the fresh venv's websockets)",
            [venv / "bin" / "python", "-c", WS_CLIENT, ws_url],
            cwd=tmp,
            env=child_env(venv),
            timeout=60,
        )
    except CheckFailed as exc:
        hint = ""
        if "No module named 'websockets'" in str(exc):
            hint = "\n  websockets is not installed by a plain install: it must be a runtime dependency"
        raise CheckFailed(f"{exc}{hint}\n{server.logs()}") from exc
    frames = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    events = [frame for frame in frames if isinstance(frame, dict) and "seq" in frame]
    if not events:
        raise CheckFailed(f"WebSocket {ws_url}: no event received, only {frames}")
    return f"seq {events[0]['seq']} {events[0].get('type')!r}"


def check(tmp: Path) -> None:
    started = time.monotonic()

    def done(message: str) -> None:
        say(f"{message} ({time.monotonic() - step_started:.1f} s)")

    step_started = time.monotonic()
    wheel = build_wheel(tmp)
    done(f"built {wheel.name}")

    step_started = time.monotonic()
    venv = make_venv(tmp, wheel)
    done("installed the wheel without extras into a fresh venv")

    step_started = time.monotonic()
    done(check_installed(tmp, venv))

    workspace = tmp / "ws"
    step_started = time.monotonic()
    run_demo(tmp, venv, workspace)
    done(f"codeagent demo --workspace {workspace}: {DEMO_DONE}")

    step_started = time.monotonic()
    server = Server(tmp, venv, workspace)
    try:
        url = server.wait_listening()
        done(f"codeagent serve --loop async: listening on {url}, no fallback to the legacy loop")

        step_started = time.monotonic()
        done(f"GET /health: {check_health(server, url)}")

        step_started = time.monotonic()
        done(f"WebSocket /events?after=0: received {check_events(tmp, venv, server, url)}")

        step_started = time.monotonic()
        server.check_no_fallback()
        code = server.stop()
        if code != 0:
            raise CheckFailed(
                f"codeagent serve: exit status {code} after SIGTERM, expected 0\n{server.logs()}"
            )
        server.check_no_fallback()
        done("SIGTERM: the server exited 0")
    finally:
        server.kill()
    say(f"OK in {time.monotonic() - started:.1f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--keep", action="store_true", help="Keep the temp dir (wheel, venv, workspace, logs)."
    )
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="codeagent-check-wheel-"))
    try:
        check(tmp)
    except CheckFailed as exc:
        print(f"check_wheel: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
