"""Running the stub LLM in a child process (``python -m llm_stub``), e.g. for benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from llm_stub.options import StubOptions
from llm_stub.server import READY_LINE

READY_PREFIX = READY_LINE.split("{url}")[0]


def stub_command(options: StubOptions, host: str, port: int) -> list[str]:
    """The command line that serves ``options`` on ``host:port``."""
    args = [
        sys.executable,
        "-m",
        "llm_stub",
        "--host",
        host,
        "--port",
        str(port),
        "--latency-ms",
        repr(float(options.latency_ms)),
        "--jitter-ms",
        repr(float(options.jitter_ms)),
        "--fail-rate",
        repr(float(options.fail_rate)),
        "--faults",
        ",".join(options.faults),
        "--seed",
        str(options.seed),
        "--retry-after",
        repr(float(options.retry_after_s)),
        "--hang-s",
        repr(float(options.hang_s)),
        "--model",
        options.model,
        "--draws",
        options.draws,
        "--hold-until-in-flight",
        str(options.hold_until_in_flight),
        "--hold-timeout-s",
        repr(float(options.hold_timeout_s)),
    ]
    if options.latency_p99_ms is not None:
        args += ["--latency-p99-ms", repr(float(options.latency_p99_ms))]
    if options.fault_rates:
        args += ["--fault-rates", ",".join(f"{k}={v!r}" for k, v in options.fault_rates.items())]
    if options.rules_path is not None:
        args += ["--rules", options.rules_path]
    return args


def start_stub_process(
    options: StubOptions | None = None, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 30.0
) -> tuple[subprocess.Popen[str], str]:
    """Start the stub in a child process; return ``(process, base URL)`` once it accepts connections.

    The child's stderr is inherited (its log lines show up in the parent's);
    its stdout is only read for the ready line. Stop it with
    :func:`stop_stub_process` (or ``terminate()`` then ``wait()``).
    """
    options = options or StubOptions()
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    command = [*stub_command(options, host, port), "--quiet-stdout"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    stdout = process.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = lines[0].strip() if lines else ""
    if not line.startswith(READY_PREFIX):
        stop_stub_process(process)
        reader.join(5)
        stdout.close()
        why = "timed out" if not lines else f"said {line!r}" if line else f"exited {process.returncode}"
        raise RuntimeError(f"the stub LLM process did not start ({why}): {' '.join(command)}")
    stdout.close()  # the child sends nothing more to stdout (--quiet-stdout)
    return process, line[len(READY_PREFIX) :]


def stop_stub_process(process: subprocess.Popen[str], timeout: float = 15.0) -> int:
    """Stop a stub child process with SIGTERM (SIGKILL after ``timeout``); return its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None and not process.stdout.closed:
        process.stdout.close()
    return process.returncode
