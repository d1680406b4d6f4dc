"""Entry points: :func:`run_async` and :func:`serve_async` (and their in-loop form :func:`run_kernel`).

Both pick the event loop (uvloop when it imports, else asyncio; one log line
says which), build an :class:`AsyncServerCore` over every workspace given,
and close everything before returning, also on SIGTERM / SIGINT. The
application (``codeagent run`` / ``serve``) is their one production caller: it
holds the workspaces' locks and injects the routed components, the fallback
LLM endpoint and the API's extra routes through :class:`KernelOptions`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from core_async.kernel.logs import configure_logging
from core_async.kernel.loop_policy import freeze_started_heap, run_on_best_loop
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
        freeze_started_heap()
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
    options: KernelOptions | None = None,
) -> int:
    """Run the async kernel on ``workspaces``; return how many todos it processed (done or failed).

    With ``until_idle`` it returns once no todo is left; otherwise it runs
    until SIGTERM / SIGINT. Raises :class:`codeagent.errors.AgentError`
    (e.g. :class:`~codeagent.errors.ConfigError`) for a bad workspace or config.
    """
    ensure_logging()
    options = replace(options or KernelOptions(), port=None)
    return run_on_best_loop(
        run_kernel(workspaces, llm_url=llm_url, until_idle=until_idle, options=options), use_uvloop=use_uvloop
    )


def serve_async(
    workspaces: list[Path],
    *,
    llm_url: str | None,
    use_uvloop: bool = True,
    options: KernelOptions | None = None,
) -> int:
    """Serve the async kernel and its HTTP API until SIGTERM / SIGINT, then stop gracefully.

    The API listens on ``options.host:options.port``; one line on stderr says
    where (``codeagent: API listening on URL``). Returns how many todos it processed.
    """
    ensure_logging()
    options = options or KernelOptions()
    if options.port is None:
        options = replace(options, port=0)

    def announce(core: AsyncServerCore) -> None:
        print(f"codeagent: API listening on {core.api_url}", file=sys.stderr, flush=True)

    return run_on_best_loop(
        run_kernel(workspaces, llm_url=llm_url, options=options, on_started=announce), use_uvloop=use_uvloop
    )
