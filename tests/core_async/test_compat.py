"""The compat pair: each async primitive and its hand-written sync counterpart behave alike."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest

from core_async import _compat as acompat
from core_sync import _compat as scompat

PY = sys.executable


async def test_agather_keeps_argument_order() -> None:
    async def late(value: int, delay: float) -> int:
        await acompat.asleep(delay)
        return value

    assert await acompat.agather(late(1, 0.03), late(2, 0.0), late(3, 0.01)) == [1, 2, 3]
    assert scompat.gather(1, 2, 3) == [1, 2, 3]


async def test_sleep_accepts_negative_values() -> None:
    await acompat.asleep(-1)
    scompat.sleep(-1)


async def test_to_thread_runs_off_the_loop() -> None:
    loop_thread = threading.get_ident()
    assert await acompat.ato_thread(threading.get_ident) != loop_thread
    assert scompat.to_thread(threading.get_ident) == threading.get_ident()
    assert scompat.to_thread(int, "7", base=8) == 7


async def test_run_process_collects_output_and_exit_code(tmp_path: object) -> None:
    code = "import sys; data = sys.stdin.read(); print(data.upper()); sys.exit(3)"
    done = await acompat.arun_process([PY, "-c", code], cwd=".", input_bytes=b"hi")
    assert (done.returncode, done.stdout.strip(), done.stderr) == (3, b"HI", b"")
    same = scompat.run_process([PY, "-c", code], cwd=".", input_bytes=b"hi")
    assert (same.returncode, same.stdout.strip()) == (3, b"HI")
    quiet = await acompat.arun_process([PY, "-c", "print(1)"], cwd=".", env={"PATH": "/usr/bin"})
    assert quiet.stdout.strip() == b"1"


async def test_run_process_time_limit_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await acompat.arun_process([PY, "-c", "import time; time.sleep(30)"], cwd=".", time_limit=0.3)
    with pytest.raises(TimeoutError, match="did not finish"):
        scompat.run_process([PY, "-c", "import time; time.sleep(30)"], cwd=".", time_limit=0.3)
    assert time.monotonic() - started < 5


async def test_shared_locks_are_one_per_key() -> None:
    assert acompat.ashared_lock("a") is acompat.ashared_lock("a")
    assert acompat.ashared_lock("a") is not acompat.ashared_lock("b")
    assert scompat.shared_lock("a") is scompat.shared_lock("a")
    assert scompat.shared_lock("a") is not scompat.shared_lock("b")


async def test_wait_for_an_event() -> None:
    event = acompat.AEvent()
    assert await acompat.await_event(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await acompat.await_event(event, 5) is True
    assert await acompat.await_event(event, 0) is True
    flag = scompat.Event()
    assert scompat.wait_event(flag, 0.01) is False
    flag.set()
    assert scompat.wait_event(flag, 0) is True


async def test_timeouts() -> None:
    with pytest.raises(TimeoutError):
        async with acompat.atimeout(0.01):
            await asyncio.sleep(1)
    async with acompat.atimeout(None):
        await asyncio.sleep(0)


def test_the_sync_timeout_never_interrupts() -> None:
    with scompat.timeout(0.01):
        time.sleep(0.02)  # nothing can interrupt a blocking call; the I/O carries its own limit


def test_both_halves_export_the_same_names() -> None:
    """Every async name, renamed as the generator renames it, is a name of the sync half."""
    from tools import codegen

    rule = codegen.CountingRule(codegen.CORE, codegen.REPLACEMENTS)
    assert sorted(rule._unasync_name(n) for n in acompat.__all__) == sorted(scompat.__all__)
    assert (acompat.LOOP_KIND, scompat.LOOP_KIND) == ("async", "sync")


async def test_a_cancelled_settled_hop_waits_for_its_work() -> None:
    finished = threading.Event()

    def work() -> str:
        time.sleep(0.2)
        finished.set()
        return "done"

    task = asyncio.ensure_future(acompat.ato_thread_settled(work))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0)
    task.cancel()  # a second cancellation does not cut the wait short either
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()
    assert await acompat.ato_thread_settled(str.upper, "x") == "X"
    assert scompat.to_thread_settled(str.upper, "x") == "X"
