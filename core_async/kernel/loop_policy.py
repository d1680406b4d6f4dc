"""Pick the event loop: uvloop when it imports, the default asyncio loop otherwise.

Exactly one log line says which loop runs and, for the fallback, why.
:func:`tune_gc` sets the cyclic garbage collector up for a long-running service process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("codeagent.kernel.loop")

T = TypeVar("T")

# The collector's first generation runs every GEN0_THRESHOLD net container allocations
# (CPython's default: 700). A todo allocates thousands (models, dicts, frames of the
# coroutines), so at the default the collector ran several times per todo and, with the
# older generations it triggers, took 6-8% of a worker's CPU (perf, cpu profile, c = 100).
GEN0_THRESHOLD = 20_000
_gc_tuned = False
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


def tune_gc() -> None:
    """Set the garbage collector up for a service process: once, before its loop starts.

    Everything alive now (the imported modules, their classes and functions: most of
    the heap, and none of it garbage) is moved out of the collector's reach with
    :func:`gc.freeze`, so the full collections no longer walk it; the first
    generation is collected less often (:data:`GEN0_THRESHOLD`). Reference counting
    still frees almost everything at once; only cycles wait a little longer. For
    the processes the shipped commands start, not for a library caller (a test
    process relies on the collector to find leaked sockets).
    """
    global _gc_tuned
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    _gc_tuned = True


def freeze_started_heap() -> None:
    """In a process :func:`tune_gc` set up, also freeze what a kernel's start built (its long-lived parts)."""
    if _gc_tuned:
        gc.freeze()


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
