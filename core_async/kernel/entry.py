"""Entry points the CLI wires: :func:`run_async` and :func:`serve_async` (and their in-loop forms).

Both pick the event loop (uvloop when it imports, else asyncio; one log line
says which), build an :class:`AsyncServerCore` over every workspace given,
and close everything before returning, also on SIGTERM / SIGINT.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from codeagent.protocols import ExtraRoute
from core_async.kernel.components import ComponentProvider
from core_async.kernel.limits import ResourceLimits
from core_async.kernel.logs import configure_logging
from core_async.kernel.loop_policy import run_on_best_loop
from core_async.kernel.server_core import AsyncServerCore, KernelOptions


def ensure_logging() -> None:
    """Install the kernel's log handler unless the application configured logging already."""
    if not logging.getLogger().handlers:
        configure_logging()


async def run_kernel(
    workspaces: Sequence[Path],
    *,
    llm_url: str | None = None,
    until_idle: bool = False,
    options: KernelOptions | None = None,
    on_started: Callable[[AsyncServerCore], None] | None = None,
) -> int:
    """Start a kernel on the running loop, run its main loop, shut it down; return todos processed.

    ``on_started`` is called once everything listens (e.g. to print the API's URL).
    """
    core = AsyncServerCore(workspaces, llm_url=llm_url, options=options, until_idle=until_idle)
    try:
        await core.start()
        if on_started is not None:
            on_started(core)
        return await core.run_main_loop()
    finally:
        await core.handle_shutdown()


def run_async(
    workspaces: list[Path],
    *,
    llm_url: str | None,
    until_idle: bool,
    use_uvloop: bool = True,
    grace_seconds: float = 10.0,
    limits: ResourceLimits | None = None,
    components: Callable[[Path], ComponentProvider] | None = None,
) -> int:
    """Run the async kernel on ``workspaces``; return how many todos it processed (done or failed).

    With ``until_idle`` it returns once no todo is left; otherwise it runs
    until SIGTERM / SIGINT. Raises :class:`codeagent.errors.AgentError`
    (e.g. :class:`~codeagent.errors.ConfigError`) for a bad workspace or config.
    """
    ensure_logging()
    options = KernelOptions(
        grace_seconds=grace_seconds, limits=limits or ResourceLimits(), components=components
    )
    return run_on_best_loop(
        run_kernel(workspaces, llm_url=llm_url, until_idle=until_idle, options=options), use_uvloop=use_uvloop
    )


def serve_async(
    workspaces: list[Path],
    *,
    host: str,
    port: int,
    llm_url: str | None,
    token: str | None = None,
    grace_seconds: float = 10.0,
    use_uvloop: bool = True,
    limits: ResourceLimits | None = None,
    components: Callable[[Path], ComponentProvider] | None = None,
    extra_routes: Sequence[ExtraRoute] = (),
) -> None:
    """Serve the async kernel and its HTTP API on ``host:port`` until SIGTERM / SIGINT, then stop gracefully.

    ``token`` overrides ``api.token`` of the first workspace's config. One line
    on stderr says where the API listens (``codeagent: API listening on URL``).
    """
    ensure_logging()
    options = KernelOptions(
        host=host,
        port=port,
        token=token,
        grace_seconds=grace_seconds,
        limits=limits or ResourceLimits(),
        components=components,
        extra_routes=extra_routes,
    )

    def announce(core: AsyncServerCore) -> None:
        print(f"codeagent: API listening on {core.api_url}", file=sys.stderr, flush=True)

    run_on_best_loop(
        run_kernel(workspaces, llm_url=llm_url, options=options, on_started=announce), use_uvloop=use_uvloop
    )
