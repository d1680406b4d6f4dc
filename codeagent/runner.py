"""What ``codeagent run`` and ``codeagent serve`` do: pick the loop, wire it through the bridge, run it.

The loop is ``--loop`` when given, else the flag file's ``loop``. Both loops
reach every component through the bridge's facades, so the flag file routes
each component while the service runs. With no ``--llm-url`` and no
``llm.base_url``, the embedded stub LLM is started (one line says so).

Graceful fallback (A4): when the async loop cannot start (an import or
event-loop failure) or dies with an unhandled error, the legacy loop takes
over the same workspace, unless the flag file says ``fallback_to_legacy =
false``; the reason is logged and recorded in the flags' audit log, and the
todos carry on from their checkpoints.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from codeagent.errors import AgentError, ConfigError
from codeagent.flags_api import flags_routes
from codeagent.workspace_lock import hold_workspace
from feature_flags import FLAGS_RELPATH, AuditEntry, Change, FlagStore, append_entry

if TYPE_CHECKING:
    from core_async.kernel.components import ComponentProvider

log = logging.getLogger("codeagent.runner")


def _check_workspace(workspace: Path) -> Path:
    root = workspace.expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(str(workspace), "workspace directory does not exist")
    return root


def _flags_path(root: Path, flags: Path | None) -> Path:
    return flags.expanduser().resolve() if flags else root / FLAGS_RELPATH


def choose_loop(root: Path, loop: str | None, flags: Path | None) -> tuple[str, bool]:
    """``(loop to run, fallback allowed)`` from ``--loop`` or the flag file (a bad file keeps defaults)."""
    store = FlagStore(_flags_path(root, flags))
    if store.last_error is not None:
        print(f"codeagent: warning: {store.last_error}; using the default flags", file=sys.stderr)
    current = store.flags
    return (loop or current.loop), current.fallback_to_legacy


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


def _record_fallback(root: Path, flags: Path | None, exc: BaseException) -> None:
    reason = f"async loop failed, falling back to the legacy loop: {type(exc).__name__}: {exc}"
    log.error("%s", reason)
    print(f"codeagent: {reason}", file=sys.stderr, flush=True)
    try:
        append_entry(
            _flags_path(root, flags),
            AuditEntry(source="fallback", reason=reason, changes=[Change("loop", "async", "legacy")]),
        )
    except OSError as err:  # the audit log is informative; never let it stop the fallback
        log.warning("cannot record the fallback in the audit log: %s", err)


def _components(flags: Path | None) -> Callable[[Path], ComponentProvider]:
    """Each workspace's components for the async kernel: the bridge's facades, routed by its flags."""
    from bridge.runtime import BridgeRuntime
    from bridge.wiring import RoutedComponents

    return lambda root: RoutedComponents(BridgeRuntime(root, _flags_path(root, flags)))


def _run_legacy(root: Path, llm_url: str | None, until_idle: bool, flags: Path | None) -> int:
    from bridge.runtime import BridgeRuntime
    from bridge.wiring import build_routed_legacy_agent

    with llm_endpoint(root, llm_url) as url:
        runtime = BridgeRuntime(root, _flags_path(root, flags))
        try:
            agent = build_routed_legacy_agent(root, runtime, url)
            try:
                with _stop_on_signals() as stop:
                    return agent.run(until_idle=until_idle, stop=stop)
            finally:
                agent.close()
        finally:
            runtime.close()


def run_workspace(
    workspace: Path | list[Path],
    *,
    llm_url: str | None = None,
    until_idle: bool = False,
    loop: str | None = None,
    flags: Path | None = None,
    use_uvloop: bool = True,
) -> int:
    """Run the agent loop on the workspace(s); return how many todos it processed."""
    roots = [_check_workspace(w) for w in (workspace if isinstance(workspace, list) else [workspace])]
    chosen, fallback = choose_loop(roots[0], loop, flags)
    with ExitStack() as stack:
        for root in roots:
            stack.enter_context(hold_workspace(root, chosen))
        if chosen == "async":
            try:
                from core_async.kernel.entry import run_async

                return run_async(
                    roots,
                    llm_url=llm_url,
                    until_idle=until_idle,
                    use_uvloop=use_uvloop,
                    components=_components(flags),
                )
            except AgentError:
                raise
            except Exception as exc:
                if not fallback or len(roots) != 1:
                    raise
                _record_fallback(roots[0], flags, exc)
        if len(roots) != 1:
            raise ConfigError(
                "--workspace", "the legacy loop serves one workspace; use --loop async for several"
            )
        return _run_legacy(roots[0], llm_url, until_idle, flags)


def serve_workspace(
    workspace: Path | list[Path],
    *,
    host: str,
    port: int,
    llm_url: str | None = None,
    loop: str | None = None,
    flags: Path | None = None,
    use_uvloop: bool = True,
    grace_seconds: float = 10.0,
) -> None:
    """Run the agent loop and its HTTP API until SIGINT or SIGTERM."""
    roots = [_check_workspace(w) for w in (workspace if isinstance(workspace, list) else [workspace])]
    chosen, fallback = choose_loop(roots[0], loop, flags)
    with ExitStack() as stack:
        for root in roots:
            stack.enter_context(hold_workspace(root, chosen))
        if chosen == "async":
            try:
                from core_async.kernel.entry import serve_async

                serve_async(
                    roots,
                    host=host,
                    port=port,
                    llm_url=llm_url,
                    use_uvloop=use_uvloop,
                    grace_seconds=grace_seconds,
                    components=_components(flags),
                    extra_routes=flags_routes(_flags_path(roots[0], flags)),
                )
                return
            except AgentError:
                raise
            except Exception as exc:
                if not fallback or len(roots) != 1:
                    raise
                _record_fallback(roots[0], flags, exc)
        if len(roots) != 1:
            raise ConfigError(
                "--workspace", "the legacy loop serves one workspace; use --loop async for several"
            )
        _serve_legacy(roots[0], host, port, llm_url, flags)


def _serve_legacy(root: Path, host: str, port: int, llm_url: str | None, flags: Path | None) -> None:
    from bridge.runtime import BridgeRuntime
    from bridge.wiring import build_routed_legacy_agent
    from legacy.api import LegacyAPIServer

    with llm_endpoint(root, llm_url) as url:
        runtime = BridgeRuntime(root, _flags_path(root, flags))
        agent = build_routed_legacy_agent(root, runtime, url)
        api = LegacyAPIServer(
            agent.todos,
            agent.status,
            agent.checkpoints,
            host=host,
            port=port,
            token=agent.config.api.token,
            on_todo_added=lambda _todo: agent.wake(),
            extra_routes=flags_routes(_flags_path(root, flags)),
        )
        api.start()
        print(f"codeagent: API listening on {api.url}", file=sys.stderr, flush=True)
        try:
            with _stop_on_signals() as stop:
                agent.run(until_idle=False, stop=stop)
        finally:
            api.stop()
            agent.close()
            runtime.close()
