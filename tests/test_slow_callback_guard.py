"""The suite's guard against blocking calls in async code can fail: a blocking sleep is caught.

The loop runs in its own thread so that this deliberate slow callback is judged
by the catcher made here, not by the suite's autouse guard on the test thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from tests.conftest import SLOW_CALLBACK_SECONDS, _SlowCallbackCatcher, debug_loop


def test_a_blocking_call_on_the_loop_is_reported() -> None:
    logger = logging.getLogger("asyncio")
    caught: dict[str, list[str]] = {}

    async def blocks() -> None:
        time.sleep(SLOW_CALLBACK_SECONDS + 0.05)  # noqa: ASYNC251 - the kind of call the guard exists for

    async def yields() -> None:
        await asyncio.sleep(0.01)

    def run(name: str, coro_fn: object) -> None:
        catcher = _SlowCallbackCatcher(threading.get_ident())
        logger.addHandler(catcher)
        loop = debug_loop()
        try:
            loop.run_until_complete(coro_fn())  # type: ignore[operator]
        finally:
            loop.close()
            logger.removeHandler(catcher)
        caught[name] = catcher.messages

    for name, coro_fn in (("yields", yields), ("blocks", blocks)):
        thread = threading.Thread(target=run, args=(name, coro_fn))
        thread.start()
        thread.join(10)
    assert caught["yields"] == []
    assert len(caught["blocks"]) == 1
    assert "took" in caught["blocks"][0]
