"""The bridge runtime waits on events: no wake-ups while idle, health written on change, coalesced.

Wake-ups are read per thread from ``/proc/self/task/<tid>/status`` (voluntary
plus involuntary context switches), so they are the thread's own, whatever the
rest of the test process does.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge import runtime as runtime_module
from bridge.health import ERROR, OK, HealthMonitor
from bridge.runtime import BridgeRuntime
from feature_flags import ComponentChange, FlagStore, Mode, update_flags
from feature_flags.health import health_path

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; inotify")

FLAGS = 'version = 1\nloop = "legacy"\n[components.llm]\nmode = "new"\n'


def _switches(thread: threading.Thread) -> int:
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def _threads(*names: str) -> list[threading.Thread]:
    found = [t for t in threading.enumerate() if t.name in names]
    assert sorted(t.name for t in found) == sorted(names)
    return found


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _runtime(tmp_path: Path, **kwargs: float) -> BridgeRuntime:
    (tmp_path / ".agent").mkdir(exist_ok=True)
    (tmp_path / ".agent/flags.toml").write_text(FLAGS)
    return BridgeRuntime(tmp_path, **kwargs)


def test_an_idle_runtime_does_not_wake_and_still_sees_a_flip(tmp_path: Path) -> None:
    rt = _runtime(tmp_path)
    try:
        assert rt.watcher is not None and rt.watcher.backend == "events"
        threads = _threads("flag-watcher", "bridge-health")
        time.sleep(0.2)
        before = [_switches(t) for t in threads]
        time.sleep(1.5)
        assert [_switches(t) for t in threads] == before
        update_flags(
            rt.flags_path, components={"git": ComponentChange(mode=Mode.NEW)}, source="cli", reason="t"
        )
        _wait(lambda: rt.store.flags.flag("git").mode is Mode.NEW, timeout=1.0)
    finally:
        rt.close()


def test_health_is_written_when_outcomes_arrive_then_the_writer_sleeps(tmp_path: Path) -> None:
    rt = _runtime(tmp_path, health_interval=0.2)
    path = health_path(rt.flags_path)
    try:
        time.sleep(0.3)
        assert not path.exists()  # nothing recorded, nothing written
        rt.monitor.record("llm", OK)
        rt.monitor.record("llm", ERROR)
        _wait(lambda: path.exists(), timeout=2.0)
        assert json.loads(path.read_text())["components"]["llm"] == {
            "calls": 2,
            "errors": 1,
            "mismatches": 0,
            "rollback": "armed",
        }
        (writer,) = _threads("bridge-health")
        time.sleep(0.6)  # past the coalescing interval (0.2 s) that follows a write
        before = _switches(writer)
        time.sleep(1.0)
        assert _switches(writer) == before
    finally:
        rt.close()


def test_a_stream_of_calls_is_written_at_most_once_per_interval_and_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[float] = []
    real_write = runtime_module.atomic_write_text

    def counting(path: Path, text: str) -> None:
        writes.append(time.monotonic())
        real_write(path, text)

    monkeypatch.setattr(runtime_module, "atomic_write_text", counting)
    rt = _runtime(tmp_path, health_interval=0.25)
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 1.0:
        rt.monitor.record("llm", OK)
        calls += 1
        time.sleep(0.001)
    rt.close()
    assert calls > 200
    # One write per 0.25 s over 1 s, plus the first and the last at close, never one per call.
    assert 2 <= len(writes) <= 6, writes
    gaps = [b - a for a, b in itertools.pairwise(writes[:-1])]  # the write at close comes when it must
    assert all(gap >= 0.2 for gap in gaps), gaps
    assert json.loads(health_path(rt.flags_path).read_text())["components"]["llm"]["calls"] == calls


def test_the_monitor_notifies_once_per_collection_not_per_call(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text(FLAGS)
    store = FlagStore(path)
    notified: list[None] = []
    monitor = HealthMonitor(store, on_change=lambda: notified.append(None))
    for _ in range(1000):
        monitor.record("llm", OK)
    assert len(notified) == 1
    assert monitor.collect()["llm"].calls == 1000
    monitor.record("llm", ERROR)
    monitor.record("llm", OK)
    assert len(notified) == 2
    # Re-arming a component (its mode changed) resets its rollback line: that is a change too.
    monitor.collect()
    update_flags(path, components={"llm": ComponentChange(mode=Mode.SHADOW)}, source="cli", reason="t")
    store.reload()
    assert len(notified) == 3
