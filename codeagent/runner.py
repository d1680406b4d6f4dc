"""What ``codeagent run`` and ``codeagent serve`` do: pick the LLM endpoint, wire the loop, run it.

With no ``--llm-url`` and no ``llm.base_url`` in the workspace's config, the
embedded stub LLM is started in-process (the embedded default) and one line
says so.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from codeagent.errors import ConfigError
from codeagent.workspace_lock import hold_workspace


def _check_workspace(workspace: Path) -> Path:
    root = workspace.expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(str(workspace), "workspace directory does not exist")
    return root


@contextmanager
def llm_endpoint(workspace: Path, llm_url: str | None) -> Iterator[str]:
    """Yield the LLM base URL to use, starting the embedded stub when none is configured."""
    from legacy.config import load_config

    if llm_url:
        yield llm_url
        return
    configured = load_config(workspace).llm.base_url
    if configured:
        yield configured
        return
    from codeagent.stub import StubServer

    with StubServer() as stub:
        print(f"codeagent: no LLM configured; using the embedded stub LLM at {stub.url}", file=sys.stderr)
        yield stub.url


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_workspace(workspace: Path, *, llm_url: str | None = None, until_idle: bool = False) -> int:
    """Run the agent loop on ``workspace``; return how many todos it processed."""
    from legacy.wiring import build_agent

    root = _check_workspace(workspace)
    with hold_workspace(root, "legacy"), llm_endpoint(root, llm_url) as url:
        agent = build_agent(root, llm_url=url)
        try:
            with _stop_on_signals() as stop:
                return agent.run(until_idle=until_idle, stop=stop)
        finally:
            agent.close()


def serve_workspace(workspace: Path, *, host: str, port: int, llm_url: str | None = None) -> None:
    """Run the agent loop and its HTTP API until SIGINT or SIGTERM."""
    from legacy.api import LegacyAPIServer
    from legacy.wiring import build_agent

    root = _check_workspace(workspace)
    with hold_workspace(root, "legacy"), llm_endpoint(root, llm_url) as url:
        agent = build_agent(root, llm_url=url)
        api = LegacyAPIServer(
            agent.todos,
            agent.status,
            agent.checkpoints,
            host=host,
            port=port,
            token=agent.config.api.token,
            on_todo_added=lambda _todo: agent.wake(),
        )
        api.start()
        print(f"codeagent: API listening on {api.url}", file=sys.stderr, flush=True)
        try:
            with _stop_on_signals() as stop:
                agent.run(until_idle=False, stop=stop)
        finally:
            api.stop()
            agent.close()
