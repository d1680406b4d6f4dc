"""The watcher reloads on save, editor rename and symlink swap; bad edits keep the last good flags."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from feature_flags import ComponentChange, FlagStore, FlagWatcher, Mode, update_flags, watch_flags

BASE = 'version = 1\nloop = "legacy"\n'


def _wait(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def watched(tmp_path: Path) -> Iterator[FlagStore]:
    path = tmp_path / "state" / "flags.toml"
    path.parent.mkdir()
    path.write_text(BASE)
    store = FlagStore(path)
    watcher = FlagWatcher(store).start()
    time.sleep(0.2)  # let the watcher attach before the first change
    try:
        yield store
    finally:
        watcher.stop()


def test_a_flip_is_seen_within_a_second(watched: FlagStore) -> None:
    update_flags(watched.path, components={"llm": ComponentChange(mode=Mode.NEW)}, source="cli", reason="t")
    took = _wait(lambda: watched.flags.flag("llm").mode is Mode.NEW)
    assert took < 1.0


def test_editor_rename_and_bad_edit(watched: FlagStore) -> None:
    tmp = watched.path.with_name("flags.toml~")
    tmp.write_text(BASE.replace("legacy", "async"))
    os.replace(tmp, watched.path)
    _wait(lambda: watched.flags.loop == "async")
    watched.path.write_text('version = 1\nloop = "sideways"\n')
    _wait(lambda: watched.last_error is not None)
    assert watched.flags.loop == "async"
    assert watched.last_error is not None and watched.last_error.key == "loop"


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
    watcher = FlagWatcher(store).start()
    try:
        time.sleep(0.2)
        tmp_link = link_dir / "flags.toml.new"
        tmp_link.symlink_to(real_dir / "b.toml")
        os.replace(tmp_link, link)
        _wait(lambda: store.flags.flag("git").mode is Mode.NEW)
    finally:
        watcher.stop()


async def test_async_watcher_reloads_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "flags.toml"
    path.write_text(BASE)
    store = FlagStore(path)
    stop = asyncio.Event()
    task = asyncio.create_task(watch_flags(store, stop))
    await asyncio.sleep(0.2)
    await asyncio.to_thread(
        update_flags, path, components={"todos": ComponentChange(mode=Mode.SHADOW)}, source="cli", reason="t"
    )
    for _ in range(300):
        if store.flags.flag("todos").mode is Mode.SHADOW:
            break
        await asyncio.sleep(0.01)
    assert store.flags.flag("todos").mode is Mode.SHADOW
    stop.set()
    await asyncio.wait_for(task, 5)
