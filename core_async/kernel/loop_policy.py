"""Pick the event loop: uvloop when it imports, the default asyncio loop otherwise.

Exactly one log line says which loop runs and, for the fallback, why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("codeagent.kernel.loop")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def choose_loop(use_uvloop: bool = True) -> tuple[LoopFactory, str, str]:
    """``(loop factory, name, reason)``: uvloop's when wanted and importable, else asyncio's."""
    if not use_uvloop:
        return asyncio.new_event_loop, "asyncio", "uvloop not requested"
    try:
        import uvloop
    except ImportError as exc:
        return asyncio.new_event_loop, "asyncio", f"uvloop is not available ({exc})"
    version = getattr(uvloop, "__version__", "?")
    factory: LoopFactory = uvloop.new_event_loop
    return factory, "uvloop", f"uvloop {version}"


def run_on_best_loop(
    main: Coroutine[Any, Any, T], *, use_uvloop: bool = True, debug: bool | None = None
) -> T:
    """Run ``main`` to completion on a new loop chosen by :func:`choose_loop`, logging the choice once."""
    factory, name, reason = choose_loop(use_uvloop)
    if name == "uvloop":
        log.info("event loop: uvloop (%s)", reason)
    else:
        log.info("event loop: asyncio default loop (fallback: %s)", reason)
    with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
        return runner.run(main)
