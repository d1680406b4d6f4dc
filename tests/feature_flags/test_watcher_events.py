"""The event-driven flag watcher (inotify): same reloads as the polling one, and no wake-ups when idle.

The notifier is the kernel's inotify binding, as the bridge hands it over in
production; ``feature_flags`` itself never imports it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from core_async.kernel import inotify
from feature_flags import ComponentChange, FlagStore, FlagWatcher, Mode, update_flags, watch_flags
from feature_flags.watcher import DirectoryEvent

pytestmark = pytest.mark.skipif(not inotify.available(), reason="inotify is Linux-only")

BASE = 'version = 1\nloop = "legacy"\n'


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


def _switches(thread: threading.Thread) -> int:
    """Voluntary plus involuntary context switches of one thread of this process so far."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])


def _thread(name: str) -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == name)


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[tuple[FlagStore, FlagWatcher]]:
    path = tmp_path / "state" / "flags.toml"
    path.parent.mkdir()
    path.write_text(BASE)
    store = FlagStore(path)
    watcher = FlagWatcher(store, notifier=inotify.Inotify).start()
    try:
        yield store, watcher
    finally:
        watcher.stop()


def test_an_idle_watcher_never_wakes_and_a_flip_lands_within_a_second(
    watched: tuple[FlagStore, FlagWatcher],
) -> None:
    store, watcher = watched
    assert watcher.backend == "events"
    thread = _thread("flag-watcher")
    time.sleep(0.2)  # let the thread reach its poll
    before = _switches(thread)
    time.sleep(1.0)
    assert _switches(thread) - before == 0
    # update_flags writes .flags.toml.<random> and renames it over the file: the editor pattern.
    update_flags(store.path, components={"llm": ComponentChange(mode=Mode.NEW)}, source="cli", reason="t")
    took = _wait(lambda: store.flags.flag("llm").mode is Mode.NEW)
    assert took < 1.0


def test_editor_rename_and_bad_edit_keep_the_last_good_flags(watched: tuple[FlagStore, FlagWatcher]) -> None:
    store, _watcher = watched
    tmp = store.path.with_name("flags.toml~")
    tmp.write_text(BASE.replace("legacy", "async"))
    os.replace(tmp, store.path)
    _wait(lambda: store.flags.loop == "async")
    store.path.write_text('version = 1\nloop = "sideways"\n')
    _wait(lambda: store.last_error is not None)
    assert store.flags.loop == "async"
    assert store.last_error is not None and store.last_error.key == "loop"


def test_other_files_in_the_directory_do_not_reload(watched: tuple[FlagStore, FlagWatcher]) -> None:
    store, _watcher = watched
    loaded = store.loaded_at
    (store.path.parent / "status.json").write_text("{}")
    (store.path.parent / "flags-health.json").write_text("{}")
    time.sleep(0.3)
    assert store.loaded_at == loaded
    store.path.write_text(BASE.replace("legacy", "async"))
    _wait(lambda: store.flags.loop == "async")


def test_symlink_swap(tmp_path: Path) -> None:
    real_dir = tmp_path / "releases"
    real_dir.mkdir()
    (real_dir / "a.toml").write_text(BASE)
    (real_dir / "b.toml").write_text(BASE + '[components.git]\nmode = "new"\n')
    link_dir = tmp_path / "conf"
    link_dir.mkdir()
    link = link_dir / "flags.toml"
    link.symlink_to(real_dir / "a.toml")
    store = FlagStore(link)
    watcher = FlagWatcher(store, notifier=inotify.Inotify).start()
    try:
        tmp_link = link_dir / "flags.toml.new"
        tmp_link.symlink_to(real_dir / "b.toml")
        os.replace(tmp_link, link)
        _wait(lambda: store.flags.flag("git").mode is Mode.NEW)
    finally:
        watcher.stop()


def _pipes_and_inotify() -> set[str]:
    """What this process's pipe and inotify descriptors point at (a pipe's inode is unique)."""
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # closed meanwhile (the listing's own descriptor among them)
            continue
        if target.startswith(("pipe:", "anon_inode:inotify")):
            targets.add(f"{fd}->{target}")
    return targets


def test_stop_is_prompt_and_releases_the_descriptors(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text(BASE)
    before = _pipes_and_inotify()
    watcher = FlagWatcher(FlagStore(path), notifier=inotify.Inotify).start()
    mine = _pipes_and_inotify() - before
    assert len(mine) == 3, mine  # the inotify descriptor and the stop pipe's two ends
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 0.5
    assert not any(t.name == "flag-watcher" for t in threading.enumerate())
    assert not mine & _pipes_and_inotify()


def test_falls_back_to_watchfiles_when_inotify_cannot_be_had(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def exhausted() -> inotify.Inotify:
        raise OSError(errno.EMFILE, "inotify_init1: Too many open files")

    path = tmp_path / "flags.toml"
    path.write_text(BASE)
    store = FlagStore(path)
    with caplog.at_level(logging.WARNING, logger="codeagent.flags"):
        watcher = FlagWatcher(store, notifier=exhausted).start()
    try:
        assert watcher.backend == "watchfiles"
        assert "polling it with watchfiles instead" in caplog.text
        time.sleep(0.2)  # watchfiles attaches from its thread
        update_flags(path, components={"git": ComponentChange(mode=Mode.SHADOW)}, source="cli", reason="t")
        assert _wait(lambda: store.flags.flag("git").mode is Mode.SHADOW) < 1.0
    finally:
        watcher.stop()


@dataclass(frozen=True)
class _Event:
    name: str


class _QueueNotifier:
    """A notifier fed by hand: a pipe for readiness, a list of events behind it."""

    def __init__(self) -> None:
        self.fd, self._w = os.pipe()
        self.events: list[_Event] = []
        self.added: list[Path] = []

    def add_directory(self, directory: Path) -> int:
        self.added.append(directory)
        return 1

    def push(self, *names: str) -> None:
        self.events.extend(_Event(n) for n in names)
        os.write(self._w, b"x")

    def read_events(self) -> Sequence[DirectoryEvent]:
        os.read(self.fd, 4096)
        events, self.events = self.events, []
        return events

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._w)


def test_a_nameless_event_reloads_and_rewatches(tmp_path: Path) -> None:
    # inotify reports a queue overflow (events were lost) or the directory's own removal without a
    # name: the watcher must reload rather than trust that nothing concerned the flag file.
    path = tmp_path / "flags.toml"
    path.write_text(BASE)
    store = FlagStore(path)
    fake = _QueueNotifier()
    watcher = FlagWatcher(store, notifier=lambda: fake).start()
    try:
        path.write_text(BASE.replace("legacy", "async"))  # no event for this one
        fake.push("status.json")
        time.sleep(0.3)
        assert store.flags.loop == "legacy"
        fake.push("")
        _wait(lambda: store.flags.loop == "async")
        assert fake.added == [tmp_path, tmp_path]
    finally:
        watcher.stop()


def test_a_removed_directory_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "state" / "flags.toml"
    path.parent.mkdir()
    path.write_text(BASE)
    watcher = FlagWatcher(FlagStore(path), notifier=inotify.Inotify).start()
    try:
        with caplog.at_level(logging.ERROR, logger="codeagent.flags"):
            shutil.rmtree(path.parent)
            _wait(lambda: "flag changes are no longer seen" in caplog.text)
    finally:
        watcher.stop()


async def test_async_watcher_on_events_reloads_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text(BASE)
    store = FlagStore(path)
    stop = asyncio.Event()
    task = asyncio.create_task(watch_flags(store, stop, notifier=inotify.Inotify))
    await asyncio.sleep(0.05)
    await asyncio.to_thread(
        update_flags, path, components={"todos": ComponentChange(mode=Mode.SHADOW)}, source="cli", reason="t"
    )
    for _ in range(100):
        if store.flags.flag("todos").mode is Mode.SHADOW:
            break
        await asyncio.sleep(0.01)
    assert store.flags.flag("todos").mode is Mode.SHADOW
    stop.set()
    await asyncio.wait_for(task, 2)
