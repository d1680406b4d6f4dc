"""ConfigurationManager: the legacy config file unchanged, hot reload by watchfiles, bad edits rejected."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from codeagent.config import AgentConfig
from codeagent.errors import ConfigError
from core_async.kernel.config_manager import ConfigurationManager
from core_async.kernel.events import EventBus
from core_async.kernel.metrics import MetricsCollector

LEGACY_CONFIG = {
    "llm": {"base_url": "http://127.0.0.1:9/v1", "model": "m1", "timeout": 5},
    "api": {"port": 9999, "token": "s3cret"},
    "poll_interval": 0.5,
}


def save(path: Path, text: str, *, by_rename: bool = True) -> None:
    """Write like an editor: a new file renamed over the old one (or in place)."""
    if by_rename:
        tmp = path.with_name(".config.json.swp-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    else:
        path.write_text(text, encoding="utf-8")


async def next_event(subscription, kind: str):
    async with asyncio.timeout(10):
        while True:
            event = await subscription.next()
            if event.type == kind:
                return event


async def test_loads_the_legacy_file_unchanged(tmp_path: Path) -> None:
    manager = ConfigurationManager(tmp_path)
    assert manager.config == AgentConfig() and not manager.loaded
    assert await manager.load_config() == AgentConfig()  # missing file: defaults
    (tmp_path / ".agent").mkdir()
    (tmp_path / ".agent/config.json").write_text(json.dumps(LEGACY_CONFIG), encoding="utf-8")
    config = await manager.load_config()
    assert config.llm.model == "m1" and config.api.token == "s3cret" and config.poll_interval == 0.5
    assert manager.loaded


async def test_a_bad_file_at_start_names_the_key_and_line(tmp_path: Path) -> None:
    (tmp_path / ".agent").mkdir()
    (tmp_path / ".agent/config.json").write_text(
        '{\n  "llm": {\n    "timeout": -1\n  }\n}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError) as caught:
        await ConfigurationManager(tmp_path).load_config()
    assert caught.value.field == "llm.timeout" and caught.value.line == 3
    (tmp_path / ".agent/config.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        await ConfigurationManager(tmp_path).load_config()


async def test_hot_reload_applies_good_edits_and_keeps_the_last_good_on_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / ".agent/config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(LEGACY_CONFIG), encoding="utf-8")
    bus = EventBus()
    metrics = MetricsCollector()
    manager = ConfigurationManager(tmp_path, label="ws", events=bus, metrics=metrics)
    await manager.load_config()
    changes: list[tuple[str, str]] = []
    applied = asyncio.Event()

    def on_change(old: AgentConfig, new: AgentConfig) -> None:
        changes.append((old.llm.model, new.llm.model))

    async def on_change_async(old: AgentConfig, new: AgentConfig) -> None:
        applied.set()

    def broken(old: AgentConfig, new: AgentConfig) -> None:
        raise RuntimeError("listener bug")  # logged, does not stop the others

    manager.add_listener(broken)
    manager.add_listener(on_change)
    manager.add_listener(on_change_async)
    events = bus.subscribe()
    stop = asyncio.Event()
    ready = asyncio.Event()
    watcher = asyncio.create_task(manager.watch_config(stop, ready=ready))
    await ready.wait()

    save(path, json.dumps({**LEGACY_CONFIG, "llm": {**LEGACY_CONFIG["llm"], "model": "m2"}}))
    reloaded = await next_event(events, "config.reloaded")
    assert reloaded.data == {"workspace": "ws", "changed": ["llm.model"]}
    await applied.wait()
    assert changes == [("m1", "m2")] and manager.config.llm.model == "m2"

    bad = '{\n  "llm": {\n    "model": "m3",\n    "max_retries": "many"\n  }\n}\n'
    with caplog.at_level(logging.ERROR, logger="codeagent.kernel.config"):
        save(path, bad, by_rename=False)
        rejected = await next_event(events, "config.rejected")
    assert rejected.data["field"] == "llm.max_retries" and rejected.data["line"] == 4
    assert manager.config.llm.model == "m2"  # the last good one stays
    assert manager.last_error is not None
    assert ".agent/config.json:4: llm.max_retries" in caplog.text

    save(path, json.dumps({**LEGACY_CONFIG, "llm": {**LEGACY_CONFIG["llm"], "model": "m4"}}))
    await next_event(events, "config.reloaded")
    assert manager.config.llm.model == "m4" and manager.last_error is None

    stop.set()
    await asyncio.wait_for(watcher, 5)
    text = metrics.render().decode()
    assert 'codeagent_config_reloads_total{outcome="applied"} 2.0' in text
    assert 'codeagent_config_reloads_total{outcome="rejected"} 1.0' in text


async def test_reload_ignores_unchanged_text_and_reports_recovery(tmp_path: Path) -> None:
    path = tmp_path / ".agent/config.json"
    path.parent.mkdir()
    path.write_text('{"poll_interval": 2}', encoding="utf-8")
    manager = ConfigurationManager(tmp_path)
    await manager.load_config()
    assert not await manager.reload()  # same text
    path.write_text('{"poll_interval": 2.0}', encoding="utf-8")
    assert not await manager.reload()  # other text, same configuration
    path.write_text("{", encoding="utf-8")
    assert not await manager.reload()
    assert not await manager.reload()  # the same fault is reported once
    path.write_text('{"poll_interval": 2.0}', encoding="utf-8")
    assert not await manager.reload() and manager.last_error is None


async def test_watch_config_runs_until_cancelled(tmp_path: Path) -> None:
    manager = ConfigurationManager(tmp_path)
    ready = asyncio.Event()
    watcher = asyncio.create_task(manager.watch_config(ready=ready))
    await ready.wait()
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert (tmp_path / ".agent").is_dir()
