"""What ``codeagent run`` and ``codeagent serve`` do: one entry, which picks the loop, wires it, runs it.

The loop is ``--loop`` when given, else the flag file's ``loop``. Both loops
reach every component through the bridge's facades, so the flag file routes
each component (configuration included) while the service runs. With no
``--llm-url`` and no ``llm.base_url``, the embedded stub LLM is started (one
line says so).

Each workspace is held (``.agent/agent.lock``) for as long as a loop drives
it, whichever loop that is.

Graceful fallback: when the async loop cannot start (an import or event-loop
failure) or dies with an unhandled error, the legacy loop takes over the same
workspace, unless the flag file says ``fallback_to_legacy = false``; the
reason is logged and recorded in the flags' audit log, and the todos carry on
from their checkpoints.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from codeagent.errors import AgentError, ConfigError
from codeagent.paths import FLAGS_RELPATH
from codeagent_app.endpoint import aembedded_stub, llm_endpoint
from codeagent_app.flags_api import flags_routes
from feature_flags import AuditEntry, Change, FlagStore, append_entry
from legacy.workspace_lock import hold_workspace

if TYPE_CHECKING:
    from codeagent.mounts import Mount
    from core_async.kernel.components import ComponentProvider

log = logging.getLogger("codeagent.runner")


@dataclass(frozen=True)
class LoopRequest:
    """What the command line asked for."""

    workspaces: list[Path]
    llm_url: str | None = None
    loop: str | None = None
    flags: Path | None = None
    use_uvloop: bool = True
    until_idle: bool = False
    #: ``(host, port)`` to serve the HTTP API on; ``None`` runs without it.
    api: tuple[str, int] | None = None
    grace_seconds: float = 10.0
    #: Worker processes of the async loop (``None``: the usable CPUs; never more than the workspaces).
    workers: int | None = None
    #: Overrides of the async kernel's limits (``max_concurrency``, ``per_workspace``, ``llm_slots``, ``file_slots``).
    limits: dict[str, int] = field(default_factory=dict)


def resolve_workspace(workspace: Path) -> Path:
    """The workspace's absolute path; :class:`ConfigError` when it is not a directory."""
    root = workspace.expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(str(workspace), "workspace directory does not exist")
    return root


def refuse_state_elsewhere(root: Path) -> None:
    """:class:`ConfigError` when the workspace's files are not its state (it moved to PostgreSQL), so no loop runs on them."""
    from migration.store import state_elsewhere

    reason = state_elsewhere(root)
    if reason is not None:
        raise ConfigError(str(root), f"not run on its files: {reason}")


def flags_path(root: Path, flags: Path | None) -> Path:
    """The flag file: ``--flags``, else the workspace's own."""
    return flags.expanduser().resolve() if flags else root / FLAGS_RELPATH


def choose_loop(root: Path, loop: str | None, flags: Path | None) -> tuple[str, bool]:
    """``(loop to run, fallback allowed)`` from ``--loop`` or the flag file (a bad file keeps defaults)."""
    store = FlagStore(flags_path(root, flags))
    if store.last_error is not None:
        print(f"codeagent: warning: {store.last_error}; using the default flags", file=sys.stderr)
    current = store.flags
    return (loop or current.loop), current.fallback_to_legacy


def drive(request: LoopRequest) -> int:
    """Run the chosen loop on the workspaces until it stops; return how many todos it processed."""
    roots = [resolve_workspace(w) for w in request.workspaces or [Path(".")]]
    for root in roots:
        refuse_state_elsewhere(root)
    chosen, fallback = choose_loop(roots[0], request.loop, request.flags)
    if chosen == "async":
        from codeagent_app.workers import drive_workers, usable_cpus

        workers = min(request.workers or usable_cpus(), len(roots))
        if workers > 1:
            return drive_workers(request, roots, workers)
    elif request.workers not in (None, 1):
        raise ConfigError(
            "--workers", "the legacy loop drives one workspace in one process; use --loop async"
        )
    with ExitStack() as stack:
        for root in roots:
            stack.enter_context(hold_workspace(root, chosen))
        if chosen == "async":
            try:
                return _drive_async(request, roots)
            except AgentError:
                raise
            except Exception as exc:
                if not fallback or len(roots) != 1:
                    raise
                _record_fallback(roots[0], request.flags, exc)
        if len(roots) != 1:
            raise ConfigError(
                "--workspace", "the legacy loop serves one workspace; use --loop async for several"
            )
        return _drive_legacy(request, roots[0])


def run_workspace(
    workspace: Path | list[Path],
    *,
    llm_url: str | None = None,
    until_idle: bool = False,
    loop: str | None = None,
    flags: Path | None = None,
    use_uvloop: bool = True,
) -> int:
    """``codeagent run``: the loop without its API; return how many todos it processed."""
    workspaces = workspace if isinstance(workspace, list) else [workspace]
    return drive(LoopRequest(workspaces, llm_url, loop, flags, use_uvloop, until_idle=until_idle))


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
    """``codeagent serve``: the loop and its HTTP API until SIGINT or SIGTERM."""
    workspaces = workspace if isinstance(workspace, list) else [workspace]
    drive(
        LoopRequest(
            workspaces, llm_url, loop, flags, use_uvloop, api=(host, port), grace_seconds=grace_seconds
        )
    )


# -- the async core ---------------------------------------------------------------------------------


def routed_components(flags: Path | None) -> Callable[[Path], ComponentProvider]:
    """Each workspace's components for the async kernel: the bridge's facades, routed by its flags."""
    from bridge.runtime import BridgeRuntime
    from bridge.wiring import RoutedComponents
    from codeagent_app.flags_cli import register_in_force

    def provider(root: Path) -> ComponentProvider:
        runtime = BridgeRuntime(root, flags_path(root, flags))
        register_in_force(runtime.store)  # GET /flags and /ui report what this loop routes by
        return RoutedComponents(runtime)

    return provider


def _drive_async(request: LoopRequest, roots: list[Path]) -> int:
    from bridge.wiring import recording_transport
    from core_async.kernel.entry import run_async, serve_async
    from core_async.kernel.server_core import KernelOptions

    options = KernelOptions(
        limit_overrides=request.limits,
        grace_seconds=request.grace_seconds,
        components=routed_components(request.flags),
        fallback_llm=aembedded_stub,
        wrap_llm_transport=recording_transport,
    )
    if request.api is None:
        return run_async(
            roots,
            llm_url=request.llm_url,
            until_idle=request.until_idle,
            use_uvloop=request.use_uvloop,
            options=options,
        )
    host, port = request.api
    extra = flags_routes(flags_path(roots[0], request.flags))
    options = replace(options, host=host, port=port, extra_routes=extra)
    # The dashboard at /ui (issue 15): a mount of the API server, which knows nothing of it.
    from codeagent_app.dashboard import dashboard_mounts

    options = replace(options, mounts=dashboard_mounts(request, roots, "async"))
    return serve_async(roots, llm_url=request.llm_url, use_uvloop=request.use_uvloop, options=options)


def _record_fallback(root: Path, flags: Path | None, exc: BaseException) -> None:
    reason = f"async loop failed, falling back to the legacy loop: {type(exc).__name__}: {exc}"
    log.error("%s", reason)
    print(f"codeagent: {reason}", file=sys.stderr, flush=True)
    try:
        append_entry(
            flags_path(root, flags),
            AuditEntry(source="fallback", reason=reason, changes=[Change("loop", "async", "legacy")]),
        )
    except OSError as err:  # the audit log is informative; never let it stop the fallback
        log.warning("cannot record the fallback in the audit log: %s", err)


# -- the legacy loop --------------------------------------------------------------------------------


@contextmanager
def _stop_on_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """Call ``on_stop`` from a helper thread on SIGINT or SIGTERM while the block runs.

    The loop then sleeps its whole poll interval instead of waking to look at a
    stop flag. The handler only writes a byte to a pipe: it runs on the main
    thread, possibly inside the very ``Event.wait`` that ``on_stop`` sets, whose
    lock it would deadlock on. The helper blocks on the pipe without a timeout.
    """
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            os.write(write_fd, b"\0")
        except BlockingIOError:  # the pipe is full of earlier signals: the stop is on its way
            pass

    def relay() -> None:
        while os.read(read_fd, 64):  # b"" once the write end is closed: the block is over
            on_stop()

    helper = threading.Thread(target=relay, name="stop-on-signals", daemon=True)
    helper.start()
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        os.close(write_fd)
        helper.join()
        os.close(read_fd)


def _dashboard(request: LoopRequest, root: Path) -> list[Mount]:
    """The dashboard at ``/ui`` on the legacy server (issue 15)."""
    from codeagent_app.dashboard import dashboard_mounts

    return dashboard_mounts(request, [root], "legacy")


def _drive_legacy(request: LoopRequest, root: Path) -> int:
    from bridge.runtime import BridgeRuntime
    from bridge.wiring import routed_sync_components, routed_sync_config
    from codeagent_app.flags_cli import register_in_force
    from legacy.agent import LegacyAgent
    from legacy.api import LegacyAPIServer

    runtime = BridgeRuntime(root, flags_path(root, request.flags))
    register_in_force(runtime.store)  # GET /flags and /ui report what this loop routes by
    try:
        config = routed_sync_config(runtime, root).load()
        with llm_endpoint(request.llm_url, config.llm.base_url) as url:
            c = routed_sync_components(runtime, root, config, url)
            agent = LegacyAgent(root, config, c.todos, c.status, c.checkpoints, c.files, c.git, c.llm)
            api: LegacyAPIServer | None = None
            try:
                if request.api is not None:
                    host, port = request.api
                    api = LegacyAPIServer(
                        agent.todos,
                        agent.status,
                        agent.checkpoints,
                        host=host,
                        port=port,
                        token=config.api.token,
                        on_todo_added=lambda _todo: agent.wake(),
                        extra_routes=flags_routes(flags_path(root, request.flags)),
                        root=root,
                        mounts=_dashboard(request, root),  # the dashboard at /ui (issue 15)
                    )
                    api.start()
                    print(f"codeagent: API listening on {api.url}", file=sys.stderr, flush=True)
                with _stop_on_signals(agent.request_stop):
                    return agent.run(until_idle=request.until_idle and api is None)
            finally:
                if api is not None:
                    api.stop()
                agent.close()
    finally:
        runtime.close()
